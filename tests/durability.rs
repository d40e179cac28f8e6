//! Durability: a synchronous write of the log precedes every acknowledgement (checked with strace where it
//! is installed), and recovery handles the log's tail: a damaged or newer-format chunk
//! stops the start and nothing is deleted; a whole record past the checkpoint is applied
//! on start.

mod common;

use std::process::Command;

use common::{event, replay, serve_refused, serve_traced, signal_traced, Server};
use lockstep::core::event::{EventKind, Outcome};
use lockstep::core::records::{LogChunk, LogRecord};
use lockstep::engine::{open_data_dir, shard_dir};
use lockstep::store::envelope::{encode, SCHEMA_VERSION};
use lockstep::store::{DiskStore, ShardStore};
use serde_json::json;

/// Opens the shard store that owns `sku` (the server must be stopped).
fn store_of(data: &std::path::Path, sku: &str) -> DiskStore {
    let router = open_data_dir(data, 0).unwrap();
    DiskStore::open(&shard_dir(data, router.shard_of(sku))).unwrap()
}

/// A log chunk of one adjustment, as a batch of the engine would write it.
fn chunk(seq: u64, sku: &str, qty: i64) -> LogChunk {
    let now = lockstep::clock::now_micros();
    vec![LogRecord {
        seq,
        prev_seq: 0,
        sku: sku.into(),
        kind: EventKind::Adjusted,
        qty,
        source: "test".into(),
        source_ts: now,
        received_at: now,
        applied_at: now,
        key: format!("tail-{seq}"),
        order_id: None,
        line_id: None,
        available_before: 0,
        available_after: 0,
        on_hand_after: 0,
        committed_after: 0,
        outcome: Outcome::Applied,
        oversell: false,
    }]
}

/// A log chunk that fails its envelope check (a flipped byte, or a chunk of a newer
/// lockstep after a rollback) may hold acknowledged events: the start refuses, naming
/// the shard and the chunk, and deletes nothing, so the right build or a backup can
/// still read it.
#[test]
fn a_damaged_or_newer_log_chunk_stops_the_start_and_nothing_is_deleted() {
    for damage in ["checksum", "newer version"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = Server::start(&data);
        let events: Vec<_> = (0..3)
            .map(|i| event(&format!("k{i}"), "TORN", "adjusted", 2))
            .collect();
        assert_eq!(server.post_events(&json!({ "events": events })).0, 200);
        server.stop();

        let last = {
            let store = store_of(&data, "TORN");
            let last = store.last_seq().unwrap();
            let mut bad = encode(&chunk(last + 1, "TORN", 100));
            match damage {
                "checksum" => *bad.last_mut().unwrap() ^= 0x40,
                // The schema version field (offset 4), one past what this build reads.
                _ => bad[4..6].copy_from_slice(&(SCHEMA_VERSION + 1).to_le_bytes()),
            }
            store.put_raw_log_chunk(last + 1, &bad).unwrap();
            store
                .put_raw_log_chunk(last + 2, &encode(&chunk(last + 2, "TORN", 1000)))
                .unwrap();
            last
        };

        let log = serve_refused(&data);
        assert!(
            log.contains("refusing to start")
                && log.contains("shard ")
                && log.contains("nothing was deleted"),
            "{damage}: not refused clearly:\n{log}"
        );
        let why = if damage == "checksum" {
            "checksum mismatch"
        } else {
            "schema version"
        };
        assert!(log.contains(why), "{damage}:\n{log}");
        let (ok, out) = replay(&data);
        assert!(!ok && out.contains("refusing"), "{damage}: replay: {out}");
        // Still there, both chunks: a second start refuses the same way.
        assert_eq!(
            store_of(&data, "TORN").last_seq().unwrap(),
            last + 2,
            "{damage}"
        );
        assert!(serve_refused(&data).contains("refusing to start"));
    }
}

#[test]
fn a_whole_record_past_the_checkpoint_is_applied_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    assert_eq!(
        server
            .post_events(&json!({"events": [event("k0", "TAIL", "adjusted", 2)]}))
            .0,
        200
    );
    server.stop();
    {
        let store = store_of(&data, "TAIL");
        let last = store.last_seq().unwrap();
        store
            .put_raw_log_chunk(last + 1, &encode(&chunk(last + 1, "TAIL", 5)))
            .unwrap();
    }
    let server = Server::start(&data);
    assert_eq!(server.stock("TAIL"), Some((7, 0, 7)));
    let (_, body) =
        server.post_events(&json!({"events": [event("tail-2", "TAIL", "adjusted", 5)]}));
    assert_eq!(
        body["results"][0]["outcome"], "duplicate",
        "its key was recorded too"
    );
    server.stop();
    let (ok, out) = replay(&data);
    assert!(ok, "{out}");
}

/// Runs the server under strace and checks, for one request, that the write of its
/// batch to the log's tail (`wal`, opened `O_DIRECT | O_DSYNC`: durable when the call
/// returns) happens after the request is read and before the 200 is written.
#[test]
fn a_synchronous_log_write_precedes_the_ack() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!(
            "strace is not installed; .ci/run installs it. Skipping the syscall-order check."
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = common::write_config(&data, "");
    let trace = dir.path().join("trace.txt");
    let trace_arg = trace.display().to_string();
    let (mut child, base) = serve_traced(
        &[
            "-f",
            "-s",
            "200",
            "-e",
            "trace=openat,read,recvfrom,write,writev,pwrite64,sendto,sendmsg,fdatasync,fsync",
            "-o",
            &trace_arg,
        ],
        &config,
    );
    let response = Server::client()
        .post(format!("{base}/v1/events"))
        .json(&json!({"events": [event("traced", "STRACE", "adjusted", 1)]}))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Stop the traced server itself (strace's child); strace exits with it.
    signal_traced(&mut child, libc::SIGTERM);

    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // strace -f starts each line with the thread's id, and splits a call another thread
    // interrupts into "pwrite64(11, ... <unfinished ...>" and "<... pwrite64 resumed>)
    // = 4096" of the same thread: the value the call at line `i` returned, either way.
    let returned = |i: usize, call: &str| -> Option<i64> {
        let value = |l: &str| l.rsplit("= ").next()?.trim().parse::<i64>().ok();
        if !lines[i].contains("<unfinished ...>") {
            return value(lines[i]);
        }
        let pid = lines[i].split_whitespace().next()?;
        let resumed = format!("<... {call} resumed>");
        lines[i + 1..]
            .iter()
            .find(|l| l.split_whitespace().next() == Some(pid) && l.contains(&resumed))
            .and_then(|l| value(l))
    };
    // The tails' descriptors, each opened for synchronous writes.
    let tails: Vec<String> = (0..lines.len())
        .filter(|&i| {
            let l = lines[i];
            l.contains("openat(") && l.contains("/wal\"") && l.contains("O_DSYNC")
        })
        .filter_map(|i| returned(i, "openat"))
        .map(|fd| format!("pwrite64({fd}, "))
        .collect();
    assert!(!tails.is_empty(), "no tail opened with O_DSYNC:\n{text}");
    let request = lines
        .iter()
        .position(|l| l.contains("POST /v1/events"))
        .unwrap_or_else(|| panic!("request not seen in the trace:\n{text}"));
    let ack = lines[request..]
        .iter()
        .position(|l| l.contains("HTTP/1.1 200"))
        .map(|i| i + request)
        .unwrap_or_else(|| panic!("response not seen in the trace:\n{text}"));
    let written = (request..ack).any(|i| {
        tails.iter().any(|t| lines[i].contains(t.as_str()))
            && returned(i, "pwrite64").is_some_and(|n| n > 0)
    });
    assert!(
        written,
        "no completed write to the log's tail between the request and its 200:\n{}",
        lines[request..=ack].join("\n")
    );
}

/// One byte changed in an old batch of fjall's journal (a batch's start marker turned
/// into an end marker) makes fjall's reader stop there and serve what came before,
/// silently. The acknowledged high-water mark written at each checkpoint catches it: the
/// start refuses, naming the shard and the missing range, instead of serving less.
/// Checkpoints are what write the journal (a batch's chunk goes to the log's tail): five
/// starts and clean stops make five of them, and the second is damaged.
#[test]
fn a_journal_cut_short_below_what_was_acknowledged_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for round in 0..5 {
        let server = Server::start(&data);
        for i in 0..10 {
            let key = format!("j{round}-{i}");
            let one = json!({"events": [event(&key, "JRNL", "adjusted", 2)]});
            assert_eq!(server.post_events(&one).0, 200);
        }
        server.stop();
    }
    let shard = shard_dir(&data, open_data_dir(&data, 0).unwrap().shard_of("JRNL"));
    // fjall 3's journal: `lsm/N.jnl`, the oldest first.
    let journal = shard.join("lsm/0.jnl");
    let mut bytes = std::fs::read(&journal).unwrap();
    // Each batch ends with fjall 3's trailer `FJL\x03`; the byte after the first is the
    // second batch's start marker (tag 1). Tag 3 is an end marker without a start.
    let trailers: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"FJL\x03")
        .map(|(i, _)| i + 4)
        .collect();
    assert!(trailers.len() >= 4, "{} batches", trailers.len());
    assert_eq!(bytes[trailers[0]], 1, "a start marker");
    bytes[trailers[0]] = 3;
    std::fs::write(&journal, bytes).unwrap();

    let log = serve_refused(&data);
    assert!(
        log.contains("were acknowledged") && log.contains("are missing") && log.contains("shard-"),
        "{log}"
    );
    let (ok, out) = replay(&data);
    assert!(!ok && out.contains("were acknowledged"), "{out}");
}

/// A SIGTERM sent the moment the server prints that it listens shuts it down as asked:
/// exit code 0 after a clean stop, never killed by the signal nor left running. (Its
/// handlers used to be set only after that line, in the accept loop: a loaded machine
/// left the server running on after the signal.)
#[test]
fn a_sigterm_on_the_listening_line_stops_the_server_cleanly() {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::start(&dir.path().join("data"));
        // SAFETY: kill only sends a signal to the child the test started.
        unsafe {
            libc::kill(server.child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running 30 s after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // Its last lines may still be on their way through the pipe's reader.
        let mut said = server.stderr_lines();
        while !said.iter().any(|l| l.contains("shutting down"))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
            said.extend(server.stderr_lines());
        }
        assert_eq!(status.code(), Some(0), "{status:?}: {said:?}");
        assert!(said.iter().any(|l| l.contains("shutting down")), "{said:?}");
    }
}
