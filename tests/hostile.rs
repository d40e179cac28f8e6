//! Hostile peers, against the real binary. Channels that redirect our pushes to another
//! host, answer with an absurd `Retry-After`, token lifetime or rate-limit window, refuse
//! the token they issued, or send a feed status or listing pages that never end or loop;
//! webhook senders with an `i64::MIN` timestamp; web pages elsewhere reaching the open
//! local API; connections that stall on their bodies; a console form with a SKU the API
//! refuses; a channel's answer written to forge a line of the log. Nothing panics, no
//! credential leaves for another host, nothing unchecked is taken, no line of the log is
//! a peer's making, and the rest of the engine keeps serving.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

/// Every request's header block, its request line first, in arrival order.
type Heads = Arc<Mutex<Vec<String>>>;

/// A channel server that answers every request with `reply` (whole HTTP response
/// bytes); returns its URL, how many requests it got, and their header blocks.
fn answering(reply: String) -> (String, Arc<AtomicUsize>, Heads) {
    let (url, counts, seen) = routed(vec![("", reply)]);
    (url, counts[0].clone(), seen)
}

/// A channel server that answers each request with the reply of the first route whose
/// prefix its request line (`METHOD /path?query`) starts with, else 404; returns its URL,
/// how many requests each route got, and every request's header block (its request
/// line first).
fn routed(routes: Vec<(&'static str, String)>) -> (String, Vec<Arc<AtomicUsize>>, Heads) {
    routed_at_most(
        routes
            .into_iter()
            .map(|(prefix, reply)| (prefix, reply, usize::MAX))
            .collect(),
    )
}

/// `routed`, each route answering at most so many requests: a request past that goes to
/// the next route that matches it.
fn routed_at_most(
    routes: Vec<(&'static str, String, usize)>,
) -> (String, Vec<Arc<AtomicUsize>>, Heads) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counts: Vec<Arc<AtomicUsize>> = routes.iter().map(|_| Arc::default()).collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (routes, counted, logged) = (Arc::new(routes), counts.clone(), seen.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (routes, counted, logged) = (routes.clone(), counted.clone(), logged.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut head = String::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        head.push_str(&line);
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let route = routes.iter().enumerate().position(|(i, (p, _, most))| {
                        head.starts_with(p) && counted[i].load(Ordering::SeqCst) < *most
                    });
                    // Logged before counted: whoever sees the count finds the headers.
                    logged.lock().unwrap().push(head);
                    let reply = match route {
                        Some(i) => {
                            counted[i].fetch_add(1, Ordering::SeqCst);
                            routes[i].1.clone()
                        }
                        None => response("404 Not Found", "", "{}"),
                    };
                    if reader.get_mut().write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, counts, seen)
}

/// Stops the server; nothing in its log panicked.
fn stopped_without_a_panic(server: Server) {
    let log = server.stop().join("\n");
    assert!(!log.contains("panicked"), "{log}");
}

/// The route of an eBay store's token endpoint, granting a token for two hours.
fn ebay_token() -> (&'static str, String) {
    (
        "POST /identity/v1/oauth2/token",
        response(
            "200 OK",
            "",
            r#"{"access_token": "t", "token_type": "User Access Token", "expires_in": 7200}"#,
        ),
    )
}

fn response(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A Shopify store whose API answers every call with a redirect to another host: the
/// access token must never reach that host; the push fails instead.
#[test]
fn a_redirect_never_carries_credentials_to_another_host() {
    let (elsewhere, stolen, _) = answering(response("200 OK", "", "{}"));
    let (store, asked, heads) = answering(response(
        "307 Temporary Redirect",
        &format!("location: {elsewhere}/admin/api/2026-04/graphql.json\r\n"),
        "",
    ));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = shopify_channel("shop", &store, "secret", "2026-04", "")
        + &catalog(&data, &[("R0", "shop", "100")]);
    let server = Server::start_with(&data, &config, None);
    count(&server, "R0", 5);
    assert!(eventually(Duration::from_secs(20), || asked
        .load(Ordering::SeqCst)
        >= 2));
    assert!(
        heads.lock().unwrap()[0]
            .to_ascii_lowercase()
            .contains("x-shopify-access-token"),
        "the store itself gets the token"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        stolen.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    // Served at 0 from the start: counted, not merely there.
    let failed = "lockstep_push_requests_total{channel=\"shop\",outcome=\"error\"}";
    assert!(
        eventually(Duration::from_secs(5), || server.metric(failed) >= 1.0),
        "a redirect is a failed push: {}",
        server.metrics()
    );
}

/// A channel answering `429` with `Retry-After: 1e300` (and later with a day) pauses
/// that channel for at most `WAIT_MAX`; nothing panics, and another channel keeps being
/// pushed.
#[test]
fn an_absurd_retry_after_pauses_one_channel_and_panics_nothing() {
    let (hostile, asked, _) = answering(response(
        "429 Too Many Requests",
        "retry-after: 1e300\r\n",
        "{}",
    ));
    let healthy = loadgen::webhook_sim::WebhookSim::start(WEBHOOK_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = webhook_channel("hostile", &hostile, WEBHOOK_SECRET, "")
        + &webhook_channel("healthy", &healthy.url(), WEBHOOK_SECRET, "");
    let server = Server::start_with(&data, &config, None);
    count(&server, "H0", 5);
    assert!(eventually(Duration::from_secs(20), || asked
        .load(Ordering::SeqCst)
        >= 1));
    assert!(eventually(Duration::from_secs(20), || healthy.level("H0") == Some(5)));
    // The console says which channel holds back, and until when.
    let row_of = |html: &str, channel: &str| -> String {
        let from = format!("<tr data-channel=\"{channel}\">");
        let row = html.split(&from).nth(1).unwrap_or("");
        row.split("</tr>").next().unwrap_or("").to_string()
    };
    let overview = || {
        Server::client()
            .get(server.url("/console"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(5), || row_of(&overview(), "hostile")
            .contains("state throttled")),
        "{}",
        row_of(&overview(), "hostile")
    );
    let html = overview();
    assert!(
        row_of(&html, "hostile").contains("until ")
            && row_of(&html, "healthy").contains("state pushing"),
        "{html}"
    );
    // The engine and the other channel go on.
    count(&server, "H1", 7);
    assert!(eventually(Duration::from_secs(20), || healthy.level("H1") == Some(7)));
    assert_eq!(server.stock("H1"), Some((7, 0, 7)));
    stopped_without_a_panic(server);
}

/// A Standard Webhooks delivery stamped `i64::MIN` is refused as a bad signature before
/// any arithmetic can overflow on it.
#[test]
fn a_webhook_timestamp_of_i64_min_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = webhook_channel("erp", "http://127.0.0.1:9", WEBHOOK_SECRET, "");
    let server = Server::start_with(&data, &config, None);
    let body =
        json!({"events": [{"idempotency_key": "x", "sku": "T0", "kind": "counted", "qty": 1}]});
    let min = i64::MIN.to_string();
    let headers = [
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", min.as_str()),
        ("webhook-signature", "v1,Zm9yZ2Vk"),
    ];
    let (status, answer) = post_raw(
        &server,
        "erp",
        &headers,
        &serde_json::to_vec(&body).unwrap(),
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("bad_signature")),
        "{answer}"
    );
    assert_eq!(server.get("/healthz").0, 200);
    assert_eq!(server.stock("T0"), None, "nothing applied");
}

/// Sockets that send half a request and wait hold nothing for long: past
/// `connections_max` a connection is closed at once, a request whose headers do not
/// arrive within 10 s is closed, and then the listener serves again.
#[test]
fn idle_and_half_sent_connections_are_capped_and_timed_out() {
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, "connections_max = 8", None);
    let addr = server.base.trim_start_matches("http://").to_string();
    let started = std::time::Instant::now();
    let mut held: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // The ninth is closed at once: no answer, end of stream.
    let mut ninth = TcpStream::connect(&addr).unwrap();
    ninth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = ninth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = ninth.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // The half-sent requests are cut off after the header timeout.
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "closed too soon: {waited:?}"
    );
    assert!(waited < Duration::from_secs(25), "not closed: {waited:?}");
    assert_eq!(server.get("/healthz").0, 200, "serving again");
    assert!(server
        .metrics()
        .lines()
        .any(|l| l.starts_with("lockstep_connections_refused_total") && !l.ends_with(" 0")));
}

/// Token endpoints whose lifetimes no token has: eBay's `expires_in` of `u64::MAX`
/// seconds and TikTok Shop's expiry times of `i64::MIN`. Each is held to what a token
/// can mean, never added to the clock as it comes (that overflowed: a panic in the
/// pusher, and for TikTok after the refresh token had already rotated).
#[test]
fn absurd_token_lifetimes_are_held_to_sense_not_a_panic() {
    let (ebay_tokens, ebay_asked, _) = answering(response(
        "200 OK",
        "content-type: application/json\r\n",
        r#"{"access_token": "t", "token_type": "User Access Token", "expires_in": 18446744073709551615}"#,
    ));
    let (tiktok_tokens, tiktok_asked, _) = answering(response(
        "200 OK",
        "content-type: application/json\r\n",
        r#"{"code": 0, "message": "success", "data": {"access_token": "t", "access_token_expire_in": -9223372036854775808, "refresh_token": "r2", "refresh_token_expire_in": -9223372036854775808}}"#,
    ));
    let ebay = loadgen::ebay_sim::EbaySim::start(&[("E0", "1100/5000")], EBAY_CLIENT, EBAY_REFRESH);
    let tiktok = loadgen::tiktok_sim::TikTokSim::start(
        &[("T0", "1700/800")],
        TIKTOK_APP.0,
        TIKTOK_APP.1,
        TIKTOK_REFRESH,
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tiktok_url = tiktok.market.url();
    let config = ebay_channel(
        "ebay",
        &ebay.market.url(),
        &format!("token_url = \"{ebay_tokens}/identity/v1/oauth2/token\""),
    ) + &tiktok_channel("tiktok", &tiktok_url, "").replace(
        &format!("{tiktok_url}/api/v2/token/refresh"),
        &format!("{tiktok_tokens}/api/v2/token/refresh"),
    ) + &catalog(
        &data,
        &[("E0", "ebay", "1100/5000"), ("T0", "tiktok", "1700/800")],
    );
    let server = Server::start_with(&data, &config, None);
    count(&server, "E0", 5);
    count(&server, "T0", 6);
    assert!(eventually(Duration::from_secs(20), || ebay_asked
        .load(Ordering::SeqCst)
        >= 1
        && tiktok_asked.load(Ordering::SeqCst) >= 1));
    // Their pushes go on being tried (the tokens are refused by the stores), and the
    // engine serves.
    std::thread::sleep(Duration::from_secs(2));
    count(&server, "E0", 7);
    assert_eq!(server.stock("E0"), Some((7, 0, 7)));
    stopped_without_a_panic(server);
}

/// Without an admin token, the API serves this machine's programs, not a web page acting
/// through the operator's browser: a change from another origin, or any call under a
/// host name that is not loopback (DNS rebinding), is refused and changes nothing.
#[test]
fn a_web_page_elsewhere_cannot_use_the_open_local_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let events =
        json!({"events": [{"sku": "CSRF", "kind": "counted", "qty": 5, "idempotency_key": "k1"}]});
    let post = |headers: &[(&str, &str)]| {
        let mut request = Server::client()
            .post(server.url("/v1/events"))
            .header("content-type", "text/plain")
            .body(events.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        status_json(request.send().unwrap())
    };
    let (status, body) = post(&[("origin", "https://evil.example")]);
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("cross_origin")),
        "{body}"
    );
    let (status, body) = post(&[("host", "rebound.evil.example:7700")]);
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("host_not_local")),
        "{body}"
    );
    let (status, body) = Server::client()
        .get(server.url("/console"))
        .header("host", "rebound.evil.example:7700")
        .send()
        .map(status_json)
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(server.stock("CSRF"), None, "nothing was applied");
    // A program (no Origin) and this server's own pages are served.
    let own = server.url("");
    let own = own.trim_end_matches('/');
    let (status, body) = post(&[("origin", own)]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.stock("CSRF"), Some((5, 0, 5)));
}

/// Request bodies are read before anything can be checked, so the bytes of all those
/// being read are bounded together (256 MiB): connections that each send most of a MiB
/// and stall hold at most that, the ones past it are answered 503 `busy` at once, and
/// once the stalled ones go, requests are served again.
#[test]
fn stalled_bodies_are_bounded_together_and_past_that_refused_as_busy() {
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let addr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let length = 1024 * 1024;
    let most = vec![b' '; length - 1];
    let mut streams = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        );
        // A refused body's connection may be closed under the rest of it.
        let _ = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(&most));
        streams.push(stream);
    }
    // A stalled body's connection has no answer; a refused one has its 503. Read until
    // the 44 refusals are in (300 MiB through loopback may take a while on a loaded
    // machine: a fixed 5 s once ended the wait early), then a second more, in which no
    // held body may be answered.
    let mut answered = vec![false; streams.len()];
    for stream in &streams {
        stream.set_nonblocking(true).unwrap();
    }
    let mut read_answers = || {
        for (stream, seen) in streams.iter_mut().zip(answered.iter_mut()) {
            let mut answer = vec![0; 4096];
            if let (false, Ok(n)) = (*seen, stream.read(&mut answer)) {
                let answer = String::from_utf8_lossy(&answer[..n]);
                assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
                assert!(
                    answer.contains("\"busy\"") && answer.to_lowercase().contains("retry-after"),
                    "{answer}"
                );
                *seen = true;
            }
        }
        answered.iter().filter(|a| **a).count()
    };
    let started = std::time::Instant::now();
    let mut busy = read_answers();
    while busy < 44 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
        busy = read_answers();
    }
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        busy = read_answers();
    }
    // 256 MiB hold 256 of them (a MiB less a byte each); the other 44 were refused. A
    // body takes its share frame by frame, so one refused late, after part of it was
    // counted, can have turned another away at the edge meanwhile: a few more may be
    // refused (45 in one CI run), never fewer.
    assert!((44..=52).contains(&busy), "refused as busy: {busy}");
    drop(streams);
    assert!(eventually(Duration::from_secs(10), || {
        server
            .post_events(&json!({"events": [{"sku": "B", "kind": "counted", "qty": 1, "idempotency_key": "b"}]}))
            .0
            == 200
    }));
}

/// The console's count form takes a SKU under the API's rules: one with a control
/// character is refused and nothing is recorded (the form once skipped the check).
#[test]
fn the_console_counts_no_sku_the_api_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    count(&server, "GOOD", 3);
    let csrf = console_csrf(&server, "GOOD");
    let post = |sku: &str| {
        Server::client()
            .post(server.url(&format!("/console/skus/{sku}/count")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}&on_hand=5"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post("BAD%01SKU"), 400);
    assert!(server.audit_all().iter().all(|r| r["sku"] == "GOOD"));
    // The form itself works: a good SKU is counted.
    assert!(matches!(post("GOOD"), 200 | 303), "counted");
    assert_eq!(server.stock("GOOD"), Some((5, 0, 5)));
}

/// A feed whose status names a billion items received, one on every page: the status
/// is read for no more pages than the feed carried items (it was read page after page,
/// for good, holding the feed's SKUs as submitted).
#[test]
fn a_feed_status_that_never_ends_is_read_no_further_than_the_feed() {
    let (url, counts, _) = routed(vec![
        (
            "POST /v3/token",
            response(
                "200 OK",
                "",
                r#"{"access_token": "t", "token_type": "Bearer", "expires_in": 900}"#,
            ),
        ),
        (
            "POST /v3/feeds",
            response("200 OK", "", r#"{"feedId": "F1"}"#),
        ),
        (
            "GET /v3/feeds/F1",
            response(
                "200 OK",
                "",
                r#"{"feedId": "F1", "feedStatus": "PROCESSED", "itemsReceived": 1000000000, "itemsSucceeded": 1000000000, "itemsFailed": 0, "itemsProcessing": 0, "itemDetails": {"itemIngestionStatus": [{"sku": "WM-0", "ingestionStatus": "SUCCESS"}]}}"#,
            ),
        ),
        (
            "GET /v3/orders",
            response(
                "200 OK",
                "",
                r#"{"list": {"meta": {"totalCount": 0}, "elements": {"order": []}}}"#,
            ),
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = walmart_channel(
        "walmart",
        &url,
        "auth_header = \"wm-signature\"\nwebhook_secret = \"walmart-subscription-secret-sim\"",
        "feeds_per_hour = 3600\nurgent_at_or_below = 0",
    ) + &catalog(
        &data,
        &[("M0", "walmart", "WM-0"), ("M1", "walmart", "WM-1")],
    );
    let server = Server::start_with(&data, &config, None);
    count(&server, "M0", 5);
    count(&server, "M1", 6);
    assert!(
        eventually(Duration::from_secs(30), || counts[2].load(Ordering::SeqCst)
            >= 1),
        "the feed's status was read"
    );
    std::thread::sleep(Duration::from_secs(3));
    let read = counts[2].load(Ordering::SeqCst);
    assert!(
        read <= 4,
        "{read} status pages read for a feed of at most two items"
    );
    stopped_without_a_panic(server);
}

/// A WooCommerce store whose product's variations come as empty pages while
/// `X-WP-TotalPages` says a million: discovery reads one empty page and goes on (it read
/// page after page, for good).
#[test]
fn discovery_stops_at_an_empty_page_whatever_the_page_count_says() {
    let (url, counts, _) = routed(vec![
        (
            "GET /wp-json/wc/v3/products/7/variations",
            response("200 OK", "x-wp-totalpages: 1000000\r\n", "[]"),
        ),
        (
            "GET /wp-json/wc/v3/products",
            response(
                "200 OK",
                "x-wp-totalpages: 1\r\n",
                r#"[{"id": 7, "type": "variable", "sku": "", "manage_stock": false}]"#,
            ),
        ),
    ]);
    assert!(
        discovered(&woo_channel("woo", &url, WOO_HOOK_SECRET, "")),
        "discovery ended"
    );
    assert_eq!(
        counts[0].load(Ordering::SeqCst),
        1,
        "one page of variations read"
    );
}

/// `lockstep catalog discover` with this channel block: whether it ended within 30 s.
fn discovered(channel: &str) -> bool {
    discovery(channel).is_some()
}

/// `lockstep catalog discover` with this channel block: what it wrote to stdout and
/// stderr, if it ended within 30 s.
fn discovery(channel: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lockstep.toml");
    let data = dir.path().join("data").display().to_string();
    std::fs::write(&config, format!("[server]\ndata_dir = {data:?}\n{channel}")).unwrap();
    let out = dir.path().join("catalog.csv");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args([
            "catalog",
            "discover",
            "--out",
            out.to_str().unwrap(),
            "--config",
        ])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return Some(
                String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr),
            );
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A BigCommerce store whose rate-limit headers say its window resets in a trillion
/// milliseconds: discovery waits no longer than the window the store names (it slept
/// the 31 years).
#[test]
fn discovery_waits_no_longer_than_the_rate_limit_window() {
    let (url, counts, _) = routed(vec![(
        "GET /stores/",
        response(
            "200 OK",
            "x-rate-limit-requests-left: 0\r\nx-rate-limit-time-reset-ms: 1000000000000\r\nx-rate-limit-time-window-ms: 1000\r\n",
            r#"{"data": [{"id": 1, "product_id": 7, "sku": "B1", "inventory_level": 3}], "meta": {"pagination": {"total_pages": 2}}}"#,
        ),
    )]);
    assert!(
        discovered(&bigcommerce_channel("bc", &url, "")),
        "discovery ended"
    );
    assert_eq!(counts[0].load(Ordering::SeqCst), 2, "both pages read");
}

/// A store that refuses the token it was given (401: revoked, or rotated early) gets a
/// new one on the next call, not the refused one again until it would have expired.
#[test]
fn a_refused_token_is_fetched_again_not_sent_until_it_expires() {
    let (url, counts, _) = routed(vec![
        ebay_token(),
        (
            "POST /sell/inventory/v1/bulk_update_price_quantity",
            response(
                "401 Unauthorized",
                "",
                r#"{"errors": [{"errorId": 1001, "message": "Invalid access token"}]}"#,
            ),
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = ebay_channel("ebay", &url, "") + &catalog(&data, &[("E0", "ebay", "1100/5000")]);
    let server = Server::start_with(&data, &config, None);
    count(&server, "E0", 5);
    assert!(eventually(Duration::from_secs(20), || counts[1]
        .load(Ordering::SeqCst)
        >= 1));
    count(&server, "E0", 6);
    assert!(
        eventually(Duration::from_secs(20), || counts[1].load(Ordering::SeqCst)
            >= 2),
        "pushed again"
    );
    assert!(
        counts[0].load(Ordering::SeqCst) >= 2,
        "a token fetched for each push the store refused its token on"
    );
    stopped_without_a_panic(server);
}

/// A Shopify store whose every page of variants names the same next page: discovery
/// stops at the second, saying so (it read that page for good).
#[test]
fn discovery_stops_when_the_next_page_comes_back() {
    let (url, counts, _) = routed(vec![(
        "POST /admin/api/",
        response(
            "200 OK",
            "",
            r#"{"data": {"productVariants": {"nodes": [{"id": "gid://shopify/ProductVariant/1", "sku": "S1", "inventoryItem": {"id": "gid://shopify/InventoryItem/11", "tracked": true}}], "pageInfo": {"hasNextPage": true, "endCursor": "again"}}}, "extensions": {"cost": {"requestedQueryCost": 1, "actualQueryCost": 1, "throttleStatus": {"maximumAvailable": 2000, "currentlyAvailable": 1999, "restoreRate": 100}}}}"#,
        ),
    )]);
    assert!(
        discovered(&shopify_channel("shop", &url, "shpss_x", "2026-04", "")),
        "discovery ended"
    );
    assert_eq!(
        counts[0].load(Ordering::SeqCst),
        2,
        "the looping page read once more"
    );
}

/// An eBay store whose page of inventory items names as its next page `@host/...` on
/// another server: appended to the base URL as it came, that sent the seller's token to
/// the other host; and a `next` with a space in it panicked the command. Both now end
/// discovery of the channel with a clear error, the token sent nowhere else.
#[test]
fn a_next_page_elsewhere_gets_no_token_and_panics_nothing() {
    let (elsewhere, asked_elsewhere, _) = answering(response("200 OK", "", "{}"));
    let elsewhere = elsewhere.trim_start_matches("http://");
    for next in [
        format!("@{elsewhere}/sell/x"),
        "/sell/inventory/v1/inventory_item?offset=100 &limit=100".to_string(),
    ] {
        let page = json!({"inventoryItems": [], "next": next}).to_string();
        let (url, counts, _) = routed(vec![
            ebay_token(),
            (
                "GET /sell/inventory/v1/inventory_item?",
                response("200 OK", "", &page),
            ),
        ]);
        let said = discovery(&ebay_channel("ebay", &url, "")).expect("discovery ended");
        assert_eq!(asked_elsewhere.load(Ordering::SeqCst), 0, "{said}");
        assert!(!said.contains("panicked"), "{said}");
        assert!(
            said.contains("is not a page of inventory items"),
            "next {next:?}: {said}"
        );
        assert_eq!(counts[1].load(Ordering::SeqCst), 1, "one page read");
    }
}

/// A store that answers the first 1,000 SKUs of an import (the first page, ten reads of a
/// hundred) and then fails every read: the answer says the first page was counted, and
/// that importing again is safe. It said only that the channel could not be read, as if
/// nothing had been taken.
#[test]
fn an_import_that_stops_midway_says_what_it_counted() {
    let products: String = (0..1_000)
        .map(|i| {
            format!(
                r#"{{"id": {}, "sku": "M{i:04}", "manage_stock": true, "stock_quantity": 3}}"#,
                5_000 + i
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    // Down after the first page: the read after it fails, and so do the reads again of the
    // last two that worked (the import tells a channel down from a refused listing so).
    let (url, counts, _) = routed_at_most(vec![
        (
            "GET /wp-json/wc/v3/products?include=",
            response("200 OK", "", &format!("[{products}]")),
            10,
        ),
        (
            "GET /wp-json/wc/v3/products?include=",
            response("500 Internal Server Error", "", "{}"),
            usize::MAX,
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ids: Vec<(String, String)> = (0..1_001)
        .map(|i| (format!("M{i:04}"), (5_000 + i).to_string()))
        .collect();
    let rows: Vec<(&str, &str, &str)> = ids
        .iter()
        .map(|(sku, id)| (sku.as_str(), "woo", id.as_str()))
        .collect();
    let config = woo_channel("woo", &url, WOO_HOOK_SECRET, "") + &catalog(&data, &rows);
    let server = Server::start_with(&data, &config, None);
    let (status, answer) = status_json(
        Server::client()
            .post(server.url("/v1/channels/woo/import-levels"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 502, "{answer}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the channel is down: HTTP 500")
            && message.contains("1000 of 1000 SKUs read before it stopped were counted")
            && message.contains("importing again takes the rest"),
        "{answer}"
    );
    assert_eq!(server.stock("M0999"), Some((3, 0, 3)));
    assert_eq!(server.stock("M1000"), None);
    assert_eq!(
        counts[1].load(Ordering::SeqCst),
        3,
        "the last page's read and the reads again of the two before it failed"
    );
    stopped_without_a_panic(server);
}

/// A channel whose error answer holds a line break and a line of its own making: the
/// push's failure is logged on one line, the channel's words quoted and escaped, and the
/// forged line appears nowhere as a line of the log.
#[test]
fn a_channel_answer_cannot_write_a_line_of_the_log() {
    let forged = "2026-12-07T10:00:00.000000Z  INFO lockstep: channel caught up";
    let (hostile, asked, _) = answering(response(
        "500 Internal Server Error",
        "",
        &format!("oops\n{forged}\r\n\u{1b}[2Jdone"),
    ));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        &webhook_channel("hostile", &hostile, WEBHOOK_SECRET, ""),
        None,
    );
    count(&server, "F0", 5);
    assert!(eventually(Duration::from_secs(20), || asked
        .load(Ordering::SeqCst)
        >= 1));
    let log = Mutex::new(Vec::new());
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut log = log.lock().unwrap();
            log.extend(server.stderr_lines());
            log.iter().any(|l| l.contains("push failed"))
        }),
        "no failed push logged: {log:#?}"
    );
    let mut log = log.into_inner().unwrap();
    let failed = log.iter().find(|l| l.contains("push failed")).unwrap();
    // Quoted and escaped, and the line goes on with our own fields after them.
    assert!(
        failed.contains(&format!(
            "reason=\"HTTP 500: oops\\n{forged}\\r\\n\\u001b[2Jdone\" retry_in_ms="
        )),
        "the channel's words, escaped on the one line: {failed}"
    );
    log.extend(server.stop());
    assert!(
        !log.iter()
            .any(|l| l.starts_with(forged) || l.contains('\u{1b}')),
        "a line of the channel's making: {log:#?}"
    );
}
