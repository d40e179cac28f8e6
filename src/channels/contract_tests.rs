//! The documentation as a third party: the fixtures of `tests/fixtures/<kind>/` (each
//! written from the vendor's documentation, its page named in that folder's SOURCES.md)
//! fed to the adapter's readers (`inbound`, `push_reply`, `read_reply`, each kind's
//! order reader), signed as the channel signs. `tests/contract.rs` holds the simulators
//! to the same fixtures (and to the few only a simulator answers with).

use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use super::{build, ChannelAdapter, PushItem, PushReply};
use crate::clock::now_micros;
use crate::config::{CatalogRow, Config};
use crate::core::event::{Event, EventKind};

/// The channel blocks the readers are opened with.
const AMAZON: &str = "[[channels]]\nname = \"az\"\nkind = \"amazon\"\nbase_url = \"https://sp.example\"\nclient_id = \"i\"\nclient_secret = \"s\"\nrefresh_token = \"r\"\nseller_id = \"A\"\nmarketplace_id = \"M\"\nauth_header = \"x-key: v\"\nsqs_queue_url = \"https://sqs.us-east-1.amazonaws.com/1/q\"\naws_access_key_id = \"AK\"\naws_secret_access_key = \"SK\"\n";
const BIGCOMMERCE: &str = "[[channels]]\nname = \"bc\"\nkind = \"bigcommerce\"\nbase_url = \"https://api.bigcommerce.example\"\nstore_hash = \"abc123\"\naccess_token = \"t\"\nwebhook_secret = \"client-secret\"\n";
const EBAY: &str = "[[channels]]\nname = \"ebay\"\nkind = \"ebay\"\nbase_url = \"https://api.ebay.example\"\nclient_id = \"i\"\nclient_secret = \"s\"\nrefresh_token = \"r\"\n";
const ETSY: &str = "[[channels]]\nname = \"etsy\"\nkind = \"etsy\"\nbase_url = \"https://e.example\"\nwebhook_secret = \"whsec_ZXRzeS1zaWduaW5nLXNlY3JldC1zaW0=\"\nclient_id = \"k\"\nshared_secret = \"s\"\nrefresh_token = \"r\"\nshop_id = \"31415926\"\n";
const SHOPIFY: &str = "[[channels]]\nname = \"shop\"\nkind = \"shopify\"\nbase_url = \"https://s.example\"\napi_version = \"2026-04\"\nwebhook_secret = \"secret\"\naccess_token = \"t\"\nlocation_id = \"gid://shopify/Location/1\"\n";
const TIKTOK: &str = "[[channels]]\nname = \"tt\"\nkind = \"tiktok\"\nbase_url = \"https://t.example\"\napp_key = \"key\"\napp_secret = \"secret\"\nrefresh_token = \"r\"\nshop_cipher = \"c\"\n";
const WALMART: &str = "[[channels]]\nname = \"wm\"\nkind = \"walmart\"\nbase_url = \"https://m.example\"\nclient_id = \"i\"\nclient_secret = \"api\"\nwebhook_secret = \"hook\"\nauth_header = \"wm-sig\"\n";
const WALMART_POLL: &str = "[[channels]]\nname = \"wm\"\nkind = \"walmart\"\nbase_url = \"https://m.example\"\nclient_id = \"i\"\nclient_secret = \"api\"\n";
const WOOCOMMERCE: &str = "[[channels]]\nname = \"woo\"\nkind = \"woocommerce\"\nbase_url = \"https://w.example\"\nwebhook_secret = \"secret\"\nconsumer_key = \"ck\"\nconsumer_secret = \"cs\"\n";

fn fixture(path: &str) -> Vec<u8> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// A checked channel block and its catalog rows `(sku, item_id)`.
fn channel_and_rows(block: &str, rows: &[(&str, &str)]) -> (Config, Vec<CatalogRow>) {
    let config: Config = toml::from_str(block).expect("a valid block");
    config.validate().expect("a valid config");
    let name = config.channels[0].name.clone();
    let rows = rows
        .iter()
        .map(|(sku, id)| CatalogRow {
            sku: sku.to_string(),
            channel: name.clone(),
            item_id: id.to_string(),
            location_id: None,
        })
        .collect();
    (config, rows)
}

/// The adapter of one channel block, its catalog rows `(sku, item_id)`.
fn adapter(block: &str, rows: &[(&str, &str)]) -> std::sync::Arc<dyn ChannelAdapter> {
    let (config, rows) = channel_and_rows(block, rows);
    let id = config
        .registry()
        .id_of(&config.channels[0].name)
        .expect("its id");
    build(&config, &rows, &std::env::temp_dir()).expect("a valid channel")[id].clone()
}

/// The concrete adapter of kind `K` of a channel `block`, its catalog rows `(sku,
/// item_id)`, for the readers a trait does not reach (each kind's order reader).
fn concrete<K: super::kind::Kind>(block: &str, rows: &[(&str, &str)]) -> K {
    let (config, rows) = channel_and_rows(block, rows);
    let channel = &config.channels[0];
    let catalog = super::Catalog::of(&channel.name, &rows);
    super::kind::open::<K>(channel, catalog, &std::env::temp_dir()).expect("a valid channel")
}

fn headers(pairs: &[(&str, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn placed(events: &[Event]) -> Vec<(String, i64)> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::OrderPlaced)
        .map(|e| (e.sku.clone(), e.qty))
        .collect()
}

/// Whether no event is judged by its origin (`payload::stamp_origins`): those of a
/// line still open never are.
fn unjudged(events: &[Event]) -> bool {
    events.iter().all(|e| e.origin.is_none())
}

fn item(sku: &str, quantity: i64) -> PushItem {
    PushItem {
        sku: sku.into(),
        quantity,
        expected: None,
        caused_at: 0,
        repair: false,
    }
}

#[test]
fn walmart_order_events_in_both_documented_shapes() {
    let walmart = adapter(WALMART, &[("M0", "WM-0")]);
    for (file, qty) in [
        ("walmart/order_updates.json", 2),
        ("walmart/po_created.json", 3),
    ] {
        let body = fixture(file);
        let sig = super::body_hmac::sign(b"hook", &body);
        let events = walmart
            .inbound(&headers(&[("wm-sig", sig)]), &body, now_micros())
            .unwrap_or_else(|e| panic!("{file}: {e:?}"))
            .carried();
        assert_eq!(placed(&events), vec![("M0".to_string(), qty)], "{file}");
        assert!(unjudged(&events), "{file}: an open line");
    }
}

/// The orders API's nested order (a line shipped in part and cancelled in part) and the
/// feed's status page, read as the adapter reads them.
#[test]
fn walmart_orders_reply_and_feed_status() {
    let walmart: super::walmart::Walmart = concrete(WALMART_POLL, &[("M1", "WM-SKU-1")]);
    let reply: Value = serde_json::from_slice(&fixture("walmart/orders.json")).unwrap();
    let order = &reply["list"]["elements"]["order"][0];
    let (events, newest) = walmart.order_events(order, now_micros());
    assert_eq!(
        events
            .iter()
            .map(|e| (e.sku.as_str(), e.kind, e.qty))
            .collect::<Vec<_>>(),
        [
            ("M1", EventKind::OrderPlaced, 3),
            ("M1", EventKind::OrderShippedTotal, 2),
            ("M1", EventKind::OrderReleasedTotal, 1)
        ]
    );
    assert_eq!(newest, Some(1_730_505_600_000 * 1_000 + 999));
    assert!(reply["list"]["meta"]["nextCursor"].is_string());
    // Walmart's US overview spells the status "Canceled": read as the spec's "Cancelled".
    let text = serde_json::to_string(order).unwrap();
    assert!(text.contains("\"Cancelled\""));
    let spelled: Value =
        serde_json::from_str(&text.replace("\"Cancelled\"", "\"Canceled\"")).unwrap();
    let (again, _) = walmart.order_events(&spelled, now_micros());
    assert_eq!(
        again.iter().map(|e| (e.kind, e.qty)).collect::<Vec<_>>(),
        events.iter().map(|e| (e.kind, e.qty)).collect::<Vec<_>>(),
        "released alike"
    );

    let status: Value = serde_json::from_slice(&fixture("walmart/feed_status.json")).unwrap();
    match super::walmart_feed::read_status(&status) {
        super::walmart_feed::FeedStatus::Processed { items, received } => {
            assert_eq!(received, 2);
            assert_eq!(
                items[0],
                (
                    "WM-SKU-1".to_string(),
                    super::walmart_feed::ItemStatus::Applied
                )
            );
            let (sku, refused) = &items[1];
            assert_eq!(sku, "WM-SKU-2");
            assert!(
                matches!(refused, super::walmart_feed::ItemStatus::Refused(why) if why.contains("SKU not found")),
                "{refused:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The single-item answer shows the amount sent: the push is acknowledged.
    let reply = walmart.push_reply(
        200,
        &HeaderMap::new(),
        &fixture("walmart/inventory.json"),
        &[item("M1", 7)],
    );
    assert!(
        matches!(reply, PushReply::Accepted { ref acked, .. } if acked == &vec![0]),
        "{reply:?}"
    );
    let submitted: Value = serde_json::from_slice(&fixture("walmart/feed_submitted.json")).unwrap();
    assert!(submitted["feedId"]
        .as_str()
        .is_some_and(|id| id.contains('@')));
}

#[test]
fn amazon_order_change_from_the_queue_and_quantity_change_from_eventbridge() {
    let amazon = adapter(AMAZON, &[("A0", "AMZ-0")]);
    let queue = amazon.order_queue().expect("an SQS queue");
    let body = String::from_utf8(fixture("amazon/order_change.json")).unwrap();
    let taken = queue.events(&body, now_micros()).unwrap();
    assert_eq!(placed(&taken.events), vec![("A0".to_string(), 2)]);
    assert!(unjudged(&taken.events), "an open line");
    assert!(taken.notification.is_some(), "NotificationId deduplicates");
    // The ReceiveMessage answer's message fields are the ones the reader takes.
    let receive: Value = serde_json::from_slice(&fixture("amazon/receive_message.json")).unwrap();
    for field in ["MessageId", "ReceiptHandle", "Body", "MD5OfBody"] {
        assert!(receive["Messages"][0][field].is_string(), "{field}");
    }
    let body = fixture("amazon/quantity_change.json");
    let events = amazon
        .inbound(&headers(&[("x-key", "v".into())]), &body, now_micros())
        .unwrap()
        .carried();
    assert_eq!(
        events.iter().map(|e| (e.kind, e.qty)).collect::<Vec<_>>(),
        vec![(EventKind::Level, 7)]
    );
}

#[test]
fn etsy_order_paid_verifies_and_the_listing_inventory_reads() {
    let etsy = adapter(ETSY, &[("Y0", "4000/700")]);
    let body = fixture("etsy/order_paid.json");
    let key = super::standard_webhooks::Key::lenient("whsec_ZXRzeS1zaWduaW5nLXNlY3JldC1zaW0=");
    let ts = now_micros() / 1_000_000;
    let sig = key.sign("msg_1", ts, &body);
    let hook = headers(&[
        ("webhook-id", "msg_1".into()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sig),
    ]);
    etsy.inbound(&hook, &body, now_micros()).expect("verified");
    let levels = etsy
        .read_reply(200, &fixture("etsy/listing_inventory.json"))
        .unwrap();
    assert_eq!(levels, vec![("Y0".to_string(), Some(3))]);
    let listing: Value = serde_json::from_slice(&fixture("etsy/listing.json")).unwrap();
    assert_eq!(listing["state"], "active");
}

#[test]
fn ebay_orders_and_the_per_item_and_per_offer_answers() {
    let ebay = adapter(EBAY, &[("E0", "1100/5000")]);
    let poll: super::ebay::Ebay = concrete(EBAY, &[("E0", "1100/5000")]);
    let orders: Value = serde_json::from_slice(&fixture("ebay/orders.json")).unwrap();
    let events = poll
        .order_events(&orders["orders"][0], None, now_micros())
        .unwrap();
    assert_eq!(placed(&events), vec![("E0".to_string(), 2)]);
    assert!(unjudged(&events), "an open line");
    let reply = ebay.push_reply(
        200,
        &HeaderMap::new(),
        &fixture("ebay/bulk_update_price_quantity.json"),
        &[item("E0", 4)],
    );
    assert_eq!(
        reply,
        PushReply::Accepted {
            acked: vec![0],
            wait: None
        }
    );
    // A bulk read: E0 read, E9 unknown to eBay (not listed).
    let levels = ebay
        .read_reply(207, &fixture("ebay/bulk_get_inventory_item.json"))
        .unwrap();
    assert_eq!(
        levels,
        vec![("E0".to_string(), Some(4)), ("E9".to_string(), None)]
    );
}

#[test]
fn tiktok_notification_verifies_and_the_token_grant_reads() {
    let tiktok = adapter(TIKTOK, &[("T0", "170/80")]);
    let body = fixture("tiktok/order_status_change.json");
    let sig = super::body_hmac::hex(&super::body_hmac::mac(b"secret", &[b"key", &body]));
    tiktok
        .inbound(&headers(&[("authorization", sig)]), &body, now_micros())
        .expect("verified");
    let grant: Value = serde_json::from_slice(&fixture("tiktok/token_refresh.json")).unwrap();
    let read = super::tiktok::read_grant(&grant).unwrap();
    assert_eq!(
        (read.access_token.as_str(), read.access_expires_at),
        ("ROW_abc", 1_765_188_943)
    );
    assert_eq!(read.refresh_token, "ROW_r_def");

    // An order partly shipped and partly cancelled: one unit per line item, each by its
    // own display_status.
    let tiktok: super::tiktok::TikTok = concrete(
        TIKTOK,
        &[("TOTE", "1729587769570496786/1729587769570627858")],
    );
    let detail: Value = serde_json::from_slice(&fixture("tiktok/order_detail.json")).unwrap();
    let events = tiktok
        .order_events(&detail["data"]["orders"][0], now_micros())
        .unwrap();
    // The unit in transit is the one closed line: its placement and shipment carry the
    // order's `create_time` (at its second's end) as their origin.
    let created = 1_701_388_800 * 1_000_000 + 999_999;
    let judged: Vec<(EventKind, Option<i64>)> = events
        .iter()
        .filter(|e| e.origin.is_some())
        .map(|e| (e.kind, e.origin))
        .collect();
    assert_eq!(
        judged,
        [
            (EventKind::OrderPlaced, Some(created)),
            (EventKind::OrderShipped, Some(created))
        ]
    );
    let mut facts: Vec<(EventKind, i64)> = events.iter().map(|e| (e.kind, e.qty)).collect();
    facts.sort_by_key(|(k, _)| k.as_str());
    assert_eq!(
        facts,
        [
            (EventKind::OrderCancelled, 1),
            (EventKind::OrderPlaced, 1),
            (EventKind::OrderPlaced, 1),
            (EventKind::OrderShipped, 1)
        ]
    );
    assert!(events.iter().all(|e| e.sku == "TOTE"), "{events:?}");

    // A line status not known here (`TO_SHIP`, in the page's own sample; or any new one)
    // is read as the order's, or held as placed: it once dropped the unit unseen.
    let mut odd = detail["data"]["orders"][0].clone();
    odd["line_items"][1]["display_status"] = json!("TO_SHIP");
    odd["line_items"][2]["display_status"] = json!("SOMETHING_NEW");
    odd["status"] = json!("SOMETHING_ELSE");
    let kinds: Vec<EventKind> = tiktok
        .order_events(&odd, now_micros())
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::OrderPlaced)
            .count(),
        3,
        "{kinds:?}"
    );
    // A line status not known, on an order whose status is: the order's is taken.
    odd["status"] = json!("IN_TRANSIT");
    let shipped = tiktok.order_events(&odd, now_micros()).unwrap();
    let shipped = shipped
        .iter()
        .filter(|e| e.kind == EventKind::OrderShipped)
        .count();
    assert_eq!(shipped, 2, "the first line's and the third's");
}

#[test]
fn bigcommerce_hook_verifies_and_inventory_items_read() {
    let bc = adapter(BIGCOMMERCE, &[("B0", "30000")]);
    let body = fixture("bigcommerce/order_created.json");
    let key = super::standard_webhooks::Key::raw("client-secret");
    let ts = now_micros() / 1_000_000;
    let hook = headers(&[
        ("webhook-id", "wh_1".into()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", key.sign("wh_1", ts, &body)),
    ]);
    bc.inbound(&hook, &body, now_micros()).expect("verified");
    let concrete: super::bigcommerce::BigCommerce = concrete(BIGCOMMERCE, &[("B0", "30000")]);
    let order: Value = serde_json::from_slice(&fixture("bigcommerce/order.json")).unwrap();
    let products: Value =
        serde_json::from_slice(&fixture("bigcommerce/order_products.json")).unwrap();
    let events = concrete
        .order_events(&order, super::payload::list(&products), now_micros())
        .unwrap();
    assert!(unjudged(&events), "an open line: 2 of 5 shipped");
    assert_eq!(
        events.iter().map(|e| (e.kind, e.qty)).collect::<Vec<_>>(),
        [
            (EventKind::OrderPlaced, 5),
            (EventKind::OrderPlacedTotal, 5),
            (EventKind::OrderShippedTotal, 2)
        ]
    );
    let levels = bc
        .read_reply(200, &fixture("bigcommerce/inventory_items.json"))
        .unwrap();
    assert_eq!(levels, vec![("B0".to_string(), Some(4))]);
}

#[test]
fn shopify_order_and_set_answer() {
    let shop = adapter(SHOPIFY, &[("S0", "100")]);
    let body = fixture("shopify/orders_create.json");
    let hook = headers(&[
        (
            "x-shopify-hmac-sha256",
            super::body_hmac::sign(b"secret", &body),
        ),
        ("x-shopify-topic", "orders/create".into()),
    ]);
    let events = shop.inbound(&hook, &body, now_micros()).unwrap().carried();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].kind, events[0].qty), (EventKind::OrderPlaced, 1));
    // Partly fulfilled, one unit edited out and one cancelled by a refund.
    let body = fixture("shopify/orders_updated.json");
    let hook = headers(&[
        (
            "x-shopify-hmac-sha256",
            super::body_hmac::sign(b"secret", &body),
        ),
        ("x-shopify-topic", "orders/updated".into()),
    ]);
    let events = shop.inbound(&hook, &body, now_micros()).unwrap().carried();
    let facts: Vec<(EventKind, i64)> = events.iter().map(|e| (e.kind, e.qty)).collect();
    assert_eq!(
        facts,
        [
            (EventKind::OrderPlaced, 5),
            (EventKind::OrderShippedTotal, 2),
            (EventKind::OrderReleasedTotal, 2)
        ]
    );
    assert!(unjudged(&events), "an open line: 1 of 5 left");
    let body = fixture("shopify/refunds_create.json");
    let hook = headers(&[
        (
            "x-shopify-hmac-sha256",
            super::body_hmac::sign(b"secret", &body),
        ),
        ("x-shopify-topic", "refunds/create".into()),
    ]);
    let events = shop.inbound(&hook, &body, now_micros()).unwrap().carried();
    assert_eq!(
        events.iter().map(|e| (e.kind, e.qty)).collect::<Vec<_>>(),
        [(EventKind::Returned, 1)]
    );
    // A return's origin is the refund's own time.
    let refund: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        events[0].origin,
        crate::clock::parse_rfc3339(refund["created_at"].as_str().unwrap())
    );
    let reply = shop.push_reply(
        200,
        &HeaderMap::new(),
        &fixture("shopify/inventory_set_quantities.json"),
        &[item("S0", 4)],
    );
    assert!(
        matches!(reply, PushReply::Accepted { ref acked, .. } if acked == &vec![0]),
        "{reply:?}"
    );
}

#[test]
fn woocommerce_an_order_dated_far_ahead_does_not_make_its_later_updates_stale() {
    let woo = adapter(WOOCOMMERCE, &[("W0", "93")]);
    let send = |order: &Value, now: i64| {
        let body = serde_json::to_vec(order).unwrap();
        let hook = headers(&[
            (
                "x-wc-webhook-signature",
                super::body_hmac::sign(b"secret", &body),
            ),
            ("x-wc-webhook-topic", "order.updated".into()),
            ("x-wc-webhook-source", "https://w.example/".into()),
        ]);
        woo.inbound(&hook, &body, now).unwrap().carried()
    };
    let now = now_micros();
    let mut order: Value =
        serde_json::from_slice(&fixture("woocommerce/order_created.json")).unwrap();
    order["date_modified_gmt"] = serde_json::json!("2100-01-01T00:00:00");
    assert_eq!(placed(&send(&order, now)), vec![("W0".to_string(), 2)]);
    // Two hours on, the order is cancelled: its update is not older than year 2100's.
    let later = now + 2 * 3_600 * 1_000_000;
    order["status"] = serde_json::json!("cancelled");
    order["date_modified_gmt"] = serde_json::json!(crate::clock::format_rfc3339(later));
    let events = send(&order, later);
    assert!(
        events.iter().any(|e| e.kind == EventKind::OrderCancelled),
        "{events:?}"
    );
}

#[test]
fn woocommerce_order_created() {
    let woo = adapter(WOOCOMMERCE, &[("W0", "93")]);
    let body = fixture("woocommerce/order_created.json");
    let hook = headers(&[
        (
            "x-wc-webhook-signature",
            super::body_hmac::sign(b"secret", &body),
        ),
        ("x-wc-webhook-topic", "order.created".into()),
        ("x-wc-webhook-source", "https://w.example/".into()),
    ]);
    let events = woo.inbound(&hook, &body, now_micros()).unwrap().carried();
    assert_eq!(placed(&events), vec![("W0".to_string(), 2)]);
    let body = fixture("woocommerce/order_partially_refunded.json");
    let hook = headers(&[
        (
            "x-wc-webhook-signature",
            super::body_hmac::sign(b"secret", &body),
        ),
        ("x-wc-webhook-topic", "order.updated".into()),
        ("x-wc-webhook-source", "https://w.example/".into()),
    ]);
    let events = woo.inbound(&hook, &body, now_micros()).unwrap().carried();
    assert_eq!(
        events.iter().map(|e| (e.kind, e.qty)).collect::<Vec<_>>(),
        [
            (EventKind::OrderPlaced, 5),
            (EventKind::OrderPlacedTotal, 5),
            (EventKind::OrderReleasedTotal, 2)
        ]
    );
    assert!(unjudged(&events), "an open line: 3 of 5 left");
}

/// The `webhook` kind's stock read is our own format: an item naming `available` twice
/// is refused, not read as whichever came last.
#[test]
fn a_webhook_read_reply_naming_a_level_twice_is_refused() {
    let webhook = adapter(
        "[[channels]]\nname = \"erp\"\nkind = \"webhook\"\nbase_url = \"http://127.0.0.1:9/stock\"\nwebhook_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        &[],
    );
    let once = br#"{"items": [{"sku": "A", "available": 1}]}"#;
    assert_eq!(
        webhook.read_reply(200, once).unwrap(),
        vec![("A".to_string(), Some(1))]
    );
    let twice = br#"{"items": [{"sku": "A", "available": 1, "available": 100}]}"#;
    let error = webhook.read_reply(200, twice).unwrap_err();
    assert!(error.contains("appears twice"), "{error}");
}

/// `lines` (an array) with two copies of its first line before it: one without its id
/// (`id_field`), one whose quantity (at `qty_path`) is `"2.5"` under another id.
fn spoiled(lines: &Value, id_field: &str, qty_path: &[&str]) -> Value {
    let first = lines[0].clone();
    let mut no_id = first.clone();
    no_id.as_object_mut().unwrap().remove(id_field);
    let mut bad_qty = first.clone();
    bad_qty[id_field] = json!("bad-qty");
    let mut at = &mut bad_qty;
    for field in &qty_path[..qty_path.len() - 1] {
        at = &mut at[*field];
    }
    at[qty_path[qty_path.len() - 1]] = json!("2.5");
    let mut all = vec![no_id, bad_qty];
    all.extend(lines.as_array().unwrap().iter().cloned());
    Value::Array(all)
}

/// Asserts what an order reader made of a `spoiled` order: the readable line's placement
/// (`sku`, `qty`), and one `unmapped` record for each spoiled line naming what is wrong,
/// keyed so that a redelivery is a duplicate.
fn assert_spoiled_lines_recorded(
    events: &[Event],
    (sku, qty): (&str, i64),
    id_field: &str,
    what: &str,
) {
    assert_eq!(
        placed(events),
        vec![(sku.to_string(), qty)],
        "{what}: {events:?}"
    );
    let records: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.kind == EventKind::Unmapped)
        .map(|e| (e.sku.as_str(), e.key.as_str()))
        .collect();
    assert_eq!(records.len(), 2, "{what}: {records:?}");
    let (no_id, no_id_key) = records[0];
    assert!(
        no_id.contains(&format!("line #1 has no `{id_field}`")),
        "{what}: {no_id}"
    );
    assert!(no_id_key.ends_with("/#1/unreadable"), "{what}: {no_id_key}");
    let (bad_qty, bad_qty_key) = records[1];
    assert!(
        bad_qty.contains("line bad-qty has") && bad_qty.contains("\"2.5\", not a whole number"),
        "{what}: {bad_qty}"
    );
    assert!(
        bad_qty_key.ends_with("/bad-qty/unreadable"),
        "{what}: {bad_qty_key}"
    );
    for event in events {
        assert!(
            super::super::core::event::problem(event).is_none(),
            "{what}: {event:?}"
        );
    }
}

/// Every kind's order reader, webhook and poll: a line without its id or with a quantity
/// that is no whole number is recorded as `unmapped`, naming the order, the line and what
/// is wrong, and the order's other lines are applied. A line without an id once refused
/// the whole webhook or left the whole order out of the poll (its other units unheld), and
/// a bad quantity was dropped without a word.
#[test]
fn a_line_that_cannot_be_read_is_recorded_and_the_order_s_other_lines_applied() {
    let now = now_micros();
    // Shopify's `orders/create`.
    let shop = adapter(SHOPIFY, &[("S0", "100")]);
    let mut order: Value = serde_json::from_slice(&fixture("shopify/orders_create.json")).unwrap();
    order["line_items"] = spoiled(&order["line_items"], "id", &["quantity"]);
    let body = order.to_string().into_bytes();
    let hook = headers(&[
        (
            "x-shopify-hmac-sha256",
            super::body_hmac::sign(b"secret", &body),
        ),
        ("x-shopify-topic", "orders/create".into()),
    ]);
    let events = shop.inbound(&hook, &body, now).unwrap().carried();
    let sku = events
        .iter()
        .find(|e| e.kind == EventKind::OrderPlaced)
        .map(|e| e.sku.clone());
    assert_spoiled_lines_recorded(&events, (sku.as_deref().unwrap_or("?"), 1), "id", "shopify");
    // A refund's line that cannot be read, in the order's own payload (`orders/updated`,
    // the poll): recorded as `refunds/create` records it, under the same key.
    let mut order: Value = serde_json::from_slice(&fixture("shopify/orders_updated.json")).unwrap();
    let mut refund: Value =
        serde_json::from_slice(&fixture("shopify/refunds_create.json")).unwrap();
    refund["refund_line_items"][0]["quantity"] = json!("2.5");
    order["refunds"].as_array_mut().unwrap().push(refund);
    let body = order.to_string().into_bytes();
    let hook = headers(&[
        (
            "x-shopify-hmac-sha256",
            super::body_hmac::sign(b"secret", &body),
        ),
        ("x-shopify-topic", "orders/updated".into()),
    ]);
    let events = shop.inbound(&hook, &body, now).unwrap().carried();
    let records: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == EventKind::Unmapped)
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(
        records,
        ["shop/refund/509562970/820982911946154508/866550311766439020/unreadable"],
        "{events:?}"
    );

    // WooCommerce's `order.created`.
    let woo = adapter(WOOCOMMERCE, &[("W0", "93")]);
    let mut order: Value =
        serde_json::from_slice(&fixture("woocommerce/order_created.json")).unwrap();
    order["line_items"] = spoiled(&order["line_items"], "id", &["quantity"]);
    let body = order.to_string().into_bytes();
    let hook = headers(&[
        (
            "x-wc-webhook-signature",
            super::body_hmac::sign(b"secret", &body),
        ),
        ("x-wc-webhook-topic", "order.created".into()),
        ("x-wc-webhook-source", "https://w.example/".into()),
    ]);
    let events = woo.inbound(&hook, &body, now).unwrap().carried();
    assert_spoiled_lines_recorded(&events, ("W0", 2), "id", "woocommerce");

    // BigCommerce: an order and its products, as the fetch and the poll read them.
    let bc: super::bigcommerce::BigCommerce = concrete(BIGCOMMERCE, &[("B0", "30000")]);
    let order: Value = serde_json::from_slice(&fixture("bigcommerce/order.json")).unwrap();
    let products: Value =
        serde_json::from_slice(&fixture("bigcommerce/order_products.json")).unwrap();
    let products = spoiled(&products, "id", &["quantity"]);
    let events = bc
        .order_events(&order, super::payload::list(&products), now)
        .unwrap();
    assert_spoiled_lines_recorded(&events, ("B0", 5), "id", "bigcommerce");
    // A line an edit emptied (BigCommerce keeps it at 0 units) has nothing to apply, and
    // is no line that cannot be read: no record.
    let mut emptied: Value =
        serde_json::from_slice(&fixture("bigcommerce/order_products.json")).unwrap();
    emptied[0]["quantity"] = json!(0);
    let events = bc
        .order_events(&order, super::payload::list(&emptied), now)
        .unwrap();
    assert!(events.is_empty(), "{events:?}");

    // eBay's getOrders.
    let ebay: super::ebay::Ebay = concrete(EBAY, &[("E0", "1100/5000")]);
    let orders: Value = serde_json::from_slice(&fixture("ebay/orders.json")).unwrap();
    let mut order = orders["orders"][0].clone();
    order["lineItems"] = spoiled(&order["lineItems"], "lineItemId", &["quantity"]);
    let events = ebay.order_events(&order, None, now).unwrap();
    assert_spoiled_lines_recorded(&events, ("E0", 2), "lineItemId", "ebay");

    // Etsy's receipt, as the notification's fetch and the poll read it.
    let etsy: super::etsy::Etsy = concrete(ETSY, &[("Y0", "4000/700")]);
    let receipt = json!({
        "receipt_id": 9001, "status": "paid", "is_paid": true, "is_shipped": false,
        "create_timestamp": 1_764_584_140, "updated_timestamp": 1_764_584_143,
        "transactions": spoiled(
            &json!([{"transaction_id": 77, "listing_id": 4000, "product_id": 700, "quantity": 3}]),
            "transaction_id",
            &["quantity"],
        ),
    });
    let events = etsy.receipt_events(&receipt, now).unwrap();
    assert_spoiled_lines_recorded(&events, ("Y0", 3), "transaction_id", "etsy");

    // Amazon's ORDER_CHANGE notification (its items; the poll's getOrderItems are read by
    // the same `order_item`, `QuantityOrdered` for `Quantity`).
    let amazon = adapter(AMAZON, &[("A0", "AMZ-0")]);
    let mut change: Value = serde_json::from_slice(&fixture("amazon/order_change.json")).unwrap();
    let items = &mut change["Payload"]["OrderChangeNotification"]["Summary"]["OrderItems"];
    *items = spoiled(items, "OrderItemId", &["Quantity"]);
    let taken = amazon
        .order_queue()
        .expect("an SQS queue")
        .events(&change.to_string(), now)
        .unwrap();
    assert_spoiled_lines_recorded(&taken.events, ("A0", 2), "OrderItemId", "amazon");

    // Walmart: the ORDER_UPDATES webhook, and the orders API's order the poll reads.
    let walmart = adapter(WALMART, &[("M0", "WM-0")]);
    let mut hook_body: Value =
        serde_json::from_slice(&fixture("walmart/order_updates.json")).unwrap();
    let lines = &mut hook_body["payload"]["order"]["orderLines"];
    *lines = spoiled(lines, "lineNumber", &["quantity", "measurementValue"]);
    let body = hook_body.to_string().into_bytes();
    let sig = super::body_hmac::sign(b"hook", &body);
    let events = walmart
        .inbound(&headers(&[("wm-sig", sig)]), &body, now)
        .unwrap()
        .carried();
    assert_spoiled_lines_recorded(&events, ("M0", 2), "lineNumber", "walmart webhook");
    let walmart: super::walmart::Walmart = concrete(WALMART_POLL, &[("M1", "WM-SKU-1")]);
    let reply: Value = serde_json::from_slice(&fixture("walmart/orders.json")).unwrap();
    let mut order = reply["list"]["elements"]["order"][0].clone();
    let lines = &mut order["orderLines"]["orderLine"];
    *lines = spoiled(lines, "lineNumber", &["orderLineQuantity", "amount"]);
    let (events, _) = walmart.order_events(&order, now);
    assert_spoiled_lines_recorded(&events, ("M1", 3), "lineNumber", "walmart poll");

    // TikTok: one unit a line item, so only its id can be missing.
    let tiktok: super::tiktok::TikTok = concrete(
        TIKTOK,
        &[("TOTE", "1729587769570496786/1729587769570627858")],
    );
    let detail: Value = serde_json::from_slice(&fixture("tiktok/order_detail.json")).unwrap();
    let mut order = detail["data"]["orders"][0].clone();
    // The first item, in transit, loses its id; the second is open, the third cancelled.
    order["line_items"][0].as_object_mut().unwrap().remove("id");
    let events = tiktok.order_events(&order, now).unwrap();
    let records: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == EventKind::Unmapped)
        .map(|e| e.sku.as_str())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].contains("line #1 has no `id`"), "{records:?}");
    let facts: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        facts,
        [
            EventKind::Unmapped,
            EventKind::OrderPlaced,
            EventKind::OrderCancelled
        ],
        "the other line items: {events:?}"
    );
}
