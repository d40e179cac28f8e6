//! Bad input gets a clear JSON error with a fitting status, and changes nothing: after
//! each refusal the stock and the whole audit trail are exactly as before.

mod common;

use common::{event, webhook_channel, Server, WEBHOOK_SECRET};
use serde_json::{json, Value};

/// Sends a raw JSON body to POST `path`; returns (status, JSON body).
fn post_raw(server: &Server, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response = Server::client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap();
    common::status_json(response)
}

/// (what, body, status, error code, field named).
type Case<'a> = (&'a str, Vec<u8>, u16, &'a str, Option<&'a str>);

#[test]
fn every_refusal_names_the_problem_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let (status, _) =
        server.post_events(&json!({"events": [event("seed", "SKU-1", "adjusted", 10)]}));
    assert_eq!(status, 200);
    let stock_before = server.stock("SKU-1");
    let audit_before = server.audit_all();

    let long_sku = "X".repeat(129);
    let ok = |key: &str| event(key, "SKU-1", "adjusted", 1);
    let cases: Vec<Case> = vec![
        ("malformed JSON", b"{\"events\": [".to_vec(), 400, "malformed_json", None),
        ("not an object", b"[1,2]".to_vec(), 400, "invalid_body", Some("body")),
        // Another reader could take the first `qty`: one body, two events.
        ("a name twice in one event", br#"{"events": [{"idempotency_key": "dup", "sku": "SKU-1", "kind": "adjusted", "qty": 1, "qty": 100}]}"#.to_vec(),
            400, "duplicate_key", None),
        ("a name twice at the top", br#"{"events": [], "events": [{"idempotency_key": "dup2", "sku": "SKU-1", "kind": "adjusted", "qty": 1}]}"#.to_vec(),
            400, "duplicate_key", None),
        ("no events array", br#"{"evts": []}"#.to_vec(), 400, "invalid_events", Some("events")),
        ("empty batch", br#"{"events": []}"#.to_vec(), 400, "invalid_events", Some("events")),
        ("unknown kind", json!({"events": [ok("a"), event("b", "SKU-1", "teleported", 1)]}).to_string().into_bytes(),
            400, "invalid_kind", Some("events[1].kind")),
        ("missing SKU", json!({"events": [{"idempotency_key": "c", "kind": "adjusted", "qty": 1}]}).to_string().into_bytes(),
            400, "invalid_sku", Some("events[0].sku")),
        ("empty SKU", json!({"events": [event("d", "", "adjusted", 1)]}).to_string().into_bytes(),
            400, "invalid_sku", Some("events[0].sku")),
        ("SKU over 128 bytes", json!({"events": [event("e", &long_sku, "adjusted", 1)]}).to_string().into_bytes(),
            400, "invalid_sku", Some("events[0].sku")),
        ("SKU with a control character", json!({"events": [event("f", "A\u{0}B", "adjusted", 1)]}).to_string().into_bytes(),
            400, "invalid_sku", Some("events[0].sku")),
        ("SKU with a zero-width space", json!({"events": [event("f2", "A\u{200B}B", "adjusted", 1)]}).to_string().into_bytes(),
            400, "invalid_sku", Some("events[0].sku")),
        ("SKU with a right-to-left override", json!({"events": [event("f3", "\u{202E}AB", "adjusted", 1)]}).to_string().into_bytes(),
            400, "invalid_sku", Some("events[0].sku")),
        ("zero quantity for an order", json!({"events": [ok("g"), event("h", "SKU-1", "order_placed", 0)]}).to_string().into_bytes(),
            400, "invalid_qty", Some("events[1].qty")),
        ("negative quantity for a return", json!({"events": [event("i", "SKU-1", "returned", -2)]}).to_string().into_bytes(),
            400, "invalid_qty", Some("events[0].qty")),
        ("zero adjustment", json!({"events": [event("j", "SKU-1", "adjusted", 0)]}).to_string().into_bytes(),
            400, "invalid_qty", Some("events[0].qty")),
        ("quantity over 10^9", json!({"events": [event("k", "SKU-1", "adjusted", 1_000_000_001)]}).to_string().into_bytes(),
            400, "invalid_qty", Some("events[0].qty")),
        ("fractional quantity", br#"{"events": [{"idempotency_key": "l", "sku": "SKU-1", "kind": "adjusted", "qty": 1.5}]}"#.to_vec(),
            400, "invalid_qty", Some("events[0].qty")),
        ("quantity as text", br#"{"events": [{"idempotency_key": "m", "sku": "SKU-1", "kind": "adjusted", "qty": "3"}]}"#.to_vec(),
            400, "invalid_qty", Some("events[0].qty")),
        ("negative count", json!({"events": [event("n", "SKU-1", "counted", -1)]}).to_string().into_bytes(),
            400, "invalid_qty", Some("events[0].qty")),
        ("no idempotency key", json!({"events": [{"sku": "SKU-1", "kind": "adjusted", "qty": 1}]}).to_string().into_bytes(),
            400, "invalid_idempotency_key", Some("events[0].idempotency_key")),
        ("bad timestamp", json!({"events": [{"idempotency_key": "o", "sku": "SKU-1", "kind": "adjusted", "qty": 1, "source_ts": "noon"}]}).to_string().into_bytes(),
            400, "invalid_source_ts", Some("events[0].source_ts")),
        ("timestamp a day ahead", json!({"events": [{"idempotency_key": "p", "sku": "SKU-1", "kind": "counted", "qty": 1,
            "source_ts": lockstep::clock::format_rfc3339(lockstep::clock::now_micros() + 86_400_000_000)}]}).to_string().into_bytes(),
            400, "invalid_source_ts", Some("events[0].source_ts")),
        ("cancel without an order id", json!({"events": [event("q", "SKU-1", "order_cancelled", 1)]}).to_string().into_bytes(),
            400, "invalid_order_id", Some("events[0].order_id")),
        ("a shipped total without an order id", json!({"events": [event("q2", "SKU-1", "order_shipped_total", 1)]}).to_string().into_bytes(),
            400, "invalid_order_id", Some("events[0].order_id")),
        ("a return id without an order id", json!({"events": [{"idempotency_key": "q3", "sku": "SKU-1", "kind": "returned", "qty": 1, "return_id": "RMA-1"}]}).to_string().into_bytes(),
            400, "invalid_order_id", Some("events[0].order_id")),
        ("a return id on a placement", json!({"events": [{"sku": "SKU-1", "kind": "order_placed", "qty": 1, "order_id": "9", "return_id": "RMA-1"}]}).to_string().into_bytes(),
            400, "invalid_return_id", Some("events[0].return_id")),
        ("a return id that is a number", json!({"events": [{"sku": "SKU-1", "kind": "returned", "qty": 1, "order_id": "9", "return_id": 7}]}).to_string().into_bytes(),
            400, "invalid_return_id", Some("events[0].return_id")),
        ("a released total of 0", json!({"events": [{"sku": "SKU-1", "kind": "order_released_total", "qty": 0, "order_id": "9"}]}).to_string().into_bytes(),
            400, "invalid_qty", Some("events[0].qty")),
        ("batch over the limit", json!({"events": (0..1001).map(|i| ok(&format!("r{i}"))).collect::<Vec<_>>()}).to_string().into_bytes(),
            400, "batch_too_large", Some("events")),
        ("body over 1 MiB", {
            let mut body = br#"{"events": [{"idempotency_key": "s", "sku": "SKU-1", "kind": "adjusted", "qty": 1, "pad": ""#.to_vec();
            body.extend(std::iter::repeat_n(b'x', 1024 * 1024));
            body.extend_from_slice(br#""}]}"#);
            body
        }, 413, "payload_too_large", None),
    ];
    for (what, body, want_status, want_code, want_field) in cases {
        let (status, answer) = post_raw(&server, "/v1/events", body);
        assert_eq!(status, want_status, "{what}: {answer}");
        assert_eq!(answer["error"], want_code, "{what}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: no message"
        );
        if let Some(field) = want_field {
            assert_eq!(answer["field"], field, "{what}: {answer}");
        }
        assert_eq!(
            server.stock("SKU-1"),
            stock_before,
            "{what} changed the stock"
        );
        assert_eq!(
            server.audit_all(),
            audit_before,
            "{what} changed the audit trail"
        );
    }

    // PUT /v1/skus/{sku}: the count body.
    let put_cases: Vec<(&str, String, Value, &str)> = vec![
        (
            "neither field",
            "SKU-1".into(),
            json!({"at": "2026-01-01T00:00:00Z"}),
            "invalid_count",
        ),
        (
            "both fields",
            "SKU-1".into(),
            json!({"on_hand": 1, "available": 1}),
            "invalid_count",
        ),
        (
            "negative on_hand",
            "SKU-1".into(),
            json!({"on_hand": -4}),
            "invalid_on_hand",
        ),
        (
            "available over 10^9",
            "SKU-1".into(),
            json!({"available": 2_000_000_000i64}),
            "invalid_available",
        ),
        (
            "bad at",
            "SKU-1".into(),
            json!({"on_hand": 4, "at": "tomorrow"}),
            "invalid_at",
        ),
        (
            "SKU over 128 bytes",
            long_sku.clone(),
            json!({"on_hand": 4}),
            "invalid_sku",
        ),
    ];
    for (what, sku, body, want_code) in put_cases {
        let (status, answer) = server.put_sku(&sku, &body);
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(want_code)),
            "{what}: {answer}"
        );
        assert_eq!(
            server.stock("SKU-1"),
            stock_before,
            "{what} changed the stock"
        );
        assert_eq!(
            server.audit_all(),
            audit_before,
            "{what} changed the audit trail"
        );
    }

    // Two Idempotency-Keys: whichever a reader takes would be the key. Refused on both
    // endpoints that honour it, naming the header.
    let twice = |request: reqwest::blocking::RequestBuilder| {
        common::status_json(
            request
                .header("Idempotency-Key", "first")
                .header("Idempotency-Key", "second")
                .send()
                .unwrap(),
        )
    };
    let one = json!({"events": [{"sku": "SKU-1", "kind": "adjusted", "qty": 1}]});
    for (what, (status, answer)) in [
        (
            "POST",
            twice(Server::client().post(server.url("/v1/events")).json(&one)),
        ),
        (
            "PUT",
            twice(
                Server::client()
                    .put(server.url("/v1/skus/SKU-1"))
                    .json(&json!({"on_hand": 3})),
            ),
        ),
    ] {
        assert_eq!(
            (status, answer["error"].as_str(), answer["field"].as_str()),
            (400, Some("invalid_header"), Some("idempotency-key")),
            "{what}: {answer}"
        );
    }
    assert_eq!(server.stock("SKU-1"), stock_before);
    assert_eq!(server.audit_all(), audit_before);

    // Query parameters of the audit.
    for (query, code) in [
        ("since=-1", "invalid_since"),
        ("limit=0", "invalid_limit"),
        ("limit=5000", "invalid_limit"),
        // A name given twice is not settled by taking one of them.
        ("sku=SKU-1&sku=SKU-2", "invalid_query"),
        ("limit=10&since=0&limit=20", "invalid_query"),
        // Not UTF-8 once decoded: refused, not read as replacement characters.
        ("sku=%FF", "invalid_query"),
    ] {
        let (status, answer) = server.get(&format!("/v1/audit?{query}"));
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
    let (status, answer) = server.get("/v1/audit?limit=1&limit=2");
    assert_eq!(
        (answer["field"].as_str(), answer["message"].as_str()),
        (
            Some("limit"),
            Some("limit: is given more than once; give it once")
        ),
        "{status} {answer}"
    );
    let (status, answer) = server.get("/v1/audit/stream?kind=counted&kind=adjusted");
    assert_eq!(
        (status, answer["error"].as_str(), answer["field"].as_str()),
        (400, Some("invalid_query"), Some("kind"))
    );
    // Webhooks for a channel that is not configured.
    let response = Server::client()
        .post(server.url("/webhooks/nope"))
        .body("{}")
        .send()
        .unwrap();
    let (status, answer) = common::status_json(response);
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_channel"))
    );
    assert_eq!(server.audit_all(), audit_before);
}

/// A channel action's body is an object or nothing, and a channel's name that is not
/// UTF-8 is named as a channel's: each refused with its field, the channel as it was.
#[test]
fn a_channel_action_takes_an_object_or_nothing_and_names_a_bad_channel_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = webhook_channel(
        "erp",
        "http://127.0.0.1:9",
        WEBHOOK_SECRET,
        "first_sync = \"observe\"",
    );
    let server = Server::start_with(&dir.path().join("data"), &config, None);
    let channels_before = server.get("/v1/channels").1;
    let (status, answer) = post_raw(
        &server,
        "/v1/channels/erp/approve",
        br#"{"by": "ann", "by": "bob"}"#.to_vec(),
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("duplicate_key")),
        "{answer}"
    );
    for body in ["42", "[]", "\"me\""] {
        let (status, answer) = post_raw(&server, "/v1/channels/erp/approve", body.into());
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(
            (answer["error"].as_str(), answer["field"].as_str()),
            (Some("invalid_body"), Some("body")),
            "{answer}"
        );
    }
    let (status, answer) = server.get("/v1/channels/%FF/plan");
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        (answer["error"].as_str(), answer["field"].as_str()),
        (Some("invalid_channel"), Some("channel")),
        "{answer}"
    );
    assert_eq!(
        server.get("/v1/channels").1,
        channels_before,
        "nothing changed"
    );
}
