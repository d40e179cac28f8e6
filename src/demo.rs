//! `lockstep demo`: the engine, a simulated Shopify store and a simulated WooCommerce
//! site, and shoppers buying on both, all in one process on a temporary data directory.
//!
//! Orders arrive at a steady rate with a burst every 15 s, on hot and cold SKUs alike
//! (skewed towards a few), and the stores deliver their webhooks with their real habits:
//! some twice, out of order, echoes after every write. Shoppers only buy what their store
//! shows in stock, as a storefront allows; a warehouse receipt tops a SKU up when a store
//! runs low. Each second one status line: orders/s, propagation p50/p99 per channel
//! (event received → channel acknowledged, from the engine's HDR histograms), outbox
//! depth, oversells, drift. At the end (or on Ctrl-C) a summary, after checking that both
//! stores show exactly what the engine computed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use loadgen::shopify_sim::ShopifySim;
use loadgen::sim::Habits;
use loadgen::woo_sim::WooSim;
use rand::Rng;
use serde_json::{json, Value};

use crate::config::Config;

const SKUS: usize = 200;
const START_STOCK: i64 = 400;
/// A store showing less than this gets a warehouse receipt.
const LOW_WATER: i64 = 40;
const RECEIPT: i64 = 300;
const SHOP_SECRET: &str = "demo-shopify-app-secret";
const SHOP_TOKEN: &str = "shpat_demo";
const WOO_SECRET: &str = "demo-woo-webhook-secret";
const WOO_KEY: &str = "ck_demo";
const WOO_KEY_SECRET: &str = "cs_demo";

/// What the demo does.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub duration: Duration,
    /// Steady orders per second (bursts come on top).
    pub orders_per_second: f64,
    /// Orders in each burst (one every 15 s, spread over a second).
    pub burst: u32,
}

fn sku(i: usize) -> String {
    format!("DEMO-{i:03}")
}

/// Runs the demo; returns whether both stores ended exactly where the engine says.
pub fn demo(options: DemoOptions) -> anyhow::Result<bool> {
    let dir = std::env::temp_dir().join(format!(
        "lockstep-demo-{}-{}",
        std::process::id(),
        crate::clock::now_micros()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_in(&dir, &options);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &std::path::Path, options: &DemoOptions) -> anyhow::Result<bool> {
    let names: Vec<String> = (0..SKUS).map(sku).collect();
    let items: Vec<(&str, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 7_000_000 + i as u64))
        .collect();
    let products: Vec<(&str, u64, Option<u64>)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 3_000 + i as u64, None))
        .collect();
    let shop = ShopifySim::start(SHOP_SECRET, SHOP_TOKEN, &items);
    let woo = WooSim::start(WOO_SECRET, WOO_KEY, WOO_KEY_SECRET, &products);
    let config = write_config(dir, &shop.url(), &woo.url(), &items, &products)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = stop.clone();
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupted.store(true, Ordering::SeqCst);
        }
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(crate::cli::run(
        config,
        async move {
            let _ = shutdown_rx.await;
        },
        move |addr| {
            let _ = ready_tx.send(addr);
        },
    ));
    let addr = ready_rx
        .recv_timeout(Duration::from_secs(30))
        .context("the engine did not start")?;
    let base = format!("http://{addr}");
    shop.set_webhook_url(&format!("{base}/webhooks/shop"));
    woo.set_webhook_url(&format!("{base}/webhooks/woo"));
    let client = reqwest::Client::new();
    let api = Api {
        runtime: &runtime,
        client: &client,
        base: &base,
    };

    println!(
        "lockstep demo: {SKUS} SKUs on a simulated Shopify store and WooCommerce site, {} orders/s with a burst of {} every 15 s, for {} s (Ctrl-C ends it early)",
        options.orders_per_second,
        options.burst,
        options.duration.as_secs()
    );
    let counts: Vec<Value> = names
        .iter()
        .map(|s| json!({"sku": s, "kind": "counted", "qty": START_STOCK, "source": "warehouse", "idempotency_key": format!("start-{s}")}))
        .collect();
    api.post("/v1/events", &json!({ "events": counts }))?;
    let stocked =
        |levels: &HashMap<String, i64>| names.iter().all(|s| levels.get(s) == Some(&START_STOCK));
    shop.wait_for(Duration::from_secs(30), stocked);
    woo.wait_for(Duration::from_secs(30), stocked);
    let habits = Habits {
        duplicate: 0.05,
        reorder: Duration::from_millis(100),
        echo: true,
        ..Habits::default()
    };
    shop.set_habits(habits.clone());
    woo.set_habits(habits);

    let traffic = traffic(&shop, &woo, &names, &api, options, &stop);
    println!("stopping the shoppers; waiting for the stores' last webhooks and the last pushes");
    shop.sender.wait_idle(Duration::from_secs(30));
    woo.sender.wait_idle(Duration::from_secs(30));
    let converged = loadgen::sim::wait_until(Duration::from_secs(30), || {
        differences(&api, &names, &shop, &woo).is_ok_and(|d| d.is_empty())
    });
    let left = differences(&api, &names, &shop, &woo)?;
    let report = api.get("/v1/propagation")?;
    let metrics = api.metrics()?;
    println!("\nsummary after {:.0} s", traffic.elapsed.as_secs_f64());
    println!(
        "  orders placed: {} on Shopify, {} on WooCommerce ({} in bursts); warehouse receipts: {}",
        traffic.shop_orders, traffic.woo_orders, traffic.burst_orders, traffic.receipts
    );
    for channel in ["shop", "woo"] {
        let c = &report["channels"][channel];
        println!(
            "  {channel:<4} pushes acknowledged {:>6}  propagation p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>8.2} ms",
            c["count"], num(&c["p50_ms"]), num(&c["p90_ms"]), num(&c["p99_ms"]), num(&c["p999_ms"]), num(&c["max_ms"])
        );
    }
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    for call in shop.calls() {
        *outcomes.entry(call.outcome).or_default() += 1;
    }
    println!(
        "  Shopify inventorySetQuantities calls by outcome: {outcomes:?}; WooCommerce batch calls: {}",
        woo.calls().len()
    );
    println!(
        "  oversells: {}  reconciliation drift: {}",
        metric(&metrics, "lockstep_oversells_total"),
        metric(&metrics, "lockstep_reconcile_drift_total")
    );
    match (converged, left.is_empty()) {
        (Some(after), true) => println!(
            "  converged: all {SKUS} SKUs show the engine's quantity on both stores ({} ms after the last order)",
            after.as_millis()
        ),
        _ => println!("  NOT converged: {} SKU(s) differ: {:?}", left.len(), &left[..left.len().min(5)]),
    }
    let _ = shutdown_tx.send(());
    let _ = runtime.block_on(server);
    Ok(left.is_empty())
}

/// The config and catalog of the demo's engine, in `dir`.
fn write_config(
    dir: &std::path::Path,
    shop_url: &str,
    woo_url: &str,
    items: &[(&str, u64)],
    products: &[(&str, u64, Option<u64>)],
) -> anyhow::Result<Config> {
    let mut catalog = String::from("sku,channel,item_id,location_id\n");
    for (sku, id) in items {
        catalog.push_str(&format!("{sku},shop,{id},\n"));
    }
    for (sku, id, _) in products {
        catalog.push_str(&format!("{sku},woo,{id},\n"));
    }
    std::fs::write(dir.join("catalog.csv"), catalog)?;
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = {data:?}

[[channels]]
name = "shop"
kind = "shopify"
base_url = "{shop_url}"
api_version = "2026-04"
webhook_secret = "{SHOP_SECRET}"
access_token = "{SHOP_TOKEN}"
location_id = "gid://shopify/Location/1"
reconcile_interval_s = 20

[[channels]]
name = "woo"
kind = "woocommerce"
base_url = "{woo_url}"
webhook_secret = "{WOO_SECRET}"
consumer_key = "{WOO_KEY}"
consumer_secret = "{WOO_KEY_SECRET}"
poll_interval_s = 10
reconcile_interval_s = 20
# The simulated site has no limit (WooCommerce core has none); a host's would be here.
rate_limit = {{ requests_per_second = 20.0, burst = 40 }}

[catalog]
path = "catalog.csv"
"#,
        data = dir.join("data").display().to_string()
    );
    let path = dir.join("lockstep.toml");
    std::fs::write(&path, text)?;
    Ok(Config::load(&path)?)
}

/// The engine's HTTP API, from the demo's (synchronous) main thread.
struct Api<'a> {
    runtime: &'a tokio::runtime::Runtime,
    client: &'a reqwest::Client,
    base: &'a str,
}

impl Api<'_> {
    fn get(&self, path: &str) -> anyhow::Result<Value> {
        let request = self.client.get(format!("{}{path}", self.base));
        self.runtime
            .block_on(async move { Ok(request.send().await?.json::<Value>().await?) })
    }

    fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let request = self.client.post(format!("{}{path}", self.base)).json(body);
        self.runtime.block_on(async move {
            let response = request.send().await?;
            let status = response.status();
            let body = response.json::<Value>().await?;
            anyhow::ensure!(status.is_success(), "{status}: {body}");
            Ok(body)
        })
    }

    fn metrics(&self) -> anyhow::Result<String> {
        let request = self.client.get(format!("{}/metrics", self.base));
        self.runtime
            .block_on(async move { Ok(request.send().await?.text().await?) })
    }
}

fn num(value: &Value) -> f64 {
    value.as_f64().unwrap_or(0.0)
}

/// The sum of a metric's series in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A SKU whose stores do not show the engine's target: (SKU, engine, Shopify, Woo).
type Difference = (String, i64, Option<i64>, Option<i64>);

/// SKUs where a store does not show the engine's target.
fn differences(
    api: &Api,
    names: &[String],
    shop: &ShopifySim,
    woo: &WooSim,
) -> anyhow::Result<Vec<Difference>> {
    let (shop_levels, woo_levels) = (shop.levels(), woo.levels());
    let mut out = Vec::new();
    for name in names {
        let head = api.get(&format!("/v1/skus/{name}"))?;
        let target = head["available"].as_i64().unwrap_or(0).max(0);
        let (s, w) = (
            shop_levels.get(name).copied(),
            woo_levels.get(name).copied(),
        );
        if s != Some(target) || w != Some(target) {
            out.push((name.clone(), target, s, w));
        }
    }
    Ok(out)
}

struct Traffic {
    elapsed: Duration,
    shop_orders: u64,
    woo_orders: u64,
    burst_orders: u64,
    receipts: u64,
}

/// The shoppers: open loop (orders are placed on schedule, never waiting for lockstep),
/// with a status line each second.
fn traffic(
    shop: &ShopifySim,
    woo: &WooSim,
    names: &[String],
    api: &Api,
    options: &DemoOptions,
    stop: &AtomicBool,
) -> Traffic {
    let mut rng = rand::rng();
    let start = Instant::now();
    let mut t = Traffic {
        elapsed: Duration::ZERO,
        shop_orders: 0,
        woo_orders: 0,
        burst_orders: 0,
        receipts: 0,
    };
    let (mut owed, mut last_tick, mut next_status) =
        (0.0f64, start, start + Duration::from_secs(1));
    let mut orders_at_status = 0u64;
    let tick = Duration::from_millis(10);
    while start.elapsed() < options.duration && !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let secs = now.duration_since(start).as_secs();
        let in_burst = secs % 15 == 14;
        let rate = options.orders_per_second
            + if in_burst {
                f64::from(options.burst)
            } else {
                0.0
            };
        owed += rate * now.duration_since(last_tick).as_secs_f64();
        last_tick = now;
        while owed >= 1.0 {
            owed -= 1.0;
            // Skewed: a few SKUs take most of the orders.
            let lines = if rng.random_bool(0.2) { 2 } else { 1 };
            let mut order: Vec<(&str, i64)> = Vec::new();
            for _ in 0..lines {
                let i = (rng.random::<f64>().powi(2) * SKUS as f64) as usize;
                let name = names[i.min(SKUS - 1)].as_str();
                if !order.iter().any(|(s, _)| *s == name) {
                    order.push((name, rng.random_range(1..=3)));
                }
            }
            let on_shop = rng.random_bool(0.5);
            let shows = |sku: &str| {
                if on_shop {
                    shop.level(sku)
                } else {
                    woo.level(sku)
                }
            };
            // A storefront sells only what it shows in stock.
            if order.iter().any(|(s, q)| shows(s).unwrap_or(0) < *q) {
                continue;
            }
            if on_shop {
                shop.place_order(&order);
                t.shop_orders += 1;
            } else {
                woo.place_order(&order);
                t.woo_orders += 1;
            }
            t.burst_orders += u64::from(in_burst);
        }
        if now >= next_status {
            next_status += Duration::from_secs(1);
            t.receipts += restock(api, names, shop, woo);
            let total = t.shop_orders + t.woo_orders;
            status_line(api, start.elapsed(), total - orders_at_status);
            orders_at_status = total;
        }
        std::thread::sleep(tick);
    }
    t.elapsed = start.elapsed();
    t
}

/// Warehouse receipts for SKUs a store shows low: one event per SKU, through the API.
fn restock(api: &Api, names: &[String], shop: &ShopifySim, woo: &WooSim) -> u64 {
    let (shop_levels, woo_levels) = (shop.levels(), woo.levels());
    let low: Vec<&String> = names
        .iter()
        .filter(|s| {
            shop_levels.get(*s).copied().unwrap_or(0) < LOW_WATER
                || woo_levels.get(*s).copied().unwrap_or(0) < LOW_WATER
        })
        .collect();
    if low.is_empty() {
        return 0;
    }
    let at = crate::clock::now_micros();
    let events: Vec<Value> = low
        .iter()
        .map(|s| json!({"sku": s, "kind": "adjusted", "qty": RECEIPT, "source": "warehouse", "idempotency_key": format!("receipt-{s}-{at}")}))
        .collect();
    match api.post("/v1/events", &json!({ "events": events })) {
        Ok(_) => low.len() as u64,
        Err(e) => {
            eprintln!("restock failed: {e}");
            0
        }
    }
}

fn status_line(api: &Api, elapsed: Duration, orders: u64) {
    let (Ok(report), Ok(metrics)) = (api.get("/v1/propagation"), api.metrics()) else {
        println!("{:>4} s  (the engine did not answer)", elapsed.as_secs());
        return;
    };
    let channel = |name: &str| {
        let c = &report["channels"][name];
        format!(
            "{name} p50 {:>6.2} ms p99 {:>7.2} ms outbox {:>3}",
            num(&c["p50_ms"]),
            num(&c["p99_ms"]),
            c["outbox_skus"]
        )
    };
    println!(
        "{:>4} s  {:>4} orders/s  {}  |  {}  |  oversells {}  drift {}",
        elapsed.as_secs(),
        orders,
        channel("shop"),
        channel("woo"),
        metric(&metrics, "lockstep_oversells_total"),
        metric(&metrics, "lockstep_reconcile_drift_total"),
    );
}
