//! The `walmart` kind against the simulated seller: `PO_CREATED` / `ORDER_UPDATES`
//! webhooks authenticated by HMAC or Basic in the chosen header, deduplicated on
//! `source.eventId`; the orders poll across restarts; `PUT /v3/inventory` one SKU per
//! call with the token, service name and a fresh correlation id; 429 `Retry-After`.

mod common;

use std::time::Duration;

use common::*;
use loadgen::market::Stage;
use loadgen::sim::Habits;
use loadgen::walmart_sim::{EventStyle, HookAuth, WalmartSim};
use loadgen::webhook_sim::Fault;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
/// A feed budget whose changes gather for 1 s (at 10 an hour they gather 36 s).
const FAST_FEEDS: &str = "feeds_per_hour = 3600";

type Rig = MarketRig<WalmartSim>;

/// SKU `M{i}` is seller SKU `WM-{i}`.
fn rig(n: usize, basic: bool, extra: &str) -> Rig {
    let (hook_auth, auth_config) = if basic {
        (
            HookAuth::Basic("wm-hook-auth".into(), "walmart:hook-password".into()),
            "auth_header = \"wm-hook-auth\"\nwebhook_auth = \"basic\"\nwebhook_secret = \"walmart:hook-password\"",
        )
    } else {
        (
            HookAuth::Hmac("wm-signature".into(), WALMART_HOOK_SECRET.into()),
            "auth_header = \"wm-signature\"\nwebhook_secret = \"walmart-subscription-secret-sim\"",
        )
    };
    market_rig(
        "walmart",
        &skus("M", 0..n, |i| format!("WM-{i}")),
        |items| WalmartSim::start(items, WALMART_CLIENT, hook_auth),
        |sim| walmart_channel("walmart", &sim.market.url(), auth_config, extra),
        |sim| &sim.market,
    )
}

/// One SKU, `M0` at `on_hand`, every webhook lost: orders come in by the poll alone,
/// every second.
fn polled_only_rig(on_hand: i64) -> Rig {
    let rig = rig(1, false, "poll_interval_s = 1");
    count(&rig.server, "M0", on_hand);
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    rig
}

/// Calls of the orders list answered `status`.
fn orders_calls(sim: &WalmartSim, status: u16) -> usize {
    let calls = sim.market.calls();
    calls
        .iter()
        .filter(|c| c.path == "/v3/orders" && c.status == status)
        .count()
}

/// Waits until `orders` units of `sku` are committed.
fn all_committed(server: &Server, sku: &str, orders: i64) {
    assert!(
        eventually(Duration::from_secs(60), || server
            .stock(sku)
            .is_some_and(|(_, committed, _)| committed == orders)),
        "{:?} of {orders} committed",
        server.stock(sku)
    );
}

fn post(rig: &Rig, events: Vec<Value>) {
    post_ok(&rig.server, events);
}

fn forged_is_refused(rig: &Rig, header: &str) {
    let forged = Some((header, Some("Zm9yZ2Vk")));
    let (status, reply) = redeliver(&rig.server, "walmart", &rig.sim.market, forged);
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("bad_signature")),
        "{reply}"
    );
}

#[test]
fn hmac_signed_events_are_checked_deduplicated_and_applied() {
    let rig = rig(2, false, "");
    count(&rig.server, "M0", 10);
    rig.sim.market.set_habits(Habits {
        duplicate: 1.0,
        ..Habits::default()
    });
    let order = rig.sim.place_order(&[("M0", 2), ("M1", 1)]);
    assert!(eventually(WAIT, || rig.server.stock("M0") == Some((10, 2, 8))));
    assert_eq!(
        redeliver(&rig.server, "walmart", &rig.sim.market, None).0,
        200
    );
    assert_eq!(
        rig.server.stock("M0"),
        Some((10, 2, 8)),
        "one eventId, taken once"
    );
    forged_is_refused(&rig, "wm-signature");
    assert_eq!(rig.server.stock("M0"), Some((10, 2, 8)));

    rig.sim.advance(&order, Stage::Cancelled);
    assert!(eventually(WAIT, || rig.server.stock("M0")
        == Some((10, 0, 10))
        && rig.server.stock("M1").map(|s| s.1) == Some(0)));
}

/// Lines carry `quantity: {unitOfMeasure, measurementValue: "2"}` in both the legacy
/// `PO_CREATED` event and `ORDER_UPDATES` (order in `payload.order`): the webhook alone
/// must place them (the poll, every 60 s by default, cannot have run yet).
#[test]
fn both_event_shapes_place_their_lines_from_the_webhook_alone() {
    let rig = rig(2, false, "");
    count(&rig.server, "M0", 10);
    count(&rig.server, "M1", 10);
    rig.sim.set_event_style(EventStyle::Legacy);
    rig.sim.place_order(&[("M0", 2)]);
    assert!(
        eventually(WAIT, || rig.server.stock("M0") == Some((10, 2, 8))),
        "legacy PO_CREATED: {:?}",
        rig.server.stock("M0")
    );
    rig.sim.set_event_style(EventStyle::OrderUpdates);
    let order = rig.sim.place_order(&[("M1", 3)]);
    assert!(
        eventually(WAIT, || rig.server.stock("M1") == Some((10, 3, 7))),
        "ORDER_UPDATES / PO_CREATED: {:?}",
        rig.server.stock("M1")
    );
    rig.sim.advance(&order, Stage::Cancelled);
    assert!(
        eventually(WAIT, || rig.server.stock("M1") == Some((10, 0, 10))),
        "ORDER_UPDATES / PO_LINE_AUTOCANCELLED: {:?}",
        rig.server.stock("M1")
    );
    // A line whose quantity cannot be read is recorded by name, neither dropped without
    // a word nor refusing the order's other line (it once refused the whole event).
    let body = serde_json::json!({
        "source": {"eventType": "ORDER_UPDATES", "eventTime": minutes_ago(5), "eventId": "e-bad"},
        "payload": {"subEventType": "PO_CREATED", "order": {"purchaseOrderId": "77",
            "orderLines": [
                {"lineNumber": "1", "sku": "WM-0", "quantity": {"unitOfMeasure": "EACH"}},
                {"lineNumber": "2", "sku": "WM-1", "quantity": {"unitOfMeasure": "EACH", "measurementValue": "1"}}
            ]}},
    })
    .to_string();
    let (status, reply) = post_signed_walmart(&rig, &body);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(rig.server.stock("M0"), Some((10, 2, 8)), "its line unread");
    assert_eq!(
        rig.server.stock("M1"),
        Some((10, 1, 9)),
        "the other line held"
    );
    // `field` of each `unmapped` record in the audit, newest first.
    let unmapped = |field: &str| -> Vec<String> {
        let (_, audit) = rig.server.get("/v1/audit?limit=10");
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "unmapped")
            .filter_map(|r| r[field].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        unmapped("sku"),
        ["?walmart: order 77 line 1 has quantity (none), not a whole number from 0 to 1000000000"]
    );
    // The same order in another event: the same record, a duplicate, and nothing else
    // moves.
    let again = body.replace("\"e-bad\"", "\"e-bad-2\"");
    assert_ne!(again, body);
    assert_eq!(post_signed_walmart(&rig, &again).0, 200);
    assert_eq!(rig.server.stock("M1"), Some((10, 1, 9)));
    assert_eq!(unmapped("outcome"), ["duplicate", "drift"], "newest first");
}

/// Without `webhook_secret`, the HMAC key is the API client secret, as before.
#[test]
fn without_a_subscription_secret_the_client_secret_is_the_hmac_key() {
    let rig = market_rig(
        "walmart",
        &skus("M", 0..1, |i| format!("WM-{i}")),
        |items| {
            let hook = HookAuth::Hmac("wm-signature".into(), WALMART_CLIENT.1.into());
            WalmartSim::start(items, WALMART_CLIENT, hook)
        },
        |sim| {
            walmart_channel(
                "walmart",
                &sim.market.url(),
                "auth_header = \"wm-signature\"",
                "",
            )
        },
        |sim| &sim.market,
    );
    rig.sim.place_order(&[("M0", 1)]);
    assert!(eventually(WAIT, || rig.server.stock("M0") == Some((0, 1, -1))));
}

/// Posts `body` to the walmart webhook, signed as the rig's subscription signs.
fn post_signed_walmart(rig: &Rig, body: &str) -> (u16, Value) {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(WALMART_HOOK_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let response = Server::client()
        .post(rig.server.url("/webhooks/walmart"))
        .header("content-type", "application/json")
        .header("wm-signature", sig)
        .body(body.to_string())
        .send()
        .unwrap();
    status_json(response)
}

#[test]
fn basic_authenticated_events_are_checked() {
    let rig = rig(1, true, "");
    rig.sim.place_order(&[("M0", 1)]);
    assert!(eventually(WAIT, || rig.server.stock("M0") == Some((0, 1, -1))));
    forged_is_refused(&rig, "wm-hook-auth");
}

#[test]
fn the_orders_poll_misses_nothing_and_counts_nothing_twice_across_restarts() {
    let rig = rig(1, false, "poll_interval_s = 1");
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    rig.sim.market.set_listing_lag(Duration::from_millis(1_500));
    let walmart = &rig.sim;
    poll_survives_restarts(rig.server, "walmart", "M0", &|sku, qty| {
        walmart.place_order(&[(sku, qty)]);
    });
}

/// The orders list throttled by a token bucket (here 2 tokens, back every 2 s) and a pass
/// of four pages (350 orders, 100 a page): the poll waits for the replenishment the 429's
/// `x-next-replenishment-time` names and reads every page. Before, the third page's 429
/// failed the pass; its watermark unmoved, every later pass failed on the same page and
/// the orders past it were never counted.
#[test]
fn a_poll_longer_than_the_orders_bucket_still_counts_every_order() {
    const ORDERS: i64 = 350;
    let rig = polled_only_rig(1_000);
    rig.sim.set_orders_token_bucket(2, Duration::from_secs(2));
    for _ in 0..ORDERS {
        rig.sim.place_order(&[("M0", 1)]);
    }
    all_committed(&rig.server, "M0", ORDERS);
    assert!(orders_calls(&rig.sim, 429) > 0, "the bucket never ran out");
    assert_eq!(placed_records(&rig.server, "M0"), ORDERS as usize);
}

/// An outage longer than one query of the orders list answers: 350 orders over the last
/// hour, none delivered, a watermark from before it, and (here) at most 100 orders to one
/// query. The poll halves its window of modification time until Walmart answers it and
/// reads the windows one after another: every order counted once. Before, the one query
/// from the watermark was refused at every pass and nothing was ever counted.
#[test]
fn an_outage_past_what_one_query_answers_is_read_in_windows() {
    const ORDERS: i64 = 350;
    let rig = polled_only_rig(1_000);
    rig.sim.set_orders_cap(100);
    let sim = &rig.sim;
    let server = outage_of_orders(rig.server, "walmart", &sim.market, (ORDERS, 10), || {
        sim.place_order(&[("M0", 1)]);
    });
    all_committed(&server, "M0", ORDERS);
    assert!(orders_calls(sim, 400) > 0, "no query was ever over the cap");
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(placed_records(&server, "M0"), ORDERS as usize, "none twice");
}

/// A store with no order modified lately: Walmart answers the orders list 404
/// `CONTENT_NOT_FOUND` when nothing matches. That is an empty window read whole, so quiet
/// passes succeed and move the watermark; before, each failed and it never moved.
#[test]
fn quiet_passes_move_the_watermark() {
    let rig = rig(1, false, "poll_interval_s = 1");
    let path = rig.server.data_dir.join("poll-walmart.watermark");
    let watermark = || {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
    };
    assert!(
        eventually(WAIT, || watermark().is_some()),
        "no pass stored a watermark"
    );
    let first = watermark().unwrap();
    assert!(
        eventually(WAIT, || watermark().is_some_and(|w| w > first)),
        "the watermark stayed at {first}"
    );
    assert!(
        orders_calls(&rig.sim, 404) > 0,
        "no pass met an empty answer"
    );
}

/// An order placed over a week ago and cancelled today, the cancellation's event lost:
/// the poll asks for orders created in the last 179 days, since Walmart's list otherwise
/// takes only the last 7 ("Default is current date - 7 days"), and the units come back.
#[test]
fn an_order_created_over_a_week_ago_and_cancelled_today_is_released() {
    let rig = rig(1, false, "poll_interval_s = 1");
    count(&rig.server, "M0", 10);
    let order = rig.sim.place_order(&[("M0", 2)]);
    assert!(eventually(WAIT, || rig.server.stock("M0") == Some((10, 2, 8))));
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    let eight_days_ago = loadgen::market::now_us() - 8 * 86_400 * 1_000_000;
    rig.sim
        .market
        .shop()
        .set_order_created(order.parse().unwrap(), eight_days_ago);
    rig.sim.advance(&order, Stage::Cancelled);
    assert!(
        eventually(WAIT, || rig.server.stock("M0") == Some((10, 0, 10))),
        "{:?}",
        rig.server.stock("M0")
    );
}

/// A multi-quantity line shipped and cancelled some units at a time (the orders API's
/// status quantities), then the rest shipped: each unit once, read by the poll again and
/// again without counting anything twice.
#[test]
fn status_quantities_ship_and_cancel_some_units_of_a_line() {
    let rig = rig(1, false, "poll_interval_s = 1");
    count(&rig.server, "M0", 20);
    let order = rig.sim.place_order(&[("M0", 6)]);
    assert!(eventually(WAIT, || rig.server.stock("M0") == Some((20, 6, 14))));
    rig.sim.ship_units(&order, 0, 2);
    rig.sim.cancel_units(&order, 0, 1);
    assert!(
        eventually(WAIT, || rig.server.stock("M0") == Some((18, 3, 15))),
        "{:?}",
        rig.server.stock("M0")
    );
    rig.sim.ship_units(&order, 0, 3);
    assert!(
        eventually(WAIT, || rig.server.stock("M0") == Some((15, 0, 15))),
        "{:?}",
        rig.server.stock("M0")
    );
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        rig.server.stock("M0"),
        Some((15, 0, 15)),
        "later polls change nothing"
    );
}

#[test]
fn inventory_puts_go_one_per_sku_with_fresh_correlation_ids() {
    let rig = rig(6, false, "");
    post(
        &rig,
        (0..6)
            .map(|i| event(&format!("c{i}"), &format!("M{i}"), "counted", 9))
            .collect(),
    );
    assert!(rig
        .sim
        .market
        .wait_for(WAIT, |l| l.values().all(|v| *v == 9))
        .is_some());
    let calls = rig.sim.market.calls();
    assert_eq!(calls.len(), 6, "{calls:?}");
    assert!(calls.iter().all(|c| c.items == 1 && c.status == 200));
    let ids = rig.sim.correlation_ids();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a fresh WM_QOS.CORRELATION_ID on every call"
    );
}

#[test]
fn a_429_retry_after_is_waited() {
    let rig = rig(1, false, "");
    rig.sim
        .market
        .set_fault(Fault::Throttle { retry_after_s: 2 });
    post(&rig, vec![event("a", "M0", "counted", 4)]);
    assert!(eventually(WAIT, || rig
        .sim
        .market
        .calls()
        .iter()
        .any(|c| c.status == 429)));
    std::thread::sleep(Duration::from_millis(200));
    rig.sim.market.set_fault(Fault::None);
    assert!(rig.sim.market.wait_for(WAIT, |l| l["M0"] == 4).is_some());
    let calls = rig.sim.market.calls();
    let throttled = calls.iter().find(|c| c.status == 429).unwrap().at;
    let next = calls.iter().find(|c| c.status == 200).unwrap().at;
    assert!(
        next.duration_since(throttled) >= Duration::from_millis(1_900),
        "the next call waited Retry-After: {:?}",
        next.duration_since(throttled)
    );
}

/// Walmart's token bucket says what is left and when it refills: the last token spent,
/// the next call waits for the replenishment instead of drawing a 429.
#[test]
fn pushes_pace_by_the_token_count_and_the_replenishment_time() {
    let rig = rig(6, false, "");
    rig.sim.set_token_bucket(2, Duration::from_millis(1_500));
    post(
        &rig,
        (0..6)
            .map(|i| event(&format!("t{i}"), &format!("M{i}"), "counted", 5))
            .collect(),
    );
    assert!(rig
        .sim
        .market
        .wait_for(WAIT, |l| l.values().all(|v| *v == 5))
        .is_some());
    let calls = rig.sim.market.calls();
    assert!(calls.iter().all(|c| c.status == 200), "no 429: {calls:?}");
}

/// A read throttled with a 429 that names no `Retry-After` waits for the bucket's
/// replenishment time instead of guessing by doubling waits.
#[test]
fn a_throttled_read_waits_for_the_replenishment_time() {
    let rig = rig(3, false, "");
    count_shown(&rig.server, &rig.sim.market, "M", 0..3, 5);
    // One read every 3 s.
    rig.sim.set_read_token_bucket(1, Duration::from_secs(3));
    let (status, body) = reconcile(&rig.server, "walmart");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["report"]["checked"], &body["report"]["unread"]),
        (&serde_json::json!(3), &serde_json::json!(0)),
        "{body}"
    );
    let reads = |status: u16| {
        rig.sim
            .market
            .calls()
            .iter()
            .filter(|c| c.path == "GET /v3/inventory" && c.status == status)
            .count()
    };
    assert_eq!(reads(200), 3);
    // Two reads found the bucket empty; each waits for its replenishment (a second 429
    // only if the wait ends a hair before Walmart's clock), where doubling waits from
    // 250 ms drew four each.
    assert!(
        (2..=4).contains(&reads(429)),
        "{} reads answered 429",
        reads(429)
    );
}

/// What lockstep records as the `walmart` channel's acknowledged value of `sku`.
fn pushed(rig: &Rig, sku: &str) -> Option<i64> {
    let (status, body) = rig.server.get(&format!("/v1/skus/{sku}"));
    assert_eq!(status, 200, "{body}");
    body["channels"]["walmart"]["pushed"].as_i64()
}

fn inventory_puts(rig: &Rig) -> usize {
    rig.sim
        .market
        .calls()
        .iter()
        .filter(|c| c.path == "/v3/inventory" && c.status == 200)
        .count()
}

/// Changes to plenty of stock go by the bulk inventory feed, and count as shown only once
/// Walmart has processed the feed.
#[test]
fn most_changes_go_by_the_feed_and_are_acknowledged_once_processed() {
    let rig = rig(3, false, FAST_FEEDS);
    rig.sim.set_feed_processing(Duration::from_secs(2));
    post(
        &rig,
        (0..3)
            .map(|i| event(&format!("f{i}"), &format!("M{i}"), "counted", 50 + i))
            .collect(),
    );
    assert!(eventually(WAIT, || !rig.sim.feeds().is_empty()));
    let (_, items, processed) = rig.sim.feeds()[0].clone();
    assert_eq!((items, processed), (3, false), "{:?}", rig.sim.feeds());
    assert_eq!(pushed(&rig, "M0"), None, "not shown until processed");
    assert_eq!(rig.sim.market.level("M0"), Some(0));
    assert!(rig
        .sim
        .market
        .wait_for(WAIT, |l| (0..3)
            .all(|i| l[&format!("M{i}")] == 50 + i as i64))
        .is_some());
    assert!(eventually(WAIT, || pushed(&rig, "M2") == Some(52)));
    assert_eq!(inventory_puts(&rig), 0, "no single-item calls");
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(rig.sim.feeds().len(), 1, "nothing sent twice");
}

/// A stock-out cannot wait for a feed: it goes by `PUT /v3/inventory` at once, even while
/// a feed holding the SKU's older value is processed, and is put again after that feed,
/// which overwrote it.
#[test]
fn a_stock_out_goes_at_once_during_a_feed_and_again_after_it() {
    let rig = rig(1, false, FAST_FEEDS);
    rig.sim.set_feed_processing(Duration::from_secs(4));
    post(&rig, vec![event("plenty", "M0", "counted", 50)]);
    assert!(eventually(WAIT, || rig.sim.feeds().len() == 1));
    post(&rig, vec![event("gone", "M0", "counted", 0)]);
    // (The simulator starts at 0: the PUT itself is what shows the stock-out was sent.)
    assert!(eventually(WAIT, || inventory_puts(&rig) == 1));
    assert_eq!(rig.sim.market.level("M0"), Some(0));
    assert!(
        !rig.sim.feeds()[0].2,
        "the stock-out was shown before the feed was processed"
    );
    // The feed lands (50), and the stock-out is put again.
    assert!(eventually(WAIT, || rig.sim.feeds()[0].2));
    assert!(eventually(WAIT, || inventory_puts(&rig) >= 2
        && rig.sim.market.level("M0") == Some(0)));
    let shown: Vec<i64> = rig
        .sim
        .market
        .arrivals("M0")
        .iter()
        .map(|a| a.available)
        .collect();
    assert_eq!(shown, [0, 50, 0], "{shown:?}");
    assert!(eventually(WAIT, || pushed(&rig, "M0") == Some(0)));
}

/// Two SKUs by fast feeds processed in `processing_ms`, the simulator set up by `sim_setup`
/// first, then counted: M0 at 40, M1 at 60.
fn two_counts_by_feed(processing_ms: u64, sim_setup: impl FnOnce(&WalmartSim)) -> Rig {
    let rig = rig(2, false, FAST_FEEDS);
    rig.sim
        .set_feed_processing(Duration::from_millis(processing_ms));
    sim_setup(&rig.sim);
    post(
        &rig,
        vec![
            event("a", "M0", "counted", 40),
            event("b", "M1", "counted", 60),
        ],
    );
    rig
}

/// An item Walmart refuses in a processed feed is not acknowledged: it goes again in the
/// next feed, alone.
#[test]
fn a_feed_item_walmart_refuses_is_sent_again() {
    let rig = two_counts_by_feed(500, |sim| sim.refuse_feed_item("WM-1"));
    assert!(eventually(WAIT, || rig.sim.feeds().len() >= 2));
    let feeds = rig.sim.feeds();
    assert_eq!((feeds[0].1, feeds[1].1), (2, 1), "{feeds:?}");
    assert!(eventually(WAIT, || pushed(&rig, "M0") == Some(40)));
    assert_eq!(pushed(&rig, "M1"), None, "refused: not acknowledged");
    assert_eq!(rig.sim.market.level("M1"), Some(0));
    // Named for the operator as a direct push's refusal is, the channel still pushing.
    assert!(
        eventually(WAIT, || rig.server.first_channel()["refused"]
            == json!(["M1"])),
        "{}",
        rig.server.first_channel()
    );
    assert!(rig
        .server
        .text("/console/")
        .contains("class=\"state pushing\""));
}

/// A feed item Walmart's own systems failed (`SYSTEM_ERROR`: "wait … and then try
/// again") is not the SKU's fault: it goes again in a later feed, uncounted and not
/// named as refused, and lands once Walmart takes it. (It was named and held as a
/// `DATA_ERROR` is.)
#[test]
fn a_feed_item_walmart_s_systems_fail_goes_again_unnamed() {
    let rig = two_counts_by_feed(300, |sim| sim.fail_feed_item("WM-1"));
    assert!(eventually(WAIT, || pushed(&rig, "M0") == Some(40)));
    // A second feed carries M1 again and is processed: it failed again.
    assert!(eventually(WAIT, || {
        let feeds = rig.sim.feeds();
        feeds.len() >= 2 && feeds[1].2
    }));
    let feeds = rig.sim.feeds();
    assert_eq!((feeds[0].1, feeds[1].1), (2, 1), "{feeds:?}");
    assert_eq!(pushed(&rig, "M1"), None);
    // Offered again at once after the second failed feed, not held: a third feed.
    assert!(eventually(WAIT, || rig.sim.feeds().len() >= 3));
    let channel = rig.server.first_channel();
    assert_eq!(
        (&channel["refused"], &channel["refused_skus"]),
        (&json!([]), &json!(0)),
        "{channel}"
    );
    assert_eq!(
        rig.server
            .metric("lockstep_push_items_refused_total{channel=\"walmart\"}"),
        0.0
    );
    assert!(
        rig.server
            .metric("lockstep_push_items_failed_total{channel=\"walmart\"}")
            >= 2.0
    );
    rig.sim.heal_feed_items();
    assert!(eventually(WAIT, || pushed(&rig, "M1") == Some(60)));
    assert_eq!(rig.sim.market.level("M1"), Some(60));
}

/// A processed feed that took none of its items (Walmart refusing every one) while the
/// channel took nothing else is no sign the channel writes: the console says failing.
/// (Such a feed cleared "failing" before.)
#[test]
fn a_feed_that_takes_none_of_its_items_shows_the_channel_failing() {
    let rig = two_counts_by_feed(200, |sim| {
        sim.refuse_feed_item("WM-0");
        sim.refuse_feed_item("WM-1");
    });
    assert!(
        eventually(WAIT, || rig
            .server
            .text("/console/")
            .contains("applied none of the items it carried (2)")),
        "{}",
        rig.server.text("/console/")
    );
    assert!(rig
        .server
        .text("/console/")
        .contains("class=\"state failing\""));
    assert_eq!((pushed(&rig, "M0"), pushed(&rig, "M1")), (None, None));
}

/// A feed Walmart throttles waits for its budget (here one feed an hour: the 429's
/// replenishment time), without a loop of 429s, while an urgent change goes at once.
#[test]
fn a_throttled_feed_waits_and_urgent_changes_do_not() {
    let rig = rig(3, false, FAST_FEEDS);
    rig.sim.set_feed_processing(Duration::from_millis(200));
    rig.sim.set_feed_budget(1, Duration::from_secs(3_600));
    post(&rig, vec![event("a", "M0", "counted", 40)]);
    assert!(rig.sim.market.wait_for(WAIT, |l| l["M0"] == 40).is_some());
    post(&rig, vec![event("b", "M1", "counted", 60)]);
    let feed_calls = |status: u16| {
        rig.sim
            .market
            .calls()
            .iter()
            .filter(|c| c.path == "/v3/feeds" && c.status == status)
            .count()
    };
    assert!(eventually(WAIT, || feed_calls(429) == 1));
    post(&rig, vec![event("c", "M2", "counted", 3)]);
    assert!(rig.sim.market.wait_for(WAIT, |l| l["M2"] == 3).is_some());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        (feed_calls(200), feed_calls(429)),
        (1, 1),
        "one 429, then a wait"
    );
    assert_eq!(rig.sim.market.level("M1"), Some(0));
}

/// A first pass that fails (here the channel is unreachable) still leaves its start as
/// the watermark, so the pass that next succeeds reads from there; before, nothing was
/// stored and that pass started from its own start, past the orders modified between.
#[test]
fn a_first_pass_that_fails_leaves_its_start_as_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let block = walmart_channel(
        "walmart",
        "http://127.0.0.1:9",
        "auth_header = \"wm-signature\"\nwebhook_secret = \"walmart-subscription-secret-sim\"",
        "poll_interval_s = 1",
    );
    let config = block + &catalog(&data, &[("M0", "walmart", "WM-0")]);
    let started = loadgen::market::now_us();
    let server = Server::start_with(&data, &config, None);
    let path = data.join("poll-walmart.watermark");
    assert!(
        eventually(WAIT, || path.exists()),
        "no watermark after a failed first pass\n{}",
        server.stderr_lines().join("\n")
    );
    let watermark: i64 = std::fs::read_to_string(&path)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        (started..=loadgen::market::now_us()).contains(&watermark),
        "{watermark} is not the first pass's start (the server started at {started})"
    );
    let log = std::cell::RefCell::new(Vec::new());
    let failed = eventually(WAIT, || {
        log.borrow_mut().extend(server.stderr_lines());
        log.borrow().iter().any(|l| l.contains("order poll failed"))
    });
    assert!(
        failed,
        "the pass did not fail:\n{}",
        log.borrow().join("\n")
    );
}

/// A watermark later than now (the clock stepped back, or written by hand) is read, and
/// stored, as now: an order whose event was lost is still found. Before, the pass read
/// only from that future time and found nothing.
#[test]
fn a_watermark_in_the_future_is_read_as_now() {
    let rig = polled_only_rig(10);
    let data = rig.server.data_dir.clone();
    let sim = &rig.sim;
    let server = kill9_and_restart_after(rig.server, || {
        let tomorrow = loadgen::market::now_us() + 86_400 * 1_000_000;
        std::fs::write(data.join("poll-walmart.watermark"), tomorrow.to_string()).unwrap();
    });
    sim.place_order(&[("M0", 2)]);
    all_committed(&server, "M0", 2);
    // And stored as now: a later pass that failed, or a restart, starts from there.
    let stored: i64 = std::fs::read_to_string(data.join("poll-walmart.watermark"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(stored <= loadgen::market::now_us(), "still {stored}");
}

#[test]
fn an_order_that_cannot_be_read_is_left_out_and_the_poll_goes_on() {
    let rig = rig(2, false, "poll_interval_s = 1");
    an_unreadable_order_does_not_stop_the_poll(
        &rig.server,
        &rig.sim.market,
        "walmart",
        ("M0", "M1"),
        &|sku, qty| {
            rig.sim.place_order(&[(sku, qty)]);
        },
    );
}
