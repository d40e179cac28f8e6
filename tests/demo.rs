//! `lockstep demo`: the engine with the simulated Shopify store, WooCommerce site, Amazon
//! account and eBay seller in one process. It prints a status line per second, stops
//! cleanly on Ctrl-C, and ends with a summary that checks every store against the engine.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_demo_reports_each_second_stops_on_ctrl_c_and_converges() {
    let mut child = Command::new(common::BIN)
        .args([
            "demo",
            "--duration",
            "600",
            "--orders-per-second",
            "20",
            "--burst",
            "50",
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let start = Instant::now();
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&String| l.contains("shop p50"))
        .count()
        < 3
    {
        assert!(start.elapsed() < Duration::from_secs(60), "{lines:?}");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(line);
        }
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    lines.extend(rx.try_iter());
    let text = lines.join("\n");
    assert!(status.success(), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "Ctrl-C ended it early"
    );
    let status_line = lines.iter().find(|l| l.contains("shop p50")).unwrap();
    assert!(
        ["shop p50", "woo p50", "amazon p50", "ebay p50", "oversells"]
            .iter()
            .all(|part| status_line.contains(part)),
        "{status_line}"
    );
    assert!(text.contains("summary after"), "{text}");
    assert!(
        text.contains("converged: every store shows the engine's quantity for every SKU it lists"),
        "{text}"
    );
    let placed = lines.iter().find(|l| l.contains("orders placed:")).unwrap();
    for store in ["Shopify", "WooCommerce", "Amazon", "eBay"] {
        assert!(!placed.contains(&format!(" 0 on {store}")), "{placed}");
    }
}
