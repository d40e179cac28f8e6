//! The `ebay` kind against the simulated seller: orders found by the Fulfillment API
//! poll (listed late, across a kill -9 and a restart), `bulk_update_price_quantity` at
//! 25 SKUs per call, eBay's throttle honoured, and the revision budget per listing per
//! day: near the limit only decreases go out, at it nothing does, and the audit says so.

mod common;

use std::time::Duration;

use common::*;
use loadgen::ebay_sim::{EbaySim, BATCH_LIMIT};
use loadgen::market::Stage;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

type Rig = MarketRig<EbaySim>;

/// SKU `E{i}` is offer `500{i}` on listing `110{i / 2}` (two SKUs per listing).
fn rig(n: usize, extra: &str) -> Rig {
    market_rig(
        "ebay",
        &skus("E", 0..n, |i| format!("110{}/500{i}", i / 2)),
        |items| EbaySim::start(items, EBAY_CLIENT, EBAY_REFRESH),
        |sim| ebay_channel("ebay", &sim.market.url(), extra),
        |sim| &sim.market,
    )
}

fn post(rig: &Rig, events: Vec<Value>) {
    post_ok(&rig.server, events);
}

fn shows(rig: &Rig, sku: &str, level: i64) -> bool {
    rig.sim.market.wait_for(WAIT, |l| l[sku] == level).is_some()
}

#[test]
fn the_order_poll_misses_nothing_and_counts_nothing_twice_across_restarts() {
    let rig = rig(2, "poll_interval_s = 1");
    rig.sim.market.set_listing_lag(Duration::from_millis(1_500));
    let ebay = &rig.sim;
    poll_survives_restarts(rig.server, "ebay", "E0", &|sku, qty| {
        ebay.place_order(&[(sku, qty)]);
    });
}

#[test]
fn shipments_and_cancellations_follow_the_order() {
    let rig = rig(2, "poll_interval_s = 1");
    count(&rig.server, "E0", 10);
    let shipped = rig.sim.place_order(&[("E0", 2)]);
    let cancelled = rig.sim.place_order(&[("E0", 3)]);
    rig.sim.advance(&shipped, Stage::Shipped);
    rig.sim.advance(&cancelled, Stage::Cancelled);
    assert!(
        eventually(WAIT, || rig.server.stock("E0") == Some((8, 0, 8))),
        "{:?}",
        rig.server.stock("E0")
    );
    assert!(shows(&rig, "E0", 8));
    // eBay orders come by the poll only: a posted "notification" is refused, unapplied.
    let (status, reply) = post_raw(&rig.server, "ebay", &[], br#"{"orderId": "1"}"#);
    assert_eq!(
        (status, reply["error"].as_str()),
        (404, Some("no_inbound_webhooks"))
    );
    assert_eq!(rig.server.stock("E0"), Some((8, 0, 8)));
}

/// A line shipped in parts: eBay calls it FULFILLED at the first shipment, so only its
/// shipping fulfillments say how many units left; then the order is cancelled with units
/// still open.
#[test]
fn a_line_shipped_in_parts_counts_the_units_its_fulfillments_carry() {
    let rig = rig(1, "poll_interval_s = 1");
    count(&rig.server, "E0", 20);
    let order = rig.sim.place_order(&[("E0", 5)]);
    assert!(eventually(WAIT, || rig.server.stock("E0") == Some((20, 5, 15))));
    rig.sim.ship_units(&order, 0, 2);
    assert!(
        eventually(WAIT, || rig.server.stock("E0") == Some((18, 3, 15))),
        "{:?}",
        rig.server.stock("E0")
    );
    rig.sim.advance(&order, Stage::Cancelled);
    assert!(
        eventually(WAIT, || rig.server.stock("E0") == Some((18, 0, 18))),
        "{:?}",
        rig.server.stock("E0")
    );
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        rig.server.stock("E0"),
        Some((18, 0, 18)),
        "later polls change nothing"
    );
}

/// Every pass lists the last five minutes' orders again (the poll's overlap); a shipped
/// order's fulfillments are read once per version of the order, not at every pass: at
/// eBay's default 5 s that was 60 getShippingFulfillments calls an order, out of the
/// Fulfillment API's daily call limit.
#[test]
fn a_shipped_order_s_fulfillments_are_read_once_per_change_not_at_every_pass() {
    let rig = rig(1, "poll_interval_s = 1");
    count(&rig.server, "E0", 10);
    let order = rig.sim.place_order(&[("E0", 2)]);
    rig.sim.advance(&order, Stage::Shipped);
    assert!(eventually(WAIT, || rig.server.stock("E0") == Some((8, 0, 8))));
    let polls = || rig.sim.market.shop().order_polls;
    let listed = polls();
    assert!(
        eventually(WAIT, || polls() >= listed + 4),
        "the poll stopped"
    );
    let reads = rig
        .sim
        .market
        .calls()
        .iter()
        .filter(|c| c.path.ends_with(&format!("/{order}/shipping_fulfillment")))
        .count();
    assert_eq!(reads, 1, "read at every pass");
}

#[test]
fn pushes_carry_at_most_25_skus_and_a_429_is_honoured() {
    let skus = 60;
    let rig = rig(skus, "");
    count_shown(&rig.server, &rig.sim.market, "E", 0..skus, 4);
    let calls = rig.sim.market.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.items <= BATCH_LIMIT && c.status == 200),
        "{calls:?}"
    );
    assert_eq!(calls.iter().map(|c| c.items).sum::<usize>(), skus);
    assert!(
        calls.iter().any(|c| c.items == BATCH_LIMIT),
        "batches fill to 25: {calls:?}"
    );

    throttle_storm_passes(
        &rig.server,
        &rig.sim.market,
        event("storm", "E0", "adjusted", 1),
        "E0",
        5,
    );
}

/// Reconciliation reads 25 SKUs a call (`bulkGetInventoryItem`), not one: a read spends
/// the pushes' call budget, and one SKU per call spent half of it on a small catalog.
#[test]
fn reconciliation_reads_25_skus_a_call_and_repairs_what_it_finds() {
    let skus = 30;
    let rig = rig(skus, "");
    count_shown(&rig.server, &rig.sim.market, "E", 0..skus, 10);
    // An edit on eBay: E27 shows 13 where lockstep pushed 10.
    rig.sim.market.set_level("E27", 13);
    let before = rig.sim.reads().len();
    let answer = status_json(
        Server::client()
            .post(rig.server.url("/v1/reconcile?channel=ebay"))
            .send()
            .unwrap(),
    );
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["report"]["checked"], skus, "{}", answer.1);
    assert_eq!(answer.1["report"]["lowered"], 1, "{}", answer.1);
    assert_eq!(rig.sim.reads()[before..], [25, 5]);
    assert!(shows(&rig, "E27", 10));
}

#[test]
fn near_the_revision_limit_only_decreases_go_out_and_the_audit_says_so() {
    // Limit 14, 10 kept for decreases: 4 revisions for anything.
    let rig = rig(1, "revision_limit = 14");
    rig.sim.set_revision_limit(14);
    count(&rig.server, "E0", 10);
    assert!(shows(&rig, "E0", 10));
    for (n, level) in [11, 12, 13].iter().enumerate() {
        post(&rig, vec![event(&format!("up{n}"), "E0", "adjusted", 1)]);
        assert!(shows(&rig, "E0", *level));
    }
    assert_eq!(rig.sim.revisions("1100"), 4);
    // The fifth revision would leave 9 < 10 kept: an increase waits.
    post(&rig, vec![event("up-held", "E0", "adjusted", 5)]);
    assert!(
        eventually(WAIT, || audit_of(&rig.server, "E0").iter().any(|r| r
            ["kind"]
            == "withheld"
            && r["source"] == "ebay"
            && r["qty"] == 18)),
        "the hold is in the audit"
    );
    assert_eq!(
        rig.sim.market.level("E0"),
        Some(13),
        "the increase was not sent"
    );
    // A decrease below what the listing shows (13) is worth a reserved revision: it goes
    // out at once, and so does each one after it, until the limit.
    post(&rig, vec![event("down", "E0", "adjusted", -6)]);
    assert!(shows(&rig, "E0", 12), "the decrease went out");
    for n in 0..9 {
        post(&rig, vec![event(&format!("down{n}"), "E0", "adjusted", -1)]);
        assert!(shows(&rig, "E0", 11 - n), "decrease {n} went out");
    }
    assert_eq!(rig.sim.revisions("1100"), 14, "every revision used");
    // At the limit even a decrease is held, and recorded.
    post(&rig, vec![event("down-held", "E0", "adjusted", -1)]);
    assert!(eventually(WAIT, || audit_of(&rig.server, "E0")
        .iter()
        .any(|r| r["kind"] == "withheld" && r["qty"] == 2)));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rig.sim.market.level("E0"), Some(3));
    assert_eq!(rig.sim.revisions("1100"), 14, "none over the limit");
    assert!(
        rig.sim.market.calls().iter().all(|c| c.status == 200),
        "never over eBay's limit"
    );
}

/// An item eBay refuses in an answer that held another change of its listing (an
/// increase, while the listing's last revisions are kept for decreases) is a refusal
/// like any: it waits on its own (2 s, then 4, ...) and is named. Before, it went again
/// at once, spending another of its listing's daily revisions.
#[test]
fn an_item_refused_beside_a_held_one_waits_and_is_named() {
    // Limit 11, 10 kept for decreases: once the first push spent one revision of the
    // listing, an increase is held and a decrease goes.
    let rig = rig(2, "revision_limit = 11");
    rig.sim.set_revision_limit(11);
    post(
        &rig,
        vec![
            event("count-0", "E0", "counted", 5),
            event("count-1", "E1", "counted", 5),
        ],
    );
    assert!(shows(&rig, "E0", 5) && shows(&rig, "E1", 5));
    rig.sim.fail_offer("E0", true);
    let tries = || -> Vec<std::time::Instant> {
        rig.sim
            .market
            .calls()
            .iter()
            .filter(|c| c.status == 207)
            .map(|c| c.at)
            .collect()
    };
    // Paused while both changes come, so that they go in one call once resumed.
    let act = |verb: &str| {
        let url = rig.server.url(&format!("/v1/channels/ebay/{verb}"));
        let status = Server::client().post(url).send().unwrap().status();
        assert_eq!(status, 200, "{verb}");
    };
    act("pause");
    post(
        &rig,
        vec![
            event("down", "E0", "adjusted", -1),
            event("up", "E1", "adjusted", 1),
        ],
    );
    act("resume");
    assert!(eventually(WAIT, || tries().len() == 1));
    let channel = || rig.server.first_channel();
    assert!(
        eventually(WAIT, || channel()["refused"] == json!(["E0"])),
        "{}",
        channel()
    );
    assert_eq!(rig.sim.market.level("E1"), Some(5), "the increase was held");
    // Its next try is 2 s after the refusal, not at once.
    assert!(eventually(WAIT, || tries().len() >= 2));
    let tried = tries();
    assert!(
        tried[1] - tried[0] >= Duration::from_millis(1_500),
        "tried again after {:?}",
        tried[1] - tried[0]
    );
    assert_eq!(rig.sim.market.level("E0"), Some(5));
}

/// eBay answers once for the inventory item and once per offer: a SKU whose offer update
/// failed is not acknowledged by its item's 200, and goes out again.
#[test]
fn a_sku_is_taken_only_when_its_item_and_every_offer_say_200() {
    let rig = rig(2, "");
    rig.sim.fail_offer("E1", true);
    post(
        &rig,
        vec![
            event("e0", "E0", "counted", 5),
            event("e1", "E1", "counted", 5),
        ],
    );
    assert!(shows(&rig, "E0", 5));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        rig.sim.market.level("E1"),
        Some(0),
        "the offer kept its quantity"
    );
    assert!(
        records(&rig.server, "E1", "pushed").is_empty(),
        "not acknowledged: {:?}",
        audit_of(&rig.server, "E1")
    );
    rig.sim.fail_offer("E1", false);
    assert!(
        shows(&rig, "E1", 5),
        "pushed again until every entry said 200"
    );
}

/// eBay's daily call limit answers 429 like a burst limit does: lockstep asks
/// getRateLimits which limit is spent and waits for its reset instead of retrying into
/// it every second.
#[test]
fn a_spent_daily_limit_waits_for_its_reset() {
    let rig = rig(2, "");
    rig.sim.set_daily_limit(1, Duration::from_secs(4));
    post(&rig, vec![event("e0", "E0", "counted", 3)]);
    assert!(shows(&rig, "E0", 3), "the one call the limit allows");
    post(&rig, vec![event("e1", "E1", "counted", 4)]);
    std::thread::sleep(Duration::from_millis(2_500));
    let refused = || rig.sim.market.throttled_calls();
    assert_eq!(refused(), 1, "one refusal, then a wait for the reset");
    assert!(shows(&rig, "E1", 4), "pushed once the limit reset");
    assert_eq!(refused(), 1);
}

/// E0's order shipped, its shipping fulfillments answering `status`, then an order of
/// E1, which the poll takes (asserted): the rig, and the first order's id.
fn a_shipped_order_whose_fulfillments_fail_then_another(status: u16) -> (Rig, String) {
    let rig = rig(2, "poll_interval_s = 1");
    count(&rig.server, "E0", 10);
    count(&rig.server, "E1", 10);
    let first = rig.sim.place_order(&[("E0", 2)]);
    rig.sim.fail_fulfillments(&first, status);
    rig.sim.advance(&first, Stage::Shipped);
    rig.sim.place_order(&[("E1", 3)]);
    assert!(
        eventually(WAIT, || rig.server.stock("E1") == Some((10, 3, 7))),
        "the poll goes on past the first order: {:?}",
        rig.server.stock("E1")
    );
    (rig, first)
}

/// An order whose shipping fulfillments eBay will not read (a 404 that no retry changes)
/// is taken without them, its FULFILLED lines shipped in full, and the orders after it
/// are taken too. The poll is eBay's only way in for orders: the pass failed at that
/// order, every pass after it too, and no later order was ever counted.
#[test]
fn an_order_whose_fulfillments_cannot_be_read_does_not_stop_the_poll() {
    let (rig, _) = a_shipped_order_whose_fulfillments_fail_then_another(404);
    assert!(
        eventually(WAIT, || rig.server.stock("E0") == Some((8, 0, 8))),
        "{:?}",
        rig.server.stock("E0")
    );
    let counted = "lockstep_channel_events_refused_total{channel=\"ebay\"}";
    assert!(rig.server.metric(counted) >= 1.0, "{counted} is counted");
}

/// An order whose shipping fulfillments eBay keeps failing to give (a 500 for it alone)
/// is set aside, and the orders after it are taken; once eBay gives them, its shipment
/// is counted. Before, every pass failed at it, and eBay's only way in for orders took
/// no later order.
#[test]
fn an_order_whose_fulfillments_keep_failing_is_set_aside_and_the_poll_goes_on() {
    let (rig, first) = a_shipped_order_whose_fulfillments_fail_then_another(500);
    let aside = set_aside_gauge("ebay");
    assert!(eventually(WAIT, || rig.server.metric(&aside) == 1.0));
    assert_eq!(rig.server.stock("E0"), Some((10, 0, 10)), "not read yet");
    rig.sim.mend_fulfillments(&first);
    assert!(
        eventually(WAIT, || rig.server.stock("E0") == Some((8, 0, 8))),
        "{:?}",
        rig.server.stock("E0")
    );
    assert!(eventually(WAIT, || rig.server.metric(&aside) == 0.0));
}

/// An order eBay lists whose line cannot be keyed (no `lineItemId`): the line is recorded
/// in the audit, naming it, and the orders after it are taken. It failed every pass once,
/// and with it every later order; then it left the whole order out.
#[test]
fn a_line_that_cannot_be_read_is_recorded_and_the_poll_goes_on() {
    let rig = rig(2, "poll_interval_s = 1");
    count(&rig.server, "E0", 10);
    count(&rig.server, "E1", 10);
    let first = rig.sim.place_order(&[("E0", 2)]);
    rig.sim.garble_order(&first);
    rig.sim.place_order(&[("E1", 3)]);
    assert!(
        eventually(WAIT, || rig.server.stock("E1") == Some((10, 3, 7))),
        "{:?}",
        rig.server.stock("E1")
    );
    assert_eq!(rig.server.stock("E0"), Some((10, 0, 10)));
    let recorded = format!("?ebay: order {first} line #1 has no `lineItemId`");
    assert!(
        eventually(WAIT, || rig
            .server
            .audit_all()
            .iter()
            .any(|r| r["kind"] == "unmapped"
                && r["sku"].as_str().is_some_and(|s| s.starts_with(&recorded)))),
        "{recorded}: {:?}",
        rig.server.audit_all()
    );
}
