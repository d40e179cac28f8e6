//! `GET /v1/audit/stream`: every record as the shards commit it, as server-sent events
//! (`text/event-stream`: `id` the record's sequence number, `event: record`, `data` the
//! record as `GET /v1/audit` gives it), filtered by `sku`, `channel` (the record's
//! source), `kind` and `outcome` (or `oversell`, or `refused`: what a channel sent that
//! lockstep recorded and applied to nothing, an item no catalog row maps). A reader too slow for the feed is
//! told how many batches it missed (`event: lagged`) and goes on; a comment every
//! `HEARTBEAT` keeps proxies and the idle timeout from closing a quiet stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::channels::native::{check_sku, Field};
use crate::core::event::{EventKind, Outcome};
use crate::core::records::LogRecord;
use crate::engine::Engine;
use crate::ingest::api::{audit_json, form_pairs, HttpResponse};
use crate::ingest::error::ApiError;

/// How often a quiet stream says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events written ahead of a slow reader before its writer waits.
const AHEAD_MAX: usize = 256;

/// Which records a reader asked for.
#[derive(Debug, Default)]
pub struct Filter {
    sku: Option<String>,
    channel: Option<String>,
    kind: Option<EventKind>,
    outcome: Option<OutcomeFilter>,
}

/// The `outcome` a reader asked for.
#[derive(Debug, Clone, Copy)]
enum OutcomeFilter {
    Is(Outcome),
    /// Records that sold what was not there.
    Oversell,
    /// Records applied to nothing because lockstep could not place them (`unmapped`).
    /// Events refused at the door (bad input) were answered with an error and are not in
    /// the audit: they changed nothing.
    Refused,
}

/// The outcomes a filter names beside `Outcome::ALL`.
pub const OUTCOMES_BESIDE: [&str; 2] = ["oversell", "refused"];

impl Filter {
    /// From the query; an unknown kind or outcome is a 400 naming the field.
    pub fn parse(query: &str) -> Result<Filter, ApiError> {
        let mut filter = Filter::default();
        for (name, value) in form_pairs(query)? {
            if value.is_empty() {
                continue;
            }
            match name.as_str() {
                "sku" => {
                    check_sku(&value, Field::named("sku"))?;
                    filter.sku = Some(value);
                }
                "channel" => filter.channel = Some(value),
                "kind" => {
                    let kind = EventKind::ALL.into_iter().find(|k| k.as_str() == value);
                    filter.kind = Some(kind.ok_or_else(|| {
                        ApiError::field(
                            "invalid_kind",
                            "kind",
                            format!("{value:?} is not a kind of record"),
                        )
                    })?);
                }
                "outcome" if value == "oversell" => filter.outcome = Some(OutcomeFilter::Oversell),
                "outcome" if value == "refused" => filter.outcome = Some(OutcomeFilter::Refused),
                "outcome" => {
                    let outcome = Outcome::ALL.into_iter().find(|o| o.as_str() == value);
                    filter.outcome = Some(OutcomeFilter::Is(outcome.ok_or_else(|| {
                        ApiError::field(
                            "invalid_outcome",
                            "outcome",
                            format!("{value:?} is not an outcome (or oversell, or refused)"),
                        )
                    })?));
                }
                _ => {}
            }
        }
        Ok(filter)
    }

    fn admits(&self, r: &LogRecord) -> bool {
        self.sku.as_ref().is_none_or(|s| *s == r.sku)
            && self.channel.as_ref().is_none_or(|c| *c == r.source)
            && self.kind.is_none_or(|k| k == r.kind)
            && self.outcome.is_none_or(|o| match o {
                OutcomeFilter::Is(outcome) => outcome == r.outcome,
                OutcomeFilter::Oversell => r.oversell,
                // A redelivery of one is a duplicate, not another refusal.
                OutcomeFilter::Refused => {
                    r.kind == EventKind::Unmapped && r.outcome != Outcome::Duplicate
                }
            })
    }
}

/// The response body: what the feed's task wrote, as it comes.
struct Events(mpsc::Receiver<Bytes>);

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|event| event.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// Starts a reader's stream: a task reads the engine's feed and writes the records the
/// filter admits; it ends when the reader goes away or the engine stops.
pub fn stream(engine: &Engine, filter: Filter) -> HttpResponse {
    let mut feed = engine.subscribe_audit();
    let (tx, rx) = mpsc::channel::<Bytes>(AHEAD_MAX);
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(HEARTBEAT);
        if tx
            .send(Bytes::from_static(b": lockstep audit\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let event = tokio::select! {
                batch = feed.recv() => match batch {
                    Ok(records) => records
                        .iter()
                        .filter(|r| filter.admits(r))
                        .map(|r| format!("id: {}\nevent: record\ndata: {}\n\n", r.seq, audit_json(r)))
                        .collect::<String>(),
                    Err(RecvError::Lagged(missed)) => {
                        format!("event: lagged\ndata: {{\"missed_batches\": {missed}}}\n\n")
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = beat.tick() => ": alive\n\n".to_string(),
                () = tx.closed() => return,
            };
            if !event.is_empty() && tx.send(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    });
    event_stream(rx)
}

/// A `text/event-stream` answer of what `rx` receives, as it comes (a task writes it).
pub fn event_stream(rx: mpsc::Receiver<Bytes>) -> HttpResponse {
    let mut response = Response::new(Events(rx).boxed());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
