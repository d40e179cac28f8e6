//! What the console says of one channel beyond its queue and its times: whether its pushes
//! are failing and with what, what its last reconciliation found, where its order poll
//! stands. Written by the channel's tasks as they go (a lock per push answer, no I/O),
//! read by the overview once a second.

use std::sync::Mutex;

use serde_json::{json, Value};

use super::poll::PollReport;
use super::reconcile::Report;
use crate::clock::{now_micros, Micros};

/// Longest reason kept: a channel's error body is not the console's to show in full.
const REASON_CHARS_MAX: usize = 300;

#[derive(Default)]
pub struct Health {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Pushes failing since, the latest reason, and how many in a row; cleared by the
    /// next push the channel takes.
    failing: Option<Failing>,
    last_ok: Option<Micros>,
    /// The last pass: when it ended, what it found, and why it stopped if it failed.
    last_reconcile: Option<(Micros, Report, Option<String>)>,
    /// Every pass since start, added up (a stopped one's repairs too: they were
    /// submitted): the drift reconciliation repaired.
    repaired: Report,
    poll: Option<Polled>,
    /// Until when the channel's bulk submissions wait, after it answered one "slow
    /// down" (its direct pushes have a budget of their own, in the pusher's bucket).
    bulk_until: Option<Micros>,
}

struct Failing {
    since: Micros,
    reason: String,
    count: u64,
    /// The channel answers but takes nothing (`took_none`), rather than failing to
    /// answer: only a push it takes clears that, not a call it merely accepts.
    took_none: bool,
}

/// Where the order poll stands: its watermark, and its last pass.
#[derive(Default)]
struct Polled {
    watermark: Option<Micros>,
    at: Option<Micros>,
    error: Option<String>,
    /// Orders set aside, as the file held them after the last pass, and the first in
    /// turn's id and reason.
    set_aside: usize,
    first_aside: Option<(String, String)>,
}

fn clipped(reason: &str) -> String {
    match reason.char_indices().nth(REASON_CHARS_MAX) {
        Some((end, _)) => format!("{}…", &reason[..end]),
        None => reason.to_string(),
    }
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A push failed (an error answer or none at all).
    pub fn push_failed(&self, reason: &str) {
        self.failed(reason, false);
    }

    /// The channel's answers took none of what was sent to it for a while: it answers,
    /// but nothing lands.
    pub fn took_none(&self, reason: &str) {
        self.failed(reason, true);
    }

    fn failed(&self, reason: &str, took_none: bool) {
        let mut inner = self.lock();
        let failing = inner.failing.get_or_insert(Failing {
            since: now_micros(),
            reason: String::new(),
            count: 0,
            took_none,
        });
        failing.reason = clipped(reason);
        failing.count += 1;
        // Sticky until a push is taken: a failure to answer after answers that took
        // nothing does not make an accepted call the end of both.
        failing.took_none |= took_none;
    }

    /// The channel accepted a call whose items it applies later (a bulk submission taken
    /// for processing): it answers again, which ends a failure to answer, but says
    /// nothing of what it takes, so it ends no `took_none` and counts as no push taken.
    pub fn call_accepted(&self) {
        let mut inner = self.lock();
        if inner.failing.as_ref().is_some_and(|f| !f.took_none) {
            inner.failing = None;
        }
    }

    /// The channel took a push.
    pub fn push_taken(&self) {
        let mut inner = self.lock();
        inner.failing = None;
        inner.last_ok = Some(now_micros());
    }

    /// Whether the channel took items of a push (`push_taken`) within `within`.
    pub fn took_within(&self, within: std::time::Duration) -> bool {
        let within = within.as_micros().min(i64::MAX as u128) as Micros;
        self.lock()
            .last_ok
            .is_some_and(|at| now_micros().saturating_sub(at) < within)
    }

    /// The channel answered a bulk submission "slow down, for `retry_after`".
    pub fn bulk_throttled(&self, retry_after: std::time::Duration) {
        let until =
            now_micros().saturating_add(retry_after.as_micros().min(i64::MAX as u128) as Micros);
        self.lock().bulk_until = Some(until);
    }

    /// A reconciliation pass ended: what it found, and `failed` why it stopped early.
    pub fn reconciled(&self, report: &Report, failed: Option<&String>) {
        let mut inner = self.lock();
        inner.repaired.lowered += report.lowered;
        inner.repaired.raised += report.raised;
        let mut report = report.clone();
        report.unread_reason = report.unread_reason.as_deref().map(clipped);
        inner.last_reconcile = Some((now_micros(), report, failed.map(|e| clipped(e))));
    }

    /// The watermark the poll starts from (before its first pass of this run).
    pub fn poll_watermark(&self, watermark: Micros) {
        let mut inner = self.lock();
        let polled = inner.poll.get_or_insert_with(Polled::default);
        polled.watermark = Some(watermark);
    }

    /// The orders the poll keeps set aside (`propagate::set_aside`): how many, and the
    /// first in turn's id and reason.
    /// None aside before a first pass leaves the poll as it was ("not yet" on the console).
    pub fn poll_set_aside(&self, count: usize, first: Option<(String, String)>) {
        let mut inner = self.lock();
        if count == 0 && inner.poll.is_none() {
            return;
        }
        let polled = inner.poll.get_or_insert_with(Polled::default);
        polled.set_aside = count;
        polled.first_aside = first.map(|(id, why)| (id, clipped(&why)));
    }

    pub fn polled(&self, result: &Result<PollReport, String>) {
        let mut inner = self.lock();
        let polled = inner.poll.get_or_insert_with(Polled::default);
        polled.at = Some(now_micros());
        match result {
            Ok(report) => {
                polled.watermark = Some(report.watermark);
                polled.error = None;
            }
            Err(e) => polled.error = Some(clipped(e)),
        }
    }

    /// Whether pushes are failing now.
    pub fn failing(&self) -> bool {
        self.lock().failing.is_some()
    }

    /// For the console: times in Unix microseconds, `null` where nothing happened yet.
    pub fn json(&self) -> Value {
        let inner = self.lock();
        let reconcile = inner.last_reconcile.as_ref().map(|(at, report, failed)| {
            let mut reconcile = report.json();
            reconcile["at"] = json!(at);
            reconcile["error"] = json!(failed);
            reconcile
        });
        json!({
            "failing": inner.failing.as_ref().map(|f| json!({
                "since": f.since, "reason": f.reason, "count": f.count,
            })),
            "last_ok": inner.last_ok,
            "reconcile": reconcile,
            "repaired": {"lowered": inner.repaired.lowered, "raised": inner.repaired.raised},
            "bulk_throttled_until": inner.bulk_until.filter(|until| *until > now_micros()),
            "poll": inner.poll.as_ref().map(|p| json!({
                "watermark": p.watermark, "at": p.at, "error": p.error,
                "set_aside": p.set_aside,
                "first_aside": p.first_aside.as_ref().map(|(id, why)| json!({"order": id, "why": why})),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_push_ends_the_failing_and_a_long_reason_is_clipped() {
        let health = Health::default();
        health.push_failed(&"x".repeat(1_000));
        health.push_failed("connection refused");
        let json = health.json();
        assert_eq!(json["failing"]["count"], 2);
        assert_eq!(json["failing"]["reason"], "connection refused");
        health.push_failed(&"é".repeat(1_000));
        let reason = health.json()["failing"]["reason"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(reason.chars().count(), REASON_CHARS_MAX + 1);
        health.push_taken();
        assert!(!health.failing());
        assert!(health.json()["last_ok"].is_i64());
        // A bulk submission's "slow down" holds for its time, then is gone.
        health.bulk_throttled(std::time::Duration::from_secs(60));
        assert!(health.json()["bulk_throttled_until"].as_i64().unwrap() > now_micros());
        health.bulk_throttled(std::time::Duration::ZERO);
        assert!(health.json()["bulk_throttled_until"].is_null());
    }

    #[test]
    fn an_accepted_call_ends_a_failure_to_answer_but_not_answers_that_take_nothing() {
        let health = Health::default();
        let within = std::time::Duration::from_secs(60);
        health.push_failed("HTTP 503");
        health.call_accepted();
        assert!(!health.failing());
        assert!(!health.took_within(within), "accepted is not taken");
        health.took_none("took none of its 2 items");
        health.call_accepted();
        assert!(health.failing(), "only a push taken ends it");
        health.push_failed("HTTP 503");
        health.call_accepted();
        assert!(health.failing(), "nor a failure to answer after it");
        health.push_taken();
        assert!(!health.failing());
        assert!(health.took_within(within));
    }

    #[test]
    fn reconciliations_add_up_and_a_failed_one_says_why() {
        let health = Health::default();
        let pass = |lowered| Report {
            checked: 10,
            lowered,
            raised: 1,
            waiting: 2,
            ..Report::default()
        };
        health.reconciled(&pass(3), None);
        health.reconciled(&pass(4), None);
        let json = health.json();
        assert_eq!(json["repaired"]["lowered"], 7);
        assert_eq!(json["reconcile"]["waiting"], 2);
        assert!(json["reconcile"]["error"].is_null());
        // A pass that failed part-way repaired what it reached: counted too.
        health.reconciled(&pass(1), Some(&"HTTP 500".to_string()));
        assert_eq!(health.json()["reconcile"]["error"], "HTTP 500");
        assert_eq!(health.json()["repaired"]["raised"], 3);
        assert_eq!(health.json()["repaired"]["lowered"], 8);
    }
}
