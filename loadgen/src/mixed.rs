//! The `mixed` scenario: every channel kind at once (`fleet`), each with its own wire
//! format, signatures, limits and delivery habits, against a lockstep started on a temp
//! data directory. Orders arrive open-loop, each placed on one channel the channel's own
//! way (its stock lowered, its webhook sent, or, for eBay, its order listing updated);
//! every other channel must come to show the result.
//!
//! Propagation of an order to a channel is the time from placing it until the channel
//! was written a value at or below what the SKU had left after it (the k-th order of a
//! SKU leaves its start less k): later orders' writes count too, as they include it.
//! Walmart's figures are split: orders that left the SKU at a low level (its urgent
//! path, `PUT /v3/inventory`) and the rest (its bulk feed, time-compressed here). The
//! verdict: every order counted once by lockstep, every channel showing exactly
//! lockstep's numbers at the end, no oversell, and p99 within `--slo-p99` when given.
//! Channels' own limits bound what this can show: Amazon takes 5 writes a second (and 5
//! feeds per 5 minutes), Walmart one SKU per call, eBay's orders come by a poll.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::bigcommerce_sim::BigCommerceSim;
use crate::fleet::{
    Fleet, CHANNELS, WALMART_FEEDS_PER_HOUR, WALMART_FEED_PROCESSING, WALMART_URGENT_AT_OR_BELOW,
};
use crate::run::{histogram, spawn_with, Engine, Plan};
use crate::sim::Habits;
use crate::walmart_sim::WalmartSim;

/// What each SKU starts with (Etsy takes at most 999 per offering).
pub(crate) const START: i64 = 900;
/// What the first twentieth of the SKUs (the hottest, when orders are skewed) starts
/// with instead: they are low from the start and some sell out during a run, so
/// stock-outs and Walmart's urgent path are exercised too.
const LOW_START: i64 = 8;

/// The stock SKU `i` (of `skus`, hottest first) starts with.
fn start_of(i: usize, skus: usize) -> i64 {
    if i < skus.div_ceil(20) {
        LOW_START
    } else {
        START
    }
}

/// One order as it went.
struct Placed {
    sku: usize,
    channel: usize,
    at: Instant,
    /// The SKU's stock after it: its start less k for the k-th order of the SKU.
    leaves: i64,
}

/// A fleet and the lockstep connected to it, every channel showing the starting stock.
pub(crate) struct Seeded {
    pub(crate) fleet: Fleet,
    pub(crate) engine: Engine,
    /// Each SKU's starting stock (`start_of`).
    pub(crate) starts: Vec<i64>,
}

/// Starts a fleet of SKUs named `{prefix}{i}` and a lockstep for it (`every` is a line
/// added to every channel's block, after the scenario's own and before `--channel-extra`),
/// seeds the starting stock through the native API and waits until every channel shows
/// it.
pub(crate) fn start_seeded(plan: &Plan, prefix: &str, every: &str) -> anyhow::Result<Seeded> {
    let fleet = Fleet::start(prefix, plan.skus);
    // BigCommerce's Pro plan (450 requests per 30 s): each of its thin order hooks costs
    // two calls from the budget its writes use too, more than Standard's 5/s carries at
    // these rates.
    fleet
        .get::<BigCommerceSim>()
        .set_window(450, Duration::from_secs(30));
    let extra = |name: &str| {
        let own = match name {
            "bc" => "rate_limit = { requests_per_second = 15.0, burst = 30 }",
            _ => "",
        };
        let given = plan
            .channel_extra
            .iter()
            .filter(|(channel, _)| channel == name)
            .map(|(_, lines)| lines.as_str());
        [own, every]
            .into_iter()
            .chain(given)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let engine = spawn_with(
        plan,
        &fleet.channels_config(extra),
        Some(&fleet.catalog_csv()),
    )?;
    fleet.connect(&engine.base);

    // The starting stock, through the native API, and every channel showing it.
    let client = reqwest::blocking::Client::new();
    let starts: Vec<i64> = (0..plan.skus).map(|i| start_of(i, plan.skus)).collect();
    for (n, chunk) in fleet.skus.chunks(1_000).enumerate() {
        let events: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(j, s)| json!({"idempotency_key": format!("seed-{s}"), "sku": s, "kind": "counted", "qty": starts[n * 1_000 + j], "source": "seed"}))
            .collect();
        let response = client
            .post(format!("{}/v1/events", engine.base))
            .json(&json!({ "events": events }))
            .send()?;
        if !response.status().is_success() {
            bail!("seeding failed: {}", response.status());
        }
    }
    let seeded = crate::sim::wait_until(Duration::from_secs(180), || {
        (0..CHANNELS.len()).all(|c| {
            let levels = fleet.levels(c);
            (0..plan.skus).all(|i| levels.get(&fleet.skus[i]) == Some(&starts[i]))
        })
    });
    if seeded.is_none() {
        bail!("the channels did not all show the starting stock within 180 s");
    }
    Ok(Seeded {
        fleet,
        engine,
        starts,
    })
}

/// The delivery habits of a run's orders: duplicates as `--duplicate-rate` asks, webhooks
/// up to 100 ms out of order, echoes of lockstep's own writes; eBay's order listing 500 ms
/// behind.
pub(crate) fn set_habits(fleet: &Fleet, plan: &Plan) {
    fleet.set_habits(&Habits {
        duplicate: plan.traffic.duplicate_rate.clamp(0.0, 1.0),
        reorder: Duration::from_millis(100),
        echo: true,
        ..Habits::default()
    });
    fleet.set_listing_lag(Duration::from_millis(500));
}

/// When the run's orders are due (`--orders-per-minute`, `--duration`, `--arrivals`) and
/// how their SKUs are drawn (`--skew`).
pub(crate) fn open_loop(
    plan: &Plan,
    rng: &mut impl rand::Rng,
) -> (Vec<Duration>, crate::traffic::Zipf) {
    let due = crate::traffic::schedule(
        plan.traffic.arrivals,
        plan.orders_per_minute as f64 / 60.0,
        plan.duration,
        rng,
    );
    (due, crate::traffic::Zipf::new(plan.skus, plan.traffic.skew))
}

/// Runs the scenario; returns the report and whether it passed.
pub fn mixed(plan: &Plan) -> anyhow::Result<(Value, bool)> {
    mixed_with(plan, false, Duration::from_secs(120))
}

/// `mixed`, waiting up to `settle` after the last order for every channel to converge.
/// With `broken`, Walmart answers every write with 503 once the traffic starts, so the
/// verdict must fail.
pub fn mixed_with(plan: &Plan, broken: bool, settle: Duration) -> anyhow::Result<(Value, bool)> {
    let Seeded {
        fleet,
        engine,
        starts,
    } = start_seeded(plan, "MX-", "")?;
    let client = reqwest::blocking::Client::new();
    set_habits(&fleet, plan);
    if broken {
        fleet
            .get::<WalmartSim>()
            .market
            .set_fault(crate::sim::Fault::Status(503));
    }

    // The open loop: orders placed when due, whatever lockstep is doing.
    let mut rng = rand::rng();
    let (due, zipf) = open_loop(plan, &mut rng);
    let mut per_sku = vec![0i64; plan.skus];
    let mut placed = Vec::with_capacity(due.len());
    let started = Instant::now();
    for (n, offset) in due.iter().enumerate() {
        if let Some(wait) = (started + *offset).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sku = zipf.order(1, &mut rng)[0];
        if per_sku[sku] >= starts[sku] {
            continue; // sold out everywhere: a storefront would not sell it
        }
        let channel = crate::traffic::channel_of(n, CHANNELS.len(), &plan.traffic.mix, &mut rng);
        let at = Instant::now();
        drop(fleet.place(channel, &[(fleet.skus[sku].as_str(), 1)]));
        per_sku[sku] += 1;
        placed.push(Placed {
            sku,
            channel,
            at,
            leaves: starts[sku] - per_sku[sku],
        });
    }
    let offered_s = started.elapsed().as_secs_f64();

    // Convergence: lockstep counted every order once, and every channel shows it.
    let engine_count = |i: usize| -> Option<i64> {
        let body: Value = client
            .get(format!("{}/v1/skus/{}", engine.base, fleet.skus[i]))
            .send()
            .ok()?
            .json()
            .ok()?;
        body["available"].as_i64()
    };
    let exact = |c: usize| {
        let levels = fleet.levels(c);
        (0..plan.skus).all(|i| levels.get(&fleet.skus[i]) == Some(&(starts[i] - per_sku[i])))
    };
    let converged_after = crate::sim::wait_until(settle, || (0..CHANNELS.len()).all(exact));
    // An order lockstep never counted leaves it showing more; one counted twice, less.
    let (mut miscounted, mut lost, mut doubled) = (0usize, 0i64, 0i64);
    for (i, sold) in per_sku.iter().enumerate() {
        let want = starts[i] - sold;
        let got = engine_count(i).unwrap_or(starts[i]);
        if got != want {
            miscounted += 1;
            lost += (got - want).max(0);
            doubled += (want - got).max(0);
        }
    }
    let unconverged_channels: Vec<&str> = (0..CHANNELS.len())
        .filter(|c| !exact(*c))
        .map(|c| CHANNELS[c])
        .collect();
    // What the channels that did not converge show, against what they should.
    let differences: Vec<Value> = (0..CHANNELS.len())
        .flat_map(|c| {
            let levels = fleet.levels(c);
            (0..plan.skus)
                .filter_map(|i| {
                    let want = starts[i] - per_sku[i];
                    let shows = levels.get(&fleet.skus[i]).copied();
                    (shows != Some(want)).then(|| json!({"channel": CHANNELS[c], "sku": fleet.skus[i], "want": want, "shows": shows}))
                })
                .collect::<Vec<_>>()
        })
        .take(20)
        .collect();

    // Propagation per order and channel, from the channels' arrival logs.
    let mut per_channel: Vec<Histogram<u64>> = (0..CHANNELS.len()).map(|_| histogram()).collect();
    let walmart = CHANNELS.iter().position(|c| *c == "walmart");
    let (mut walmart_urgent, mut walmart_rest) = (histogram(), histogram());
    let mut overall = histogram();
    let mut unpropagated = 0usize;
    let mut logs: HashMap<(usize, usize), Vec<(Instant, i64)>> = HashMap::new();
    for order in &placed {
        let mut slowest = Duration::ZERO;
        let mut reached = true;
        for c in (0..CHANNELS.len()).filter(|c| *c != order.channel) {
            let log = logs
                .entry((c, order.sku))
                .or_insert_with(|| fleet.arrivals(c, &fleet.skus[order.sku]));
            match log
                .iter()
                .find(|(at, v)| *at >= order.at && *v <= order.leaves)
            {
                Some((at, _)) => {
                    let took = at.duration_since(order.at);
                    let micros = took.as_micros().max(1) as u64;
                    per_channel[c].saturating_record(micros);
                    if Some(c) == walmart {
                        if order.leaves <= WALMART_URGENT_AT_OR_BELOW {
                            walmart_urgent.saturating_record(micros);
                        } else {
                            walmart_rest.saturating_record(micros);
                        }
                    }
                    slowest = slowest.max(took);
                }
                None => reached = false,
            }
        }
        if reached {
            overall.saturating_record(slowest.as_micros().max(1) as u64);
        } else {
            unpropagated += 1;
        }
    }
    let metrics = client
        .get(format!("{}/metrics", engine.base))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    let oversells: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("lockstep_oversells_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();

    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let summary = |h: &Histogram<u64>| json!({"count": h.len(), "p50_ms": ms(h, 0.5), "p90_ms": ms(h, 0.9), "p99_ms": ms(h, 0.99), "p999_ms": ms(h, 0.999), "max_ms": h.max() as f64 / 1000.0});
    let p99 = Duration::from_micros(overall.value_at_quantile(0.99));
    let passed = converged_after.is_some()
        && miscounted == 0
        && oversells == 0.0
        && plan.slo_p99.is_none_or(|slo| p99 <= slo);
    let report = json!({
        "scenario": "mixed",
        "channels": CHANNELS,
        "orders": placed.len(),
        "orders_per_minute_offered": plan.orders_per_minute,
        "orders_per_second_achieved": placed.len() as f64 / offered_s,
        "skus": plan.skus,
        "orders_by_channel": (0..CHANNELS.len()).map(|c| (CHANNELS[c].to_string(), json!(placed.iter().filter(|o| o.channel == c).count()))).collect::<serde_json::Map<_, _>>(),
        "lost": lost,
        "counted_twice": doubled,
        "skus_miscounted": miscounted,
        "unconverged": unpropagated,
        "unconverged_channels": unconverged_channels,
        "differences": differences,
        "converged_ms_after_last_order": converged_after.map(|d| d.as_secs_f64() * 1000.0),
        "oversells": oversells,
        "propagation": summary(&overall),
        "propagation_per_channel": (0..CHANNELS.len()).map(|c| (CHANNELS[c].to_string(), summary(&per_channel[c]))).collect::<serde_json::Map<_, _>>(),
        "walmart_split": {"urgent_put": summary(&walmart_urgent), "rest_feed": summary(&walmart_rest),
                          "urgent_at_or_below": WALMART_URGENT_AT_OR_BELOW,
                          "feed_processing_ms": WALMART_FEED_PROCESSING.as_millis() as u64,
                          "feeds_per_hour": WALMART_FEEDS_PER_HOUR},
        "slo_p99_ms": plan.slo_p99.map(|d| d.as_secs_f64() * 1000.0),
        "passed": passed,
    });
    drop(engine);
    Ok((report, passed))
}
