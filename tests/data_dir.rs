//! The data directory and the listener, against the real binary: one process per data
//! directory (a second `serve`, or `replay` and `audit` beside a live server, refuse
//! clearly); a data directory whose `lockstep.meta` is missing or of another format is
//! refused, not re-sharded; the admin API and the metrics are not open to the network
//! without the admin token; a directory an earlier build wrote keeps answering its keys.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn a_second_process_on_a_live_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    assert_eq!(
        server
            .post_events(&json!({"events": [event("a", "L0", "counted", 5)]}))
            .0,
        200
    );
    let pid = server_pid(&data);
    let log = serve_refused(&data);
    assert!(
        log.contains("in use by another lockstep process") && log.contains(&format!("pid {pid}")),
        "{log}"
    );
    let (ok, out) = replay(&data);
    assert!(
        !ok && out.contains("in use by another lockstep process"),
        "{out}"
    );
    // The first server is unharmed and keeps serving.
    assert_eq!(server.stock("L0"), Some((5, 0, 5)));
    server.stop();
    let (ok, out) = replay(&data);
    assert!(ok, "once the server is gone, replay opens it: {out}");
    let again = Server::start(&data);
    assert_eq!(again.stock("L0"), Some((5, 0, 5)));
}

/// The pid the lock file names.
fn server_pid(data: &std::path::Path) -> String {
    std::fs::read_to_string(data.join("lockstep.lock"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_missing_or_foreign_meta_file_is_refused_not_resharded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let events: Vec<_> = (0..20)
        .map(|i| event(&format!("m{i}"), &format!("MS{i}"), "counted", 3))
        .collect();
    assert_eq!(server.post_events(&json!({ "events": events })).0, 200);
    server.stop();
    let meta = data.join("lockstep.meta");
    let kept = std::fs::read_to_string(&meta).unwrap();

    std::fs::remove_file(&meta).unwrap();
    let log = serve_refused(&data);
    assert!(
        log.contains("no lockstep.meta") && log.contains("restore it"),
        "{log}"
    );
    assert!(!meta.exists(), "nothing written in its place");

    let foreign = kept.replace("\"format\": 3", "\"format\": 4");
    assert_ne!(foreign, kept, "{kept}");
    std::fs::write(&meta, foreign).unwrap();
    let log = serve_refused(&data);
    assert!(log.contains("data format 4"), "{log}");

    // Format 1 is fjall 2's storage, which fjall 3 cannot read: refused, saying so.
    std::fs::write(&meta, kept.replace("\"format\": 3", "\"format\": 1")).unwrap();
    let log = serve_refused(&data);
    assert!(log.contains("data format 1 (fjall 2"), "{log}");

    // Format 2 (before the log's tail) is read as it is by `replay`, which writes
    // nothing, and marked 3 by the first start, before any tail is written: a build of
    // format 2 then refuses the directory instead of starting without the tail.
    let older = kept.replace("\"format\": 3", "\"format\": 2");
    std::fs::write(&meta, &older).unwrap();
    let (ok, out) = replay(&data);
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(&meta).unwrap(), older);
    let server = Server::start(&data);
    for i in 0..20 {
        assert_eq!(server.stock(&format!("MS{i}")), Some((3, 0, 3)), "MS{i}");
    }
    assert!(std::fs::read_to_string(&meta)
        .unwrap()
        .contains("\"format\": 3"));
}

#[test]
fn the_admin_api_is_not_open_to_the_network_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // `lockstep check-config` with these server lines: refused, naming the token and why.
    let refused = |server_lines: &str, why: &str| {
        let config = write_config(&data, server_lines);
        let out = Command::new(BIN)
            .args(["check-config"])
            .arg(&config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains("server.admin_token") && text.contains(why),
            "{text}"
        );
    };
    refused("listen = \"0.0.0.0:0\"", "not a loopback address");
    // A short token on 0.0.0.0 is refused too: nothing limits how many a caller may try.
    refused(
        "listen = \"0.0.0.0:0\"\nadmin_token = \"change-me\"",
        "at least 16",
    );

    // With a token on 0.0.0.0, the metrics need it too.
    const TOKEN: &str = "3f9c1e7a5b2d8c4f6a0e";
    let server = Server::start_with(
        &data,
        &format!("listen = \"0.0.0.0:0\"\nadmin_token = \"{TOKEN}\""),
        Some(TOKEN),
    );
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let bare = Server::client().get(&metrics).send().unwrap();
    assert_eq!(bare.status().as_u16(), 401);
    let with = Server::client()
        .get(&metrics)
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(with.status().as_u16(), 200);
    let health = Server::client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .unwrap();
    assert_eq!(health.status().as_u16(), 200, "health stays public");
}

/// A count stamped `hours` ago.
fn count_of(key: &str, sku: &str, on_hand: i64, hours: i64) -> serde_json::Value {
    let at = lockstep::clock::now_micros() - hours * 3_600 * 1_000_000;
    json!({"idempotency_key": key, "sku": sku, "kind": "counted", "qty": on_hand,
           "source": "erp", "source_ts": lockstep::clock::format_rfc3339(at)})
}

/// The "shard recovered" lines of a start: how many records each replayed.
fn replayed(lines: &[String]) -> usize {
    // Without the terminal's colour codes.
    let plain = |l: &String| {
        let mut out = String::new();
        let mut in_code = false;
        for c in l.chars() {
            match (in_code, c) {
                (false, '\u{1b}') => in_code = true,
                (true, 'm') => in_code = false,
                (false, c) => out.push(c),
                _ => {}
            }
        }
        out
    };
    lines
        .iter()
        .map(plain)
        .filter(|l| l.contains("shard recovered"))
        .filter_map(|l| l.split("replayed=").nth(1).map(str::to_string))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<usize>().ok())
        .sum()
}

#[test]
fn replay_and_audit_change_nothing_and_recover_under_the_settings_the_log_was_written_with() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A count 100 h old: within a 168 h horizon, stale under the default 72 h.
    let server = Server::start_with(&data, "horizon_hours = 168", None);
    let (status, body) = server.post_events(&json!({"events": [count_of("c1", "H1", 100, 100)]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "applied", "{body}");
    // Killed before its checkpoint: the count is in the log's tail only.
    server.kill9();

    // Neither command is given the config: they must use the settings stored with the data.
    for _ in 0..2 {
        let (ok, out) = replay(&data);
        assert!(ok, "{out}");
        assert!(out.contains("replay equals the live state"), "{out}");
        let out = Command::new(BIN)
            .args(["audit", "H1", "--json", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let audit: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(audit["records"][0]["on_hand_after"], 100, "{audit}");
    }

    // Nothing was checkpointed by them: the server replays the same tail, under 168 h.
    let server = Server::start_with(&data, "horizon_hours = 168", None);
    assert_eq!(server.stock("H1"), Some((100, 0, 100)));
    let lines = server.stderr_lines();
    assert_eq!(replayed(&lines), 1, "{lines:?}");
    server.kill9();

    // A server started with another horizon recovers the tail under the old one, and the
    // change takes effect after it, in the audit.
    let server = Server::start_with(&data, "", None);
    assert_eq!(server.stock("H1"), Some((100, 0, 100)));
    let (_, audit) = server.get("/v1/audit?sku=H1");
    let changes = audit["settings_changes"].as_array().unwrap();
    let last = changes.last().unwrap();
    assert_eq!(last["horizon_hours"], 72, "{audit}");
    assert_eq!(last["changes"][0], "horizon 168 h -> 72 h", "{audit}");
    // The same count again under 72 h is stale: the new horizon is in effect.
    let (_, body) = server.post_events(&json!({"events": [count_of("c2", "H2", 5, 100)]}));
    assert_eq!(body["results"][0]["outcome"], "stale", "{body}");
    server.stop();
    let (ok, out) = replay(&data);
    assert!(ok, "each record re-applied under its own era: {out}");
}

#[test]
fn a_log_without_its_settings_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    assert_eq!(
        server
            .post_events(&json!({"events": [event("a", "S0", "counted", 5)]}))
            .0,
        200
    );
    server.stop();
    let settings = data.join("lockstep.settings");
    std::fs::remove_file(&settings).unwrap();
    let log = serve_refused(&data);
    assert!(log.contains("no lockstep.settings"), "{log}");
    let (ok, out) = replay(&data);
    assert!(!ok && out.contains("no lockstep.settings"), "{out}");
    std::fs::write(&settings, b"{").unwrap();
    let log = serve_refused(&data);
    assert!(
        log.contains("lockstep.settings") && log.contains("restore it"),
        "{log}"
    );
}

/// `tests/fixtures/upgrade/keys-without-source.tar.gz` is a data directory (two shards)
/// written by the build before keys were hashed with their source (320b0a0): eight
/// `adjusted +5` events on UP-1..UP-8 (one of them on shard 0, seven on shard 1), each
/// keyed `before-upgrade` by the API, then a clean stop, so the keys are in the `keys`
/// partitions under their old hash. Sent again
/// to this build they must still be duplicates: otherwise every redelivery within the
/// retention of an upgrade would count twice.
#[test]
fn keys_acknowledged_by_the_build_before_are_still_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let unpacked = Command::new("tar")
        .arg("-xzf")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/upgrade/keys-without-source.tar.gz"
        ))
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(unpacked.success());
    // Kept for ten years: the fixture's keys are from 2026-12-05, and must not expire
    // before this test reads them.
    let server = Server::start_with(&dir.path().join("data"), "idempotency_days = 3653", None);
    let adjust = |sku: &str, key: &str| {
        let (status, body) = server.post_events(&json!({"events": [
            {"sku": sku, "kind": "adjusted", "qty": 5, "idempotency_key": key}
        ]}));
        assert_eq!(status, 200, "{body}");
        body["results"][0]["outcome"].as_str().unwrap().to_string()
    };
    for sku in (1..=8).map(|i| format!("UP-{i}")) {
        let sku = sku.as_str();
        assert_eq!(
            server.stock(sku),
            Some((5, 0, 5)),
            "{sku} as the fixture left it"
        );
        assert_eq!(adjust(sku, "before-upgrade"), "duplicate", "{sku}");
        assert_eq!(server.stock(sku), Some((5, 0, 5)), "{sku} counted once");
    }
    assert_eq!(adjust("UP-1", "after-upgrade"), "applied");
    assert_eq!(adjust("UP-1", "after-upgrade"), "duplicate");
    assert_eq!(server.stock("UP-1"), Some((10, 0, 10)));
    // The operator is told why lookups read twice for a while.
    let said = server
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("also looked up by their old hash"))
        .count();
    assert_eq!(said, 2, "one line per shard");
}
