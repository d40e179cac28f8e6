//! The `amazon` kind against the simulated account: `ORDER_CHANGE` read from the SQS
//! queue (SigV4-signed, at least once, deleted once durable), EventBridge deliveries
//! checked by the shared header, the
//! Orders API poll across restarts, `patchListingsItem` paced at 5/s, the switch to a
//! `JSON_LISTINGS_FEED` for a backlog (and back to per-call pushes once 5 feeds are
//! spent), and quantity-change notifications as echoes.

mod common;

use std::time::Duration;

use common::*;
use loadgen::amazon_sim::{AmazonSim, FEEDS_PER_WINDOW};
use loadgen::market::Stage;
use loadgen::sim::Habits;

const WAIT: Duration = Duration::from_secs(30);

type Rig = MarketRig<AmazonSim>;

/// SKU `A{i}` is seller SKU `AMZ-{i}`.
fn rig(n: usize, extra: &str) -> Rig {
    market_rig(
        "amazon",
        &skus("A", 0..n, |i| format!("AMZ-{i}")),
        |items| AmazonSim::start(items, AMAZON_LWA, AMAZON_AUTH),
        |sim| amazon_channel("amazon", sim, extra),
        |sim| &sim.market,
    )
}

fn count_all(rig: &Rig, range: std::ops::Range<usize>, on_hand: i64) {
    count_shown(&rig.server, &rig.sim.market, "A", range, on_hand);
}

/// Whether Amazon comes to show `level` for every SKU `A{i}` of `skus` within `WAIT`.
fn all_come_to(rig: &Rig, skus: impl Iterator<Item = usize> + Clone, level: i64) -> bool {
    eventually(WAIT, || {
        skus.clone()
            .all(|i| rig.sim.market.level(&format!("A{i}")) == Some(level))
    })
}

/// `ORDER_CHANGE` comes from the seller's SQS queue (SP-API sends it nowhere else), at
/// least once: Amazon sends each notification twice here and the queue hands messages out
/// twice, and every line is counted once; each message is deleted once taken.
#[test]
fn order_changes_come_from_the_sqs_queue_at_least_once_and_count_once() {
    let rig = rig(2, "");
    count_all(&rig, 0..2, 20);
    rig.sim.market.set_habits(Habits {
        duplicate: 1.0,
        ..Habits::default()
    });
    rig.sim.queue.set_duplicate(0.5);
    let order = rig.sim.place_order(&[("A0", 3), ("A1", 1)]);
    assert!(eventually(WAIT, || rig.server.stock("A0") == Some((20, 3, 17))));
    // Every item of the order (on another shard, maybe a commit behind).
    assert!(
        eventually(WAIT, || rig.server.stock("A1") == Some((20, 1, 19))),
        "{:?}",
        rig.server.stock("A1")
    );
    assert!(
        eventually(WAIT, || rig.sim.queue.depth() == 0),
        "taken messages are deleted: {} left",
        rig.sim.queue.depth()
    );
    assert!(rig.sim.queue.received().len() >= 2, "both copies were read");

    rig.sim.advance(&order, Stage::Shipped);
    assert!(eventually(WAIT, || rig.server.stock("A0") == Some((17, 0, 17))));
    let second = rig.sim.place_order(&[("A1", 2)]);
    rig.sim.advance(&second, Stage::Cancelled);
    assert!(
        // The first order shipped A1's unit; the second was placed and cancelled.
        eventually(WAIT, || rig.server.stock("A1") == Some((19, 0, 19))
            && audit_of(&rig.server, "A1")
                .iter()
                .any(|r| r["kind"] == "order_released_total")),
        "{:?} {:#?}",
        rig.server.stock("A1"),
        audit_of(&rig.server, "A1")
    );
    assert_eq!(
        placed_records(&rig.server, "A0"),
        1,
        "one placement per line"
    );
    assert!(
        rig.sim.queue.refused().is_empty(),
        "every SQS call was signed right: {:?}",
        rig.sim.queue.refused()
    );
}

/// An item shipped in parts (`PartiallyShipped`, `QuantityShipped` rising), its
/// notifications unordered and doubled as SQS delivers them, then the order cancelled
/// with units left: each unit shipped or released once.
#[test]
fn partial_shipments_from_an_unordered_queue_keep_the_hold_exact() {
    let rig = rig(1, "");
    count_all(&rig, 0..1, 20);
    rig.sim.queue.set_duplicate(0.5);
    let order = rig.sim.place_order(&[("A0", 6)]);
    assert!(eventually(WAIT, || rig.server.stock("A0") == Some((20, 6, 14))));
    rig.sim.ship_units(&order, 0, 2);
    rig.sim.ship_units(&order, 0, 1);
    assert!(
        eventually(WAIT, || rig.server.stock("A0") == Some((17, 3, 14))),
        "{:?}",
        rig.server.stock("A0")
    );
    rig.sim.advance(&order, Stage::Cancelled);
    assert!(
        eventually(WAIT, || rig.server.stock("A0") == Some((17, 0, 17))),
        "{:?} {:#?}",
        rig.server.stock("A0"),
        audit_of(&rig.server, "A0")
    );
    assert!(eventually(WAIT, || rig.sim.queue.depth() == 0));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        rig.server.stock("A0"),
        Some((17, 0, 17)),
        "late copies change nothing"
    );
}

/// A message whose delete is lost comes back after the visibility timeout: a duplicate.
/// Orders placed while lockstep is down wait in the queue and are taken after a restart.
#[test]
fn the_queue_keeps_what_was_not_deleted_and_what_came_while_down() {
    let rig = rig(1, "");
    count_all(&rig, 0..1, 20);
    rig.sim.queue.set_visibility(Duration::from_secs(1));
    rig.sim.queue.ignore_deletes(1);
    rig.sim.place_order(&[("A0", 2)]);
    assert!(eventually(WAIT, || rig.server.stock("A0") == Some((20, 2, 18))));
    assert!(
        eventually(WAIT, || rig.sim.queue.depth() == 0),
        "deleted on its second receive"
    );
    let received = rig.sim.queue.received();
    assert_eq!(
        received.len(),
        2,
        "received again after the visibility timeout"
    );
    assert_eq!(received[0], received[1], "the same message");
    assert_eq!(rig.server.stock("A0"), Some((20, 2, 18)), "counted once");

    let server = kill9_and_restart_after(rig.server, || {
        rig.sim.place_order(&[("A0", 1)]);
        rig.sim.place_order(&[("A0", 4)]);
        assert_eq!(rig.sim.queue.depth(), 2, "waiting in the queue");
    });
    assert!(
        eventually(WAIT, || server.stock("A0") == Some((20, 7, 13))),
        "{:?}",
        server.stock("A0")
    );
    assert!(eventually(WAIT, || rig.sim.queue.depth() == 0));
}

/// The queue takes only SigV4-signed calls with the right key, as SQS does.
#[test]
fn the_queue_refuses_calls_that_are_not_signed_with_the_key() {
    let rig = rig(1, "");
    let url = rig.sim.queue.queue_url();
    let endpoint = url.rsplitn(3, '/').last().unwrap().to_string() + "/";
    let body = serde_json::json!({"QueueUrl": url, "MaxNumberOfMessages": 10}).to_string();
    let now = time::OffsetDateTime::now_utc();
    let (day, stamp) = (
        format!(
            "{:04}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day()
        ),
        format!("{:02}{:02}{:02}", now.hour(), now.minute(), now.second()),
    );
    let amz_date = format!("{day}T{stamp}Z");
    let call = |authorization: Option<&str>| {
        let mut request = Server::client()
            .post(&endpoint)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", "AmazonSQS.ReceiveMessage")
            .header("x-amz-date", &amz_date)
            .body(body.clone());
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        status_json(request.send().unwrap())
    };
    let (status, reply) = call(None);
    assert_eq!(status, 400, "{reply}");
    assert!(reply["__type"]
        .as_str()
        .unwrap()
        .ends_with("MissingAuthenticationToken"));
    let forged = format!(
        "AWS4-HMAC-SHA256 Credential={}/{day}/us-east-1/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={}",
        loadgen::amazon_sim::AWS_ACCESS_KEY_ID,
        "0".repeat(64)
    );
    let (status, reply) = call(Some(&forged));
    assert_eq!(status, 403, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("signature we calculated"),
        "{reply}"
    );
}

/// The EventBridge path (listing notifications) is checked by the shared header.
#[test]
fn eventbridge_deliveries_are_checked_by_the_shared_header() {
    let rig = rig(1, "");
    count_all(&rig, 0..1, 20);
    rig.sim.seller_edit("A0", 20);
    assert!(rig.sim.market.sender.wait_idle(WAIT));
    let (status, reply) = redeliver(&rig.server, "amazon", &rig.sim.market, None);
    assert_eq!(status, 200, "{reply}");
    let forged: Vec<(&str, &str)> = vec![
        ("content-type", "application/json"),
        (AMAZON_AUTH.0, "guess"),
    ];
    let (_, body) = rig.sim.market.last_delivery().unwrap();
    let (status, reply) = post_raw(&rig.server, "amazon", &forged, &body);
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["error"], "bad_signature", "{reply}");
    let (status, _) = post_raw(
        &rig.server,
        "amazon",
        &[("content-type", "application/json")],
        &body,
    );
    assert_eq!(status, 401);
}

#[test]
fn the_order_poll_misses_nothing_and_counts_nothing_twice_across_restarts() {
    let rig = rig(1, "poll_interval_s = 1");
    // A pass a second: more than getOrders' default plan (one a minute, burst 20) gives.
    rig.sim.set_orders_rate(20.0, 5.0);
    // No notifications at all: the poll alone, with orders listed 1.5 s late.
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    rig.sim.market.set_listing_lag(Duration::from_millis(1_500));
    let amazon = &rig.sim;
    poll_survives_restarts(rig.server, "amazon", "A0", &|sku, qty| {
        amazon.place_order(&[(sku, qty)]);
    });
    assert!(rig.sim.market.order_polls() >= 3);
}

/// A per-SKU call is chosen after its token: a stock-out that comes while earlier changes
/// wait goes in the very next call, not after the calls of the batch taken before it.
#[test]
fn a_stock_out_goes_in_the_next_call_before_the_rest_of_an_earlier_batch() {
    // A call about every 0.55 s; up to six changes are too few for a feed (3 s of calls).
    let rig = rig(6, "rate_limit = { requests_per_second = 2.0, burst = 1 }");
    let calls = || rig.sim.market.calls().len();
    // The first change spends the token; four more come while the next is on its way and
    // are taken together when it comes; the stock-out comes after the first of their calls.
    post_ok(&rig.server, vec![event("c0", "A0", "counted", 9)]);
    assert!(eventually(WAIT, || calls() >= 1));
    post_ok(
        &rig.server,
        (1..5)
            .map(|i| event(&format!("c{i}"), &format!("A{i}"), "counted", 9))
            .collect(),
    );
    assert!(eventually(WAIT, || calls() >= 2));
    post_ok(&rig.server, vec![event("gone", "A5", "counted", 0)]);
    // (The simulator lists every SKU at 0 to begin with: wait for the write itself.)
    let written = |sku: &str| rig.sim.market.arrivals(sku).first().map(|a| a.available);
    assert!(eventually(WAIT, || (0..5)
        .all(|i| written(&format!("A{i}")) == Some(9))
        && written("A5") == Some(0)));
    let mut order: Vec<(std::time::Instant, String)> = (0..6)
        .map(|i| {
            let sku = format!("A{i}");
            (rig.sim.market.arrivals(&sku)[0].at, sku)
        })
        .collect();
    order.sort();
    let order: Vec<&str> = order.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(order[2], "A5", "the stock-out went third: {order:?}");
    assert!(rig.sim.market.calls().iter().all(|c| c.items == 1));
}

#[test]
fn single_changes_go_per_call_at_five_per_second_without_429s() {
    let rig = rig(12, "");
    count_all(&rig, 0..12, 7);
    let calls = rig.sim.market.calls();
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
    assert!(rig.sim.feeds().is_empty());

    // A 429 storm: the throttle is honoured and the value arrives once it passes.
    throttle_storm_passes(
        &rig.server,
        &rig.sim.market,
        event("storm", "A0", "adjusted", 1),
        "A0",
        8,
    );
}

#[test]
fn a_backlog_goes_as_a_feed_until_five_feeds_are_spent() {
    let skus = 60;
    let rig = rig(skus, "");
    for round in 1..=FEEDS_PER_WINDOW as i64 {
        count_all(&rig, 0..skus, round);
    }
    let feeds = rig.sim.feeds();
    assert_eq!(feeds.len(), FEEDS_PER_WINDOW, "{feeds:?}");
    assert!(
        feeds.iter().all(|n| *n > 15),
        "each feed carried a backlog: {feeds:?}"
    );
    let patches_before = rig
        .sim
        .market
        .calls()
        .iter()
        .filter(|c| c.path.starts_with("/listings/"))
        .count();
    // The sixth backlog inside 5 minutes: no feed left, so per-call pushes carry it.
    count_all(&rig, 0..20, 99);
    assert_eq!(rig.sim.feeds().len(), FEEDS_PER_WINDOW, "no sixth feed");
    let calls = rig.sim.market.calls();
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

/// A feed is acknowledged by its processing report, message by message: a SKU whose
/// message the report names with an ERROR is a failed push (not "pushed" in the audit),
/// the rest are taken once the feed is DONE.
#[test]
fn a_feed_s_processing_report_fails_the_messages_it_refuses() {
    let skus = 30;
    let rig = rig(skus, "");
    rig.sim.set_feed_delay(Duration::from_millis(600));
    rig.sim.refuse_listing("AMZ-7");
    for i in 0..skus {
        count(&rig.server, &format!("A{i}"), 4);
    }
    assert!(
        eventually(WAIT, || (0..skus).filter(|i| *i != 7).all(|i| rig
            .sim
            .market
            .level(&format!("A{i}"))
            == Some(4))),
        "{:?}",
        rig.sim.market.levels()
    );
    assert!(!rig.sim.feeds().is_empty(), "the backlog went as a feed");
    assert!(
        eventually(WAIT, || (0..skus).filter(|i| *i != 7).all(|i| !records(
            &rig.server,
            &format!("A{i}"),
            "pushed"
        )
        .is_empty())),
        "the others are acknowledged"
    );
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        records(&rig.server, "A7", "pushed").is_empty(),
        "the refused message was not acknowledged: {:#?}",
        audit_of(&rig.server, "A7")
    );
}

#[test]
fn quantity_change_notifications_are_echoes_of_our_writes() {
    let rig = rig(1, "");
    rig.sim.market.set_habits(Habits {
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

#[test]
fn a_quantity_change_nobody_ordered_is_an_external_change() {
    // `count`: what Amazon shows after a seller's edit is taken as the stock.
    let counted = rig(1, "inventory_updates = \"count\"");
    count_all(&counted, 0..1, 10);
    counted.sim.seller_edit("A0", 25);
    assert!(
        eventually(WAIT, || counted.server.stock("A0") == Some((25, 0, 25))),
        "{:?}",
        counted.server.stock("A0")
    );
    // `ignore` (the default): lockstep is the master and puts its number back.
    let master = rig(1, "reconcile_interval_s = 1\nreconcile_grace_s = 0");
    count_all(&master, 0..1, 10);
    master.sim.seller_edit("A0", 25);
    assert!(master
        .sim
        .market
        .wait_for(WAIT, |l| l["A0"] == 10)
        .is_some());
    assert_eq!(master.server.stock("A0"), Some((10, 0, 10)));
}

/// `merge`, not `replace`: the seller's handling time and restock date survive a push,
/// per call and by feed.
#[test]
fn a_push_keeps_the_seller_s_handling_time_and_restock_date() {
    let rig = rig(60, "");
    count_all(&rig, 0..1, 6);
    let entry = rig.sim.availability("AMZ-0");
    assert_eq!(entry["quantity"], 6, "{entry}");
    assert_eq!(entry["lead_time_to_ship_max_days"], 3, "{entry}");
    assert_eq!(entry["restock_date"], "2027-01-15", "{entry}");
    // A backlog (60 SKUs, as in the feed test above) goes as a feed: it merges too.
    count_all(&rig, 0..60, 9);
    assert!(!rig.sim.feeds().is_empty(), "a feed was sent");
    for i in 0..60 {
        let entry = rig.sim.availability(&format!("AMZ-{i}"));
        assert_eq!(
            (&entry["quantity"], &entry["lead_time_to_ship_max_days"]),
            (&serde_json::json!(9), &serde_json::json!(3)),
            "{entry}"
        );
    }
}

/// A sale peak with every notification lost: 40 orders on one page of the poll, more
/// than getOrderItems' burst of 30. The poll paces its item calls on that limit and keeps
/// what it fetched, so a pass that reads the page again goes on where it stopped instead
/// of starting over into the same 429 (a livelock): every order is found.
#[test]
fn the_order_poll_paces_its_item_calls_through_a_sale_peak() {
    let rig = rig(1, "poll_interval_s = 1");
    rig.sim.set_orders_rate(20.0, 5.0);
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    count_all(&rig, 0..1, 100);
    for _ in 0..40 {
        rig.sim.place_order(&[("A0", 1)]);
    }
    assert!(
        eventually(Duration::from_secs(60), || rig.server.stock("A0")
            == Some((100, 40, 60))),
        "{:?}",
        rig.server.stock("A0")
    );
}

/// Amazon lowered this seller's patchListingsItem rate to 1/s and says so in
/// `x-amzn-RateLimit-Limit`: lockstep paces by it instead of meeting 429s.
#[test]
fn pushes_pace_by_the_applied_rate_amazon_names() {
    let rig = rig(4, "");
    rig.sim.set_patch_rate(1.0);
    count_all(&rig, 0..1, 2);
    for i in 1..4 {
        count_all(&rig, i..i + 1, 2);
    }
    let patches: Vec<_> = rig
        .sim
        .market
        .calls()
        .into_iter()
        .filter(|c| c.path.starts_with("/listings/"))
        .collect();
    let refused = patches.iter().filter(|c| c.status == 429).count();
    assert!(refused <= 1, "paced after the first answer: {patches:?}");
}

/// A backlog of more pages than getOrders' bucket holds (here 2, refilling one every 5 s;
/// 350 orders at 100 a page), every notification lost: the poll waits for its tokens,
/// and waits out the 429 Amazon answers anyway, at the rate Amazon names. Its pages went
/// out unpaced and the third one's 429 failed the pass; the next pass started again from
/// the first page, met the 429 again on the second, and the orders past it were never
/// counted.
#[test]
fn a_poll_of_more_pages_than_the_orders_bucket_still_counts_every_order() {
    const ORDERS: i64 = 350;
    // Passes 5 s apart: the orders come between two, and the next finds four pages.
    let rig = rig(2, "poll_interval_s = 5");
    rig.sim.set_orders_rate(2.0, 0.2);
    rig.sim.set_order_items_rate(400.0, 200.0);
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    count_all(&rig, 0..2, 1_000);
    for i in 0..ORDERS {
        rig.sim.place_order(&[(&format!("A{}", i % 2), 1)]);
    }
    let committed = || {
        (0..2)
            .map(|i| rig.server.stock(&format!("A{i}")).map_or(0, |s| s.1))
            .sum::<i64>()
    };
    assert!(
        eventually(Duration::from_secs(60), || committed() == ORDERS),
        "{} of {ORDERS} orders counted",
        committed()
    );
    assert!(
        rig.sim.orders_throttled() > 0,
        "the backlog was more pages than the bucket held"
    );
}

/// An order of more items than getOrderItems answers on a page (Amazon then gives a
/// `NextToken`): every item counts. Only the first page was read, and the order was
/// kept as fetched, its other items never counted.
#[test]
fn an_order_of_more_items_than_a_page_counts_every_item() {
    let rig = rig(2, "poll_interval_s = 1");
    rig.sim.set_orders_rate(20.0, 5.0);
    rig.sim.set_order_items_page(2);
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    count_all(&rig, 0..2, 100);
    rig.sim
        .place_order(&[("A0", 1), ("A1", 2), ("A0", 3), ("A1", 4), ("A0", 5)]);
    assert!(
        eventually(WAIT, || rig.server.stock("A0") == Some((100, 9, 91))
            && rig.server.stock("A1") == Some((100, 6, 94))),
        "{:?} {:?}",
        rig.server.stock("A0"),
        rig.server.stock("A1")
    );
}

/// Feeds whose processing applied none of their messages, each with a report that says
/// so otherwise than by naming them: none of their items is acknowledged, and they are
/// pushed again. The adapter acknowledged every message no ERROR named, so the whole
/// backlog passed for pushed while Amazon kept the old levels, until a reconciliation
/// found them.
/// - refused whole: the report's one ERROR names no message ("Not provided if the error
///   is not related to a message (e.g. feed formatting issue)");
/// - dropped unsaid: no issue, but `summary.messagesAccepted` is 0.
#[test]
fn a_feed_that_applied_nothing_is_pushed_again() {
    let skus = 30;
    for (how, fault) in [
        (
            "refused whole",
            AmazonSim::refuse_feeds as fn(&AmazonSim, usize),
        ),
        ("dropped unsaid", AmazonSim::drop_feeds_unsaid),
    ] {
        let rig = rig(skus, "");
        fault(&rig.sim, 1);
        for i in 0..skus {
            count(&rig.server, &format!("A{i}"), 4);
        }
        assert!(
            all_come_to(&rig, 0..skus, 4),
            "{how}: {:?}",
            rig.sim.market.levels()
        );
        assert!(
            !rig.sim.feeds().is_empty(),
            "{how}: the backlog went as a feed"
        );
    }
}

/// A listing Amazon refuses, written one SKU a call, waits longer after each refusal, and
/// the other SKUs are written meanwhile. The refused SKU kept its place at the head of the
/// queue, so each round pushed it alone and the others waited for good.
#[test]
fn a_refused_listing_does_not_hold_back_the_others() {
    let skus = 5;
    let rig = rig(skus, "");
    rig.sim.refuse_listing("AMZ-0");
    for i in 0..skus {
        count(&rig.server, &format!("A{i}"), 4);
    }
    assert!(
        all_come_to(&rig, 1..skus, 4),
        "{:?}",
        rig.sim.market.calls()
    );
    // Refused, then held back: a few calls for it, not one a round.
    std::thread::sleep(Duration::from_secs(3));
    let refused = || {
        rig.sim
            .market
            .calls()
            .iter()
            .filter(|c| c.path.ends_with("/AMZ%2D0") && c.status != 429)
            .count()
    };
    assert!((1..=3).contains(&refused()), "{:?}", rig.sim.market.calls());
    // Each refusal is one line of the log, with Amazon's answer: counted against the
    // SKU, it is named with its reason; before the channel took others, it is the
    // channel's "push refused". (A call's line follows its answer: read until they meet.)
    let lines = std::sync::Mutex::new(Vec::new());
    let one_each = eventually(Duration::from_secs(5), || {
        let mut lines = lines.lock().unwrap();
        lines.extend(
            rig.server
                .stderr_lines()
                .into_iter()
                .filter(|l| l.contains("push refused") || l.contains("refused this SKU's push")),
        );
        lines.len() == refused()
    });
    let lines = lines.into_inner().unwrap();
    assert!(one_each, "{} calls: {lines:#?}", refused());
    // Plain text, `key=value`, in a log that is not a terminal's.
    assert!(
        lines
            .iter()
            .all(|l| l.contains("reason=") && !l.contains('\u{1b}')),
        "{lines:#?}"
    );
}

/// While Amazon refuses every write (each 403, as for a wrong token), the channel is at
/// fault, not its listings: no SKU is counted refused or left a growing wait of its own,
/// and once Amazon takes writes again every level arrives.
#[test]
fn while_every_write_is_refused_no_listing_is_held_as_refused() {
    let skus = 3;
    let rig = rig(skus, "");
    rig.sim
        .market
        .set_fault(loadgen::webhook_sim::Fault::Status(403));
    post_ok(
        &rig.server,
        (0..skus)
            .map(|i| event(&format!("c{i}"), &format!("A{i}"), "counted", 4))
            .collect(),
    );
    let refused = || rig.sim.market.calls_answered(403);
    assert!(
        eventually(WAIT, || refused() >= 4),
        "{:?}",
        rig.sim.market.calls()
    );
    assert_eq!(
        rig.server
            .metric("lockstep_push_items_refused_total{channel=\"amazon\"}"),
        0.0
    );
    rig.sim.market.set_fault(loadgen::webhook_sim::Fault::None);
    assert!(
        all_come_to(&rig, 0..skus, 4),
        "{:?}",
        rig.sim.market.calls()
    );
}

#[test]
fn an_order_refused_for_good_is_left_out_and_a_forbidden_one_set_aside() {
    let rig = rig(2, "poll_interval_s = 1");
    // A pass a second for some ten seconds: more listings than getOrders' default burst.
    rig.sim.set_orders_rate(20.0, 5.0);
    a_refused_order_is_left_out_and_a_forbidden_one_set_aside(
        &rig.server,
        &rig.sim.market,
        "amazon",
        ("A0", "A1"),
        &|sku, qty| {
            rig.sim.place_order(&[(sku, qty)]);
        },
    );
}

/// An order whose items Amazon keeps failing to give (a 500 for it alone) is set aside;
/// the poll reads on past it, keeps it across a kill -9 and holds it once Amazon gives it.
#[test]
fn an_order_whose_items_keep_failing_is_set_aside_and_held_once_amazon_gives_them() {
    let rig = rig(2, "poll_interval_s = 1");
    rig.sim.set_orders_rate(20.0, 5.0);
    // Two or three getOrderItems calls a pass for half a minute: more than the default
    // burst, and a throttled read would be set aside for its 429, not the 500.
    rig.sim.set_order_items_rate(50.0, 10.0);
    a_failing_order_is_set_aside_and_held_once_it_mends(
        rig,
        "amazon",
        |sim| &sim.market,
        ("A0", "A1"),
        |sim, sku, qty| {
            sim.place_order(&[(sku, qty)]);
        },
        500,
    );
}

/// An order whose items Amazon refused is recorded, and not kept as read: when a later
/// pass finds Amazon giving them (the order itself unchanged), its units are held. (A
/// refusal kept for the order's version would have held nothing until the order changed
/// again, by then perhaps shipped.)
#[test]
fn an_order_whose_items_were_refused_is_held_once_amazon_gives_them() {
    let rig = rig(1, "poll_interval_s = 1");
    rig.sim.set_orders_rate(20.0, 5.0);
    counted_and_left_to_the_poll(&rig.server, &rig.sim.market, &["A0"]);
    rig.sim
        .market
        .shop()
        .refused_orders
        .insert("A0".into(), 400);
    rig.sim.place_order(&[("A0", 2)]);
    assert!(
        eventually(WAIT, || refusal_recorded(&rig.server, "amazon", 400)),
        "{:?}",
        rig.server.audit_all()
    );
    assert_eq!(rig.server.stock("A0"), Some((10, 0, 10)));
    rig.sim.market.shop().refused_orders.clear();
    assert!(
        eventually(WAIT, || rig.server.stock("A0") == Some((10, 2, 8))),
        "{:?}",
        rig.server.stock("A0")
    );
}

#[test]
fn an_order_that_cannot_be_read_is_left_out_and_the_poll_goes_on() {
    let rig = rig(2, "poll_interval_s = 1");
    an_unreadable_order_does_not_stop_the_poll(
        &rig.server,
        &rig.sim.market,
        "amazon",
        ("A0", "A1"),
        &|sku, qty| {
            rig.sim.place_order(&[(sku, qty)]);
        },
    );
}

/// An order Amazon fulfills from its own warehouses (FBA: `AFN`) takes nothing from the
/// seller's stock, by its notification or by the poll, while the seller's own (`MFN`)
/// orders are held as ever. Every order was taken before, so an FBA sale of a mapped
/// seller SKU lowered what every channel shows of the seller's own stock.
#[test]
fn an_order_fulfilled_by_amazon_takes_nothing_from_the_seller_s_stock() {
    let rig = rig(2, "poll_interval_s = 1");
    count_all(&rig, 0..2, 10);
    // By notification.
    let fba = rig.sim.place_fba_order(&[("A0", 3)]);
    rig.sim.place_order(&[("A1", 2)]);
    assert!(eventually(WAIT, || rig.server.stock("A1") == Some((10, 2, 8))));
    rig.sim.advance(&fba, Stage::Shipped);
    // By the poll alone, once it has listed them all.
    rig.sim.market.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    rig.sim.place_fba_order(&[("A0", 4)]);
    rig.sim.place_order(&[("A1", 1)]);
    assert!(
        eventually(WAIT, || rig.server.stock("A1") == Some((10, 3, 7))),
        "{:?}",
        rig.server.stock("A1")
    );
    let polls = rig.sim.market.order_polls();
    assert!(eventually(WAIT, || rig.sim.market.order_polls() >= polls + 2));
    assert_eq!(
        rig.server.stock("A0"),
        Some((10, 0, 10)),
        "{:?}",
        audit_of(&rig.server, "A0")
    );
    assert!(
        audit_of(&rig.server, "A0")
            .iter()
            .all(|r| !r["kind"].as_str().unwrap_or_default().starts_with("order_")),
        "{:?}",
        audit_of(&rig.server, "A0")
    );
}
