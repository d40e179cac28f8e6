//! A simulated Standard Webhooks channel: the receiving end of lockstep's `webhook` kind,
//! as an ERP or custom shop would run it. It owns the kind's endpoint, its signature
//! check and its push log; the server, the levels, the arrivals, the fault and the rate
//! bucket are a `market::Market`'s.
//!
//! The wire is lockstep's own (the README's `webhook` kind: the body is ours); the
//! signature is the Standard Webhooks specification's (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256>`, the key the base64 part of a `whsec_`
//! secret: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md),
//! checked by `signing.rs`, written from that page, not from the engine's code.
//!
//! - `POST /stock`: verifies the Standard Webhooks signature (401 when it does not match),
//!   then takes `{"type": "stock.updated", "data": {"items": [{"sku", "available", "at"}]}}`
//!   and records every value with its arrival time. It lists any SKU it is sent, unless
//!   told to refuse some (`refuse_pushes_of`): it then takes the others and answers 200
//!   or 207, naming the refused ones as `{"refused": [{"sku", "reason"}]}` or not (the
//!   README's `webhook` kind: the receiver's word on what it did not take).
//! - `GET /stock?sku=A&sku=B`: the levels it holds, `{"items": [{"sku", "available"}]}`.
//!   Every read is logged with the SKUs it asked; reads naming any of chosen SKUs can
//!   be told to fail with 503 a number of times (listings it refuses to read), and the
//!   whole read side can go down after answering a read that names a chosen SKU, every
//!   read failing with 503 until it comes up (a channel down part-way through a pass),
//!   or start refusing reads naming chosen SKUs after such a read (listings deleted
//!   part-way through a pass).
//! - It can be told to fail: answer a status (500, 503), hang (a timeout), throttle with
//!   429 + `Retry-After`, or enforce a rate limit with 429s. Its order is its own: the
//!   signature first, then the rate limit (which a push spends even under a fault), then
//!   the fault; a slow channel waits before the signature check, a hang logs the push at
//!   once and answers 504 after the wait.
//! - It sends inbound events to lockstep, signed as the channel signs them.
//!
//! It runs on its own thread and runtime, so blocking tests can drive it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::market::{lock, Market, Pending, Req, Shop};
use crate::signing;
/// The faults live in `sim` now; kept here because `tests/` name `webhook_sim::Fault`.
pub use crate::sim::Fault;
use crate::sim::{reply, Arrival, Reply};

/// One push request as it arrived.
#[derive(Clone, Debug)]
pub struct PushLog {
    pub at: Instant,
    pub items: Vec<(String, i64)>,
    pub status: u16,
}

/// One read request as it arrived: the SKUs it asked, in order, and the status answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadLog {
    pub skus: Vec<String>,
    pub status: u16,
}

/// What the channel keeps beside its market: the signing key, the push and read logs,
/// and the reads still to fail.
struct Extra {
    key: Vec<u8>,
    pushes: Vec<PushLog>,
    bad_signatures: usize,
    reads: Vec<ReadLog>,
    /// Reads naming any of these SKUs answer 503, this many more times.
    failing_reads: Option<(Vec<String>, u32)>,
    /// Every read answers 503 (`go_down_after_reading`, `come_up`).
    down: bool,
    /// Once a read naming this SKU is answered, `down`.
    down_after: Option<String>,
    /// Once a read naming the first is answered, reads naming any of the others fail for
    /// good (`refuse_after_reading`).
    refuse_after: Option<(String, Vec<String>)>,
    /// Pushes naming these SKUs take the others only (`refuse_pushes_of`).
    refusing: Option<Refusing>,
}

/// SKUs the receiver does not take (unknown to it), and how it answers a push naming
/// them: with this status, and the SKUs listed as `{"refused": [{"sku", "reason"}]}` or
/// not listed at all.
#[derive(Clone)]
struct Refusing {
    skus: Vec<String>,
    status: u16,
    listed: bool,
}

/// A running simulator.
pub struct WebhookSim {
    pub market: Market,
    extra: Arc<Mutex<Extra>>,
    secret: String,
    client: reqwest::Client,
}

impl WebhookSim {
    /// Starts on an ephemeral loopback port, verifying with `secret` (`whsec_...`).
    pub fn start(secret: &str) -> WebhookSim {
        WebhookSim::start_at(secret, 0)
    }

    /// Starts on a fixed loopback port (0: any), for a lockstep configured beforehand.
    pub fn start_at(secret: &str, port: u16) -> WebhookSim {
        let extra = Arc::new(Mutex::new(Extra {
            key: signing::key_of(secret),
            pushes: Vec::new(),
            bad_signatures: 0,
            reads: Vec::new(),
            failing_reads: None,
            down: false,
            down_after: None,
            refuse_after: None,
            refusing: None,
        }));
        let state = extra.clone();
        // It sends no webhooks of its own (`send_events` posts directly): no retries.
        let market = Market::serve(
            Shop::new(&[]),
            0,
            port,
            Arc::new(move |shop, _, req| -> Pending { Box::pin(handle(shop, state.clone(), req)) }),
        );
        WebhookSim {
            market,
            extra,
            secret: secret.to_string(),
            client: reqwest::Client::new(),
        }
    }

    /// GETs a JSON document (lockstep's API, to check what it holds).
    pub fn get_json(&self, url: &str) -> anyhow::Result<Value> {
        let request = self.client.get(url);
        self.market.server.runtime.block_on(async move {
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
        self.market.server.runtime.block_on(async move {
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
        format!("{}/stock", self.market.url())
    }

    fn extra(&self) -> std::sync::MutexGuard<'_, Extra> {
        self.extra.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_fault(&self, fault: Fault) {
        self.market.set_fault(fault);
    }

    /// Enforces a rate limit: requests beyond it get 429 with `Retry-After: 1`.
    pub fn set_rate_limit(&self, per_second: f64, burst: u32) {
        self.market.set_rate_limit(per_second, burst);
    }

    /// Sets a level behind lockstep's back (an edit on the channel).
    pub fn set_level(&self, sku: &str, available: i64) {
        let mut shop = self.market.shop();
        shop.list(sku, sku);
        shop.set_level(sku, available);
    }

    /// A sale on the seller's own system: `units` fewer shown, read and written under one
    /// lock (a push landing between a separate read and write would be undone).
    pub fn sell(&self, sku: &str, units: i64) {
        let mut shop = self.market.shop();
        let level = shop.level(sku).unwrap_or(0);
        shop.list(sku, sku);
        shop.set_level(sku, level - units);
    }

    /// The level the channel shows now.
    pub fn level(&self, sku: &str) -> Option<i64> {
        self.market.level(sku)
    }

    pub fn levels(&self) -> HashMap<String, i64> {
        self.market.levels()
    }

    /// Every value pushed for `sku`, in arrival order.
    pub fn arrivals(&self, sku: &str) -> Vec<Arrival> {
        self.market.arrivals(sku)
    }

    /// Every push request, in arrival order (taken ones and refused ones).
    pub fn pushes(&self) -> Vec<PushLog> {
        self.extra().pushes.clone()
    }

    pub fn bad_signatures(&self) -> usize {
        self.extra().bad_signatures
    }

    /// Every read request, in arrival order.
    pub fn reads(&self) -> Vec<ReadLog> {
        self.extra().reads.clone()
    }

    /// Once a read naming `sku` is answered, every read answers 503 until `come_up`.
    pub fn go_down_after_reading(&self, sku: &str) {
        self.extra().down_after = Some(sku.to_string());
    }

    /// Reads are answered again (`go_down_after_reading`).
    pub fn come_up(&self) {
        let mut x = self.extra();
        x.down = false;
        x.down_after = None;
    }

    /// Once a read naming `sku` is answered, every read naming any of `refused` answers
    /// 503 for good (listings deleted part-way through a pass), the others as before.
    pub fn refuse_after_reading(&self, sku: &str, refused: &[&str]) {
        let refused = refused.iter().map(|sku| sku.to_string()).collect();
        self.extra().refuse_after = Some((sku.to_string(), refused));
    }

    /// From now on a push naming any of `skus` takes the others only, and is answered
    /// `status` (200 or 207) with the refused SKUs listed in its body (`listed`) or not;
    /// an empty `skus` takes everything again.
    pub fn refuse_pushes_of(&self, skus: &[&str], status: u16, listed: bool) {
        self.extra().refusing = (!skus.is_empty()).then(|| Refusing {
            skus: skus.iter().map(|s| s.to_string()).collect(),
            status,
            listed,
        });
    }

    /// The next `times` reads that name any of `skus` answer 503 and read nothing.
    pub fn fail_reads_naming(&self, skus: &[&str], times: u32) {
        let skus = skus.iter().map(|sku| sku.to_string()).collect();
        self.extra().failing_reads = Some((skus, times));
    }

    /// Waits until `check` holds of the levels, up to `timeout`; returns how long it took.
    pub fn wait_for(
        &self,
        timeout: Duration,
        check: impl Fn(&HashMap<String, i64>) -> bool,
    ) -> Option<Duration> {
        self.market.wait_for(timeout, check)
    }
}

async fn handle(shop: Arc<Mutex<Shop>>, extra: Arc<Mutex<Extra>>, req: Req) -> Reply {
    let extra_lock = || extra.lock().unwrap_or_else(|e| e.into_inner());
    if req.method == hyper::Method::GET {
        let skus: Vec<String> = req
            .query
            .split('&')
            .filter_map(|p| p.strip_prefix("sku="))
            .map(str::to_string)
            .collect();
        let failed = {
            let mut x = extra_lock();
            let failed = x.down
                || match &mut x.failing_reads {
                    Some((failing, times))
                        if *times > 0 && skus.iter().any(|s| failing.contains(s)) =>
                    {
                        *times -= 1;
                        true
                    }
                    _ => false,
                };
            if !failed && x.down_after.as_ref().is_some_and(|sku| skus.contains(sku)) {
                x.down = true;
                x.down_after = None;
            }
            if !failed
                && x.refuse_after
                    .as_ref()
                    .is_some_and(|(sku, _)| skus.contains(sku))
            {
                let (_, refused) = x.refuse_after.take().expect("checked above");
                x.failing_reads = Some((refused, u32::MAX));
            }
            let status = if failed { 503 } else { 200 };
            x.reads.push(ReadLog {
                skus: skus.clone(),
                status,
            });
            failed
        };
        if failed {
            return reply(503, &json!({"error": "unavailable"}), &[]);
        }
        let levels = lock(&shop).levels();
        let items: Vec<Value> = skus
            .iter()
            .map(|sku| json!({"sku": sku, "available": levels.get(sku)}))
            .collect();
        return reply(200, &json!({ "items": items }), &[]);
    }
    let header = |name: &str| req.header(name).unwrap_or("").to_string();
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let fault = lock(&shop).fault.clone();
    if let Fault::Slow(delay) = fault {
        tokio::time::sleep(delay).await;
    }
    let now = Instant::now();
    let (status, retry_after) = {
        let mut x = extra_lock();
        if !signing::verify(&x.key, &id, &timestamp, &req.body, &signature) {
            x.bad_signatures += 1;
            (401, None)
        } else {
            let limited = !lock(&shop).spend(1.0);
            match (&fault, limited) {
                (_, true) => (429, Some(1)),
                (Fault::Status(code), _) => (*code, None),
                (Fault::Throttle { retry_after_s }, _) => (429, Some(*retry_after_s)),
                _ => (200, None),
            }
        }
    };
    let items: Vec<(String, i64)> = req
        .json()
        .and_then(|v| v["data"]["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|i| Some((i["sku"].as_str()?.to_string(), i["available"].as_i64()?)))
        .collect();
    let hang = match fault {
        Fault::Hang(delay) => Some(delay),
        _ => None,
    };
    // SKUs it does not take, when it took the push at all.
    let refusing = extra_lock().refusing.clone().filter(|_| status == 200);
    let refused: Vec<String> = refusing.as_ref().map_or_else(Vec::new, |r| {
        items
            .iter()
            .filter(|(sku, _)| r.skus.contains(sku))
            .map(|(sku, _)| sku.clone())
            .collect()
    });
    let status = match &refusing {
        Some(r) if !refused.is_empty() => r.status,
        _ => status,
    };
    {
        // The push log and the levels change together (the log's lock, then the shop's).
        let mut x = extra_lock();
        // A hang answers 504 in the end and takes nothing.
        x.pushes.push(PushLog {
            at: now,
            items: items.clone(),
            status: if hang.is_some() { 504 } else { status },
        });
        if (status == 200 || status == 207) && hang.is_none() {
            let mut s = lock(&shop);
            for (sku, available) in items.iter().filter(|(sku, _)| !refused.contains(sku)) {
                s.list(sku, sku);
                s.write_at(sku, *available, now);
            }
        }
    }
    if let Some(delay) = hang {
        tokio::time::sleep(delay).await;
        return reply(504, &json!({"error": "hung"}), &[]);
    }
    if let Fault::SlowAnswer(delay) = fault {
        tokio::time::sleep(delay).await;
    }
    let headers: Vec<(&str, String)> = retry_after
        .map(|secs| ("retry-after", secs.to_string()))
        .into_iter()
        .collect();
    let listed = refusing.as_ref().is_some_and(|r| r.listed) && !refused.is_empty();
    let body = if listed {
        let refused: Vec<Value> = refused
            .iter()
            .map(|sku| json!({"sku": sku, "reason": "unknown SKU"}))
            .collect();
        json!({"ok": true, "refused": refused})
    } else {
        json!({"ok": status == 200})
    };
    reply(status, &body, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::blocking::Client;

    const SECRET: &str = "whsec_c2Vjb25kLXNlY3JldC1vZi0yNC1ieXRlcyE=";

    fn push(sim: &WebhookSim, id: &str, items: Value) -> reqwest::blocking::Response {
        let body = serde_json::to_vec(&json!({"type": "stock.updated", "data": {"items": items}}))
            .expect("json serializes");
        let mut request = Client::new().post(sim.url());
        for (name, value) in signing::signed_headers(SECRET, id, &body) {
            request = request.header(name, value);
        }
        request.body(body).send().expect("the simulator answers")
    }

    #[test]
    fn a_signed_push_is_taken_and_a_forged_one_refused() {
        let sim = WebhookSim::start(SECRET);
        let taken = push(&sim, "m1", json!([{"sku": "A", "available": 7}]));
        assert_eq!(taken.status(), 200);
        assert_eq!(sim.level("A"), Some(7));
        assert_eq!(sim.arrivals("A").len(), 1);
        let forged = Client::new()
            .post(sim.url())
            .header("webhook-id", "m2")
            .header("webhook-timestamp", "1")
            .header("webhook-signature", "v1,AAAA")
            .body(r#"{"data": {"items": [{"sku": "A", "available": 1}]}}"#)
            .send()
            .unwrap();
        assert_eq!(forged.status(), 401);
        assert_eq!((sim.bad_signatures(), sim.level("A")), (1, Some(7)));
        let shown: Value = Client::new()
            .get(format!("{}?sku=A&sku=B", sim.url()))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            shown,
            json!({"items": [{"sku": "A", "available": 7}, {"sku": "B", "available": null}]})
        );
        let statuses: Vec<u16> = sim.pushes().iter().map(|p| p.status).collect();
        assert_eq!(statuses, [200, 401]);
    }

    #[test]
    fn the_rate_limit_comes_before_a_fault_and_a_fault_takes_nothing() {
        let sim = WebhookSim::start(SECRET);
        sim.set_rate_limit(0.001, 1);
        sim.set_fault(Fault::Status(503));
        assert_eq!(
            push(&sim, "m1", json!([{"sku": "A", "available": 1}])).status(),
            503
        );
        let limited = push(&sim, "m2", json!([{"sku": "A", "available": 2}]));
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "1");
        assert_eq!(sim.level("A"), None);
        sim.set_level("A", 4);
        assert_eq!(sim.levels(), HashMap::from([("A".to_string(), 4)]));
    }
}
