//! The binary's allocator: jemalloc with background purging, which is what keeps resident
//! memory flat under steady load (src/main.rs says why; the README's soak figures show
//! it). A build that lost the allocator or its background threads would still pass every
//! other test and only fail an hour's soak; this catches it at once.

#![cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]

mod common;

use std::time::Duration;

use common::{event, eventually, Server};

/// The names of a process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn the_server_runs_jemalloc_s_background_purging_threads() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    // Some allocation work first: jemalloc starts its threads with its arenas.
    let (status, _) = server.post_events(&serde_json::json!({
        "events": [event("k1", "SKU-1", "adjusted", 5)]
    }));
    assert_eq!(status, 200);
    let pid = server.child.id();
    let purging = || {
        thread_names(pid)
            .iter()
            .any(|name| name.starts_with("jemalloc_bg_thd"))
    };
    assert!(
        eventually(Duration::from_secs(10), purging),
        "no jemalloc background thread among {:?}",
        thread_names(pid)
    );
    server.stop();
}
