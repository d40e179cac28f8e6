//! End to end across native channels: orders placed on the simulated Shopify store reach
//! the simulated WooCommerce site and the other way round, with duplicates, reordering,
//! delays and echoes switched on, cancellations on both sides; in the end both show
//! exactly what lockstep computes, and lockstep's numbers are exactly the orders'.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use loadgen::shopify_sim::ShopifySim;
use loadgen::sim::Habits;
use loadgen::woo_sim::WooSim;
use rand::{Rng, SeedableRng};

const SHOP_SECRET: &str = "shpss_e2e";
const WOO_SECRET_HOOK: &str = "woo-e2e";
const SKUS: usize = 6;
const START: i64 = 60;

#[test]
fn orders_on_shopify_and_woocommerce_reach_each_other_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let names: Vec<String> = (0..SKUS).map(|i| format!("E{i}")).collect();
    let shop_items: Vec<(&str, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 100 + i as u64))
        .collect();
    let woo_products: Vec<(&str, u64, Option<u64>)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 200 + i as u64, None))
        .collect();
    let shop = ShopifySim::start(SHOP_SECRET, SHOPIFY_TOKEN, &shop_items);
    let woo = WooSim::start(WOO_SECRET_HOOK, WOO_KEY, WOO_SECRET, &woo_products);
    let ids: Vec<(String, String)> = (0..SKUS)
        .map(|i| ((100 + i).to_string(), (200 + i).to_string()))
        .collect();
    let mut rows: Vec<(&str, &str, &str)> = Vec::new();
    for (name, (shop_id, woo_id)) in names.iter().zip(&ids) {
        rows.push((name, "shop", shop_id));
        rows.push((name, "woo", woo_id));
    }
    let config = shopify_channel("shop", &shop.url(), SHOP_SECRET, "2026-04", "")
        + &woo_channel("woo", &woo.url(), WOO_SECRET_HOOK, "poll_interval_s = 2")
        + &catalog(&data, &rows);
    let server = Server::start_with(&data, &config, None);
    shop.set_webhook_url(&server.url("/webhooks/shop"));
    woo.set_webhook_url(&server.url("/webhooks/woo"));
    for name in &names {
        count(&server, name, START);
    }
    let all_show = |levels: &HashMap<String, i64>, want: &HashMap<String, i64>| {
        want.iter().all(|(sku, n)| levels.get(sku) == Some(n))
    };
    let start: HashMap<String, i64> = names.iter().map(|n| (n.clone(), START)).collect();
    assert!(shop
        .wait_for(Duration::from_secs(20), |l| all_show(l, &start))
        .is_some());
    assert!(woo
        .wait_for(Duration::from_secs(20), |l| all_show(l, &start))
        .is_some());

    let habits = Habits {
        duplicate: 0.5,
        reorder: Duration::from_millis(150),
        delay: Duration::from_millis(20),
        echo: true,
        ..Habits::default()
    };
    shop.set_habits(habits.clone());
    woo.set_habits(habits);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut sold: HashMap<String, i64> = HashMap::new();
    let mut shop_orders = Vec::new();
    let mut woo_orders = Vec::new();
    for n in 0..40 {
        let lines: Vec<(String, i64)> = (0..rng.random_range(1..=2))
            .map(|_| {
                (
                    names[rng.random_range(0..SKUS)].clone(),
                    rng.random_range(1..=2),
                )
            })
            .collect();
        // One line per SKU in an order, as stores do.
        let mut merged: Vec<(String, i64)> = Vec::new();
        for (sku, qty) in lines {
            match merged.iter_mut().find(|(s, _)| *s == sku) {
                Some((_, q)) => *q += qty,
                None => merged.push((sku, qty)),
            }
        }
        let refs: Vec<(&str, i64)> = merged.iter().map(|(s, q)| (s.as_str(), *q)).collect();
        let cancel = n % 7 == 3;
        if n % 2 == 0 {
            let id = shop.place_order(&refs);
            shop_orders.push((id, cancel, merged.clone()));
        } else {
            let id = woo.place_order(&refs);
            woo_orders.push((id, cancel, merged.clone()));
        }
        if !cancel {
            for (sku, qty) in &merged {
                *sold.entry(sku.clone()).or_default() += qty;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(5..40)));
    }
    // Cancellations once the placements are in (a real cancellation comes later).
    std::thread::sleep(Duration::from_millis(400));
    for (id, cancel, _) in &shop_orders {
        if *cancel {
            shop.cancel_order(*id);
        }
    }
    for (id, cancel, _) in &woo_orders {
        if *cancel {
            woo.set_status(*id, "cancelled");
        }
    }
    assert!(shop.sender.wait_idle(Duration::from_secs(20)));
    assert!(woo.sender.wait_idle(Duration::from_secs(20)));
    let duplicates = shop.sender.sent().iter().filter(|s| s.duplicate).count()
        + woo.sender.sent().iter().filter(|s| s.duplicate).count();
    assert!(duplicates > 10, "duplicates were delivered: {duplicates}");

    let want: HashMap<String, i64> = names
        .iter()
        .map(|n| (n.clone(), START - sold.get(n).copied().unwrap_or(0)))
        .collect();
    let engine_exact = eventually(Duration::from_secs(20), || {
        names
            .iter()
            .all(|n| server.stock(n) == Some((START, START - want[n], want[n])))
    });
    let engine: Vec<_> = names.iter().map(|n| (n, server.stock(n))).collect();
    assert!(
        engine_exact,
        "lockstep counts every order once: want {want:?}, got {engine:?}"
    );
    let shop_exact = shop.wait_for(Duration::from_secs(20), |l| all_show(l, &want));
    let woo_exact = woo.wait_for(Duration::from_secs(20), |l| all_show(l, &want));
    assert!(
        shop_exact.is_some() && woo_exact.is_some(),
        "want {want:?}\nshopify {:?}\nwoocommerce {:?}\n{:?}",
        shop.levels(),
        woo.levels(),
        shop.calls()
            .iter()
            .filter(|c| c.outcome != "applied")
            .collect::<Vec<_>>()
    );
    // And they stay there: no late push moves them.
    std::thread::sleep(Duration::from_millis(500));
    assert!(all_show(&shop.levels(), &want) && all_show(&woo.levels(), &want));
    let oversells: usize = server
        .audit_all()
        .iter()
        .filter(|r| r["oversell"] == true)
        .count();
    assert_eq!(oversells, 0, "stock never ran out");
}
