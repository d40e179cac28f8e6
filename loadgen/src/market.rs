//! What the channel simulators share above `sim`: a shop's listings (what each SKU
//! shows, under the channel's own id) and orders, the arrival record of every value
//! written, a log of write calls, switchable faults and rate limits, the webhook sender,
//! an HTTP server whose handler sees each request whole (`Req`), and the date formats
//! the channels write (RFC 3339, RFC 2822). Every simulator of a store or marketplace
//! runs on a `Market` (BigCommerce, Amazon, eBay, Walmart, Etsy, TikTok Shop, Shopify,
//! WooCommerce, and the Standard Webhooks shop); each adds its channel's paths,
//! payloads, auth, limits and webhooks on top.
//!
//! Orders live here in one neutral form (lines of SKU and quantity, a status, creation
//! and modification times); each simulator renders them in its channel's shape. A
//! listing lag makes new orders appear in order listings only some time after their
//! modification time, as marketplaces' indexes do: a poll whose watermark does not
//! overlap misses them.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request};
use serde_json::Value;

use crate::sim::{Arrival, Bucket, Delivery, Fault, Reply, Sender, Server};

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64
}

/// The epoch millisecond `at` (now or later) falls in, as a replenishment time names it:
/// cut once, where cutting the clock and the time left apart could name the millisecond
/// before it.
pub fn epoch_ms_at(at: std::time::Instant) -> i64 {
    let now = std::time::Instant::now();
    (now_us() + at.saturating_duration_since(now).as_micros() as i64).div_euclid(1_000)
}

/// RFC 3339 in UTC with microseconds.
pub fn rfc3339(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        us.rem_euclid(1_000_000)
    )
}

/// RFC 2822 in UTC (BigCommerce's v2 dates): `Fri, 27 Nov 2026 12:00:00 +0000`.
pub fn rfc2822(us: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = us.div_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[m as usize - 1],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction][Z]` (UTC) into microseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.get(..19)?;
    let num = |r: std::ops::Range<usize>| b.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let fraction = text[19..]
        .strip_prefix('.')
        .map(|f| {
            let digits: String = f.chars().take_while(char::is_ascii_digit).take(6).collect();
            format!("{digits:0<6}").parse::<i64>().unwrap_or(0)
        })
        .unwrap_or(0);
    Some(((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1_000_000 + fraction)
}

/// A request, read whole.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    async fn read(req: Request<Incoming>) -> Req {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Req {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            headers: parts.headers,
            body,
        }
    }

    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (decode(k) == name).then(|| decode(v))
        })
    }

    /// Bytes of the request target (path and query), for servers that cap it.
    pub fn target_len(&self) -> usize {
        self.path.len() + 1 + self.query.len()
    }

    /// A numeric query parameter, or `default` when absent or not a number.
    pub fn number(&self, name: &str, default: usize) -> usize {
        self.param(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// A field of an `application/x-www-form-urlencoded` body, decoded.
    pub fn form(&self, name: &str) -> Option<String> {
        String::from_utf8_lossy(&self.body)
            .split('&')
            .find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (decode(k) == name).then(|| decode(v))
            })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The path's segments after `prefix`, or `None` when it does not start with it.
    pub fn route(&self, prefix: &str) -> Option<Vec<&str>> {
        let rest = self.path.strip_prefix(prefix)?;
        Some(rest.split('/').filter(|s| !s.is_empty()).collect())
    }
}

/// Percent-decoding (and `+` as a space) for query strings.
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Placed,
    Shipped,
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Line {
    pub id: u64,
    pub sku: String,
    pub quantity: i64,
    /// Units shipped so far (a partial shipment ships some).
    pub shipped: i64,
    /// Units cancelled before shipping (restocked).
    pub cancelled: i64,
}

impl Line {
    /// Units neither shipped nor cancelled.
    pub fn open(&self) -> i64 {
        self.quantity - self.shipped - self.cancelled
    }
}

#[derive(Clone, Debug)]
pub struct Order {
    pub id: u64,
    pub lines: Vec<Line>,
    /// `Placed` while any unit is open (some may have shipped or been cancelled).
    pub stage: Stage,
    pub created_us: i64,
    pub modified_us: i64,
    pub shipped_us: Option<i64>,
    /// When the order shows in listings (modification time + the listing lag).
    pub listed_us: i64,
}

impl Order {
    /// Some units shipped, some still open.
    pub fn partly_shipped(&self) -> bool {
        self.stage == Stage::Placed && self.lines.iter().any(|l| l.shipped > 0)
    }
}

/// One write call as it arrived.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    pub path: String,
    pub items: usize,
    pub status: u16,
}

/// A listing: our SKU, the channel's id for it, and what it shows.
#[derive(Clone, Debug)]
pub struct Listing {
    pub sku: String,
    pub id: String,
    pub level: i64,
    /// The channel's id of the listing this one is a variant of (a WooCommerce
    /// variation's parent product), if any.
    pub parent: Option<String>,
    /// When the level last changed (Unix µs), for channels that show a modification date.
    pub modified_us: i64,
    /// False once the item is no longer stocked where the channel counts it (a Shopify
    /// item removed from the location): it shows no level until one is set again.
    pub stocked: bool,
}

/// A simulated shop.
pub struct Shop {
    pub listings: BTreeMap<String, Listing>,
    pub orders: BTreeMap<u64, Order>,
    pub arrivals: HashMap<String, Vec<Arrival>>,
    pub calls: Vec<Call>,
    pub fault: Fault,
    pub rate: Option<Bucket>,
    pub listing_lag: Duration,
    /// Order listings read (the poll).
    pub order_polls: usize,
    /// Most orders a page of an order list answers, whatever was asked (`set_page_cap`).
    pub page_cap: usize,
    /// SKUs whose orders an order list gives without their id: orders no reader can key
    /// (`is_unreadable`; every simulator that lists orders honours it).
    pub unreadable_skus: std::collections::BTreeSet<String>,
    /// SKUs whose orders' follow-up reads (an order's items or lines, the order a thin
    /// notification named) are answered with this status (`refusal_of`; Amazon's,
    /// BigCommerce's and Etsy's simulators honour it): an order the channel refuses to give (a 4xx),
    /// or keeps failing to (a 5xx).
    pub refused_orders: BTreeMap<String, u16>,
    next_id: u64,
    /// The channel's id → our SKU, for `by_id`.
    ids: HashMap<String, String>,
}

/// What a write call may do before it runs.
pub enum Gate {
    Open,
    Fault(u16),
    Hang(Duration),
    /// Over the rate limit (or a forced 429 storm): `Retry-After` seconds.
    Limited(u64),
}

impl Shop {
    /// The status that `order`'s follow-up reads are refused with, if any
    /// (`refused_orders`).
    pub fn refusal_of(&self, order: &Order) -> Option<u16> {
        order
            .lines
            .iter()
            .find_map(|l| self.refused_orders.get(&l.sku).copied())
    }

    /// Whether order lists give `order` without its id (`unreadable_skus`).
    pub fn is_unreadable(&self, order: &Order) -> bool {
        order
            .lines
            .iter()
            .any(|l| self.unreadable_skus.contains(&l.sku))
    }

    /// A shop listing `items`: (our SKU, the channel's id), each showing 0.
    pub fn new(items: &[(&str, &str)]) -> Shop {
        let mut shop = Shop {
            listings: BTreeMap::new(),
            orders: BTreeMap::new(),
            arrivals: HashMap::new(),
            calls: Vec::new(),
            fault: Fault::None,
            rate: None,
            listing_lag: Duration::ZERO,
            order_polls: 0,
            page_cap: usize::MAX,
            unreadable_skus: Default::default(),
            refused_orders: Default::default(),
            next_id: 100_000,
            ids: HashMap::new(),
        };
        for (sku, id) in items {
            shop.list(sku, id);
        }
        shop
    }

    /// The listing of `sku`, listed under channel id `id` (showing 0) if it was not yet:
    /// a channel that takes any SKU it is sent lists it on the first write.
    pub fn list(&mut self, sku: &str, id: &str) -> &mut Listing {
        if !self.listings.contains_key(sku) {
            self.ids.insert(id.to_string(), sku.to_string());
        }
        self.listings
            .entry(sku.to_string())
            .or_insert_with(|| Listing {
                sku: sku.to_string(),
                id: id.to_string(),
                level: 0,
                parent: None,
                modified_us: now_us(),
                stocked: true,
            })
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Deletes `sku`'s listing, as a seller deleting the product in the channel's admin:
    /// its id is unknown to the channel from now on.
    pub fn unlist(&mut self, sku: &str) {
        if let Some(listing) = self.listings.remove(sku) {
            self.ids.remove(&listing.id);
        }
    }

    /// The listing with channel id `id`.
    pub fn by_id(&self, id: &str) -> Option<&Listing> {
        self.listings.get(self.ids.get(id)?)
    }

    pub fn by_id_mut(&mut self, id: &str) -> Option<&mut Listing> {
        self.listings.get_mut(self.ids.get(id)?)
    }

    /// A value written by the channel's API: set and recorded with its arrival time.
    pub fn write(&mut self, sku: &str, level: i64) {
        self.write_at(sku, level, Instant::now());
    }

    /// The same, for a call that arrived `at` (every value of one call arrives together).
    /// Returns the level shown before (`None`: not listed, or not stocked).
    pub fn write_at(&mut self, sku: &str, level: i64, at: Instant) -> Option<i64> {
        let listing = self.listings.get_mut(sku)?;
        let before = listing.stocked.then_some(listing.level);
        listing.level = level;
        listing.stocked = true;
        listing.modified_us = now_us();
        self.arrivals
            .entry(sku.to_string())
            .or_default()
            .push(Arrival {
                available: level,
                at,
            });
        before
    }

    /// A change of `units` (negative: taken) to what `sku` shows that no API call wrote: an
    /// order, a restock. An item no longer stocked is stocked again from 0.
    pub fn adjust(&mut self, sku: &str, units: i64) {
        if let Some(l) = self.listings.get_mut(sku) {
            if !l.stocked {
                l.level = 0;
                l.stocked = true;
            }
            l.level += units;
        }
    }

    /// The switched-on fault that stops a call of the channel's API, if any (a slow
    /// channel still answers).
    pub fn fault_gate(&self) -> Option<Gate> {
        match self.fault {
            Fault::Status(code) => Some(Gate::Fault(code)),
            Fault::Hang(d) => Some(Gate::Hang(d)),
            Fault::Throttle { retry_after_s } => Some(Gate::Limited(retry_after_s)),
            Fault::None | Fault::Slow(_) | Fault::SlowAnswer(_) => None,
        }
    }

    /// Takes `cost` from the channel's rate bucket: false when it is spent (no bucket:
    /// no limit).
    pub fn spend(&mut self, cost: f64) -> bool {
        self.rate.as_mut().is_none_or(|bucket| bucket.take(cost))
    }

    /// Faults and rate limits, in that order, for a call of the channel's API.
    pub fn gate(&mut self) -> Gate {
        if let Some(gate) = self.fault_gate() {
            return gate;
        }
        if self.spend(1.0) {
            Gate::Open
        } else {
            Gate::Limited(1)
        }
    }

    pub fn log_call(&mut self, path: &str, items: usize, status: u16) {
        self.calls.push(Call {
            at: Instant::now(),
            path: path.to_string(),
            items,
            status,
        });
    }

    /// A customer order of `lines` (SKU, quantity): stock lowered. Returns its id.
    pub fn place(&mut self, lines: &[(&str, i64)]) -> u64 {
        let id = self.next_id();
        let now = now_us();
        let lines = lines
            .iter()
            .map(|(sku, quantity)| {
                if let Some(l) = self.listings.get_mut(*sku) {
                    l.level -= quantity;
                }
                Line {
                    id: self.next_id(),
                    sku: sku.to_string(),
                    quantity: *quantity,
                    shipped: 0,
                    cancelled: 0,
                }
            })
            .collect();
        let order = Order {
            id,
            lines,
            stage: Stage::Placed,
            created_us: now,
            modified_us: now,
            shipped_us: None,
            listed_us: now + self.listing_lag.as_micros() as i64,
        };
        self.orders.insert(id, order);
        id
    }

    /// Moves an order on: shipping ships every open unit; a cancellation restores the
    /// stock of every open unit.
    pub fn advance(&mut self, id: u64, stage: Stage) {
        let Some(order) = self.orders.get(&id) else {
            return;
        };
        let open: Vec<(usize, i64)> = order
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.open()))
            .collect();
        for (line, units) in open {
            match stage {
                Stage::Shipped => self.ship_units(id, line, units),
                Stage::Cancelled => self.cancel_units(id, line, units),
                Stage::Placed => {}
            }
        }
        let now = now_us();
        let lag = self.listing_lag.as_micros() as i64;
        if let Some(order) = self.orders.get_mut(&id) {
            order.stage = stage;
            order.modified_us = now;
            order.listed_us = now + lag;
            if stage == Stage::Shipped {
                order.shipped_us = Some(now);
            }
        }
    }

    /// `units` of the order's line `line` ship (a partial shipment when others stay
    /// open); the order is shipped once no unit is open and one has shipped.
    pub fn ship_units(&mut self, id: u64, line: usize, units: i64) {
        self.change_units(id, line, units, true);
    }

    /// `units` of the order's line `line` are cancelled (restocked); the order is
    /// cancelled once every unit is.
    pub fn cancel_units(&mut self, id: u64, line: usize, units: i64) {
        self.change_units(id, line, units, false);
    }

    /// A seller's edit of the order's line `line` to `quantity` units before they ship
    /// (never below what shipped or was cancelled). The listing's level is left as it
    /// is: BigCommerce's Update an Order says nothing of inventory, so the simulator does
    /// not invent it (lockstep's push brings the level the edit calls for).
    pub fn set_quantity(&mut self, id: u64, line: usize, quantity: i64) {
        if let Some(order) = self.changing(id, line) {
            let l = &mut order.lines[line];
            l.quantity = quantity.max(l.shipped + l.cancelled);
        }
    }

    /// The order `id`, if it has a line `line`, modified now (and listed after the lag).
    fn changing(&mut self, id: u64, line: usize) -> Option<&mut Order> {
        let now = now_us();
        let lag = self.listing_lag.as_micros() as i64;
        let order = self.orders.get_mut(&id).filter(|o| line < o.lines.len())?;
        order.modified_us = now;
        order.listed_us = now + lag;
        Some(order)
    }

    fn change_units(&mut self, id: u64, line: usize, units: i64, ship: bool) {
        let Some(order) = self.changing(id, line) else {
            return;
        };
        let now = order.modified_us;
        let l = &mut order.lines[line];
        let units = units.clamp(0, l.open());
        let sku = l.sku.clone();
        if ship {
            l.shipped += units;
        } else {
            l.cancelled += units;
        }
        if order.lines.iter().all(|l| l.open() == 0) {
            if order.lines.iter().any(|l| l.shipped > 0) {
                order.stage = Stage::Shipped;
                order.shipped_us.get_or_insert(now);
            } else {
                order.stage = Stage::Cancelled;
            }
        }
        if !ship {
            if let Some(listing) = self.listings.get_mut(&sku) {
                listing.level += units;
            }
        }
    }

    /// Orders modified after `since_us` that the listing shows by now, oldest first.
    /// Dates every order back, as if placed during an outage: the first (by id) created
    /// and last modified `oldest_s` seconds ago, each next `step_s` seconds later.
    pub fn spread_orders_back(&mut self, oldest_s: i64, step_s: i64) {
        let start = now_us() - oldest_s * 1_000_000;
        for (k, order) in self.orders.values_mut().enumerate() {
            order.created_us = start + k as i64 * step_s * 1_000_000;
            order.modified_us = order.created_us;
            order.listed_us = order.created_us;
        }
    }

    /// Order `id` was created at `created_us` (its modification time stays).
    pub fn set_order_created(&mut self, id: u64, created_us: i64) {
        if let Some(order) = self.orders.get_mut(&id) {
            order.created_us = created_us;
        }
    }

    pub fn modified_after(&mut self, since_us: i64) -> Vec<Order> {
        self.order_polls += 1;
        let now = now_us();
        let mut list: Vec<Order> = self
            .orders
            .values()
            .filter(|o| o.modified_us > since_us && o.listed_us <= now)
            .cloned()
            .collect();
        list.sort_by_key(|o| (o.modified_us, o.id));
        list
    }

    /// Orders modified after `after_us` and at or before `until_us`, newest created
    /// first: how a list that is not sorted by modification time answers (TikTok's
    /// default sort, `create_time` descending; Walmart's example; Shopify, Amazon and eBay
    /// document no order, and a simulator must not give one a poll could lean on).
    pub fn modified_within(&mut self, after_us: i64, until_us: i64) -> Vec<Order> {
        let mut list = self.modified_after(after_us);
        list.retain(|o| o.modified_us <= until_us);
        list.sort_by_key(|o| std::cmp::Reverse((o.created_us, o.id)));
        list
    }

    /// What every stocked listing shows.
    pub fn levels(&self) -> HashMap<String, i64> {
        self.listings
            .values()
            .filter(|l| l.stocked)
            .map(|l| (l.sku.clone(), l.level))
            .collect()
    }

    /// What `sku` shows (`None`: not listed, or not stocked).
    pub fn level(&self, sku: &str) -> Option<i64> {
        self.listings
            .get(sku)
            .filter(|l| l.stocked)
            .map(|l| l.level)
    }

    /// A seller's edit on the channel: a listed `sku` shows `level` (stocked again).
    pub fn set_level(&mut self, sku: &str, level: i64) {
        if let Some(l) = self.listings.get_mut(sku) {
            l.level = level;
            l.stocked = true;
            l.modified_us = now_us();
        }
    }
}

/// A webhook as built: headers and body.
pub type Built = (Vec<(String, String)>, Vec<u8>);

/// A running simulated marketplace: the server, the shop and the webhook sender.
pub struct Market {
    pub server: Server,
    pub shop: Arc<Mutex<Shop>>,
    pub sender: Arc<Sender>,
    /// Every webhook built so far (headers, body), for tests that deliver by hand.
    deliveries: Mutex<Vec<Built>>,
}

/// Answers a write call that a fault or the rate limit stops (logging it), else `None`.
pub fn gate(
    shop: &Arc<Mutex<Shop>>,
    path: &str,
    throttled: impl Fn(u64) -> Reply,
    failed: impl Fn(u16) -> Reply,
) -> Option<Reply> {
    let mut s = lock(shop);
    let (reply, status) = match s.gate() {
        Gate::Open => return None,
        Gate::Fault(code) => (failed(code), code),
        Gate::Hang(_) => (failed(504), 504),
        Gate::Limited(secs) => (throttled(secs), 429),
    };
    s.log_call(path, 0, status);
    Some(reply)
}

/// The handler of a market's HTTP API: a hang or a slow channel waits before it runs.
pub type Handler = dyn Fn(&Arc<Mutex<Shop>>, &Arc<Sender>, Req) -> Reply + Send + Sync;

/// An answer still to come.
pub type Pending = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// The handler of a market's HTTP API that waits out the faults itself, at the point of
/// the call where its channel waits (after the auth check, after the log, ...).
pub type Serve = dyn Fn(Arc<Mutex<Shop>>, Arc<Sender>, Req) -> Pending + Send + Sync;

/// A webhook built at each attempt: its headers (or body) differ from one to the next.
pub type Build = Arc<dyn Fn() -> Delivery + Send + Sync>;

impl Market {
    /// Serves `handle` over a shop of `items`; webhooks are retried `retries` times. A
    /// hang or a slow channel waits before `handle` runs.
    pub fn start(items: &[(&str, &str)], retries: u32, handle: Arc<Handler>) -> Market {
        let serve = move |shop: Arc<Mutex<Shop>>, sender: Arc<Sender>, req: Req| -> Pending {
            let handle = handle.clone();
            Box::pin(async move {
                let hang = match lock(&shop).fault {
                    Fault::Hang(d) | Fault::Slow(d) => Some(d),
                    _ => None,
                };
                if let Some(d) = hang {
                    tokio::time::sleep(d).await;
                }
                let slow_answer = match lock(&shop).fault {
                    Fault::SlowAnswer(d) => Some(d),
                    _ => None,
                };
                let answer = handle(&shop, &sender, req);
                if let Some(d) = slow_answer {
                    tokio::time::sleep(d).await;
                }
                answer
            })
        };
        Market::serve(Shop::new(items), retries, 0, Arc::new(serve))
    }

    /// Serves `handle` over `shop` on loopback port `port` (0: any); webhooks are retried
    /// `retries` times. `handle` waits out the faults itself.
    pub fn serve(shop: Shop, retries: u32, port: u16, handle: Arc<Serve>) -> Market {
        let shop = Arc::new(Mutex::new(shop));
        let sender = Sender::new(retries);
        let shared = (shop.clone(), sender.clone());
        let server = Server::start_at(port, move |req| {
            let (shop, sender, handle) = (shared.0.clone(), shared.1.clone(), handle.clone());
            async move {
                let req = Req::read(req).await;
                handle(shop, sender, req).await
            }
        });
        Market {
            server,
            shop,
            sender,
            deliveries: Mutex::new(Vec::new()),
        }
    }

    /// Sends a webhook (its habits apply): the same headers and body on every attempt.
    pub fn deliver(&self, topic: &str, headers: Vec<(String, String)>, body: Vec<u8>) {
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((headers.clone(), body.clone()));
        let build = move || Delivery {
            headers: headers.clone(),
            body: body.clone(),
        };
        self.send(topic, Arc::new(build));
    }

    /// Sends a webhook (its habits apply) that `build` makes at each attempt.
    pub fn send(&self, topic: &str, build: Build) {
        self.sender.send(self.server.runtime.handle(), topic, build);
    }

    /// The last webhook built: (headers, body).
    pub fn last_delivery(&self) -> Option<Built> {
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn shop(&self) -> std::sync::MutexGuard<'_, Shop> {
        lock(&self.shop)
    }

    pub fn set_webhook_url(&self, url: &str) {
        *self.sender.url.lock().unwrap_or_else(|e| e.into_inner()) = Some(url.to_string());
    }

    pub fn set_habits(&self, habits: crate::sim::Habits) {
        *self.sender.habits.lock().unwrap_or_else(|e| e.into_inner()) = habits;
    }

    pub fn set_fault(&self, fault: Fault) {
        self.shop().fault = fault;
    }

    /// The channel's own rate limit: past it, its throttle answer.
    pub fn set_rate_limit(&self, per_second: f64, burst: u32) {
        self.shop().rate = Some(Bucket::new(f64::from(burst), per_second));
    }

    /// A page of an order list answers at most `cap` orders, whatever was asked (an API
    /// may answer fewer than asked; tests use it for lists of many pages). Honoured by the
    /// TikTok simulator's order search only.
    pub fn set_page_cap(&self, cap: usize) {
        self.shop().page_cap = cap.max(1);
    }

    /// New orders appear in order listings this long after their modification time.
    pub fn set_listing_lag(&self, lag: Duration) {
        self.shop().listing_lag = lag;
    }

    /// A seller's edit on the channel.
    pub fn set_level(&self, sku: &str, level: i64) {
        self.shop().set_level(sku, level);
    }

    pub fn level(&self, sku: &str) -> Option<i64> {
        self.shop().level(sku)
    }

    pub fn levels(&self) -> HashMap<String, i64> {
        self.shop().levels()
    }

    /// How many SKUs the shop lists: for waiting on a large catalog without copying
    /// its levels at every look.
    pub fn listed(&self) -> usize {
        self.shop().listings.len()
    }

    pub fn arrivals(&self, sku: &str) -> Vec<Arrival> {
        self.shop().arrivals.get(sku).cloned().unwrap_or_default()
    }

    /// Every write call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shop().calls.clone()
    }

    /// How many write calls were answered 429.
    pub fn throttled_calls(&self) -> usize {
        self.calls_answered(429)
    }

    /// Calls answered `status` so far.
    pub fn calls_answered(&self, status: u16) -> usize {
        self.shop()
            .calls
            .iter()
            .filter(|c| c.status == status)
            .count()
    }

    pub fn order_polls(&self) -> usize {
        self.shop().order_polls
    }

    /// Waits until `check` holds of the levels, up to `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        check: impl Fn(&HashMap<String, i64>) -> bool,
    ) -> Option<Duration> {
        crate::sim::wait_until(timeout, || check(&self.levels()))
    }
}

pub fn lock(shop: &Arc<Mutex<Shop>>) -> std::sync::MutexGuard<'_, Shop> {
    shop.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(decode("a%3Ab+c"), "a:b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%5B2026%5D"), "[2026]");
    }

    #[test]
    fn times_round_trip() {
        let us = 1_795_000_000_123_456;
        assert_eq!(parse_rfc3339(&rfc3339(us)), Some(us));
        assert_eq!(parse_rfc3339("1970-01-02T00:00:00Z"), Some(86_400_000_000));
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    }
}
