//! Every metric the Grafana dashboard queries is served by a running engine, in the
//! Prometheus exposition format, with histograms (never summaries) and no SKU label.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{event, eventually, webhook_channel, Server};
use loadgen::webhook_sim::WebhookSim;
use serde_json::json;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The metric name `text` starts with, without a histogram's `_bucket`, `_sum`, `_count`.
fn metric_at(text: &str) -> String {
    let name: String = text
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(&name)
        .to_string()
}

/// Metric names (without `_bucket`, `_sum`, `_count`) in the dashboard's queries.
fn dashboard_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dashboards/lockstep.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("lockstep_") {
                names.insert(metric_at(&expr[i..]));
            }
        }
    }
    names
}

/// A running engine with one `webhook` channel named `shop`, its receiver, and the
/// directory its data lives in (kept as long as the engine).
fn engine_with_a_channel() -> (WebhookSim, Server, tempfile::TempDir) {
    let sim = WebhookSim::start(SECRET);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &webhook_channel("shop", &sim.url(), SECRET, ""),
        None,
    );
    (sim, server, dir)
}

#[test]
fn every_metric_on_the_dashboard_is_served() {
    let wanted = dashboard_metrics();
    assert!(wanted.len() >= 9, "{wanted:?}");
    let (sim, server, _dir) = engine_with_a_channel();
    // One change that reaches the channel, so every histogram has a sample.
    assert_eq!(
        server
            .post_events(&json!({"events": [event("k", "SKU", "counted", 3)]}))
            .0,
        200
    );
    assert!(sim
        .wait_for(std::time::Duration::from_secs(5), |l| l.get("SKU")
            == Some(&3))
        .is_some());
    // The push is counted when its answer is back, a moment after the store shows it.
    let scrape = || {
        Server::client()
            .get(server.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let pushed = "lockstep_push_requests_total{channel=\"shop\",outcome=\"ok\"} 1";
    assert!(
        eventually(std::time::Duration::from_secs(5), || scrape()
            .contains(pushed)),
        "{}",
        scrape()
    );
    let text = scrape();
    // The exposition format: "# TYPE name kind" lines, then samples "name{labels} value".
    let mut types: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            types.insert(
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
            );
        } else if !line.starts_with('#') && !line.is_empty() {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "not a sample line: {line}");
            assert!(
                !line.contains("sku="),
                "a metric is labelled by SKU: {line}"
            );
        }
    }
    for name in &wanted {
        let kind = types
            .get(name)
            .unwrap_or_else(|| panic!("{name} is on the dashboard but not served:\n{text}"));
        if name.ends_with("_seconds") {
            assert_eq!(kind, "histogram", "{name}");
            assert!(
                text.contains(&format!("{name}_bucket{{")),
                "{name} has no buckets"
            );
        }
    }
    assert!(types.values().all(|k| k != "summary"), "no summaries");
}

/// The counters an alert watches for a rise are served at 0 for every channel from the
/// start: a series that first appears at 1 shows Prometheus no increase, so an alert on
/// `increase(...) > 0` would miss the first refusal.
#[test]
fn every_channel_counter_an_alert_watches_is_served_at_zero_from_the_start() {
    let (_sim, server, _dir) = engine_with_a_channel();
    let text = server.metrics();
    for counter in [
        "lockstep_push_backoffs_total",
        "lockstep_push_items_refused_total",
        "lockstep_push_items_failed_total",
        "lockstep_channel_events_refused_total",
        "lockstep_reconcile_drift_total",
    ] {
        assert!(
            text.contains(&format!("{counter}{{channel=\"shop\"}} 0\n")),
            "{counter} is not served at 0:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {counter} ")),
            "{counter} is not described:\n{text}"
        );
    }
    assert!(
        text.contains("lockstep_storage_reopened_total{shard=\"0\"} 0\n"),
        "{text}"
    );
    // And every metric served says what it counts.
    for line in text.lines().filter(|l| l.starts_with("lockstep_")) {
        let name = metric_at(line);
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} is served without a description:\n{text}"
        );
    }
}
