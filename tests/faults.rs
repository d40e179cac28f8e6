//! Real faults under the real binary: an `fdatasync` that fails (injected with
//! `strace -e inject=`). The shard that met it refuses work with a clear 5xx, `/healthz`
//! answers 503 naming it, and after a restart every acknowledged event is there.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

#[test]
fn a_failed_fdatasync_fails_its_shard_healthz_says_so_and_nothing_acknowledged_is_lost() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("strace is not installed; .ci/run installs it. Skipping the fault.");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(&data, "");
    // The start syncs a few times; from the 30th fdatasync on, every one fails with EIO.
    let (mut child, base) = serve_traced(
        &[
            "-f",
            "-qq",
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:error=EIO:when=30+",
            "-o",
            "/dev/null",
        ],
        &config,
    );
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
    let (status, body) = refused.expect("the injected EIO was met");
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
