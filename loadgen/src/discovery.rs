//! `--scenario discover`: how long `lockstep catalog discover` takes to read a simulated
//! Shopify store of `--skus` listings at the Standard plan's limits (a 1,000-point cost
//! bucket refilled at 100 points a second, `shopify_sim::STANDARD_PLAN`), run as a
//! seller runs it: the `--spawn` binary, on a config naming the store.

use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::fleet::creds::SHOPIFY_TOKEN;
use crate::fleet::shopify_block;
use crate::run::Plan;
use crate::shopify_sim::{ShopifySim, STANDARD_PLAN};

const SECRET: &str = "discover-secret";

pub fn discover(plan: &Plan) -> anyhow::Result<(Value, bool)> {
    let names: Vec<String> = (0..plan.skus).map(|i| format!("D{i:06}")).collect();
    let items: Vec<(&str, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 1_000_000 + i as u64))
        .collect();
    let store = ShopifySim::start(SECRET, SHOPIFY_TOKEN, &items);
    let dir = std::env::temp_dir().join(format!(
        "loadgen-discover-{}-{}",
        std::process::id(),
        crate::market::now_us()
    ));
    std::fs::create_dir_all(&dir)?;
    let result = discover_in(plan, &store, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn discover_in(
    plan: &Plan,
    store: &ShopifySim,
    dir: &std::path::Path,
) -> anyhow::Result<(Value, bool)> {
    let config = dir.join("lockstep.toml");
    let out = dir.join("catalog.csv");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n{}",
            dir.join("data").display().to_string(),
            shopify_block("shop", &store.url(), SECRET, "2026-04", "")
        ),
    )?;
    let started = Instant::now();
    let run = std::process::Command::new(&plan.spawn)
        .args(["catalog", "discover", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&config)
        .output()
        .with_context(|| format!("running {}", plan.spawn))?;
    let took = started.elapsed().as_secs_f64();
    if !run.status.success() {
        bail!(
            "discovery failed: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let rows = std::fs::read_to_string(&out)?
        .lines()
        .count()
        .saturating_sub(1);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let pages = stdout
        .lines()
        .filter(|l| l.starts_with("shop: page "))
        .count();
    let report = json!({
        "scenario": "discover",
        "store": "shopify",
        "plan": {"bucket_points": STANDARD_PLAN.0, "restore_points_per_s": STANDARD_PLAN.1},
        "listings": plan.skus,
        "rows_written": rows,
        "pages": pages,
        "seconds": (took * 10.0).round() / 10.0,
        "listings_per_s": (plan.skus as f64 / took).round(),
    });
    Ok((report, rows == plan.skus))
}
