//! Routing and handlers. Each handler validates everything before it touches the engine,
//! so a refused request changes nothing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ahash::AHashMap;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::channels::native::{check_sku, parse_count, parse_events, Field};
use crate::channels::Inbound;
use crate::clock::{format_rfc3339, now_micros, Micros};
use crate::config::Config;
use crate::core::event::{Event, EventResult};
use crate::core::records::LogRecord;
use crate::core::{ByChannel, ChannelRules};
use crate::engine::Engine;
use crate::ingest::error::ApiError;
use crate::ingest::sync_api::{channel_unreachable, not_pushing, unknown_channel};
use crate::ingest::{audit_stream, same_machine};
use crate::ingest::{BODIES_IN_FLIGHT_BYTES_MAX, BODY_BYTES_MAX, BODY_DRAIN_BYTES_MAX};
use crate::propagate::reconcile::Reconciler;
use crate::propagate::sync_state::{Action, SyncBook};
use crate::propagate::ChannelLink;

/// Longest a delivery from a channel that never retries waits for room in a busy engine.
const NEVER_REFUSE_WAIT: Duration = Duration::from_secs(30);
/// The longest a webhook's follow-up fetch (a thin notification's order: BigCommerce,
/// Etsy, TikTok Shop) waits for a token of the channel's budget. Senders hold their
/// request open only briefly: Shopify 5 s in all (HTTPS webhook delivery,
/// https://shopify.dev/docs/apps/webhooks/configuration/https), TikTok asks for a 200
/// "immediately" (https://developers.tiktok.com/doc/webhooks-overview/). So 3 s, with
/// room for the fetch itself; past it the delivery is answered 503 without calling, and
/// the sender delivers it again (and the order poll finds it anyway).
const FOLLOW_UP_TOKEN_WAIT_MAX: Duration = Duration::from_secs(3);
/// Default and largest page of `GET /v1/audit`.
const AUDIT_LIMIT_DEFAULT: usize = 100;
const AUDIT_LIMIT_MAX: usize = 1_000;

/// What every handler shares.
pub struct App {
    pub engine: Arc<Engine>,
    pub config: Config,
    pub metrics: PrometheusHandle,
    /// Each configured channel's outbound side.
    pub links: ByChannel<Arc<ChannelLink>>,
    /// What each channel is shown (buffer and cap): the registry of their ids.
    pub(crate) engine_rules: ChannelRules,
    /// Each channel's reconciler.
    pub reconcilers: ByChannel<Arc<Reconciler>>,
    /// The client pushes and reads go out with.
    pub client: reqwest::Client,
    /// Which channels lockstep writes to yet (`propagate/sync_state.rs`).
    pub sync: Arc<SyncBook>,
    /// Makes generated idempotency keys unique within a microsecond.
    put_counter: AtomicU64,
    /// Connections each listener takes at once (`server::connections_max`).
    pub connections_max: usize,
    /// Each channel's name and the key prefix only it writes (`{name}/`).
    key_prefixes: Vec<(String, String)>,
    /// Audit reads decode log chunks: they run on the blocking pool, a few at a time,
    /// never on the workers that answer webhooks.
    audit_slots: tokio::sync::Semaphore,
    /// The operator console's templates and sessions (`console.rs`).
    pub(crate) console: crate::ingest::console::Console,
    /// `lockstep_events_total` and `lockstep_ingest_seconds`, looked up once.
    event_counters: EventCounters,
    ingest_seconds: Histogram,
}

/// `lockstep_events_total`'s series by channel, kind and outcome, each made once: the
/// macro builds its labels (a `String` for the channel) and looks the series up in the
/// registry on every call, which was a visible share of a one-event request.
#[derive(Default)]
struct EventCounters(RwLock<AHashMap<String, ByKindOutcome>>);

/// One channel's `lockstep_events_total` series, by kind and outcome.
type ByKindOutcome = AHashMap<(&'static str, &'static str), Counter>;

impl EventCounters {
    fn increment(&self, channel: &str, kind: &'static str, outcome: &'static str) {
        let known = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some(counter) = known.get(channel).and_then(|c| c.get(&(kind, outcome))) {
            counter.increment(1);
            return;
        }
        drop(known);
        let counter = metrics::counter!("lockstep_events_total", "channel" => channel.to_string(), "kind" => kind, "outcome" => outcome);
        counter.increment(1);
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(channel.to_string())
            .or_default()
            .insert((kind, outcome), counter);
    }
}

/// Audit reads at once; more wait their turn.
const AUDIT_READS_MAX: usize = 2;

/// An answer: a whole body, or a stream (the live audit).
pub type HttpResponse = Response<BoxBody<Bytes, std::convert::Infallible>>;

impl App {
    pub fn new(
        engine: Arc<Engine>,
        config: Config,
        metrics: PrometheusHandle,
        links: ByChannel<Arc<ChannelLink>>,
        client: reqwest::Client,
        sync: Arc<SyncBook>,
    ) -> Arc<App> {
        // The descriptors: raised to the hard limit, and shared between the storage and
        // the connections.
        let fd_limit = crate::ingest::server::raise_fd_limit();
        let connections_max = config
            .server
            .connections_max
            .unwrap_or_else(|| crate::ingest::server::connections_max(fd_limit, engine.shards()));
        tracing::info!(fd_limit, connections_max, "connection limit");
        let engine_rules = config.registry();
        let reconcilers = engine_rules.table(|id, rule| {
            let channel = config.channel(id);
            Arc::new(Reconciler::new(
                links[id].clone(),
                rule.clone(),
                Duration::from_secs(channel.reconcile_interval_s),
                Duration::from_secs(channel.reconcile_grace_s),
                &config.server.data_dir,
            ))
        });
        let key_prefixes = config
            .channels
            .iter()
            .map(|c| (c.name.clone(), format!("{}/", c.name)))
            .collect();
        Arc::new(App {
            reconcilers,
            client,
            sync,
            engine_rules,
            engine,
            config,
            metrics,
            links,
            put_counter: AtomicU64::new(0),
            connections_max,
            key_prefixes,
            audit_slots: tokio::sync::Semaphore::new(AUDIT_READS_MAX),
            event_counters: EventCounters::default(),
            console: Default::default(),
            ingest_seconds: metrics::histogram!("lockstep_ingest_seconds"),
        })
    }

    /// Answers one request; never fails (errors become JSON error responses).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> HttpResponse {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // Without a token, the API and the console serve this machine's programs, not a
        // web page acting through the operator's browser (`same_machine.rs`).
        if self.config.server.admin_token.is_none() && matches!(segments[0], "v1" | "console") {
            if let Err(e) = same_machine::check(req.method(), req.headers()) {
                return error_response(&e);
            }
        }
        let result = match (req.method().clone(), segments.as_slice()) {
            (Method::GET, ["healthz"]) => Ok(self.healthz()),
            // On a listener open to the network, the metrics are the admin's: they name
            // channels, rates and failures (`metrics_listen` is the explicit public door).
            (Method::GET, ["metrics"]) if self.config.server.listen.ip().is_loopback() => {
                Ok(self.render_metrics())
            }
            (Method::GET, ["metrics"]) => self.authorize(&req).map(|()| self.render_metrics()),
            (_, ["v1", ..]) => match self.authorize(&req) {
                Ok(()) => self.route_v1(req, &segments).await,
                Err(e) => Err(e),
            },
            (Method::POST, ["webhooks", channel]) => self.webhook(channel, req).await,
            (_, ["console", ..]) => Ok(self.console(req, &segments).await),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {} {path}", req.method()),
            )),
        };
        result.unwrap_or_else(|e| error_response(&e))
    }

    async fn route_v1(
        &self,
        req: Request<Incoming>,
        segments: &[&str],
    ) -> Result<HttpResponse, ApiError> {
        match (req.method().clone(), &segments[1..]) {
            (Method::POST, ["events"]) => self.post_events(req).await,
            (Method::GET, ["skus", sku]) => self.get_sku(&decode_segment(sku, "sku")?),
            (Method::PUT, ["skus", sku]) => {
                let sku = decode_segment(sku, "sku")?;
                self.put_sku(&sku, req).await
            }
            (Method::GET, ["audit"]) => self.get_audit(req.uri().query().unwrap_or("")).await,
            (Method::GET, ["audit", "stream"]) => {
                let filter = audit_stream::Filter::parse(req.uri().query().unwrap_or(""))?;
                Ok(audit_stream::stream(&self.engine, filter))
            }
            (Method::GET, ["propagation"]) => Ok(self.get_propagation()),
            (Method::POST, ["reconcile"]) => {
                self.post_reconcile(req.uri().query().unwrap_or("")).await
            }
            (Method::GET, ["channels"]) => Ok(self.get_channels()),
            (Method::GET, ["channels", name, "plan"]) => {
                self.get_plan(&decode_segment(name, "channel")?).await
            }
            (Method::POST, ["channels", name, verb @ ("approve" | "pause" | "resume")]) => {
                let name = decode_segment(name, "channel")?;
                let action = match *verb {
                    "approve" => Action::Approve,
                    "pause" => Action::Pause,
                    _ => Action::Resume,
                };
                self.post_action(&name, action, req).await
            }
            (Method::POST, ["channels", name, "import-levels"]) => {
                self.post_import_levels(&decode_segment(name, "channel")?)
                    .await
            }
            (method, _) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {method} {}", req.uri().path()),
            )),
        }
    }

    /// `/v1/*` requires the admin token when one is configured.
    fn authorize(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        let Some(token) = &self.config.server.admin_token else {
            return Ok(());
        };
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong admin token: send Authorization: Bearer <admin_token>",
            ))
        }
    }

    /// `POST /webhooks/{channel}`: the channel's adapter verifies and parses the delivery.
    async fn webhook(
        &self,
        channel: &str,
        req: Request<Incoming>,
    ) -> Result<HttpResponse, ApiError> {
        let started = Instant::now();
        let Some(id) = self.engine_rules.id_of(channel) else {
            return Err(unknown_channel(channel));
        };
        let link = &self.links[id];
        let headers = req.headers().clone();
        let body = read_body(req).await?;
        // Follow-up calls (a thin notification's order) spend the channel's budget, and
        // wait for it no longer than the sender waits for our answer.
        let caller = link
            .caller(self.client.clone())
            .waiting_at_most(FOLLOW_UP_TOKEN_WAIT_MAX);
        let now = now_micros();
        let inbound =
            crate::channels::receive(link.adapter.as_ref(), &caller, &headers, &body, now).await?;
        self.check_fresh(&inbound, now)?;
        let events = inbound.events;
        let mut results = self.submit_counted(channel, events.clone(), started).await;
        if link.adapter.never_refuse() {
            // This sender does not retry: wait for room (well inside its 60 s timeout)
            // rather than refuse. Lines already taken come back as duplicates.
            let deadline = started + NEVER_REFUSE_WAIT;
            while matches!(&results, Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE)
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
                results = self.submit_counted(channel, events.clone(), started).await;
            }
        }
        let results = results?;
        // Every event of the notification is durably taken: a redelivery can be answered
        // without fetching or submitting again.
        if let (Some(seen), Some(id)) = (link.adapter.seen(), inbound.notification) {
            seen.insert(id);
        }
        Ok(results_response(&results))
    }

    /// A delivery whose time (the time of its payload's newest change, as the adapter
    /// reads it from the signed payload; else its events' newest source time) is older
    /// than the idempotency horizon is refused, and nothing of it is applied: its keys may be
    /// forgotten by now, so taking it could count it a second time (a captured, validly
    /// signed webhook sent again weeks later). A channel's own retries come within hours,
    /// far inside any horizon: Shopify retries 8 times over 4 hours "with the original
    /// payload", and says to judge staleness by a timestamp of the payload
    /// (https://shopify.dev/changelog/updates-to-webhook-retry-mechanism).
    fn check_fresh(&self, inbound: &Inbound, now: Micros) -> Result<(), ApiError> {
        // The adapter's `changed_at` is read from the signed payload alone; event times
        // may have come from an unsigned header when the payload lacked one.
        let newest = match inbound.changed_at {
            Some(at) => at,
            None => match inbound.events.iter().map(|e| e.source_ts).max() {
                Some(at) => at,
                None => return Ok(()),
            },
        };
        let days = self.config.server.idempotency_days;
        let horizon = now.saturating_sub(self.config.key_retention_us());
        if newest < horizon {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "stale_delivery",
                format!(
                    "the delivery's newest time is {}, older than the idempotency horizon \
                     ({days} days): its keys may be forgotten, so it could count twice. \
                     Nothing was applied",
                    format_rfc3339(newest)
                ),
            ));
        }
        Ok(())
    }

    /// Keys and sources are namespaced by who sent them: a channel's adapter keys its
    /// events `{channel}/...`, and nobody else may write there (a native event keyed
    /// `shop/1041/7/placed` would make Shopify's real order a duplicate), nor name a
    /// configured channel as its source. `sender`: the channel the events came in from,
    /// or `api`.
    fn check_namespaces(&self, sender: &str, events: &[Event]) -> Result<(), ApiError> {
        for (i, event) in events.iter().enumerate() {
            for (other, prefix) in &self.key_prefixes {
                if other == sender {
                    continue;
                }
                if sender == "api" && event.source == *other {
                    return Err(ApiError::field(
                        "invalid_source",
                        format!("events[{i}].source"),
                        format!("{other:?} is a configured channel: its events come from its own webhooks, not the API"),
                    ));
                }
                if event.key.starts_with(prefix.as_str()) {
                    return Err(ApiError::field(
                        "reserved_idempotency_key",
                        format!("events[{i}].idempotency_key"),
                        format!("keys starting {other:?}/ belong to that channel's own events"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Submits events, then counts them by channel, kind and outcome and times the
    /// request: the one path every event-carrying endpoint shares.
    async fn submit_counted(
        &self,
        channel: &str,
        events: Vec<Event>,
        started: Instant,
    ) -> Result<Vec<EventResult>, ApiError> {
        self.check_namespaces(channel, &events)?;
        let kinds: Vec<&'static str> = events.iter().map(|e| e.kind.as_str()).collect();
        let results = self.engine.submit(events).await?;
        for (kind, result) in kinds.iter().zip(&results) {
            self.event_counters
                .increment(channel, kind, result.outcome.as_str());
        }
        self.ingest_seconds.record(started.elapsed().as_secs_f64());
        Ok(results)
    }

    /// `POST /v1/reconcile?channel=NAME`: one reconciliation pass now; answers its report.
    async fn post_reconcile(&self, query: &str) -> Result<HttpResponse, ApiError> {
        let name = form_pairs(query)?
            .into_iter()
            .find(|(k, _)| k == "channel")
            .map(|(_, v)| v)
            .ok_or_else(|| {
                ApiError::field("invalid_channel", "channel", "is required: ?channel=NAME")
            })?;
        let id = self
            .engine_rules
            .id_of(&name)
            .ok_or_else(|| unknown_channel(&name))?;
        let reconciler = &self.reconcilers[id];
        if !reconciler.link.pushing() {
            return Err(not_pushing(&name, *reconciler.link.sync.borrow()));
        }
        // A quota kept for pushes and orders is known before any read: said as such, not
        // as a channel that could not be read (which a pass that reaches it midway says).
        if let Some(reason) = reconciler.link.adapter.reads_held() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "quota_reserved",
                reason,
            ));
        }
        let report = reconciler
            .pass(&self.engine, &self.client)
            .await
            .map_err(|e| channel_unreachable(&name, e))?;
        Ok(json_response(
            StatusCode::OK,
            &json!({"channel": name, "report": report.json()}),
        ))
    }

    /// `GET /v1/propagation`: per channel, propagation percentiles and outbox depth.
    fn get_propagation(&self) -> HttpResponse {
        let mut channels = serde_json::Map::new();
        for link in self.links.values() {
            let mut summary = link.timing.summary();
            summary["outbox_skus"] = json!(link.outbox.len());
            channels.insert(link.adapter.name().to_string(), summary);
        }
        json_response(StatusCode::OK, &json!({ "channels": channels }))
    }

    async fn post_events(&self, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
        let started = Instant::now();
        let header_key = header_str(&req, "idempotency-key")?.map(str::to_string);
        let body = read_body(req).await?;
        let events = parse_events(&body, header_key.as_deref(), now_micros())?;
        let results = self.submit_counted("api", events, started).await?;
        Ok(results_response(&results))
    }

    fn get_sku(&self, sku: &str) -> Result<HttpResponse, ApiError> {
        Ok(json_response(StatusCode::OK, &self.sku_json(sku)?))
    }

    /// A SKU's stock and, per channel, what it should show and what it was told:
    /// `GET /v1/skus/{sku}` and the console's SKU page.
    pub(crate) fn sku_json(&self, sku: &str) -> Result<Value, ApiError> {
        sku_state(&self.engine, &self.engine_rules, sku)
    }

    async fn put_sku(&self, sku: &str, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
        let started = Instant::now();
        check_sku(sku, Field::named("sku"))?;
        let header_key = header_str(&req, "idempotency-key")?.map(str::to_string);
        let body = read_body(req).await?;
        let received_at = now_micros();
        // Checked and encoded as `POST /v1/events` does: a raw `abc#0` was the key that
        // request gives its first event.
        let key = match header_key {
            Some(key) => crate::channels::native::request_key(&key)?,
            None => format!(
                "put/{received_at}-{}",
                self.put_counter.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let event = parse_count(sku, &body, key, received_at)?;
        let result = self
            .submit_counted("api", vec![event], started)
            .await?
            .pop()
            .expect("one result per event");
        Ok(body_response(StatusCode::OK, &ResultBody::of(&result)))
    }

    async fn get_audit(&self, query: &str) -> Result<HttpResponse, ApiError> {
        let mut sku = None;
        let mut since = 0u64;
        let mut limit = AUDIT_LIMIT_DEFAULT;
        for (name, value) in form_pairs(query)? {
            match name.as_str() {
                "sku" if !value.is_empty() => {
                    check_sku(&value, Field::named("sku"))?;
                    sku = Some(value);
                }
                "sku" => {}
                "since" => {
                    since = value.parse().map_err(|_| {
                        ApiError::field(
                            "invalid_since",
                            "since",
                            "must be a sequence number (0 or more)",
                        )
                    })?
                }
                "limit" => {
                    limit = value
                        .parse()
                        .ok()
                        .filter(|l| (1..=AUDIT_LIMIT_MAX).contains(l))
                        .ok_or_else(|| {
                            ApiError::field(
                                "invalid_limit",
                                "limit",
                                format!("must be 1 to {AUDIT_LIMIT_MAX}"),
                            )
                        })?
                }
                _ => {}
            }
        }
        let _slot = self
            .audit_slots
            .acquire()
            .await
            .map_err(|_| ApiError::from(crate::engine::EngineError::Stopped))?;
        let engine = self.engine.clone();
        let records = tokio::task::spawn_blocking(move || {
            let records = engine.audit(sku.as_deref(), since, limit)?;
            Ok::<_, crate::engine::EngineError>(records.iter().map(audit_json).collect::<Vec<_>>())
        })
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "audit_failed",
                format!("the audit read ended: {e}"),
            )
        })??;
        // Changes of the settings that decide stock, each from the record it took effect.
        let settings = self.engine.settings_history().changes_json(since);
        Ok(json_response(
            StatusCode::OK,
            &json!({ "records": records, "settings_changes": settings,
                     "sync_changes": self.sync.changes_json() }),
        ))
    }

    /// `GET /healthz`: each shard's state; 503 when any shard cannot accept or durably
    /// apply events (its SKUs would be refused), 200 otherwise.
    fn healthz(&self) -> HttpResponse {
        let shards = self.engine.health();
        let ok = shards.iter().all(|s| s.state == "ok");
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(
            status,
            &json!({"status": if ok { "ok" } else { "unavailable" },
                    "shards": shards.len(), "shard_states": shards}),
        )
    }

    pub fn render_metrics(&self) -> HttpResponse {
        let mut response = Response::new(Full::new(Bytes::from(self.metrics.render())).boxed());
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    }
}

/// A request header lockstep acts on: at most once (two `Idempotency-Key`s would make the
/// key whichever one a reader takes), visible ASCII.
fn header_str<'a>(req: &'a Request<Incoming>, name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut values = req.headers().get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::field(
            "invalid_header",
            name,
            "is given more than once; send it once",
        ));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| ApiError::field("invalid_header", name, "must be visible ASCII"))
}

/// Reads a body of at most `BODY_BYTES_MAX` bytes; a larger one is 413. A moderately
/// larger one is read to its end and dropped first, so that the client, still writing,
/// gets to read the 413 instead of a reset connection; past `BODY_DRAIN_BYTES_MAX` the
/// connection is simply closed.
pub(crate) async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is over {BODY_BYTES_MAX} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > BODY_DRAIN_BYTES_MAX as u64) {
        return Err(too_large());
    }
    // A body trickled in byte by byte holds a connection and a worker: it must be whole
    // within BODY_READ_TIMEOUT.
    match tokio::time::timeout(BODY_READ_TIMEOUT, read_body_frames(req, declared)).await {
        Ok(read) => read,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// How long a request body may take to arrive.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The bytes of the bodies being read now, against `BODIES_IN_FLIGHT_BYTES_MAX`.
static BODIES_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// One body's share of `BODIES_IN_FLIGHT`, given back however its read ends.
struct InFlight(usize);

impl InFlight {
    /// Takes `bytes` more for this body; `false` (nothing taken) past the budget. Added
    /// only if it fits (compare and swap): an add taken back after the fact let a body
    /// read at the same moment on another worker see the budget full for an instant, and
    /// two bodies at its edge were both refused where one fitted.
    fn take(&mut self, bytes: usize) -> bool {
        let fits = BODIES_IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes)
                    .filter(|total| *total <= BODIES_IN_FLIGHT_BYTES_MAX)
            })
            .is_ok();
        if fits {
            self.0 += bytes;
        }
        fits
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        BODIES_IN_FLIGHT.fetch_sub(self.0, Ordering::AcqRel);
    }
}

async fn read_body_frames(
    req: Request<Incoming>,
    declared: Option<u64>,
) -> Result<Bytes, ApiError> {
    let mut share = InFlight(0);
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is over {BODY_BYTES_MAX} bytes"),
        )
    };
    let mut body = req.into_body();
    // Room for what the request says it sends, up to 64 KiB: a declared length is the
    // sender's word, not memory to set aside before a byte has come.
    let mut kept = Vec::with_capacity(declared.map_or(0, |len| len.min(64 * 1024) as usize));
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_read_failed",
                format!("could not read the body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total > BODY_DRAIN_BYTES_MAX {
                return Err(too_large());
            }
            if total <= BODY_BYTES_MAX {
                if !share.take(data.len()) {
                    return Err(ApiError {
                        retry_after: Some(crate::engine::RETRY_AFTER_SECS),
                        ..ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "busy",
                            format!(
                                "the request bodies being read hold {BODIES_IN_FLIGHT_BYTES_MAX} \
                                 bytes already; retry shortly"
                            ),
                        )
                    });
                }
                kept.extend_from_slice(&data);
            }
        }
    }
    if total > BODY_BYTES_MAX {
        return Err(too_large());
    }
    Ok(Bytes::from(kept))
}

pub(crate) fn decode_segment(segment: &str, field: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            // Named for what the segment is: a channel's name is not a SKU.
            let code = match field {
                "channel" => "invalid_channel",
                _ => "invalid_sku",
            };
            ApiError::field(code, field, "is not valid UTF-8 after percent-decoding")
        })
}

/// `a=1&b=x%20y` → pairs, with `+` as space. A name given twice (`?channel=a&channel=b`)
/// is refused, never settled by taking the first or the last: the two readers of one
/// request (a proxy's filter and lockstep, a form's check and its action) could each take
/// another. So is a name or value that is not UTF-8 once decoded, rather than changed
/// into replacement characters. 400 `invalid_query`, naming the field.
pub(crate) fn form_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    // The names seen: a set, because a form's body may hold a megabyte of distinct names
    // and a scan of the pairs per name would be quadratic in them.
    let mut seen = ahash::AHashSet::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str, field: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| {
                    ApiError::field(
                        "invalid_query",
                        field,
                        "is not valid UTF-8 after percent-decoding",
                    )
                })
        };
        let name = decode(name, "query")?;
        let value = decode(value, &name)?;
        if !seen.insert(name.clone()) {
            return Err(ApiError::field(
                "invalid_query",
                &name,
                "is given more than once; give it once",
            ));
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// One event's answer, serialized straight from the result (no `Value` tree on the
/// ingest path). Fields in name order, as a `json!` map gives them.
#[derive(Serialize)]
pub struct ResultBody<'a> {
    available: i64,
    committed: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_outcome: Option<&'static str>,
    idempotency_key: &'a str,
    on_hand: i64,
    outcome: &'static str,
    oversell: bool,
    seq: u64,
    sku: &'a str,
}

impl<'a> ResultBody<'a> {
    pub fn of(result: &'a EventResult) -> ResultBody<'a> {
        ResultBody {
            available: result.available,
            committed: result.committed,
            first_outcome: result.first_outcome.map(|o| o.as_str()),
            idempotency_key: &result.key,
            on_hand: result.on_hand,
            outcome: result.outcome.as_str(),
            oversell: result.oversell,
            seq: result.seq,
            sku: &result.sku,
        }
    }
}

/// `{"results": [...]}`: the answer of every event-carrying request.
fn results_response(results: &[EventResult]) -> HttpResponse {
    #[derive(Serialize)]
    struct Results<'a> {
        results: Vec<ResultBody<'a>>,
    }
    body_response(
        StatusCode::OK,
        &Results {
            results: results.iter().map(ResultBody::of).collect(),
        },
    )
}

pub fn audit_json(record: &LogRecord) -> Value {
    json!({
        "seq": record.seq,
        "sku": record.sku,
        "kind": record.kind.as_str(),
        "qty": record.qty,
        "source": record.source,
        "source_ts": format_rfc3339(record.source_ts),
        "received_at": format_rfc3339(record.received_at),
        "applied_at": format_rfc3339(record.applied_at),
        "idempotency_key": record.key,
        "order_id": record.order_id,
        "line_id": record.line_id,
        "available_before": record.available_before,
        "available_after": record.available_after,
        "on_hand_after": record.on_hand_after,
        "committed_after": record.committed_after,
        "outcome": record.outcome.as_str(),
        "oversell": record.oversell,
    })
}

pub fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    body_response(status, body)
}

/// A JSON answer of anything serializable.
fn body_response(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    let mut response = Response::new(
        Full::new(Bytes::from(
            serde_json::to_vec(body).expect("json serializes"),
        ))
        .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn error_response(error: &ApiError) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(error.body())).boxed());
    *response.status_mut() = error.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = error.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if error.status == StatusCode::UNAUTHORIZED {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// A SKU's stock and what each channel is shown, as `GET /v1/skus/{sku}` answers it.
pub(crate) fn sku_state(
    engine: &Engine,
    rules: &ChannelRules,
    sku: &str,
) -> Result<Value, ApiError> {
    check_sku(sku, Field::named("sku"))?;
    let head = engine.head(sku)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_sku",
            format!("no events for SKU {sku:?}"),
        )
    })?;
    let available = head.on_hand - head.committed;
    let channels: serde_json::Map<String, Value> = rules
        .iter()
        .map(|(_, rule)| {
            let view = head.channels.iter().find(|m| m.channel == rule.name).map(|m| &m.view);
            let value = json!({
                "target": rule.target(available),
                "pushed": view.and_then(|v| v.acked),
                "pushed_at": view.filter(|v| v.acked.is_some()).map(|v| format_rfc3339(v.acked_at)),
                "expected": view.and_then(|v| v.expected),
                "unexplained": view.filter(|v| now_micros() < v.unexplained_until).map_or(0, |v| v.unexplained),
                "reported": view.and_then(|v| v.pending.as_ref()).map(|p| p.level),
                "buffer": rule.buffer,
                "max": rule.max,
            });
            (rule.name.clone(), value)
        })
        .collect();
    Ok(json!({
        "sku": sku,
        "on_hand": head.on_hand,
        "committed": head.committed,
        "available": available,
        "channels": channels,
        "shard": engine.shard_of(sku),
        "last_seq": head.last_seq,
        "updated_at": format_rfc3339(head.updated_at),
    }))
}
