//! The data directory and the listener, against the real binary: one process per data
//! directory (a second `serve`, or `replay` and `audit` beside a live server, refuse
//! clearly); a data directory whose `lockstep.meta` is missing or of another format is
//! refused, not re-sharded; the admin API and the metrics are not open to the network
//! without the admin token.

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

    let foreign = kept.replace("\"format\": 1", "\"format\": 2");
    assert_ne!(foreign, kept, "{kept}");
    std::fs::write(&meta, foreign).unwrap();
    let log = serve_refused(&data);
    assert!(log.contains("data format 2"), "{log}");

    std::fs::write(&meta, kept).unwrap();
    let server = Server::start(&data);
    for i in 0..20 {
        assert_eq!(server.stock(&format!("MS{i}")), Some((3, 0, 3)), "MS{i}");
    }
}

#[test]
fn the_admin_api_is_not_open_to_the_network_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(&data, "listen = \"0.0.0.0:0\"");
    let out = Command::new(BIN)
        .args(["check-config"])
        .arg(&config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("server.admin_token") && text.contains("not a loopback address"),
        "{text}"
    );

    // With a token on 0.0.0.0, the metrics need it too.
    let server = Server::start_with(
        &data,
        "listen = \"0.0.0.0:0\"\nadmin_token = \"s3cret\"",
        Some("s3cret"),
    );
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let bare = Server::client().get(&metrics).send().unwrap();
    assert_eq!(bare.status().as_u16(), 401);
    let with = Server::client()
        .get(&metrics)
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(with.status().as_u16(), 200);
    let health = Server::client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .unwrap();
    assert_eq!(health.status().as_u16(), 200, "health stays public");
}
