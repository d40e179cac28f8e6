//! What the console's overview shows, for the page and for its stream alike: each
//! channel's row (its state and why, its queue and how old its oldest change is, its pace
//! and propagation over the last five minutes with the points of its plot, its last
//! reconciliation and order poll) and the engine's (stock events per second, oversells
//! today, each shard's mailbox). Values arrive formatted for display, so the page's script
//! only puts text in place; the plot's points come raw.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::clock::{now_micros, Micros, MICROS_PER_SECOND};
use crate::engine::Engine;
use crate::propagate::ChannelLink;

/// A time for the operator: the time of day in UTC when it is today, else the date too.
pub(super) fn when(at: Micros, now: Micros) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000) else {
        return format!("@{at}us");
    };
    let day = |m: Micros| m.div_euclid(86_400 * MICROS_PER_SECOND);
    let clock = format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    if day(at) == day(now) {
        format!("{clock} UTC")
    } else {
        format!(
            "{}-{:02}-{:02} {clock} UTC",
            t.year(),
            u8::from(t.month()),
            t.day()
        )
    }
}

/// Seconds, for a duration on the page: "0.4 s", "12 s", "3 min 5 s".
fn seconds(micros: Micros) -> String {
    let s = micros.max(0) as f64 / 1e6;
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else {
        format!("{} min {} s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// A rate: two decimals below one a second, where one push a minute still shows.
fn rate_text(per_second: f64) -> String {
    if per_second < 1.0 {
        format!("{per_second:.2}/s")
    } else {
        format!("{per_second:.1}/s")
    }
}

fn millis(ms: f64, count: u64) -> String {
    if count == 0 {
        "–".to_string()
    } else if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// A channel's row on the overview.
pub(super) async fn channel_row(
    link: &ChannelLink,
    kinds: &HashMap<String, String>,
    now: Micros,
) -> Value {
    let lifetime = link.timing.summary();
    let recent = link.timing.recent(now);
    let (rate, throttled_for) = {
        let bucket = link.bucket.lock().await;
        (bucket.rate(), bucket.throttled_for())
    };
    let sync = link.sync.borrow().as_str();
    let health = link.health.json();
    let failing = &health["failing"];
    // What the operator needs first: whether writes are going out, and if not, why.
    let (state, detail) = match (sync, throttled_for) {
        ("pushing", Some(wait)) => (
            "throttled",
            format!(
                "until {}: the channel asked lockstep to slow down",
                when(now + wait.as_micros() as Micros, now)
            ),
        ),
        ("pushing", None) if failing.is_object() => (
            "failing",
            format!(
                "{} failed in a row since {}: {}",
                failing["count"],
                when(failing["since"].as_i64().unwrap_or(now), now),
                failing["reason"].as_str().unwrap_or("")
            ),
        ),
        ("observing", _) => (
            "observing",
            "nothing is written to it until it is approved".to_string(),
        ),
        ("paused", _) => (
            "paused",
            "nothing is written to it until it is resumed".to_string(),
        ),
        _ => match health["bulk_throttled_until"].as_i64() {
            Some(until) => (
                "pushing",
                format!(
                    "bulk submissions wait until {}: the channel asked lockstep to slow down",
                    when(until, now)
                ),
            ),
            None => ("pushing", String::new()),
        },
    };
    // SKUs the channel refuses wait and are tried again, but only the operator can fix
    // what makes it refuse them (a deleted or unmapped listing): name them.
    let (refused, names) = link
        .outbox
        .refused_waiting(crate::ingest::sync_api::REFUSED_NAMES_MAX);
    let detail = match (refused, detail.is_empty()) {
        (0, _) => detail,
        (n, empty) => format!(
            "{detail}{}{n} SKU{} the channel refused wait{} to be pushed again: {}{}",
            if empty { "" } else { "; " },
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" },
            names.join(", "),
            if n > names.len() { ", …" } else { "" },
        ),
    };
    let oldest = link
        .outbox
        .oldest_waiting()
        .map_or_else(|| "–".to_string(), |at| seconds(now - at));
    let reconcile = match &health["reconcile"] {
        Value::Null => "not yet".to_string(),
        // "stopped after N SKUs checked; the next scheduled pass resumes after …: why".
        r if r["error"].is_string() => format!(
            "{}: {}",
            when(r["at"].as_i64().unwrap_or(now), now),
            r["error"].as_str().unwrap_or("")
        ),
        r => format!(
            "{}: {}{} checked, {} lowered, {} raised, {} waiting{}",
            when(r["at"].as_i64().unwrap_or(now), now),
            r["resumed_after"]
                .as_str()
                .map_or_else(String::new, |sku| format!("resumed after {sku:?}, ")),
            r["checked"],
            r["lowered"],
            r["raised"],
            r["waiting"],
            r["unread_reason"]
                .as_str()
                .map_or_else(String::new, |reason| format!(
                    "; {} could not be read and were skipped: {reason}",
                    r["unread"]
                )),
        ),
    };
    let repaired = format!(
        "{} lowered, {} raised",
        health["repaired"]["lowered"], health["repaired"]["raised"]
    );
    let poll = match &health["poll"] {
        Value::Null if link.adapter.order_poll().is_none() => "no poll".to_string(),
        Value::Null => "not yet".to_string(),
        p => {
            let watermark = p["watermark"]
                .as_i64()
                .map_or_else(|| "none yet".to_string(), |w| when(w, now));
            let read = match (p["at"].as_i64(), p["error"].as_str()) {
                (Some(at), Some(e)) => {
                    format!("watermark {watermark}; {} failed: {e}", when(at, now))
                }
                (Some(at), None) => format!("watermark {watermark}, read {}", when(at, now)),
                (None, _) => format!("watermark {watermark}"),
            };
            // Orders the poll read on past, their follow-up read failing (`set_aside.rs`).
            match (p["set_aside"].as_u64(), &p["first_aside"]) {
                (Some(n @ 1..), first) => format!(
                    "{read}; {n} order{} set aside, read again at every pass (order {}: {})",
                    if n == 1 { "" } else { "s" },
                    first["order"].as_str().unwrap_or("?"),
                    first["why"].as_str().unwrap_or("?")
                ),
                _ => read,
            }
        }
    };
    json!({
        "name": link.adapter.name(),
        "kind": kinds.get(link.adapter.name()),
        "sync": sync,
        "state": state,
        "detail": detail,
        "outbox_skus": link.outbox.len().to_string(),
        "oldest": oldest,
        "count": lifetime["count"].to_string(),
        "per_second": rate_text(recent.per_second),
        "pace": format!("{rate:.1}/s"),
        "p50": millis(recent.p50_ms, recent.count),
        "p99": millis(recent.p99_ms, recent.count),
        "reconcile": reconcile,
        "repaired": repaired,
        "poll": poll,
        "series": recent.series,
    })
}

/// Every channel's row.
pub(super) async fn channel_rows(
    links: &[Arc<ChannelLink>],
    kinds: &HashMap<String, String>,
) -> Vec<Value> {
    let now = now_micros();
    let mut rows = Vec::with_capacity(links.len());
    for link in links {
        rows.push(channel_row(link, kinds, now).await);
    }
    rows
}

/// The engine's row: stock events per second, oversells today, the shards' mailboxes.
pub(super) fn engine_row(engine: &Engine) -> Value {
    let now = now_micros();
    let activity = engine.activity();
    let shards = engine.health();
    let since = activity["oversells_since"].as_i64().unwrap_or(now);
    let midnight = now - now.rem_euclid(86_400 * MICROS_PER_SECOND);
    json!({
        "events_per_second": format!(
            "{:.1}/s (last minute {:.1}/s)",
            activity["events_per_second"].as_f64().unwrap_or(0.0),
            activity["events_per_second_minute"].as_f64().unwrap_or(0.0)
        ),
        "oversells_today": activity["oversells_today"].to_string(),
        "oversells_since": if since > midnight {
            format!("counted since this start, {}", when(since, now))
        } else {
            "since 00:00 UTC".to_string()
        },
        "mailboxes": shards
            .iter()
            .map(|s| format!("shard {}: {} ({})", s.shard, s.mailbox, s.state))
            .collect::<Vec<_>>()
            .join(" · "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_as_an_operator_reads_them() {
        let day = 20_000 * 86_400 * MICROS_PER_SECOND;
        let noon = day + 12 * 3_600 * MICROS_PER_SECOND + 5 * MICROS_PER_SECOND;
        assert_eq!(when(noon, noon), "12:00:05 UTC");
        assert_eq!(
            when(noon - 86_400 * MICROS_PER_SECOND, noon),
            "2024-10-03 12:00:05 UTC"
        );
        assert_eq!(seconds(400_000), "0.4 s");
        assert_eq!(seconds(185 * MICROS_PER_SECOND), "3 min 5 s");
        assert_eq!(millis(2.04, 3), "2.0 ms");
        assert_eq!(millis(0.0, 0), "–");
        assert_eq!(rate_text(1.0 / 51.0), "0.02/s");
        assert_eq!(rate_text(12.34), "12.3/s");
    }
}
