//! The operator console at `/console`, served by the engine's own listener: pages
//! rendered on the server (minijinja templates compiled into the binary, `console/`),
//! a little JavaScript for the live parts (server-sent events), no CDN, nothing fetched
//! from elsewhere.
//!
//! Here: access (sign-in, sessions, CSRF, the security headers), routing, the audit page
//! and the channel actions. Beside it: `overview.rs` (what the overview and its stream
//! show), `search.rs` (SKU search by prefix or substring), `sku.rs` (a SKU's page, its
//! stream and the count set from it); the templates, stylesheet and script are the other
//! files of `console/`.
//!
//! Why server-rendered: a small team keeps one language and one build, the pages are
//! fast at any catalog size because the server pages the data, and the only moving
//! parts in the browser are rows a stream updates in place.
//!
//! Access: with an `admin_token` configured, a login form takes the token and sets a
//! session cookie (`HttpOnly`, `SameSite=Strict`, a random id, 12 h); the token never
//! travels in a URL and never reaches the page. Without a token the console is served
//! only when the listener is on loopback. Every form that acts carries the session's
//! CSRF token, and every answer carries a content security policy that lets the page
//! load nothing but its own assets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use minijinja::{context, Environment};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::ingest::api::{form_pairs, read_body, App, HttpResponse};
use crate::ingest::audit_stream;
use crate::propagate::sync_state::{Action, Changed};
use crate::propagate::ChannelLink;

mod overview;
mod search;
mod sku;

const COOKIE: &str = "lockstep_session";
/// How long a session lasts from sign-in.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3_600);
/// Sessions kept at once; signing in past it forgets the oldest.
const SESSIONS_MAX: usize = 1_000;
/// Longest name an operator signs in with.
const NAME_BYTES_MAX: usize = 64;
/// How often the overview's stream sends the channels.
const OVERVIEW_EVERY: Duration = Duration::from_secs(1);
/// What a console page may load: its own assets, its own streams, nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A signed-in browser.
#[derive(Clone)]
struct Session {
    expires: Instant,
    /// Who signed in (the name they gave), for the audit of what they do.
    name: String,
    /// Sent back by every form that acts, so another site cannot act in its name.
    csrf: String,
}

/// The console's templates and sessions.
pub struct Console {
    /// The CSRF token of a console served without sign-in (loopback, no token).
    loopback_csrf: String,
    templates: Environment<'static>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Default for Console {
    fn default() -> Console {
        let mut templates = Environment::new();
        for (name, text) in [
            ("layout.html", include_str!("console/layout.html")),
            ("login.html", include_str!("console/login.html")),
            ("overview.html", include_str!("console/overview.html")),
            ("skus.html", include_str!("console/skus.html")),
            ("sku.html", include_str!("console/sku.html")),
            ("audit.html", include_str!("console/audit.html")),
        ] {
            templates
                .add_template(name, text)
                .expect("the console's templates parse");
        }
        // A path segment: everything but letters and digits percent-encoded, so a SKU
        // with `/` or `?` in it stays one segment (`urlencode` leaves `/` as it is).
        templates.add_filter("segment", |value: String| {
            percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        });
        Console {
            loopback_csrf: random_token(),
            templates,
            sessions: Mutex::new(HashMap::new()),
        }
    }
}

/// 32 random bytes, hex: a session id or a CSRF token.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Console {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start_session(&self, name: String) -> (String, Session) {
        let mut sessions = self.sessions();
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= SESSIONS_MAX {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
            {
                sessions.remove(&oldest);
            }
        }
        let session = Session {
            expires: now + SESSION_LIFETIME,
            name,
            csrf: random_token(),
        };
        let id = random_token();
        sessions.insert(id.clone(), session.clone());
        (id, session)
    }

    fn session_of(&self, req: &Request<Incoming>) -> Option<(String, Session)> {
        let id = cookie(req, COOKIE)?;
        let sessions = self.sessions();
        let session = sessions.get(id).filter(|s| s.expires > Instant::now())?;
        Some((id.to_string(), session.clone()))
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> String {
        self.templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .unwrap_or_else(|e| format!("the console could not render {name}: {e}"))
    }
}

/// A form's body as its fields (`form_pairs`: a field given twice, or not UTF-8, is
/// refused).
fn form_of(body: &[u8]) -> Result<Vec<(String, String)>, crate::refusal::ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| crate::refusal::ApiError::field("invalid_query", "form", "is not UTF-8"))?;
    form_pairs(text)
}

/// A form's (or query's) value of `name`, empty when it has none.
fn value_of(pairs: &[(String, String)], name: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A console answer with its security headers.
fn page(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn redirect(to: &'static str) -> HttpResponse {
    let mut response = page(StatusCode::SEE_OTHER, "text/plain", "");
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    response
}

/// Who may see the console: a session, or anyone on a loopback-only listener without a
/// token; otherwise the answer to give instead.
enum Access {
    Session(Session),
    Loopback,
}

impl App {
    fn console_access(&self, req: &Request<Incoming>) -> Result<Access, Box<HttpResponse>> {
        if self.config.server.admin_token.is_none() {
            return if self.config.server.listen.ip().is_loopback() {
                Ok(Access::Loopback)
            } else {
                Err(Box::new(page(
                    StatusCode::FORBIDDEN,
                    "text/plain; charset=utf-8",
                    "the console is served off loopback only with an admin_token configured",
                )))
            };
        }
        match self.console.session_of(req) {
            Some((_, session)) => Ok(Access::Session(session)),
            None => Err(Box::new(redirect("/console/login"))),
        }
    }

    /// Every `/console` request.
    pub(crate) async fn console(&self, req: Request<Incoming>, segments: &[&str]) -> HttpResponse {
        match (req.method().clone(), &segments[1..]) {
            (Method::GET, ["assets", "console.css"]) => page(
                StatusCode::OK,
                "text/css; charset=utf-8",
                include_str!("console/console.css"),
            ),
            (Method::GET, ["assets", "console.js"]) => page(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                include_str!("console/console.js"),
            ),
            (Method::GET, ["login"]) => self.login_page(None, StatusCode::OK),
            (Method::POST, ["login"]) => self.sign_in(req).await,
            (Method::POST, ["logout"]) => self.sign_out(req).await,
            (Method::GET, [] | [""]) => match self.console_access(&req) {
                Ok(access) => self.overview(&access, &done_of(req.uri().query())).await,
                Err(answer) => *answer,
            },
            (Method::GET, ["stream", "overview"]) => match self.console_access(&req) {
                Ok(_) => self.overview_stream(),
                Err(answer) => *answer,
            },
            (Method::GET, ["skus"]) => match self.console_access(&req) {
                Ok(access) => {
                    self.skus_page(&access, req.uri().query().unwrap_or(""))
                        .await
                }
                Err(answer) => *answer,
            },
            (Method::GET, ["audit"]) => match self.console_access(&req) {
                Ok(access) => self.audit_page(&access, req.uri().query().unwrap_or("")),
                Err(answer) => *answer,
            },
            (Method::GET, ["skus", sku]) => match self.console_access(&req) {
                Ok(access) => self.sku_page(&access, sku, &done_of(req.uri().query())),
                Err(answer) => *answer,
            },
            (
                Method::POST,
                ["channels", name, verb @ ("approve" | "pause" | "resume" | "reconcile")],
            ) => match self.console_access(&req) {
                Ok(access) => self.channel_action(&access, req, name, verb).await,
                Err(answer) => *answer,
            },
            (Method::POST, ["skus", sku, "count"]) => match self.console_access(&req) {
                Ok(access) => self.count_action(&access, req, sku).await,
                Err(answer) => *answer,
            },
            (Method::GET, ["stream", "sku", sku]) => match self.console_access(&req) {
                Ok(_) => self.sku_stream(sku),
                Err(answer) => *answer,
            },
            (Method::GET, ["stream", "audit"]) => match self.console_access(&req) {
                Ok(_) => match audit_stream::Filter::parse(req.uri().query().unwrap_or("")) {
                    Ok(filter) => with_csp(audit_stream::stream(&self.engine, filter)),
                    Err(e) => page(e.status, "text/plain; charset=utf-8", e.message),
                },
                Err(answer) => *answer,
            },
            _ => page(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "no such page",
            ),
        }
    }

    fn login_page(&self, error: Option<&str>, status: StatusCode) -> HttpResponse {
        if self.config.server.admin_token.is_none() {
            return redirect("/console");
        }
        let html = self.console.render(
            "login.html",
            context! { title => "Sign in", signed_in => false, error => error },
        );
        page(status, "text/html; charset=utf-8", html)
    }

    /// The token from the form, compared in constant time; a session cookie on success.
    async fn sign_in(&self, req: Request<Incoming>) -> HttpResponse {
        let Some(token) = &self.config.server.admin_token else {
            return redirect("/console");
        };
        let body = match read_body(req).await {
            Ok(body) => body,
            Err(e) => return self.login_page(Some(&e.message), e.status),
        };
        let form = match form_of(&body) {
            Ok(form) => form,
            Err(e) => return self.login_page(Some(&e.message), e.status),
        };
        let field = |name: &str| value_of(&form, name).trim().to_string();
        let given = field("token");
        let name = field("name");
        let name = if name.is_empty() {
            "admin".to_string()
        } else {
            name
        };
        if name.len() > NAME_BYTES_MAX
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "._-@".contains(c))
        {
            return self.login_page(
                Some("A name is up to 64 letters, digits, '.', '_', '-' or '@'."),
                StatusCode::BAD_REQUEST,
            );
        }
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return self.login_page(
                Some("That is not the admin token."),
                StatusCode::UNAUTHORIZED,
            );
        }
        let (id, _) = self.console.start_session(name);
        let mut response = redirect("/console");
        let cookie = format!(
            "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_LIFETIME.as_secs()
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(SET_COOKIE, value);
        }
        response
    }

    async fn sign_out(&self, req: Request<Incoming>) -> HttpResponse {
        let Some((id, session)) = self.console.session_of(&req) else {
            return redirect("/console/login");
        };
        let body = read_body(req).await.unwrap_or_default();
        // A form that cannot be read has no token that matches.
        let csrf = form_of(&body)
            .map(|form| value_of(&form, "csrf"))
            .unwrap_or_default();
        if !bool::from(csrf.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return page(
                StatusCode::FORBIDDEN,
                "text/plain; charset=utf-8",
                "the form's CSRF token does not match the session",
            );
        }
        self.console.sessions().remove(&id);
        let mut response = redirect("/console/login");
        response.headers_mut().insert(
            SET_COOKIE,
            HeaderValue::from_static(
                "lockstep_session=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        );
        response
    }

    /// Each channel's kind by name, for its row.
    fn kinds(&self) -> HashMap<String, String> {
        self.config
            .channels
            .iter()
            .map(|c| (c.name.clone(), c.kind.name()))
            .collect()
    }

    /// The channels, in the order the configuration names them.
    fn channel_links(&self) -> Vec<Arc<ChannelLink>> {
        self.links.values().cloned().collect()
    }

    async fn overview(&self, access: &Access, done: &str) -> HttpResponse {
        let (csrf, _) = self.who(access);
        let rows = overview::channel_rows(&self.channel_links(), &self.kinds()).await;
        let html = self.console.render(
            "overview.html",
            context! {
                title => "Overview",
                done => done,
                signed_in => matches!(access, Access::Session(_)),
                csrf => csrf,
                channels => minijinja::Value::from_serialize(&rows),
                engine => minijinja::Value::from_serialize(overview::engine_row(&self.engine)),
            },
        );
        page(StatusCode::OK, "text/html; charset=utf-8", html)
    }

    /// `event: channels` and `event: engine` every second, for as long as the page is
    /// open.
    fn overview_stream(&self) -> HttpResponse {
        let links = self.channel_links();
        let kinds = self.kinds();
        let engine = self.engine.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(OVERVIEW_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = tx.closed() => return,
                }
                let channels = overview::channel_rows(&links, &kinds).await;
                let event = format!(
                    "event: channels\ndata: {}\n\nevent: engine\ndata: {}\n\n",
                    Value::Array(channels),
                    overview::engine_row(&engine)
                );
                if tx.send(Bytes::from(event)).await.is_err() {
                    return;
                }
            }
        });
        with_csp(audit_stream::event_stream(rx))
    }

    /// The session's CSRF token and whether someone is signed in, for every page.
    fn who(&self, access: &Access) -> (String, bool) {
        match access {
            Access::Session(s) => (s.csrf.clone(), true),
            Access::Loopback => (self.console.loopback_csrf.clone(), false),
        }
    }

    /// Who acts, for the audit.
    fn actor(access: &Access) -> String {
        match access {
            Access::Session(s) => s.name.clone(),
            Access::Loopback => "loopback".to_string(),
        }
    }

    /// The form of an action, once its CSRF token matches the session's; else the
    /// answer to give.
    async fn action_form(
        &self,
        access: &Access,
        req: Request<Incoming>,
    ) -> Result<Vec<(String, String)>, Box<HttpResponse>> {
        let body = read_body(req)
            .await
            .map_err(|e| Box::new(page(e.status, "text/plain; charset=utf-8", e.message)))?;
        let form = form_of(&body)
            .map_err(|e| Box::new(page(e.status, "text/plain; charset=utf-8", e.message)))?;
        let csrf = value_of(&form, "csrf");
        let (expected, _) = self.who(access);
        if !bool::from(csrf.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(Box::new(page(
                StatusCode::FORBIDDEN,
                "text/plain; charset=utf-8",
                "the form's CSRF token does not match the session: reload the page",
            )));
        }
        Ok(form)
    }

    /// Approve, pause, resume or reconcile a channel from the overview; back to the
    /// overview with what was done.
    async fn channel_action(
        &self,
        access: &Access,
        req: Request<Incoming>,
        name: &str,
        verb: &str,
    ) -> HttpResponse {
        if let Err(answer) = self.action_form(access, req).await {
            return *answer;
        }
        let by = App::actor(access);
        let done = match verb {
            "reconcile" => match self
                .reconcilers
                .values()
                .find(|r| r.link.adapter.name() == name)
            {
                Some(r) if !r.link.pushing() => format!(
                    "{name} is {}: not reconciled",
                    r.link.sync.borrow().as_str()
                ),
                Some(r) => match r.pass(&self.engine, &self.client).await {
                    Ok(report) => format!(
                        "{name} reconciled: {} checked, {} lowered, {} raised, {} waiting{}",
                        report.checked,
                        report.lowered,
                        report.raised,
                        report.waiting,
                        report
                            .unread_reason
                            .as_ref()
                            .map_or_else(String::new, |reason| format!(
                                ", {} could not be read and were skipped: {reason}",
                                report.unread
                            )),
                    ),
                    Err(e) => format!("reconciling {name} failed: {e}"),
                },
                None => format!("no channel named {name}"),
            },
            _ => {
                let (action, done) = match verb {
                    "approve" => (Action::Approve, "approved"),
                    "pause" => (Action::Pause, "paused"),
                    _ => (Action::Resume, "resumed"),
                };
                match self.sync.act(name, action, &by) {
                    Ok(Some(Changed::Now)) => format!("{name}: {done} by {by}"),
                    Ok(Some(Changed::Already)) => {
                        format!("{name} was {} already", self.sync.state(name).as_str())
                    }
                    Ok(Some(Changed::Refused(why))) => why,
                    Ok(None) => format!("no channel named {name}"),
                    Err(e) => format!("not done: the change could not be stored: {e}"),
                }
            }
        };
        done_redirect("/console", &done)
    }

    /// Every record as it is committed, filtered by channel, kind and outcome (the
    /// filters checked as the stream checks them).
    fn audit_page(&self, access: &Access, query: &str) -> HttpResponse {
        let pairs = match audit_stream::Filter::parse(query).and_then(|_| form_pairs(query)) {
            Ok(pairs) => pairs,
            Err(e) => return page(e.status, "text/plain; charset=utf-8", e.message),
        };
        let param = |name: &str| value_of(&pairs, name);
        // The stream's query, rebuilt from the checked filters only.
        let stream_query: Vec<String> = ["channel", "kind", "outcome"]
            .iter()
            .filter(|name| !param(name).is_empty())
            .map(|name| {
                format!(
                    "{name}={}",
                    percent_encoding::utf8_percent_encode(
                        &param(name),
                        percent_encoding::NON_ALPHANUMERIC
                    )
                )
            })
            .collect();
        let mut outcomes: Vec<&str> = crate::core::event::Outcome::ALL
            .iter()
            .map(|o| o.as_str())
            .collect();
        outcomes.extend(audit_stream::OUTCOMES_BESIDE);
        let (csrf, signed_in) = self.who(access);
        let html = self.console.render(
            "audit.html",
            context! {
                title => "Audit", signed_in, csrf,
                query => stream_query.join("&"),
                channel => param("channel"), kind => param("kind"), outcome => param("outcome"),
                channels => self.config.channels.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                kinds => crate::core::event::EventKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                outcomes => outcomes,
            },
        );
        page(StatusCode::OK, "text/html; charset=utf-8", html)
    }
}

/// The key a redirect's `done` message is signed with: this process's own, drawn at
/// random, so a link made anywhere else cannot put its words on an operator's page (a
/// notice of "token rotated: paste it at ..." under the console's name).
fn done_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(rand::random)
}

fn done_mac(done: &str) -> Vec<u8> {
    crate::channels::body_hmac::mac(done_key(), &[done.as_bytes()])
}

/// Back to `to`, saying what was done (`?done=`, signed in `&sig=`, shown once on the
/// page).
fn done_redirect(to: &str, done: &str) -> HttpResponse {
    let mut response = page(StatusCode::SEE_OTHER, "text/plain", "");
    let location = format!(
        "{to}?done={}&sig={}",
        percent_encoding::utf8_percent_encode(done, percent_encoding::NON_ALPHANUMERIC),
        crate::channels::body_hmac::hex(&done_mac(done))
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// What a redirect of this process said was done: nothing for a message it did not
/// sign, or a query it cannot read (only shown, never acted on).
fn done_of(query: Option<&str>) -> String {
    let Ok(pairs) = form_pairs(query.unwrap_or("")) else {
        return String::new();
    };
    let done = value_of(&pairs, "done");
    let signed = crate::channels::body_hmac::matches(
        &value_of(&pairs, "sig"),
        &done_mac(&done),
        false,
        true,
    );
    if signed {
        done
    } else {
        String::new()
    }
}

/// A stream answer with the console's policy.
fn with_csp(mut response: HttpResponse) -> HttpResponse {
    response
        .headers_mut()
        .insert("content-security-policy", HeaderValue::from_static(CSP));
    response
}
