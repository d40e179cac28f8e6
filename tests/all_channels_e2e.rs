//! End to end with every channel kind at once: Shopify, WooCommerce, BigCommerce, Amazon,
//! eBay, Walmart, Etsy, TikTok Shop and a `webhook` channel, each its simulator
//! (`loadgen::fleet`). Orders are placed on every channel (some cancelled later), with
//! duplicate and reordered deliveries where the channel delivers webhooks, and eBay's
//! found by polling; in the end lockstep counts every order once and every channel shows
//! exactly what it computes.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use loadgen::fleet::{Fleet, CHANNELS};
use loadgen::sim::Habits;
use rand::{Rng, SeedableRng};

const SKUS: usize = 4;
const START: i64 = 100;
const WAIT: Duration = Duration::from_secs(45);

#[test]
fn orders_on_every_channel_kind_reach_every_other_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fleet = Fleet::start("S", SKUS);
    let catalog_path = data.with_extension("catalog.csv");
    std::fs::write(&catalog_path, fleet.catalog_csv()).unwrap();
    let config = fleet.channels_config(|_| String::new())
        + &format!(
            "\n[catalog]\npath = {:?}\n",
            catalog_path.display().to_string()
        );
    let server = Server::start_with(&data, &config, None);
    fleet.connect(server.base.trim_end_matches('/'));
    fleet.set_habits(&Habits {
        duplicate: 0.3,
        reorder: Duration::from_millis(100),
        echo: true,
        ..Habits::default()
    });
    fleet.set_listing_lag(Duration::from_millis(300));

    for name in &fleet.skus {
        count(&server, name, START);
    }
    let all_show = |want: &HashMap<String, i64>| {
        eventually(WAIT, || {
            (0..CHANNELS.len()).all(|c| {
                want.iter()
                    .all(|(sku, n)| fleet.levels(c).get(sku) == Some(n))
            })
        })
    };
    let start: HashMap<String, i64> = fleet.skus.iter().map(|n| (n.clone(), START)).collect();
    assert!(all_show(&start), "every channel shows the first count");

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut sold: HashMap<String, i64> = HashMap::new();
    let mut cancels = Vec::new();
    for round in 0..3 {
        for c in 0..CHANNELS.len() {
            let first = rng.random_range(0..SKUS);
            let mut lines = vec![(fleet.skus[first].as_str(), rng.random_range(1..=2))];
            if rng.random_bool(0.5) {
                lines.push((fleet.skus[(first + 1) % SKUS].as_str(), 1));
            }
            let cancel = fleet.place(c, &lines);
            if (round + c) % 4 == 1 {
                cancels.push(cancel);
            } else {
                for (sku, qty) in &lines {
                    *sold.entry(sku.to_string()).or_default() += qty;
                }
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(5..30)));
        }
    }
    // Cancellations come later, once the placements are in.
    std::thread::sleep(Duration::from_millis(800));
    for cancel in &cancels {
        cancel();
    }

    let want: HashMap<String, i64> = fleet
        .skus
        .iter()
        .map(|n| (n.clone(), START - sold.get(n).copied().unwrap_or(0)))
        .collect();
    let engine_exact = eventually(WAIT, || {
        fleet
            .skus
            .iter()
            .all(|n| server.stock(n) == Some((START, START - want[n], want[n])))
    });
    let engine: Vec<_> = fleet.skus.iter().map(|n| (n, server.stock(n))).collect();
    assert!(
        engine_exact,
        "lockstep counts every order once: want {want:?}, got {engine:?}"
    );
    let exact = all_show(&want);
    let shown: Vec<(&str, HashMap<String, i64>)> = (0..CHANNELS.len())
        .map(|c| (CHANNELS[c], fleet.levels(c)))
        .collect();
    assert!(
        exact,
        "every channel shows lockstep's numbers: want {want:?}\n{shown:#?}"
    );
    let oversells = server
        .audit_all()
        .iter()
        .filter(|r| r["oversell"] == true)
        .count();
    assert_eq!(oversells, 0);
}
