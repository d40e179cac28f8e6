//! The `tiktok` kind against the simulated shop: type 1 and type 11 notifications signed
//! as hex HMAC of app key + body, deduplicated on `tts_notification_id`, the order's
//! line items fetched; inventory updates carrying every due SKU of a product in one
//! signed call (made due together by a refusing shop, not by timing); a throttle code on
//! an HTTP 200 honoured; access tokens refreshed, the rotated refresh token kept.

mod common;

use std::time::Duration;

use common::*;
use loadgen::market::Stage;
use loadgen::sim::Habits;
use loadgen::tiktok_sim::TikTokSim;
use loadgen::webhook_sim::Fault;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

type Rig = MarketRig<TikTokSim>;

/// SKU `T{i}` is SKU `8{i}` of product `17{i / 2}` (two per product).
fn rig(n: usize) -> Rig {
    rig_with(n, "")
}

/// The same, with `extra` lines in the channel's config.
fn rig_with(n: usize, extra: &str) -> Rig {
    market_rig(
        "tiktok",
        &skus("T", 0..n, |i| format!("17{}/8{i}", i / 2)),
        |items| TikTokSim::start(items, TIKTOK_APP.0, TIKTOK_APP.1, TIKTOK_REFRESH),
        |sim| tiktok_channel("tiktok", &sim.market.url(), extra),
        |sim| &sim.market,
    )
}

fn post(rig: &Rig, events: Vec<Value>) {
    post_ok(&rig.server, events);
}

#[test]
fn notifications_are_checked_deduplicated_and_their_orders_fetched() {
    let rig = rig(2);
    count(&rig.server, "T0", 10);
    rig.sim.market.set_habits(Habits {
        duplicate: 1.0,
        reorder: Duration::from_millis(50),
        ..Habits::default()
    });
    let order = rig.sim.place_order(&[("T0", 2), ("T1", 1)]);
    assert!(eventually(WAIT, || rig.server.stock("T0") == Some((10, 2, 8))));
    // One line item per unit (on another shard, maybe a commit behind).
    assert!(
        eventually(WAIT, || rig.server.stock("T1") == Some((0, 1, -1))),
        "{:?}",
        rig.server.stock("T1")
    );

    assert_eq!(
        redeliver(&rig.server, "tiktok", &rig.sim.market, None).0,
        200
    );
    assert_eq!(
        rig.server.stock("T0"),
        Some((10, 2, 8)),
        "a redelivery is taken once"
    );
    let forged = Some(("authorization", Some("00ff")));
    let (status, reply) = redeliver(&rig.server, "tiktok", &rig.sim.market, forged);
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("bad_signature"))
    );
    assert_eq!(rig.server.stock("T0"), Some((10, 2, 8)));

    // A cancellation (type 1 and type 11): released once.
    rig.sim.advance(&order, Stage::Cancelled);
    assert!(eventually(WAIT, || rig.server.stock("T0")
        == Some((10, 0, 10))
        && rig.server.stock("T1") == Some((0, 0, 0))));
    assert!(
        rig.sim.market.sender.wait_idle(WAIT),
        "every delivery went out"
    );
    assert!(rig
        .sim
        .market
        .sender
        .sent()
        .iter()
        .any(|s| s.topic == "type 11"));
}

/// A notification's order fetch spends the channel's budget like every other call: with
/// a budget of one call per 5 s just spent on a push, the notification is answered 503
/// at once (its token is further off than a sender waits), and counted once delivered
/// again after the budget came back. (The fetch used to skip the budget.)
#[test]
fn the_order_fetch_spends_the_channel_s_budget() {
    let rig = rig_with(1, "rate_limit = { requests_per_second = 0.2, burst = 1 }");
    count(&rig.server, "T0", 10);
    assert!(rig.sim.market.wait_for(WAIT, |l| l["T0"] == 10).is_some());

    rig.sim.place_order(&[("T0", 2)]);
    assert!(rig.sim.market.sender.wait_idle(WAIT));
    let answers = rig.sim.market.sender.answers(None);
    assert!(
        !answers.is_empty() && answers.iter().all(|s| *s == 503),
        "the fetch waited for the budget: {answers:?}"
    );
    assert_eq!(rig.server.stock("T0"), Some((10, 0, 10)), "nothing counted");

    let delivered = || redeliver(&rig.server, "tiktok", &rig.sim.market, None).0 == 200;
    assert!(eventually(WAIT, delivered), "taken once the budget is back");
    assert_eq!(rig.server.stock("T0"), Some((10, 2, 8)));
}

/// Items of one order shipped and cancelled a few at a time (each line item one unit with
/// its own `display_status`): each unit once, the hold on the rest exact.
#[test]
fn some_items_shipped_and_some_cancelled_keep_the_hold_exact() {
    let rig = rig(1);
    count(&rig.server, "T0", 20);
    let order = rig.sim.place_order(&[("T0", 5)]);
    assert!(eventually(WAIT, || rig.server.stock("T0") == Some((20, 5, 15))));
    rig.sim.ship_units(&order, 0, 2);
    assert!(
        eventually(WAIT, || rig.server.stock("T0") == Some((18, 3, 15))),
        "{:?}",
        rig.server.stock("T0")
    );
    rig.sim.cancel_units(&order, 0, 1);
    assert!(
        eventually(WAIT, || rig.server.stock("T0") == Some((18, 2, 16))),
        "{:?}",
        rig.server.stock("T0")
    );
    rig.sim.ship_units(&order, 0, 2);
    assert!(
        eventually(WAIT, || rig.server.stock("T0") == Some((16, 0, 16))),
        "{:?}",
        rig.server.stock("T0")
    );
}

#[test]
fn a_product_s_skus_go_together_in_one_signed_call() {
    let rig = rig(6);
    // The shop refuses writes (503) until all six SKUs are due at once: their counts
    // reach the outbox from two shards, so which SKUs the pusher's first take finds due
    // depends on which shard commits first. Once the request is acknowledged all six are
    // in the outbox; a take holds at most three products (three calls), so the fourth
    // refused call after that comes from a take that found all six due, and so does
    // every take after it.
    rig.sim.market.set_fault(Fault::Status(503));
    post(
        &rig,
        (0..6)
            .map(|i| event(&format!("c{i}"), &format!("T{i}"), "counted", 3))
            .collect(),
    );
    let refused = rig.sim.market.calls().len();
    assert!(eventually(WAIT, || rig.sim.market.calls().len() >= refused + 4));
    rig.sim.market.set_fault(Fault::None);
    assert!(rig
        .sim
        .market
        .wait_for(WAIT, |l| l.values().all(|v| *v == 3))
        .is_some());
    let calls = rig.sim.market.calls();
    assert!(
        calls.iter().all(|c| c.status == 200 || c.status == 503),
        "signed calls are accepted (none refused but by the fault): {calls:?}"
    );
    for product in ["170", "171", "172"] {
        let path = format!("/product/202309/products/{product}/inventory/update");
        let accepted: Vec<usize> = calls
            .iter()
            .filter(|c| c.path == path && c.status == 200)
            .map(|c| c.items)
            .collect();
        assert_eq!(
            accepted,
            vec![2],
            "{product}: both SKUs in one call: {calls:?}"
        );
    }
}

/// A SKU stocked in two warehouses: TikTok refuses a write that does not name them both.
/// The first push learns so from the refusal, reads the product and writes again within
/// the same push; later pushes read first. lockstep's stock goes to the SKU's first
/// warehouse and the other keeps its own 5 units. Before, every write of such a SKU was
/// refused and the shop never showed lockstep's count. Its twin on the same product, in
/// one warehouse, is written as before, in the same calls.
#[test]
fn a_sku_in_two_warehouses_is_written_with_both_and_the_other_keeps_its_stock() {
    let rig = rig(2);
    rig.sim.add_warehouse("T0", "7001", 5);
    post(
        &rig,
        vec![
            event("c0", "T0", "counted", 9),
            event("c1", "T1", "counted", 4),
        ],
    );
    let shows = |sku: &str, level: i64| {
        let sim = &rig.sim;
        eventually(WAIT, || sim.market.level(sku) == Some(level))
    };
    assert!(shows("T0", 9), "{:?}", rig.sim.market.level("T0"));
    assert!(shows("T1", 4), "{:?}", rig.sim.market.level("T1"));
    assert_eq!(rig.sim.warehouse_level("T0", "7001"), Some(5));
    post(&rig, vec![event("o1", "T0", "order_placed", 2)]);
    assert!(shows("T0", 7), "{:?}", rig.sim.market.level("T0"));
    assert_eq!(rig.sim.warehouse_level("T0", "7001"), Some(5));
    let calls = rig.sim.market.calls();
    let refused = calls.iter().filter(|c| c.status == 207).count();
    assert_eq!(
        refused, 1,
        "only the first write, before the SKU was known: {calls:?}"
    );
}

#[test]
/// TikTok throttles with its code 36009002 on an HTTP 200: taken as a throttle (waited
/// for), not as a failed call.
fn a_throttle_code_on_an_http_200_is_honoured() {
    let rig = rig(1);
    throttle_storm_passes(
        &rig.server,
        &rig.sim.market,
        event("a", "T0", "counted", 4),
        "T0",
        4,
    );
    let metrics = rig.server.metrics();
    let throttled = metrics
        .lines()
        .find(|l| {
            l.starts_with("lockstep_push_requests_total")
                && l.contains("channel=\"tiktok\"")
                && l.contains("outcome=\"throttled\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(throttled > 0.0, "counted as throttled:\n{metrics}");
}

/// TikTok may throttle with code 36009002 on an HTTP 200: a read waits it out as it
/// would a 429, rather than fail.
#[test]
fn a_read_throttled_by_code_on_a_200_is_waited_out() {
    let rig = rig(4);
    count_shown(&rig.server, &rig.sim.market, "T", 0..4, 5);
    rig.sim.throttle_reads(3);
    let (status, body) = reconcile(&rig.server, "tiktok");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["report"]["checked"], &body["report"]["unread"]),
        (&serde_json::json!(4), &serde_json::json!(0)),
        "{body}"
    );
    assert_eq!(
        rig.sim.reads_throttled_left(),
        0,
        "the throttles were answered"
    );
}

/// A product the channel cannot read leaves its own SKUs unread, not those read with it
/// in the same pass's batch (TikTok reads one product a call).
#[test]
fn a_product_that_cannot_be_read_leaves_only_its_own_skus_unread() {
    let rig = rig(4);
    count_shown(&rig.server, &rig.sim.market, "T", 0..4, 5);
    // T0 and T1 are product 170's SKUs; T2 and T3, 171's.
    rig.sim.fail_product_reads("170");
    rig.sim.market.set_level("T3", 9);
    let (status, body) = reconcile(&rig.server, "tiktok");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["report"]["checked"],
            &body["report"]["lowered"],
            &body["report"]["unread"]
        ),
        (
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(2)
        ),
        "{body}"
    );
    assert!(rig.sim.market.wait_for(WAIT, |l| l["T3"] == 5).is_some());
}

/// Access tokens expire: lockstep refreshes ahead of expiry with the refresh token, keeps
/// the rotated refresh token in the data directory (the one in the config no longer
/// works after the first refresh), and carries on after a kill -9 and a restart.
#[test]
fn the_access_token_is_refreshed_ahead_of_expiry_and_the_rotated_refresh_token_kept() {
    let rig = rig(2);
    rig.sim.set_token_lifetime(4);
    rotated_refresh_token_is_kept(rig, "tiktok", "T", |s| &s.market, |s| s.refreshes());
}

/// Lost notifications: the order search by `update_time_ge` finds the orders, across a
/// kill -9 and a restart, none missed and none counted twice.
#[test]
fn the_order_search_misses_nothing_and_counts_nothing_twice_across_restarts() {
    let rig = market_rig(
        "tiktok",
        &skus("T", 0..1, |i| format!("17{}/8{i}", i / 2)),
        |items| TikTokSim::start(items, TIKTOK_APP.0, TIKTOK_APP.1, TIKTOK_REFRESH),
        |sim| tiktok_channel("tiktok", &sim.market.url(), "poll_interval_s = 1"),
        |sim| &sim.market,
    );
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    rig.sim.market.set_listing_lag(Duration::from_millis(1_500));
    let tiktok = &rig.sim;
    // Line items are one unit each: 2 + 3 + 1 units are 6 lines.
    poll_survives_restarts_with(
        rig.server,
        "tiktok",
        "T0",
        &|sku, qty| {
            tiktok.place_order(&[(sku, qty)]);
        },
        6,
    );
}

/// An outage of more orders than one pass of the poll reads (1,000 pages; a page of one
/// order here), none notified, a watermark from before it. TikTok's list runs newest
/// `create_time` first, not by update time, so the pass reads it in windows of update time
/// and stores each one's end once it is read whole: every order is counted once. Before,
/// the pass cut short at its page cap moved the watermark to the newest update it had
/// seen, past the oldest orders, which were never read.
#[test]
fn an_outage_longer_than_a_pass_reads_is_read_whole_in_windows() {
    const ORDERS: i64 = 1_050;
    let rig = rig_with(
        1,
        "poll_interval_s = 1\nrate_limit = { requests_per_second = 5000.0, burst = 500 }",
    );
    count(&rig.server, "T0", 2_000);
    // Pushed: the rotated refresh token is in the data directory before the kill.
    assert!(eventually(WAIT, || rig.sim.market.level("T0") == Some(2_000)));
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    rig.sim.market.set_page_cap(1);
    let sim = &rig.sim;
    let server = outage_of_orders(rig.server, "tiktok", &sim.market, (ORDERS, 3), || {
        sim.place_order(&[("T0", 1)]);
    });
    assert!(
        eventually(Duration::from_secs(120), || server
            .stock("T0")
            .is_some_and(|(_, committed, _)| committed == ORDERS)),
        "{:?} of {ORDERS} committed\n{}",
        server.stock("T0"),
        server.stderr_lines().join("\n")
    );
    // Read again by later windows and passes, none is counted twice.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(server.stock("T0"), Some((2_000, ORDERS, 2_000 - ORDERS)));
}

/// A SKU with more stock than TikTok takes for one listing ("less then 99999": our
/// simulator takes [0, 99,998]) is shown the most it takes. Before, its every write was
/// refused and the shop kept whatever it showed.
#[test]
fn a_sku_with_more_stock_than_tiktok_takes_is_shown_the_most_it_takes() {
    let rig = rig(2);
    post(
        &rig,
        vec![
            event("big", "T0", "counted", 150_000),
            event("small", "T1", "counted", 3),
        ],
    );
    assert!(
        rig.sim
            .market
            .wait_for(WAIT, |l| l.get("T0") == Some(&99_998)
                && l.get("T1") == Some(&3))
            .is_some(),
        "{:?}",
        rig.sim.market.calls()
    );
    let (_, sku) = rig.server.get("/v1/skus/T0");
    assert_eq!(
        (
            &sku["channels"]["tiktok"]["target"],
            &sku["channels"]["tiktok"]["max"]
        ),
        (&serde_json::json!(99_998), &serde_json::json!(99_998)),
        "{sku}"
    );
    assert!(
        rig.sim.market.calls().iter().all(|c| c.status == 200),
        "{:?}",
        rig.sim.market.calls()
    );
}

/// An update TikTok answers code 0 with an error that names no SKU (no `detail.sku_id`),
/// having applied nothing: no SKU of it is acknowledged, and the next push writes them.
/// Every SKU the errors did not name was taken as written, so the shop kept its old
/// levels while lockstep counted them shown.
#[test]
fn an_update_refused_by_an_error_naming_no_sku_is_pushed_again() {
    let rig = rig(2);
    rig.sim.refuse_updates_unnamed(1);
    post(
        &rig,
        vec![
            event("c0", "T0", "counted", 6),
            event("c1", "T1", "counted", 6),
        ],
    );
    assert!(
        rig.sim
            .market
            .wait_for(WAIT, |l| l.get("T0") == Some(&6) && l.get("T1") == Some(&6))
            .is_some(),
        "{:?}",
        rig.sim.market.calls()
    );
    let refused = rig.sim.market.calls_answered(207);
    assert_eq!(refused, 1, "{:?}", rig.sim.market.calls());
}

#[test]
fn an_order_that_cannot_be_read_is_left_out_and_the_poll_goes_on() {
    let rig = rig_with(2, "poll_interval_s = 1");
    an_unreadable_order_does_not_stop_the_poll(
        &rig.server,
        &rig.sim.market,
        "tiktok",
        ("T0", "T1"),
        &|sku, qty| {
            rig.sim.place_order(&[(sku, qty)]);
        },
    );
}
