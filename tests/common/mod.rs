//! Shared by the integration tests: start the real `lockstep` binary on an ephemeral port
//! and a temp data directory, and talk to it over HTTP.

#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

// The channels' config blocks and the simulators' credentials, shared with loadgen.
pub use loadgen::fleet::creds::*;
pub use loadgen::fleet::{
    amazon_block as amazon_channel, bigcommerce_block as bigcommerce_channel,
    ebay_block as ebay_channel, etsy_block as etsy_channel, shopify_block as shopify_channel,
    tiktok_block as tiktok_channel, walmart_block as walmart_channel,
    webhook_block as webhook_channel, woo_block as woo_channel,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_lockstep");

/// A running `lockstep serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    pub token: Option<String>,
    /// Everything the server wrote to stderr, collected by a thread.
    stderr: std::sync::Mutex<mpsc::Receiver<String>>,
}

/// Writes a config for `data_dir` with an ephemeral port and any extra `[server]` lines.
pub fn write_config(data_dir: &Path, server_extra: &str) -> PathBuf {
    let path = data_dir.with_extension("toml");
    // `server_extra` may name its own listen address.
    let own_listen = server_extra
        .lines()
        .any(|l| l.trim_start().starts_with("listen ") || l.trim_start().starts_with("listen="));
    let listen = if own_listen {
        ""
    } else {
        "listen = \"127.0.0.1:0\"\n"
    };
    let text = format!(
        "[server]\n{listen}data_dir = {:?}\nshards = 2\n{server_extra}\n",
        data_dir.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, "", None)
    }

    /// Starts the binary and waits for its "listening on" line.
    pub fn start_with(data_dir: &Path, server_extra: &str, token: Option<&str>) -> Server {
        Server::start_env(data_dir, server_extra, token, &[])
    }

    /// The same, with these environment variables set for the binary.
    pub fn start_env(
        data_dir: &Path,
        server_extra: &str,
        token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        let config = write_config(data_dir, server_extra);
        Server::start_config(data_dir, &config, token, env)
    }

    /// Starts the binary on a config file of the test's own (`data_dir`: the one it names).
    pub fn start_config(
        data_dir: &Path,
        config: &Path,
        token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lockstep starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("lockstep listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let log: Vec<String> = err_rx.try_iter().collect();
                panic!("lockstep did not start:\n{}", log.join("\n"));
            }
        };
        Server {
            child,
            base,
            data_dir: data_dir.to_path_buf(),
            token: token.map(str::to_string),
            stderr: std::sync::Mutex::new(err_rx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn client() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    /// A client that hands back a redirect instead of following it (the console's
    /// forms answer 303 to the page that says what was done).
    pub fn no_redirects() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// The body of `GET path` as text, whatever its status (a console page).
    pub fn text(&self, path: &str) -> String {
        Server::client()
            .get(self.url(path))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    fn auth(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Opens `GET /v1/audit/stream?{query}` and hands on each record it sends, from the
    /// moment it returns (the stream is open: its first comment has arrived).
    pub fn audit_stream(&self, query: &str) -> std::sync::mpsc::Receiver<Value> {
        use std::io::{BufRead, BufReader};
        let response = self
            .auth(
                reqwest::blocking::Client::new()
                    .get(self.url(&format!("/v1/audit/stream?{query}"))),
            )
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let (opened, open) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(response).lines().map_while(Result::ok) {
                if line == ": lockstep audit" {
                    let _ = opened.send(());
                }
                if let Some(data) = line.strip_prefix("data: ") {
                    let record = serde_json::from_str::<Value>(data).unwrap();
                    if tx.send(record).is_err() {
                        return;
                    }
                }
            }
        });
        open.recv_timeout(Duration::from_secs(5))
            .expect("the stream opens with its comment");
        rx
    }

    /// POST /v1/events; returns (status, body).
    pub fn post_events(&self, body: &Value) -> (u16, Value) {
        let response = self
            .auth(Server::client().post(self.url("/v1/events")).json(body))
            .send()
            .unwrap();
        status_json(response)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .auth(Server::client().get(self.url(path)))
            .send()
            .unwrap();
        status_json(response)
    }

    /// The first configured channel as `GET /v1/channels` gives it (its sync state, its
    /// refused SKUs).
    pub fn first_channel(&self) -> Value {
        let (status, body) = self.get("/v1/channels");
        assert_eq!(status, 200, "{body}");
        body["channels"][0].clone()
    }

    pub fn put_sku(&self, sku: &str, body: &Value) -> (u16, Value) {
        let response = self
            .auth(
                Server::client()
                    .put(self.url(&format!("/v1/skus/{sku}")))
                    .json(body),
            )
            .send()
            .unwrap();
        status_json(response)
    }

    /// The stock of a SKU as (on_hand, committed, available); None for an unknown SKU.
    pub fn stock(&self, sku: &str) -> Option<(i64, i64, i64)> {
        let (status, body) = self.get(&format!("/v1/skus/{sku}"));
        match status {
            200 => Some((
                body["on_hand"].as_i64().unwrap(),
                body["committed"].as_i64().unwrap(),
                body["available"].as_i64().unwrap(),
            )),
            404 => None,
            other => panic!("GET sku answered {other}: {body}"),
        }
    }

    /// The value of one series of `/metrics` (`name{labels}` as served), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// The `/metrics` page.
    pub fn metrics(&self) -> String {
        Server::client()
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// Every audit record (newest first, up to 1,000).
    pub fn audit_all(&self) -> Vec<Value> {
        let (status, body) = self.get("/v1/audit?limit=1000");
        assert_eq!(status, 200, "{body}");
        body["records"].as_array().unwrap().clone()
    }

    /// Stops with SIGTERM and waits.
    pub fn stop(mut self) -> Vec<String> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        self.stderr_lines()
    }

    /// Kills with SIGKILL (no chance to clean up) and waits.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn status_json(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    (status, body)
}

/// Runs `serve` on `data_dir` expecting it to refuse: waits for it to exit (at most 30 s)
/// and returns what it wrote to stderr.
pub fn serve_refused(data_dir: &Path) -> String {
    let config = write_config(data_dir, "");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lockstep starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(
                    !status.success(),
                    "serve exited 0 on {}",
                    data_dir.display()
                );
                break;
            }
            None if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                panic!("serve did not refuse {}", data_dir.display());
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    log
}

/// Starts `serve --config CONFIG` under `strace` with `strace_args` (its stdout piped,
/// stderr dropped) and returns the child (strace) and the server's base URL.
pub fn serve_traced<A: AsRef<std::ffi::OsStr>>(
    strace_args: &[A],
    config: &Path,
) -> (Child, String) {
    let mut child = Command::new("strace")
        .args(strace_args)
        .arg(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("lockstep listening on ")
        .expect("listening line")
        .to_string();
    (child, base)
}

/// strace arguments that fail the writes to `path` at the calls `when` names (strace's
/// syntax: `1`, `1..2`) with ENOSPC, as a full disk would; nothing else is traced.
pub fn writes_to_fail(path: &Path, when: &str) -> Vec<String> {
    [
        "-f".to_string(),
        "-qq".into(),
        "-P".into(),
        path.display().to_string(),
        "-e".into(),
        "trace=write".into(),
        "-e".into(),
        format!("inject=write:error=ENOSPC:when={when}"),
        "-o".into(),
        "/dev/null".into(),
    ]
    .to_vec()
}

/// Sends `signal` to the server strace runs (its child), and waits for strace to end.
pub fn signal_traced(child: &mut Child, signal: i32) {
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
    for pid in children.split_whitespace() {
        // SAFETY: kill(2) on a pid read from /proc; it only sends a signal.
        unsafe {
            libc::kill(pid.parse().unwrap(), signal);
        }
    }
    child.wait().unwrap();
}

/// One native event.
pub fn event(key: &str, sku: &str, kind: &str, qty: i64) -> Value {
    json!({"idempotency_key": key, "sku": sku, "kind": kind, "qty": qty, "source": "test"})
}

/// Runs `lockstep replay --data-dir DIR`; returns (success, stdout).
pub fn replay(data_dir: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["replay", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The simulated channel `sim` delivers `body` to `/webhooks/{channel}`, signed.
pub fn deliver(
    server: &Server,
    sim: &loadgen::webhook_sim::WebhookSim,
    channel: &str,
    id: &str,
    body: &Value,
) -> (u16, Value) {
    sim.send_events(&server.url(&format!("/webhooks/{channel}")), id, body)
}

/// Writes a catalog CSV beside `data_dir`; returns the `[catalog]` block naming it.
pub fn catalog(data_dir: &Path, rows: &[(&str, &str, &str)]) -> String {
    let path = data_dir.with_extension("catalog.csv");
    let mut text = String::from("sku,channel,item_id,location_id\n");
    for (sku, channel, item) in rows {
        text.push_str(&format!("{sku},{channel},{item},\n"));
    }
    std::fs::write(&path, text).unwrap();
    format!("\n[catalog]\npath = {:?}\n", path.display().to_string())
}

/// Sets a SKU's on_hand with a count; panics unless it is taken.
pub fn count(server: &Server, sku: &str, on_hand: i64) {
    let (status, body) = server.put_sku(sku, &json!({ "on_hand": on_hand }));
    assert_eq!(status, 200, "{body}");
}

/// Audit records of one SKU, newest first.
pub fn audit_of(server: &Server, sku: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/v1/audit?sku={sku}&limit=1000"));
    assert_eq!(status, 200, "{body}");
    body["records"].as_array().unwrap().clone()
}

/// An RFC 3339 time from a response, as an instant: the engine's text drops trailing
/// zeros of the fraction ("33.54057Z"), so two times do not compare as strings.
pub fn instant(at: &Value) -> time::OffsetDateTime {
    let text = at.as_str().unwrap_or_else(|| panic!("not a time: {at}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("time {text:?}: {e}"))
}

/// A SKU's audit records of one kind.
pub fn records(server: &Server, sku: &str, kind: &str) -> Vec<Value> {
    audit_of(server, sku)
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

/// POSTs a raw webhook body with the given headers; returns (status, body).
pub fn post_raw(
    server: &Server,
    channel: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let mut request = Server::client().post(server.url(&format!("/webhooks/{channel}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    status_json(request.body(body.to_vec()).send().unwrap())
}

/// Polls `check` every 10 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, check: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}

/// POST /v1/reconcile?channel=NAME: one reconciliation pass; returns (status, report).
pub fn reconcile(server: &Server, channel: &str) -> (u16, Value) {
    let response = Server::client()
        .post(server.url(&format!("/v1/reconcile?channel={channel}")))
        .send()
        .unwrap();
    status_json(response)
}

/// The applied `order_placed` records of a SKU in the audit.
pub fn placed_records(server: &Server, sku: &str) -> usize {
    audit_of(server, sku)
        .iter()
        .filter(|r| r["kind"] == "order_placed" && r["outcome"] == "applied")
        .count()
}

/// Kills the server with SIGKILL and starts it again on the same data directory and
/// config (a new port).
pub fn kill9_and_restart(server: Server) -> Server {
    kill9_and_restart_after(server, || {})
}

/// An outage of a polled channel: the server killed, `orders` orders placed by `place`
/// meanwhile (their events lost by the caller's habits), their modification times spread
/// over the last hour `step_s` apart, and the channel's poll watermark set two hours back;
/// then the server started again.
pub fn outage_of_orders(
    server: Server,
    channel: &str,
    market: &loadgen::market::Market,
    (orders, step_s): (i64, i64),
    place: impl Fn(),
) -> Server {
    let data = server.data_dir.clone();
    kill9_and_restart_after(server, || {
        for _ in 0..orders {
            place();
        }
        market.shop().spread_orders_back(3_600, step_s);
        let before = loadgen::market::now_us() - 2 * 3_600 * 1_000_000;
        std::fs::write(
            data.join(format!("poll-{channel}.watermark")),
            before.to_string(),
        )
        .unwrap();
    })
}

/// Like `kill9_and_restart`, doing `meanwhile` while the server is down.
pub fn kill9_and_restart_after(server: Server, meanwhile: impl FnOnce()) -> Server {
    let data = server.data_dir.clone();
    let text = std::fs::read_to_string(data.with_extension("toml")).unwrap();
    server.kill9();
    meanwhile();
    let extra = text
        .split_once("shards = 2\n")
        .map(|(_, r)| r.to_string())
        .unwrap_or_default();
    Server::start_with(&data, &extra, None)
}

/// A polled channel's orders are found by the poll, across a kill -9 and a restart,
/// with none missed and none counted twice. `place(sku, qty)` orders on the channel
/// (whose webhooks, if any, are off); the channel lists orders late.
pub fn poll_survives_restarts(server: Server, channel: &str, sku: &str, place: &dyn Fn(&str, i64)) {
    poll_survives_restarts_with(server, channel, sku, place, 3);
}

/// `poll_survives_restarts` for a channel whose orders have `placements` lines in all (3
/// where a line carries its quantity; 6 for TikTok, whose line items are one unit each).
pub fn poll_survives_restarts_with(
    server: Server,
    channel: &str,
    sku: &str,
    place: &dyn Fn(&str, i64),
    placements: usize,
) {
    let wait = Duration::from_secs(30);
    count(&server, sku, 50);
    place(sku, 2);
    assert!(
        eventually(wait, || server.stock(sku) == Some((50, 2, 48))),
        "the poll found the first order: {:?}",
        server.stock(sku)
    );
    let watermark = server.data_dir.join(format!("poll-{channel}.watermark"));
    assert!(
        eventually(wait, || watermark.exists()),
        "the watermark is kept"
    );
    // Orders placed while lockstep is down, listed late, are found after the restart.
    let data = server.data_dir.clone();
    let config = data.with_extension("toml");
    let text = std::fs::read_to_string(&config).unwrap();
    server.kill9();
    place(sku, 3);
    place(sku, 1);
    let extra = text
        .split_once("shards = 2\n")
        .map(|(_, r)| r.to_string())
        .unwrap_or_default();
    let server = Server::start_with(&data, &extra, None);
    assert!(
        eventually(wait, || server.stock(sku) == Some((50, 6, 44))),
        "the poll after the restart found the orders placed while down: {:?}",
        server.stock(sku)
    );
    // Later polls list the same orders again (the overlap window): never counted twice.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(server.stock(sku), Some((50, 6, 44)));
    assert_eq!(
        placed_records(&server, sku),
        placements,
        "one placement per order line"
    );
}

/// Posts the last webhook a market simulator built to `/webhooks/{channel}` again,
/// with `header` set to a value (`Some`) or left out (`None`), or as built (no change).
pub fn redeliver(
    server: &Server,
    channel: &str,
    market: &loadgen::market::Market,
    change: Option<(&str, Option<&str>)>,
) -> (u16, Value) {
    let (headers, body) = market.last_delivery().expect("a webhook was built");
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(k, v)| match change {
            Some((name, value)) if name == k => value.map(|value| (k.as_str(), value)),
            _ => Some((k.as_str(), v.as_str())),
        })
        .collect();
    post_raw(server, channel, &headers, &body)
}

/// A lockstep with one marketplace channel, and that channel's simulator.
pub struct MarketRig<S> {
    pub server: Server,
    pub sim: S,
    _dir: tempfile::TempDir,
}

impl<S> MarketRig<S> {
    /// Kill -9 and restart of the rig's server (see `kill9_and_restart`).
    pub fn restart(self) -> MarketRig<S> {
        MarketRig {
            server: kill9_and_restart(self.server),
            sim: self.sim,
            _dir: self._dir,
        }
    }
}

/// A channel whose refresh token rotates (TikTok, Etsy), its sim issuing access tokens of
/// a few seconds: the grant is kept in the data directory, readable by the owner alone;
/// pushes go on past the first access token's lifetime (refreshed with the rotated
/// refresh token) and after a kill -9 and a restart, when the config's refresh token no
/// longer works. `{prefix}0` and `{prefix}1` are SKUs of the channel.
pub fn rotated_refresh_token_is_kept<S>(
    rig: MarketRig<S>,
    channel: &str,
    prefix: &str,
    market: impl Fn(&S) -> &loadgen::market::Market,
    refreshes: impl Fn(&S) -> u32,
) {
    let wait = Duration::from_secs(30);
    let (first, second) = (format!("{prefix}0"), format!("{prefix}1"));
    count(&rig.server, &first, 5);
    assert!(market(&rig.sim)
        .wait_for(wait, |l| l[&first] == 5)
        .is_some());
    let grant = rig.server.data_dir.join(format!("token-{channel}.json"));
    assert!(grant.exists(), "the grant is kept in the data directory");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&grant).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by the owner alone: {mode:o}");
    }
    // Past the first token's lifetime: refreshed before it ran out, so nothing fails.
    std::thread::sleep(Duration::from_secs(5));
    count(&rig.server, &second, 6);
    assert!(market(&rig.sim)
        .wait_for(wait, |l| l[&second] == 6)
        .is_some());
    assert!(
        refreshes(&rig.sim) >= 2,
        "refreshed: {}",
        refreshes(&rig.sim)
    );
    // The config still holds the first refresh token, which the channel now refuses:
    // after a kill -9 the stored one is used.
    let rig = rig.restart();
    let before = refreshes(&rig.sim);
    std::thread::sleep(Duration::from_secs(5));
    count(&rig.server, &first, 7);
    assert!(
        market(&rig.sim)
            .wait_for(wait, |l| l[&first] == 7)
            .is_some(),
        "pushes go on after the restart: {:?}",
        rig.server.stderr_lines()
    );
    assert!(refreshes(&rig.sim) > before);
}

/// SKUs `{prefix}{i}` for `i` in `range`, each with the channel's id `id(i)`.
pub fn skus(
    prefix: &str,
    range: std::ops::Range<usize>,
    id: impl Fn(usize) -> String,
) -> Vec<(String, String)> {
    range.map(|i| (format!("{prefix}{i}"), id(i))).collect()
}

/// Starts the simulator with `start(items)`, then lockstep with `block(&sim)` and a
/// catalog mapping `ids` on `channel`, and points the simulator's webhooks at lockstep.
pub fn market_rig<S>(
    channel: &str,
    ids: &[(String, String)],
    start: impl FnOnce(&[(&str, &str)]) -> S,
    block: impl FnOnce(&S) -> String,
    market: impl FnOnce(&S) -> &loadgen::market::Market,
) -> MarketRig<S> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let items: Vec<(&str, &str)> = ids.iter().map(|(s, i)| (s.as_str(), i.as_str())).collect();
    let sim = start(&items);
    let rows: Vec<(&str, &str, &str)> = items.iter().map(|(s, i)| (*s, channel, *i)).collect();
    let config = block(&sim) + &catalog(&data, &rows);
    let server = Server::start_with(&data, &config, None);
    market(&sim).set_webhook_url(&server.url(&format!("/webhooks/{channel}")));
    MarketRig {
        server,
        sim,
        _dir: dir,
    }
}

/// Posts native events; panics unless they are taken.
pub fn post_ok(server: &Server, events: Vec<Value>) {
    for chunk in events.chunks(1_000) {
        let (status, body) = server.post_events(&json!({ "events": chunk }));
        assert_eq!(status, 200, "{body}");
    }
}

/// Counts every SKU `{prefix}{i}` of `range` at `on_hand`, and waits until `market`
/// shows it for all of them.
pub fn count_shown(
    server: &Server,
    market: &loadgen::market::Market,
    prefix: &str,
    range: std::ops::Range<usize>,
    on_hand: i64,
) {
    let names: Vec<String> = range.map(|i| format!("{prefix}{i}")).collect();
    let events = names
        .iter()
        .map(|sku| event(&format!("count-{sku}-{on_hand}"), sku, "counted", on_hand))
        .collect();
    post_ok(server, events);
    assert!(
        market
            .wait_for(Duration::from_secs(30), |l| names
                .iter()
                .all(|s| l.get(s) == Some(&on_hand)))
            .is_some(),
        "the channel never showed {on_hand}: {:?}",
        market.levels()
    );
}

/// A 429 storm on the channel while `event` is pushed: lockstep backs off (at most 4
/// throttled calls in 2 s) and, once the storm passes, `sku` shows `after`.
pub fn throttle_storm_passes(
    server: &Server,
    market: &loadgen::market::Market,
    event: Value,
    sku: &str,
    after: i64,
) {
    let wait = Duration::from_secs(30);
    market.set_fault(loadgen::webhook_sim::Fault::Throttle { retry_after_s: 1 });
    post_ok(server, vec![event]);
    let throttled = || market.throttled_calls();
    assert!(eventually(wait, || throttled() > 0), "the storm was met");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        throttled() <= 4,
        "backed off: {} throttled calls in 2 s",
        throttled()
    );
    market.set_fault(loadgen::webhook_sim::Fault::None);
    assert!(
        market
            .wait_for(wait, |l| l.get(sku) == Some(&after))
            .is_some(),
        "{sku} reached {after} after the storm: {:?}",
        market.levels()
    );
}

/// RFC 3339 in UTC, `minutes` before now, whole seconds (`2026-12-03T10:00:00Z`): a
/// payload's time must be recent, or the delivery is older than the idempotency
/// horizon and refused.
pub fn minutes_ago(minutes: i64) -> String {
    let at = lockstep::clock::now_micros() - minutes * 60_000_000;
    // Whole seconds: the format then carries no fraction.
    lockstep::clock::format_rfc3339(at - at.rem_euclid(1_000_000))
}

/// The same in WooCommerce's `*_gmt` form: no zone, no fraction (`2026-12-03T10:00:00`).
pub fn woo_minutes_ago(minutes: i64) -> String {
    minutes_ago(minutes).trim_end_matches('Z').to_string()
}

/// The CSRF token of the console's page for `sku` (served without sign-in on loopback
/// when no admin token is set), as its count form carries it.
pub fn console_csrf(server: &Server, sku: &str) -> String {
    let page = server.text(&format!("/console/skus/{sku}"));
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's count form carries its CSRF token")
        .to_string()
}

/// Counts each of `skus` at 10 and loses the channel's webhooks from then on, so that
/// the poll alone reads the orders placed after.
pub fn counted_and_left_to_the_poll(
    server: &Server,
    market: &loadgen::market::Market,
    skus: &[&str],
) {
    for sku in skus {
        count(server, sku, 10);
    }
    market.set_habits(loadgen::sim::Habits {
        lose: 1.0,
        ..loadgen::sim::Habits::default()
    });
}

/// Whether the audit holds `channel`'s `unmapped` record of an order read the channel
/// refused with `status` (Amazon's items: `?amazon: order … refused (HTTP 400: …)`).
pub fn refusal_recorded(server: &Server, channel: &str, status: u16) -> bool {
    let (order, refusal) = (
        format!("?{channel}: order"),
        format!("refused (HTTP {status}"),
    );
    server.audit_all().iter().any(|r| {
        let sku = r["sku"].as_str().unwrap_or_default();
        sku.starts_with(&order) && sku.contains(&refusal)
    })
}

/// An order whose follow-up read the channel refuses for good (a 400) is left out and
/// counted, and the poll goes on past it (it failed every pass at it, for good); one
/// refused with a 403 (the credentials or their scope, which the seller can fix) is
/// not left out: it is set aside and read again at every pass until the channel gives
/// it, and then it is held. `first` and `second`: two SKUs, each alone on the orders
/// `place` makes, with webhooks lost so that the poll alone reads them.
pub fn a_refused_order_is_left_out_and_a_forbidden_one_set_aside(
    server: &Server,
    market: &loadgen::market::Market,
    channel: &str,
    (first, second): (&str, &str),
    place: &dyn Fn(&str, i64),
) {
    let wait = Duration::from_secs(30);
    counted_and_left_to_the_poll(server, market, &[first, second]);
    market.shop().refused_orders.insert(first.to_string(), 400);
    place(first, 2);
    place(second, 3);
    assert!(
        eventually(wait, || server.stock(second) == Some((10, 3, 7))),
        "the poll goes on past the refused order: {:?}\n{}",
        server.stock(second),
        server.stderr_lines().join("\n")
    );
    assert_eq!(server.stock(first), Some((10, 0, 10)), "left out");
    // Said: logged as an order left out (`order_left_out`, which counts it too), or
    // recorded in the audit as `unmapped` (Amazon's items, taken item by item). The log
    // is gathered as it comes (`stderr_lines` takes the lines it gives).
    let log = std::cell::RefCell::new(Vec::<String>::new());
    let logged = |what: &[&str]| {
        log.borrow_mut().extend(server.stderr_lines());
        log.borrow()
            .iter()
            .any(|l| what.iter().all(|w| l.contains(w)))
    };
    let said = |status: u16| {
        let refusal = format!("refused (HTTP {status}");
        logged(&["left out", &refusal]) || refusal_recorded(server, channel, status)
    };
    assert!(eventually(wait, || said(400)), "{:?}", server.audit_all());
    let counted = format!("lockstep_channel_events_refused_total{{channel=\"{channel}\"}}");
    assert!(server.metric(&counted) >= 1.0, "{counted} is counted");
    // Forbidden: set aside, and once the channel gives it, it is held.
    market.shop().refused_orders.insert(second.to_string(), 403);
    place(second, 1);
    let aside = set_aside_gauge(channel);
    assert!(
        eventually(wait, || server.metric(&aside) == 1.0),
        "set aside: {}",
        server.metric(&aside)
    );
    assert!(
        eventually(wait, || logged(&["order set aside", "HTTP 403"])),
        "said, naming the 403: {}",
        log.borrow().join("\n")
    );
    let polls = market.order_polls();
    assert!(eventually(wait, || market.order_polls() >= polls + 3));
    assert_eq!(server.stock(second), Some((10, 3, 7)), "not read yet");
    assert!(!said(403), "not left out");
    market.shop().refused_orders.remove(second);
    assert!(
        eventually(wait, || server.stock(second) == Some((10, 4, 6))),
        "a forbidden order is read once the channel gives it, not left out: {:?}\n{}",
        server.stock(second),
        server.stderr_lines().join("\n")
    );
    assert!(eventually(wait, || server.metric(&aside) == 0.0));
}

/// `lockstep_poll_orders_set_aside` of `channel`.
pub fn set_aside_gauge(channel: &str) -> String {
    format!("lockstep_poll_orders_set_aside{{channel=\"{channel}\"}}")
}

/// An order whose follow-up read the channel keeps failing (`status`, a 5xx for that
/// order alone) is set aside and the poll reads on past it: an order placed after it is
/// held. Before, every pass failed at it, and no later order of the channel reached the
/// poll for good. The order set aside is counted (`lockstep_poll_orders_set_aside`) and
/// named on the console, kept in the data directory across a kill -9, does not keep an
/// order set aside after it from being read, and is held once the channel gives it. `first` and `second`: two SKUs, each alone on the orders `place`
/// makes, with webhooks lost so that the poll alone reads them.
pub fn a_failing_order_is_set_aside_and_held_once_it_mends<S>(
    rig: MarketRig<S>,
    channel: &str,
    market: impl Fn(&S) -> &loadgen::market::Market,
    (first, second): (&str, &str),
    place: impl Fn(&S, &str, i64),
    status: u16,
) {
    let wait = Duration::from_secs(30);
    counted_and_left_to_the_poll(&rig.server, market(&rig.sim), &[first, second]);
    market(&rig.sim)
        .shop()
        .refused_orders
        .insert(first.to_string(), status);
    place(&rig.sim, first, 2);
    place(&rig.sim, second, 3);
    assert!(
        eventually(wait, || rig.server.stock(second) == Some((10, 3, 7))),
        "the poll reads on past the failing order: {:?}\n{}",
        rig.server.stock(second),
        rig.server.stderr_lines().join("\n")
    );
    let aside = set_aside_gauge(channel);
    assert!(
        eventually(wait, || rig.server.metric(&aside) == 1.0),
        "{aside}: {}",
        rig.server.metric(&aside)
    );
    assert_eq!(rig.server.stock(first), Some((10, 0, 10)), "not read yet");
    let named = "1 order set aside, read again at every pass (order ";
    let console = rig.server.text("/console");
    assert!(
        console.contains(named) && console.contains(&format!("HTTP {status}")),
        "the console names it: {console}"
    );
    let file = rig
        .server
        .data_dir
        .join(format!("poll-{channel}.set-aside"));
    assert!(file.exists(), "kept in the data directory");
    // Kept across a kill -9. The order is made an hour old, so that no list after the
    // restart (5 minutes back from the watermark) names it again: only the file brings
    // it back.
    made_an_hour_old(market(&rig.sim), first);
    let rig = rig.restart();
    let polls = market(&rig.sim).order_polls();
    assert!(eventually(wait, || market(&rig.sim).order_polls() >= polls + 2));
    assert!(
        eventually(wait, || rig.server.metric(&aside) == 1.0),
        "still aside after the restart: {}",
        rig.server.metric(&aside)
    );
    assert_eq!(rig.server.stock(first), Some((10, 0, 10)), "not read yet");
    // Another order set aside behind it, made an hour old too: once the channel gives
    // it, it is held, though the first still fails before it at every pass.
    let shop = || market(&rig.sim).shop();
    shop().refused_orders.insert(second.to_string(), status);
    place(&rig.sim, second, 1);
    assert!(eventually(wait, || rig.server.metric(&aside) == 2.0));
    made_an_hour_old(market(&rig.sim), second);
    shop().refused_orders.remove(second);
    assert!(
        eventually(wait, || rig.server.stock(second) == Some((10, 4, 6))),
        "an order behind one that never mends is read: {:?}",
        rig.server.stock(second)
    );
    assert!(eventually(wait, || rig.server.metric(&aside) == 1.0));
    assert_eq!(rig.server.stock(first), Some((10, 0, 10)), "not read yet");
    shop().refused_orders.remove(first);
    assert!(
        eventually(wait, || rig.server.stock(first) == Some((10, 2, 8))),
        "held once the channel gives it: {:?}\n{}",
        rig.server.stock(first),
        rig.server.stderr_lines().join("\n")
    );
    assert!(eventually(wait, || rig.server.metric(&aside) == 0.0));
    assert_eq!(rig.server.stock(second), Some((10, 4, 6)), "counted once");
}

/// Makes the newest order of `sku` an hour old, so that no later list of orders modified
/// since the watermark (less 5 minutes) names it.
fn made_an_hour_old(market: &loadgen::market::Market, sku: &str) {
    let mut shop = market.shop();
    let order = shop
        .orders
        .values_mut()
        .rev()
        .find(|o| o.lines.iter().any(|l| l.sku == sku))
        .expect("an order of the SKU");
    order.modified_us -= 3_600_000_000;
}

/// A polled channel lists an order no reader can key (without its id) before another:
/// the poll leaves it out, says so and counts it, and takes the one after it. Before, the
/// pass failed at it, every pass after it too, and no later order was read by the poll.
/// `place(sku, qty)` places a one-line order on the channel, whose webhooks are lost;
/// the orders of `first` are listed without their id (`Shop::unreadable_skus`) from
/// before it is placed.
pub fn an_unreadable_order_does_not_stop_the_poll(
    server: &Server,
    market: &loadgen::market::Market,
    channel: &str,
    (first, second): (&str, &str),
    place: &dyn Fn(&str, i64),
) {
    let wait = Duration::from_secs(30);
    counted_and_left_to_the_poll(server, market, &[first, second]);
    market.shop().unreadable_skus.insert(first.to_string());
    place(first, 2);
    place(second, 3);
    assert!(
        eventually(wait, || server.stock(second) == Some((10, 3, 7))),
        "{:?}\n{}",
        server.stock(second),
        server.stderr_lines().join("\n")
    );
    assert_eq!(server.stock(first), Some((10, 0, 10)), "left out");
    let counted = format!("lockstep_channel_events_refused_total{{channel=\"{channel}\"}}");
    assert!(server.metric(&counted) >= 1.0, "{counted} is counted");
}
