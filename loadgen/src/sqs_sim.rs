//! A simulated Amazon SQS standard queue: where SP-API delivers `ORDER_CHANGE`, which it
//! sends to SQS only (developer-docs.amazon.com/sp-api, "Set up notifications with Amazon
//! EventBridge": EventBridge carries the listing notifications alone).
//!
//! - The AWS JSON protocol (SQS Developer Guide, "Making query API requests using AWS
//!   JSON protocol"): `POST /` with `X-Amz-Target: AmazonSQS.<Action>`,
//!   `Content-Type: application/x-amz-json-1.0`, the `QueueUrl` in the JSON body; errors
//!   are 400 with `{"__type": "com.amazonaws.sqs#<Code>", "message"}`.
//! - Every request must carry a valid Signature Version 4 `Authorization` (service `sqs`,
//!   the queue's region, the configured access key), checked by signing the request
//!   again with AWS's own signer (`aws-sigv4`), and an `X-Amz-Date` within 15 minutes.
//! - `ReceiveMessage`: `MaxNumberOfMessages` 1 to 10 (default 1), `WaitTimeSeconds` 0 to
//!   20 (a long poll answers as soon as a message is visible), `VisibilityTimeout`
//!   (default the queue's, 30 s). Standard-queue habits: messages come in no particular
//!   order, at least once: a received message that is not deleted is received again once
//!   its visibility timeout ends, with a new receipt handle, and with `set_duplicate` a
//!   message can be received twice before that.
//! - `DeleteMessage` and `DeleteMessageBatch` (at most 10 entries) by receipt handle;
//!   only the newest handle of a message deletes it (an older one "succeeds" and deletes
//!   nothing, as SQS documents).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::Request;
use rand::Rng as _;
use serde_json::{json, Value};

use crate::sim::{reply, Reply, Server};

/// The account id in the queue URL.
pub const ACCOUNT_ID: &str = "123456789012";
/// The queue's name in its URL.
pub const QUEUE_NAME: &str = "lockstep-orders";
const VISIBILITY_DEFAULT: Duration = Duration::from_secs(30);
const WAIT_MAX_S: u64 = 20;
const BATCH_MAX: usize = 10;
/// How far `X-Amz-Date` may be from the clock ("Signature expired" beyond it).
const SKEW_MAX: Duration = Duration::from_secs(15 * 60);

struct Message {
    id: String,
    body: String,
    visible_at: Instant,
    /// The newest receipt handle (`None`: never received).
    handle: Option<String>,
    receives: u32,
}

struct Queue {
    access_key: String,
    secret_key: String,
    region: String,
    messages: Vec<Message>,
    visibility: Duration,
    /// Chance that a received message stays visible (received again before deleted).
    duplicate: f64,
    /// Deletes still to ignore (as if the answer to them were lost).
    ignore_deletes: u32,
    /// Every MessageId received, once per receive.
    received: Vec<String>,
    /// Requests refused, as `code`.
    refused: Vec<String>,
}

/// A running simulated queue.
pub struct SqsSim {
    server: Server,
    queue: Arc<Mutex<Queue>>,
    arrived: Arc<tokio::sync::Notify>,
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

fn sqs_error(status: u16, code: &str, message: &str) -> Reply {
    reply(
        status,
        &json!({"__type": format!("com.amazonaws.sqs#{code}"), "message": message}),
        &[(
            "x-amzn-query-error",
            format!("AWS.SimpleQueueService.{code};Sender"),
        )],
    )
}

impl SqsSim {
    /// A queue in `region` that takes requests signed with this access key.
    pub fn start(access_key: &str, secret_key: &str, region: &str) -> SqsSim {
        let queue = Arc::new(Mutex::new(Queue {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            region: region.into(),
            messages: Vec::new(),
            visibility: VISIBILITY_DEFAULT,
            duplicate: 0.0,
            ignore_deletes: 0,
            received: Vec::new(),
            refused: Vec::new(),
        }));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let (state, notify) = (queue.clone(), arrived.clone());
        let server = Server::start(move |req| {
            let (state, notify) = (state.clone(), notify.clone());
            async move { handle(&state, &notify, req).await }
        });
        SqsSim {
            server,
            queue,
            arrived,
        }
    }

    /// The queue's URL (what the seller configures as `sqs_queue_url`).
    pub fn queue_url(&self) -> String {
        format!("http://{}/{ACCOUNT_ID}/{QUEUE_NAME}", self.server.addr)
    }

    /// Amazon's `SendMessage`: a notification body joins the queue.
    pub fn send(&self, body: String) {
        let id = uuid_like();
        lock(&self.queue).messages.push(Message {
            id,
            body,
            visible_at: Instant::now(),
            handle: None,
            receives: 0,
        });
        self.arrived.notify_waiters();
    }

    /// The queue's default visibility timeout from now on.
    pub fn set_visibility(&self, timeout: Duration) {
        lock(&self.queue).visibility = timeout;
    }

    /// Chance that a received message is received again before it is deleted.
    pub fn set_duplicate(&self, chance: f64) {
        lock(&self.queue).duplicate = chance;
    }

    /// The next `n` deletes are answered as done but delete nothing.
    pub fn ignore_deletes(&self, n: u32) {
        lock(&self.queue).ignore_deletes = n;
    }

    /// Messages not deleted yet.
    pub fn depth(&self) -> usize {
        lock(&self.queue).messages.len()
    }

    /// The bodies of the messages not deleted yet, oldest first.
    pub fn bodies(&self) -> Vec<String> {
        lock(&self.queue)
            .messages
            .iter()
            .map(|m| m.body.clone())
            .collect()
    }

    /// Every MessageId received so far, once per receive.
    pub fn received(&self) -> Vec<String> {
        lock(&self.queue).received.clone()
    }

    /// The codes of the requests refused so far.
    pub fn refused(&self) -> Vec<String> {
        lock(&self.queue).refused.clone()
    }
}

fn uuid_like() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

async fn handle(
    queue: &Arc<Mutex<Queue>>,
    arrived: &tokio::sync::Notify,
    req: Request<Incoming>,
) -> Reply {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return sqs_error(400, "InvalidRequest", "unreadable body"),
    };
    let checked = check_signature(&lock(queue), &parts, &body);
    if let Err((code, message)) = checked {
        lock(queue).refused.push(code.to_string());
        let status = if code == "MissingAuthenticationToken" {
            400
        } else {
            403
        };
        return reply(
            status,
            &json!({"__type": format!("com.amazon.coral.service#{code}"), "message": message}),
            &[],
        );
    }
    let refuse = |code: &str, message: &str| {
        lock(queue).refused.push(code.to_string());
        sqs_error(400, code, message)
    };
    if parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        != Some("application/x-amz-json-1.0")
    {
        return refuse(
            "InvalidRequest",
            "Content-Type must be application/x-amz-json-1.0",
        );
    }
    let Ok(input) = serde_json::from_slice::<Value>(&body) else {
        return refuse("InvalidRequest", "the body is not JSON");
    };
    let host = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let own_url = format!("http://{host}/{ACCOUNT_ID}/{QUEUE_NAME}");
    if input["QueueUrl"].as_str() != Some(own_url.as_str()) {
        return refuse("QueueDoesNotExist", "The specified queue does not exist.");
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match target {
        "AmazonSQS.ReceiveMessage" => receive(queue, arrived, &input, &refuse).await,
        "AmazonSQS.DeleteMessage" => {
            let Some(handle) = input["ReceiptHandle"].as_str() else {
                return refuse("MissingParameter", "ReceiptHandle is required");
            };
            delete(&mut lock(queue), handle);
            reply(200, &json!({}), &[])
        }
        "AmazonSQS.DeleteMessageBatch" => {
            let entries = input["Entries"].as_array().cloned().unwrap_or_default();
            if entries.is_empty() {
                return refuse(
                    "EmptyBatchRequest",
                    "There should be at least one entry in the request.",
                );
            }
            if entries.len() > BATCH_MAX {
                return refuse(
                    "TooManyEntriesInBatchRequest",
                    "Maximum number of entries per request are 10.",
                );
            }
            let mut ids: Vec<&str> = entries.iter().filter_map(|e| e["Id"].as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() != entries.len() {
                return refuse(
                    "BatchEntryIdsNotDistinct",
                    "Two or more batch entries have the same Id.",
                );
            }
            let mut q = lock(queue);
            let (mut ok, mut failed) = (Vec::new(), Vec::new());
            for entry in &entries {
                let id = entry["Id"].as_str().unwrap_or_default();
                match entry["ReceiptHandle"].as_str() {
                    Some(handle) => {
                        delete(&mut q, handle);
                        ok.push(json!({"Id": id}));
                    }
                    None => failed.push(
                        json!({"Id": id, "SenderFault": true, "Code": "MissingParameter",
                                               "Message": "ReceiptHandle is required"}),
                    ),
                }
            }
            reply(200, &json!({"Successful": ok, "Failed": failed}), &[])
        }
        other => refuse(
            "InvalidAction",
            &format!("The action {other} is not valid for this endpoint."),
        ),
    }
}

/// Deletes the message whose newest handle is `handle`; an older handle deletes nothing.
fn delete(q: &mut Queue, handle: &str) {
    if q.ignore_deletes > 0 {
        q.ignore_deletes -= 1;
        return;
    }
    q.messages.retain(|m| m.handle.as_deref() != Some(handle));
}

async fn receive(
    queue: &Mutex<Queue>,
    arrived: &tokio::sync::Notify,
    input: &Value,
    refuse: &(dyn Fn(&str, &str) -> Reply + Sync),
) -> Reply {
    let max = input["MaxNumberOfMessages"].as_u64().unwrap_or(1);
    let wait = input["WaitTimeSeconds"].as_u64().unwrap_or(0);
    if !(1..=BATCH_MAX as u64).contains(&max) {
        return refuse(
            "InvalidParameterValue",
            "MaxNumberOfMessages must be between 1 and 10.",
        );
    }
    if wait > WAIT_MAX_S {
        return refuse(
            "InvalidParameterValue",
            "WaitTimeSeconds must be between 0 and 20.",
        );
    }
    let visibility = input["VisibilityTimeout"].as_u64().map(Duration::from_secs);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let wakeup = arrived.notified();
        let taken = take(&mut lock(queue), max as usize, visibility);
        if !taken.is_empty() || tokio::time::Instant::now() >= deadline {
            return reply(200, &json!({"Messages": taken}), &[]);
        }
        // Woken by a new message, or at least every 200 ms for visibility timeouts.
        let step = (deadline - tokio::time::Instant::now()).min(Duration::from_millis(200));
        let _ = tokio::time::timeout(step, wakeup).await;
    }
}

/// Up to `max` visible messages, in no particular order, hidden for the visibility
/// timeout (unless the duplicate habit leaves one visible).
fn take(q: &mut Queue, max: usize, visibility: Option<Duration>) -> Vec<Value> {
    let now = Instant::now();
    let hide = visibility.unwrap_or(q.visibility);
    let mut visible: Vec<usize> = (0..q.messages.len())
        .filter(|i| q.messages[*i].visible_at <= now)
        .collect();
    let mut rng = rand::rng();
    // Standard queues promise no order.
    for i in (1..visible.len()).rev() {
        visible.swap(i, rng.random_range(0..=i));
    }
    let mut taken = Vec::new();
    for i in visible.into_iter().take(max) {
        let again = rng.random_bool(q.duplicate.clamp(0.0, 1.0));
        let m = &mut q.messages[i];
        let handle = format!("AQEB{:040x}", rand::random::<u128>());
        m.handle = Some(handle.clone());
        m.receives += 1;
        m.visible_at = if again { now } else { now + hide };
        q.received.push(m.id.clone());
        taken.push(json!({
            "MessageId": m.id, "ReceiptHandle": handle, "Body": m.body,
            "MD5OfBody": md5_hex(&m.body),
            "Attributes": {"ApproximateReceiveCount": m.receives.to_string()},
        }));
    }
    taken
}

/// `MD5OfBody`: the hex MD5 digest of the body, as SQS gives it.
fn md5_hex(body: &str) -> String {
    use md5::Digest as _;
    md5::Md5::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Signs the request again with AWS's signer and compares: `Err` is (code, message).
fn check_signature(
    q: &Queue,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<(), (&'static str, String)> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let Some(authorization) = header("authorization") else {
        return Err((
            "MissingAuthenticationToken",
            "Request is missing Authentication Token".into(),
        ));
    };
    let fields: HashMap<&str, &str> = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .unwrap_or_default()
        .split(", ")
        .filter_map(|f| f.split_once('='))
        .collect();
    let scope = format!("/{}/sqs/aws4_request", q.region);
    let credential_ok = fields
        .get("Credential")
        .is_some_and(|c| c.starts_with(&format!("{}/", q.access_key)) && c.ends_with(&scope));
    if !credential_ok {
        return Err((
            "InvalidClientTokenId",
            "The security token included in the request is invalid.".into(),
        ));
    }
    let time = header("x-amz-date").and_then(parse_amz_date);
    let Some(time) = time else {
        return Err((
            "IncompleteSignature",
            "X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ".into(),
        ));
    };
    let skew = SystemTime::now()
        .duration_since(time)
        .unwrap_or_else(|e| e.duration());
    if skew > SKEW_MAX {
        return Err(("InvalidSignatureException", "Signature expired".into()));
    }
    let signed: Vec<&str> = fields
        .get("SignedHeaders")
        .map(|s| s.split(';').collect())
        .unwrap_or_default();
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .filter(|h| **h != "x-amz-date")
        .filter_map(|h| Some((*h, header(h)?)))
        .collect();
    let uri = format!("http://{}{}", header("host").unwrap_or_default(), parts.uri);
    let identity = aws_credential_types::Credentials::new(
        q.access_key.clone(),
        q.secret_key.clone(),
        None,
        None,
        "sqs-sim",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&q.region)
        .name("sqs")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| ("IncompleteSignature", e.to_string()))?
        .into();
    let expected = SignableRequest::new(
        parts.method.as_str(),
        &uri,
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .and_then(|request| sign(request, &params))
    .map(|output| output.signature().to_string())
    .map_err(|e| ("IncompleteSignature", e.to_string()))?;
    if fields.get("Signature") != Some(&expected.as_str()) {
        return Err((
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.".into(),
        ));
    }
    Ok(())
}

/// `20261201T101500Z` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let iso = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        num(0..4)?,
        num(4..6)?,
        num(6..8)?,
        num(9..11)?,
        num(11..13)?,
        num(13..15)?
    );
    let micros = crate::market::parse_rfc3339(&iso)?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).ok()?))
}
