//! A SKU's page: its stock, what each channel is shown and reported, its audit (new
//! records arrive on the audit stream, the channel table on its own stream every second
//! it changes), and the count an operator sets from it.

use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use minijinja::context;
use serde_json::{json, Value};

use super::overview::when;
use super::{done_redirect, page, random_token, value_of, with_csp, Access};
use crate::clock::{now_micros, parse_rfc3339};
use crate::ingest::api::{App, HttpResponse};
use crate::ingest::audit_stream;

/// Audit records a SKU's page starts with (newer ones arrive live).
const SKU_AUDIT_ROWS: usize = 100;

impl App {
    /// Sets a SKU's on hand from its page: a count like any other, its key naming who.
    pub(super) async fn count_action(
        &self,
        access: &Access,
        req: Request<Incoming>,
        sku: &str,
    ) -> HttpResponse {
        let form = match self.action_form(access, req).await {
            Ok(form) => form,
            Err(answer) => return *answer,
        };
        // The same SKU rules as the API's (no control or invisible characters, a bounded
        // length): a count here must not make a SKU the API would refuse.
        let sku = match crate::ingest::api::decode_segment(sku, "sku").and_then(|sku| {
            crate::channels::native::check_sku(&sku, crate::channels::native::Field::named("sku"))
                .map(|()| sku)
        }) {
            Ok(sku) => sku,
            Err(e) => return page(e.status, "text/plain; charset=utf-8", e.message),
        };
        let path = format!(
            "/console/skus/{}",
            percent_encoding::utf8_percent_encode(&sku, percent_encoding::NON_ALPHANUMERIC)
        );
        let on_hand = value_of(&form, "on_hand")
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=crate::core::event::QTY_MAX).contains(n));
        let Some(on_hand) = on_hand else {
            return done_redirect(
                &path,
                "not counted: on hand must be a whole number, 0 or more",
            );
        };
        let now = crate::clock::now_micros();
        let event = crate::core::event::Event {
            sku: sku.clone(),
            kind: crate::core::event::EventKind::Counted,
            qty: on_hand,
            source: "console".to_string(),
            source_ts: now,
            received_at: now,
            key: format!("console/{}/{now}-{}", App::actor(access), random_token()),
            line: None,
            origin: None,
        };
        let done = match self.engine.submit(vec![event]).await {
            Ok(_) => format!(
                "{sku}: counted {on_hand} on hand, by {}",
                App::actor(access)
            ),
            Err(e) => format!("not counted: {e}"),
        };
        done_redirect(&path, &done)
    }

    pub(super) fn sku_page(&self, access: &Access, sku: &str, done: &str) -> HttpResponse {
        let text = |status: StatusCode, message: String| {
            page(status, "text/plain; charset=utf-8", message)
        };
        let sku = match crate::ingest::api::decode_segment(sku, "sku") {
            Ok(sku) => sku,
            Err(e) => return text(e.status, e.message),
        };
        let value = match self.sku_json(&sku) {
            Ok(value) => value,
            Err(e) => return text(e.status, e.message),
        };
        let records: Vec<Value> = match self.engine.audit(Some(&sku), 0, SKU_AUDIT_ROWS) {
            Ok(records) => records.iter().map(crate::ingest::api::audit_json).collect(),
            Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
        let (csrf, signed_in) = self.who(access);
        let html = self.console.render(
            "sku.html",
            context! {
                title => sku.clone(), signed_in, csrf, done,
                channels => minijinja::Value::from_serialize(channel_rows(&value, &records)),
                sku => minijinja::Value::from_serialize(&value),
                records => minijinja::Value::from_serialize(&records),
            },
        );
        page(StatusCode::OK, "text/html; charset=utf-8", html)
    }

    /// `event: channels` with the SKU's channel table whenever it changed, checked every
    /// second, for as long as the page is open.
    pub(super) fn sku_stream(&self, sku: &str) -> HttpResponse {
        let sku = match crate::ingest::api::decode_segment(sku, "sku") {
            Ok(sku) => sku,
            Err(e) => return page(e.status, "text/plain; charset=utf-8", e.message),
        };
        // A SKU that is not there is said so now, not streamed nothing for ever.
        if let Err(e) = self.sku_json(&sku) {
            return page(e.status, "text/plain; charset=utf-8", e.message);
        }
        let (engine, rules) = (self.engine.clone(), self.engine_rules.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SKU_EVERY);
            let mut sent = Vec::new();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = tx.closed() => return,
                }
                let Ok(state) = crate::ingest::api::sku_state(&engine, &rules, &sku) else {
                    continue;
                };
                let mut rows = channel_rows(&state, &[]);
                // A level that has settled leaves its "(settling)" on the page: the row
                // says again what the channel last reported, from the audit.
                let settled = rows.iter().any(|row| {
                    row.get("reported").is_none()
                        && sent.iter().any(|old: &Value| {
                            old["name"] == row["name"]
                                && old["reported"]
                                    .as_str()
                                    .is_some_and(|r| r.ends_with("(settling)"))
                        })
                });
                if settled {
                    let (engine, sku) = (engine.clone(), sku.clone());
                    let records = tokio::task::spawn_blocking(move || {
                        engine.audit(Some(&sku), 0, SKU_AUDIT_ROWS)
                    })
                    .await;
                    if let Ok(Ok(records)) = records {
                        let records: Vec<Value> =
                            records.iter().map(crate::ingest::api::audit_json).collect();
                        rows = channel_rows(&state, &records);
                    }
                }
                if rows == sent {
                    continue;
                }
                let event = format!("event: channels\ndata: {}\n\n", Value::from(rows.clone()));
                if tx.send(Bytes::from(event)).await.is_err() {
                    return;
                }
                sent = rows;
            }
        });
        with_csp(audit_stream::event_stream(rx))
    }
}

/// How often a SKU's page stream looks at its channels.
const SKU_EVERY: Duration = Duration::from_secs(1);

/// Kinds in which a channel reports what it shows.
const REPORTS: [&str; 3] = ["level", "reconciled", "stale_read"];

/// A SKU's channel table, as text: target, what the channel last acknowledged and what
/// it should show now, what it last reported (a level waiting to settle, else the newest
/// report among `records`; left out when neither says, so a live update keeps what the
/// page shows), the unexplained units, and the channel's buffer and cap.
fn channel_rows(state: &Value, records: &[Value]) -> Vec<Value> {
    let now = now_micros();
    let text = |v: &Value| {
        if v.is_null() {
            "–".to_string()
        } else {
            v.to_string()
        }
    };
    let Some(channels) = state["channels"].as_object() else {
        return Vec::new();
    };
    channels
        .iter()
        .map(|(name, c)| {
            let pushed = match (
                c["pushed"].as_i64(),
                c["pushed_at"].as_str().and_then(parse_rfc3339),
            ) {
                (Some(qty), Some(at)) => format!("{qty} at {}", when(at, now)),
                (Some(qty), None) => qty.to_string(),
                _ => "–".to_string(),
            };
            let settings = match c["max"].as_i64() {
                Some(max) => format!("buffer {}, max {max}", c["buffer"]),
                None => format!("buffer {}, no max", c["buffer"]),
            };
            let mut row = json!({
                "name": name,
                "target": text(&c["target"]),
                "pushed": pushed,
                "expected": text(&c["expected"]),
                "unexplained": text(&c["unexplained"]),
                "settings": settings,
            });
            let newest = records.iter().find(|r| {
                r["source"] == name.as_str() && REPORTS.contains(&r["kind"].as_str().unwrap_or(""))
            });
            let reported = match (c["reported"].as_i64(), newest) {
                (Some(level), _) => Some(format!("{level} (settling)")),
                (None, Some(r)) => Some(report_text(r, now)),
                (None, None) if records.is_empty() => None,
                (None, None) => Some("–".to_string()),
            };
            if let Some(reported) = reported {
                row["reported"] = Value::String(reported);
            }
            row
        })
        .collect()
}

/// A channel's report from the audit: the level (-1: not listed), how and when.
fn report_text(record: &Value, now: crate::clock::Micros) -> String {
    let qty = match record["qty"].as_i64() {
        Some(-1) => "not listed".to_string(),
        Some(qty) => qty.to_string(),
        None => "–".to_string(),
    };
    let at = record["applied_at"]
        .as_str()
        .and_then(parse_rfc3339)
        .map_or_else(String::new, |at| format!(", {}", when(at, now)));
    format!("{qty} ({}{at})", record["kind"].as_str().unwrap_or(""))
}
