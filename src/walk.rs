//! `lockstep demo --walk`: a seller's first day, against a simulated Shopify store and
//! WooCommerce site that are live already, with the commands a seller types, run as they
//! would run them (this binary, as child processes), each printed with its output:
//!
//! 1. `lockstep catalog discover`: both stores' listings into `catalog.csv` (a Shopify
//!    variant without a SKU and a SKU on two variants are reported, not linked);
//! 2. `lockstep serve` (both channels observe: nothing is written to either);
//! 3. `lockstep stock import --from shop`: Shopify is the truth today;
//! 4. `lockstep plan`: Shopify would change nothing, the WooCommerce site (its levels
//!    are stale) would change, some listings to 0;
//! 5. `lockstep approve shop` and `lockstep approve woo`; then the site converges on
//!    Shopify's levels, and the walk says how long that took.
//!
//! Everything happens in a temporary directory, removed at the end.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use loadgen::fleet::creds::*;
use loadgen::fleet::{shopify_block, woo_block};
use loadgen::shopify_sim::ShopifySim;
use loadgen::woo_sim::WooSim;
use rand::Rng;

/// Listings on each store.
const LISTINGS: usize = 300;
/// How long the site may take to converge before the walk calls it failed.
const CONVERGE_MAX: Duration = Duration::from_secs(60);

/// The SKU a second Shopify variant carries too.
const DUPLICATE: &str = "WALK-007";

fn sku(i: usize) -> String {
    format!("WALK-{i:03}")
}

/// Runs the walk; `Ok(false)` when a step did not do what it should.
pub fn walk() -> anyhow::Result<bool> {
    let dir = std::env::temp_dir().join(format!(
        "lockstep-walk-{}-{}",
        std::process::id(),
        crate::clock::now_micros()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = walk_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn walk_in(dir: &Path) -> anyhow::Result<bool> {
    let exe = std::env::current_exe().context("finding this binary")?;
    // The stores, live already: Shopify's levels are right, the site's are stale.
    let names: Vec<String> = (0..LISTINGS).map(sku).collect();
    let shop_items: Vec<(&str, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 7_000 + i as u64))
        .collect();
    let shop = ShopifySim::start("walk-shop-secret", SHOPIFY_TOKEN, &shop_items);
    shop.add_variant(9_990, None, true);
    shop.add_variant(9_991, Some(DUPLICATE), true);
    let woo_items: Vec<(&str, u64, Option<u64>)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 20_000 + i as u64, None))
        .collect();
    let woo = WooSim::start("walk-woo-secret", WOO_KEY, WOO_SECRET, &woo_items);
    let mut rng = rand::rng();
    for name in &names {
        let level = if rng.random_bool(0.1) {
            0
        } else {
            rng.random_range(1..60)
        };
        shop.set_level(name, level);
        woo.set_level(name, (level + rng.random_range(-3..4_i64)).max(0));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join("lockstep.toml");
    // No `first_sync`: both channels observe until approved, as a new seller's would.
    let observe = "# first_sync: left to its default, observe\n";
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n\n[catalog]\npath = \"catalog.csv\"\n{}{}",
        dir.join("data").display().to_string(),
        shopify_block("shop", &shop.url(), "walk-shop-secret", "2026-04", observe),
        woo_block("woo", &woo.url(), "walk-woo-secret", observe),
    );
    std::fs::write(&config, text)?;
    println!("a Shopify store and a WooCommerce site with {LISTINGS} listings each, live already;");
    println!("lockstep.toml names both, and catalog.csv does not exist yet.\n");

    let run = |args: &[&str]| -> anyhow::Result<String> {
        println!("$ lockstep {}", args.join(" "));
        let out = Command::new(&exe)
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        for line in stdout
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
        {
            println!("  {line}");
        }
        println!();
        if !out.status.success() {
            bail!("lockstep {} failed", args.join(" "));
        }
        Ok(stdout)
    };
    run(&["catalog", "discover"])?;
    let mut server = serve(&exe, &config)?;
    let outcome = (|| -> anyhow::Result<bool> {
        run(&["stock", "import", "--from", "shop"])?;
        let plan = run(&["plan"])?;
        let woo_plan_ok = plan.contains("woo (woocommerce): observing");
        let shopify_quiet = plan.contains("0 would change");
        let before = woo.levels();
        run(&["approve", "shop", "--by", "the-seller"])?;
        run(&["approve", "woo", "--by", "the-seller"])?;
        let approved = Instant::now();
        let target = shop.levels();
        // WALK-007 is on two Shopify variants: not linked, so not imported, so not
        // written anywhere until the seller says which variant is the one.
        let linked: Vec<&String> = names.iter().filter(|n| *n != DUPLICATE).collect();
        let converged = woo.wait_for(CONVERGE_MAX, |levels| {
            linked.iter().all(|n| levels.get(*n) == target.get(*n))
        });
        let differed = linked
            .iter()
            .filter(|n| before.get(**n) != target.get(**n))
            .count();
        match converged {
            Some(_) => println!(
                "the site shows Shopify's levels on all {} linked listings ({differed} had differed), {} ms after the approval;\n{DUPLICATE} waits for the seller to pick its Shopify variant",
                linked.len(),
                approved.elapsed().as_millis()
            ),
            None => println!(
                "the site did not converge within {} s",
                CONVERGE_MAX.as_secs()
            ),
        }
        Ok(converged.is_some() && woo_plan_ok && shopify_quiet)
    })();
    let _ = server.kill();
    let _ = server.wait();
    outcome
}

/// Starts `lockstep serve` and waits for its "listening" line.
fn serve(exe: &PathBuf, config: &Path) -> anyhow::Result<Child> {
    println!("$ lockstep serve &");
    let mut child = Command::new(exe)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(line)) if line.starts_with("lockstep listening on") => {
            println!("  {line}\n");
            // Keep reading (and dropping) what it prints, so it never blocks on a pipe.
            std::thread::spawn(move || for _ in lines {});
            Ok(child)
        }
        other => {
            let _ = child.kill();
            bail!("lockstep serve did not start: {other:?}")
        }
    }
}
