//! The native HTTP API over loopback against the real binary: every endpoint, duplicates
//! through `Idempotency-Key`, restart persistence, and the admin token.

mod common;

use common::{catalog, event, replay, shopify_channel, Server};
use serde_json::json;

/// An RFC 3339 timestamp `minutes` ago, so the test holds whenever it runs (counts older
/// than the 72 h horizon are stale).
fn ago(minutes: i64) -> String {
    let now = lockstep::clock::now_micros();
    lockstep::clock::format_rfc3339(now - minutes * 60 * 1_000_000)
}

#[test]
fn every_endpoint_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);

    let (status, body) = server.get("/healthz");
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    assert_eq!(server.stock("TSHIRT-RED-M"), None, "unknown SKU is 404");

    // A count two hours ago, an order placed before it (a count does not include orders:
    // they are committed, not moved), a receipt at exactly the count's time.
    let (status, body) = server.post_events(&json!({"events": [
        {"idempotency_key": "count-1", "sku": "TSHIRT-RED-M", "kind": "counted", "qty": 10,
         "source": "erp", "source_ts": ago(2 * 60)},
        {"sku": "TSHIRT-RED-M", "kind": "order_placed", "qty": 3, "source": "shop",
         "order_id": "1041", "line_id": "1", "source_ts": ago(3 * 60)},
        {"idempotency_key": "rcpt-7", "sku": "TSHIRT-RED-M", "kind": "adjusted", "qty": 5,
         "source": "erp", "source_ts": ago(2 * 60)},
        {"idempotency_key": "other", "sku": "MUG", "kind": "adjusted", "qty": 1}
    ]}));
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(
        results[1]["idempotency_key"], "shop/1041/1/placed",
        "business-fact key"
    );
    assert!(results.iter().all(|r| r["outcome"] == "applied"), "{body}");
    // A movement at exactly the count's time comes after it: 10 + 5.
    assert_eq!(results[2]["on_hand"], 15);
    assert_eq!(server.stock("TSHIRT-RED-M"), Some((15, 3, 12)));

    // The same order line again, under another client key: one fact, applied once.
    let (_, body) = server.post_events(&json!({"events": [
        {"idempotency_key": "retry", "sku": "TSHIRT-RED-M", "kind": "order_placed", "qty": 3,
         "source": "shop", "order_id": "1041", "line_id": "1"}]}));
    assert_eq!(body["results"][0]["outcome"], "duplicate");
    assert_eq!(body["results"][0]["first_outcome"], "applied");
    assert_eq!(server.stock("TSHIRT-RED-M"), Some((15, 3, 12)));

    // Idempotency-Key header: a single event takes it as is; a batch gets KEY#index.
    let send_with_key = |key: &str, events: serde_json::Value| {
        let response = Server::client()
            .post(server.url("/v1/events"))
            .header("Idempotency-Key", key)
            .json(&json!({ "events": events }))
            .send()
            .unwrap();
        common::status_json(response)
    };
    let one = json!([{"sku": "MUG", "kind": "adjusted", "qty": 2}]);
    let (_, first) = send_with_key("hdr-1", one.clone());
    let (_, again) = send_with_key("hdr-1", one);
    assert_eq!(first["results"][0]["outcome"], "applied");
    assert_eq!(again["results"][0]["outcome"], "duplicate");
    assert_eq!(
        again["results"][0]["available"],
        first["results"][0]["available"]
    );
    let two = json!([{"sku": "MUG", "kind": "adjusted", "qty": 1}, {"sku": "MUG", "kind": "adjusted", "qty": 1}]);
    let (_, batch) = send_with_key("hdr-2", two.clone());
    assert_eq!(batch["results"][1]["idempotency_key"], "hdr-2#1");
    let (_, batch_again) = send_with_key("hdr-2", two);
    assert!(batch_again["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["outcome"] == "duplicate"));
    assert_eq!(server.stock("MUG"), Some((5, 0, 5)));
    // A given key that looks like a generated one is another fact: `hdr-2#1` as a
    // single event's header key, or as an event's own key, is applied, not a duplicate.
    let (_, lookalike) = send_with_key(
        "hdr-2#1",
        json!([{"sku": "MUG", "kind": "adjusted", "qty": 1}]),
    );
    assert_eq!(lookalike["results"][0]["outcome"], "applied", "{lookalike}");
    let (_, own) = server.post_events(&json!({"events": [
        {"idempotency_key": "hdr-2#0", "sku": "MUG", "kind": "adjusted", "qty": 1, "source": "test"}]}));
    assert_eq!(own["results"][0]["outcome"], "applied", "{own}");
    assert_eq!(server.stock("MUG"), Some((7, 0, 7)));
    // A count's Idempotency-Key is checked and kept as POST's are: too long is refused,
    // naming the header, and `pb#0` is not the key of batch `pb`'s first event.
    let put_with_key = |key: &str, body: serde_json::Value| {
        let response = Server::client()
            .put(server.url("/v1/skus/MUG"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .unwrap();
        common::status_json(response)
    };
    let (status, refused) = put_with_key(&"k".repeat(257), json!({"on_hand": 1}));
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"], "invalid_idempotency_key", "{refused}");
    assert_eq!(refused["field"], "Idempotency-Key", "{refused}");
    assert_eq!(
        server.stock("MUG"),
        Some((7, 0, 7)),
        "a refused count changes nothing"
    );
    send_with_key(
        "pb",
        json!([{"sku": "MUG", "kind": "adjusted", "qty": 1}, {"sku": "MUG", "kind": "adjusted", "qty": -1}]),
    );
    let (_, counted) = put_with_key("pb#0", json!({"on_hand": 9}));
    assert_eq!(counted["outcome"], "applied", "{counted}");
    assert_eq!(counted["idempotency_key"], "pb%230", "{counted}");
    let (_, counted_again) = put_with_key("pb#0", json!({"on_hand": 9}));
    assert_eq!(counted_again["outcome"], "duplicate", "{counted_again}");
    put_with_key("mug-back", json!({"on_hand": 7}));

    // PUT a count as available (on_hand = available + committed) and as on_hand with `at`.
    let (status, body) = server.put_sku("TSHIRT-RED-M", &json!({"available": 20}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.stock("TSHIRT-RED-M"), Some((23, 3, 20)));
    let (_, body) = server.put_sku("TSHIRT-RED-M", &json!({"on_hand": 7, "at": ago(90)}));
    assert_eq!(
        body["outcome"], "stale",
        "older than the latest count: {body}"
    );
    let (_, body) = server.put_sku("TSHIRT-RED-M", &json!({"on_hand": 7}));
    assert_eq!(
        (body["outcome"].as_str(), body["available"].as_i64()),
        (Some("applied"), Some(4))
    );

    // Shipping and cancelling the order line release its commitment.
    let (_, body) = server.post_events(&json!({"events": [
        {"sku": "TSHIRT-RED-M", "kind": "order_shipped", "qty": 2, "source": "shop", "order_id": "1041", "line_id": "1"},
        {"sku": "TSHIRT-RED-M", "kind": "order_cancelled", "qty": 1, "source": "shop", "order_id": "1041", "line_id": "1"}]}));
    assert_eq!(body["results"][1]["committed"], 0, "{body}");
    assert_eq!(server.stock("TSHIRT-RED-M"), Some((5, 0, 5)));

    // The audit: newest first, per SKU, with since and limit, every documented field.
    let (status, body) = server.get("/v1/audit?sku=TSHIRT-RED-M&limit=3");
    assert_eq!(status, 200);
    let records = body["records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    assert!(records[0]["seq"].as_u64() > records[1]["seq"].as_u64());
    assert_eq!(records[0]["kind"], "order_cancelled");
    for field in [
        "seq",
        "sku",
        "kind",
        "qty",
        "source",
        "source_ts",
        "received_at",
        "applied_at",
        "idempotency_key",
        "order_id",
        "available_before",
        "available_after",
        "outcome",
        "oversell",
    ] {
        assert!(
            records[0].get(field).is_some(),
            "audit record lacks {field}"
        );
    }
    assert_eq!(records[0]["order_id"], "1041");
    let newest = records[0]["seq"].as_u64().unwrap();
    let (_, body) = server.get(&format!("/v1/audit?sku=TSHIRT-RED-M&since={}", newest - 1));
    assert_eq!(body["records"].as_array().unwrap().len(), 1);
    let all = server.audit_all();
    assert_eq!(
        all.len(),
        23,
        "every event, duplicates and stale ones included"
    );
    assert!(all.iter().any(|r| r["outcome"] == "duplicate"));
    assert!(all.iter().any(|r| r["sku"] == "MUG"));

    let (status, metrics) = {
        let response = Server::client().get(server.url("/metrics")).send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    assert_eq!(status, 200);
    assert!(metrics.contains("lockstep_events_total"), "{metrics}");
    assert!(metrics.contains("lockstep_log_flush_seconds_bucket"));

    let (status, body) = server.get("/v1/nothing");
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    // A restart keeps state and idempotency keys; replay agrees with the live state.
    server.stop();
    let (ok, out) = replay(&data);
    assert!(ok, "{out}");
    assert!(out.contains("replay equals the live state"), "{out}");
    let server = Server::start(&data);
    assert_eq!(server.stock("TSHIRT-RED-M"), Some((5, 0, 5)));
    // The same sender's key: `erp`'s, as at first.
    let mut again = event("rcpt-7", "TSHIRT-RED-M", "adjusted", 5);
    again["source"] = json!("erp");
    let (_, body) = server.post_events(&json!({ "events": [again] }));
    assert_eq!(
        body["results"][0]["outcome"], "duplicate",
        "keys survive a restart"
    );
    assert_eq!(server.audit_all().len(), 24);
}

#[test]
fn percent_encoded_skus_and_the_audit_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let (status, _) =
        server.post_events(&json!({"events": [event("k1", "BOX/12 OZ", "adjusted", 4)]}));
    assert_eq!(status, 200);
    let (status, body) = server.get("/v1/skus/BOX%2F12%20OZ");
    assert_eq!((status, body["on_hand"].as_i64()), (200, Some(4)), "{body}");
    server.stop();

    let out = std::process::Command::new(common::BIN)
        .args(["audit", "BOX/12 OZ", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["records"][0]["idempotency_key"], "k1");
    assert_eq!(body["records"][0]["available_after"], 4);
}

/// A warehouse that ships one order line in parts says how many units it has shipped so
/// far (`order_shipped_total`): each total reached counts once, a total seen again or late
/// adds nothing, and the line's hold ends with its last unit. A second `order_shipped` for
/// the same line is, as documented, the same fact as the first.
#[test]
fn a_line_shipped_in_parts_counts_each_part_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let line = |kind: &str, qty: i64, order: &str| {
        json!({"sku": "PART-1", "kind": kind, "qty": qty, "source": "wms",
               "order_id": order, "line_id": "1"})
    };
    let send = |events: Vec<serde_json::Value>| {
        let (status, body) = server.post_events(&json!({ "events": events }));
        assert_eq!(status, 200, "{body}");
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["outcome"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    send(vec![
        json!({"idempotency_key": "c1", "sku": "PART-1", "kind": "counted", "qty": 10,
               "source_ts": ago(60)}),
        line("order_placed", 5, "SO/2026/7"),
        line("order_placed", 3, "SO/2026/8"),
    ]);
    assert_eq!(server.stock("PART-1"), Some((10, 8, 2)));

    // Two units of the first line leave; the same total again is a duplicate.
    let (_, body) =
        server.post_events(&json!({"events": [line("order_shipped_total", 2, "SO/2026/7")]}));
    assert_eq!(body["results"][0]["outcome"], "applied", "{body}");
    assert_eq!(
        body["results"][0]["idempotency_key"], "wms/SO%2F2026%2F7/1/shipped_to/2",
        "one key per total reached, the order id escaped: {body}"
    );
    assert_eq!(
        send(vec![line("order_shipped_total", 2, "SO/2026/7")]),
        ["duplicate"]
    );
    assert_eq!(server.stock("PART-1"), Some((8, 6, 2)));
    // A late, older total adds nothing; the line's last three units do.
    send(vec![line("order_shipped_total", 1, "SO/2026/7")]);
    assert_eq!(server.stock("PART-1"), Some((8, 6, 2)));
    send(vec![line("order_shipped_total", 5, "SO/2026/7")]);
    assert_eq!(server.stock("PART-1"), Some((5, 3, 2)));

    // The second line: one unit will never ship, then all three are released.
    send(vec![line("order_released_total", 1, "SO/2026/8")]);
    assert_eq!(server.stock("PART-1"), Some((5, 2, 3)));
    send(vec![line("order_released_total", 3, "SO/2026/8")]);
    assert_eq!(server.stock("PART-1"), Some((5, 0, 5)));

    // Units, not totals: a line's second `order_shipped` is the first one again.
    send(vec![line("order_placed", 4, "SO/2026/9")]);
    assert_eq!(
        send(vec![line("order_shipped", 1, "SO/2026/9")]),
        ["applied"]
    );
    assert_eq!(
        send(vec![line("order_shipped", 2, "SO/2026/9")]),
        ["duplicate"]
    );
    assert_eq!(server.stock("PART-1"), Some((4, 3, 1)));
}

/// A line returned in two parts: each return names its own id and counts once, and the
/// same return sent again is a duplicate. Without a `return_id` a line's second return is,
/// as documented, the first one again.
#[test]
fn each_return_of_a_line_counts_once_by_its_return_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let returned = |return_id: Option<&str>, line: &str| {
        let mut event = json!({"sku": "RET-1", "kind": "returned", "qty": 1, "source": "wms",
                               "order_id": "SO-7", "line_id": line});
        if let Some(id) = return_id {
            event["return_id"] = json!(id);
        }
        let (status, body) = server.post_events(&json!({ "events": [event] }));
        assert_eq!(status, 200, "{body}");
        (
            body["results"][0]["outcome"].as_str().unwrap().to_string(),
            body["results"][0]["idempotency_key"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    let (status, body) = server.post_events(&json!({"events": [
        {"idempotency_key": "c1", "sku": "RET-1", "kind": "counted", "qty": 10, "source_ts": ago(60)}]}));
    assert_eq!(status, 200, "{body}");

    assert_eq!(
        returned(Some("RMA/1"), "1"),
        (
            "applied".to_string(),
            "wms/SO-7/1/returned/RMA%2F1".to_string()
        )
    );
    assert_eq!(
        returned(Some("RMA#2"), "1"),
        (
            "applied".to_string(),
            "wms/SO-7/1/returned/RMA%232".to_string()
        ),
        "the line's second return"
    );
    assert_eq!(
        returned(Some("RMA#2"), "1").0,
        "duplicate",
        "the same return again"
    );
    assert_eq!(server.stock("RET-1"), Some((12, 0, 12)));

    // No return id: one return per line, as before.
    assert_eq!(
        returned(None, "2"),
        ("applied".to_string(), "wms/SO-7/2/returned".to_string())
    );
    assert_eq!(returned(None, "2").0, "duplicate");
    assert_eq!(server.stock("RET-1"), Some((13, 0, 13)));
}

#[test]
fn admin_token_guards_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_with(&data, "admin_token = \"s3cret\"", Some("s3cret"));
    let (status, _) = server.post_events(&json!({"events": [event("a", "SKU-1", "adjusted", 3)]}));
    assert_eq!(status, 200);

    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret0")] {
        server.token = token.map(str::to_string);
        let (status, body) =
            server.post_events(&json!({"events": [event("b", "SKU-1", "adjusted", 3)]}));
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "token {token:?}"
        );
        let (status, _) = server.get("/v1/skus/SKU-1");
        assert_eq!(status, 401);
    }
    // Health and metrics stay open for probes and scrapers.
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);

    server.token = Some("s3cret".into());
    assert_eq!(
        server.stock("SKU-1"),
        Some((3, 0, 3)),
        "refused requests changed nothing"
    );
    assert_eq!(server.audit_all().len(), 1);
}

#[test]
fn check_config_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nlisten = \"127.0.0.1:7701\"\n\n[[channels]]\nname = \"erp\"\nkind = \"webhook\"\nbase_url = \"http://127.0.0.1:9000/stock\"\nwebhook_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 channel(s)"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("http://127.0.0.1:9000/stock", "127.0.0.1:9000"),
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("channels[0].base_url"), "{err}");

    // The README's example: a catalog per channel, counted.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lockstep.toml");
    let out = std::process::Command::new(common::BIN)
        .arg("check-config")
        .arg(&example)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("shop (Shopify): 3 SKU(s) mapped") && text.contains("6 catalog row(s)"),
        "{text}"
    );
    // A catalog row for a channel that is not configured names its line.
    let csv = dir.path().join("catalog.csv");
    std::fs::write(
        &csv,
        "sku,channel,item_id,location_id\nA,erp,1,\nB,nope,2,\n",
    )
    .unwrap();
    let with_catalog = dir.path().join("catalog.toml");
    std::fs::write(
        &with_catalog,
        std::fs::read_to_string(&good).unwrap() + "\n[catalog]\npath = \"catalog.csv\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("check-config")
        .arg(&with_catalog)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3") && err.contains("\"nope\" is not configured"),
        "{err}"
    );
    // An id that is not the channel's form is refused with its line too.
    let text = std::fs::read_to_string(example.with_file_name("catalog.csv"))
        .unwrap()
        .replace("1201/1208", "variant-8");
    let copy = dir.path().join("example");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::write(copy.join("catalog.csv"), text).unwrap();
    std::fs::copy(&example, copy.join("lockstep.toml")).unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("check-config")
        .arg(copy.join("lockstep.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("line 6") && err.contains("parent/variation"),
        "{err}"
    );

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[server]\nlisten = \"127.0.0.1:7701\"\nshard = 2\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("check-config")
        .arg(&typo)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `shard`") && err.contains("line 3"),
        "{err}"
    );
}

/// A count stamped ahead of now (the API allows up to an hour, for clocks that run
/// fast) is taken as of when it was received: ordered an hour ahead, it would make every
/// movement of the coming hour answer `applied` while changing nothing.
#[test]
fn a_count_stamped_ahead_is_taken_as_of_its_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let mut count = event("c", "FUT", "counted", 10);
    count["source_ts"] = json!(ago(-59));
    assert_eq!(server.post_events(&json!({"events": [count]})).0, 200);
    let (status, body) = server.post_events(&json!({"events": [event("a", "FUT", "adjusted", 5)]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server.stock("FUT"),
        Some((15, 0, 15)),
        "the movement after the count counts"
    );
    let audit = common::audit_of(&server, "FUT");
    let counted = audit.iter().find(|r| r["kind"] == "counted").unwrap();
    assert!(
        common::instant(&counted["source_ts"]) <= common::instant(&counted["received_at"]),
        "{counted}"
    );
}

/// A channel's adapter keys its events `{channel}/...`: native events may neither write
/// there (a native key `shop/1041/7/placed` would make the real Shopify order a
/// duplicate) nor name a configured channel as their source.
#[test]
fn native_events_cannot_borrow_a_channels_keys_or_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = shopify_channel("shop", "http://127.0.0.1:9", "secret", "2026-04", "")
        + &catalog(&data, &[("NS0", "shop", "100")]);
    let server = Server::start_with(&data, &config, None);
    let borrowed = event("shop/1041/7/placed", "NS0", "adjusted", 1);
    let (status, body) = server.post_events(&json!({"events": [borrowed]}));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("reserved_idempotency_key")),
        "{body}"
    );
    let mut posing = event("k-1", "NS0", "adjusted", 1);
    posing["source"] = json!("shop");
    let (status, body) = server.post_events(&json!({"events": [posing]}));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_source")),
        "{body}"
    );
    assert_eq!(server.stock("NS0"), None, "nothing applied");
    // Keys of its own are fine.
    assert_eq!(
        server
            .post_events(&json!({"events": [event("mine/1", "NS0", "adjusted", 1)]}))
            .0,
        200
    );
}

#[test]
fn the_audit_stream_sends_each_record_it_admits_as_it_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let (status, body) = server.get("/v1/audit/stream?kind=teleported");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "kind", "{body}");

    let records = server.audit_stream("sku=S-A&outcome=applied");
    let (status, _) = server.post_events(&json!({"events": [
        event("b-1", "S-B", "counted", 5),
        event("a-1", "S-A", "counted", 7),
    ]}));
    assert_eq!(status, 200);
    // A duplicate is committed too, with outcome `duplicate`: not admitted.
    server.post_events(&json!({"events": [event("a-1", "S-A", "counted", 7)]}));
    server.post_events(&json!({"events": [event("a-2", "S-A", "adjusted", -2)]}));
    let records: Vec<serde_json::Value> = (0..2)
        .map(|_| {
            records
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("a record")
        })
        .collect();
    let seen: Vec<(&str, &str, i64)> = records
        .iter()
        .map(|r| {
            (
                r["sku"].as_str().unwrap(),
                r["kind"].as_str().unwrap(),
                r["on_hand_after"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [("S-A", "counted", 7), ("S-A", "adjusted", 5)]);
}

/// Returns once each shard thread has answered a batch: named and, when asked, pinned
/// (a thread names and pins itself when it starts, which a loaded machine can delay past
/// the server's first answer). 32 SKUs all land on one shard with odds of 2 in 2^32.
fn every_shard_has_run(server: &Server) {
    let events: Vec<_> = (0..32)
        .map(|i| event(&format!("pin-{i}"), &format!("PIN-{i}"), "counted", 1))
        .collect();
    let (status, body) = server.post_events(&json!({ "events": events }));
    assert_eq!(status, 200, "{body}");
}

/// The CPUs a thread of `pid` named `name` may run on (`Cpus_allowed_list`), one per thread.
fn allowed_cpus(pid: u32, name: &str) -> Vec<String> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("every task states its CPUs");
        found.push(list.trim().to_string());
    }
    found
}

#[test]
fn shard_threads_are_pinned_only_when_the_config_asks() {
    let dir = tempfile::tempdir().unwrap();
    // By default a shard runs wherever the scheduler finds room, as every other thread.
    let server = Server::start(&dir.path().join("free"));
    every_shard_has_run(&server);
    let pid = server.child.id();
    let process = allowed_cpus(pid, "lockstep")[0].clone();
    let shards = allowed_cpus(pid, "shard-0");
    assert_eq!(
        shards,
        vec![process.clone()],
        "an unpinned shard may use every CPU"
    );
    server.stop();

    // `pin_shards = true`: each shard thread on one CPU of its own.
    let server = Server::start_with(&dir.path().join("pinned"), "pin_shards = true", None);
    every_shard_has_run(&server);
    let pid = server.child.id();
    for shard in ["shard-0", "shard-1"] {
        let cpus = allowed_cpus(pid, shard);
        assert_eq!(cpus.len(), 1, "{shard} runs");
        assert!(
            cpus[0].parse::<usize>().is_ok(),
            "{shard} is pinned to one CPU, not {:?} (the process: {process:?})",
            cpus[0]
        );
    }
    server.stop();
}
