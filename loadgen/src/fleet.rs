//! Every channel kind at once: one simulator of each (Shopify, WooCommerce, BigCommerce,
//! Amazon, eBay, Walmart, Etsy, TikTok Shop, and a Standard Webhooks shop) over the same
//! SKUs, with the lockstep config that connects them. The `mixed` scenario and the
//! all-channels test drive it; each channel is addressed by its index in `CHANNELS`, and
//! `Fleet::sim` is the one place that index meets a simulator (`sim::Simulator`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::amazon_sim::AmazonSim;
use crate::bigcommerce_sim::BigCommerceSim;
use crate::ebay_sim::EbaySim;
use crate::etsy_sim::EtsySim;
use crate::market::Market;
use crate::shopify_sim::ShopifySim;
use crate::sim::{Arrival, Habits, Simulator};
use crate::tiktok_sim::TikTokSim;
use crate::walmart_sim::{HookAuth, WalmartSim};
use crate::webhook_sim::WebhookSim;
use crate::woo_sim::WooSim;

/// The credentials the simulators are started with (and the config names).
pub mod creds {
    pub const SHOPIFY_SECRET: &str = "shpss_fleet";
    pub const SHOPIFY_TOKEN: &str = "shpat_sim";
    pub const WOO_HOOK_SECRET: &str = "woo-fleet";
    pub const WOO_KEY: &str = "ck_sim";
    pub const WOO_SECRET: &str = "cs_sim";
    pub const AMAZON_AUTH: (&str, &str) = ("x-lockstep-key", "eventbridge-shared-secret");
    pub const AMAZON_LWA: (&str, &str, &str) = (
        "amzn1.application-oa2-client.sim",
        "lwa-secret",
        "Atzr|refresh",
    );
    pub const EBAY_CLIENT: (&str, &str) = ("Seller-lockstep-PRD-sim", "PRD-sim-cert");
    pub const EBAY_REFRESH: &str = "v^1.1#i^1#r^1#sim-refresh";
    /// The app's keystring and shared secret (`x-api-key: keystring:shared_secret`).
    pub const ETSY_KEY: (&str, &str) = ("etsy-keystring-sim", "etsy-shared-secret-sim");
    pub const ETSY_REFRESH: &str = "12345678.refresh-sim";
    pub const ETSY_SECRET: &str = "whsec_ZXRzeS1zaWduaW5nLXNlY3JldC1zaW0=";
    pub const BC_TOKEN: &str = "bc-access-token-sim";
    pub const BC_SECRET: &str = "bc-client-secret-sim";
    pub const BC_HEADER: (&str, &str) = ("x-hook-auth", "registered-hook-secret");
    pub const WALMART_CLIENT: (&str, &str) = ("walmart-client-id-sim", "walmart-client-secret-sim");
    pub const WALMART_HEADER: &str = "wm-signature";
    /// The `clientSecret` of the webhook subscription's `authDetails` (its HMAC key).
    pub const WALMART_HOOK_SECRET: &str = "walmart-subscription-secret-sim";
    pub const TIKTOK_APP: (&str, &str) = ("6abc123sim", "tiktok-app-secret-sim");
    /// The seller's first refresh token (it rotates at each refresh).
    pub const TIKTOK_REFRESH: &str = "ROW_sim_refresh_token";
    pub const WEBHOOK_SECRET: &str = "whsec_c2Vjb25kLXNlY3JldC1vZi0yNC1ieXRlcyE=";
}
use creds::*;

/// Walmart, time-compressed so that a run of a minute shows both of its write paths: a
/// feed is processed in `WALMART_FEED_PROCESSING` and 10 are taken a minute (Walmart
/// documents up to 30 minutes and 10 an hour); lockstep is told the same budget.
pub const WALMART_FEED_PROCESSING: std::time::Duration = std::time::Duration::from_secs(5);
pub const WALMART_FEEDS_PER_HOUR: u32 = 600;
/// Changes down to this many units go to Walmart by `PUT /v3/inventory` at once.
pub const WALMART_URGENT_AT_OR_BELOW: i64 = 10;

/// The channels' names in the config, by index.
pub const CHANNELS: [&str; 9] = [
    "shop", "woo", "bc", "amazon", "ebay", "walmart", "etsy", "tiktok", "erp",
];

/// SKUs per Etsy listing and per TikTok product.
const PER_LISTING: usize = 20;

/// What cancels an order placed on a channel.
pub use crate::sim::Cancel;

/// A `[[channels]]` block of kind `amazon` for a simulated account.
pub fn amazon_block(name: &str, sim: &AmazonSim, extra: &str) -> String {
    use crate::amazon_sim::{AWS_ACCESS_KEY_ID, AWS_REGION, AWS_SECRET_ACCESS_KEY};
    use crate::amazon_sim::{MARKETPLACE_ID, SELLER_ID};
    let ((header, value), (id, secret, refresh)) = (AMAZON_AUTH, AMAZON_LWA);
    format!(
        "\n[[channels]]\nname = \"{name}\"\nkind = \"amazon\"\nbase_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{id}\"\nclient_secret = \"{secret}\"\nrefresh_token = \"{refresh}\"\nseller_id = \"{SELLER_ID}\"\nmarketplace_id = \"{MARKETPLACE_ID}\"\nauth_header = \"{header}: {value}\"\nsqs_queue_url = \"{}\"\naws_access_key_id = \"{AWS_ACCESS_KEY_ID}\"\naws_secret_access_key = \"{AWS_SECRET_ACCESS_KEY}\"\naws_region = \"{AWS_REGION}\"\n{extra}\n",
        sim.market.url(),
        sim.token_url(),
        sim.queue.queue_url()
    )
}

/// A `[[channels]]` block of kind `ebay`.
pub fn ebay_block(name: &str, url: &str, extra: &str) -> String {
    let (id, secret) = EBAY_CLIENT;
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"ebay\"\nbase_url = \"{url}\"\nclient_id = \"{id}\"\nclient_secret = \"{secret}\"\nrefresh_token = \"{EBAY_REFRESH}\"\n{extra}\n")
}

/// A `[[channels]]` block of kind `etsy`.
pub fn etsy_block(name: &str, url: &str, extra: &str) -> String {
    let shop = crate::etsy_sim::SHOP_ID;
    let (keystring, shared) = ETSY_KEY;
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"etsy\"\nbase_url = \"{url}\"\nwebhook_secret = \"{ETSY_SECRET}\"\nclient_id = \"{keystring}\"\nshared_secret = \"{shared}\"\nrefresh_token = \"{ETSY_REFRESH}\"\nshop_id = \"{shop}\"\n{extra}\n")
}

/// A `[[channels]]` block of kind `bigcommerce`.
pub fn bigcommerce_block(name: &str, url: &str, extra: &str) -> String {
    let hash = crate::bigcommerce_sim::STORE_HASH;
    let (header, value) = BC_HEADER;
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"bigcommerce\"\nbase_url = \"{url}\"\nstore_hash = \"{hash}\"\naccess_token = \"{BC_TOKEN}\"\nwebhook_secret = \"{BC_SECRET}\"\nauth_header = \"{header}: {value}\"\n{extra}\n")
}

/// A `[[channels]]` block of kind `walmart` (`auth`: the webhook auth lines).
pub fn walmart_block(name: &str, url: &str, auth: &str, extra: &str) -> String {
    let (id, secret) = WALMART_CLIENT;
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"walmart\"\nbase_url = \"{url}\"\nclient_id = \"{id}\"\nclient_secret = \"{secret}\"\n{auth}\n{extra}\n")
}

/// A `[[channels]]` block of kind `tiktok`.
pub fn tiktok_block(name: &str, url: &str, extra: &str) -> String {
    let cipher = crate::tiktok_sim::SHOP_CIPHER;
    let (key, secret) = TIKTOK_APP;
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"tiktok\"\nbase_url = \"{url}\"\ntoken_url = \"{url}/api/v2/token/refresh\"\napp_key = \"{key}\"\napp_secret = \"{secret}\"\nrefresh_token = \"{TIKTOK_REFRESH}\"\nshop_cipher = \"{cipher}\"\n{extra}\n")
}

/// A `[[channels]]` block of kind `shopify`.
pub fn shopify_block(name: &str, url: &str, secret: &str, version: &str, extra: &str) -> String {
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"shopify\"\nbase_url = \"{url}\"\napi_version = \"{version}\"\nwebhook_secret = \"{secret}\"\naccess_token = \"{SHOPIFY_TOKEN}\"\nlocation_id = \"gid://shopify/Location/1\"\n{extra}\n")
}

/// A `[[channels]]` block of kind `woocommerce`.
pub fn woo_block(name: &str, url: &str, secret: &str, extra: &str) -> String {
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"woocommerce\"\nbase_url = \"{url}\"\nwebhook_secret = \"{secret}\"\nconsumer_key = \"{WOO_KEY}\"\nconsumer_secret = \"{WOO_SECRET}\"\n{extra}\n")
}

/// A `[[channels]]` block of kind `webhook`.
pub fn webhook_block(name: &str, url: &str, secret: &str, extra: &str) -> String {
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"webhook\"\nbase_url = \"{url}\"\nwebhook_secret = \"{secret}\"\n{extra}\n")
}

/// One simulator of every kind over the same SKUs.
pub struct Fleet {
    pub skus: Vec<String>,
    pub shop: ShopifySim,
    pub woo: WooSim,
    pub bc: BigCommerceSim,
    pub amazon: AmazonSim,
    pub ebay: EbaySim,
    pub walmart: WalmartSim,
    pub etsy: EtsySim,
    pub tiktok: TikTokSim,
    pub erp: ErpShop,
}

/// The webhook kind's shop: an ERP that sells from what it shows, then tells lockstep in
/// native events, signed the Standard Webhooks way.
pub struct ErpShop {
    pub sim: WebhookSim,
    /// Orders placed (their ids).
    orders: AtomicU64,
    /// lockstep's base URL, once connected.
    engine: std::sync::Mutex<Option<String>>,
}

/// Each SKU's id on each channel, by SKU index.
fn ids(i: usize) -> [String; 9] {
    [
        (100 + i).to_string(),
        (200 + i).to_string(),
        format!("3{i:05}"),
        format!("AMZ-{i}"),
        format!("110{i}/500{i}"),
        format!("WM-{i}"),
        format!("400{}/70{i}", i / PER_LISTING),
        format!("17{}/8{i}", i / PER_LISTING),
        String::new(),
    ]
}

impl Fleet {
    /// Starts every simulator with `skus` SKUs named `{prefix}{i}`, each showing 0.
    pub fn start(prefix: &str, skus: usize) -> Fleet {
        let names: Vec<String> = (0..skus).map(|i| format!("{prefix}{i}")).collect();
        let all: Vec<[String; 9]> = (0..skus).map(ids).collect();
        let pairs = |c: usize| -> Vec<(&str, &str)> {
            names
                .iter()
                .zip(&all)
                .map(|(s, ids)| (s.as_str(), ids[c].as_str()))
                .collect()
        };
        let numbered = |c: usize| -> Vec<(&str, u64)> {
            pairs(c)
                .into_iter()
                .map(|(s, id)| (s, id.parse().expect("numeric")))
                .collect()
        };
        let woo_items: Vec<(&str, u64, Option<u64>)> = numbered(1)
            .into_iter()
            .map(|(s, id)| (s, id, None))
            .collect();
        Fleet {
            shop: ShopifySim::start(SHOPIFY_SECRET, SHOPIFY_TOKEN, &numbered(0)),
            woo: WooSim::start(WOO_HOOK_SECRET, WOO_KEY, WOO_SECRET, &woo_items),
            bc: BigCommerceSim::start(&pairs(2), BC_TOKEN, BC_SECRET, BC_HEADER),
            amazon: AmazonSim::start(&pairs(3), AMAZON_LWA, AMAZON_AUTH),
            ebay: EbaySim::start(&pairs(4), EBAY_CLIENT, EBAY_REFRESH),
            walmart: {
                let walmart = WalmartSim::start(
                    &pairs(5),
                    WALMART_CLIENT,
                    HookAuth::Hmac(WALMART_HEADER.into(), WALMART_HOOK_SECRET.into()),
                );
                walmart.set_feed_processing(WALMART_FEED_PROCESSING);
                walmart.set_feed_budget(
                    WALMART_FEEDS_PER_HOUR / 60,
                    std::time::Duration::from_secs(60),
                );
                walmart
            },
            etsy: EtsySim::start(&pairs(6), ETSY_KEY, ETSY_REFRESH, ETSY_SECRET),
            tiktok: TikTokSim::start(&pairs(7), TIKTOK_APP.0, TIKTOK_APP.1, TIKTOK_REFRESH),
            erp: ErpShop {
                sim: WebhookSim::start(WEBHOOK_SECRET),
                orders: AtomicU64::new(0),
                engine: std::sync::Mutex::new(None),
            },
            skus: names,
        }
    }

    /// The lockstep `[[channels]]` blocks of all nine; `extra(name)` adds lines to one.
    /// Polled channels poll every second.
    pub fn channels_config(&self, extra: impl Fn(&str) -> String) -> String {
        let polled = |name: &str| format!("poll_interval_s = 1\n{}", extra(name));
        shopify_block(
            "shop",
            &self.shop.url(),
            SHOPIFY_SECRET,
            "2026-04",
            &extra("shop"),
        ) + &woo_block("woo", &self.woo.url(), WOO_HOOK_SECRET, &polled("woo"))
            + &bigcommerce_block("bc", &self.bc.market.url(), &extra("bc"))
            + &amazon_block("amazon", &self.amazon, &extra("amazon"))
            + &ebay_block("ebay", &self.ebay.market.url(), &polled("ebay"))
            + &walmart_block(
                "walmart",
                &self.walmart.market.url(),
                &format!(
                    "auth_header = \"{WALMART_HEADER}\"\nwebhook_secret = \"{WALMART_HOOK_SECRET}\""
                ),
                &format!(
                    "feeds_per_hour = {WALMART_FEEDS_PER_HOUR}\nurgent_at_or_below = {WALMART_URGENT_AT_OR_BELOW}\n{}",
                    extra("walmart")
                ),
            )
            + &etsy_block("etsy", &self.etsy.market.url(), &polled("etsy"))
            + &tiktok_block("tiktok", &self.tiktok.market.url(), &extra("tiktok"))
            + &webhook_block("erp", &self.erp.sim.url(), WEBHOOK_SECRET, &extra("erp"))
    }

    /// The catalog CSV mapping every SKU on the eight native channels.
    pub fn catalog_csv(&self) -> String {
        let mut csv = String::from("sku,channel,item_id,location_id\n");
        for (i, sku) in self.skus.iter().enumerate() {
            for (c, id) in ids(i).iter().enumerate().take(8) {
                csv.push_str(&format!("{sku},{},{id},\n", CHANNELS[c]));
            }
        }
        csv
    }

    fn markets(&self) -> [(&str, &Market); 5] {
        [
            ("bc", &self.bc.market),
            ("amazon", &self.amazon.market),
            ("walmart", &self.walmart.market),
            ("etsy", &self.etsy.market),
            ("tiktok", &self.tiktok.market),
        ]
    }

    /// Points every channel's webhooks at lockstep (`base`: `http://host:port`).
    pub fn connect(&self, base: &str) {
        self.shop.set_webhook_url(&format!("{base}/webhooks/shop"));
        self.woo.set_webhook_url(&format!("{base}/webhooks/woo"));
        for (name, market) in self.markets() {
            market.set_webhook_url(&format!("{base}/webhooks/{name}"));
        }
        *self.erp.engine.lock().unwrap_or_else(|e| e.into_inner()) = Some(base.to_string());
    }

    /// The delivery habits of every channel that sends webhooks (echoes only where the
    /// simulator sends them).
    pub fn set_habits(&self, habits: &Habits) {
        self.shop.set_habits(habits.clone());
        self.woo.set_habits(habits.clone());
        for (_, market) in self.markets() {
            market.set_habits(habits.clone());
        }
    }

    /// New orders show in eBay's order listing this long late.
    pub fn set_listing_lag(&self, lag: Duration) {
        self.ebay.market.set_listing_lag(lag);
    }

    /// The simulator of channel `c` (its index in `CHANNELS`): the one registry.
    pub fn sim(&self, c: usize) -> &dyn Simulator {
        match c {
            0 => &self.shop,
            1 => &self.woo,
            2 => &self.bc,
            3 => &self.amazon,
            4 => &self.ebay,
            5 => &self.walmart,
            6 => &self.etsy,
            7 => &self.tiktok,
            _ => &self.erp,
        }
    }

    /// What channel `c` shows, per SKU.
    pub fn levels(&self, c: usize) -> HashMap<String, i64> {
        self.sim(c).levels()
    }

    /// Every value lockstep wrote to channel `c` for `sku`: (when it arrived, value).
    pub fn arrivals(&self, c: usize, sku: &str) -> Vec<(Instant, i64)> {
        let arrivals = self.sim(c).arrivals(sku);
        arrivals.into_iter().map(|a| (a.at, a.available)).collect()
    }

    /// A customer order of `lines` on channel `c`, placed the channel's own way (its
    /// stock lowered, its webhook sent or its listing updated); returns what cancels it.
    pub fn place(&self, c: usize, lines: &[(&str, i64)]) -> Cancel<'_> {
        self.sim(c).place(lines)
    }
}

impl Simulator for ErpShop {
    fn levels(&self) -> HashMap<String, i64> {
        self.sim.levels()
    }

    fn arrivals(&self, sku: &str) -> Vec<Arrival> {
        self.sim.arrivals(sku)
    }

    /// Sells from what it shows, then tells lockstep (native events).
    fn place(&self, lines: &[(&str, i64)]) -> Cancel<'_> {
        let order = format!("erp-{}", self.orders.fetch_add(1, Ordering::Relaxed) + 1);
        let lines: Vec<(String, i64)> = lines.iter().map(|(s, q)| (s.to_string(), *q)).collect();
        for (sku, qty) in &lines {
            self.sim
                .set_level(sku, self.sim.level(sku).unwrap_or(0) - qty);
        }
        self.events(&order, &lines, "order_placed");
        Box::new(move || self.events(&order, &lines, "order_cancelled"))
    }
}

impl ErpShop {
    fn events(&self, order: &str, lines: &[(String, i64)], kind: &str) {
        let Some(base) = self
            .engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let events: Vec<_> = lines
            .iter()
            .map(|(sku, qty)| {
                json!({"idempotency_key": format!("{order}/{sku}/{kind}"), "sku": sku,
                                     "kind": kind, "qty": qty, "order_id": order, "line_id": sku})
            })
            .collect();
        let (status, body) = self.sim.send_events(
            &format!("{base}/webhooks/erp"),
            &format!("{order}-{kind}"),
            &json!({ "events": events }),
        );
        if status != 200 {
            eprintln!("the webhook shop's order {order} was answered {status}: {body}");
        }
    }
}
