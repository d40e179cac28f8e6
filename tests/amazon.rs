//! The `amazon` kind against the simulated account: EventBridge-delivered `ORDER_CHANGE`
//! notifications checked by the shared header and deduplicated on `NotificationId`, the
//! Orders API poll across restarts, `patchListingsItem` paced at 5/s, the switch to a
//! `JSON_LISTINGS_FEED` for a backlog (and back to per-call pushes once 5 feeds are
//! spent), and quantity-change notifications as echoes.

mod common;

use std::time::Duration;

use common::*;
use loadgen::amazon_sim::{AmazonSim, FEEDS_PER_WINDOW};
use loadgen::market::Stage;
use loadgen::sim::Habits;
use loadgen::webhook_sim::Fault;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    server: Server,
    amazon: AmazonSim,
    _dir: tempfile::TempDir,
}

/// SKU `A{i}` is seller SKU `AMZ-{i}`.
fn rig(skus: usize, extra: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let names: Vec<(String, String)> = (0..skus)
        .map(|i| (format!("A{i}"), format!("AMZ-{i}")))
        .collect();
    let items: Vec<(&str, &str)> = names
        .iter()
        .map(|(s, a)| (s.as_str(), a.as_str()))
        .collect();
    let amazon = AmazonSim::start(&items, AMAZON_LWA, AMAZON_AUTH);
    let rows: Vec<(&str, &str, &str)> = items.iter().map(|(s, a)| (*s, "amazon", *a)).collect();
    let config = amazon_channel("amazon", &amazon, extra) + &catalog(&data, &rows);
    let server = Server::start_with(&data, &config, None);
    amazon
        .market
        .set_webhook_url(&server.url("/webhooks/amazon"));
    Rig {
        server,
        amazon,
        _dir: dir,
    }
}

fn count_all(rig: &Rig, skus: std::ops::Range<usize>, on_hand: i64) {
    let events: Vec<Value> = skus
        .clone()
        .map(|i| {
            event(
                &format!("count-A{i}-{on_hand}"),
                &format!("A{i}"),
                "counted",
                on_hand,
            )
        })
        .collect();
    let (status, body) = rig.server.post_events(&json!({ "events": events }));
    assert_eq!(status, 200, "{body}");
    assert!(
        rig.amazon
            .market
            .wait_for(WAIT, |l| skus
                .clone()
                .all(|i| l[&format!("A{i}")] == on_hand))
            .is_some(),
        "Amazon never showed {on_hand}: {:?}",
        rig.amazon.market.levels()
    );
}

#[test]
fn order_changes_are_checked_deduplicated_and_applied() {
    let rig = rig(2, "");
    count_all(&rig, 0..2, 20);
    rig.amazon.market.set_habits(Habits {
        duplicate: 1.0,
        reorder: Duration::from_millis(100),
        ..Habits::default()
    });
    let order = rig.amazon.place_order(&[("A0", 3), ("A1", 1)]);
    assert!(rig.amazon.market.sender.wait_idle(WAIT));
    assert!(eventually(WAIT, || rig.server.stock("A0") == Some((20, 3, 17))));
    assert_eq!(
        rig.server.stock("A1"),
        Some((20, 1, 19)),
        "every item of the order"
    );

    // A redelivery of the same notification (same NotificationId): taken once.
    let (status, reply) = redeliver(&rig.server, "amazon", &rig.amazon.market, None);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(rig.server.stock("A0"), Some((20, 3, 17)));

    // Without the shared header, or with a wrong one: refused, nothing applied.
    let forged: Vec<(&str, &str)> = vec![
        ("content-type", "application/json"),
        (AMAZON_AUTH.0, "guess"),
    ];
    let (_, body) = rig.amazon.market.last_delivery().unwrap();
    let other = String::from_utf8(body)
        .unwrap()
        .replace("\"Quantity\":3", "\"Quantity\":9");
    let (status, reply) = post_raw(&rig.server, "amazon", &forged, other.as_bytes());
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["error"], "bad_signature", "{reply}");
    let (status, _) = post_raw(
        &rig.server,
        "amazon",
        &[("content-type", "application/json")],
        other.as_bytes(),
    );
    assert_eq!(status, 401);
    assert_eq!(rig.server.stock("A0"), Some((20, 3, 17)));

    rig.amazon.advance(&order, Stage::Shipped);
    assert!(eventually(WAIT, || rig.server.stock("A0") == Some((17, 0, 17))));
    let second = rig.amazon.place_order(&[("A1", 2)]);
    rig.amazon.advance(&second, Stage::Cancelled);
    assert!(
        // The first order shipped A1's unit; the second was placed and cancelled.
        eventually(WAIT, || rig.server.stock("A1") == Some((19, 0, 19))
            && audit_of(&rig.server, "A1")
                .iter()
                .any(|r| r["kind"] == "order_cancelled")),
        "{:?} {:#?}",
        rig.server.stock("A1"),
        audit_of(&rig.server, "A1")
    );
}

#[test]
fn the_order_poll_misses_nothing_and_counts_nothing_twice_across_restarts() {
    let rig = rig(1, "poll_interval_s = 1");
    // No notifications at all: the poll alone, with orders listed 1.5 s late.
    rig.amazon.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    rig.amazon
        .market
        .set_listing_lag(Duration::from_millis(1_500));
    let amazon = &rig.amazon;
    poll_survives_restarts(rig.server, "amazon", "A0", &|sku, qty| {
        amazon.place_order(&[(sku, qty)]);
    });
    assert!(rig.amazon.market.order_polls() >= 3);
}

#[test]
fn single_changes_go_per_call_at_five_per_second_without_429s() {
    let rig = rig(12, "");
    count_all(&rig, 0..12, 7);
    let calls = rig.amazon.market.calls();
    let patches: Vec<_> = calls
        .iter()
        .filter(|c| c.path.starts_with("/listings/"))
        .collect();
    assert_eq!(
        patches.len(),
        12,
        "one call per SKU under the feed threshold: {calls:?}"
    );
    assert!(
        patches.iter().all(|c| c.status == 200),
        "paced under Amazon's 5/s: {calls:?}"
    );
    assert!(rig.amazon.feeds().is_empty());

    // A 429 storm: the throttle is honoured and the value arrives once it passes.
    rig.amazon
        .market
        .set_fault(Fault::Throttle { retry_after_s: 1 });
    let (status, _) = rig
        .server
        .post_events(&json!({"events": [event("storm", "A0", "adjusted", 1)]}));
    assert_eq!(status, 200);
    assert!(eventually(WAIT, || rig
        .amazon
        .market
        .calls()
        .iter()
        .any(|c| c.status == 429)));
    rig.amazon.market.set_fault(Fault::None);
    assert!(rig.amazon.market.wait_for(WAIT, |l| l["A0"] == 8).is_some());
}

#[test]
fn a_backlog_goes_as_a_feed_until_five_feeds_are_spent() {
    let skus = 60;
    let rig = rig(skus, "");
    for round in 1..=FEEDS_PER_WINDOW as i64 {
        count_all(&rig, 0..skus, round);
    }
    let feeds = rig.amazon.feeds();
    assert_eq!(feeds.len(), FEEDS_PER_WINDOW, "{feeds:?}");
    assert!(
        feeds.iter().all(|n| *n > 15),
        "each feed carried a backlog: {feeds:?}"
    );
    let patches_before = rig
        .amazon
        .market
        .calls()
        .iter()
        .filter(|c| c.path.starts_with("/listings/"))
        .count();
    // The sixth backlog inside 5 minutes: no feed left, so per-call pushes carry it.
    count_all(&rig, 0..20, 99);
    assert_eq!(rig.amazon.feeds().len(), FEEDS_PER_WINDOW, "no sixth feed");
    let calls = rig.amazon.market.calls();
    let patches = calls
        .iter()
        .filter(|c| c.path.starts_with("/listings/"))
        .count();
    assert!(patches - patches_before >= 20, "per-call pushes: {calls:?}");
    assert!(
        calls.iter().all(|c| c.status != 429),
        "no createFeed over its limit, no patch over 5/s: {calls:?}"
    );
}

#[test]
fn quantity_change_notifications_are_echoes_of_our_writes() {
    let rig = rig(1, "");
    rig.amazon.market.set_habits(Habits {
        echo: true,
        ..Habits::default()
    });
    count_all(&rig, 0..1, 9);
    assert!(eventually(WAIT, || audit_of(&rig.server, "A0")
        .iter()
        .any(|r| r["kind"] == "level" && r["source"] == "amazon")));
    assert_eq!(
        rig.server.stock("A0"),
        Some((9, 0, 9)),
        "an echo changes nothing"
    );
}
