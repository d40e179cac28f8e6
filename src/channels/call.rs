//! The calls an adapter makes to its channel. Most channels need one request per push
//! and per read, built and read by the adapter's pure functions; some need a short
//! conversation (BigCommerce, Etsy and TikTok Shop send thin notifications whose order
//! lines must be fetched; Etsy's write replaces the whole listing, so it reads first;
//! Amazon's feed is three calls; the OAuth channels need a fresh access token). Those
//! conversations go through a `Caller`: the HTTP client, and the channel's pacing when
//! the calls spend its push budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::pacing::TokenBucket;
use super::{excerpt, OutboundRequest};

/// A boxed future: the trait's conversational methods return one (object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A request again, for a second try (requests are not `Clone`).
fn duplicate(request: &OutboundRequest) -> OutboundRequest {
    let mut copy = http::Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    *copy.version_mut() = request.version();
    copy
}

/// The largest reply body taken from a channel (a levels page, an order, a feed report
/// of 10,000 messages are far smaller).
pub const REPLY_BYTES_MAX: usize = 32 * 1024 * 1024;

/// A channel's answer: status, headers, body.
pub type Answer = (u16, HeaderMap, Vec<u8>);

/// How a channel says "slow down" in an answer (status, headers, body): `Some` when the
/// answer is a throttle, holding the wait it names (`None`: it names none). By default
/// (`http_429`) an HTTP 429 and its `Retry-After`; a channel that throttles another way
/// (TikTok Shop's code on an HTTP 200, Walmart's replenishment time) says so through its
/// adapter (`ChannelAdapter::throttle`).
pub type Throttles = Arc<dyn Fn(u16, &HeaderMap, &[u8]) -> Option<Option<Duration>> + Send + Sync>;

/// An HTTP 429, and the wait its `Retry-After` names.
pub fn http_429(status: u16, headers: &HeaderMap) -> Option<Option<Duration>> {
    (status == 429).then(|| super::retry_after(headers))
}

/// Sends requests to one channel.
#[derive(Clone)]
pub struct Caller {
    client: reqwest::Client,
    /// The channel's push budget: every call through this caller spends a token.
    pace: Option<Arc<tokio::sync::Mutex<TokenBucket>>>,
    /// Throttles a call waits out (the wait the answer names, else a doubling wait)
    /// before it answers with one: 0 for pushes, which handle the throttle themselves.
    throttled_retries: u32,
    /// What a throttle looks like on this channel (`None`: `http_429`).
    throttles: Option<Throttles>,
    /// The longest a call waits for its token (`waiting_at_most`); `None`: as long as
    /// the budget needs.
    token_wait_max: Option<Duration>,
}

/// Most throttles a reader's call waits out (`Caller::waiting_out_throttles`).
const READER_THROTTLED_RETRIES: u32 = 8;
/// The least a reader waits after a throttle, whatever wait the answer names: a
/// `Retry-After` rounded down to 0 while the bucket is still full (a tenth of a second
/// short of a leaked request) sent every retry back at once, into the same 429, until
/// the retries were spent within milliseconds and the pass failed.
const THROTTLED_WAIT_MIN: Duration = Duration::from_millis(250);

impl Caller {
    /// Calls that do not spend the channel's budget (order polls, the queue reader).
    pub fn new(client: reqwest::Client) -> Caller {
        Caller {
            client,
            pace: None,
            throttled_retries: 0,
            throttles: None,
            token_wait_max: None,
        }
    }

    /// Calls that each wait for a token of `bucket`.
    pub fn paced(client: reqwest::Client, bucket: Arc<tokio::sync::Mutex<TokenBucket>>) -> Caller {
        Caller {
            client,
            pace: Some(bucket),
            throttled_retries: 0,
            throttles: None,
            token_wait_max: None,
        }
    }

    /// The same caller, for a reader beside the pushes (reconciliation, a plan, an
    /// import): a 429 is waited out and the call sent again, a few times, instead of
    /// failing the whole read. The channel's other users (an order poll, another app on
    /// the store) spend the same quota, so a paced reader still meets them.
    pub fn waiting_out_throttles(mut self) -> Caller {
        self.throttled_retries = READER_THROTTLED_RETRIES;
        self
    }

    /// `waiting_out_throttles`, for a channel whose throttles `throttles` recognises.
    pub fn waiting_out(self, throttles: Throttles) -> Caller {
        Caller {
            throttles: Some(throttles),
            ..self.waiting_out_throttles()
        }
    }

    /// The same caller, for a call someone holds a request open for (a webhook's
    /// follow-up fetch): a call whose token is further off than `max` fails at once,
    /// without calling, rather than keep the sender waiting past its timeout (or for a
    /// pause a 429 set, which can be minutes).
    pub fn waiting_at_most(mut self, max: Duration) -> Caller {
        self.token_wait_max = Some(max);
        self
    }

    /// The same client, paced by `bucket` instead: a call with its own limit, such as
    /// Amazon's getOrderItems at 0.5 requests/s, burst 30
    /// (https://developer-docs.amazon.com/sp-api/docs/orders-api-v0-reference, "Usage
    /// plan"; https://developer-docs.amazon.com/sp-api/docs/usage-plans-and-rate-limits).
    pub fn paced_by(&self, bucket: Arc<tokio::sync::Mutex<TokenBucket>>) -> Caller {
        Caller::paced(self.client.clone(), bucket)
    }

    /// Sends one request (after a token, when paced). The bucket's lock is held only to
    /// take a token or learn the wait, never across the wait: a channel that paused us
    /// must not also hang every other caller of its budget on the lock.
    pub async fn call(&self, request: OutboundRequest) -> Result<Answer, String> {
        let Some(pace) = &self.pace else {
            return self.call_now(request).await;
        };
        let mut waited = Duration::ZERO;
        loop {
            let wait = match pace.lock().await.try_acquire() {
                Ok(()) => break,
                Err(wait) => wait.max(Duration::from_millis(1)),
            };
            if let Some(max) = self.token_wait_max.filter(|max| waited + wait > *max) {
                return Err(format!(
                    "the channel's budget has no call free within {} ms",
                    max.as_millis()
                ));
            }
            tokio::time::sleep(wait).await;
            waited += wait;
        }
        let mut backoff = Duration::from_millis(250);
        let mut request = Some(request);
        for retry in 0..=self.throttled_retries {
            let last = retry == self.throttled_retries;
            // A copy while a retry may follow; the request itself on the last try, which
            // is the only one for a caller that retries nothing (pushes): no copy there.
            let this = if last {
                request.take().expect("the last try takes the request")
            } else {
                duplicate(request.as_ref().expect("kept until the last try"))
            };
            // How fast the channel answered steers an adaptive pace (`TokenBucket::answered`),
            // a throttle in whatever form the channel sends it counting as a 429.
            let started = tokio::time::Instant::now();
            let answer = self.call_now(this).await;
            let throttle = match &answer {
                Ok((status, headers, body)) => match &self.throttles {
                    Some(throttles) => throttles(*status, headers, body),
                    None => http_429(*status, headers),
                },
                Err(_) => None,
            };
            let status = match (&answer, throttle) {
                (_, Some(_)) => 429,
                (Ok((status, _, _)), None) => *status,
                (Err(_), None) => 0,
            };
            pace.lock().await.answered(started.elapsed(), status);
            match throttle {
                Some(named) if !last => {
                    // The channel's number is not trusted unbounded: a minute at most,
                    // and never less than `THROTTLED_WAIT_MIN`.
                    let wait = named.unwrap_or(backoff).max(THROTTLED_WAIT_MIN);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
                }
                _ => return answer,
            }
        }
        unreachable!("the last try returns its answer")
    }

    /// Waits until a call could take a token now, without taking it (at once when not
    /// paced). A pusher chooses what to send only then, so its call carries everything
    /// that changed while it waited, rather than what was there before the wait.
    pub async fn ready(&self) {
        if let Some(pace) = &self.pace {
            loop {
                let wait = match pace.lock().await.until_token() {
                    None => break,
                    Some(wait) => wait,
                };
                tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
            }
        }
    }

    /// Sends one request without waiting for a token (tokens themselves, for one).
    pub async fn call_now(&self, request: OutboundRequest) -> Result<Answer, String> {
        let request = reqwest::Request::try_from(request).map_err(|e| e.to_string())?;
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(|e| with_causes(&e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        // The channel's body is read up to `REPLY_BYTES_MAX`, never trusted to be small.
        if response
            .content_length()
            .is_some_and(|n| n > REPLY_BYTES_MAX as u64)
        {
            return Err(format!(
                "reply of HTTP {status} is larger than {REPLY_BYTES_MAX} bytes"
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| with_causes(&e))? {
            if body.len() + chunk.len() > REPLY_BYTES_MAX {
                return Err(format!(
                    "reply of HTTP {status} is larger than {REPLY_BYTES_MAX} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body))
    }
}

/// Adds `headers` (credentials) to a built request.
pub fn with_headers(mut request: OutboundRequest, headers: HeaderMap) -> OutboundRequest {
    request.headers_mut().extend(headers);
    request
}

/// What form encoding and a URL path segment leave as they are: letters, digits and
/// `-._~` (RFC 3986's unreserved characters).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A value from outside (an id a channel answered) as one URL path segment: encoded, so
/// that no byte of it can break the request's URI or reach another path.
pub fn segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, UNRESERVED).to_string()
}

/// An `application/x-www-form-urlencoded` body (token requests).
pub fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    use percent_encoding::utf8_percent_encode;
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, UNRESERVED)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// Whether a 4xx answer to reading something is the channel's final word on it: asking
/// again sends the same request and reads the same refusal (400 a request it cannot
/// take for this id, 404 or 410 gone, 422 and the like). Not so for 401, 403 and 407
/// (the credentials, their scope, a proxy's: every call fails alike until someone fixes
/// them, so a reader that took them as final would pass over every order meanwhile),
/// 408, 409, 421, 423, 425 and 429 (time, a conflict, a connection to the wrong server,
/// a lock, the pace: another try may be taken).
pub fn refused_for_good(status: u16) -> bool {
    (400..500).contains(&status) && ![401, 403, 407, 408, 409, 421, 423, 425, 429].contains(&status)
}

/// A JSON body of a 2xx answer, or why not.
pub fn json_answer(answer: &Answer) -> Result<Value, String> {
    json_reply(answer.0, &answer.2)
}

/// The JSON body of a 2xx reply (status and body), or why not.
pub fn json_reply(status: u16, body: &[u8]) -> Result<Value, String> {
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}: {}", excerpt(body)));
    }
    serde_json::from_slice(body).map_err(|e| format!("the reply is not JSON: {e}"))
}

/// How long before its expiry a token is replaced: a call made with it must not land
/// after it expired.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// The longest a token's `expires_in` is believed: every kind's tokens live an hour or a
/// few (Amazon 1 h, eBay 2 h, Walmart 15 min), and the channel's number is
/// never added to the clock unchecked (`u64::MAX` seconds overflowed it).
const TOKEN_LIFETIME_MAX: Duration = Duration::from_secs(24 * 3_600);

/// An OAuth access token (Amazon's Login with Amazon, eBay, Walmart), fetched with
/// the channel's long-lived credentials when missing or about to expire, and kept.
pub struct TokenCache {
    /// Builds the token request (refresh-token or client-credentials grant).
    request: Box<dyn Fn() -> OutboundRequest + Send + Sync>,
    /// The header the token goes in, and what precedes it (`Bearer ` or nothing).
    header: HeaderName,
    prefix: &'static str,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl TokenCache {
    /// The channel refused the token it was given (401): the next call fetches a new one
    /// instead of sending this one until it expires (a token revoked or rotated early).
    /// A refresh under way (the lock held) replaces it anyway.
    pub fn forget(&self) {
        if let Ok(mut cached) = self.cached.try_lock() {
            *cached = None;
        }
    }

    pub fn new(
        header: &'static str,
        prefix: &'static str,
        request: impl Fn() -> OutboundRequest + Send + Sync + 'static,
    ) -> TokenCache {
        TokenCache {
            request: Box::new(request),
            header: HeaderName::from_static(header),
            prefix,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The credential header, fetching a token when needed.
    pub async fn headers(&self, caller: &Caller) -> Result<HeaderMap, String> {
        let mut cached = self.cached.lock().await;
        let fresh = cached
            .as_ref()
            .filter(|(_, expires)| Instant::now() + TOKEN_MARGIN < *expires)
            .map(|(token, _)| token.clone());
        let token = match fresh {
            Some(token) => token,
            None => {
                let answer = caller.call_now((self.request)()).await?;
                let reply =
                    json_answer(&answer).map_err(|e| format!("access token request: {e}"))?;
                let token = reply["access_token"]
                    .as_str()
                    .ok_or("the token reply has no access_token")?
                    .to_string();
                let lifetime = Duration::from_secs(reply["expires_in"].as_u64().unwrap_or(3_600))
                    .min(TOKEN_LIFETIME_MAX);
                *cached = Some((token.clone(), Instant::now() + lifetime));
                token
            }
        };
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("{}{token}", self.prefix))
            .map_err(|_| "the access token is not a valid header value".to_string())?;
        headers.insert(self.header.clone(), value);
        Ok(headers)
    }
}

/// Notification ids already taken, so a redelivered notification is answered at once
/// without fetching or submitting anything again. Bounded: when full it starts over (an
/// id forgotten only costs a fetch; the events' own keys still make it a duplicate).
pub struct Seen {
    ids: std::sync::Mutex<ahash::AHashSet<String>>,
}

const SEEN_MAX: usize = 100_000;

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            ids: std::sync::Mutex::new(ahash::AHashSet::new()),
        }
    }
}

impl Seen {
    pub fn contains(&self, id: &str) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    pub fn insert(&self, id: String) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.len() >= SEEN_MAX {
            ids.clear();
        }
        ids.insert(id);
    }
}

/// An error with its causes: reqwest's own message names the URL only ("error sending
/// request for url (…)"); what an operator needs ("Connection refused", a TLS failure, a
/// timeout) is in its sources.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimit;

    #[test]
    fn only_a_4xx_no_retry_changes_is_a_refusal_for_good() {
        for status in [400, 404, 410, 413, 422] {
            assert!(refused_for_good(status), "{status}");
        }
        for status in [
            200, 204, 401, 403, 407, 408, 409, 421, 423, 425, 429, 500, 503,
        ] {
            assert!(!refused_for_good(status), "{status}");
        }
    }

    #[test]
    fn a_segment_from_outside_cannot_break_the_uri_or_leave_its_place() {
        assert_eq!(segment("123-4567.x_~"), "123-4567.x_~");
        assert_eq!(segment("a b/../c?d#e"), "a%20b%2F..%2Fc%3Fd%23e");
        let uri = format!(
            "https://sp.example/orders/v0/orders/{}/orderItems",
            segment("x y\n")
        );
        assert!(http::Uri::try_from(uri).is_ok());
    }

    /// A channel that paused us must not hang every other user of its budget on the
    /// bucket's lock: the waiting call holds it only to learn the wait.
    #[tokio::test(start_paused = true)]
    async fn a_paused_budget_is_waited_for_without_holding_its_lock() {
        let bucket = Arc::new(tokio::sync::Mutex::new(TokenBucket::new(RateLimit {
            requests_per_second: 5.0,
            burst: 5,
        })));
        bucket.lock().await.throttled(Duration::from_secs(600));
        let caller = Caller::paced(reqwest::Client::new(), bucket.clone());
        let waiting = tokio::spawn(async move {
            let request = http::Request::get("http://127.0.0.1:9/")
                .body(Vec::new())
                .unwrap();
            caller.call(request).await
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "the call waits for the pause");
        assert!(
            bucket.try_lock().is_ok(),
            "the lock is free while the call waits"
        );
        waiting.abort();
    }

    /// A channel whose 429 names no wait while its bucket is still full (`Retry-After:
    /// 0.0`, the time to the next leaked request rounded down): a reader waits a moment
    /// between its tries, so a later one finds the request leaked. It sent every retry at
    /// once, all nine tries within the 200 ms the bucket needs, and answered the 429.
    #[tokio::test]
    async fn a_throttle_that_names_no_wait_is_still_waited_out() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let mut last: Option<std::time::Instant> = None;
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                // A bucket of one request, leaking one every 200 ms.
                let now = std::time::Instant::now();
                let full = last.is_some_and(|at| now - at < Duration::from_millis(200));
                let answer = if full {
                    "HTTP/1.1 429 Too Many Requests\r\nretry-after: 0.0\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    last = Some(now);
                    "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                };
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        let bucket = Arc::new(tokio::sync::Mutex::new(TokenBucket::new(RateLimit {
            requests_per_second: 100.0,
            burst: 10,
        })));
        let caller = Caller::paced(reqwest::Client::new(), bucket).waiting_out_throttles();
        let get = || http::Request::get(&url).body(Vec::new()).unwrap();
        assert_eq!(caller.call(get()).await.unwrap().0, 200);
        assert_eq!(caller.call(get()).await.unwrap().0, 200, "waited out");
    }

    #[test]
    fn an_error_names_its_causes_once() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let outer = std::io::Error::other(inner);
        // io::Error::other displays its inner error: no repeat.
        assert_eq!(with_causes(&outer), "Connection refused");
        #[derive(Debug)]
        struct Sending(std::io::Error);
        impl std::fmt::Display for Sending {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Sending {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        assert_eq!(
            with_causes(&Sending(refused)),
            "error sending request: Connection refused"
        );
    }
}
