//! End to end with every channel kind at once: Shopify, WooCommerce, BigCommerce, Amazon,
//! eBay, Walmart, Etsy, TikTok Shop and a `webhook` channel, each its simulator. Orders
//! are placed on every channel (some cancelled later), with duplicate and reordered
//! deliveries where the channel delivers webhooks, and eBay's found by polling; in the
//! end lockstep counts every order once and every channel shows exactly what it computes.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use loadgen::amazon_sim::AmazonSim;
use loadgen::bigcommerce_sim::BigCommerceSim;
use loadgen::ebay_sim::EbaySim;
use loadgen::etsy_sim::EtsySim;
use loadgen::market::Stage;
use loadgen::shopify_sim::ShopifySim;
use loadgen::sim::Habits;
use loadgen::tiktok_sim::TikTokSim;
use loadgen::walmart_sim::{HookAuth, WalmartSim};
use loadgen::webhook_sim::WebhookSim;
use loadgen::woo_sim::WooSim;
use rand::{Rng, SeedableRng};
use serde_json::json;

const SKUS: usize = 4;
const START: i64 = 100;
const WAIT: Duration = Duration::from_secs(45);
const SHOP_SECRET: &str = "shpss_all";
const WOO_HOOK: &str = "woo-all";
const ERP_SECRET: &str = "whsec_c2Vjb25kLXNlY3JldC1vZi0yNC1ieXRlcyE=";

fn refs(p: &[(String, String)]) -> Vec<(&str, &str)> {
    p.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// What a channel's simulator shows, per SKU.
type Levels<'a> = Box<dyn Fn() -> HashMap<String, i64> + 'a>;

/// Places an order of `lines` on one channel; returns what cancels it.
type Place<'a> = Box<dyn Fn(&[(&str, i64)]) -> Box<dyn Fn() + 'a> + 'a>;

#[test]
fn orders_on_every_channel_kind_reach_every_other_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let names: Vec<String> = (0..SKUS).map(|i| format!("S{i}")).collect();
    let ids = |f: &dyn Fn(usize) -> String| -> Vec<String> { (0..SKUS).map(f).collect() };
    let pairs = |ids: &[String]| -> Vec<(String, String)> {
        names.iter().cloned().zip(ids.iter().cloned()).collect()
    };

    let shop_items: Vec<(&str, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 100 + i as u64))
        .collect();
    let woo_items: Vec<(&str, u64, Option<u64>)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 200 + i as u64, None))
        .collect();
    let bc_ids = pairs(&ids(&|i| format!("3{i:04}")));
    let amazon_ids = pairs(&ids(&|i| format!("AMZ-{i}")));
    let ebay_ids = pairs(&ids(&|i| format!("110{i}/500{i}")));
    let walmart_ids = pairs(&ids(&|i| format!("WM-{i}")));
    let etsy_ids = pairs(&ids(&|i| format!("400{i}/70{i}")));
    let tiktok_ids = pairs(&ids(&|i| format!("17{i}/8{i}")));

    let shop = ShopifySim::start(SHOP_SECRET, SHOPIFY_TOKEN, &shop_items);
    let woo = WooSim::start(WOO_HOOK, WOO_KEY, WOO_SECRET, &woo_items);
    let bc = BigCommerceSim::start(&refs(&bc_ids), BC_TOKEN, BC_SECRET, BC_HEADER);
    let amazon = AmazonSim::start(&refs(&amazon_ids), AMAZON_LWA, AMAZON_AUTH);
    let ebay = EbaySim::start(&refs(&ebay_ids), EBAY_CLIENT, EBAY_REFRESH);
    let walmart = WalmartSim::start(
        &refs(&walmart_ids),
        WALMART_CLIENT,
        HookAuth::Hmac("wm-signature".into()),
    );
    let etsy = EtsySim::start(&refs(&etsy_ids), ETSY_KEY, ETSY_REFRESH, ETSY_SECRET);
    let tiktok = TikTokSim::start(&refs(&tiktok_ids), TIKTOK_APP.0, TIKTOK_APP.1, TIKTOK_TOKEN);
    let erp = WebhookSim::start(ERP_SECRET);

    let mut rows: Vec<(String, String, String)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        rows.push((name.clone(), "shop".into(), (100 + i).to_string()));
        rows.push((name.clone(), "woo".into(), (200 + i).to_string()));
    }
    for (channel, list) in [
        ("bc", &bc_ids),
        ("amazon", &amazon_ids),
        ("ebay", &ebay_ids),
        ("walmart", &walmart_ids),
        ("etsy", &etsy_ids),
        ("tiktok", &tiktok_ids),
    ] {
        for (sku, id) in list {
            rows.push((sku.clone(), channel.into(), id.clone()));
        }
    }
    let rows: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    let polled = "poll_interval_s = 1";
    let config = shopify_channel("shop", &shop.url(), SHOP_SECRET, "2026-04", "")
        + &woo_channel("woo", &woo.url(), WOO_HOOK, "poll_interval_s = 2")
        + &bigcommerce_channel("bc", &bc.market.url(), "")
        + &amazon_channel("amazon", &amazon, "")
        + &ebay_channel("ebay", &ebay.market.url(), polled)
        + &walmart_channel(
            "walmart",
            &walmart.market.url(),
            "auth_header = \"wm-signature\"",
            "",
        )
        + &etsy_channel("etsy", &etsy.market.url(), polled)
        + &tiktok_channel("tiktok", &tiktok.market.url(), "")
        + &webhook_channel("erp", &erp.url(), ERP_SECRET, "")
        + &catalog(&data, &rows);
    let server = Server::start_with(&data, &config, None);
    shop.set_webhook_url(&server.url("/webhooks/shop"));
    woo.set_webhook_url(&server.url("/webhooks/woo"));
    for (name, market) in [
        ("bc", &bc.market),
        ("amazon", &amazon.market),
        ("walmart", &walmart.market),
        ("etsy", &etsy.market),
        ("tiktok", &tiktok.market),
    ] {
        market.set_webhook_url(&server.url(&format!("/webhooks/{name}")));
        market.set_habits(Habits {
            duplicate: 0.3,
            reorder: Duration::from_millis(100),
            ..Habits::default()
        });
    }
    let hooks = Habits {
        duplicate: 0.3,
        reorder: Duration::from_millis(100),
        echo: true,
        ..Habits::default()
    };
    shop.set_habits(hooks.clone());
    woo.set_habits(hooks);
    ebay.market.set_listing_lag(Duration::from_millis(300));

    for name in &names {
        count(&server, name, START);
    }
    let levels: Vec<(&str, Levels)> = vec![
        ("shopify", Box::new(|| shop.levels())),
        ("woocommerce", Box::new(|| woo.levels())),
        ("bigcommerce", Box::new(|| bc.market.levels())),
        ("amazon", Box::new(|| amazon.market.levels())),
        ("ebay", Box::new(|| ebay.market.levels())),
        ("walmart", Box::new(|| walmart.market.levels())),
        ("etsy", Box::new(|| etsy.market.levels())),
        ("tiktok", Box::new(|| tiktok.market.levels())),
        ("webhook", Box::new(|| erp.levels())),
    ];
    let all_show = |want: &HashMap<String, i64>| {
        eventually(WAIT, || {
            levels
                .iter()
                .all(|(_, l)| want.iter().all(|(sku, n)| l().get(sku) == Some(n)))
        })
    };
    let start: HashMap<String, i64> = names.iter().map(|n| (n.clone(), START)).collect();
    assert!(all_show(&start), "every channel shows the first count");

    // The closures below hand these to the cancellations they return.
    let (shop, woo, bc, amazon, ebay) = (&shop, &woo, &bc, &amazon, &ebay);
    let (walmart, etsy, tiktok) = (&walmart, &etsy, &tiktok);
    let erp_orders = std::cell::Cell::new(0);
    let channels: Vec<(&str, Place)> = vec![
        (
            "shopify",
            Box::new(|l| {
                let id = shop.place_order(l);
                Box::new(move || shop.cancel_order(id))
            }),
        ),
        (
            "woocommerce",
            Box::new(|l| {
                let id = woo.place_order(l);
                Box::new(move || woo.set_status(id, "cancelled"))
            }),
        ),
        (
            "bigcommerce",
            Box::new(|l| {
                let id = bc.place_order(l);
                Box::new(move || bc.advance(id, Stage::Cancelled))
            }),
        ),
        (
            "amazon",
            Box::new(|l| {
                let id = amazon.place_order(l);
                Box::new(move || amazon.advance(&id, Stage::Cancelled))
            }),
        ),
        (
            "ebay",
            Box::new(|l| {
                let id = ebay.place_order(l);
                Box::new(move || ebay.advance(&id, Stage::Cancelled))
            }),
        ),
        (
            "walmart",
            Box::new(|l| {
                let id = walmart.place_order(l);
                Box::new(move || walmart.advance(&id, Stage::Cancelled))
            }),
        ),
        (
            "etsy",
            Box::new(|l| {
                let id = etsy.place_order(l);
                Box::new(move || etsy.advance(id, Stage::Cancelled))
            }),
        ),
        (
            "tiktok",
            Box::new(|l| {
                let id = tiktok.place_order(l);
                Box::new(move || tiktok.advance(&id, Stage::Cancelled))
            }),
        ),
        (
            "webhook",
            Box::new(|l| {
                // A custom shop: it sells from what it shows, then tells lockstep.
                let n = erp_orders.get() + 1;
                erp_orders.set(n);
                let order = format!("erp-{n}");
                let lines: Vec<(String, i64)> =
                    l.iter().map(|(s, q)| (s.to_string(), *q)).collect();
                let (placed_id, cancelled_id) =
                    (format!("{order}-placed"), format!("{order}-cancelled"));
                let event = move |kind: &str, (sku, qty): &(String, i64)| {
                    json!({"idempotency_key": format!("{order}/{sku}/{kind}"), "sku": sku, "kind": kind,
                       "qty": qty, "order_id": order, "line_id": sku})
                };
                for (sku, qty) in &lines {
                    erp.set_level(sku, erp.level(sku).unwrap_or(0) - qty);
                }
                let placed: Vec<_> = lines.iter().map(|l| event("order_placed", l)).collect();
                let (status, body) = deliver(
                    &server,
                    &erp,
                    "erp",
                    &placed_id,
                    &json!({ "events": placed }),
                );
                assert_eq!(status, 200, "{body}");
                let (server, erp) = (&server, &erp);
                Box::new(move || {
                    let released: Vec<_> =
                        lines.iter().map(|l| event("order_cancelled", l)).collect();
                    let (status, body) = deliver(
                        server,
                        erp,
                        "erp",
                        &cancelled_id,
                        &json!({ "events": released }),
                    );
                    assert_eq!(status, 200, "{body}");
                })
            }),
        ),
    ];

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut sold: HashMap<String, i64> = HashMap::new();
    let mut cancels = Vec::new();
    for round in 0..3 {
        for (n, (_, place)) in channels.iter().enumerate() {
            let first = rng.random_range(0..SKUS);
            let mut lines = vec![(names[first].as_str(), rng.random_range(1..=2))];
            if rng.random_bool(0.5) {
                lines.push((names[(first + 1) % SKUS].as_str(), 1));
            }
            let cancel = place(&lines);
            if (round + n) % 4 == 1 {
                cancels.push(cancel);
            } else {
                for (sku, qty) in &lines {
                    *sold.entry(sku.to_string()).or_default() += qty;
                }
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(5..30)));
        }
    }
    // Cancellations come later, once the placements are in.
    std::thread::sleep(Duration::from_millis(800));
    for cancel in &cancels {
        cancel();
    }

    let want: HashMap<String, i64> = names
        .iter()
        .map(|n| (n.clone(), START - sold.get(n).copied().unwrap_or(0)))
        .collect();
    let engine_exact = eventually(WAIT, || {
        names
            .iter()
            .all(|n| server.stock(n) == Some((START, START - want[n], want[n])))
    });
    let engine: Vec<_> = names.iter().map(|n| (n, server.stock(n))).collect();
    assert!(
        engine_exact,
        "lockstep counts every order once: want {want:?}, got {engine:?}"
    );
    let exact = all_show(&want);
    let shown: Vec<(&str, HashMap<String, i64>)> = levels.iter().map(|(n, l)| (*n, l())).collect();
    assert!(
        exact,
        "every channel shows lockstep's numbers: want {want:?}\n{shown:#?}"
    );
    let oversells = server
        .audit_all()
        .iter()
        .filter(|r| r["oversell"] == true)
        .count();
    assert_eq!(oversells, 0);
}
