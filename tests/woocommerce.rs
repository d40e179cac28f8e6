//! The `woocommerce` kind against the simulated site: order statuses mapped to line
//! transitions, the creation ping, signatures and rotation, stale payloads dropped, a lost
//! delivery recovered by the order poll, batches split at 100 (products and variations),
//! and the echo of our own writes.

mod common;

use std::time::Duration;

use common::*;
use loadgen::sim::Habits;
use loadgen::woo_sim::{WooSim, BATCH_LIMIT};
use serde_json::{json, Value};

const SECRET: &str = "woo-webhook-secret";
const OLD_SECRET: &str = "woo-webhook-secret-before";
const WAIT: Duration = Duration::from_secs(20);

struct Rig {
    server: Server,
    woo: WooSim,
    _dir: tempfile::TempDir,
}

/// SKU `W{i}`: product `200 + i`; the last `variations` of them are variations of
/// product 199 (catalog id `199/{id}`).
fn rig_with(skus: usize, variations: usize, channel_extra: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let names: Vec<String> = (0..skus).map(|i| format!("W{i}")).collect();
    let parent = |i: usize| (i >= skus - variations).then_some(199u64);
    let products: Vec<(&str, u64, Option<u64>)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 200 + i as u64, parent(i)))
        .collect();
    let woo = WooSim::start(SECRET, WOO_KEY, WOO_SECRET, &products);
    let ids: Vec<String> = (0..skus)
        .map(|i| match parent(i) {
            Some(p) => format!("{p}/{}", 200 + i),
            None => format!("{}", 200 + i),
        })
        .collect();
    let rows: Vec<(&str, &str, &str)> = names
        .iter()
        .zip(&ids)
        .map(|(s, id)| (s.as_str(), "woo", id.as_str()))
        .collect();
    let config = woo_channel("woo", &woo.url(), SECRET, channel_extra) + &catalog(&data, &rows);
    let server = Server::start_with(&data, &config, None);
    woo.set_webhook_url(&server.url("/webhooks/woo"));
    Rig {
        server,
        woo,
        _dir: dir,
    }
}

fn rig(skus: usize) -> Rig {
    rig_with(skus, 0, "")
}

fn stock_all(rig: &Rig, skus: usize, on_hand: i64) {
    let events: Vec<Value> = (0..skus)
        .map(|i| event(&format!("count-W{i}"), &format!("W{i}"), "counted", on_hand))
        .collect();
    let (status, body) = rig.server.post_events(&json!({ "events": events }));
    assert_eq!(status, 200, "{body}");
    assert!(
        rig.woo
            .wait_for(WAIT, |l| (0..skus).all(|i| l[&format!("W{i}")] == on_hand))
            .is_some(),
        "the site never showed {on_hand}"
    );
}

fn stock(server: &Server, sku: &str) -> (i64, i64, i64) {
    server.stock(sku).unwrap()
}

/// Delivers `body` by hand as the site would, signed with `secret`.
fn deliver_signed(rig: &Rig, topic: &str, body: &Value, secret: &str) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let signature = loadgen::signing::body_signature(secret, &bytes);
    post_raw(
        &rig.server,
        "woo",
        &[
            ("x-wc-webhook-topic", topic),
            ("x-wc-webhook-signature", &signature),
            ("x-wc-webhook-delivery-id", "d1"),
        ],
        &bytes,
    )
}

#[test]
fn order_statuses_become_line_transitions() {
    let rig = rig(4);
    stock_all(&rig, 4, 10);
    // Processing: placed (a two-line order; its SKUs may sit on either shard).
    let order = rig.woo.place_order(&[("W0", 2), ("W1", 1)]);
    assert!(eventually(WAIT, || stock(&rig.server, "W0") == (10, 2, 8)
        && stock(&rig.server, "W1") == (10, 1, 9)));
    // Completed: shipped.
    rig.woo.set_status(order, "completed");
    let shipped = eventually(WAIT, || stock(&rig.server, "W0") == (8, 0, 8));
    assert!(
        shipped,
        "{:#?} {:?}",
        audit_of(&rig.server, "W0"),
        rig.woo.sender.sent()
    );
    // Refunded after completion: the status restocks nothing in WooCommerce, so the
    // units stay sold (they once came back, two phantom units for every channel to sell).
    rig.woo.set_status(order, "refunded");
    assert!(
        rig.woo.sender.wait_idle(WAIT),
        "the refund's delivery answered"
    );
    assert_eq!(rig.woo.sender.answers(None).last(), Some(&200));
    assert_eq!(stock(&rig.server, "W0"), (8, 0, 8));
    assert_eq!(stock(&rig.server, "W1"), (9, 0, 9));
    // Cancelled before shipping: released.
    let cancelled = rig.woo.place_order(&[("W2", 3)]);
    assert!(eventually(WAIT, || stock(&rig.server, "W2") == (10, 3, 7)));
    rig.woo.set_status(cancelled, "cancelled");
    assert!(eventually(WAIT, || stock(&rig.server, "W2") == (10, 0, 10)));
    // Refunded without ever completing: released, not returned.
    let refunded = rig.woo.place_order(&[("W3", 4)]);
    assert!(eventually(WAIT, || stock(&rig.server, "W3") == (10, 4, 6)));
    rig.woo.set_status(refunded, "refunded");
    assert!(eventually(WAIT, || stock(&rig.server, "W3") == (10, 0, 10)));
    assert!(rig
        .woo
        .wait_for(WAIT, |l| l["W0"] == 8
            && l["W1"] == 9
            && l["W2"] == 10
            && l["W3"] == 10)
        .is_some());
    // Keys come from (site, order, line, transition), not the Delivery-ID.
    let placed = audit_of(&rig.server, "W0")
        .into_iter()
        .find(|r| r["kind"] == "order_placed")
        .unwrap();
    let key = placed["idempotency_key"].as_str().unwrap();
    assert!(
        key.starts_with("woo/127.0.0.1:") && key.ends_with("/placed"),
        "{key}"
    );
}

/// A partial refund before shipping: restocked units are released at once (the line's
/// `_restock_refunded_items`), a refund without restock keeps its units held, and the
/// order completing ships only the units not put back.
#[test]
fn a_partial_refund_that_restocks_releases_its_units_at_once() {
    let rig = rig(1);
    stock_all(&rig, 1, 20);
    let order = rig.woo.place_order(&[("W0", 5)]);
    assert!(eventually(WAIT, || stock(&rig.server, "W0") == (20, 5, 15)));
    rig.woo.refund_units(order, 0, 2, true);
    assert!(
        eventually(WAIT, || stock(&rig.server, "W0") == (20, 3, 17)),
        "{:?} {:#?}",
        stock(&rig.server, "W0"),
        audit_of(&rig.server, "W0")
    );
    rig.woo.refund_units(order, 0, 1, false);
    rig.woo.refund_units(order, 0, 1, true);
    assert!(
        eventually(WAIT, || stock(&rig.server, "W0") == (20, 2, 18)),
        "{:?}",
        stock(&rig.server, "W0")
    );
    rig.woo.set_status(order, "completed");
    assert!(
        eventually(WAIT, || stock(&rig.server, "W0") == (18, 0, 18)),
        "{:?}",
        stock(&rig.server, "W0")
    );
    assert!(rig.woo.wait_for(WAIT, |l| l["W0"] == 18).is_some());
}

/// A seller raises a line's quantity on an order not yet shipped (the admin's order
/// items, which take the difference from the product's stock): the units added are held
/// from the edit's `order.updated` on, and completing the order ships the raised
/// quantity, once.
#[test]
fn an_edit_raising_a_line_holds_the_units_it_adds() {
    let rig = rig(1);
    stock_all(&rig, 1, 20);
    let order = rig.woo.place_order(&[("W0", 2)]);
    assert!(eventually(WAIT, || stock(&rig.server, "W0") == (20, 2, 18)));
    rig.woo.set_quantity(order, 0, 5);
    assert!(
        eventually(WAIT, || stock(&rig.server, "W0") == (20, 5, 15)),
        "{:?} {:#?}",
        stock(&rig.server, "W0"),
        audit_of(&rig.server, "W0")
    );
    rig.woo.set_status(order, "completed");
    assert!(
        eventually(WAIT, || stock(&rig.server, "W0") == (15, 0, 15)),
        "{:?}",
        stock(&rig.server, "W0")
    );
    assert!(rig.woo.wait_for(WAIT, |l| l["W0"] == 15).is_some());
}

/// A product deleted on the site is refused inside a 200 answer (an `error` entry of the
/// batch's `update`): the other SKUs are written, and the refused one is named by
/// `GET /v1/channels` and the console for the operator to fix, while the channel, which
/// takes the others, stays `pushing` through the refused SKU's pushes alone.
#[test]
fn a_refused_sku_is_named_and_the_channel_taking_others_is_not_failing() {
    let rig = rig(3);
    stock_all(&rig, 3, 10);
    rig.woo.market.shop().unlist("W0");
    counts(&rig, 7, &["W0", "W1", "W2"]);
    assert!(rig
        .woo
        .wait_for(WAIT, |l| l["W1"] == 7 && l["W2"] == 7)
        .is_some());
    assert!(
        eventually(WAIT, || channel(&rig)["refused"] == json!(["W0"])),
        "{}",
        channel(&rig)
    );
    // W0 alone, pushed again after its 2 s and refused again, is W0's, not the channel's.
    std::thread::sleep(Duration::from_millis(3_500));
    assert_eq!(channel(&rig)["refused_skus"], 1, "{}", channel(&rig));
    let console = rig.server.text("/console/");
    assert!(
        console.contains("1 SKU the channel refused waits to be pushed again: W0"),
        "{console}"
    );
    assert!(console.contains("class=\"state pushing\""), "{console}");
}

/// A site whose every answer is a 200 refusing each SKU it was sent (every product gone)
/// shows failing on the console: an answer that took nothing showed it healthy.
#[test]
fn a_channel_refusing_every_sku_in_200_answers_shows_failing() {
    let rig = rig(2);
    rig.woo.market.shop().unlist("W0");
    rig.woo.market.shop().unlist("W1");
    counts(&rig, 5, &["W0", "W1"]);
    assert!(
        eventually(WAIT, || rig
            .server
            .text("/console/")
            .contains("class=\"state failing\"")),
        "{}",
        rig.server.text("/console/")
    );
    assert!(rig
        .server
        .text("/console/")
        .contains("took none of the SKUs"));
}

/// Counts `skus` at `n` through the API.
fn counts(rig: &Rig, n: i64, skus: &[&str]) {
    let events: Vec<Value> = skus
        .iter()
        .map(|s| event(&format!("count-{s}-{n}"), s, "counted", n))
        .collect();
    let (status, body) = rig.server.post_events(&json!({ "events": events }));
    assert_eq!(status, 200, "{body}");
}

/// The site's channel as `GET /v1/channels` gives it.
fn channel(rig: &Rig) -> Value {
    rig.server.first_channel()
}

#[test]
fn the_creation_ping_is_answered_200_and_applies_nothing() {
    let rig = rig(1);
    let before = rig.server.audit_all().len();
    assert_eq!(rig.woo.ping(&rig.server.url("/webhooks/woo")), 200);
    assert_eq!(rig.server.audit_all().len(), before);
}

#[test]
fn forged_missing_and_rotated_signatures() {
    let rig = rig_with(1, 0, &format!("previous_webhook_secret = \"{OLD_SECRET}\""));
    stock_all(&rig, 1, 10);
    assert!(eventually(WAIT, || audit_of(&rig.server, "W0")
        .iter()
        .any(|r| r["kind"] == "pushed")));
    let before = rig.server.audit_all().len();
    let order = json!({"id": 41, "status": "processing", "date_created_gmt": woo_minutes_ago(30),
        "date_modified_gmt": woo_minutes_ago(30), "line_items": [{"id": 1, "product_id": 200, "variation_id": 0, "sku": "W0", "quantity": 2}]});
    let (status, answer) = deliver_signed(&rig, "order.created", &order, "forged");
    assert_eq!(status, 401, "{answer}");
    let bytes = serde_json::to_vec(&order).unwrap();
    let (status, answer) = post_raw(
        &rig.server,
        "woo",
        &[("x-wc-webhook-topic", "order.created")],
        &bytes,
    );
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"], "missing_signature");
    assert_eq!(stock(&rig.server, "W0"), (10, 0, 10), "nothing applied");
    assert_eq!(rig.server.audit_all().len(), before, "nothing recorded");
    let (status, answer) = deliver_signed(&rig, "order.created", &order, OLD_SECRET);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(stock(&rig.server, "W0"), (10, 2, 8));
}

#[test]
fn a_payload_older_than_one_taken_is_dropped() {
    let rig = rig(1);
    stock_all(&rig, 1, 10);
    let order = |status: &str, modified: String| {
        json!({"id": 77, "status": status, "date_created_gmt": woo_minutes_ago(30),
            "date_modified_gmt": modified, "date_completed_gmt": null,
            "line_items": [{"id": 5, "product_id": 200, "variation_id": 0, "sku": "W0", "quantity": 3}]})
    };
    let (status, _) = deliver_signed(
        &rig,
        "order.updated",
        &order("processing", woo_minutes_ago(25)),
        SECRET,
    );
    assert_eq!(status, 200);
    assert_eq!(stock(&rig.server, "W0"), (10, 3, 7));
    // Built earlier, sent later: it says cancelled, but the site has moved on since.
    let (status, answer) = deliver_signed(
        &rig,
        "order.updated",
        &order("cancelled", woo_minutes_ago(29)),
        SECRET,
    );
    assert_eq!(status, 200, "never a failure for WooCommerce: {answer}");
    assert_eq!(answer["results"], json!([]), "{answer}");
    assert_eq!(
        stock(&rig.server, "W0"),
        (10, 3, 7),
        "the stale payload changed nothing"
    );
    // A newer one is taken.
    deliver_signed(
        &rig,
        "order.updated",
        &order("cancelled", woo_minutes_ago(24)),
        SECRET,
    );
    assert_eq!(stock(&rig.server, "W0"), (10, 0, 10));
}

#[test]
fn a_lost_delivery_is_recovered_by_the_order_poll() {
    let rig = rig_with(2, 0, "poll_interval_s = 1");
    stock_all(&rig, 2, 10);
    rig.woo.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    let polls = rig.woo.order_polls();
    rig.woo.place_order(&[("W0", 2), ("W1", 5)]);
    assert!(rig.woo.sender.wait_idle(WAIT));
    assert!(
        rig.woo.sender.sent().iter().any(|s| s.status == 0),
        "the delivery was lost"
    );
    assert!(
        eventually(WAIT, || stock(&rig.server, "W0") == (10, 2, 8)
            && stock(&rig.server, "W1") == (10, 5, 5)),
        "the poll found the order"
    );
    assert!(rig.woo.order_polls() > polls);
    let placed = audit_of(&rig.server, "W0")
        .into_iter()
        .filter(|r| r["kind"] == "order_placed")
        .count();
    // Later polls list the order again: duplicates, never applied twice.
    std::thread::sleep(Duration::from_millis(2_200));
    assert_eq!(stock(&rig.server, "W0"), (10, 2, 8));
    assert_eq!(placed, 1);
    let watermark =
        std::fs::read_to_string(rig.server.data_dir.join("poll-woo.watermark")).unwrap();
    assert!(watermark.trim().parse::<i64>().unwrap() > 0, "{watermark}");
}

/// The poll pages by modification time: an order the shop modifies while a pass reads
/// (staff complete it between two pages) goes to the end of the list, and paging by
/// number then skipped the order that slid up in its place, for good once the
/// watermark had passed it.
#[test]
fn an_order_modified_between_two_pages_of_a_pass_skips_no_other() {
    let rig = rig_with(1, 0, "poll_interval_s = 2");
    stock_all(&rig, 1, 1_000);
    rig.woo.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    // An outage: 150 one-unit orders over the last hour, none delivered, and the poll's
    // watermark from before it.
    let data = rig.server.data_dir.clone();
    let woo = &rig.woo;
    let server = kill9_and_restart_after(rig.server, || {
        for _ in 0..150 {
            woo.place_order(&[("W0", 1)]);
        }
        woo.spread_orders_back(3_600, 20);
        woo.touch_after_first_page();
        let before = loadgen::market::now_us() - 2 * 3_600 * 1_000_000;
        std::fs::write(data.join("poll-woo.watermark"), before.to_string()).unwrap();
    });
    assert!(
        eventually(WAIT, || stock(&server, "W0") == (1_000, 150, 850)),
        "every order counted: {:?}",
        stock(&server, "W0")
    );
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(stock(&server, "W0"), (1_000, 150, 850), "none twice");
}

/// One order dated far ahead (a shop's clock, or a hostile listing) does not carry the
/// poll's watermark past the orders that come after it.
#[test]
fn an_order_dated_in_the_future_does_not_move_the_poll_past_later_orders() {
    let rig = rig_with(2, 0, "poll_interval_s = 1");
    stock_all(&rig, 2, 10);
    rig.woo.set_habits(Habits {
        lose: 1.0,
        ..Habits::default()
    });
    let first = rig.woo.place_order(&[("W0", 1)]);
    let year_2100 = 4_102_444_800_000_000;
    rig.woo.set_order_modified(first, year_2100);
    assert!(eventually(WAIT, || stock(&rig.server, "W0") == (10, 1, 9)));
    // Two more passes: the future date has been listed and a watermark stored after it.
    let polls = rig.woo.order_polls();
    assert!(eventually(WAIT, || rig.woo.order_polls() >= polls + 2));
    rig.woo.place_order(&[("W1", 2)]);
    assert!(
        eventually(WAIT, || stock(&rig.server, "W1") == (10, 2, 8)),
        "a later order was found: {:?}",
        stock(&rig.server, "W1")
    );
    let watermark: i64 = std::fs::read_to_string(rig.server.data_dir.join("poll-woo.watermark"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(watermark < year_2100, "{watermark}");
}

#[test]
fn batches_are_split_at_100_and_variations_go_to_their_parent() {
    let skus = 230;
    let rig = rig_with(skus, 30, "");
    stock_all(&rig, skus, 6);
    let calls = rig.woo.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.items <= BATCH_LIMIT && c.status == 200),
        "{calls:?}"
    );
    let products: usize = calls
        .iter()
        .filter(|c| c.path == "/wp-json/wc/v3/products/batch")
        .map(|c| c.items)
        .sum();
    let variations: usize = calls
        .iter()
        .filter(|c| c.path == "/wp-json/wc/v3/products/199/variations/batch")
        .map(|c| c.items)
        .sum();
    assert_eq!((products, variations), (200, 30), "{calls:?}");
    assert!(calls.len() >= 3, "200 products need at least two calls");
}

#[test]
fn the_echo_of_our_own_write_changes_nothing_and_an_edit_is_drift() {
    let rig = rig(1);
    rig.woo.set_habits(Habits {
        echo: true,
        ..Habits::default()
    });
    stock_all(&rig, 1, 9);
    assert!(rig.woo.sender.wait_idle(WAIT));
    assert!(eventually(WAIT, || audit_of(&rig.server, "W0")
        .iter()
        .any(|r| r["kind"] == "level")));
    let levels: Vec<Value> = audit_of(&rig.server, "W0")
        .into_iter()
        .filter(|r| r["kind"] == "level")
        .collect();
    assert!(levels.iter().all(|r| r["outcome"] == "echo"), "{levels:?}");
    // A shop manager's edit is not explained by anything: drift (lockstep is the master).
    rig.woo.set_level("W0", 4);
    assert!(rig.woo.sender.wait_idle(WAIT));
    assert!(eventually(WAIT, || audit_of(&rig.server, "W0")
        .iter()
        .any(|r| r["kind"] == "level" && r["outcome"] == "drift")));
    assert_eq!(stock(&rig.server, "W0"), (9, 0, 9));
}

#[test]
fn reconciliation_reads_products_and_variations_and_lowers_an_excess() {
    let rig = rig_with(3, 1, "");
    stock_all(&rig, 3, 4);
    rig.woo.set_level("W0", 9);
    rig.woo.set_level("W2", 7);
    let (status, report) = reconcile(&rig.server, "woo");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["report"]["checked"], 3, "{report}");
    assert_eq!(
        report["report"]["lowered"], 2,
        "a product and a variation: {report}"
    );
    assert!(rig
        .woo
        .wait_for(WAIT, |l| l["W0"] == 4 && l["W2"] == 4)
        .is_some());
}

#[test]
fn the_simulated_site_refuses_more_than_100_items_as_woocommerce_does() {
    let rig = rig(1);
    let update: Vec<Value> = (0..101)
        .map(|i| json!({"id": 200 + i, "stock_quantity": 1}))
        .collect();
    let response = Server::client()
        .post(format!("{}/wp-json/wc/v3/products/batch", rig.woo.url()))
        .basic_auth(WOO_KEY, Some(WOO_SECRET))
        .json(&json!({ "update": update }))
        .send()
        .unwrap();
    let (status, body) = status_json(response);
    assert_eq!(status, 413);
    assert_eq!(body["code"], "woocommerce_rest_request_entity_too_large");
    let response = Server::client()
        .post(format!("{}/wp-json/wc/v3/products/batch", rig.woo.url()))
        .basic_auth(WOO_KEY, Some("wrong"))
        .json(&json!({"update": []}))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

/// A watermark file that is there but unreadable stops the poll with an error naming it:
/// resuming at "now" would skip every order placed while lockstep was down.
#[test]
fn an_unreadable_watermark_stops_the_poll_instead_of_skipping_orders() {
    let mut rig = rig_with(1, 0, "poll_interval_s = 1");
    stock_all(&rig, 1, 10);
    let path = rig.server.data_dir.join("poll-woo.watermark");
    assert!(eventually(WAIT, || path.exists()));
    rig.server = kill9_and_restart_after(rig.server, || std::fs::write(&path, "").unwrap());
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "",
        "not reset to now"
    );
    let log = rig.server.stderr_lines().join("\n");
    assert!(log.contains("does not hold a watermark"), "{log}");
}
