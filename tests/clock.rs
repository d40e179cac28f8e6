//! Clock steps under the real binary: its wall clock moved by libfaketime (preloaded,
//! reading its offset from a file on every call, the monotonic clock left real), while
//! it serves. A step back must not make movements change nothing or new counts stale;
//! a step forward past the idempotency horizon must not forget a key, so a redelivery
//! is still a duplicate. `.ci/run` installs faketime; without it these are skipped.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::json;

/// Debian's multi-threaded libfaketime.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A server whose wall clock is now plus the offset written to the file it returns.
fn server_with_fake_clock(dir: &Path, server_extra: &str) -> Option<(Server, PathBuf)> {
    if !Path::new(LIBFAKETIME).exists() {
        eprintln!("libfaketime is not installed; .ci/run installs it. Skipping the clock step.");
        return None;
    }
    let offset = dir.join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let offset_file = offset.display().to_string();
    let server = Server::start_env(
        &dir.join("data"),
        server_extra,
        None,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &offset_file),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    Some((server, offset))
}

/// Moves the server's wall clock: `+3d`, `-2h` (libfaketime's relative offsets).
fn step(offset: &Path, to: &str) {
    std::fs::write(offset, format!("{to}\n")).unwrap();
}

#[test]
fn after_the_wall_clock_steps_back_movements_count_and_new_counts_are_not_stale() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, offset)) = server_with_fake_clock(dir.path(), "") else {
        return;
    };
    post_ok(&server, vec![event("c1", "BACK", "counted", 10)]);
    step(&offset, "-2h");
    // Stamped by the engine after the step: it must land after the count, not 2 h before.
    let (status, body) =
        server.post_events(&json!({"events": [event("m1", "BACK", "adjusted", 5)]}));
    assert_eq!(
        (status, body["results"][0]["outcome"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    assert_eq!(
        server.stock("BACK"),
        Some((15, 0, 15)),
        "the movement after the count counts"
    );
    let (status, body) =
        server.post_events(&json!({"events": [event("c2", "BACK", "counted", 20)]}));
    assert_eq!(
        (status, body["results"][0]["outcome"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    assert_eq!(
        server.stock("BACK"),
        Some((20, 0, 20)),
        "a new count is not stale"
    );
    let audit = audit_of(&server, "BACK");
    let times: Vec<time::OffsetDateTime> = audit
        .iter()
        .rev()
        .map(|r| instant(&r["received_at"]))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "engine time never went back: {times:?}"
    );
}

#[test]
fn after_the_wall_clock_steps_forward_past_the_horizon_a_redelivery_is_still_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, offset)) = server_with_fake_clock(dir.path(), "idempotency_days = 1\n")
    else {
        return;
    };
    let order = || json!({"events": [event("order-1", "FWD", "adjusted", -1)]});
    post_ok(&server, vec![event("count", "FWD", "counted", 10)]);
    assert_eq!(server.post_events(&order()).0, 200);
    assert_eq!(server.stock("FWD"), Some((9, 0, 9)));
    step(&offset, "+3d");
    // The idle shard sweeps expired keys every 10 s: let one sweep pass after the step.
    std::thread::sleep(Duration::from_secs(12));
    let (status, body) = server.post_events(&order());
    assert_eq!(
        (status, body["results"][0]["outcome"].as_str()),
        (200, Some("duplicate")),
        "{body}"
    );
    assert_eq!(
        server.stock("FWD"),
        Some((9, 0, 9)),
        "the redelivered order counted once"
    );
}
