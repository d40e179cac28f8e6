//! Crash test in the style of sled's: spawn `lockstep serve`, drive it from several
//! concurrent clients, `kill -9` it at a random moment, restart on the same data
//! directory, and check that every acknowledged event is there exactly once and that
//! `lockstep replay` rebuilds the same state from the log. Five rounds on one directory.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{event, replay, Server};
use serde_json::{json, Value};

const ROUNDS: usize = 5;
const CLIENTS: usize = 4;
const SKUS: usize = 12;

/// A small deterministic generator (xorshift64*), seeded per run and printed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An event a client sent: its request body entry and whether it was acknowledged.
#[derive(Clone)]
struct Sent {
    body: Value,
    sku: String,
    placed: bool,
    acked: bool,
}

#[test]
fn kill_nine_loses_no_acknowledged_event_and_applies_none_twice() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut all_sent: Vec<Sent> = Vec::new();

    for round in 0..ROUNDS {
        let server = Server::start(&data);
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::<Sent>::new()));
        let mut clients = Vec::new();
        for client in 0..CLIENTS {
            let (base, stop, sent) = (server.base.clone(), stop.clone(), sent.clone());
            let mut rng = Rng(rng.next() | 1);
            clients.push(std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Batches of 1 to 8 events over several SKUs: adjustments and orders.
                    let batch: Vec<Sent> = (0..1 + rng.below(8))
                        .map(|_| {
                            n += 1;
                            let sku = format!("CRASH-{}", rng.below(SKUS as u64));
                            let key = format!("r{round}-c{client}-{n}");
                            let placed = rng.below(3) == 0;
                            let body = if placed {
                                json!({"sku": sku, "kind": "order_placed", "qty": 1, "source": "crash",
                                       "order_id": key, "line_id": "1"})
                            } else {
                                event(&key, &sku, "adjusted", 1)
                            };
                            Sent { body, sku, placed, acked: false }
                        })
                        .collect();
                    let events: Vec<&Value> = batch.iter().map(|s| &s.body).collect();
                    let answer = http.post(format!("{base}/v1/events")).json(&json!({ "events": events })).send();
                    let acked = matches!(&answer, Ok(r) if r.status().is_success());
                    let mut sent = sent.lock().unwrap();
                    sent.extend(batch.into_iter().map(|s| Sent { acked, ..s }));
                    if answer.is_err() {
                        break; // the server is gone
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(150 + rng.below(600)));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        let sent = std::mem::take(&mut *sent.lock().unwrap());
        let acked = sent.iter().filter(|s| s.acked).count();
        println!(
            "round {round}: {} events sent, {acked} acknowledged before kill -9",
            sent.len()
        );
        assert!(
            acked > 0,
            "round {round}: nothing was acknowledged; the test proves nothing"
        );
        all_sent.extend(sent);

        // The log alone rebuilds the state the crash left.
        let (ok, out) = replay(&data);
        assert!(
            ok && out.contains("replay equals the live state"),
            "round {round}: {out}"
        );

        // Every acknowledged event survived: sending it again is a duplicate. Unacknowledged
        // ones may or may not have landed; sending them again settles them.
        let server = Server::start(&data);
        for chunk in all_sent.chunks(500) {
            let events: Vec<&Value> = chunk.iter().map(|s| &s.body).collect();
            let (status, body) = server.post_events(&json!({ "events": events }));
            assert_eq!(status, 200, "{body}");
            for (sent, result) in chunk.iter().zip(body["results"].as_array().unwrap()) {
                if sent.acked {
                    assert_eq!(
                        result["outcome"], "duplicate",
                        "round {round}: acknowledged event lost: {}",
                        sent.body
                    );
                }
            }
        }
        // Exactly once: every event sent, in any round, counted once and only once.
        let mut want: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for s in &all_sent {
            let entry = want.entry(&s.sku).or_default();
            if s.placed {
                entry.1 += 1;
            } else {
                entry.0 += 1;
            }
        }
        for (sku, (on_hand, committed)) in want {
            let (got_on_hand, got_committed, _) = server.stock(sku).expect("SKU exists");
            assert_eq!(
                (got_on_hand, got_committed),
                (on_hand, committed),
                "round {round}: SKU {sku}"
            );
        }
        for s in all_sent.iter_mut() {
            s.acked = true; // all of them are durable now
        }
        server.kill9();
    }
    let (ok, out) = replay(&data);
    assert!(ok, "{out}");
}
