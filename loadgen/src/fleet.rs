//! Every channel kind at once: one simulator of each (Shopify, WooCommerce, BigCommerce,
//! Amazon, eBay, Walmart, Etsy, TikTok Shop, and a Standard Webhooks shop) over the same
//! SKUs, with the lockstep config that connects them. It owns the simulators' credentials,
//! the `[[channels]]` blocks, and `KINDS`, the registry of the fleet's kinds: one line per
//! kind (its config name, its SKUs' ids, its start function). Adding a kind to the fleet
//! is its simulator file (implementing `sim::Simulator`, with `connect` and `set_habits`
//! if it sends webhooks), a line in `KINDS`, and the start function that line names (its
//! credentials and config block, which are lockstep's config and so live here). The
//! `mixed` scenario and the all-channels test drive it; they name a channel by its place
//! in `KINDS` (the same as in `CHANNELS`) or by its simulator's type (`Fleet::get`).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::amazon_sim::AmazonSim;
use crate::bigcommerce_sim::BigCommerceSim;
use crate::ebay_sim::EbaySim;
use crate::etsy_sim::EtsySim;
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

/// SKUs per Etsy listing and per TikTok product.
const PER_LISTING: usize = 20;

/// What cancels an order placed on a channel.
pub use crate::sim::Cancel;

/// One channel kind of the fleet.
pub struct Kind {
    /// The channel's name in the config (and in reports).
    pub name: &'static str,
    /// SKU `i`'s id on the channel; `None`: the kind maps no ids (the catalog skips it).
    pub id: Option<fn(usize) -> String>,
    /// Starts its simulator over (SKU, id) pairs, with the block that connects lockstep.
    start: fn(&[(&str, &str)]) -> Member,
}

impl Kind {
    const fn new(
        name: &'static str,
        id: Option<fn(usize) -> String>,
        start: fn(&[(&str, &str)]) -> Member,
    ) -> Kind {
        Kind { name, id, start }
    }
}

/// The registry: every kind of the fleet, in order, one line each.
#[rustfmt::skip]
pub const KINDS: [Kind; 9] = [
    Kind::new("shop", Some(|i| (100 + i).to_string()), shopify),
    Kind::new("woo", Some(|i| (200 + i).to_string()), woo),
    Kind::new("bc", Some(|i| format!("3{i:05}")), bigcommerce),
    Kind::new("amazon", Some(|i| format!("AMZ-{i}")), amazon),
    Kind::new("ebay", Some(|i| format!("110{i}/500{i}")), ebay),
    Kind::new("walmart", Some(|i| format!("WM-{i}")), walmart),
    Kind::new("etsy", Some(|i| format!("400{}/70{i}", i / PER_LISTING)), etsy),
    Kind::new("tiktok", Some(|i| format!("17{}/8{i}", i / PER_LISTING)), tiktok),
    Kind::new("erp", None, erp),
];

/// The channels' names in the config, by their place in `KINDS`.
pub const CHANNELS: [&str; KINDS.len()] = {
    let mut names = [""; KINDS.len()];
    let mut i = 0;
    while i < KINDS.len() {
        names[i] = KINDS[i].name;
        i += 1;
    }
    names
};

/// A simulator the fleet holds: what every channel does, and its type for `Fleet::get`.
trait Held: Simulator + Any {}

impl<T: Simulator + Any> Held for T {}

/// Writes a channel's `[[channels]]` block: (its name, extra lines) → the block.
type Block = Box<dyn Fn(&str, &str) -> String + Send + Sync>;

/// A started simulator with the block that connects lockstep to it.
struct Member {
    sim: Arc<dyn Held>,
    block: Block,
}

fn member<T: Simulator + Any>(
    sim: T,
    block: impl Fn(&T, &str, &str) -> String + Send + Sync + 'static,
) -> Member {
    let sim = Arc::new(sim);
    let shared = sim.clone();
    Member {
        sim,
        block: Box::new(move |name, extra| block(&shared, name, extra)),
    }
}

/// The (SKU, id) pairs with numeric ids.
fn numbered<'a>(items: &[(&'a str, &str)]) -> Vec<(&'a str, u64)> {
    let number = |id: &str| id.parse().expect("numeric");
    items.iter().map(|(s, id)| (*s, number(id))).collect()
}

/// Polled channels poll every second.
fn polled(extra: &str) -> String {
    format!("poll_interval_s = 1\n{extra}")
}

fn shopify(items: &[(&str, &str)]) -> Member {
    let sim = ShopifySim::start(SHOPIFY_SECRET, SHOPIFY_TOKEN, &numbered(items));
    member(sim, |sim, name, extra| {
        shopify_block(name, &sim.url(), SHOPIFY_SECRET, "2026-04", extra)
    })
}

fn woo(items: &[(&str, &str)]) -> Member {
    let products: Vec<(&str, u64, Option<u64>)> = numbered(items)
        .into_iter()
        .map(|(s, id)| (s, id, None))
        .collect();
    let sim = WooSim::start(WOO_HOOK_SECRET, WOO_KEY, WOO_SECRET, &products);
    member(sim, |sim, name, extra| {
        woo_block(name, &sim.url(), WOO_HOOK_SECRET, &polled(extra))
    })
}

fn bigcommerce(items: &[(&str, &str)]) -> Member {
    let sim = BigCommerceSim::start(items, BC_TOKEN, BC_SECRET, BC_HEADER);
    member(sim, |sim, name, extra| {
        bigcommerce_block(name, &sim.market.url(), extra)
    })
}

fn amazon(items: &[(&str, &str)]) -> Member {
    let sim = AmazonSim::start(items, AMAZON_LWA, AMAZON_AUTH);
    member(sim, |sim, name, extra| amazon_block(name, sim, extra))
}

fn ebay(items: &[(&str, &str)]) -> Member {
    let sim = EbaySim::start(items, EBAY_CLIENT, EBAY_REFRESH);
    member(sim, |sim, name, extra| {
        ebay_block(name, &sim.market.url(), &polled(extra))
    })
}

fn walmart(items: &[(&str, &str)]) -> Member {
    let auth = HookAuth::Hmac(WALMART_HEADER.into(), WALMART_HOOK_SECRET.into());
    let sim = WalmartSim::start(items, WALMART_CLIENT, auth);
    sim.set_feed_processing(WALMART_FEED_PROCESSING);
    sim.set_feed_budget(WALMART_FEEDS_PER_HOUR / 60, Duration::from_secs(60));
    member(sim, |sim, name, extra| {
        walmart_block(
            name,
            &sim.market.url(),
            &format!("auth_header = \"{WALMART_HEADER}\"\nwebhook_secret = \"{WALMART_HOOK_SECRET}\""),
            &format!(
                "feeds_per_hour = {WALMART_FEEDS_PER_HOUR}\nurgent_at_or_below = {WALMART_URGENT_AT_OR_BELOW}\n{extra}"
            ),
        )
    })
}

fn etsy(items: &[(&str, &str)]) -> Member {
    let sim = EtsySim::start(items, ETSY_KEY, ETSY_REFRESH, ETSY_SECRET);
    member(sim, |sim, name, extra| {
        etsy_block(name, &sim.market.url(), &polled(extra))
    })
}

fn tiktok(items: &[(&str, &str)]) -> Member {
    let sim = TikTokSim::start(items, TIKTOK_APP.0, TIKTOK_APP.1, TIKTOK_REFRESH);
    member(sim, |sim, name, extra| {
        tiktok_block(name, &sim.market.url(), extra)
    })
}

fn erp(_: &[(&str, &str)]) -> Member {
    let shop = ErpShop {
        sim: WebhookSim::start(WEBHOOK_SECRET),
        orders: AtomicU64::new(0),
        url: Mutex::new(None),
    };
    member(shop, |shop, name, extra| {
        webhook_block(name, &shop.sim.url(), WEBHOOK_SECRET, extra)
    })
}

/// The fleet's channels push from the start (`first_sync = "push"`): a run, a test or
/// the demo has no seller to approve them. A block whose `extra` sets `first_sync`
/// itself (the first-sync tests) gets that instead.
fn first_sync(extra: &str) -> &'static str {
    if extra.contains("first_sync") {
        ""
    } else {
        "first_sync = \"push\"\n"
    }
}

/// A `[[channels]]` block of kind `amazon` for a simulated account.
pub fn amazon_block(name: &str, sim: &AmazonSim, extra: &str) -> String {
    use crate::amazon_sim::{AWS_ACCESS_KEY_ID, AWS_REGION, AWS_SECRET_ACCESS_KEY};
    use crate::amazon_sim::{MARKETPLACE_ID, SELLER_ID};
    let ((header, value), (id, secret, refresh)) = (AMAZON_AUTH, AMAZON_LWA);
    format!(
        "\n[[channels]]\nname = \"{name}\"\nkind = \"amazon\"\nbase_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{id}\"\nclient_secret = \"{secret}\"\nrefresh_token = \"{refresh}\"\nseller_id = \"{SELLER_ID}\"\nmarketplace_id = \"{MARKETPLACE_ID}\"\nauth_header = \"{header}: {value}\"\nsqs_queue_url = \"{}\"\naws_access_key_id = \"{AWS_ACCESS_KEY_ID}\"\naws_secret_access_key = \"{AWS_SECRET_ACCESS_KEY}\"\naws_region = \"{AWS_REGION}\"\n{}{extra}\n",
        sim.market.url(),
        sim.token_url(),
        sim.queue.queue_url(),
        first_sync(extra)
    )
}

/// A `[[channels]]` block of kind `ebay`.
pub fn ebay_block(name: &str, url: &str, extra: &str) -> String {
    let (id, secret) = EBAY_CLIENT;
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"ebay\"\nbase_url = \"{url}\"\nclient_id = \"{id}\"\nclient_secret = \"{secret}\"\nrefresh_token = \"{EBAY_REFRESH}\"\n{}{extra}\n", first_sync(extra))
}

/// A `[[channels]]` block of kind `etsy`.
pub fn etsy_block(name: &str, url: &str, extra: &str) -> String {
    let shop = crate::etsy_sim::SHOP_ID;
    let (keystring, shared) = ETSY_KEY;
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"etsy\"\nbase_url = \"{url}\"\nwebhook_secret = \"{ETSY_SECRET}\"\nclient_id = \"{keystring}\"\nshared_secret = \"{shared}\"\nrefresh_token = \"{ETSY_REFRESH}\"\nshop_id = \"{shop}\"\n{}{extra}\n", first_sync(extra))
}

/// A `[[channels]]` block of kind `bigcommerce`.
pub fn bigcommerce_block(name: &str, url: &str, extra: &str) -> String {
    let hash = crate::bigcommerce_sim::STORE_HASH;
    let (header, value) = BC_HEADER;
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"bigcommerce\"\nbase_url = \"{url}\"\nstore_hash = \"{hash}\"\naccess_token = \"{BC_TOKEN}\"\nwebhook_secret = \"{BC_SECRET}\"\nauth_header = \"{header}: {value}\"\n{}{extra}\n", first_sync(extra))
}

/// A `[[channels]]` block of kind `walmart` (`auth`: the webhook auth lines).
pub fn walmart_block(name: &str, url: &str, auth: &str, extra: &str) -> String {
    let (id, secret) = WALMART_CLIENT;
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"walmart\"\nbase_url = \"{url}\"\nclient_id = \"{id}\"\nclient_secret = \"{secret}\"\n{auth}\n{}{extra}\n", first_sync(extra))
}

/// A `[[channels]]` block of kind `tiktok`.
pub fn tiktok_block(name: &str, url: &str, extra: &str) -> String {
    let cipher = crate::tiktok_sim::SHOP_CIPHER;
    let (key, secret) = TIKTOK_APP;
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"tiktok\"\nbase_url = \"{url}\"\ntoken_url = \"{url}/api/v2/token/refresh\"\napp_key = \"{key}\"\napp_secret = \"{secret}\"\nrefresh_token = \"{TIKTOK_REFRESH}\"\nshop_cipher = \"{cipher}\"\n{}{extra}\n", first_sync(extra))
}

/// A `[[channels]]` block of kind `shopify`.
pub fn shopify_block(name: &str, url: &str, secret: &str, version: &str, extra: &str) -> String {
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"shopify\"\nbase_url = \"{url}\"\napi_version = \"{version}\"\nwebhook_secret = \"{secret}\"\naccess_token = \"{SHOPIFY_TOKEN}\"\nlocation_id = \"gid://shopify/Location/1\"\n{}{extra}\n", first_sync(extra))
}

/// A `[[channels]]` block of kind `woocommerce`.
pub fn woo_block(name: &str, url: &str, secret: &str, extra: &str) -> String {
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"woocommerce\"\nbase_url = \"{url}\"\nwebhook_secret = \"{secret}\"\nconsumer_key = \"{WOO_KEY}\"\nconsumer_secret = \"{WOO_SECRET}\"\n{}{extra}\n", first_sync(extra))
}

/// A `[[channels]]` block of kind `webhook`.
pub fn webhook_block(name: &str, url: &str, secret: &str, extra: &str) -> String {
    format!("\n[[channels]]\nname = \"{name}\"\nkind = \"webhook\"\nbase_url = \"{url}\"\nwebhook_secret = \"{secret}\"\n{}{extra}\n", first_sync(extra))
}

/// One simulator of every kind over the same SKUs.
pub struct Fleet {
    pub skus: Vec<String>,
    /// In the order of `KINDS`.
    members: Vec<Member>,
}

/// The webhook kind's shop: an ERP that sells from what it shows, then tells lockstep in
/// native events, signed the Standard Webhooks way.
pub struct ErpShop {
    pub sim: WebhookSim,
    /// Orders placed (their ids).
    orders: AtomicU64,
    /// lockstep's `/webhooks/{name}` for it, once connected.
    url: Mutex<Option<String>>,
}

impl Fleet {
    /// Starts every simulator with `skus` SKUs named `{prefix}{i}`, each showing 0.
    pub fn start(prefix: &str, skus: usize) -> Fleet {
        let names: Vec<String> = (0..skus).map(|i| format!("{prefix}{i}")).collect();
        let members = KINDS
            .iter()
            .map(|kind| {
                let ids: Vec<String> = (0..skus)
                    .map(|i| kind.id.map_or_else(String::new, |id| id(i)))
                    .collect();
                let items: Vec<(&str, &str)> = names
                    .iter()
                    .zip(&ids)
                    .map(|(s, id)| (s.as_str(), id.as_str()))
                    .collect();
                (kind.start)(&items)
            })
            .collect();
        Fleet {
            skus: names,
            members,
        }
    }

    /// The lockstep `[[channels]]` blocks of all of them; `extra(name)` adds lines to one.
    /// Polled channels poll every second.
    pub fn channels_config(&self, extra: impl Fn(&str) -> String) -> String {
        KINDS
            .iter()
            .zip(&self.members)
            .map(|(kind, member)| (member.block)(kind.name, &extra(kind.name)))
            .collect()
    }

    /// The catalog CSV mapping every SKU on the channels that have ids for it.
    pub fn catalog_csv(&self) -> String {
        let mut csv = String::from("sku,channel,item_id,location_id\n");
        for (i, sku) in self.skus.iter().enumerate() {
            for kind in &KINDS {
                if let Some(id) = kind.id {
                    csv.push_str(&format!("{sku},{},{},\n", kind.name, id(i)));
                }
            }
        }
        csv
    }

    /// Points every channel's webhooks at lockstep (`base`: `http://host:port`).
    pub fn connect(&self, base: &str) {
        for (kind, member) in KINDS.iter().zip(&self.members) {
            member
                .sim
                .connect(&format!("{base}/webhooks/{}", kind.name));
        }
    }

    /// The delivery habits of every channel that sends webhooks (echoes only where the
    /// simulator sends them).
    pub fn set_habits(&self, habits: &Habits) {
        for member in &self.members {
            member.sim.set_habits(habits);
        }
    }

    /// New orders show in eBay's order listing this long late.
    pub fn set_listing_lag(&self, lag: Duration) {
        self.get::<EbaySim>().market.set_listing_lag(lag);
    }

    /// The fleet's simulator of type `T` (each kind has its own type).
    pub fn get<T: Simulator + Any>(&self) -> &T {
        self.members
            .iter()
            .find_map(|m| (m.sim.as_ref() as &dyn Any).downcast_ref::<T>())
            .expect("a simulator of every kind")
    }

    /// The simulator of channel `c` (its place in `KINDS` and `CHANNELS`).
    pub fn sim(&self, c: usize) -> &dyn Simulator {
        self.members[c].sim.as_ref()
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
            self.sim.sell(sku, *qty);
        }
        self.events(&order, &lines, "order_placed");
        Box::new(move || self.events(&order, &lines, "order_cancelled"))
    }

    fn connect(&self, url: &str) {
        *self.url.lock().unwrap_or_else(|e| e.into_inner()) = Some(url.to_string());
    }
}

impl ErpShop {
    fn events(&self, order: &str, lines: &[(String, i64)], kind: &str) {
        let Some(url) = self.url.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
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
            &url,
            &format!("{order}-{kind}"),
            &json!({ "events": events }),
        );
        if status != 200 {
            eprintln!("the webhook shop's order {order} was answered {status}: {body}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_configured_catalogued_and_reachable_by_place_and_type() {
        let fleet = Fleet::start("F", 3);
        let config = fleet.channels_config(|name| format!("# {name}\n"));
        let names: Vec<&str> = config
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .map(|l| l.trim_end_matches('"'))
            .collect();
        assert_eq!(names, CHANNELS);
        for name in CHANNELS {
            assert!(
                config.contains(&format!("# {name}\n")),
                "{name}'s extra lines"
            );
        }
        assert_eq!(config.matches("poll_interval_s = 1").count(), 3);
        let csv = fleet.catalog_csv();
        assert_eq!(csv.lines().count(), 1 + 3 * 8);
        assert!(csv.contains("F2,etsy,4000/702,\n"));
        for (c, name) in CHANNELS.iter().enumerate() {
            let listed = fleet.levels(c).len();
            assert_eq!(listed, if *name == "erp" { 0 } else { 3 });
        }
        fleet.get::<EbaySim>().market.set_level("F1", 4);
        assert_eq!(fleet.levels(4).get("F1"), Some(&4));
    }
}
