//! The scenarios whose channels are Standard Webhooks shops (`webhook_sim`): `outage`,
//! `duplicates`, `contention`, `audit`, and `latency` with those built on it (`burst`,
//! `ceiling`, `soak`); the lockstep they run against (started on a temp data directory,
//! or one already running), its seeding, and the human table of a report.
//!
//! `latency` is an open-loop order generator, with every channel a simulator in this
//! process. Orders arrive on a fixed schedule (never waiting for replies, so overload
//! shows as latency), each from one channel as a signed webhook. For each order the
//! scenario records when it was sent, when lockstep answered, and the available quantity
//! it answered; afterwards it finds, in each other channel's arrival log, the first value
//! at or below that quantity for the SKU: the order's propagation time is the latest of
//! those.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{json, Value};

use crate::webhook_sim::WebhookSim;

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The `lockstep` binary to start (unless `engine` is given).
    pub spawn: String,
    /// A lockstep already running, at this base URL, configured with the channels
    /// `engine_config` prints (its simulators on fixed ports from `sim_port`).
    pub engine: Option<String>,
    /// The first simulator's port (the others follow); `None`: any free ports.
    pub sim_port: Option<u16>,
    pub orders_per_minute: u64,
    pub duration: Duration,
    pub skus: usize,
    pub channels: usize,
    /// Fail when p99 propagation exceeds this.
    pub slo_p99: Option<Duration>,
    /// Arrivals, SKU skew, lines per order, duplicates (the `latency` scenario).
    pub traffic: crate::traffic::Traffic,
    /// `mixed`: extra lines for a channel's `[[channels]]` block, by its name in the
    /// fleet (`woo`, `shop`, ...), after the scenario's own.
    pub channel_extra: Vec<(String, String)>,
}

/// One order as it went.
struct Sent {
    /// The SKU of each line.
    skus: Vec<usize>,
    channel: usize,
    at: Instant,
    /// When lockstep answered, and the available quantity it answered for each line.
    answered: Option<(Instant, Vec<i64>)>,
}

/// Latencies in microseconds, 3 significant digits, saturating at an hour.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// The lockstep under test: one this run started (stopped and removed at the end), or
/// one already running.
pub(crate) struct Engine {
    pub(crate) child: Option<Child>,
    pub(crate) base: String,
    dir: Option<std::path::PathBuf>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// This run's tag, in every SKU, order id and delivery id it sends: a lockstep that is
/// already running (and remembers earlier runs' keys) takes each run's orders as new.
pub(crate) fn tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        format!("{:x}", micros % (1 << 40))
    })
}

/// The webhook simulators of a scenario: channel `ch{i}`, on `sim_port + i` when set.
pub(crate) fn simulators(plan: &Plan, n: usize) -> Vec<WebhookSim> {
    (0..n)
        .map(|i| match plan.sim_port {
            Some(port) => WebhookSim::start_at(SECRET, port + i as u16),
            None => WebhookSim::start(SECRET),
        })
        .collect()
}

/// The `[[channels]]` blocks a running lockstep needs for `loadgen --engine`: channels
/// `ch0`.. of kind `webhook` at the simulators' fixed ports, unthrottled.
pub fn engine_config(channels: usize, sim_port: u16) -> String {
    let mut config = String::new();
    for i in 0..channels {
        config += &format!(
            "\n[[channels]]\nname = \"ch{i}\"\nkind = \"webhook\"\nbase_url = \"http://127.0.0.1:{}/stock\"\nwebhook_secret = \"{SECRET}\"\nrate_limit = {{ requests_per_second = 100000.0, burst = 1000 }}\nfirst_sync = \"push\"\n",
            sim_port + i as u16
        );
    }
    config
}

const SECRET: &str = "whsec_bG9hZGdlbi1zaW11bGF0ZWQtY2hhbm5lbC1rZXk=";

pub(crate) fn spawn(plan: &Plan, sims: &[WebhookSim]) -> anyhow::Result<Engine> {
    let mut channels = String::new();
    for (i, sim) in sims.iter().enumerate() {
        // No rate limit to speak of: the `latency` scenario measures lockstep, not pacing.
        channels += &format!(
            "\n[[channels]]\nname = \"ch{i}\"\nkind = \"webhook\"\nbase_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\nrate_limit = {{ requests_per_second = 100000.0, burst = 1000 }}\nfirst_sync = \"push\"\n",
            sim.url()
        );
    }
    spawn_with(plan, &channels, None)
}

/// Starts lockstep on a temp data directory with these `[[channels]]` blocks and, when
/// given, this catalog CSV.
pub(crate) fn spawn_with(
    plan: &Plan,
    channels: &str,
    catalog: Option<&str>,
) -> anyhow::Result<Engine> {
    if let Some(base) = &plan.engine {
        let base = base.trim_end_matches('/').to_string();
        let health = reqwest::blocking::get(format!("{base}/healthz"))
            .with_context(|| format!("no lockstep answers at {base}"))?;
        if !health.status().is_success() {
            bail!("{base}/healthz answered {}", health.status());
        }
        return Ok(Engine {
            child: None,
            base,
            dir: None,
        });
    }
    // Unique per process and per call: scenarios may run side by side in one process.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loadgen-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n{channels}",
        dir.join("data").display().to_string()
    );
    if let Some(catalog) = catalog {
        std::fs::write(dir.join("catalog.csv"), catalog)?;
        config += "\n[catalog]\npath = \"catalog.csv\"\n";
    }
    let config_path = dir.join(CONFIG_FILE);
    std::fs::write(&config_path, config)?;
    let (child, base) = start(&plan.spawn, &config_path)?;
    Ok(Engine {
        base,
        child: Some(child),
        dir: Some(dir),
    })
}

/// The config file of a lockstep this run started, in its temp directory.
const CONFIG_FILE: &str = "lockstep.toml";

/// Starts `binary` with the config at `config_path`; returns it and its base URL once it
/// prints that it listens (after its recovery: the engine starts before the listener).
fn start(binary: &str, config_path: &std::path::Path) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let Some(base) = line.trim().strip_prefix("lockstep listening on ") else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("lockstep did not start (it printed {line:?})");
    };
    Ok((child, base.to_string()))
}

impl Engine {
    /// Kills the lockstep this run started with SIGKILL (no shutdown of any kind) and
    /// starts `binary` again on the same data directory and config; returns once it
    /// prints that it listens (its base URL changes: it listens on a free port).
    pub(crate) fn kill_and_restart(&mut self, binary: &str) -> anyhow::Result<()> {
        let (Some(child), Some(dir)) = (self.child.as_mut(), self.dir.as_ref()) else {
            bail!("only a lockstep this run started can be restarted");
        };
        // `Child::kill` is SIGKILL on Unix.
        child.kill()?;
        child.wait()?;
        let (child, base) = start(binary, &dir.join(CONFIG_FILE))?;
        self.child = Some(child);
        self.base = base;
        Ok(())
    }
}

/// What `seed` gives every SKU.
const SEED_STOCK: i64 = 1_000_000;

/// The SKU names the scenarios use.
pub(crate) fn sku(i: usize) -> String {
    format!("LG-{}-{i:06}", tag())
}

/// Stocks every SKU, then waits until every channel shows it: the baseline.
fn seed(engine: &Engine, sims: &[WebhookSim], skus: usize) -> anyhow::Result<()> {
    let stock: i64 = SEED_STOCK;
    for (n, chunk) in (0..skus).collect::<Vec<_>>().chunks(1000).enumerate() {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"idempotency_key": format!("{}-seed-{i}", tag()), "sku": sku(*i), "kind": "counted", "qty": stock, "source": "seed"}))
            .collect();
        let (status, body) = sims[0].send_events(
            &format!("{}/v1/events", engine.base),
            &format!("{}-seed-{n}", tag()),
            &json!({ "events": events }),
        );
        if status != 200 {
            bail!("seeding failed: {status} {body}");
        }
    }
    for sim in sims {
        if sim
            .wait_for(Duration::from_secs(60), |levels| levels.len() >= skus)
            .is_none()
        {
            bail!("channels did not receive the seeded stock within 60 s");
        }
    }
    Ok(())
}

/// The available quantity lockstep holds for a SKU.
fn available(engine: &Engine, sim: &WebhookSim, sku: &str) -> anyhow::Result<i64> {
    let body = sim.get_json(&format!("{}/v1/skus/{sku}", engine.base))?;
    body["available"]
        .as_i64()
        .context("no available in the SKU answer")
}

/// Verification test 4 (DESIGN §7): channel 1 fails with 503 for `down` while orders flow
/// from channel 0; once it answers again it must hold every SKU's value within 5 s. With
/// `broken`, the simulator never recovers, so the verdict must fail.
pub fn outage(plan: &Plan, down: Duration, broken: bool) -> anyhow::Result<(Value, bool)> {
    let sims: Vec<WebhookSim> = simulators(plan, 2);
    let engine = spawn(plan, &sims)?;
    seed(&engine, &sims, plan.skus)?;
    sims[1].set_fault(crate::sim::Fault::Status(503));
    let interval = Duration::from_secs_f64(60.0 / plan.orders_per_minute as f64);
    let started = Instant::now();
    let mut n = 0usize;
    let mut lost = 0usize;
    while started.elapsed() < down {
        let body = json!({"events": [{"sku": sku(n % plan.skus), "kind": "order_placed", "qty": 1, "order_id": format!("{}-OUT-{n}", tag())}]});
        let (status, _) = sims[0].send_events(
            &format!("{}/webhooks/ch0", engine.base),
            &format!("out-{n}"),
            &body,
        );
        lost += usize::from(status != 200);
        n += 1;
        std::thread::sleep(interval.saturating_sub(Duration::from_millis(1)));
    }
    if !broken {
        sims[1].set_fault(crate::sim::Fault::None);
    }
    let returned = Instant::now();
    let touched = n.min(plan.skus);
    let mut want = std::collections::HashMap::new();
    for i in 0..touched {
        want.insert(sku(i), available(&engine, &sims[0], &sku(i))?);
    }
    let converged = sims[1].wait_for(Duration::from_secs(5), |levels| {
        want.iter().all(|(s, w)| levels.get(s) == Some(w))
    });
    let passed = lost == 0 && converged.is_some();
    let report = json!({
        "scenario": "outage", "orders": n, "lost": lost, "outage_s": down.as_secs_f64(),
        "converged_after_return_ms": converged.map(|d| d.as_secs_f64() * 1000.0),
        "waited_ms": returned.elapsed().as_secs_f64() * 1000.0, "bar_s": 5, "passed": passed,
    });
    Ok((report, passed))
}

/// Verification test 6: every order webhook is delivered three times (two of them at the
/// same moment); each must count once. With `broken`, the simulator behaves like a
/// channel that gives each redelivery a new id and carries no order id, so nothing can
/// tell the copies apart and the verdict must fail.
pub fn duplicates(plan: &Plan, orders: usize, broken: bool) -> anyhow::Result<(Value, bool)> {
    let sims: Vec<WebhookSim> = simulators(plan, 2);
    let engine = spawn(plan, &sims)?;
    seed(&engine, &sims, plan.skus)?;
    let url = format!("{}/webhooks/ch0", engine.base);
    // Both simulators live to the end: lockstep keeps pushing to the second one.
    let mut sims = sims.into_iter();
    let sim = Arc::new(sims.next().expect("two simulators"));
    let _other = sims.next();
    let mut placed = vec![0i64; plan.skus];
    for n in 0..orders {
        let sku_index = n % plan.skus;
        placed[sku_index] += 1;
        let body = if broken {
            json!({"events": [{"sku": sku(sku_index), "kind": "order_placed", "qty": 1}]})
        } else {
            json!({"events": [{"sku": sku(sku_index), "kind": "order_placed", "qty": 1, "order_id": format!("{}-DUP-{n}", tag())}]})
        };
        let id = |copy: usize| {
            if broken {
                format!("{}-dup-{n}-{copy}", tag())
            } else {
                format!("{}-dup-{n}", tag())
            }
        };
        let racers: Vec<_> = (0..2)
            .map(|copy| {
                let (sim, url, body, id) = (sim.clone(), url.clone(), body.clone(), id(copy));
                std::thread::spawn(move || sim.send_events(&url, &id, &body).0)
            })
            .collect();
        for racer in racers {
            if racer
                .join()
                .map_err(|_| anyhow::anyhow!("a sender panicked"))?
                != 200
            {
                bail!("a delivery was refused");
            }
        }
        if sim.send_events(&url, &id(2), &body).0 != 200 {
            bail!("a delivery was refused");
        }
    }
    let mut wrong = 0usize;
    for (i, count) in placed.iter().enumerate() {
        let body = sim.get_json(&format!("{}/v1/skus/{}", engine.base, sku(i)))?;
        wrong += usize::from(body["committed"].as_i64() != Some(*count));
    }
    let passed = wrong == 0;
    let report = json!({"scenario": "duplicates", "orders": orders, "deliveries": orders * 3, "skus_wrong": wrong, "passed": passed});
    Ok((report, passed))
}

/// Verification test 3: `orders` single-unit orders for one SKU stocked with `stock`,
/// sent at the same moment from every channel. Afterwards committed must equal the
/// orders, exactly `orders - stock` of them must be recorded as oversells in the audit,
/// and every channel must show 0.
pub fn contention(plan: &Plan, stock: i64, orders: usize) -> anyhow::Result<(Value, bool)> {
    let sims: Vec<WebhookSim> = simulators(plan, plan.channels.max(2));
    let engine = spawn(plan, &sims)?;
    let hot = format!("LG-{}-HOT", tag());
    let seed = json!({"events": [{"idempotency_key": format!("{}-hot-seed", tag()), "sku": hot, "kind": "counted", "qty": stock, "source": "seed"}]});
    if sims[0]
        .send_events(
            &format!("{}/v1/events", engine.base),
            &format!("{}-hot-seed", tag()),
            &seed,
        )
        .0
        != 200
    {
        bail!("seeding failed");
    }
    let sims = Arc::new(sims);
    let threads: Vec<_> = (0..orders)
        .map(|n| {
            let (sims, base, hot) = (sims.clone(), engine.base.clone(), hot.clone());
            std::thread::spawn(move || {
                let channel = n % sims.len();
                let body = json!({"events": [{"sku": hot, "kind": "order_placed", "qty": 1, "order_id": format!("{}-HOT-{n}", tag())}]});
                sims[channel].send_events(&format!("{base}/webhooks/ch{channel}"), &format!("{}-hot-{n}", tag()), &body).0
            })
        })
        .collect();
    let mut refused = 0usize;
    for thread in threads {
        refused += usize::from(
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("a sender panicked"))?
                != 200,
        );
    }
    let state = sims[0].get_json(&format!("{}/v1/skus/{hot}", engine.base))?;
    let audit = sims[0].get_json(&format!("{}/v1/audit?sku={hot}&limit=1000", engine.base))?;
    let oversells = audit["records"]
        .as_array()
        .map_or(0, |r| r.iter().filter(|r| r["oversell"] == true).count());
    let want_oversells = (orders as i64 - stock).max(0) as usize;
    let all_zero = sims.iter().all(|sim| {
        sim.wait_for(Duration::from_secs(5), |l| l.get(&hot) == Some(&0))
            .is_some()
    });
    let passed = refused == 0
        && state["committed"].as_i64() == Some(orders as i64)
        && oversells == want_oversells
        && (want_oversells == 0 || all_zero);
    let report = json!({
        "scenario": "contention", "stock": stock, "orders": orders, "refused": refused,
        "committed": state["committed"], "available": state["available"],
        "oversells_recorded": oversells, "oversells_expected": want_oversells,
        "channels_show_zero": all_zero, "passed": passed,
    });
    Ok((report, passed))
}

/// Verification test 5: every order is in the audit the moment its webhook is answered.
pub fn audit(plan: &Plan, orders: usize) -> anyhow::Result<(Value, bool)> {
    let sims: Vec<WebhookSim> = simulators(plan, 2);
    let engine = spawn(plan, &sims)?;
    let mut missing = 0usize;
    for n in 0..orders {
        let name = sku(n % plan.skus);
        let body = json!({"events": [{"sku": name, "kind": "order_placed", "qty": 1, "order_id": format!("{}-AUD-{n}", tag())}]});
        let (status, answer) = sims[0].send_events(
            &format!("{}/webhooks/ch0", engine.base),
            &format!("aud-{n}"),
            &body,
        );
        if status != 200 {
            bail!("order {n} was refused: {answer}");
        }
        let key = answer["results"][0]["idempotency_key"].clone();
        let trail = sims[0].get_json(&format!("{}/v1/audit?sku={name}&limit=5", engine.base))?;
        let seen = trail["records"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["idempotency_key"] == key));
        missing += usize::from(!seen);
    }
    let passed = missing == 0;
    Ok((
        json!({"scenario": "audit", "orders": orders, "missing_right_after_ack": missing, "passed": passed}),
        passed,
    ))
}

/// Verification test 2: `burst` orders in one second; every channel converges and p99
/// propagation stays under 2 s.
pub fn burst(plan: &Plan, orders: u64) -> anyhow::Result<(Value, bool)> {
    let burst_plan = Plan {
        orders_per_minute: orders * 60,
        duration: Duration::from_secs(1),
        slo_p99: Some(Duration::from_secs(2)),
        ..plan.clone()
    };
    let (mut report, passed) = latency(&burst_plan)?;
    report["scenario"] = json!("burst");
    Ok((report, passed))
}

/// The bar `ceiling` holds each step to: p99 propagation (DESIGN §5: "well under 5 s").
pub const CEILING_P99: Duration = Duration::from_secs(5);
/// A `ceiling` step holds only if its orders were answered at this share of the rate due
/// at least (orders over the seconds from the first due to the last answered): one that
/// falls behind builds a backlog that a 10 s step can hide under the 5 s bar (each wait
/// is in its latency, measured from when the order was due), and a longer step would
/// grow it without end.
pub const CEILING_KEPT: f64 = 0.95;

/// `ceiling`: `latency` runs of `plan.duration` each at rising rates, from
/// `plan.orders_per_minute`, each 1.5 times the last, until one loses an order, leaves one
/// unconverged or miscounted, has p99 propagation over 5 s, or has its orders answered at
/// less than `CEILING_KEPT` of the rate due. Reports every step, the highest rate held and
/// what the first failed step ran out of (`limited_by`). Passes when the first rate held.
pub fn ceiling(plan: &Plan, steps_max: usize) -> anyhow::Result<(Value, bool)> {
    let mut steps = Vec::new();
    let mut held: Option<(u64, f64)> = None;
    // What the first step that failed ran out of (`usage::Usage::limits`).
    let mut limited_by = json!([]);
    let mut rate = plan.orders_per_minute as f64;
    for _ in 0..steps_max {
        let step_plan = Plan {
            orders_per_minute: rate as u64,
            slo_p99: Some(CEILING_P99),
            ..plan.clone()
        };
        let (report, mut passed) = latency(&step_plan)?;
        let due_per_s = rate / 60.0;
        let achieved = report["orders_per_second_achieved"].as_f64().unwrap_or(0.0);
        let mut limits = report["limits"].as_array().cloned().unwrap_or_default();
        if achieved < CEILING_KEPT * due_per_s {
            passed = false;
            limits.push(json!(format!(
                "the pace: {achieved:.0} orders/s answered of the {due_per_s:.0}/s due \
                 (the rest waited, a backlog a longer step would grow)"
            )));
        }
        steps.push(json!({
            "orders_per_minute": rate as u64,
            "orders_per_second_achieved": report["orders_per_second_achieved"],
            "p99_ms": report["propagation"]["p99_ms"],
            "lost": report["lost"],
            "usage": report["usage"],
            "passed": passed,
        }));
        if !passed {
            limited_by = json!(limits);
            break;
        }
        held = Some((
            rate as u64,
            report["orders_per_second_achieved"].as_f64().unwrap_or(0.0),
        ));
        rate *= 1.5;
    }
    let report = json!({
        "scenario": "ceiling",
        "bar_p99_ms": CEILING_P99.as_secs_f64() * 1000.0,
        "steps": steps,
        "held_orders_per_minute": held.map(|h| h.0),
        "held_orders_per_second_achieved": held.map(|h| h.1),
        "limited_by": limited_by,
        "passed": held.is_some(),
    });
    Ok((report.clone(), held.is_some()))
}

/// Resident memory of a process, from `/proc/{pid}/status` (Linux), in MiB.
pub(crate) fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// `soak`: `latency` for `plan.duration` (an hour from the command line) with lockstep's
/// resident memory sampled every `every`; it passes when `latency` does and memory is
/// flat: the mean of the last quarter of the samples at most 10% (plus 8 MiB) above the
/// mean of the second quarter (the first is warm-up).
pub fn soak(plan: &Plan, every: Duration) -> anyhow::Result<(Value, bool)> {
    let (mut report, passed) = latency_sampled(plan, Some(every))?;
    let samples: Vec<f64> = report["rss_mib"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["mib"].as_f64()).collect())
        .unwrap_or_default();
    let quarter = samples.len() / 4;
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    let (settled, last) = if quarter >= 1 {
        (
            mean(&samples[quarter..2 * quarter]),
            mean(&samples[samples.len() - quarter..]),
        )
    } else {
        (0.0, 0.0)
    };
    let flat = quarter >= 1 && last <= settled * 1.10 + 8.0;
    report["scenario"] = json!("soak");
    report["rss_settled_mib"] = json!(settled);
    report["rss_last_mib"] = json!(last);
    report["memory_flat"] = json!(flat);
    let passed = passed && flat;
    report["passed"] = json!(passed);
    Ok((report, passed))
}

/// Runs the scenario; returns the report and whether it passed.
pub fn latency(plan: &Plan) -> anyhow::Result<(Value, bool)> {
    latency_sampled(plan, None)
}

/// `latency`, sampling lockstep's resident memory every `rss_every` when given: the
/// simulators and lockstep started and seeded, the open loop run, then measured.
fn latency_sampled(plan: &Plan, rss_every: Option<Duration>) -> anyhow::Result<(Value, bool)> {
    if plan.channels < 2 {
        bail!("--channels must be at least 2: an order on one channel propagates to the others");
    }
    let sims: Vec<WebhookSim> = simulators(plan, plan.channels);
    let engine = spawn(plan, &sims)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(plan.traffic.connections)
        .build()?;
    seed(&engine, &sims, plan.skus)?;
    let sampler = rss_every.map(|every| RssSampler::start(&engine, every));
    let sims = Arc::new(sims);
    let pid = engine.child.as_ref().map(Child::id);
    let before = crate::usage::Snapshot::take(pid, &engine.base);
    let run = open_loop(plan, &runtime, client, &engine.base, &sims);
    let used =
        crate::usage::Usage::between(&before, &crate::usage::Snapshot::take(pid, &engine.base));
    let rss = sampler.map(RssSampler::stop).unwrap_or_default();
    // Let the last changes arrive.
    std::thread::sleep(Duration::from_secs(2));

    let arrivals: Vec<HashMap<String, Vec<crate::sim::Arrival>>> = sims
        .iter()
        .map(|sim| {
            (0..plan.skus)
                .map(|i| (sku(i), sim.arrivals(&sku(i))))
                .collect()
        })
        .collect();
    let measured = measure(plan, &run, &arrivals);
    let miscounted = if measured.lost == 0 {
        miscounted(plan, &sims[0], &engine, &run.sent)?
    } else {
        0
    };
    let refused = sims
        .iter()
        .map(|sim| sim.pushes().iter().filter(|p| p.status != 200).count())
        .collect();
    let verdict = latency_report(plan, &run, &measured, miscounted, refused, &rss, &used);
    drop(engine);
    Ok(verdict)
}

/// Samples of a process's resident memory (seconds into the sampling, MiB), taken on a
/// thread of their own until stopped.
struct RssSampler {
    samples: Arc<Mutex<Vec<(f64, f64)>>>,
    running: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(engine: &Engine, every: Duration) -> RssSampler {
        let pid = engine.child.as_ref().map_or(0, Child::id);
        let samples: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (shared, still) = (samples.clone(), running.clone());
        let start = Instant::now();
        let thread = std::thread::spawn(move || {
            while still.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(mib) = rss_mib(pid) {
                    shared
                        .lock()
                        .expect("not poisoned")
                        .push((start.elapsed().as_secs_f64(), mib));
                }
                std::thread::sleep(every);
            }
        });
        RssSampler {
            samples,
            running,
            thread,
        }
    }

    /// Stops sampling; every sample taken.
    fn stop(self) -> Vec<(f64, f64)> {
        self.running
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = self.thread.join();
        std::mem::take(&mut *self.samples.lock().expect("not poisoned"))
    }
}

/// What the open loop sent.
struct Run {
    sent: Vec<Sent>,
    duplicates_sent: usize,
    reordered_sent: usize,
    /// Seconds from the first order due to the last delivery answered.
    offered_s: f64,
    /// The most deliveries that were in flight at once.
    in_flight_most: usize,
    started: Instant,
}

/// The deliveries in flight: at most `Traffic::connections` at once (a permit each), and
/// the most there ever were, counted apart from the permits, so a report shows what the
/// bound did.
#[derive(Clone)]
struct InFlight {
    permits: Arc<tokio::sync::Semaphore>,
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

/// One delivery in flight, until dropped.
struct Delivering {
    _permit: tokio::sync::OwnedSemaphorePermit,
    now: Arc<AtomicUsize>,
}

impl InFlight {
    fn new(connections: usize) -> InFlight {
        InFlight {
            permits: Arc::new(tokio::sync::Semaphore::new(connections.max(1))),
            now: Arc::default(),
            most: Arc::default(),
        }
    }

    /// Waits for room, then counts one more delivery in flight while the guard lives.
    async fn enter(&self) -> Option<Delivering> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.most.fetch_max(now, Ordering::Relaxed);
        Some(Delivering {
            _permit: permit,
            now: self.now.clone(),
        })
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open loop: every order is sent when it is due, whatever the replies do, while
/// the plan's fault windows come and go; returns once every delivery is answered, every
/// shipment sent and every fault window over.
fn open_loop(
    plan: &Plan,
    runtime: &tokio::runtime::Runtime,
    client: reqwest::Client,
    base: &str,
    sims: &Arc<Vec<WebhookSim>>,
) -> Run {
    let mut rng = rand::rng();
    let traffic = &plan.traffic;
    let due = crate::traffic::schedule(
        traffic.arrivals,
        plan.orders_per_minute as f64 / 60.0,
        plan.duration,
        &mut rng,
    );
    let zipf = crate::traffic::Zipf::new(plan.skus, traffic.skew);
    let started = Instant::now();
    let faults = schedule_faults(sims, &traffic.faults, started);
    let mut orders = Orders {
        plan,
        client,
        base: base.to_string(),
        started,
        sent: Arc::new(Mutex::new(Vec::with_capacity(due.len()))),
        in_flight: InFlight::new(traffic.connections),
        duplicates_sent: 0,
        reordered_sent: 0,
        tasks: Vec::with_capacity(due.len()),
        ships: Vec::new(),
    };
    let offered_s = runtime.block_on(async {
        for (n, offset) in due.iter().enumerate() {
            tokio::time::sleep_until((started + *offset).into()).await;
            let skus = zipf.order(traffic.lines, &mut rng);
            let channel = crate::traffic::channel_of(n, plan.channels, &traffic.mix, &mut rng);
            orders.place(n, *offset, skus, channel, &mut rng);
        }
        orders.settle().await
    });
    for fault in faults {
        let _ = fault.join();
    }
    let sent = std::mem::take(&mut *orders.sent.lock().expect("not poisoned"));
    Run {
        sent,
        in_flight_most: orders.in_flight.most.load(Ordering::Relaxed),
        duplicates_sent: orders.duplicates_sent,
        reordered_sent: orders.reordered_sent,
        offered_s,
        started,
    }
}

/// The orders of the open loop as they go out: each signed webhook, its copies, and its
/// shipment later, each on a task of its own.
struct Orders<'a> {
    plan: &'a Plan,
    client: reqwest::Client,
    base: String,
    started: Instant,
    sent: Arc<Mutex<Vec<Sent>>>,
    in_flight: InFlight,
    duplicates_sent: usize,
    reordered_sent: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ships: Vec<tokio::task::JoinHandle<()>>,
}

impl Orders<'_> {
    fn webhook(&self, channel: usize) -> String {
        format!("{}/webhooks/ch{channel}", self.base)
    }

    /// Order `n`, due `offset` into the run: one unit of each SKU in `skus`, placed on
    /// `channel` (sent once, or twice as a duplicate), shipped later when the plan says.
    fn place(
        &mut self,
        n: usize,
        offset: Duration,
        skus: Vec<usize>,
        channel: usize,
        rng: &mut impl Rng,
    ) {
        let events: Vec<Value> = skus
            .iter()
            .enumerate()
            .map(|(line, s)| json!({"sku": sku(*s), "kind": "order_placed", "qty": 1, "order_id": format!("{}-LG-{n}", tag()), "line_id": line.to_string()}))
            .collect();
        let bytes = serde_json::to_vec(&json!({ "events": events })).expect("json serializes");
        let headers =
            crate::signing::signed_headers(SECRET, &format!("{}-order-{n}", tag()), &bytes);
        let traffic = &self.plan.traffic;
        let copies = 1 + usize::from(rng.random_bool(traffic.duplicate_rate.clamp(0.0, 1.0)));
        self.duplicates_sent += copies - 1;
        let index = {
            let mut sent = self.sent.lock().expect("not poisoned");
            // When it was due, not when the loop got to it: a generator that falls
            // behind its schedule does not hide the wait from the latency.
            sent.push(Sent {
                skus,
                channel,
                at: self.started + offset,
                answered: None,
            });
            sent.len() - 1
        };
        for copy in 0..copies {
            // A late delivery arrives after orders placed after it.
            let late = rng.random_bool(traffic.reorder_rate.clamp(0.0, 1.0));
            self.reordered_sent += usize::from(late);
            let hold = if late {
                crate::traffic::REORDER_MAX.mul_f64(rng.random::<f64>())
            } else {
                Duration::ZERO
            };
            self.deliver(index, copy, channel, &headers, bytes.clone(), hold);
        }
        if let Some(after) = traffic.ship_after {
            self.ship(n, channel, &events, self.started + offset + after);
        }
    }

    /// Copy `copy` of order `index`, sent after `hold`; the first copy's answer is the
    /// order's (a duplicate's repeats it).
    fn deliver(
        &mut self,
        index: usize,
        copy: usize,
        channel: usize,
        headers: &[(&'static str, String)],
        bytes: Vec<u8>,
        hold: Duration,
    ) {
        let mut request = self.client.post(self.webhook(channel));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let sent = self.sent.clone();
        let in_flight = self.in_flight.clone();
        self.tasks.push(tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            let answer = async {
                let _delivering = in_flight.enter().await?;
                let response = request.body(bytes).send().await.ok()?;
                if !response.status().is_success() {
                    return None;
                }
                let body: Value = response.json().await.ok()?;
                body["results"]
                    .as_array()?
                    .iter()
                    .map(|r| r["available"].as_i64())
                    .collect::<Option<Vec<i64>>>()
            }
            .await;
            if copy == 0 {
                let now = Instant::now();
                sent.lock().expect("not poisoned")[index].answered = answer.map(|a| (now, a));
            }
        }));
    }

    /// Order `n` ships `at`, from the same channel: its lines close.
    fn ship(&mut self, n: usize, channel: usize, events: &[Value], at: Instant) {
        let shipped: Vec<Value> = events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["kind"] = json!("order_shipped");
                e
            })
            .collect();
        let bytes = serde_json::to_vec(&json!({ "events": shipped })).expect("json serializes");
        let request = self.client.post(self.webhook(channel));
        let in_flight = self.in_flight.clone();
        self.ships.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let id = format!("{}-ship-{n}", tag());
            let mut request = request;
            for (name, value) in crate::signing::signed_headers(SECRET, &id, &bytes) {
                request = request.header(name, value);
            }
            let Some(_delivering) = in_flight.enter().await else {
                return;
            };
            let _ = request.body(bytes).send().await;
        }));
    }

    /// Waits for every delivery (returning the seconds the orders took to offer, from the
    /// start to the last answer), then for every shipment.
    async fn settle(&mut self) -> f64 {
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        let offered_s = self.started.elapsed().as_secs_f64();
        for ship in std::mem::take(&mut self.ships) {
            let _ = ship.await;
        }
        offered_s
    }
}

/// The run's latencies: ingest (order to lockstep's answer) and propagation (order to
/// the last other channel holding it), overall, per channel and per second of the run.
struct Measured {
    ingest: Histogram<u64>,
    propagation: Histogram<u64>,
    per_channel: Vec<Histogram<u64>>,
    timeline: Vec<Histogram<u64>>,
    /// Orders lockstep never answered.
    lost: usize,
    /// Orders some channel never held.
    unconverged: usize,
}

fn measure(
    plan: &Plan,
    run: &Run,
    arrivals: &[HashMap<String, Vec<crate::sim::Arrival>>],
) -> Measured {
    let mut m = Measured {
        ingest: histogram(),
        propagation: histogram(),
        per_channel: (0..plan.channels).map(|_| histogram()).collect(),
        timeline: Vec::new(),
        lost: 0,
        unconverged: 0,
    };
    for order in &run.sent {
        let Some((answered, available)) = order.answered.clone() else {
            m.lost += 1;
            continue;
        };
        m.ingest
            .saturating_record(answered.duration_since(order.at).as_micros().max(1) as u64);
        let mut slowest = Duration::ZERO;
        let mut converged = true;
        for (c, log) in arrivals.iter().enumerate() {
            if c == order.channel {
                continue;
            }
            let (took, holds) = channel_took(order, &available, log);
            converged &= holds;
            m.per_channel[c].saturating_record(took.as_micros().max(1) as u64);
            slowest = slowest.max(took);
        }
        if converged {
            m.propagation
                .saturating_record(slowest.as_micros().max(1) as u64);
            let second = order.at.duration_since(run.started).as_secs() as usize;
            if m.timeline.len() <= second {
                m.timeline.resize_with(second + 1, histogram);
            }
            m.timeline[second].saturating_record(slowest.as_micros().max(1) as u64);
        } else {
            m.unconverged += 1;
        }
    }
    m
}

/// How long a channel took to hold an order: every line's SKU at or below what lockstep
/// answered for it (the latest of the lines that got there), and whether all did.
fn channel_took(
    order: &Sent,
    available: &[i64],
    log: &HashMap<String, Vec<crate::sim::Arrival>>,
) -> (Duration, bool) {
    let mut took = Duration::ZERO;
    let mut holds = true;
    for (s, available) in order.skus.iter().zip(available) {
        let first = log[&sku(*s)]
            .iter()
            .find(|a| a.at >= order.at && a.available <= *available);
        match first {
            Some(a) => took = took.max(a.at.duration_since(order.at)),
            None => holds = false,
        }
    }
    (took, holds)
}

/// SKUs whose committed count differs from the lines ordered (a duplicate applied, or an
/// order lost); with shipping, every line has shipped: nothing committed, on_hand less
/// them. Only exact when no order was refused.
fn miscounted(
    plan: &Plan,
    sim: &WebhookSim,
    engine: &Engine,
    sent: &[Sent],
) -> anyhow::Result<usize> {
    let mut lines_per_sku = vec![0i64; plan.skus];
    for order in sent {
        for s in &order.skus {
            lines_per_sku[*s] += 1;
        }
    }
    let mut miscounted = 0usize;
    for (i, lines) in lines_per_sku.iter().enumerate().filter(|(_, l)| **l > 0) {
        let body = sim.get_json(&format!("{}/v1/skus/{}", engine.base, sku(i)))?;
        let exact = match plan.traffic.ship_after {
            None => body["committed"].as_i64() == Some(*lines),
            Some(_) => {
                body["committed"].as_i64() == Some(0)
                    && body["on_hand"].as_i64() == Some(SEED_STOCK - lines)
            }
        };
        if !exact {
            miscounted += 1;
        }
    }
    Ok(miscounted)
}

/// The report of a latency run and whether it passed: nothing lost, every order held
/// everywhere, every SKU counted exactly, p99 propagation within the SLO.
fn latency_report(
    plan: &Plan,
    run: &Run,
    m: &Measured,
    miscounted: usize,
    refused: Vec<usize>,
    rss: &[(f64, f64)],
    used: &crate::usage::Usage,
) -> (Value, bool) {
    let traffic = &plan.traffic;
    let sent = &run.sent;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let summary = |h: &Histogram<u64>| json!({"count": h.len(), "p50_ms": ms(h, 0.5), "p90_ms": ms(h, 0.9), "p99_ms": ms(h, 0.99), "p999_ms": ms(h, 0.999), "max_ms": h.max() as f64 / 1000.0});
    let p99 = Duration::from_micros(m.propagation.value_at_quantile(0.99));
    let passed = m.lost == 0
        && m.unconverged == 0
        && miscounted == 0
        && plan.slo_p99.is_none_or(|slo| p99 <= slo);
    let report = json!({
        "scenario": "latency",
        "orders": sent.len(),
        "orders_per_minute_offered": plan.orders_per_minute,
        "orders_per_second_achieved": sent.len() as f64 / run.offered_s,
        "skus": plan.skus,
        "channels": plan.channels,
        "arrivals": format!("{:?}", traffic.arrivals).to_lowercase(),
        "skew": traffic.skew,
        "lines_max": traffic.lines,
        "order_lines": sent.iter().map(|o| o.skus.len()).sum::<usize>(),
        "duplicates_sent": run.duplicates_sent,
        "deliveries_in_flight_most": run.in_flight_most,
        "connections": traffic.connections,
        "reordered_sent": run.reordered_sent,
        "orders_by_channel": (0..plan.channels).map(|c| (format!("ch{c}"), json!(sent.iter().filter(|o| o.channel == c).count()))).collect::<serde_json::Map<_, _>>(),
        "faults": traffic.faults.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>(),
        "pushes_refused": refused.iter().enumerate().map(|(c, n)| (format!("ch{c}"), json!(n))).collect::<serde_json::Map<_, _>>(),
        "lost": m.lost,
        "unconverged": m.unconverged,
        "skus_miscounted": miscounted,
        "ingest": summary(&m.ingest),
        "propagation": summary(&m.propagation),
        "propagation_per_channel": m.per_channel.iter().enumerate().map(|(i, h)| (format!("ch{i}"), summary(h))).collect::<serde_json::Map<_, _>>(),
        "slo_p99_ms": plan.slo_p99.map(|d| d.as_secs_f64() * 1000.0),
        "timeline": m.timeline.iter().enumerate().map(|(s, h)| json!({"second": s, "count": h.len(), "p50_ms": ms(h, 0.5), "p99_ms": ms(h, 0.99), "max_ms": h.max() as f64 / 1000.0})).collect::<Vec<_>>(),
        "distribution": crate::report::distribution(&m.propagation),
        "rss_mib": rss.iter().map(|(s, mib)| json!({"second": s, "mib": mib})).collect::<Vec<_>>(),
        "usage": used.to_json(),
        "limits": used.limits(),
        "passed": passed,
    });
    (report, passed)
}

/// Applies each fault window to its simulator on a thread of its own: the fault from
/// its start into the run, then working again.
fn schedule_faults(
    sims: &Arc<Vec<WebhookSim>>,
    faults: &[crate::traffic::FaultWindow],
    started: Instant,
) -> Vec<std::thread::JoinHandle<()>> {
    use crate::sim::Fault;
    use crate::traffic::FaultKind;
    faults
        .iter()
        .filter(|f| f.channel < sims.len())
        .map(|f| {
            let (sims, f) = (sims.clone(), *f);
            std::thread::spawn(move || {
                let wait_until = |at: Instant| {
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                };
                wait_until(started + f.start);
                sims[f.channel].set_fault(match f.kind {
                    FaultKind::Outage => Fault::Status(503),
                    FaultKind::Throttle => Fault::Throttle { retry_after_s: 1 },
                    FaultKind::Slow(d) => Fault::Slow(d),
                });
                wait_until(started + f.start + f.length);
                sims[f.channel].set_fault(Fault::None);
            })
        })
        .collect()
}

/// The human table of a report.
pub fn table(report: &Value) -> String {
    let row = |name: &str, v: &Value| {
        format!(
            "{name:<14} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
            v["count"],
            v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p90_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0),
            v["p999_ms"].as_f64().unwrap_or(0.0),
            v["max_ms"].as_f64().unwrap_or(0.0)
        )
    };
    let mut out = format!(
        "{:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    if report["ingest"].is_object() {
        out += &row("ingest", &report["ingest"]);
    }
    out += &row("propagation", &report["propagation"]);
    if let Some(channels) = report["propagation_per_channel"].as_object() {
        for (name, v) in channels {
            out += &row(&format!("  to {name}"), v);
        }
    }
    // Walmart's two write paths (the `mixed` scenario).
    let split = &report["walmart_split"];
    if split.is_object() {
        out += &row("   urgent PUT", &split["urgent_put"]);
        out += &row("   rest (feed)", &split["rest_feed"]);
    }
    if let (Some(settled), Some(last)) = (
        report["rss_settled_mib"].as_f64(),
        report["rss_last_mib"].as_f64(),
    ) {
        out += &format!(
            "lockstep memory: {settled:.1} MiB settled, {last:.1} MiB at the end ({})\n",
            if report["memory_flat"] == true {
                "flat"
            } else {
                "GROWING"
            }
        );
    }
    let usage = &report["usage"];
    if let Some(busy) = usage["machine_busy_percent"].as_f64() {
        let cores = |v: &Value| v.as_f64().map_or("?".to_string(), |c| format!("{c:.2}"));
        out += &format!(
            "machine {busy:.0}% busy over {} cores: lockstep {} cores, the generator {}; \
             connections refused {}\n",
            usage["cores"],
            cores(&usage["lockstep_cores"]),
            cores(&usage["generator_cores"]),
            usage["connections_refused"]
                .as_f64()
                .map_or("?".to_string(), |n| format!("{n:.0}")),
        );
    }
    out += &format!(
        "orders {} at {:.1}/s, lost {}, unconverged {}, SKUs miscounted {}: {}\n",
        report["orders"],
        report["orders_per_second_achieved"].as_f64().unwrap_or(0.0),
        report["lost"],
        report["unconverged"],
        report["skus_miscounted"],
        if report["passed"] == true {
            "PASS"
        } else {
            "FAIL"
        }
    );
    out
}
