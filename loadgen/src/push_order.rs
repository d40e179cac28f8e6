//! `mixed --compare-push-order`: the same orders against two lockstep engines side by
//! side in one run, each with its own fleet of every channel kind, one pushing in
//! `push_order = "first_come"` and the other in `"risk"`, so what a channel's budget
//! lets through first can be judged by what it costs.
//!
//! Customers buy from what a channel shows: an order is placed on its channel only while
//! that channel shows the SKU in stock, so a channel still showing units that are gone
//! sells them (an oversell). The same arrival times, SKUs (Zipf-skewed: `--skew`) and
//! channels are drawn once for both sides; each side then places an order or not by what
//! its own channel shows. Every 100 ms each channel's levels are read against the SKU's
//! true availability (its start less what its side sold, at least 0), and the units shown
//! beyond it are integrated over time: "overshow × seconds" per channel, until both sides
//! converge after the last order. The verdict: both sides converge and count every order
//! once; the comparison itself is the report.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::fleet::CHANNELS;
use crate::mixed::{open_loop, set_habits, start_seeded, Seeded};
use crate::run::Plan;

/// How often the channels' levels are read for the overshow integral.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One engine, its fleet, and what its run cost.
struct Side {
    name: &'static str,
    seeded: Seeded,
    /// Units sold per SKU (oversells included).
    sold: Vec<i64>,
    placed: usize,
    /// Orders not placed: the channel showed the SKU out of stock.
    not_shown: usize,
    /// Per channel: units shown beyond true availability, integrated (unit·seconds).
    overshow: Vec<f64>,
    /// Per channel: orders it took for units that were gone.
    oversells: Vec<u64>,
}

impl Side {
    fn start(plan: &Plan, name: &'static str, prefix: &str) -> anyhow::Result<Side> {
        let seeded = start_seeded(plan, prefix, &format!("push_order = \"{name}\""))?;
        set_habits(&seeded.fleet, plan);
        Ok(Side {
            name,
            sold: vec![0; plan.skus],
            placed: 0,
            not_shown: 0,
            overshow: vec![0.0; CHANNELS.len()],
            oversells: vec![0; CHANNELS.len()],
            seeded,
        })
    }

    /// What SKU `i` truly has left on this side.
    fn left(&self, i: usize) -> i64 {
        (self.seeded.starts[i] - self.sold[i]).max(0)
    }

    /// A customer on channel `c` wants one of SKU `i`: bought if the channel shows it.
    fn order(&mut self, c: usize, i: usize) {
        let fleet = &self.seeded.fleet;
        let sku = fleet.skus[i].as_str();
        if fleet.levels(c).get(sku).copied().unwrap_or(0) < 1 {
            self.not_shown += 1;
            return;
        }
        if self.left(i) == 0 {
            self.oversells[c] += 1;
        }
        drop(fleet.place(c, &[(sku, 1)]));
        self.sold[i] += 1;
        self.placed += 1;
    }

    /// Adds `dt` of each channel's current overshow to its integral; whether every
    /// channel shows exactly what is left.
    fn sample(&mut self, dt: f64) -> bool {
        let mut exact = true;
        for c in 0..CHANNELS.len() {
            let levels = self.seeded.fleet.levels(c);
            let mut over = 0i64;
            for i in 0..self.sold.len() {
                let shown = levels.get(&self.seeded.fleet.skus[i]).copied();
                let left = self.left(i);
                over += (shown.unwrap_or(0) - left).max(0);
                exact &= shown == Some(left);
            }
            self.overshow[c] += over as f64 * dt;
        }
        exact
    }

    /// SKUs whose count in lockstep differs from what this side sold.
    fn miscounted(&self, client: &reqwest::blocking::Client) -> usize {
        let base = &self.seeded.engine.base;
        (0..self.sold.len())
            .filter(|i| {
                let sku = &self.seeded.fleet.skus[*i];
                let got = client
                    .get(format!("{base}/v1/skus/{sku}"))
                    .send()
                    .ok()
                    .and_then(|r| r.json::<Value>().ok())
                    .and_then(|b| b["available"].as_i64());
                got != Some(self.seeded.starts[*i] - self.sold[*i])
            })
            .count()
    }

    /// lockstep's own count of oversells (`lockstep_oversells_total`).
    fn counted_oversells(&self, client: &reqwest::blocking::Client) -> f64 {
        let metrics = client
            .get(format!("{}/metrics", self.seeded.engine.base))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        metrics
            .lines()
            .filter(|l| l.starts_with("lockstep_oversells_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Runs the comparison; returns the report and whether both sides converged with every
/// order counted once.
pub fn compare(plan: &Plan, settle: Duration) -> anyhow::Result<(Value, bool)> {
    let mut sides = [
        Side::start(plan, "first_come", "FC-")?,
        Side::start(plan, "risk", "RK-")?,
    ];

    let mut rng = rand::rng();
    let (due, zipf) = open_loop(plan, &mut rng);
    let started = Instant::now();
    let mut sampled = started;
    let sample = |sides: &mut [Side; 2], sampled: &mut Instant| {
        let dt = sampled.elapsed().as_secs_f64();
        *sampled = Instant::now();
        sides
            .iter_mut()
            .map(|s| s.sample(dt))
            .fold(true, |a, b| a & b)
    };
    for (n, offset) in due.iter().enumerate() {
        let at = started + *offset;
        while Instant::now() < at {
            if sampled.elapsed() >= SAMPLE_EVERY {
                sample(&mut sides, &mut sampled);
            }
            let next = (sampled + SAMPLE_EVERY).min(at);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let sku = zipf.order(1, &mut rng)[0];
        let channel = crate::traffic::channel_of(n, CHANNELS.len(), &plan.traffic.mix, &mut rng);
        // Each side goes first on every other order, so neither is always a moment ahead.
        let (first, second) = sides.split_at_mut(1);
        let (a, b) = if n % 2 == 0 {
            (&mut first[0], &mut second[0])
        } else {
            (&mut second[0], &mut first[0])
        };
        a.order(channel, sku);
        b.order(channel, sku);
    }
    let last_order = Instant::now();
    let offered_s = started.elapsed().as_secs_f64();

    // The tail: overshow goes on counting until both sides show exactly what is left.
    let mut converged = [None, None];
    while last_order.elapsed() < settle && converged.iter().any(Option::is_none) {
        std::thread::sleep(SAMPLE_EVERY);
        let dt = sampled.elapsed().as_secs_f64();
        sampled = Instant::now();
        for (side, done) in sides.iter_mut().zip(&mut converged) {
            if side.sample(dt) && done.is_none() {
                *done = Some(last_order.elapsed());
            }
        }
    }

    let client = reqwest::blocking::Client::new();
    let mut per_channel = Map::new();
    for (c, name) in CHANNELS.iter().enumerate() {
        let by = |f: &dyn Fn(&Side) -> Value| -> Value {
            sides
                .iter()
                .map(|s| (s.name.to_string(), f(s)))
                .collect::<Map<_, _>>()
                .into()
        };
        per_channel.insert(
            name.to_string(),
            json!({
                "overshow_unit_seconds": by(&|s| json!((s.overshow[c] * 10.0).round() / 10.0)),
                "oversells": by(&|s| json!(s.oversells[c])),
            }),
        );
    }
    let mut passed = true;
    let mut summary = Map::new();
    for (side, done) in sides.iter().zip(converged) {
        let miscounted = side.miscounted(&client);
        passed &= done.is_some() && miscounted == 0;
        summary.insert(
            side.name.to_string(),
            json!({
                "orders_placed": side.placed,
                "orders_not_shown": side.not_shown,
                "overshow_unit_seconds": (side.overshow.iter().sum::<f64>() * 10.0).round() / 10.0,
                "oversells": side.oversells.iter().sum::<u64>(),
                "oversells_lockstep_counted": side.counted_oversells(&client),
                "skus_miscounted": miscounted,
                "converged_ms_after_last_order": done.map(|d| d.as_secs_f64() * 1000.0),
            }),
        );
    }
    let report = json!({
        "scenario": "mixed",
        "compare": "push_order",
        "channels": CHANNELS,
        "orders_per_minute_offered": plan.orders_per_minute,
        "orders_offered": due.len(),
        "seconds": offered_s,
        "skus": plan.skus,
        "skew": plan.traffic.skew,
        "sides": summary,
        "per_channel": per_channel,
        "passed": passed,
    });
    Ok((report, passed))
}
