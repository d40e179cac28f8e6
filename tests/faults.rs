//! Real faults under the real binary, injected with `strace -e inject=`: an `fdatasync`
//! that fails (EIO), and a full disk under the journal (its writes fail with ENOSPC).
//! The shard that met the fault refuses work with `503 storage_failed`, `/healthz`
//! answers 503 naming it, and after a restart every acknowledged event is there. (The
//! kill -9 crash is `tests/crash.rs`; a flipped byte, a newer chunk and a journal cut
//! short are `tests/durability.rs`.)

mod common;

use std::process::Command;

use common::*;
use lockstep::engine::shard_dir;
use serde_json::{json, Value};

#[test]
fn a_failed_fdatasync_fails_its_shard_healthz_says_so_and_nothing_acknowledged_is_lost() {
    // The start syncs a few times; from the 30th fdatasync on, every one fails with EIO.
    fault_matrix_run(|_| {
        [
            "-f",
            "-qq",
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:error=EIO:when=30+",
        ]
        .map(String::from)
        .to_vec()
    });
}

/// A full disk, as the journal meets it: its writes fail with ENOSPC (only the journals'
/// writes, selected by path: the sockets keep working).
#[test]
fn a_full_disk_under_the_journal_fails_its_shard_and_nothing_acknowledged_is_lost() {
    fault_matrix_run(|data| {
        let mut args: Vec<String> = ["-f", "-qq"].map(String::from).to_vec();
        for i in 0..2 {
            args.push("-P".into());
            args.push(
                shard_dir(data, i)
                    .join("lsm/journals/0")
                    .display()
                    .to_string(),
            );
        }
        args.extend(
            [
                "-e",
                "trace=write,writev,pwrite64",
                "-e",
                "inject=write,writev,pwrite64:error=ENOSPC:when=10+",
            ]
            .map(String::from),
        );
        args
    });
}

/// Runs the server under strace with the fault `args(data_dir)` names (after one start
/// without it, so the data directory's files exist), sends one-event requests until one
/// is refused, checks the refusal and /healthz, then kills it, starts it without the
/// fault and checks that every acknowledged event is there.
fn fault_matrix_run(args: impl Fn(&std::path::Path) -> Vec<String>) {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("strace is not installed; .ci/run installs it. Skipping the fault.");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    Server::start(&data).stop();
    let config = write_config(&data, "");
    let mut strace = args(&data);
    strace.extend(["-o".to_string(), "/dev/null".to_string()]);
    let strace: Vec<&str> = strace.iter().map(String::as_str).collect();
    let (mut child, base) = serve_traced(&strace, &config);
    let client = Server::client();
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let sku = format!("F{}", i % 8);
        let response = client
            .post(format!("{base}/v1/events"))
            .json(&json!({"events": [event(&format!("f{i}"), &sku, "adjusted", 1)]}))
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap_or(Value::Null);
        if status == 200 {
            acked.push(sku);
        } else {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the injected fault was met");
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("storage_failed")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap_or("").contains("restarts"),
        "{body}"
    );
    let health = client.get(format!("{base}/healthz")).send().unwrap();
    let code = health.status().as_u16();
    let health: Value = health.json().unwrap();
    assert_eq!(code, 503, "{health} after {status} {body}");
    let failed: Vec<&Value> = health["shard_states"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "failed")
        .collect();
    assert!(!failed.is_empty(), "{health}");
    assert!(failed[0]["reason"].as_str().is_some(), "{health}");

    // Killed where it stands, then started without the fault: every acknowledged event
    // is there.
    signal_traced(&mut child, libc::SIGKILL);
    let server = Server::start(&data);
    for i in 0..8 {
        let sku = format!("F{i}");
        let want = acked.iter().filter(|s| **s == sku).count() as i64;
        let got = server.stock(&sku).map_or(0, |(on_hand, _, _)| on_hand);
        assert!(got >= want, "{sku}: {got} of {want} acknowledged");
    }
    assert_eq!(server.get("/healthz").0, 200);
}
