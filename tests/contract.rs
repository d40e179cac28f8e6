//! The simulators held to the documentation: what each simulator sends (its webhooks,
//! its queue messages) and answers (its replies) has no key and no value type that the
//! fixture written from the vendor's documentation lacks (`tests/fixtures/<kind>/`,
//! sources in each folder's SOURCES.md). With the adapters fed the same fixtures
//! (`src/channels/contract_tests.rs`), adapter and simulator can no longer agree on a
//! shape the vendor does not send.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

fn fixture(path: &str) -> Value {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

/// Every (path, type) of a value; array items share the path `[]`.
fn shape(value: &Value, path: &str, out: &mut BTreeSet<(String, &'static str)>) {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(items) => {
            for v in items {
                shape(v, &format!("{path}[]"), out);
            }
            "array"
        }
        Value::Object(map) => {
            for (k, v) in map {
                shape(v, &format!("{path}.{k}"), out);
            }
            "object"
        }
    };
    out.insert((path.to_string(), kind));
}

/// Panics naming every path the simulator sends that the documented fixture lacks, or
/// sends with another type. A null on either side stands for any type (an absent value).
fn conforms(what: &str, sent: &Value, documented: &Value) {
    let (mut ours, mut docs) = (BTreeSet::new(), BTreeSet::new());
    shape(sent, "", &mut ours);
    shape(documented, "", &mut docs);
    let undocumented: Vec<&(String, &str)> = ours
        .iter()
        .filter(|(path, kind)| {
            *kind != "null"
                && !docs.contains(&(path.clone(), *kind))
                && !docs.contains(&(path.clone(), "null"))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "{what}: the simulator sends what the documentation does not: {undocumented:?}\nsent: {sent}"
    );
}

/// A one-request HTTP server: the body of the first request it gets (answered 200).
fn capture() -> (String, std::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send(body);
        }
    });
    (url, rx)
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("a JSON body")
}

fn last_delivery(market: &loadgen::market::Market) -> Value {
    json_of(&market.last_delivery().expect("a delivery was built").1)
}

fn get(url: &str, headers: &[(&str, &str)]) -> Value {
    let mut request = Server::client().get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let (status, body) = status_json(request.send().unwrap());
    assert_eq!(status, 200, "{url}: {body}");
    body
}

#[test]
fn walmart_events_are_documented_shapes() {
    use loadgen::walmart_sim::{EventStyle, HookAuth, WalmartSim};
    let sim = WalmartSim::start(
        &[("M0", "WM-0")],
        WALMART_CLIENT,
        HookAuth::Hmac("wm-sig".into(), "s".into()),
    );
    sim.place_order(&[("M0", 2)]);
    conforms(
        "ORDER_UPDATES",
        &last_delivery(&sim.market),
        &fixture("walmart/order_updates.json"),
    );
    sim.set_event_style(EventStyle::Legacy);
    sim.place_order(&[("M0", 1)]);
    conforms(
        "PO_CREATED",
        &last_delivery(&sim.market),
        &fixture("walmart/po_created.json"),
    );
}

/// The orders API's page, the feed upload's answer and the feed's status page.
#[test]
fn walmart_replies_are_documented_shapes() {
    use loadgen::walmart_sim::{HookAuth, WalmartSim};
    let sim = WalmartSim::start(
        &[("M0", "WM-0")],
        WALMART_CLIENT,
        HookAuth::Hmac("wm-sig".into(), "s".into()),
    );
    sim.set_feed_processing(Duration::ZERO);
    let order = sim.place_order(&[("M0", 3)]);
    sim.ship_units(&order, 0, 2);
    sim.cancel_units(&order, 0, 1);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", WALMART_CLIENT.0, WALMART_CLIENT.1))
    );
    let token = "eyJraWQiOiJzaW0ifQ.sim-access-token";
    let auth = [
        ("authorization", basic.as_str()),
        ("wm_sec.access_token", token),
        ("wm_svc.name", "lockstep"),
        (
            "wm_qos.correlation_id",
            "6f0c6f6e-6b3d-4c55-9a55-0a5b1f1c1e01",
        ),
    ];
    let orders = get(
        &format!(
            "{}/v3/orders?lastModifiedStartDate=2020-01-01T00%3A00%3A00Z&limit=1",
            sim.market.url()
        ),
        &auth,
    );
    conforms("GET /v3/orders", &orders, &fixture("walmart/orders.json"));
    let level = get(
        &format!("{}/v3/inventory?sku=WM-0", sim.market.url()),
        &auth,
    );
    conforms(
        "GET /v3/inventory",
        &level,
        &fixture("walmart/inventory.json"),
    );

    let file = json!({"InventoryHeader": {"version": "1.4"},
                      "Inventory": [{"sku": "WM-0", "quantity": {"unit": "EACH", "amount": 7}},
                                    {"sku": "WM-404", "quantity": {"unit": "EACH", "amount": 1}}]});
    let body = format!(
        "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"inventory.json\"\r\nContent-Type: application/json\r\n\r\n{file}\r\n--b0undary--\r\n"
    );
    let mut upload = Server::client()
        .post(format!("{}/v3/feeds?feedType=inventory", sim.market.url()))
        .header("content-type", "multipart/form-data; boundary=b0undary")
        .body(body);
    for (k, v) in auth {
        upload = upload.header(k, v);
    }
    let (status, submitted) = status_json(upload.send().unwrap());
    assert_eq!(status, 200, "{submitted}");
    conforms(
        "POST /v3/feeds",
        &submitted,
        &fixture("walmart/feed_submitted.json"),
    );
    let id = submitted["feedId"].as_str().unwrap().replace('@', "%40");
    let url = format!(
        "{}/v3/feeds/{id}?includeDetails=true&offset=0&limit=1000",
        sim.market.url()
    );
    let mut feed = get(&url, &auth);
    for _ in 0..100 {
        if feed["feedStatus"] == "PROCESSED" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        feed = get(&url, &auth);
    }
    assert_eq!(feed["feedStatus"], "PROCESSED", "{feed}");
    assert_eq!(
        feed["itemDetails"]["itemIngestionStatus"][1]["ingestionStatus"],
        "DATA_ERROR"
    );
    assert_eq!(sim.market.level("M0"), Some(7), "the feed's item applied");
    conforms(
        "GET /v3/feeds/{feedId}",
        &feed,
        &fixture("walmart/feed_status.json"),
    );
}

#[test]
fn amazon_notifications_are_documented_shapes() {
    use loadgen::amazon_sim::AmazonSim;
    let sim = AmazonSim::start(&[("A0", "AMZ-0")], AMAZON_LWA, AMAZON_AUTH);
    sim.place_order(&[("A0", 2)]);
    let body = sim.queue.bodies().pop().expect("ORDER_CHANGE queued");
    conforms(
        "ORDER_CHANGE (SQS body)",
        &serde_json::from_str(&body).unwrap(),
        &fixture("amazon/order_change.json"),
    );
    sim.seller_edit("A0", 7);
    conforms(
        "LISTINGS_ITEM_MFN_QUANTITY_CHANGE (EventBridge)",
        &last_delivery(&sim.market),
        &fixture("amazon/quantity_change.json"),
    );
    // A feed of two messages, one for a SKU Amazon does not have: its processing report.
    let token = Server::client()
        .post(format!("{}/auth/o2/token", sim.market.url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", AMAZON_LWA.0),
            ("client_secret", AMAZON_LWA.1),
            ("refresh_token", AMAZON_LWA.2),
        ])
        .send()
        .unwrap();
    let token = status_json(token).1["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let call = |path: &str, body: Value| {
        status_json(
            Server::client()
                .post(format!("{}{path}", sim.market.url()))
                .header("x-amz-access-token", &token)
                .json(&body)
                .send()
                .unwrap(),
        )
        .1
    };
    let document = call(
        "/feeds/2021-06-30/documents",
        json!({"contentType": "application/json; charset=UTF-8"}),
    );
    let patch = |sku: &str, id: u64| {
        json!({"messageId": id, "sku": sku, "operationType": "PATCH", "productType": "PRODUCT",
               "patches": [{"op": "merge", "path": "/attributes/fulfillment_availability",
                            "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": 3}]}]})
    };
    let feed = json!({"header": {"sellerId": "A2SIMSELLER", "version": "2.0"},
                      "messages": [patch("AMZ-0", 1), patch("AMZ-404", 2)]});
    Server::client()
        .put(document["url"].as_str().unwrap())
        .body(feed.to_string())
        .send()
        .unwrap();
    let created = call(
        "/feeds/2021-06-30/feeds",
        json!({"feedType": "JSON_LISTINGS_FEED", "marketplaceIds": ["ATVPDKIKX0DER"],
               "inputFeedDocumentId": document["feedDocumentId"]}),
    );
    let id = created["feedId"].as_str().unwrap();
    let auth = [("x-amz-access-token", token.as_str())];
    // Processed on Amazon's time, however short: asked until DONE, as a client does.
    let status_of = || {
        get(
            &format!("{}/feeds/2021-06-30/feeds/{id}", sim.market.url()),
            &auth,
        )
    };
    assert!(eventually(Duration::from_secs(10), || status_of()
        ["processingStatus"]
        == "DONE"));
    let status = status_of();
    assert_eq!(status["processingStatus"], "DONE", "{status}");
    let located = get(
        &format!(
            "{}/feeds/2021-06-30/documents/{}",
            sim.market.url(),
            status["resultFeedDocumentId"].as_str().unwrap()
        ),
        &auth,
    );
    let report = get(located["url"].as_str().unwrap(), &[]);
    assert_eq!(report["issues"][0]["messageId"], 2, "{report}");
    conforms(
        "feed processing report",
        &report,
        &fixture("amazon/feed_processing_report.json"),
    );
}

#[test]
fn etsy_hook_and_replies_are_documented_shapes() {
    use loadgen::etsy_sim::EtsySim;
    let sim = EtsySim::start(&[("Y0", "4000/700")], ETSY_KEY, ETSY_REFRESH, ETSY_SECRET);
    sim.place_order(&[("Y0", 1)]);
    conforms(
        "order.paid",
        &last_delivery(&sim.market),
        &fixture("etsy/order_paid.json"),
    );
    let token = Server::client()
        .post(sim.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", ETSY_KEY.0),
            ("refresh_token", ETSY_REFRESH),
        ])
        .send()
        .unwrap();
    let token = status_json(token).1["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let api_key = format!("{}:{}", ETSY_KEY.0, ETSY_KEY.1);
    let bearer = format!("Bearer {token}");
    let auth = [
        ("x-api-key", api_key.as_str()),
        ("authorization", bearer.as_str()),
    ];
    let base = format!("{}/v3/application/listings/4000", sim.market.url());
    conforms(
        "getListingInventory",
        &get(&format!("{base}/inventory"), &auth),
        &fixture("etsy/listing_inventory.json"),
    );
    conforms(
        "getListing",
        &get(&base, &auth),
        &fixture("etsy/listing.json"),
    );
}

#[test]
fn ebay_replies_are_documented_shapes() {
    use base64::Engine as _;
    use loadgen::ebay_sim::EbaySim;
    let sim = EbaySim::start(&[("E0", "1100/5000")], EBAY_CLIENT, EBAY_REFRESH);
    sim.place_order(&[("E0", 2)]);
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", EBAY_CLIENT.0, EBAY_CLIENT.1));
    let token = Server::client()
        .post(format!("{}/identity/v1/oauth2/token", sim.market.url()))
        .header("authorization", format!("Basic {basic}"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", EBAY_REFRESH),
        ])
        .send()
        .unwrap();
    let token = status_json(token).1["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = format!("Bearer {token}");
    let orders = get(
        &format!(
            "{}/sell/fulfillment/v1/order?filter=lastmodifieddate:%5B2020-01-01T00:00:00.000Z..%5D",
            sim.market.url()
        ),
        &[("authorization", &bearer)],
    );
    conforms("getOrders", &orders, &fixture("ebay/orders.json"));
    let order = sim.place_order(&[("E0", 5)]);
    sim.ship_units(&order, 0, 2);
    let fulfillments = get(
        &format!(
            "{}/sell/fulfillment/v1/order/{order}/shipping_fulfillment",
            sim.market.url()
        ),
        &[("authorization", &bearer)],
    );
    assert_eq!(fulfillments["total"], 1, "{fulfillments}");
    conforms(
        "getShippingFulfillments",
        &fulfillments,
        &fixture("ebay/shipping_fulfillments.json"),
    );
    let bulk = Server::client()
        .post(format!(
            "{}/sell/inventory/v1/bulk_update_price_quantity",
            sim.market.url()
        ))
        .header("authorization", &bearer)
        .json(
            &json!({"requests": [{"sku": "E0", "shipToLocationAvailability": {"quantity": 4},
                                     "offers": [{"offerId": "5000", "availableQuantity": 4}]}]}),
        )
        .send()
        .unwrap();
    conforms(
        "bulkUpdatePriceQuantity",
        &status_json(bulk).1,
        &fixture("ebay/bulk_update_price_quantity.json"),
    );
    let read = Server::client()
        .post(format!(
            "{}/sell/inventory/v1/bulk_get_inventory_item",
            sim.market.url()
        ))
        .header("authorization", &bearer)
        .json(&json!({"requests": [{"sku": "E0"}, {"sku": "E9"}]}))
        .send()
        .unwrap();
    let (status, read) = status_json(read);
    assert_eq!(status, 207, "{read}");
    conforms(
        "bulkGetInventoryItem",
        &read,
        &fixture("ebay/bulk_get_inventory_item.json"),
    );
}

#[test]
fn tiktok_notification_and_grant_are_documented_shapes() {
    use loadgen::tiktok_sim::TikTokSim;
    let sim = TikTokSim::start(
        &[("T0", "170/80")],
        TIKTOK_APP.0,
        TIKTOK_APP.1,
        TIKTOK_REFRESH,
    );
    sim.place_order(&[("T0", 1)]);
    conforms(
        "type 1",
        &last_delivery(&sim.market),
        &fixture("tiktok/order_status_change.json"),
    );
    let grant = get(
        &format!(
            "{}?app_key={}&app_secret={}&refresh_token={TIKTOK_REFRESH}&grant_type=refresh_token",
            sim.token_url(),
            TIKTOK_APP.0,
            TIKTOK_APP.1
        ),
        &[],
    );
    conforms(
        "token refresh",
        &grant,
        &fixture("tiktok/token_refresh.json"),
    );

    // Get Order Detail, signed as TikTok signs: HMAC-SHA256 (hex) keyed with the app
    // secret over secret + path + the sorted parameters + body + secret.
    use hmac::Mac;
    let order = sim.place_order(&[("T0", 3)]);
    sim.ship_units(&order, 0, 1);
    sim.cancel_units(&order, 0, 1);
    let path = "/order/202309/orders";
    let timestamp = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs())
    .to_string();
    let mut params = [
        ("app_key", TIKTOK_APP.0.to_string()),
        ("ids", order.clone()),
        ("shop_cipher", loadgen::tiktok_sim::SHOP_CIPHER.to_string()),
        ("timestamp", timestamp),
    ];
    params.sort();
    let mut text = format!("{}{path}", TIKTOK_APP.1);
    for (k, v) in &params {
        text.push_str(k);
        text.push_str(v);
    }
    text.push_str(TIKTOK_APP.1);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(TIKTOK_APP.1.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    let sign: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let detail = get(
        &format!("{}{path}?{}&sign={sign}", sim.market.url(), query.join("&")),
        &[(
            "x-tts-access-token",
            grant["data"]["access_token"].as_str().unwrap(),
        )],
    );
    assert_eq!(detail["code"], 0, "{detail}");
    assert_eq!(
        detail["data"]["orders"][0]["line_items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    conforms(
        "Get Order Detail",
        &detail,
        &fixture("tiktok/order_detail.json"),
    );
}

#[test]
fn bigcommerce_hook_and_items_are_documented_shapes() {
    use loadgen::bigcommerce_sim::{BigCommerceSim, STORE_HASH};
    let sim = BigCommerceSim::start(&[("B0", "30000")], BC_TOKEN, BC_SECRET, BC_HEADER);
    sim.place_order(&[("B0", 1)]);
    conforms(
        "store/order/created",
        &last_delivery(&sim.market),
        &fixture("bigcommerce/order_created.json"),
    );
    let items = get(
        &format!(
            "{}/stores/{STORE_HASH}/v3/inventory/items?variant_id:in=30000&limit=250&page=1",
            sim.market.url()
        ),
        &[("x-auth-token", BC_TOKEN)],
    );
    conforms(
        "inventory items",
        &items,
        &fixture("bigcommerce/inventory_items.json"),
    );
    // A partly shipped order and its products, as the follow-up fetches read them.
    let order = sim.place_order(&[("B0", 5)]);
    sim.ship_units(order, 0, 2);
    let base = format!("{}/stores/{STORE_HASH}/v2/orders/{order}", sim.market.url());
    let auth = [("x-auth-token", BC_TOKEN)];
    let fetched = get(&base, &auth);
    assert_eq!(fetched["status_id"], 3, "{fetched}");
    conforms("order", &fetched, &fixture("bigcommerce/order.json"));
    conforms(
        "order products",
        &get(&format!("{base}/products"), &auth),
        &fixture("bigcommerce/order_products.json"),
    );
}

#[test]
fn shopify_webhook_and_set_answer_are_documented_shapes() {
    use loadgen::shopify_sim::ShopifySim;
    let sim = ShopifySim::start(SHOPIFY_SECRET, SHOPIFY_TOKEN, &[("S0", 100)]);
    let (url, bodies) = capture();
    sim.set_webhook_url(&url);
    sim.place_order(&[("S0", 1)]);
    let order = bodies.recv_timeout(Duration::from_secs(10)).unwrap();
    conforms(
        "orders/create",
        &json_of(&order),
        &fixture("shopify/orders_create.json"),
    );
    // A partial fulfilment, then a refund of one unit not shipped: the simulator's
    // `orders/partially_fulfilled`, `refunds/create` and `orders/updated`.
    let second = sim.place_order(&[("S0", 5)]);
    let _ = bodies.recv_timeout(Duration::from_secs(10)).unwrap();
    sim.fulfill_units(second, 0, 2);
    let partial = bodies.recv_timeout(Duration::from_secs(10)).unwrap();
    conforms(
        "orders/partially_fulfilled",
        &json_of(&partial),
        &fixture("shopify/orders_updated.json"),
    );
    sim.refund_units(second, 0, 1, "cancel");
    // Sent one after the other; they may arrive either way round.
    let (mut refund, mut updated) = (
        json_of(&bodies.recv_timeout(Duration::from_secs(10)).unwrap()),
        json_of(&bodies.recv_timeout(Duration::from_secs(10)).unwrap()),
    );
    if refund["refund_line_items"].is_null() {
        std::mem::swap(&mut refund, &mut updated);
    }
    conforms(
        "refunds/create",
        &refund,
        &fixture("shopify/refunds_create.json"),
    );
    conforms(
        "orders/updated",
        &updated,
        &fixture("shopify/orders_updated.json"),
    );
    let set = Server::client()
        .post(format!("{}/admin/api/2026-04/graphql.json", sim.url()))
        .header("x-shopify-access-token", SHOPIFY_TOKEN)
        .json(&json!({
            "query": "mutation S($input: InventorySetQuantitiesInput!, $key: String!) { inventorySetQuantities(input: $input) @idempotent(key: $key) { inventoryAdjustmentGroup { id } userErrors { field message code } } }",
            "variables": {"key": "k-1", "input": {"name": "available", "reason": "correction", "quantities": [
                {"inventoryItemId": "gid://shopify/InventoryItem/100", "locationId": "gid://shopify/Location/1",
                 "quantity": 3, "changeFromQuantity": null}]}},
        }))
        .send()
        .unwrap();
    conforms(
        "inventorySetQuantities",
        &status_json(set).1,
        &fixture("shopify/inventory_set_quantities.json"),
    );
}

#[test]
fn woocommerce_order_is_a_documented_shape() {
    use loadgen::woo_sim::WooSim;
    let sim = WooSim::start(WOO_HOOK_SECRET, WOO_KEY, WOO_SECRET, &[("W0", 93, None)]);
    let id = sim.place_order(&[("W0", 2)]);
    conforms(
        "order.created",
        &sim.order(id),
        &fixture("woocommerce/order_created.json"),
    );
    let id = sim.place_order(&[("W0", 5)]);
    sim.refund_units(id, 0, 2, true);
    conforms(
        "order.updated after a partial refund",
        &sim.order(id),
        &fixture("woocommerce/order_partially_refunded.json"),
    );
}
