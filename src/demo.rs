//! `lockstep demo`: the engine, four simulated stores (a Shopify store, a WooCommerce
//! site, an Amazon seller account and an eBay seller), and shoppers buying on all of
//! them, in one process on a temporary data directory.
//!
//! Orders arrive at a steady rate with a burst every 15 s, on hot and cold SKUs alike
//! (skewed towards a few), and the stores deliver their webhooks with their real habits:
//! some twice, out of order, echoes after writes; eBay's orders are found by polling.
//! Each store keeps its real limits: Amazon takes 5 writes a second (a feed for a
//! backlog, 5 per 5 minutes), so it lists 50 of the SKUs and is shown 5 units fewer
//! (`buffer`), as a seller would set it up. Shoppers only buy what their store shows in
//! stock; a warehouse receipt tops a SKU up when a store runs low. Each second one
//! status line: orders/s, propagation p50/p99 per channel (event received → channel
//! acknowledged, from the engine's HDR histograms), outbox depth, oversells, drift. At
//! the end (or on Ctrl-C) a summary, after checking that every store shows exactly what
//! the engine computed for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use loadgen::amazon_sim::AmazonSim;
use loadgen::ebay_sim::EbaySim;
use loadgen::fleet::creds::*;
use loadgen::fleet::{amazon_block, ebay_block, shopify_block, woo_block};
use loadgen::shopify_sim::ShopifySim;
use loadgen::sim::Habits;
use loadgen::woo_sim::WooSim;
use rand::Rng;
use serde_json::{json, Value};

use crate::config::Config;

const SKUS: usize = 200;
/// The SKUs Amazon lists (the first, which the shoppers favour).
const AMAZON_SKUS: usize = 50;
/// Units held back from Amazon, the slowest channel to follow.
const AMAZON_BUFFER: i64 = 5;
const START_STOCK: i64 = 400;
/// A store showing less than this gets a warehouse receipt.
const LOW_WATER: i64 = 40;
const RECEIPT: i64 = 300;

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

/// Places a customer order of (SKU, quantity) lines on a store.
type Place<'a> = dyn Fn(&[(&str, i64)]) + 'a;

/// One simulated store, as the demo drives it.
struct Store<'a> {
    /// The channel's name in the config.
    name: &'static str,
    label: &'static str,
    /// Share of the shoppers.
    share: f64,
    /// Units held back from it.
    buffer: i64,
    levels: Box<dyn Fn() -> HashMap<String, i64> + 'a>,
    place: Box<Place<'a>>,
    /// Write calls by outcome, for the summary.
    calls: Box<dyn Fn() -> String + 'a>,
}

/// Runs the demo; returns whether every store ended exactly where the engine says.
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

/// Each SKU's id on the four stores (Amazon's only for the SKUs it lists).
fn ids(i: usize) -> (u64, u64, Option<String>, String) {
    let amazon = (i < AMAZON_SKUS).then(|| format!("AMZ-DEMO-{i:03}"));
    (
        7_000_000 + i as u64,
        3_000 + i as u64,
        amazon,
        format!("2200{i:03}/9100{i:03}"),
    )
}

fn run_in(dir: &std::path::Path, options: &DemoOptions) -> anyhow::Result<bool> {
    let names: Vec<String> = (0..SKUS).map(sku).collect();
    let sims = Sims::start(&names);
    let config = write_config(dir, &sims, &names)?;
    let engine = Running::start(config)?;
    sims.deliver_to(&engine.base);
    let client = reqwest::Client::new();
    let api = Api {
        runtime: &engine.runtime,
        client: &client,
        base: &engine.base,
    };
    let stores = sims.stores();
    println!(
        "lockstep demo: {SKUS} SKUs on a simulated Shopify store, WooCommerce site, Amazon account ({AMAZON_SKUS} of them, buffer {AMAZON_BUFFER}) and eBay seller, {} orders/s with a burst of {} every 15 s, for {} s (Ctrl-C ends it early)",
        options.orders_per_second,
        options.burst,
        options.duration.as_secs()
    );
    // Loopback and no admin token: the console is served without sign-in.
    println!("watch it in the operator console: {}/console", engine.base);
    seed(&api, &names, &stores)?;
    sims.set_habits(Habits {
        duplicate: 0.05,
        reorder: Duration::from_millis(100),
        echo: true,
        ..Habits::default()
    });
    let traffic = traffic(&stores, &names, &api, options, &engine.interrupted);
    println!("stopping the shoppers; waiting for the stores' last webhooks and the last pushes");
    sims.wait_idle(Duration::from_secs(30));
    let settled = settle(&api, &names, &stores);
    let left = differences(&api, &names, &stores)?;
    summary(&api, &stores, &traffic, &settled, &left)?;
    engine.stop();
    Ok(left.is_empty())
}

/// The four simulated stores.
struct Sims {
    shop: ShopifySim,
    woo: WooSim,
    amazon: AmazonSim,
    ebay: EbaySim,
}

impl Sims {
    /// Starts the stores, each listing the demo's SKUs under its own ids (`ids`).
    fn start(names: &[String]) -> Sims {
        let all: Vec<_> = (0..names.len()).map(ids).collect();
        let shop_items: Vec<(&str, u64)> = names
            .iter()
            .zip(&all)
            .map(|(s, i)| (s.as_str(), i.0))
            .collect();
        let woo_items: Vec<(&str, u64, Option<u64>)> = names
            .iter()
            .zip(&all)
            .map(|(s, i)| (s.as_str(), i.1, None))
            .collect();
        let amazon_items: Vec<(&str, &str)> = names
            .iter()
            .zip(&all)
            .filter_map(|(s, i)| Some((s.as_str(), i.2.as_deref()?)))
            .collect();
        let ebay_items: Vec<(&str, &str)> = names
            .iter()
            .zip(&all)
            .map(|(s, i)| (s.as_str(), i.3.as_str()))
            .collect();
        Sims {
            shop: ShopifySim::start(SHOPIFY_SECRET, SHOPIFY_TOKEN, &shop_items),
            woo: WooSim::start(WOO_HOOK_SECRET, WOO_KEY, WOO_SECRET, &woo_items),
            amazon: AmazonSim::start(&amazon_items, AMAZON_LWA, AMAZON_AUTH),
            ebay: EbaySim::start(&ebay_items, EBAY_CLIENT, EBAY_REFRESH),
        }
    }

    /// Points the stores that send webhooks at the engine (eBay's orders are polled).
    fn deliver_to(&self, base: &str) {
        self.shop.set_webhook_url(&format!("{base}/webhooks/shop"));
        self.woo.set_webhook_url(&format!("{base}/webhooks/woo"));
        self.amazon
            .market
            .set_webhook_url(&format!("{base}/webhooks/amazon"));
    }

    fn set_habits(&self, habits: Habits) {
        self.shop.set_habits(habits.clone());
        self.woo.set_habits(habits.clone());
        self.amazon.market.set_habits(habits);
    }

    /// Waits (at most `timeout` each) for the stores' webhooks still on their way.
    fn wait_idle(&self, timeout: Duration) {
        self.shop.sender.wait_idle(timeout);
        self.woo.sender.wait_idle(timeout);
        self.amazon.market.sender.wait_idle(timeout);
    }

    /// The stores as the shoppers and the checks see them.
    fn stores(&self) -> [Store<'_>; 4] {
        let (shop, woo, amazon, ebay) = (&self.shop, &self.woo, &self.amazon, &self.ebay);
        [
            Store {
                name: "shop",
                label: "Shopify",
                share: 0.4,
                buffer: 0,
                levels: Box::new(|| shop.levels()),
                place: Box::new(|lines| {
                    shop.place_order(lines);
                }),
                calls: Box::new(|| {
                    let mut outcomes: std::collections::BTreeMap<String, usize> =
                        Default::default();
                    for call in shop.calls() {
                        *outcomes.entry(call.outcome).or_default() += 1;
                    }
                    format!("inventorySetQuantities calls by outcome {outcomes:?}")
                }),
            },
            Store {
                name: "woo",
                label: "WooCommerce",
                share: 0.25,
                buffer: 0,
                levels: Box::new(|| woo.levels()),
                place: Box::new(|lines| {
                    woo.place_order(lines);
                }),
                calls: Box::new(|| format!("{} batch calls", woo.calls().len())),
            },
            Store {
                name: "amazon",
                label: "Amazon",
                share: 0.2,
                buffer: AMAZON_BUFFER,
                levels: Box::new(|| amazon.market.levels()),
                place: Box::new(|lines| {
                    amazon.place_order(lines);
                }),
                calls: Box::new(|| {
                    let calls = amazon.market.calls();
                    let patches = calls
                        .iter()
                        .filter(|c| c.path.starts_with("/listings/"))
                        .count();
                    format!(
                        "{patches} patchListingsItem calls, {} feeds",
                        amazon.feeds().len()
                    )
                }),
            },
            Store {
                name: "ebay",
                label: "eBay",
                share: 0.15,
                buffer: 0,
                levels: Box::new(|| ebay.market.levels()),
                place: Box::new(|lines| {
                    ebay.place_order(lines);
                }),
                calls: Box::new(|| {
                    format!(
                        "{} bulk_update_price_quantity calls",
                        ebay.market.calls().len()
                    )
                }),
            },
        ]
    }
}

/// The engine running in the demo's process, on its own runtime.
struct Running {
    runtime: tokio::runtime::Runtime,
    base: String,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    /// Set by Ctrl-C: the shoppers stop early.
    interrupted: Arc<AtomicBool>,
}

impl Running {
    fn start(config: Config) -> anyhow::Result<Running> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = interrupted.clone();
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
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
        Ok(Running {
            runtime,
            base: format!("http://{addr}"),
            server,
            shutdown,
            interrupted,
        })
    }

    fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.runtime.block_on(self.server);
    }
}

/// Every SKU counted at `START_STOCK`, and every store showing it, before the shoppers.
fn seed(api: &Api, names: &[String], stores: &[Store]) -> anyhow::Result<()> {
    let counts: Vec<Value> = names
        .iter()
        .map(|s| json!({"sku": s, "kind": "counted", "qty": START_STOCK, "source": "warehouse", "idempotency_key": format!("start-{s}")}))
        .collect();
    api.post("/v1/events", &json!({ "events": counts }))?;
    loadgen::sim::wait_until(Duration::from_secs(30), || {
        differences(api, names, stores).is_ok_and(|d| d.is_empty())
    });
    Ok(())
}

/// How the stores settled after the last order.
struct Settled {
    /// How long after the last order every store was exact (`None`: not in 45 s).
    converged: Option<Duration>,
    /// When each store last differed from the engine, to say which took longest.
    last_off: Vec<String>,
    /// How many SKUs each store showed other than the engine at the first look after the
    /// last order: the backlog its budget has to work off.
    behind: Vec<String>,
}

/// Waits (45 s at most) for every store to show the engine's quantity for every SKU.
fn settle(api: &Api, names: &[String], stores: &[Store]) -> Settled {
    let settling = Instant::now();
    let last_off = std::cell::RefCell::new(vec![Duration::ZERO; stores.len()]);
    let behind = std::cell::RefCell::new(None);
    let converged = loadgen::sim::wait_until(Duration::from_secs(45), || {
        let Ok(left) = differences(api, names, stores) else {
            return false;
        };
        behind.borrow_mut().get_or_insert_with(|| {
            stores
                .iter()
                .map(|store| {
                    let n = left.iter().filter(|d| d.0 == store.name).count();
                    format!("{} {n}", store.label)
                })
                .collect::<Vec<_>>()
        });
        for (i, store) in stores.iter().enumerate() {
            if left.iter().any(|d| d.0 == store.name) {
                last_off.borrow_mut()[i] = settling.elapsed();
            }
        }
        left.is_empty()
    });
    let last_off = stores
        .iter()
        .zip(last_off.borrow().iter())
        .map(|(store, t)| format!("{} {:.1} s", store.label, t.as_secs_f64()))
        .collect();
    Settled {
        converged,
        last_off,
        behind: behind.into_inner().unwrap_or_default(),
    }
}

/// The summary: orders, propagation per channel, write calls, oversells, convergence.
fn summary(
    api: &Api,
    stores: &[Store],
    traffic: &Traffic,
    settled: &Settled,
    left: &[Difference],
) -> anyhow::Result<()> {
    let report = api.get("/v1/propagation")?;
    let metrics = api.metrics()?;
    println!("\nsummary after {:.0} s", traffic.elapsed.as_secs_f64());
    let placed: Vec<String> = stores
        .iter()
        .zip(&traffic.orders)
        .map(|(store, n)| format!("{n} on {}", store.label))
        .collect();
    println!(
        "  orders placed: {} ({} in bursts); warehouse receipts: {}",
        placed.join(", "),
        traffic.burst_orders,
        traffic.receipts
    );
    for store in stores {
        let c = &report["channels"][store.name];
        println!(
            "  {:<6} pushes acknowledged {:>6}  propagation p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  p99.9 {:>8.2} ms  max {:>9.2} ms",
            store.name, c["count"], num(&c["p50_ms"]), num(&c["p90_ms"]), num(&c["p99_ms"]), num(&c["p999_ms"]), num(&c["max_ms"])
        );
    }
    for store in stores {
        println!("  {}: {}", store.label, (store.calls)());
    }
    println!(
        "  oversells: {}  reconciliation drift: {}",
        metric(&metrics, "lockstep_oversells_total"),
        metric(&metrics, "lockstep_reconcile_drift_total")
    );
    match (settled.converged, left.is_empty()) {
        (Some(after), true) => println!(
            "  converged: every store shows the engine's quantity for every SKU it lists ({} ms after the last order; {})",
            after.as_millis(),
            settled.last_off.join(", ")
        ),
        _ => println!("  NOT converged: {} difference(s): {:?}", left.len(), &left[..left.len().min(5)]),
    }
    println!(
        "  SKUs shown otherwise than the engine at the first look after the last order: {}",
        settled.behind.join(", ")
    );
    Ok(())
}

/// The config and catalog of the demo's engine, in `dir`.
fn write_config(dir: &std::path::Path, sims: &Sims, names: &[String]) -> anyhow::Result<Config> {
    let Sims {
        shop,
        woo,
        amazon,
        ebay,
    } = sims;
    let mut catalog = String::from("sku,channel,item_id,location_id\n");
    for (i, sku) in names.iter().enumerate() {
        let (shop_id, woo_id, amazon_id, ebay_id) = ids(i);
        catalog.push_str(&format!(
            "{sku},shop,{shop_id},\n{sku},woo,{woo_id},\n{sku},ebay,{ebay_id},\n"
        ));
        if let Some(amazon_id) = amazon_id {
            catalog.push_str(&format!("{sku},amazon,{amazon_id},\n"));
        }
    }
    std::fs::write(dir.join("catalog.csv"), catalog)?;
    let reconcile = "reconcile_interval_s = 20";
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {data:?}\n{}{}{}{}\n[catalog]\npath = \"catalog.csv\"\n",
        shopify_block("shop", &shop.url(), SHOPIFY_SECRET, "2026-04", reconcile),
        // The simulated site has no limit (WooCommerce core has none); a host's would be here.
        woo_block("woo", &woo.url(), WOO_HOOK_SECRET, &format!("poll_interval_s = 10\n{reconcile}\nrate_limit = {{ requests_per_second = 20.0, burst = 40 }}")),
        // Amazon reads one SKU per call from the same 5/s as its writes: reconciled less often.
        amazon_block("amazon", amazon, &format!("buffer = {AMAZON_BUFFER}\npoll_interval_s = 60\nreconcile_interval_s = 120")),
        ebay_block("ebay", &ebay.market.url(), &format!("poll_interval_s = 2\n{reconcile}")),
        data = dir.join("data").display().to_string()
    );
    let path = dir.join("lockstep.toml");
    std::fs::write(&path, text)?;
    Ok(crate::cli::load_config(&path)?)
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

/// A SKU a store does not show the engine's target for: (store, SKU, target, shown).
type Difference = (&'static str, String, i64, Option<i64>);

/// Where a store does not show the engine's target (available less its buffer) for a SKU
/// it lists.
fn differences(api: &Api, names: &[String], stores: &[Store]) -> anyhow::Result<Vec<Difference>> {
    let levels: Vec<HashMap<String, i64>> = stores.iter().map(|s| (s.levels)()).collect();
    let mut out = Vec::new();
    for name in names {
        let head = api.get(&format!("/v1/skus/{name}"))?;
        let available = head["available"].as_i64().unwrap_or(0);
        for (store, levels) in stores.iter().zip(&levels) {
            let Some(shown) = levels.get(name).copied() else {
                continue; // not listed there
            };
            let target = (available - store.buffer).max(0);
            if shown != target {
                out.push((store.name, name.clone(), target, Some(shown)));
            }
        }
    }
    Ok(out)
}

struct Traffic {
    elapsed: Duration,
    /// Orders placed per store.
    orders: Vec<u64>,
    burst_orders: u64,
    receipts: u64,
}

/// The shoppers: open loop (orders are placed on schedule, never waiting for lockstep),
/// with a status line each second.
fn traffic(
    stores: &[Store],
    names: &[String],
    api: &Api,
    options: &DemoOptions,
    stop: &AtomicBool,
) -> Traffic {
    let mut rng = rand::rng();
    let start = Instant::now();
    let mut t = Traffic {
        elapsed: Duration::ZERO,
        orders: vec![0; stores.len()],
        burst_orders: 0,
        receipts: 0,
    };
    let (mut owed, mut last_tick, mut next_status) =
        (0.0f64, start, start + Duration::from_secs(1));
    let mut orders_at_status = 0u64;
    let tick = Duration::from_millis(10);
    let mut shown: Vec<HashMap<String, i64>> = stores.iter().map(|s| (s.levels)()).collect();
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
        if owed >= 1.0 {
            shown = stores.iter().map(|s| (s.levels)()).collect();
        }
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
            let mut pick = rng.random::<f64>();
            let store = stores
                .iter()
                .position(|s| {
                    pick -= s.share;
                    pick < 0.0
                })
                .unwrap_or(stores.len() - 1);
            // A storefront sells only what it lists and shows in stock.
            let levels = &mut shown[store];
            if order
                .iter()
                .any(|(s, q)| levels.get(*s).copied().unwrap_or(0) < *q)
            {
                continue;
            }
            for (s, q) in &order {
                *levels.entry(s.to_string()).or_default() -= q;
            }
            (stores[store].place)(&order);
            t.orders[store] += 1;
            t.burst_orders += u64::from(in_burst);
        }
        if now >= next_status {
            next_status += Duration::from_secs(1);
            t.receipts += restock(api, names, stores);
            let total: u64 = t.orders.iter().sum();
            status_line(api, stores, start.elapsed(), total - orders_at_status);
            orders_at_status = total;
        }
        std::thread::sleep(tick);
    }
    t.elapsed = start.elapsed();
    t
}

/// Warehouse receipts for SKUs a store shows low: one event per SKU, through the API.
fn restock(api: &Api, names: &[String], stores: &[Store]) -> u64 {
    let levels: Vec<HashMap<String, i64>> = stores.iter().map(|s| (s.levels)()).collect();
    let low: Vec<&String> = names
        .iter()
        .filter(|s| {
            levels
                .iter()
                .any(|l| l.get(*s).is_some_and(|n| *n < LOW_WATER))
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

fn status_line(api: &Api, stores: &[Store], elapsed: Duration, orders: u64) {
    let (Ok(report), Ok(metrics)) = (api.get("/v1/propagation"), api.metrics()) else {
        println!("{:>4} s  (the engine did not answer)", elapsed.as_secs());
        return;
    };
    let channels: Vec<String> = stores
        .iter()
        .map(|store| {
            let c = &report["channels"][store.name];
            format!(
                "{} p50 {:>6.1} p99 {:>7.1} ms outbox {:>3}",
                store.name,
                num(&c["p50_ms"]),
                num(&c["p99_ms"]),
                c["outbox_skus"]
            )
        })
        .collect();
    println!(
        "{:>4} s {:>4} orders/s | {} | oversells {} drift {}",
        elapsed.as_secs(),
        orders,
        channels.join(" | "),
        metric(&metrics, "lockstep_oversells_total"),
        metric(&metrics, "lockstep_reconcile_drift_total"),
    );
}
