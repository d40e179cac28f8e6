//! The `tiktok` kind: a TikTok Shop over the Partner API, version 202309 (CHANNELS.md §8).
//!
//! Inbound `POST /webhooks/{name}`: notifications `{type, tts_notification_id, shop_id,
//! timestamp, data}`, signed in `Authorization` (no scheme) as the lowercase hex
//! HMAC-SHA256 of app key + raw body, keyed with the app secret. `tts_notification_id`
//! deduplicates redeliveries. Type 1 (order status change) and type 11 (cancellation
//! status change) carry no lines: the order is fetched (`GET /order/202309/orders?ids=`)
//! and each line item (one unit) moves with its own `display_status`, else the order's:
//! `UNPAID` holds nothing;
//! `ON_HOLD`, `AWAITING_SHIPMENT`, `PARTIALLY_SHIPPING`, `AWAITING_COLLECTION` placed;
//! `IN_TRANSIT`, `DELIVERED`, `COMPLETED` placed and shipped; `CANCELLED` released. Keys
//! `{channel}/{order}/{line_item}/{transition}`.
//!
//! Outbound: `POST /product/202309/products/{product_id}/inventory/update` with every
//! due SKU of that product in one call (the catalog maps a SKU to `product_id/sku_id`),
//! quantities per warehouse (`location_id`, when set); a SKU in several warehouses is
//! written with all of them (`tiktok_warehouses.rs`). Every call carries `app_key`,
//! `timestamp`, `shop_cipher` and `sign` (hex HMAC-SHA256, keyed with the app secret, of
//! secret + path + the sorted parameters + body + secret) and `x-tts-access-token`.
//! Access tokens expire (the grant gives `access_token_expire_in` as a Unix time), so the
//! token comes from the refresh token (`GET {token_url}?app_key&app_secret&refresh_token&
//! grant_type=refresh_token`, default `https://auth.tiktok-shops.com/api/v2/token/refresh`:
//! Partner Center, "Authorization overview"), refreshed ahead of expiry; each refresh
//! rotates the refresh token, which is kept in the data directory (`rotating_token.rs`).
//! An answer with code 105002 ("Expired credentials") refreshes at the next call.
//! Notifications can be lost, so orders are also polled (`POST /order/202309/orders/search`
//! by `update_time_ge` and `update_time_lt`, in windows, every `poll_interval_s`, default
//! 60).
//! `data.errors` names refused SKUs; the rest are taken. The rate limit is unverified
//! (~50 requests/s per store in third-party code): 20/s by default, configurable.

use std::collections::HashMap;
use std::time::Duration;

use http::HeaderMap;
use serde_json::{json, Value};

use super::call::{json_answer, with_headers};
use super::kind::{self, Kind, Problem};
use super::rotating_token::{self, Grant, RotatingToken};
use super::tiktok_warehouses::{self, Several, Stock};
use super::FetchFailure;
use super::Pace;
use super::Seen;
use super::{body_hmac, excerpt, payload, BoxFuture, Caller, Catalog};
use super::{
    ChannelAdapter, Delivery, Inbound, Levels, OutboundRequest, PushItem, PushReply, RateLimit,
};
use super::{OrderPoll, PollPage};
use crate::clock::{now_micros, Micros, MICROS_PER_SECOND};
use crate::config::{ChannelConfig, ChannelKind};
use crate::core::event::{Event, EventKind, LineRef};
use crate::refusal::ApiError;

const DEFAULT_RATE: RateLimit = RateLimit {
    requests_per_second: 20.0,
    burst: 20,
};
/// The inventory update takes SKUs of one product; a product has at most 100 SKUs.
const BATCH_MAX: usize = 100;
/// Seconds between order polls unless configured.
const POLL_INTERVAL_DEFAULT_S: u64 = 60;
/// Orders per page of the order search (TikTok takes up to 100).
const POLL_PAGE_SIZE: usize = 100;
/// Where TikTok Shop refreshes tokens (Partner Center, "Authorization overview").
const TOKEN_URL: &str = "https://auth.tiktok-shops.com/api/v2/token/refresh";
/// TikTok's code for an expired or invalid access token (Partner Center, "Common
/// errors": "Expired credentials").
const EXPIRED_CREDENTIALS: i64 = 105002;
/// TikTok's code for a throttle, "Too many requests" (Partner Center, "Common errors"),
/// whatever the HTTP status it comes with (a 200 included).
const TOO_MANY_REQUESTS: i64 = 36009002;

/// A throttle, which TikTok sends as HTTP 429 or as code 36009002 on any status ("HTTP
/// 429 and 36009002 both indicate rate limiting",
/// https://partner.tiktokshop.com/docv2/page/common-errors), with the `Retry-After` it
/// may carry.
fn throttle(status: u16, headers: &HeaderMap, body: &[u8]) -> Option<Option<Duration>> {
    /// The answer's code alone: no tree of the whole body for it.
    #[derive(serde::Deserialize)]
    struct Code {
        code: Option<i64>,
    }
    let code = serde_json::from_slice::<Code>(body)
        .ok()
        .and_then(|c| c.code);
    (status == 429 || code == Some(TOO_MANY_REQUESTS)).then(|| super::retry_after(headers))
}

/// How long a throttle waits: TikTok's answer names no time.
const THROTTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A TikTok Shop.
pub struct TikTok {
    name: String,
    base_url: String,
    app_key: String,
    app_secret: String,
    /// The seller's grant: access token refreshed ahead of expiry, refresh token kept
    /// in the data directory as it rotates.
    token: RotatingToken,
    shop_cipher: String,
    warehouse_id: Option<String>,
    /// SKUs stocked in more than one warehouse, whose writes name them all.
    several: Several,
    catalog: Catalog,
    seen: Seen,
    poll_interval: std::time::Duration,
}

/// TikTok Shop's request signature: hex HMAC-SHA256(secret, secret + path + sorted
/// `key value` pairs (less `sign` and `access_token`) + body + secret).
pub fn sign(secret: &str, path: &str, params: &[(&str, String)], body: &[u8]) -> String {
    let mut sorted: Vec<&(&str, String)> = params
        .iter()
        .filter(|(k, _)| *k != "sign" && *k != "access_token")
        .collect();
    sorted.sort_by_key(|(k, _)| *k);
    let mut text = format!("{secret}{path}");
    for (k, v) in sorted {
        text.push_str(k);
        text.push_str(v);
    }
    let mac = body_hmac::mac(
        secret.as_bytes(),
        &[text.as_bytes(), body, secret.as_bytes()],
    );
    body_hmac::hex(&mac)
}

/// The `[[channels]]` keys of kind `tiktok`: the app's key and secret, the seller's first
/// refresh token (lockstep keeps the rotated one: `rotating_token.rs`), the shop's
/// cipher (https://partner.tiktokshop.com/docv2/page/authorization-overview).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    app_key: Option<String>,
    app_secret: Option<String>,
    refresh_token: Option<String>,
    shop_cipher: Option<String>,
    /// The warehouse whose stock lockstep sets (default: the product's first).
    location_id: Option<String>,
    /// The token endpoint, when not TikTok Shop's.
    token_url: Option<String>,
    /// Never taken: named only to refuse it with the reason.
    access_token: Option<toml::Value>,
}

impl Kind for TikTok {
    type Settings = Settings;

    fn check(channel: &ChannelConfig, settings: &Settings) -> Result<(), Problem> {
        kind::no_batch_max(channel, "one product's SKUs per inventory update")?;
        let tiktok = ChannelKind::Tiktok;
        kind::required(&settings.app_key, "app_key", tiktok)?;
        kind::required(&settings.app_secret, "app_secret", tiktok)?;
        kind::required(&settings.refresh_token, "refresh_token", tiktok)?;
        kind::required(&settings.shop_cipher, "shop_cipher", tiktok)?;
        if settings.access_token.is_some() {
            // TikTok access tokens expire: lockstep gets its own from the refresh
            // token and keeps the rotated one in the data directory.
            return Err(Problem::new(
                "access_token",
                "not used for kind tiktok (access tokens expire): set refresh_token; lockstep refreshes the access token itself",
            ));
        }
        kind::optional_url(&settings.token_url, "token_url")
    }

    fn check_item_id(id: &str) -> Result<(), &'static str> {
        if kind::two_numbers(id) {
            Ok(())
        } else {
            Err("a TikTok Shop item_id is product_id/sku_id")
        }
    }

    fn open(
        channel: &ChannelConfig,
        settings: Settings,
        catalog: Catalog,
        data_dir: &std::path::Path,
    ) -> TikTok {
        TikTok::from_settings(channel, settings, catalog, data_dir)
    }
}

impl TikTok {
    fn from_settings(
        config: &ChannelConfig,
        settings: Settings,
        catalog: Catalog,
        data_dir: &std::path::Path,
    ) -> TikTok {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let (app_key, app_secret) = (text(&settings.app_key), text(&settings.app_secret));
        let token_url = settings
            .token_url
            .clone()
            .unwrap_or_else(|| TOKEN_URL.to_string());
        let (key, secret) = (app_key.clone(), app_secret.clone());
        let request = move |refresh: &str| {
            let query = super::call::form(&[
                ("app_key", &key),
                ("app_secret", &secret),
                ("refresh_token", refresh),
                ("grant_type", "refresh_token"),
            ]);
            let query = String::from_utf8(query).expect("form encoding is ASCII");
            http::Request::get(format!("{token_url}?{query}"))
                .body(Vec::new())
                .expect("a validated token_url makes a valid request")
        };
        TikTok {
            name: config.name.clone(),
            base_url: config.base_url.trim_end_matches('/').to_string(),
            token: RotatingToken::new(
                rotating_token::grant_path(data_dir, &config.name),
                &text(&settings.refresh_token),
                request,
                read_grant,
            ),
            app_key,
            app_secret,
            shop_cipher: text(&settings.shop_cipher),
            warehouse_id: settings.location_id.clone(),
            several: Several::default(),
            catalog,
            seen: Seen::default(),
            poll_interval: std::time::Duration::from_secs(
                config.poll_interval_s.unwrap_or(POLL_INTERVAL_DEFAULT_S),
            ),
        }
    }

    /// (product id, SKU id) of a SKU.
    fn product_sku(&self, sku: &str) -> Option<(&str, &str)> {
        self.catalog.item(sku)?.id.split_once('/')
    }

    /// A signed request: `extra` query parameters besides the common ones.
    fn signed(
        &self,
        method: http::Method,
        path: &str,
        extra: &[(&str, String)],
        body: Option<Value>,
    ) -> OutboundRequest {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut params: Vec<(&str, String)> = vec![
            ("app_key", self.app_key.clone()),
            ("timestamp", (now_micros() / MICROS_PER_SECOND).to_string()),
            ("shop_cipher", self.shop_cipher.clone()),
        ];
        params.extend(extra.iter().cloned());
        let sign = sign(&self.app_secret, path, &params, &body);
        params.push(("sign", sign));
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect();
        http::Request::builder()
            .method(method)
            .uri(format!("{}{path}?{}", self.base_url, query.join("&")))
            .header("content-type", "application/json")
            .body(body)
            .expect("a validated base_url makes a valid request")
    }

    /// `Err` for an answer whose `code` is not 0.
    fn check_code(&self, reply: &Value) -> Result<(), String> {
        match reply["code"].as_i64() {
            Some(0) => Ok(()),
            _ => Err(format!("code {}: {}", reply["code"], reply["message"])),
        }
    }

    /// An answer (of any HTTP status) saying the access token expired: the next call
    /// refreshes it first.
    fn note_expiry(&self, body: &[u8]) {
        let code = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|r| r["code"].as_i64());
        if code == Some(EXPIRED_CREDENTIALS) {
            self.token.expire();
        }
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
        let given = body_hmac::required_header(headers, "authorization")?;
        let expected = body_hmac::mac(self.app_secret.as_bytes(), &[self.app_key.as_bytes(), body]);
        if body_hmac::matches(given, &expected, false, true) {
            Ok(())
        } else {
            Err(body_hmac::mismatch("Authorization"))
        }
    }

    /// The events of one order resource.
    pub(super) fn order_events(&self, order: &Value, now: Micros) -> Result<Vec<Event>, String> {
        let order_id = payload::id(&order["id"]).ok_or("an order without id")?;
        let unix = |field: &str| payload::unix_end(&order[field]);
        let created = payload::source_time(&[unix("create_time")], now);
        let updated = payload::source_time(&[unix("update_time"), Some(created)], now);
        let placed = (EventKind::OrderPlaced, created);
        // A status (the order's, or a line item's own `display_status`) as transitions.
        // `None`: a status this adapter does not know. `TO_SHIP` is in Get Order Detail's
        // own sample answer beside the documented values
        // (https://partner.tiktokshop.com/docv2/page/6894134ba28e5204961601a5).
        let transitions_of = |status: &str| match status {
            "UNPAID" => Some(Vec::new()),
            "ON_HOLD"
            | "AWAITING_SHIPMENT"
            | "PARTIALLY_SHIPPING"
            | "AWAITING_COLLECTION"
            | "TO_SHIP" => Some(vec![placed]),
            "IN_TRANSIT" | "DELIVERED" | "COMPLETED" => {
                Some(vec![placed, (EventKind::OrderShipped, updated)])
            }
            "CANCELLED" => Some(vec![(EventKind::OrderCancelled, updated)]),
            _ => None,
        };
        let order_status = order["status"].as_str().unwrap_or_default();
        let mut events = Vec::new();
        let reader = payload::OrderLines::of(&self.name, &order_id, created, now);
        for (i, line) in payload::list(&order["line_items"]).iter().enumerate() {
            // A line item is one unit with its own `display_status`: an order
            // `PARTIALLY_SHIPPING` has some items in transit, and a cancellation of some
            // units cancels their items (Get Order Detail, `line_items[].display_status`,
            // as the copy of its spec in lazykern/ecommerce-api-docs
            // `data/raw/tiktok/api-reference/orders/get-order-detail.spec.json` has it;
            // item-level cancellation: https://partner.tiktokshop.com/docv2/page/660d8ff9a2d6d902c70a043f).
            // A line status not known here is read as the order's; an order status not
            // known either holds the unit (placed) and says so: dropping the line once
            // let a paid order reserve nothing, unseen. Holding is the safe side, and a
            // known status later (shipped, cancelled) settles it.
            let status = line["display_status"].as_str().unwrap_or(order_status);
            let transitions = transitions_of(status)
                .or_else(|| transitions_of(order_status))
                .unwrap_or_else(|| {
                    tracing::warn!(channel = %self.name, order = %order_id, line_status = %status, %order_status,
                        "an order status lockstep does not know: its unit is held as placed");
                    vec![placed]
                });
            if transitions.is_empty() {
                continue;
            }
            let Some(line_id) = payload::id(&line["id"]) else {
                // One unit a line (`quantity` is not read): only its id can be missing.
                let why = payload::no_line_id(line, "id");
                events.push(reader.unreadable(&payload::line_place(i), &why));
                continue;
            };
            let item = payload::pair_id(&line["product_id"], &line["sku_id"]);
            let line_ref = LineRef {
                order_id: order_id.clone(),
                line_id,
            };
            let sku = self.catalog.sku_of(&item, None, None);
            let what = format!("product/sku {item}");
            events.extend(payload::order_line(
                &self.name,
                line_ref,
                sku,
                1,
                &transitions,
                &what,
                now,
            ));
        }
        payload::stamp_origins(&mut events);
        Ok(events)
    }

    async fn fetch_order(
        &self,
        caller: &Caller,
        id: &str,
        now: Micros,
    ) -> Result<Vec<Event>, FetchFailure> {
        let request = self.signed(
            http::Method::GET,
            "/order/202309/orders",
            &[("ids", id.to_string())],
            None,
        );
        let request = with_headers(request, self.authorize(caller).await?);
        // Through the channel's budget, like every other call of the app.
        let answer = caller.call(request).await?;
        self.note_expiry(&answer.2);
        let reply = json_answer(&answer)?;
        self.check_code(&reply)?;
        let mut events = Vec::new();
        for order in payload::list(&reply["data"]["orders"]) {
            events.extend(
                self.order_events(order, now)
                    .map_err(FetchFailure::Unreadable)?,
            );
        }
        Ok(events)
    }
}

impl ChannelAdapter for TikTok {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_max(&self) -> usize {
        BATCH_MAX
    }

    fn pace(&self) -> Pace {
        Pace::Published(DEFAULT_RATE)
    }

    fn carries(&self, sku: &str) -> bool {
        self.product_sku(sku).is_some()
    }

    fn push_groups(&self, items: &[PushItem]) -> Vec<Vec<usize>> {
        let skus: Vec<&str> = items.iter().map(|i| i.sku.as_str()).collect();
        self.catalog.group_by_parent(&skus)
    }

    fn read_groups(&self, skus: &[&str]) -> Vec<Vec<usize>> {
        self.catalog.group_by_parent(skus)
    }

    /// Verifies; an order's notification names it, and `receive` fetches it (`fetch`).
    fn inbound(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        _now: Micros,
    ) -> Result<Delivery, ApiError> {
        self.verify(headers, body)?;
        let hook = payload::json(body)?;
        let id = payload::required_id(&hook["tts_notification_id"], "tts_notification_id")?;
        match hook["type"].as_i64() {
            Some(1) | Some(11) => Ok(Delivery::Names {
                notification: id,
                order_id: payload::required_id(&hook["data"]["order_id"], "data.order_id")?,
            }),
            Some(_) => Ok(Delivery::Carried(Inbound {
                notification: Some(id),
                ..Inbound::default()
            })),
            None => Err(payload::invalid("type", "is missing or not a number")),
        }
    }

    fn fetch<'a>(
        &'a self,
        caller: &'a Caller,
        order_id: &'a str,
        now: Micros,
    ) -> BoxFuture<'a, Result<Vec<Event>, FetchFailure>> {
        Box::pin(self.fetch_order(caller, order_id, now))
    }

    fn seen(&self) -> Option<&Seen> {
        Some(&self.seen)
    }

    fn order_poll(&self) -> Option<&dyn OrderPoll> {
        Some(self)
    }

    fn throttle(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> Option<Option<Duration>> {
        throttle(status, headers, body)
    }

    fn authorize<'a>(&'a self, caller: &'a Caller) -> BoxFuture<'a, Result<HeaderMap, String>> {
        Box::pin(self.token.header(
            caller,
            http::header::HeaderName::from_static("x-tts-access-token"),
            "",
        ))
    }

    fn push_request(&self, items: &[PushItem], _now: Micros) -> OutboundRequest {
        self.inventory_update(items, &HashMap::new())
    }

    /// A SKU stocked in more than one warehouse is written with all of them, read just
    /// before (`tiktok_warehouses.rs`): known ones at once, others when TikTok refuses
    /// a write for its warehouses and the read shows several, once within the push.
    fn push<'a>(&'a self, caller: &'a Caller, items: &'a [PushItem]) -> BoxFuture<'a, PushReply> {
        Box::pin(async move {
            let several = items.iter().any(|i| {
                self.product_sku(&i.sku)
                    .is_some_and(|(_, s)| self.several.has(s))
            });
            let stock = if several {
                match self.product_stock(caller, items).await {
                    Ok(stock) => stock,
                    Err(reason) => {
                        return PushReply::Failed {
                            reason: format!("reading the product's warehouses: {reason}"),
                            retryable: true,
                        }
                    }
                }
            } else {
                HashMap::new()
            };
            let (reply, refused) = self.write(caller, items, &stock).await;
            if several || refused.is_empty() {
                return reply;
            }
            for sku_id in &refused {
                self.several.refused(sku_id);
            }
            let asked = |n: &usize| {
                self.product_sku(&items[*n].sku)
                    .is_some_and(|(_, s)| refused.iter().any(|r| r == s))
            };
            let refused_items: Vec<usize> = (0..items.len()).filter(asked).collect();
            if refused_items.is_empty() {
                return reply;
            }
            let subset: Vec<PushItem> = refused_items.iter().map(|n| items[*n].clone()).collect();
            let stock = match self.product_stock(caller, &subset).await {
                Ok(stock) => stock,
                Err(reason) => {
                    tracing::warn!(channel = %self.name, %reason, "reading the warehouses of SKUs refused for them");
                    return reply;
                }
            };
            // Only SKUs the read shows in several warehouses are written again: a refusal
            // of a SKU in one (a `location_id` not its own) would be refused again.
            let again: Vec<usize> = refused_items
                .into_iter()
                .filter(|n| {
                    self.product_sku(&items[*n].sku)
                        .and_then(|(_, s)| stock.get(s))
                        .is_some_and(|w| w.len() > 1)
                })
                .collect();
            if again.is_empty() {
                return reply;
            }
            let subset: Vec<PushItem> = again.iter().map(|n| items[*n].clone()).collect();
            let (second, _) = self.write(caller, &subset, &stock).await;
            merged(reply, second, &again)
        })
    }

    fn push_reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        items: &[PushItem],
    ) -> PushReply {
        self.note_expiry(body);
        if let Some(named) = throttle(status, headers, body) {
            return PushReply::Throttled {
                retry_after: named.unwrap_or(THROTTLE_WAIT),
            };
        }
        if let Some(outcome) = super::http_failure(status, headers, body) {
            return outcome;
        }
        let Ok(reply) = serde_json::from_slice::<Value>(body) else {
            return PushReply::Failed {
                reason: format!("reply is not JSON: {}", excerpt(body)),
                retryable: true,
            };
        };
        let errors = payload::list(&reply["data"]["errors"]);
        let refused: Vec<String> = errors
            .iter()
            .filter_map(|e| payload::id(&e["detail"]["sku_id"]))
            .collect();
        // An error that names no SKU (`detail.sku_id`) may be about any of them: none is
        // acknowledged, and all are pushed again. Taking the others as written let a
        // refusal of the whole product pass for a write TikTok never made.
        if let Some(unnamed) = errors
            .iter()
            .find(|e| payload::id(&e["detail"]["sku_id"]).is_none())
        {
            return PushReply::Failed {
                reason: format!(
                    "an error naming no SKU: code {}: {}",
                    unnamed["code"], unnamed["message"]
                ),
                // A refusal: retried slowly, and a product's SKUs are then sent in
                // smaller requests until the one refused goes alone (`settle`).
                retryable: false,
            };
        }
        if reply["code"].as_i64() != Some(0) && refused.is_empty() {
            return PushReply::Failed {
                reason: format!("code {}: {}", reply["code"], reply["message"]),
                retryable: true,
            };
        }
        let acked = items
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                self.product_sku(&i.sku)
                    .is_some_and(|(_, s)| !refused.iter().any(|r| r == s))
            })
            .map(|(n, _)| n)
            .collect();
        PushReply::Accepted { acked, wait: None }
    }

    fn listings<'a>(
        &'a self,
        caller: &'a Caller,
        cursor: Option<&'a str>,
    ) -> super::listing::Listings<'a> {
        Box::pin(self.listing_page(caller, cursor))
    }

    fn read_request(&self, skus: &[String]) -> OutboundRequest {
        let product = skus
            .first()
            .and_then(|s| self.product_sku(s))
            .map_or("0", |(p, _)| p);
        self.signed(
            http::Method::GET,
            &format!("/product/202309/products/{product}"),
            &[],
            None,
        )
    }

    fn read_reply(&self, status: u16, body: &[u8]) -> Result<Levels, String> {
        self.note_expiry(body);
        let reply = super::call::json_reply(status, body)?;
        self.check_code(&reply)?;
        let product = payload::id(&reply["data"]["id"]).unwrap_or_default();
        Ok(payload::list(&reply["data"]["skus"])
            .iter()
            .filter_map(|s| {
                let sku_id = payload::id(&s["id"])?;
                let stock = payload::list(&s["inventory"]);
                self.several.learn(&sku_id, stock.len());
                let sku = self
                    .catalog
                    .sku_of(&format!("{product}/{sku_id}"), None, None)?;
                let quantity = match &self.warehouse_id {
                    Some(w) => stock
                        .iter()
                        .find(|i| payload::id(&i["warehouse_id"]).as_deref() == Some(w)),
                    None => stock.first(),
                }
                .and_then(|i| i["quantity"].as_i64());
                Some((sku.to_string(), quantity))
            })
            .collect())
    }
}

/// The reply to a push written in two calls: `first` for all its items, `second` for
/// those of them at `again` written once more. An item either took counts as taken; a
/// throttle of the second pauses the channel as a wait.
fn merged(first: PushReply, second: PushReply, again: &[usize]) -> PushReply {
    match (first, second) {
        (PushReply::Accepted { mut acked, wait }, second) => {
            let (more, pause) = match second {
                PushReply::Accepted { acked, wait } => (acked, wait),
                PushReply::Throttled { retry_after } => (Vec::new(), Some(retry_after)),
                _ => (Vec::new(), None),
            };
            acked.extend(more.into_iter().map(|n| again[n]));
            acked.sort_unstable();
            acked.dedup();
            PushReply::Accepted {
                acked,
                wait: wait.max(pause),
            }
        }
        (_, PushReply::Accepted { acked, wait }) => PushReply::Accepted {
            acked: acked.into_iter().map(|n| again[n]).collect(),
            wait,
        },
        (first, _) => first,
    }
}

/// Products a listing page asks for: Search Products' most.
const LISTING_PAGE: usize = 100;

impl TikTok {
    /// Update Inventory for `items`, all of one product: each SKU's quantity at our
    /// warehouse, and its other warehouses as `stock` read them (none read: only ours).
    fn inventory_update(
        &self,
        items: &[PushItem],
        stock: &HashMap<String, Stock>,
    ) -> OutboundRequest {
        let product = items
            .first()
            .and_then(|i| self.product_sku(&i.sku))
            .map_or("0", |(p, _)| p);
        let skus: Vec<Value> = items
            .iter()
            .map(|i| {
                let sku_id = self.product_sku(&i.sku).map_or("0", |(_, s)| s);
                let inventory = tiktok_warehouses::inventory(
                    i.quantity,
                    self.warehouse_id.as_deref(),
                    stock.get(sku_id),
                );
                json!({"id": sku_id, "inventory": inventory})
            })
            .collect();
        self.signed(
            http::Method::POST,
            &format!("/product/202309/products/{product}/inventory/update"),
            &[],
            Some(json!({ "skus": skus })),
        )
    }

    /// Writes `items` with `stock`: the reply, and the SKU ids TikTok refused for their
    /// warehouses.
    async fn write(
        &self,
        caller: &Caller,
        items: &[PushItem],
        stock: &HashMap<String, Stock>,
    ) -> (PushReply, Vec<String>) {
        let request = self.inventory_update(items, stock);
        let (status, headers, body) = match super::send_authorized(self, caller, request).await {
            Ok(answer) => answer,
            Err(reason) => {
                let reply = PushReply::Failed {
                    reason,
                    retryable: true,
                };
                return (reply, Vec::new());
            }
        };
        let asked: Vec<&str> = items
            .iter()
            .filter_map(|i| self.product_sku(&i.sku).map(|(_, s)| s))
            .collect();
        let refused = serde_json::from_slice::<Value>(&body)
            .map(|reply| tiktok_warehouses::refused_for_warehouses(&reply, &asked))
            .unwrap_or_default();
        (self.push_reply(status, &headers, &body, items), refused)
    }

    /// Each SKU's stock per warehouse of `items`' product (Get Product).
    async fn product_stock(
        &self,
        caller: &Caller,
        items: &[PushItem],
    ) -> Result<HashMap<String, Stock>, String> {
        let skus: Vec<String> = items.iter().map(|i| i.sku.clone()).collect();
        let (status, _, body) =
            super::send_authorized(self, caller, self.read_request(&skus)).await?;
        self.note_expiry(&body);
        let reply = super::call::json_reply(status, &body)?;
        self.check_code(&reply)?;
        let stock = tiktok_warehouses::stock_of(&reply["data"]);
        for (sku_id, warehouses) in &stock {
            self.several.learn(sku_id, warehouses.len());
        }
        Ok(stock)
    }

    /// Search Products (`POST /product/202309/products/search`, `page_size` 100, by
    /// `page_token`; https://partner.tiktokshop.com/docv2/page/search-products-202502
    /// documents the same fields at its newest version), live products only
    /// (`status: ACTIVATE`): each SKU of a product is one item, `product_id/sku_id`, with
    /// its `seller_sku` (optional on TikTok: may be empty) and its stock at the
    /// configured warehouse. A throttle (HTTP 429, or code 36009002 on a 200) waits a
    /// second. TikTok answers at most 10,000 results to one search (code 12052180): a
    /// larger shop is named in the error.
    async fn listing_page(
        &self,
        caller: &Caller,
        cursor: Option<&str>,
    ) -> Result<super::listing::ListingPage, super::listing::ListingError> {
        use super::listing::{sku_field, Listing, ListingError, ListingPage};
        let mut query = vec![("page_size", LISTING_PAGE.to_string())];
        if let Some(token) = cursor {
            query.push(("page_token", token.to_string()));
        }
        let request = self.signed(
            http::Method::POST,
            "/product/202309/products/search",
            &query,
            Some(json!({"status": "ACTIVATE"})),
        );
        let request = with_headers(request, self.authorize(caller).await?);
        let answer = caller.call(request).await?;
        self.note_expiry(&answer.2);
        if throttle(answer.0, &answer.1, &answer.2).is_some() {
            return Err(ListingError::Throttled {
                wait: Duration::from_secs(1),
            });
        }
        let reply = json_answer(&answer)?;
        if reply["code"].as_i64() == Some(12052180) {
            return Err(ListingError::Failed(
                "TikTok answers at most 10,000 products to one search, and this shop has more: write the rest of its catalog rows by hand".into(),
            ));
        }
        self.check_code(&reply)?;
        let mut listings = Vec::new();
        for product in payload::list(&reply["data"]["products"]) {
            let id = payload::id(&product["id"]).ok_or("a product without id")?;
            for sku in payload::list(&product["skus"]) {
                let sku_id = payload::id(&sku["id"]).ok_or("a SKU without id")?;
                let stock = payload::list(&sku["inventory"]);
                let level = match &self.warehouse_id {
                    Some(w) => stock
                        .iter()
                        .find(|i| payload::id(&i["warehouse_id"]).as_deref() == Some(w)),
                    None => stock.first(),
                }
                .and_then(|i| i["quantity"].as_i64());
                let deactivated = sku["status_info"]["status"] == "DEACTIVATED";
                listings.push(Listing {
                    sku: sku_field(sku["seller_sku"].as_str()),
                    item_id: format!("{id}/{sku_id}"),
                    location_id: None,
                    level,
                    problem: deactivated
                        .then(|| "the SKU is deactivated on TikTok Shop".to_string()),
                });
            }
        }
        Ok(ListingPage {
            listings,
            next: reply["data"]["next_page_token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            pause: Duration::ZERO,
        })
    }
}

/// The safety net for lost notifications: the order search by `update_time_ge` and
/// `update_time_lt` (Unix seconds, "≥" and "<"), paged by `page_token` (Partner Center,
/// "Get order list" 202309, https://partner.tiktokshop.com/docv2/page/get-order-list-202309);
/// the orders come with their line items, so a page is one call. The list runs newest
/// `create_time` first (its default `sort_field` and `sort_order`), not by update time,
/// so it is read in windows (`OrderPoll::windowed`).
impl OrderPoll for TikTok {
    fn interval(&self) -> std::time::Duration {
        self.poll_interval
    }

    fn windowed(&self) -> bool {
        true
    }

    fn page<'a>(
        &'a self,
        caller: &'a Caller,
        since: Micros,
        until: Option<Micros>,
        cursor: Option<String>,
        now: Micros,
    ) -> BoxFuture<'a, Result<PollPage, String>> {
        Box::pin(async move {
            let first = cursor.is_none();
            let mut query = vec![("page_size", POLL_PAGE_SIZE.to_string())];
            if let Some(token) = cursor {
                query.push(("page_token", token));
            }
            let mut body = json!({"update_time_ge": since.div_euclid(MICROS_PER_SECOND)});
            if let Some(until) = until {
                // `update_time_lt` is exclusive: rounded up, the window's last second is
                // in it.
                body["update_time_lt"] =
                    json!((until + MICROS_PER_SECOND - 1).div_euclid(MICROS_PER_SECOND));
            }
            let request = self.signed(
                http::Method::POST,
                "/order/202309/orders/search",
                &query,
                Some(body),
            );
            let request = with_headers(request, self.authorize(caller).await?);
            let answer = caller.call(request).await?;
            self.note_expiry(&answer.2);
            let reply = json_answer(&answer)?;
            self.check_code(&reply)?;
            let mut page = PollPage::default();
            for order in payload::list(&reply["data"]["orders"]) {
                match self.order_events(order, now) {
                    Ok(events) => page.events.extend(events),
                    Err(why) => super::order_left_out(&self.name, &order["id"], &why),
                }
            }
            page.next = reply["data"]["next_page_token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if first {
                page.pages = reply["data"]["total_count"]
                    .as_u64()
                    .map(|n| n.div_ceil(POLL_PAGE_SIZE as u64));
            }
            Ok(page)
        })
    }
}

/// A token refresh answer: `{code, message, data: {access_token, access_token_expire_in,
/// refresh_token, refresh_token_expire_in, ...}}`, the `_expire_in` fields being Unix
/// times despite their names (Partner Center, "Authorization overview").
pub(crate) fn read_grant(reply: &Value) -> Result<Grant, String> {
    if reply["code"].as_i64() != Some(0) {
        return Err(format!("code {}: {}", reply["code"], reply["message"]));
    }
    let data = &reply["data"];
    let text = |f: &str| data[f].as_str().unwrap_or_default().to_string();
    let access_expires_at = data["access_token_expire_in"]
        .as_i64()
        .ok_or("the grant has no access_token_expire_in")?;
    Ok(Grant {
        access_token: text("access_token"),
        access_expires_at,
        refresh_token: text("refresh_token"),
        refresh_expires_at: data["refresh_token_expire_in"].as_i64().unwrap_or(0),
        obtained_at: 0,
        seed: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_written_twice_takes_what_either_call_took() {
        let accepted = |acked: Vec<usize>, wait: Option<u64>| PushReply::Accepted {
            acked,
            wait: wait.map(Duration::from_secs),
        };
        let acked = |reply: PushReply| match reply {
            PushReply::Accepted { acked, wait } => (acked, wait.map(|w| w.as_secs())),
            other => panic!("{other:?}"),
        };
        // Items 0 and 2 refused at first, written again as 0 and 1 of the second call.
        let again = [0, 2];
        let both = merged(accepted(vec![1], None), accepted(vec![0, 1], None), &again);
        assert_eq!(acked(both), (vec![0, 1, 2], None));
        let throttled = PushReply::Throttled {
            retry_after: Duration::from_secs(3),
        };
        assert_eq!(
            acked(merged(accepted(vec![1], Some(1)), throttled, &again)),
            (vec![1], Some(3))
        );
        let failed = PushReply::Failed {
            reason: "refused".into(),
            retryable: true,
        };
        assert_eq!(
            acked(merged(failed, accepted(vec![1], None), &again)),
            (vec![2], None)
        );
    }

    #[test]
    fn the_signature_sorts_parameters_and_wraps_in_the_secret() {
        let params = [
            ("timestamp", "2".to_string()),
            ("app_key", "k".to_string()),
            ("sign", "x".to_string()),
        ];
        let expected = body_hmac::hex(&body_hmac::mac(
            b"s",
            &[b"s/papp_keyktimestamp2", b"{}", b"s"],
        ));
        assert_eq!(sign("s", "/p", &params, b"{}"), expected);
    }
}
