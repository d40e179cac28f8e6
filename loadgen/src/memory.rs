//! The `memory` scenario: what lockstep holds in memory per SKU, and how long it takes to
//! come back after `kill -9` at that size (issue #18: at most 400 bytes per SKU at
//! 1,000,000 SKUs with three channels, ready again within 5 s).
//!
//! In order: lockstep is started on a temp data directory with `--channels` (3) Standard
//! Webhooks channels (the `webhook` kind: a seller's own shop, ERP or marketplace
//! connector that takes our pushes; it names items by our SKUs, so no catalog is
//! configured and none is held), unthrottled as in `latency`. Its resident memory is read
//! once it is up (the empty engine). Then `--skus` SKUs are loaded through the native API
//! (`POST /v1/events`, 1,000 `counted` events per request, from `SENDERS` threads), and
//! the scenario waits until every channel's simulator lists every SKU and a sample of
//! SKUs shows every channel's acknowledgement (`pushed`) in lockstep: each SKU then
//! carries its view of every channel, as in production. Resident memory is read then, and
//! again once it has settled (`settled`: what the load left behind is freed over tens of
//! seconds, by checkpoints, fjall's flushes and compactions, and jemalloc's decay, which
//! returns pages 10 s after they were last used): the figures per SKU are the settled
//! reading, raw (over the SKUs) and net (less the empty engine). Then lockstep is killed
//! with SIGKILL, started again on the same data directory, and timed until `/healthz`
//! answers 200; its memory is read when it is ready and once settled, and a sample of
//! SKUs is checked to hold their stock and their channels' acknowledgements.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::run::{rss_mib, simulators, sku, spawn, tag, Engine, Plan};

/// Issue #18's bars: resident bytes per SKU, net of the empty engine, at 1,000,000 SKUs
/// with three channels; and the restart after `kill -9` at that size.
pub const NET_BYTES_PER_SKU_MAX: f64 = 400.0;
pub const RESTART_S_MAX: f64 = 5.0;
/// What every SKU is counted at.
const STOCK: i64 = 1_000;
/// Events per request: the native API's most (`REQUEST_EVENTS_MAX`).
const EVENTS_PER_REQUEST: usize = 1_000;
/// Requests in flight at once while loading: enough to keep every shard's batches full
/// on two cores.
const SENDERS: usize = 4;
/// SKUs read back from lockstep to check their views (spread over the whole range).
const SAMPLED_SKUS: usize = 1_000;
/// How long every channel may take to show every SKU (3,000,000 pushes at 1,000,000).
const SETTLE_MAX: Duration = Duration::from_secs(900);
const READY_MAX: Duration = Duration::from_secs(60);

const MIB: f64 = 1024.0 * 1024.0;

/// Resident memory has settled when it moved by less than this over `STEADY`...
const STEADY_MIB: f64 = 2.0;
const STEADY: Duration = Duration::from_secs(10);
/// ... or after this long, whatever it does.
const SETTLE_RSS_MAX: Duration = Duration::from_secs(120);

/// Runs the scenario; returns the report and whether both bars were met.
pub fn memory(plan: &Plan) -> anyhow::Result<(Value, bool)> {
    let sims = simulators(plan, plan.channels);
    let mut engine = spawn(plan, &sims)?;
    let skus = plan.skus;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    wait_ready(&client, &engine)?;
    std::thread::sleep(Duration::from_secs(2));
    let empty = rss(&engine)?;

    let started = Instant::now();
    load(&engine, skus)?;
    let load_s = started.elapsed().as_secs_f64();

    let waiting = Instant::now();
    for (c, sim) in sims.iter().enumerate() {
        let listed = crate::sim::wait_until(SETTLE_MAX.saturating_sub(waiting.elapsed()), || {
            std::thread::sleep(Duration::from_millis(250));
            sim.market.listed() >= skus
        });
        if listed.is_none() {
            bail!(
                "channel ch{c} lists {} of {skus} SKUs after {} s",
                sim.market.listed(),
                waiting.elapsed().as_secs()
            );
        }
    }
    let acknowledged = crate::sim::wait_until(Duration::from_secs(60), || {
        matches!(check_sample(&client, &engine, plan), Ok(0))
    });
    if acknowledged.is_none() {
        let wrong = check_sample(&client, &engine, plan)?;
        bail!("{wrong} sampled SKUs lack their stock or a channel's acknowledgement");
    }
    let settle_s = waiting.elapsed().as_secs_f64();
    let loaded = rss(&engine)?;
    let (settled_loaded, loaded_settle_s) = settled(&engine)?;

    let killed = Instant::now();
    engine.kill_and_restart(&plan.spawn)?;
    wait_ready(&client, &engine)?;
    let restart_s = killed.elapsed().as_secs_f64();
    let restarted = rss(&engine)?;
    let wrong_after = check_sample(&client, &engine, plan)?;
    let (settled_restarted, restarted_settle_s) = settled(&engine)?;

    let per_sku = |mib: f64| mib * MIB / skus as f64;
    let net = per_sku(settled_loaded - empty);
    let passed = wrong_after == 0 && net <= NET_BYTES_PER_SKU_MAX && restart_s < RESTART_S_MAX;
    let report = json!({
        "scenario": "memory",
        "skus": skus,
        "channels": plan.channels,
        "channel_kind": "webhook",
        "load_s": load_s,
        "load_events_per_s": skus as f64 / load_s,
        "settle_s": settle_s,
        "rss_empty_mib": empty,
        "rss_loaded_mib": loaded,
        "rss_loaded_settled_mib": settled_loaded,
        "rss_settled_after_s": loaded_settle_s,
        "bytes_per_sku_raw": per_sku(settled_loaded),
        "bytes_per_sku_net": net,
        "bytes_per_sku_net_at_settle": per_sku(loaded - empty),
        "restart_ready_s": restart_s,
        "rss_restarted_mib": restarted,
        "rss_restarted_settled_mib": settled_restarted,
        "rss_restarted_settled_after_s": restarted_settle_s,
        "bytes_per_sku_raw_after_restart": per_sku(settled_restarted),
        "bytes_per_sku_net_after_restart": per_sku(settled_restarted - empty),
        "sampled_wrong_after_restart": wrong_after,
        "bars": {"bytes_per_sku_net": NET_BYTES_PER_SKU_MAX, "restart_ready_s": RESTART_S_MAX},
        "passed": passed,
    });
    Ok((report, passed))
}

/// Resident memory of the lockstep this run started, in MiB.
fn rss(engine: &Engine) -> anyhow::Result<f64> {
    let pid = engine.child.as_ref().map(std::process::Child::id);
    pid.and_then(rss_mib)
        .context("cannot read lockstep's resident memory (/proc/PID/status)")
}

/// Resident memory once it has settled (moved by less than `STEADY_MIB` over `STEADY`,
/// read every second), and the seconds that took; after `SETTLE_RSS_MAX`, the last reading.
fn settled(engine: &Engine) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let per_steady = STEADY.as_secs() as usize;
    let mut readings = vec![rss(engine)?];
    loop {
        std::thread::sleep(Duration::from_secs(1));
        readings.push(rss(engine)?);
        let last = &readings[readings.len().saturating_sub(per_steady + 1)..];
        let (low, high) = last
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
        let steady = last.len() > per_steady && high - low < STEADY_MIB;
        if steady || started.elapsed() >= SETTLE_RSS_MAX {
            return Ok((
                *readings.last().expect("read"),
                started.elapsed().as_secs_f64(),
            ));
        }
    }
}

/// Waits until `/healthz` answers 200: every shard accepts and durably applies events.
fn wait_ready(client: &reqwest::blocking::Client, engine: &Engine) -> anyhow::Result<()> {
    let url = format!("{}/healthz", engine.base);
    let ready = crate::sim::wait_until(READY_MAX, || {
        client
            .get(&url)
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    if ready.is_none() {
        bail!("{url} did not answer 200 within {} s", READY_MAX.as_secs());
    }
    Ok(())
}

/// Counts SKUs `0..skus` at `STOCK`, `EVENTS_PER_REQUEST` to a request from `SENDERS`
/// threads; a request refused as busy (503) is sent again.
fn load(engine: &Engine, skus: usize) -> anyhow::Result<()> {
    let requests = skus.div_ceil(EVENTS_PER_REQUEST);
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{}/v1/events", engine.base);
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (next, url) = (next.clone(), url.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()?;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= requests {
                        return Ok(());
                    }
                    let range = n * EVENTS_PER_REQUEST..((n + 1) * EVENTS_PER_REQUEST).min(skus);
                    let events: Vec<Value> = range
                        .map(|i| json!({"idempotency_key": format!("{}-count-{i}", tag()), "sku": sku(i), "kind": "counted", "qty": STOCK, "source": "erp"}))
                        .collect();
                    let body = json!({ "events": events });
                    let mut tries = 0;
                    loop {
                        let response = client.post(&url).json(&body).send()?;
                        let status = response.status().as_u16();
                        if status == 200 {
                            break;
                        }
                        tries += 1;
                        if status != 503 || tries > 100 {
                            bail!("loading failed: {status} {}", response.text().unwrap_or_default());
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    Ok(())
}

/// How many of `SAMPLED_SKUS` SKUs spread over the range lack their stock or a channel's
/// acknowledgement of it.
fn check_sample(
    client: &reqwest::blocking::Client,
    engine: &Engine,
    plan: &Plan,
) -> anyhow::Result<usize> {
    let step = (plan.skus / SAMPLED_SKUS).max(1);
    let mut wrong = 0;
    for i in (0..plan.skus).step_by(step) {
        let body: Value = client
            .get(format!("{}/v1/skus/{}", engine.base, sku(i)))
            .send()?
            .json()?;
        let acknowledged = (0..plan.channels)
            .all(|c| body["channels"][format!("ch{c}")]["pushed"].as_i64() == Some(STOCK));
        wrong += usize::from(body["available"].as_i64() != Some(STOCK) || !acknowledged);
    }
    Ok(wrong)
}
