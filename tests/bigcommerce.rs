//! The `bigcommerce` kind against the simulated store: thin `store/order/*` hooks checked
//! (Standard Webhooks signature and the registered header), deduplicated on `hash`, and
//! followed by fetching the order and its lines; absolute adjustments of up to 2,000
//! items; pacing from the `X-Rate-Limit-*` headers, 429s honoured; echoes change nothing.

mod common;

use std::time::Duration;

use common::*;
use loadgen::bigcommerce_sim::{BigCommerceSim, BATCH_LIMIT};
use loadgen::market::Stage;
use loadgen::sim::{Fault, Habits};

const WAIT: Duration = Duration::from_secs(30);

type Rig = MarketRig<BigCommerceSim>;

/// SKU `B{i}` is variant `3{i:04}`.
fn rig(n: usize, extra: &str) -> Rig {
    market_rig(
        "bc",
        &skus("B", 0..n, |i| format!("3{i:04}")),
        |items| BigCommerceSim::start(items, BC_TOKEN, BC_SECRET, BC_HEADER),
        |sim| bigcommerce_channel("bc", &sim.market.url(), extra),
        |sim| &sim.market,
    )
}

fn count_all(rig: &Rig, range: std::ops::Range<usize>, on_hand: i64) {
    count_shown(&rig.server, &rig.sim.market, "B", range, on_hand);
}

#[test]
fn order_hooks_are_checked_deduplicated_and_their_lines_fetched() {
    let rig = rig(2, "");
    count_all(&rig, 0..2, 10);
    rig.sim.market.set_habits(Habits {
        duplicate: 1.0,
        reorder: Duration::from_millis(50),
        echo: true,
        ..Habits::default()
    });
    let order = rig.sim.place_order(&[("B0", 3), ("B1", 2)]);
    assert!(eventually(WAIT, || rig.server.stock("B0")
        == Some((10, 3, 7))
        && rig.server.stock("B1") == Some((10, 2, 8))));

    assert_eq!(redeliver(&rig.server, "bc", &rig.sim.market, None).0, 200);
    assert_eq!(
        rig.server.stock("B0"),
        Some((10, 3, 7)),
        "a redelivery is taken once"
    );

    // A wrong signature, or the right one without the registered header: refused.
    let forged = Some(("webhook-signature", Some("v1,Zm9yZ2Vk")));
    assert_eq!(redeliver(&rig.server, "bc", &rig.sim.market, forged).0, 401);
    let headless = Some((BC_HEADER.0, None));
    let (status, reply) = redeliver(&rig.server, "bc", &rig.sim.market, headless);
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("missing_signature")),
        "{reply}"
    );

    rig.sim.advance(order, Stage::Shipped);
    assert!(
        eventually(WAIT, || rig.server.stock("B0") == Some((7, 0, 7))),
        "{:?} {:?}",
        audit_of(&rig.server, "B0"),
        rig.server.stderr_lines()
    );
    let cancelled = rig.sim.place_order(&[("B1", 1)]);
    rig.sim.advance(cancelled, Stage::Cancelled);
    assert!(eventually(WAIT, || rig.server.stock("B1")
        == Some((8, 0, 8))
        && audit_of(&rig.server, "B1")
            .iter()
            .any(|r| r["kind"] == "order_released_total")));
    // The echoes of our writes (`method: absolute`) changed nothing. (An echo is queued
    // after the write it answers: waited for, not assumed.)
    assert!(eventually(WAIT, || rig
        .sim
        .market
        .sender
        .sent()
        .iter()
        .any(|s| s.topic == "store/product/inventory/updated")));
    assert!(rig.sim.market.sender.wait_idle(WAIT));
    assert!(rig
        .sim
        .market
        .wait_for(WAIT, |l| l["B0"] == 7 && l["B1"] == 8)
        .is_some());
}

/// A shipment of some units (Partially Shipped, `quantity_shipped`), another, then a
/// cancellation of what is left: each unit shipped or released once, the hold exact.
#[test]
fn partial_shipments_and_a_cancellation_of_the_rest_keep_the_hold_exact() {
    let (rig, order) = one_order_with_copies(6);
    rig.sim.ship_units(order, 0, 2);
    assert!(
        eventually(WAIT, || rig.server.stock("B0") == Some((18, 4, 14))),
        "{:?}",
        rig.server.stock("B0")
    );
    rig.sim.ship_units(order, 0, 1);
    assert!(
        eventually(WAIT, || rig.server.stock("B0") == Some((17, 3, 14))),
        "{:?}",
        rig.server.stock("B0")
    );
    rig.sim.advance(order, Stage::Cancelled);
    settles_at(&rig, (17, 0, 17));
}

/// B0 counted 20, then an order of `units` of it, held, delivered as a store that sends
/// some webhooks twice and out of order.
fn one_order_with_copies(units: i64) -> (Rig, u64) {
    let rig = rig(1, "");
    count_all(&rig, 0..1, 20);
    rig.sim.market.set_habits(Habits {
        duplicate: 0.5,
        reorder: Duration::from_millis(200),
        ..Habits::default()
    });
    let order = rig.sim.place_order(&[("B0", units)]);
    assert!(eventually(WAIT, || rig.server.stock("B0")
        == Some((20, units, 20 - units))));
    (rig, order)
}

/// B0 comes to `stock`, stays there once every webhook copy was delivered, and the store
/// shows its available.
fn settles_at(rig: &Rig, stock: (i64, i64, i64)) {
    assert!(
        eventually(WAIT, || rig.server.stock("B0") == Some(stock)),
        "{:?}",
        rig.server.stock("B0")
    );
    assert!(rig.sim.market.sender.wait_idle(WAIT));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        rig.server.stock("B0"),
        Some(stock),
        "late copies change nothing"
    );
    assert!(rig
        .sim
        .market
        .wait_for(WAIT, |l| l["B0"] == stock.2)
        .is_some());
}

/// A seller raises a line's quantity before it ships (Update an Order): the units added
/// are held from the edit's `store/order/updated` on, the store is pushed the lower
/// level, and shipping the line in two parts ships the raised quantity, once, whatever
/// copies come late.
#[test]
fn an_edit_raising_a_line_holds_the_units_it_adds() {
    let (rig, order) = one_order_with_copies(2);
    // Past the window in which a store's own change near our write is pushed again
    // anyway (`OVERWRITE_WINDOW_US`), so only the edit's own handling can push it.
    std::thread::sleep(Duration::from_millis(2_500));
    rig.sim.set_quantity(order, 0, 5);
    assert!(
        eventually(WAIT, || rig.server.stock("B0") == Some((20, 5, 15))),
        "{:?}",
        rig.server.stock("B0")
    );
    // The store is not known to take the added units from its own level: it is pushed
    // them, though the edit came from the store itself.
    assert!(
        rig.sim.market.wait_for(WAIT, |l| l["B0"] == 15).is_some(),
        "{:?}",
        rig.sim.market.calls()
    );
    rig.sim.ship_units(order, 0, 2);
    assert!(eventually(WAIT, || rig.server.stock("B0") == Some((18, 3, 15))));
    rig.sim.advance(order, Stage::Shipped);
    settles_at(&rig, (15, 0, 15));
}

/// A burst of thin hooks: each one's fetches (the order, its products) wait for tokens
/// of the channel's budget, which the pushes share, instead of drawing 429s from the
/// store's one window.
#[test]
fn thin_hook_fetches_are_paced_on_the_shared_budget() {
    let rig = rig(8, "rate_limit = { requests_per_second = 3.0, burst = 2 }");
    count_all(&rig, 0..8, 10);
    assert!(rig
        .sim
        .market
        .wait_for(WAIT, |l| l.len() == 8 && l.values().all(|v| *v == 10))
        .is_some());
    // 6 calls a second: 16 fetches at once would overrun it.
    rig.sim.set_window(6, Duration::from_millis(1_000));
    for i in 0..8 {
        rig.sim.place_order(&[(&format!("B{i}"), 1)]);
    }
    assert!(
        eventually(Duration::from_secs(30), || (0..8)
            .all(|i| rig.server.stock(&format!("B{i}")) == Some((10, 1, 9)))),
        "{:?}",
        rig.server.stderr_lines()
    );
    assert_eq!(rig.sim.throttled_reads(), 0, "no fetch overran the window");
}

#[test]
fn adjustments_carry_up_to_2000_items() {
    let skus = 2_300;
    let rig = rig(skus, "");
    // A store answering in 300 ms, as a real one under a backlog may: the changes that
    // come while a call is out wait for the next, so calls fill up to the limit (a
    // simulator answering in a millisecond would take each commit as it comes).
    rig.sim
        .market
        .set_fault(Fault::Slow(Duration::from_millis(300)));
    count_all(&rig, 0..skus, 5);
    let calls = rig.sim.market.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.items <= BATCH_LIMIT && c.status == 200),
        "{calls:?}"
    );
    assert_eq!(calls.iter().map(|c| c.items).sum::<usize>(), skus);
    assert!(
        calls.iter().any(|c| c.items > 1_000),
        "many items per call: {calls:?}"
    );
}

#[test]
fn the_rate_limit_headers_pace_pushes_and_a_429_is_honoured() {
    let rig = rig(4, "");
    // 3 requests per 1.5 s window: pushing past it would draw 429s.
    rig.sim.set_window(3, Duration::from_millis(1_500));
    for round in 1..=4 {
        count_all(&rig, 0..4, round);
    }
    let calls = rig.sim.market.calls();
    assert!(
        calls.iter().all(|c| c.status == 200),
        "the window was respected: {calls:?}"
    );

    rig.sim.set_window(150, Duration::from_secs(30));
    throttle_storm_passes(
        &rig.server,
        &rig.sim.market,
        event("storm", "B0", "adjusted", 1),
        "B0",
        5,
    );
}

/// Reads are paged (50 items a page unless asked) and id lists must fit a URL: a pass over
/// 300 SKUs that all show their target finds nothing to repair and writes nothing.
#[test]
fn reconciliation_pages_through_every_item_and_repairs_nothing_that_is_right() {
    let rig = rig(300, "");
    count_all(&rig, 0..300, 4);
    let writes = rig.sim.market.calls().len();
    let (status, report) = reconcile(&rig.server, "bc");
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["report"]["checked"], &report["report"]["lowered"]),
        (&serde_json::json!(300), &serde_json::json!(0)),
        "{report}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rig.sim.market.calls().len(), writes, "nothing re-pushed");
}

/// An item tracked by product must be adjusted by product_id: the 422 that names its
/// variant fails the whole transaction, so lockstep learns the tracking and resends.
#[test]
fn items_tracked_by_product_are_adjusted_by_product_id() {
    // Variants 300, 310, 320: products 30, 31, 32 (the simulator's product is variant / 10).
    let rig = market_rig(
        "bc",
        &skus("B", 0..3, |i| format!("3{i}0")),
        |items| BigCommerceSim::start(items, BC_TOKEN, BC_SECRET, BC_HEADER),
        |sim| bigcommerce_channel("bc", &sim.market.url(), ""),
        |sim| &sim.market,
    );
    rig.sim.track_by_product("B1");
    count_all(&rig, 0..3, 6);
    let calls = rig.sim.market.calls();
    assert!(
        calls.iter().any(|c| c.status == 422),
        "the variant form was refused first: {calls:?}"
    );
    assert_eq!(rig.sim.market.level("B1"), Some(6));
    // Known now: the next change goes in one call.
    let before = rig.sim.market.calls().len();
    post_ok(&rig.server, vec![event("more", "B1", "adjusted", 1)]);
    assert!(rig.sim.market.wait_for(WAIT, |l| l["B1"] == 7).is_some());
    let after = rig.sim.market.calls();
    assert!(
        after[before..].iter().all(|c| c.status == 200),
        "{:?}",
        &after[before..]
    );
}

/// A busy store's poll: every order's hook lost and more orders modified within the
/// poll's window than the store's rate window holds. The pass reads each order's lines
/// within the channel's budget, waiting out a 429, so it completes and counts every
/// order. (Sent at once, the pass met the limit, failed on its 429 and, its watermark
/// unmoved, failed the same way at every interval: no order was ever counted.) The
/// passes after it list the same orders (each starts 5 minutes back) and fetch none of
/// their lines again: an unchanged order's lines are kept.
#[test]
fn a_poll_larger_than_the_rate_window_still_counts_every_order() {
    let rig = rig(2, "poll_interval_s = 1");
    count_all(&rig, 0..2, 100);
    rig.sim.set_window(20, Duration::from_secs(2));
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    let first = rig.sim.place_order(&[("B0", 1)]);
    for i in 1..30 {
        rig.sim.place_order(&[(&format!("B{}", i % 2), 1)]);
    }
    assert!(
        eventually(Duration::from_secs(60), || rig.server.stock("B0")
            == Some((100, 15, 85))
            && rig.server.stock("B1") == Some((100, 15, 85))),
        "every order counted by the poll: {:?} {:?}",
        rig.server.stock("B0"),
        rig.server.stock("B1")
    );
    let (lists, line_reads) = (rig.sim.market.order_polls(), rig.sim.line_reads());
    assert!(
        eventually(WAIT, || rig.sim.market.order_polls() >= lists + 2),
        "two more passes"
    );
    assert_eq!(
        rig.sim.line_reads(),
        line_reads,
        "no order's lines read again"
    );
    rig.sim.advance(first, Stage::Shipped);
    assert!(
        eventually(WAIT, || rig.sim.line_reads() == line_reads + 1),
        "a changed order's lines are read again"
    );
}

/// Hooks BigCommerce gives up on (deactivated after about 48 h of failures) are backed
/// by the orders poll: none missed and none counted twice, across a kill -9 and a restart.
#[test]
fn the_orders_poll_misses_nothing_and_counts_nothing_twice_across_restarts() {
    let rig = rig(1, "poll_interval_s = 1");
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    rig.sim.market.set_listing_lag(Duration::from_millis(1_500));
    let bc = &rig.sim;
    poll_survives_restarts(rig.server, "bc", "B0", &|sku, qty| {
        bc.place_order(&[(sku, qty)]);
    });
}

/// An order of more lines than one page of its products (BigCommerce answers 50 unless
/// asked for more, at most 250): every line counts, whether the order comes by its hook
/// or by the poll.
#[test]
fn an_order_of_more_lines_than_a_page_counts_every_line() {
    let rig = rig(2, "poll_interval_s = 1");
    count_all(&rig, 0..2, 1_000);
    let lines: Vec<(String, i64)> = (0..300).map(|i| (format!("B{}", i % 2), 1)).collect();
    let lines: Vec<(&str, i64)> = lines.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    rig.sim.place_order(&lines);
    assert!(
        eventually(WAIT, || rig.server.stock("B0") == Some((1_000, 150, 850))
            && rig.server.stock("B1") == Some((1_000, 150, 850))),
        "by the hook: {:?} {:?}",
        rig.server.stock("B0"),
        rig.server.stock("B1")
    );
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    rig.sim.place_order(&lines);
    assert!(
        eventually(WAIT, || rig.server.stock("B0") == Some((1_000, 300, 700))
            && rig.server.stock("B1") == Some((1_000, 300, 700))),
        "by the poll: {:?} {:?}",
        rig.server.stock("B0"),
        rig.server.stock("B1")
    );
}

/// A variant deleted in the store: BigCommerce refuses the whole adjustment (one
/// transaction, 422) for the one item it does not know. With a queue deeper than a batch
/// (40 SKUs, 8 a call) the next batches are halved until that SKU, at the head of the
/// queue, goes alone, and every other SKU is written. Held together, the request's SKUs
/// came back together and were refused together, for good; holding the second half
/// back a moment did not isolate it either (the batch refilled from the queue).
#[test]
fn a_deleted_variant_does_not_hold_back_the_skus_adjusted_with_it() {
    let skus = 40;
    let rig = rig(skus, "batch_max = 8");
    rig.sim.market.shop().unlist("B0");
    post_ok(
        &rig.server,
        (0..skus)
            .map(|i| event(&format!("c{i}"), &format!("B{i}"), "counted", 4))
            .collect(),
    );
    assert!(
        rig.sim
            .market
            .wait_for(WAIT, |l| (1..skus)
                .all(|i| l.get(&format!("B{i}")) == Some(&4)))
            .is_some(),
        "{:?}",
        rig.sim.market.calls()
    );
    let refused = rig.sim.market.calls_answered(422);
    assert!(
        refused <= 8,
        "{refused} refused calls: {:?}",
        rig.sim.market.calls()
    );
}

#[test]
fn an_order_refused_for_good_is_left_out_and_a_forbidden_one_set_aside() {
    let rig = rig(2, "poll_interval_s = 1");
    a_refused_order_is_left_out_and_a_forbidden_one_set_aside(
        &rig.server,
        &rig.sim.market,
        "bc",
        ("B0", "B1"),
        &|sku, qty| {
            rig.sim.place_order(&[(sku, qty)]);
        },
    );
}

/// An order whose lines the store keeps failing to give (a 503 for it alone) is set
/// aside; the poll reads on past it, keeps it across a kill -9 and holds it once the
/// store gives them.
#[test]
fn an_order_whose_lines_keep_failing_is_set_aside_and_held_once_the_store_gives_them() {
    let rig = rig(2, "poll_interval_s = 1");
    a_failing_order_is_set_aside_and_held_once_it_mends(
        rig,
        "bc",
        |sim| &sim.market,
        ("B0", "B1"),
        |sim, sku, qty| {
            sim.place_order(&[(sku, qty)]);
        },
        503,
    );
}

#[test]
fn an_order_that_cannot_be_read_is_left_out_and_the_poll_goes_on() {
    let rig = rig(2, "poll_interval_s = 1");
    an_unreadable_order_does_not_stop_the_poll(
        &rig.server,
        &rig.sim.market,
        "bc",
        ("B0", "B1"),
        &|sku, qty| {
            rig.sim.place_order(&[(sku, qty)]);
        },
    );
}

/// Waits for every delivery of `store/order/created` to be answered, and asserts there
/// was one, answered 200: taken once, not refused and delivered again.
fn the_order_hook_is_taken_once(rig: &Rig) {
    let hooks = || rig.sim.market.sender.answers(Some("store/order/created"));
    assert!(
        eventually(WAIT, || !hooks().is_empty()
            && rig.sim.market.sender.wait_idle(WAIT)),
        "{:?}",
        hooks()
    );
    assert_eq!(hooks(), [200], "taken once, not refused and retried");
}

/// An order whose lines the store answers unreadably (an object, not a list) is left
/// out and counted by its hook and by the poll alike. The hook is answered 200: a 503
/// would have BigCommerce deliver it again for good and deactivate the hook after about
/// 48 hours of failures, every later order's with it. The poll goes on past it to the
/// orders after (it failed every pass at it, for good).
#[test]
fn an_order_whose_lines_cannot_be_read_stops_neither_its_hook_nor_the_poll() {
    let rig = rig(2, "poll_interval_s = 1");
    count_all(&rig, 0..2, 10);
    rig.sim.answer_lines_unreadably("B0");
    rig.sim.place_order(&[("B0", 2)]);
    the_order_hook_is_taken_once(&rig);
    let counted = "lockstep_channel_events_refused_total{channel=\"bc\"}";
    assert!(rig.server.metric(counted) >= 1.0, "{counted} is counted");
    // The poll alone: it lists the unreadable order before the next one.
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    rig.sim.place_order(&[("B1", 3)]);
    assert!(
        eventually(WAIT, || rig.server.stock("B1") == Some((10, 3, 7))),
        "{:?}\n{}",
        rig.server.stock("B1"),
        rig.server.stderr_lines().join("\n")
    );
    assert_eq!(rig.server.stock("B0"), Some((10, 0, 10)), "left out");
}

/// A store whose reads of B0's orders are answered `status`, one such order placed.
fn an_order_refused_with(status: u16, extra: &str) -> Rig {
    let rig = rig(1, extra);
    count_all(&rig, 0..1, 10);
    rig.sim
        .market
        .shop()
        .refused_orders
        .insert("B0".into(), status);
    rig.sim.place_order(&[("B0", 2)]);
    rig
}

/// An order the store refuses to give (400, its order and lines read alike) is left out
/// by its hook, which is answered 200 once: a 503 would bring it back until BigCommerce
/// deactivated the hook.
#[test]
fn an_order_the_store_refuses_is_answered_200_by_its_hook() {
    let rig = an_order_refused_with(400, "");
    the_order_hook_is_taken_once(&rig);
    assert_eq!(rig.server.stock("B0"), Some((10, 0, 10)));
}

/// An order the store forbids reading (403: the credentials' scope, which the seller can
/// fix) is not left out by its hook: the hook is answered 503, to come again, and the
/// order is held once the store gives it.
#[test]
fn an_order_the_store_forbids_is_answered_503_by_its_hook_and_held_later() {
    let rig = an_order_refused_with(403, "poll_interval_s = 1");
    let hooks = || rig.sim.market.sender.answers(Some("store/order/created"));
    assert!(eventually(WAIT, || hooks().contains(&503)), "{:?}", hooks());
    assert_eq!(rig.server.stock("B0"), Some((10, 0, 10)));
    rig.sim.market.shop().refused_orders.remove("B0");
    assert!(
        eventually(WAIT, || rig.server.stock("B0") == Some((10, 2, 8))),
        "{:?} {:?}",
        rig.server.stock("B0"),
        hooks()
    );
}

/// An order deleted between its hook and the fetch (404) is left out, and its hook
/// answered 200: a 503 would bring it back until BigCommerce deactivated the hook.
#[test]
fn an_order_gone_before_its_hook_is_fetched_is_answered_200() {
    let rig = rig(1, "");
    count_all(&rig, 0..1, 10);
    rig.sim.market.set_habits(Habits {
        delay: Duration::from_millis(300),
        ..Habits::default()
    });
    let id = rig.sim.place_order(&[("B0", 2)]);
    rig.sim.market.shop().orders.remove(&id);
    the_order_hook_is_taken_once(&rig);
    assert_eq!(rig.server.stock("B0"), Some((10, 0, 10)));
}
