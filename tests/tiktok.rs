//! The `tiktok` kind against the simulated shop: type 1 and type 11 notifications signed
//! as hex HMAC of app key + body, deduplicated on `tts_notification_id`, the order's
//! line items fetched; inventory updates carrying every due SKU of a product in one
//! signed call; a 429 honoured.

mod common;

use std::time::Duration;

use common::*;
use loadgen::market::Stage;
use loadgen::sim::Habits;
use loadgen::tiktok_sim::TikTokSim;
use loadgen::webhook_sim::Fault;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    server: Server,
    tiktok: TikTokSim,
    _dir: tempfile::TempDir,
}

/// SKU `T{i}` is SKU `8{i}` of product `17{i / 2}` (two per product).
fn rig(skus: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let names: Vec<(String, String)> = (0..skus)
        .map(|i| (format!("T{i}"), format!("17{}/8{i}", i / 2)))
        .collect();
    let items: Vec<(&str, &str)> = names
        .iter()
        .map(|(s, a)| (s.as_str(), a.as_str()))
        .collect();
    let tiktok = TikTokSim::start(&items, TIKTOK_APP.0, TIKTOK_APP.1, TIKTOK_TOKEN);
    let rows: Vec<(&str, &str, &str)> = items.iter().map(|(s, a)| (*s, "tiktok", *a)).collect();
    let config = tiktok_channel("tiktok", &tiktok.market.url(), "") + &catalog(&data, &rows);
    let server = Server::start_with(&data, &config, None);
    tiktok
        .market
        .set_webhook_url(&server.url("/webhooks/tiktok"));
    Rig {
        server,
        tiktok,
        _dir: dir,
    }
}

fn post(rig: &Rig, events: Vec<Value>) {
    let (status, body) = rig.server.post_events(&json!({ "events": events }));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn notifications_are_checked_deduplicated_and_their_orders_fetched() {
    let rig = rig(2);
    count(&rig.server, "T0", 10);
    rig.tiktok.market.set_habits(Habits {
        duplicate: 1.0,
        reorder: Duration::from_millis(50),
        ..Habits::default()
    });
    let order = rig.tiktok.place_order(&[("T0", 2), ("T1", 1)]);
    assert!(eventually(WAIT, || rig.server.stock("T0") == Some((10, 2, 8))));
    assert_eq!(
        rig.server.stock("T1"),
        Some((0, 1, -1)),
        "one line item per unit"
    );

    assert_eq!(
        redeliver(&rig.server, "tiktok", &rig.tiktok.market, None).0,
        200
    );
    assert_eq!(
        rig.server.stock("T0"),
        Some((10, 2, 8)),
        "a redelivery is taken once"
    );
    let forged = Some(("authorization", Some("00ff")));
    let (status, reply) = redeliver(&rig.server, "tiktok", &rig.tiktok.market, forged);
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("bad_signature"))
    );
    assert_eq!(rig.server.stock("T0"), Some((10, 2, 8)));

    // A cancellation (type 1 and type 11): released once.
    rig.tiktok.advance(&order, Stage::Cancelled);
    assert!(eventually(WAIT, || rig.server.stock("T0")
        == Some((10, 0, 10))
        && rig.server.stock("T1") == Some((0, 0, 0))));
    assert!(rig
        .tiktok
        .market
        .sender
        .sent()
        .iter()
        .any(|s| s.topic == "type 11"));
}

#[test]
fn a_product_s_skus_go_together_in_one_signed_call() {
    let rig = rig(6);
    post(
        &rig,
        (0..6)
            .map(|i| event(&format!("c{i}"), &format!("T{i}"), "counted", 3))
            .collect(),
    );
    assert!(rig
        .tiktok
        .market
        .wait_for(WAIT, |l| l.values().all(|v| *v == 3))
        .is_some());
    let calls = rig.tiktok.market.calls();
    assert!(
        calls.iter().all(|c| c.status == 200),
        "signed calls are accepted: {calls:?}"
    );
    for product in ["170", "171", "172"] {
        let path = format!("/product/202309/products/{product}/inventory/update");
        let items: usize = calls
            .iter()
            .filter(|c| c.path == path)
            .map(|c| c.items)
            .sum();
        assert_eq!(items, 2, "{product}: {calls:?}");
    }
    assert!(
        calls.iter().any(|c| c.items == 2),
        "both SKUs of a product in one call: {calls:?}"
    );
}

#[test]
fn a_429_is_honoured() {
    let rig = rig(1);
    rig.tiktok
        .market
        .set_fault(Fault::Throttle { retry_after_s: 1 });
    post(&rig, vec![event("a", "T0", "counted", 4)]);
    assert!(eventually(WAIT, || rig
        .tiktok
        .market
        .calls()
        .iter()
        .any(|c| c.status == 429)));
    std::thread::sleep(Duration::from_secs(2));
    let throttled = rig
        .tiktok
        .market
        .calls()
        .iter()
        .filter(|c| c.status == 429)
        .count();
    assert!(throttled <= 4, "backed off: {throttled} calls in 2 s");
    rig.tiktok.market.set_fault(Fault::None);
    assert!(rig.tiktok.market.wait_for(WAIT, |l| l["T0"] == 4).is_some());
}
