//! A simulated Standard Webhooks channel: the receiving end of lockstep's `webhook` kind,
//! as an ERP or custom shop would run it.
//!
//! - `POST /stock`: verifies the Standard Webhooks signature (401 when it does not match),
//!   then takes `{"type": "stock.updated", "data": {"items": [{"sku", "available", "at"}]}}`
//!   and records every value with its arrival time.
//! - `GET /stock?sku=A&sku=B`: the levels it holds, `{"items": [{"sku", "available"}]}`.
//! - It can be told to fail: answer a status (500, 503), hang (a timeout), throttle with
//!   429 + `Retry-After`, or enforce a rate limit with 429s.
//! - It sends inbound events to lockstep, signed as the channel signs them.
//!
//! It runs on its own thread and runtime, so blocking tests can drive it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::signing;

/// How the simulator answers pushes.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Works normally.
    None,
    /// Answers this status without taking anything.
    Status(u16),
    /// Waits this long before answering (longer than the engine's timeout: a hang).
    Hang(Duration),
    /// Answers 429 with `Retry-After` in seconds.
    Throttle { retry_after_s: u64 },
    /// Works, but every answer takes this long (a slow channel).
    Slow(Duration),
}

pub use crate::sim::Arrival;

/// One push request as it arrived.
#[derive(Clone, Debug)]
pub struct PushLog {
    pub at: Instant,
    pub items: Vec<(String, i64)>,
    pub status: u16,
}

struct RateLimit {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

struct State {
    key: Vec<u8>,
    fault: Fault,
    rate: Option<RateLimit>,
    levels: HashMap<String, i64>,
    arrivals: HashMap<String, Vec<Arrival>>,
    pushes: Vec<PushLog>,
    bad_signatures: usize,
}

/// A running simulator.
pub struct WebhookSim {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    secret: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl WebhookSim {
    /// Starts on an ephemeral loopback port, verifying with `secret` (`whsec_...`).
    pub fn start(secret: &str) -> WebhookSim {
        WebhookSim::start_at(secret, 0)
    }

    /// Starts on a fixed loopback port (0: any), for a lockstep configured beforehand.
    pub fn start_at(secret: &str, port: u16) -> WebhookSim {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime starts");
        let state = Arc::new(Mutex::new(State {
            key: signing::key_of(secret),
            fault: Fault::None,
            rate: None,
            levels: HashMap::new(),
            arrivals: HashMap::new(),
            pushes: Vec::new(),
            bad_signatures: 0,
        }));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap_or_else(|e| panic!("binding 127.0.0.1:{port}: {e}"));
        let addr = listener.local_addr().expect("has an address");
        let shared = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        WebhookSim {
            addr,
            state,
            secret: secret.to_string(),
            client: reqwest::Client::new(),
            runtime,
        }
    }

    /// GETs a JSON document (lockstep's API, to check what it holds).
    pub fn get_json(&self, url: &str) -> anyhow::Result<Value> {
        let request = self.client.get(url);
        self.runtime.block_on(async move {
            let response = request.send().await?;
            Ok(response.json::<Value>().await?)
        })
    }

    /// Sends inbound events to lockstep as this channel does: `body` POSTed to `url`
    /// (lockstep's `/webhooks/{name}`), signed, with delivery id `id`. Returns the status
    /// and the body of the answer.
    pub fn send_events(&self, url: &str, id: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).expect("json serializes");
        let mut request = self.client.post(url);
        for (name, value) in signing::signed_headers(&self.secret, id, &bytes) {
            request = request.header(name, value);
        }
        self.runtime.block_on(async move {
            match request.body(bytes).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    (
                        status,
                        serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    )
                }
                Err(e) => (0, Value::String(e.to_string())),
            }
        })
    }

    /// The URL to configure as the channel's `base_url`.
    pub fn url(&self) -> String {
        format!("http://{}/stock", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_fault(&self, fault: Fault) {
        self.lock().fault = fault;
    }

    /// Enforces a rate limit: requests beyond it get 429 with `Retry-After: 1`.
    pub fn set_rate_limit(&self, per_second: f64, burst: u32) {
        self.lock().rate = Some(RateLimit {
            per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        });
    }

    /// Sets a level behind lockstep's back (an edit on the channel).
    pub fn set_level(&self, sku: &str, available: i64) {
        self.lock().levels.insert(sku.to_string(), available);
    }

    /// The level the channel shows now.
    pub fn level(&self, sku: &str) -> Option<i64> {
        self.lock().levels.get(sku).copied()
    }

    pub fn levels(&self) -> HashMap<String, i64> {
        self.lock().levels.clone()
    }

    /// Every value pushed for `sku`, in arrival order.
    pub fn arrivals(&self, sku: &str) -> Vec<Arrival> {
        self.lock().arrivals.get(sku).cloned().unwrap_or_default()
    }

    /// Every push request, in arrival order (taken ones and refused ones).
    pub fn pushes(&self) -> Vec<PushLog> {
        self.lock().pushes.clone()
    }

    pub fn bad_signatures(&self) -> usize {
        self.lock().bad_signatures
    }

    /// Waits until `check` holds of the levels, up to `timeout`; returns how long it took.
    pub fn wait_for(
        &self,
        timeout: Duration,
        check: impl Fn(&HashMap<String, i64>) -> bool,
    ) -> Option<Duration> {
        crate::sim::wait_until(timeout, || check(&self.lock().levels))
    }
}

fn respond(status: u16, body: Value, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("valid status");
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("valid header"),
    );
    if let Some(secs) = retry_after {
        response.headers_mut().insert(
            "retry-after",
            secs.to_string().parse().expect("valid header"),
        );
    }
    response
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    if req.method() == hyper::Method::GET {
        let query = req.uri().query().unwrap_or("").to_string();
        let levels = lock().levels.clone();
        let items: Vec<Value> = query
            .split('&')
            .filter_map(|p| p.strip_prefix("sku="))
            .map(|sku| json!({"sku": sku, "available": levels.get(sku)}))
            .collect();
        return Ok(respond(200, json!({ "items": items }), None));
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(respond(400, json!({"error": "body"}), None)),
    };
    let fault = lock().fault.clone();
    if let Fault::Slow(delay) = fault {
        tokio::time::sleep(delay).await;
    }
    let now = Instant::now();
    let (status, retry_after) = {
        let mut s = lock();
        if !signing::verify(&s.key, &id, &timestamp, &body, &signature) {
            s.bad_signatures += 1;
            (401, None)
        } else {
            let limited = match &mut s.rate {
                Some(rate) => {
                    rate.tokens = (rate.tokens
                        + now.duration_since(rate.last).as_secs_f64() * rate.per_second)
                        .min(rate.burst);
                    rate.last = now;
                    if rate.tokens >= 1.0 {
                        rate.tokens -= 1.0;
                        false
                    } else {
                        true
                    }
                }
                None => false,
            };
            match (&fault, limited) {
                (_, true) => (429, Some(1)),
                (Fault::Status(code), _) => (*code, None),
                (Fault::Throttle { retry_after_s }, _) => (429, Some(*retry_after_s)),
                _ => (200, None),
            }
        }
    };
    let items: Vec<(String, i64)> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["data"]["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|i| Some((i["sku"].as_str()?.to_string(), i["available"].as_i64()?)))
        .collect();
    {
        let mut s = lock();
        // A hang answers 504 in the end and takes nothing.
        let logged = if let Fault::Hang(_) = fault {
            504
        } else {
            status
        };
        s.pushes.push(PushLog {
            at: now,
            items: items.clone(),
            status: logged,
        });
        if status == 200 {
            if let Fault::Hang(_) = fault {
            } else {
                for (sku, available) in &items {
                    s.levels.insert(sku.clone(), *available);
                    s.arrivals.entry(sku.clone()).or_default().push(Arrival {
                        available: *available,
                        at: now,
                    });
                }
            }
        }
    }
    if let Fault::Hang(delay) = fault {
        tokio::time::sleep(delay).await;
        return Ok(respond(504, json!({"error": "hung"}), None));
    }
    Ok(respond(status, json!({"ok": status == 200}), retry_after))
}
