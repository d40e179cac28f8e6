//! The `etsy` kind against the simulated shop: `order.paid` checked, deduplicated and
//! followed by a receipt fetch; cancellations (which Etsy never sends) found by the
//! receipts poll, across restarts; the whole-listing write that keeps every product,
//! offering, price and property; one listing per call; 429s and the daily quota (kept
//! for bringing orders in when it runs low); receipt fetches within the budget.

mod common;

use std::time::Duration;

use common::*;
use loadgen::etsy_sim::EtsySim;
use loadgen::market::Stage;
use loadgen::sim::Habits;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

type Rig = MarketRig<EtsySim>;

/// SKU `Y{i}` is product `70{i}` of listing `400{i / 2}` (two per listing).
fn rig(n: usize, extra: &str) -> Rig {
    market_rig(
        "etsy",
        &skus("Y", 0..n, |i| format!("400{}/70{i}", i / 2)),
        |items| EtsySim::start(items, ETSY_KEY, ETSY_REFRESH, ETSY_SECRET),
        |sim| etsy_channel("etsy", &sim.market.url(), extra),
        |sim| &sim.market,
    )
}

fn count_all(rig: &Rig, range: std::ops::Range<usize>, on_hand: i64) {
    count_shown(&rig.server, &rig.sim.market, "Y", range, on_hand);
}

#[test]
fn order_paid_is_checked_deduplicated_and_its_receipt_fetched() {
    let rig = rig(2, "");
    count_all(&rig, 0..2, 10);
    rig.sim.market.set_habits(Habits {
        duplicate: 1.0,
        ..Habits::default()
    });
    rig.sim.place_order(&[("Y0", 2), ("Y1", 1)]);
    assert!(rig.sim.market.sender.wait_idle(WAIT));
    assert!(eventually(WAIT, || rig.server.stock("Y0") == Some((10, 2, 8))));
    assert_eq!(rig.server.stock("Y1"), Some((10, 1, 9)));

    let (status, _) = redeliver(&rig.server, "etsy", &rig.sim.market, None);
    assert_eq!(status, 200, "a redelivery is answered");
    assert_eq!(rig.server.stock("Y0"), Some((10, 2, 8)), "and taken once");

    let forged = Some(("webhook-signature", Some("v1,Zm9yZ2Vk")));
    let (status, reply) = redeliver(&rig.server, "etsy", &rig.sim.market, forged);
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("bad_signature"))
    );
    assert_eq!(rig.server.stock("Y0"), Some((10, 2, 8)));
}

/// Etsy answers every refresh with a new refresh token, and the one spent may be
/// refused after: lockstep keeps the newest in the data directory and carries on past
/// the access token's lifetime and after a kill -9 and a restart (it once refreshed
/// from the config's refresh token every time, and Etsy stopped answering).
#[test]
fn the_rotated_refresh_token_is_kept_and_used_after_a_restart() {
    let rig = rig(2, "");
    rig.sim.set_token_lifetime(4);
    rotated_refresh_token_is_kept(rig, "etsy", "Y", |s| &s.market, |s| s.refreshes());
}

#[test]
fn cancellations_are_found_by_the_receipts_poll() {
    let rig = rig(1, "poll_interval_s = 1");
    count_all(&rig, 0..1, 10);
    let receipt = rig.sim.place_order(&[("Y0", 4)]);
    assert!(eventually(WAIT, || rig.server.stock("Y0") == Some((10, 4, 6))));
    rig.sim.advance(receipt, Stage::Cancelled);
    assert!(
        eventually(WAIT, || rig.server.stock("Y0") == Some((10, 0, 10))),
        "{:?}",
        rig.server.stock("Y0")
    );
}

#[test]
fn the_receipts_poll_misses_nothing_and_counts_nothing_twice_across_restarts() {
    let rig = rig(1, "poll_interval_s = 1");
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    rig.sim.market.set_listing_lag(Duration::from_millis(1_500));
    let etsy = &rig.sim;
    poll_survives_restarts(rig.server, "etsy", "Y0", &|sku, qty| {
        etsy.place_order(&[(sku, qty)]);
    });
}

#[test]
fn the_whole_listing_write_never_drops_an_offering() {
    let rig = rig(4, "");
    let before = rig.sim.inventory("4000");
    count_all(&rig, 0..4, 12);
    let after = rig.sim.inventory("4000");
    assert_eq!(
        after.len(),
        before.len(),
        "every product is still listed: {after:?}"
    );
    for ((sku, color, offerings), (sku0, color0, offerings0)) in after.iter().zip(&before) {
        assert_eq!(
            (sku, color),
            (sku0, color0),
            "product and its property kept"
        );
        assert_eq!(offerings.len(), offerings0.len());
        assert_eq!(offerings[0].1, offerings0[0].1, "price kept for {sku}");
        let expected = if sku.starts_with("SELLER-OWN") { 7 } else { 12 };
        assert_eq!(offerings[0].0, expected, "quantity of {sku}");
    }
    // One call per listing, each carrying the listing's every product.
    let calls = rig.sim.market.calls();
    assert!(
        calls.iter().all(|c| c.status == 200 && c.items == 3),
        "{calls:?}"
    );
    assert!(calls.len() <= 4, "{calls:?}");
}

/// A burst of `order.paid` notifications: each receipt is fetched within the budget the
/// pushes spend (Etsy's 10 calls a second per app), so Etsy answers none of lockstep's
/// calls 429, and every order counts. (The fetches used to skip the budget: twenty at
/// once met Etsy's throttle.)
#[test]
fn a_burst_of_notifications_fetches_its_receipts_within_the_budget() {
    let rig = rig(4, "");
    count_all(&rig, 0..4, 100);
    let throttled = rig.sim.throttled();
    for i in 0..20 {
        rig.sim.place_order(&[(&format!("Y{}", i % 4), 1)]);
    }
    assert!(rig.sim.market.sender.wait_idle(WAIT));
    assert!(
        eventually(WAIT, || (0..4)
            .all(|i| rig.server.stock(&format!("Y{i}")) == Some((100, 5, 95)))),
        "every order counted: {:?}",
        (0..4)
            .map(|i| rig.server.stock(&format!("Y{i}")))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        rig.sim.throttled(),
        throttled,
        "a call past Etsy's limit (sent: {:?})",
        rig.sim.market.sender.sent()
    );
}

/// A notification that comes while Etsy has paused lockstep's calls (a 429 whose
/// `Retry-After` is two minutes) is answered 503 at once, naming the budget, without a
/// call to Etsy: not held open past the sender's timeout waiting for a token. Nothing of
/// it is counted; Etsy delivers it again (and the receipts poll finds it).
#[test]
fn a_notification_during_a_long_pause_is_answered_at_once() {
    use loadgen::webhook_sim::Fault;
    let rig = rig(2, "");
    count_all(&rig, 0..2, 10);
    rig.sim
        .market
        .set_fault(Fault::Throttle { retry_after_s: 120 });
    post_ok(&rig.server, vec![event("p", "Y0", "counted", 9)]);
    let throttled = || rig.sim.market.throttled_calls();
    assert!(eventually(WAIT, || throttled() > 0), "the pause was set");
    rig.sim.market.set_fault(Fault::None);
    let calls = rig.sim.market.calls().len();

    rig.sim.place_order(&[("Y1", 1)]);
    assert!(rig.sim.market.sender.wait_idle(WAIT));
    let answers = rig.sim.market.sender.answers(Some("order.paid"));
    assert!(
        !answers.is_empty() && answers.iter().all(|s| *s == 503),
        "each attempt answered 503, none timed out: {answers:?}"
    );
    let (status, reply) = redeliver(&rig.server, "etsy", &rig.sim.market, None);
    assert_eq!(
        (status, reply["error"].as_str()),
        (503, Some("channel_unreachable")),
        "{reply}"
    );
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("budget")),
        "{reply}"
    );
    assert_eq!(rig.server.stock("Y1"), Some((10, 0, 10)), "nothing counted");
    assert_eq!(rig.sim.market.calls().len(), calls, "and nothing written");
}

/// Under 100 calls left of Etsy's day (here learnt from a receipt fetch's answer), pushes
/// wait, and what is left goes to bringing orders in: the next receipt is still fetched
/// and counted. (A push begun with the quota spent used to pause the channel's whole
/// budget for a minute, and the receipt fetches with it.)
#[test]
fn a_low_daily_quota_holds_pushes_but_not_the_receipt_fetches() {
    let rig = rig(2, "");
    rig.sim.set_remaining_today(60);
    rig.sim.place_order(&[("Y0", 1)]);
    assert!(eventually(WAIT, || rig.server.stock("Y0") == Some((0, 1, -1))));
    post_ok(&rig.server, vec![event("b", "Y1", "counted", 5)]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(rig.sim.market.calls().is_empty(), "no write: pushes wait");

    rig.sim.place_order(&[("Y0", 1)]);
    assert!(
        eventually(WAIT, || rig.server.stock("Y0") == Some((0, 2, -2))),
        "the order counted while pushes wait: {:?} (answers {:?})",
        rig.server.stock("Y0"),
        rig.sim.market.sender.answers(Some("order.paid"))
    );
    assert_eq!(rig.sim.market.level("Y1"), Some(0), "and still no write");
}

/// Reconciliation reads two calls a listing a pass: left to itself, a shop of a few
/// hundred listings spent Etsy's 10,000 calls a day on it. Its reads stop once less than
/// half the day's quota is left, naming why, and the rest stays for pushes and orders.
#[test]
fn reconciliation_leaves_half_the_daily_quota_to_pushes_and_orders() {
    let rig = rig(40, "");
    count_all(&rig, 0..40, 5);
    rig.sim.set_remaining_today(5_010);
    let (status, answer) = reconcile(&rig.server, "etsy");
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("leave the rest to pushes and orders")),
        "{answer}"
    );
    let left = rig.sim.remaining_today();
    assert!(
        (4_990..5_000).contains(&left),
        "reads stopped at the reserve, not 40 calls later: {left} left"
    );
    // Asked again, it says so before reading anything.
    let (status, answer) = reconcile(&rig.server, "etsy");
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("quota_reserved")),
        "{answer}"
    );
    assert_eq!(rig.sim.remaining_today(), left, "nothing read");
    // Pushes and orders still go on below it.
    rig.sim.place_order(&[("Y0", 1)]);
    assert!(eventually(WAIT, || rig.server.stock("Y0") == Some((5, 1, 4))));
    assert!(rig.sim.market.wait_for(WAIT, |l| l["Y1"] == 5).is_some());
    post_ok(&rig.server, vec![event("c", "Y1", "counted", 7)]);
    assert!(rig.sim.market.wait_for(WAIT, |l| l["Y1"] == 7).is_some());
    // With the quota back (a new day's window), the pass reads every listing.
    rig.sim.set_remaining_today(9_000);
    rig.sim.place_order(&[("Y2", 1)]);
    assert!(eventually(WAIT, || rig.server.stock("Y2") == Some((5, 1, 4))));
    let (status, answer) = reconcile(&rig.server, "etsy");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["report"]["checked"], 40, "{answer}");
}

#[test]
fn a_429_is_honoured_and_a_spent_daily_quota_pauses_pushes() {
    let rig = rig(2, "");
    throttle_storm_passes(
        &rig.server,
        &rig.sim.market,
        event("a", "Y0", "counted", 3),
        "Y0",
        3,
    );

    // The answers report 60 calls left today: under the floor, pushes wait.
    rig.sim.set_remaining_today(60);
    let (status, _) = rig
        .server
        .post_events(&json!({"events": [event("b", "Y0", "counted", 4)]}));
    assert_eq!(status, 200);
    assert!(
        rig.sim.market.wait_for(WAIT, |l| l["Y0"] == 4).is_some(),
        "the call that saw the quota"
    );
    let calls = rig.sim.market.calls().len();
    let (status, _) = rig
        .server
        .post_events(&json!({"events": [event("c", "Y1", "counted", 5)]}));
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        rig.sim.market.calls().len(),
        calls,
        "no write while the quota is spent"
    );
    assert_eq!(rig.sim.market.level("Y1"), Some(0));
    let metrics = rig.server.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lockstep_channel_quota_remaining{channel=\"etsy\"}")),
        "the quota is exported"
    );
}

#[test]
fn a_sale_between_our_read_and_our_write_of_the_listing_is_not_lost() {
    // Y0 and Y1 share listing 4000: pushing Y0 writes Y1 back as read.
    let rig = rig(2, "poll_interval_s = 1");
    count_all(&rig, 0..2, 10);
    // Long after Y1's last write, so only the write below can explain the sale's effect.
    std::thread::sleep(Duration::from_millis(2_500));
    rig.sim.sell_after_next_read("Y1");
    post_ok(&rig.server, vec![event("more-Y0", "Y0", "adjusted", 1)]);
    assert!(rig.sim.market.wait_for(WAIT, |l| l["Y0"] == 11).is_some());
    // The write put Y1 back to 10 over the sale; once the poll brings the sale in,
    // lockstep knows it wrote Y1 just then and pushes it again.
    assert!(
        eventually(WAIT, || rig.server.stock("Y1") == Some((10, 1, 9))),
        "{:?}",
        rig.server.stock("Y1")
    );
    assert!(
        rig.sim.market.wait_for(WAIT, |l| l["Y1"] == 9).is_some(),
        "Etsy shows the sale: {:?}",
        rig.sim.market.levels()
    );
}

/// Every call carries `x-api-key: keystring:shared_secret`; the keystring alone is
/// refused as Etsy refuses it since 2026-02-09.
#[test]
fn calls_carry_the_keystring_and_the_shared_secret() {
    let rig = rig(1, "");
    count_all(&rig, 0..1, 5);
    assert!(rig.sim.market.calls().iter().all(|c| c.status == 200));
    let listing = format!("{}/v3/application/listings/4000", rig.sim.market.url());
    let bare = Server::client()
        .get(&listing)
        .header("x-api-key", ETSY_KEY.0)
        .header("authorization", "Bearer 12345678.sim-access-token")
        .send()
        .unwrap();
    let (status, body) = status_json(bare);
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("Shared secret is required in x-api-key header."))
    );
}

/// Etsy cannot show a listing with every offering at 0: a product that sells out has its
/// offering disabled while another sells, the listing goes inactive when nothing is
/// left, and active again when stock returns; the audit says which.
#[test]
fn sold_out_is_a_disabled_offering_or_an_inactive_listing() {
    let rig = rig(2, "");
    rig.sim.set_seller_own("4000", 0);
    post_ok(
        &rig.server,
        vec![
            event("y0", "Y0", "counted", 3),
            event("y1", "Y1", "counted", 2),
        ],
    );
    assert!(rig
        .sim
        .market
        .wait_for(WAIT, |l| l["Y0"] == 3 && l["Y1"] == 2)
        .is_some());

    post_ok(&rig.server, vec![event("y0-out", "Y0", "counted", 0)]);
    assert!(
        eventually(WAIT, || !rig.sim.enabled("Y0")),
        "Y0's offering disabled"
    );
    assert_eq!(rig.sim.market.level("Y0"), Some(0));
    assert_eq!(rig.sim.state("4000"), "active", "Y1 still sells");
    assert!(eventually(WAIT, || !records(
        &rig.server,
        "Y0",
        "offering_disabled"
    )
    .is_empty()));

    post_ok(&rig.server, vec![event("y1-out", "Y1", "counted", 0)]);
    assert!(
        eventually(WAIT, || rig.sim.state("4000") == "inactive"),
        "nothing left: the listing goes inactive ({})",
        rig.sim.state("4000")
    );
    assert_eq!(rig.sim.market.level("Y1"), Some(0), "buyers see nothing");
    assert!(eventually(WAIT, || !records(
        &rig.server,
        "Y1",
        "listing_deactivated"
    )
    .is_empty()));
    let refused = rig
        .sim
        .market
        .calls()
        .iter()
        .filter(|c| c.status == 400)
        .count();
    assert_eq!(refused, 0, "no all-zero write was sent");

    post_ok(&rig.server, vec![event("y1-back", "Y1", "counted", 4)]);
    assert!(
        eventually(WAIT, || rig.sim.state("4000") == "active"),
        "stock returned: active again"
    );
    assert!(rig.sim.market.wait_for(WAIT, |l| l["Y1"] == 4).is_some());
    assert_eq!(rig.sim.market.level("Y0"), Some(0), "Y0 still sold out");
    assert!(eventually(WAIT, || !records(
        &rig.server,
        "Y1",
        "listing_activated"
    )
    .is_empty()));
    let (_, reply) = reconcile(&rig.server, "etsy");
    assert_eq!(reply["report"]["lowered"], 0, "{reply}");
}

/// A receipt refunded in full before it shipped releases its units (found by the
/// receipts poll: Etsy sends nothing on a refund).
#[test]
fn a_fully_refunded_unshipped_receipt_releases_its_units() {
    let rig = rig(1, "poll_interval_s = 1");
    count_all(&rig, 0..1, 10);
    let receipt = rig.sim.place_order(&[("Y0", 3)]);
    assert!(eventually(WAIT, || rig.server.stock("Y0") == Some((10, 3, 7))));
    rig.sim.refund(receipt);
    assert!(
        eventually(WAIT, || rig.server.stock("Y0") == Some((10, 0, 10))),
        "{:?}",
        rig.server.stock("Y0")
    );
}

/// A rotated grant the disk refuses (its first write fails, injected with strace) is
/// kept in memory, used, and written at the next call: Etsy has already spent the
/// refresh token, and dropping the new one lost the channel until the shop was
/// authorized again.
#[test]
fn a_rotated_grant_the_disk_refuses_once_is_kept_and_written_at_the_next_call() {
    // Tokens of 2 s from the start: whatever the first server took is due again below.
    let rig = market_rig(
        "etsy",
        &skus("Y", 0..2, |i| format!("400{}/70{i}", i / 2)),
        |items| {
            let sim = EtsySim::start(items, ETSY_KEY, ETSY_REFRESH, ETSY_SECRET);
            sim.set_token_lifetime(2);
            sim
        },
        |sim| etsy_channel("etsy", &sim.market.url(), ""),
        |sim| &sim.market,
    );
    let data = rig.server.data_dir.clone();
    rig.server.kill9();
    let grant = data.join("token-etsy.json");
    let temp = data.join("token-etsy.json.tmp");
    let (mut child, base) = serve_traced(&writes_to_fail(&temp, "1"), &data.with_extension("toml"));
    let put = |sku: &str, on_hand: i64| {
        let response = Server::client()
            .put(format!("{base}/v1/skus/{sku}"))
            .json(&json!({ "on_hand": on_hand }))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
    };
    // Past any earlier token's lifetime: this push refreshes, and the grant's first write
    // fails.
    std::thread::sleep(Duration::from_secs(3));
    put("Y0", 5);
    assert!(
        rig.sim.market.wait_for(WAIT, |l| l["Y0"] == 5).is_some(),
        "the push went out with the grant kept in memory"
    );
    put("Y1", 6);
    assert!(rig.sim.market.wait_for(WAIT, |l| l["Y1"] == 6).is_some());
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&grant).unwrap()).unwrap();
    assert_ne!(
        kept["refresh_token"], ETSY_REFRESH,
        "the rotated one is on disk"
    );
    signal_traced(&mut child, 9);
}

/// A SKU with more stock than Etsy takes for one offering ("cannot be greater than 999";
/// our simulator takes 0 to 999) is shown 999, and its listing's other product is
/// written in the same call. Before, every write of that listing was refused, the other
/// product's with it.
#[test]
fn a_sku_with_more_stock_than_etsy_takes_is_shown_the_most_it_takes() {
    let rig = rig(2, "");
    post_ok(
        &rig.server,
        vec![
            event("big", "Y0", "counted", 1_500),
            event("small", "Y1", "counted", 3),
        ],
    );
    assert!(
        rig.sim
            .market
            .wait_for(WAIT, |l| l.get("Y0") == Some(&999)
                && l.get("Y1") == Some(&3))
            .is_some(),
        "{:?}",
        rig.sim.market.calls()
    );
}

#[test]
fn an_order_that_cannot_be_read_is_left_out_and_the_poll_goes_on() {
    let rig = rig(2, "poll_interval_s = 1");
    an_unreadable_order_does_not_stop_the_poll(
        &rig.server,
        &rig.sim.market,
        "etsy",
        ("Y0", "Y1"),
        &|sku, qty| {
            rig.sim.place_order(&[(sku, qty)]);
        },
    );
}

/// A receipt Etsy refuses to give (400) at the notification's fetch is left out and
/// counted, and the notification answered 200 once: a 503 would have Etsy deliver it
/// again to no end but the same refusal. One Etsy forbids (403: the grant's scope, which
/// the seller can fix) is answered 503, to come again, and held once Etsy gives it.
#[test]
fn a_refused_receipt_is_answered_200_and_a_forbidden_one_503() {
    let rig = rig(2, "");
    count_all(&rig, 0..2, 10);
    let hooks = || rig.sim.market.sender.answers(Some("order.paid"));
    let refuse = |sku: &str, status: u16| {
        rig.sim
            .market
            .shop()
            .refused_orders
            .insert(sku.into(), status);
    };
    refuse("Y0", 400);
    rig.sim.place_order(&[("Y0", 2)]);
    assert!(rig.sim.market.sender.wait_idle(WAIT));
    assert_eq!(hooks(), [200], "taken once, not refused and retried");
    assert_eq!(rig.server.stock("Y0"), Some((10, 0, 10)), "left out");
    let counted = "lockstep_channel_events_refused_total{channel=\"etsy\"}";
    assert!(rig.server.metric(counted) >= 1.0, "{counted} is counted");

    refuse("Y1", 403);
    rig.sim.place_order(&[("Y1", 1)]);
    assert!(rig.sim.market.sender.wait_idle(WAIT));
    let forbidden = || hooks()[1..].to_vec();
    assert!(
        !forbidden().is_empty() && forbidden().iter().all(|s| *s == 503),
        "{:?}",
        hooks()
    );
    assert_eq!(rig.server.stock("Y1"), Some((10, 0, 10)));
    rig.sim.market.shop().refused_orders.clear();
    let (status, _) = redeliver(&rig.server, "etsy", &rig.sim.market, None);
    assert_eq!(status, 200, "delivered again once Etsy gives it");
    assert_eq!(rig.server.stock("Y1"), Some((10, 1, 9)));
}
