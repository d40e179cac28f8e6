//! What every channel simulator shares, below `market`: an HTTP server on a loopback port
//! with its own runtime (so blocking tests can drive it), JSON replies, arrival records,
//! the faults a simulator can be told to show, a token bucket for its limits, and the
//! webhook sender with the channel's delivery habits switchable on: lost deliveries,
//! duplicates, delays and reordering, retries the way the channel retries; and the
//! `Simulator` trait, what the fleet and the scenarios ask of every kind's simulator.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde_json::Value;

pub type Reply = Response<Full<Bytes>>;

/// One value as it arrived on the simulated channel.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub available: i64,
    pub at: Instant,
}

/// How a simulator answers calls of its API, switchable at any time.
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
    /// Takes every call at once and answers this long after: the change is on the
    /// channel (its own sales land after it) while its answer is on its way back.
    /// Honoured by the Shopify and webhook simulators and those built on `Market`.
    SlowAnswer(Duration),
}

/// What cancels an order a simulator placed.
pub type Cancel<'a> = Box<dyn Fn() + 'a>;

/// What the fleet and the scenarios ask of every channel's simulator, whatever its kind:
/// each kind's file implements it, and `fleet.rs` lists one per kind.
pub trait Simulator: Send + Sync {
    /// What the channel shows, per SKU it lists.
    fn levels(&self) -> std::collections::HashMap<String, i64>;
    /// Every value lockstep wrote for `sku`, in arrival order.
    fn arrivals(&self, sku: &str) -> Vec<Arrival>;
    /// A customer order of `lines`, placed the channel's own way (its stock lowered, its
    /// webhook sent or its listing updated); returns what cancels it.
    fn place(&self, lines: &[(&str, i64)]) -> Cancel<'_>;
    /// Points the channel's webhooks (or inbound events) at `url`, lockstep's
    /// `/webhooks/{name}`; a channel that sends none ignores it.
    fn connect(&self, _url: &str) {}
    /// The delivery habits of the channel's webhooks; a channel that sends none (or that
    /// lockstep polls) ignores them.
    fn set_habits(&self, _habits: &Habits) {}
}

/// A JSON reply with extra headers.
pub fn reply(status: u16, body: &Value, headers: &[(&str, String)]) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("valid status");
    let map = response.headers_mut();
    map.insert(
        "content-type",
        "application/json".parse().expect("valid header"),
    );
    for (name, value) in headers {
        map.insert(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            value.parse().expect("valid header value"),
        );
    }
    response
}

/// A running HTTP server and the runtime it (and the simulator's webhooks) run on.
pub struct Server {
    pub addr: SocketAddr,
    pub runtime: tokio::runtime::Runtime,
}

impl Server {
    /// Serves `handle` on an ephemeral loopback port.
    pub fn start<F, Fut>(handle: F) -> Server
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        Server::start_at(0, handle)
    }

    /// Serves `handle` on loopback port `port` (0: any), for a peer configured beforehand.
    pub fn start_at<F, Fut>(port: u16, handle: F) -> Server
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime starts");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap_or_else(|e| panic!("binding 127.0.0.1:{port}: {e}"));
        let addr = listener.local_addr().expect("has an address");
        let handle = Arc::new(handle);
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let handle = handle.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let reply = handle(req);
                        async move { Ok::<_, Infallible>(reply.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server { addr, runtime }
    }
}

/// How the simulated channel delivers its webhooks. All off by default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Habits {
    /// Chance that a delivery is lost (never sent).
    pub lose: f64,
    /// Chance that a delivery is sent a second time.
    pub duplicate: f64,
    /// Every delivery waits this long first.
    pub delay: Duration,
    /// Every delivery (and duplicate) also waits a random time up to this, so deliveries
    /// arrive out of order.
    pub reorder: Duration,
    /// Send the channel's inventory webhook after each write to it (the echo).
    pub echo: bool,
}

/// One webhook request, built when it is sent (WooCommerce builds payloads at send time).
pub struct Delivery {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What happened to one delivery attempt.
#[derive(Clone, Debug)]
pub struct Sent {
    pub topic: String,
    /// 0: lost on purpose or no connection.
    pub status: u16,
    pub duplicate: bool,
}

/// The webhook side of a simulator.
pub struct Sender {
    client: reqwest::Client,
    pub url: Mutex<Option<String>>,
    pub habits: Mutex<Habits>,
    /// Retries after a failed attempt (Shopify 8, WooCommerce none), with a short
    /// exponential backoff (the real channels' spacing is minutes to hours).
    retries: u32,
    pending: AtomicUsize,
    pub log: Mutex<Vec<Sent>>,
}

impl Sender {
    pub fn new(retries: u32) -> Arc<Sender> {
        Arc::new(Sender {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a client builds"),
            url: Mutex::new(None),
            habits: Mutex::new(Habits::default()),
            retries,
            pending: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        })
    }

    pub fn habits(&self) -> Habits {
        self.habits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note(&self, topic: &str, status: u16, duplicate: bool) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Sent {
                topic: topic.to_string(),
                status,
                duplicate,
            });
    }

    /// Sends a webhook on `runtime` with the current habits; `build` makes the request
    /// when it is sent (and again for a duplicate).
    pub fn send(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        topic: &str,
        build: Arc<dyn Fn() -> Delivery + Send + Sync>,
    ) {
        let Some(url) = self.url.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        let habits = self.habits();
        let mut rng = rand::rng();
        if rng.random_bool(habits.lose.clamp(0.0, 1.0)) {
            self.note(topic, 0, false);
            return;
        }
        let copies = 1 + usize::from(rng.random_bool(habits.duplicate.clamp(0.0, 1.0)));
        for copy in 0..copies {
            let wait = habits.delay + habits.reorder.mul_f64(rng.random::<f64>());
            let (sender, url, build, topic) =
                (self.clone(), url.clone(), build.clone(), topic.to_string());
            self.pending.fetch_add(1, Ordering::SeqCst);
            runtime.spawn(async move {
                tokio::time::sleep(wait).await;
                let mut backoff = Duration::from_millis(100);
                for attempt in 0..=sender.retries {
                    let delivery = build();
                    let mut request = sender.client.post(&url).body(delivery.body);
                    for (name, value) in &delivery.headers {
                        request = request.header(name, value);
                    }
                    let status = match request.send().await {
                        Ok(response) => response.status().as_u16(),
                        Err(_) => 0,
                    };
                    sender.note(&topic, status, copy > 0);
                    if (200..300).contains(&status) || attempt == sender.retries {
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                sender.pending.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    /// Waits until no delivery is waiting or in flight, up to `timeout`.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.pending.load(Ordering::SeqCst) == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Every delivery attempt so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The status each delivery attempt of `topic` (of any, for `None`) was answered,
    /// in order (0: no answer).
    pub fn answers(&self, topic: Option<&str>) -> Vec<u16> {
        self.sent()
            .iter()
            .filter(|s| topic.is_none_or(|t| s.topic == t))
            .map(|s| s.status)
            .collect()
    }
}

/// A channel's own throttle: a bucket of `capacity` that refills at `rate` per second.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub capacity: f64,
    pub rate: f64,
    pub available: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(capacity: f64, rate: f64) -> Bucket {
        Bucket {
            capacity,
            rate,
            available: capacity,
            last: Instant::now(),
        }
    }

    /// Refills for the time passed, then takes `cost` if it is there.
    pub fn take(&mut self, cost: f64) -> bool {
        let now = Instant::now();
        self.available = (self.available + now.duration_since(self.last).as_secs_f64() * self.rate)
            .min(self.capacity);
        self.last = now;
        if self.available >= cost {
            self.available -= cost;
            true
        } else {
            false
        }
    }
}

/// Polls `check` every 5 ms until it holds, up to `timeout`; returns how long it took.
pub fn wait_until(timeout: Duration, check: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}
