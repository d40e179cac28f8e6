//! The `webhook` kind: Standard Webhooks both ways, for ERPs, WMSs and custom shops
//! (the headers, the signed content `{id}.{timestamp}.{body}`, `v1,` + base64 signatures,
//! `whsec_` secrets and the timestamp tolerance follow
//! https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md).
//!
//! - Inbound `POST /webhooks/{name}`: the native `{"events": [...]}` body, signed. The
//!   channel is the events' source; keys come from the business fact, else the event's
//!   `idempotency_key`, else the `webhook-id` (so a redelivery is a duplicate).
//! - Outbound `POST {base_url}`: `{"type": "stock.updated", "timestamp", "data": {"items":
//!   [{"sku", "available", "at"}]}}`, signed with the same secret. Any 2xx takes the
//!   batch but the SKUs its body lists as `{"refused": [...]}` (`refused_in`; a 207
//!   must list them); 429 with `Retry-After` throttles.
//! - Reads for reconciliation: `GET {base_url}?sku=A&sku=B` (signed over an empty body),
//!   answered `{"items": [{"sku", "available"}]}`.
//! - An inventory report from the channel is an event of kind `level` in the inbound
//!   body: `{"sku", "kind": "level", "qty": <what the channel now shows>}`.

use http::HeaderMap;
use serde_json::json;

use super::kind::{self, Kind, Problem};
use super::native::parse_events_from;
use super::pacing::{Pace, ADAPTIVE_CEILING};
use super::standard_webhooks::{self, Key};
use super::Catalog;
use super::{ChannelAdapter, Delivery, OutboundRequest, PushItem, PushReply};
use crate::clock::{format_rfc3339, Micros, MICROS_PER_SECOND};
use crate::config::{ChannelConfig, ChannelKind, RateLimit};
use crate::refusal::ApiError;
use base64::Engine as _;

/// Items per push. The body stays far below the receiver's limits at this size.
const BATCH_MAX: usize = 500;
/// A generic endpoint's capacity is unknown: a modest default, overridable in the config.
const DEFAULT_RATE: RateLimit = RateLimit {
    requests_per_second: 10.0,
    burst: 10,
};

/// A Standard Webhooks channel.
pub struct Webhook {
    name: String,
    base_url: String,
    /// The current key first, then the previous one during a rotation.
    keys: Vec<Key>,
    batch_max: usize,
    /// Message ids are unique per process start plus a counter.
    next_id: std::sync::atomic::AtomicU64,
    boot: Micros,
}

/// The `webhook` kind has no keys of its own: its `webhook_secret` (and the previous one
/// during a rotation) signs both directions, the Standard Webhooks way
/// (https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md#signature-scheme).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

impl Kind for Webhook {
    type Settings = Settings;

    fn check(channel: &ChannelConfig, _settings: &Settings) -> Result<(), Problem> {
        kind::required(
            &channel.webhook_secret,
            "webhook_secret",
            ChannelKind::Webhook,
        )?;
        for (key, secret) in [
            ("webhook_secret", &channel.webhook_secret),
            ("previous_webhook_secret", &channel.previous_webhook_secret),
        ] {
            if let Some(secret) = secret {
                check_whsec(secret).map_err(|reason| Problem::new(key, reason))?;
            }
        }
        Ok(())
    }

    fn open(
        config: &ChannelConfig,
        _settings: Settings,
        _catalog: Catalog,
        _data_dir: &std::path::Path,
    ) -> Webhook {
        Webhook {
            name: config.name.clone(),
            base_url: config.base_url.clone(),
            keys: kind::secrets(config).filter_map(Key::from_secret).collect(),
            batch_max: kind::batch_max(config, BATCH_MAX, BATCH_MAX),
            next_id: std::sync::atomic::AtomicU64::new(0),
            boot: crate::clock::now_micros(),
        }
    }
}

/// A Standard Webhooks secret: `whsec_` and base64 of at least 24 bytes.
fn check_whsec(secret: &str) -> Result<(), String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("a Standard Webhooks secret starts with \"whsec_\"")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the part after \"whsec_\" is not base64: {e}"))?;
    if bytes.len() < 24 {
        return Err(format!("the key is {} bytes; use at least 24", bytes.len()));
    }
    Ok(())
}

impl Webhook {
    /// Finishes a request with a fresh message id and its Standard Webhooks signature.
    fn signed(
        &self,
        builder: http::request::Builder,
        body: Vec<u8>,
        now: Micros,
    ) -> OutboundRequest {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("msg_{}_{:x}_{n}", self.name, self.boot);
        let timestamp = now / MICROS_PER_SECOND;
        let signature = self
            .keys
            .first()
            .map(|k| k.sign(&id, timestamp, &body))
            .unwrap_or_default();
        builder
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .expect("a validated base_url makes a valid request")
    }
}

impl ChannelAdapter for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_max(&self) -> usize {
        self.batch_max
    }

    fn pace(&self) -> Pace {
        Pace::Adaptive {
            start: DEFAULT_RATE,
            ceiling: ADAPTIVE_CEILING,
        }
    }

    fn inbound(&self, headers: &HeaderMap, body: &[u8], now: Micros) -> Result<Delivery, ApiError> {
        let (id, _) = standard_webhooks::verify(headers, body, &self.keys, now).map_err(|e| {
            ApiError::new(
                hyper::StatusCode::UNAUTHORIZED,
                "bad_signature",
                e.to_string(),
            )
        })?;
        parse_events_from(body, Some(&id), now, Some(&self.name)).map(Delivery::events)
    }

    fn push_request(&self, items: &[PushItem], now: Micros) -> OutboundRequest {
        let body = json!({
            "type": "stock.updated",
            "timestamp": format_rfc3339(now),
            "data": {"items": items.iter().map(|i| json!({
                "sku": i.sku, "available": i.quantity, "at": format_rfc3339(i.caused_at),
            })).collect::<Vec<_>>()},
        });
        let body = serde_json::to_vec(&body).expect("json serializes");
        self.signed(
            http::Request::post(&self.base_url).header("content-type", "application/json"),
            body,
            now,
        )
    }

    fn read_request(&self, skus: &[String]) -> OutboundRequest {
        let query: Vec<String> = skus
            .iter()
            .map(|s| {
                format!(
                    "sku={}",
                    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect();
        let separator = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{}{separator}{}", self.base_url, query.join("&"));
        self.signed(
            http::Request::get(url),
            Vec::new(),
            crate::clock::now_micros(),
        )
    }

    fn read_reply(&self, status: u16, body: &[u8]) -> Result<Vec<(String, Option<i64>)>, String> {
        if !(200..300).contains(&status) {
            return Err(format!("HTTP {status}"));
        }
        // Our own format: a level named twice for one item is refused, not guessed.
        let value = super::strict_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let items = value["items"].as_array().ok_or("no \"items\" array")?;
        Ok(items
            .iter()
            .filter_map(|i| Some((i["sku"].as_str()?.to_string(), i["available"].as_i64())))
            .collect())
    }

    fn push_reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        items: &[PushItem],
    ) -> PushReply {
        if let Some(failed) = super::http_failure(status, headers, body) {
            return failed;
        }
        let refused = match refused_in(status, body) {
            Ok(refused) => refused,
            Err(reason) => {
                return PushReply::Failed {
                    reason,
                    retryable: true,
                }
            }
        };
        let named: Vec<&Refused> = refused
            .iter()
            .filter(|r| items.iter().any(|i| i.sku == r.sku))
            .collect();
        // A 207 says some items failed: a list naming none of those sent cannot say which.
        if status == 207 && named.is_empty() {
            return PushReply::Failed {
                reason: format!(
                    "HTTP 207 whose \"refused\" names none of the SKUs sent: {}",
                    super::excerpt(body)
                ),
                retryable: true,
            };
        }
        if !named.is_empty() {
            let first = named[0];
            tracing::warn!(
                channel = %self.name,
                refused = named.len(),
                sku = %first.sku,
                reason = %first.reason,
                "the receiver refused items; the rest taken, the refused sent again later"
            );
        }
        let acked = items
            .iter()
            .enumerate()
            .filter(|(_, i)| !named.iter().any(|r| r.sku == i.sku))
            .map(|(n, _)| n)
            .collect();
        PushReply::Accepted { acked, wait: None }
    }
}

/// A SKU the receiver did not take, and why (as it said, cut to `REASON_CHARS_MAX`).
#[derive(Debug, PartialEq, Eq)]
struct Refused {
    sku: String,
    reason: String,
}

/// Most characters of a receiver's reason kept for the log.
const REASON_CHARS_MAX: usize = 200;

/// The SKUs a 2xx answer to a push says were not taken. The receiver's word is in its
/// body: `{"refused": ["A", {"sku": "B", "reason": "..."}]}`. Any other body (none, not
/// JSON, JSON without `refused`) takes the whole batch, so a receiver that answers a
/// bare 200 or 204 keeps working; except a 207 Multi-Status, which says some items
/// failed: without a readable list the answer cannot say which, so it takes nothing
/// (the batch goes again: pushes are absolute levels). A `refused` that is not such a
/// list takes nothing either.
fn refused_in(status: u16, body: &[u8]) -> Result<Vec<Refused>, String> {
    let unlisted = || {
        format!(
            "HTTP 207 without a \"refused\" list naming the items not taken: {}",
            super::excerpt(body)
        )
    };
    let value = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => value,
        Err(_) if status == 207 => return Err(unlisted()),
        Err(_) => return Ok(Vec::new()),
    };
    // `null`, `0` or `false`: nothing refused, however the receiver spells it.
    let none =
        |r: &serde_json::Value| r.is_null() || r.as_u64() == Some(0) || r.as_bool() == Some(false);
    let Some(listed) = value.get("refused").filter(|r| !none(r)) else {
        return if status == 207 {
            Err(unlisted())
        } else {
            Ok(Vec::new())
        };
    };
    let malformed = || {
        format!(
            "the answer's \"refused\" is not a list of SKUs or {{\"sku\", \"reason\"}} objects: {}",
            super::excerpt(body)
        )
    };
    let entries = listed.as_array().ok_or_else(malformed)?;
    entries
        .iter()
        .map(|entry| {
            let (sku, reason) = match entry {
                serde_json::Value::String(sku) => (sku.as_str(), ""),
                serde_json::Value::Object(fields) => (
                    fields
                        .get("sku")
                        .and_then(|s| s.as_str())
                        .ok_or_else(malformed)?,
                    fields.get("reason").and_then(|r| r.as_str()).unwrap_or(""),
                ),
                _ => return Err(malformed()),
            };
            Ok(Refused {
                sku: sku.to_string(),
                reason: reason.chars().take(REASON_CHARS_MAX).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str) -> PushItem {
        PushItem {
            sku: sku.to_string(),
            quantity: 3,
            expected: None,
            caused_at: 0,
            repair: false,
        }
    }

    fn acked(status: u16, body: &str) -> Result<Vec<usize>, String> {
        let channel = Webhook {
            name: "erp".into(),
            base_url: "http://127.0.0.1:9".into(),
            keys: Vec::new(),
            batch_max: BATCH_MAX,
            next_id: Default::default(),
            boot: 0,
        };
        let items = [item("A"), item("B"), item("C")];
        match channel.push_reply(status, &HeaderMap::new(), body.as_bytes(), &items) {
            PushReply::Accepted { acked, .. } => Ok(acked),
            PushReply::Failed { reason, .. } => Err(reason),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_2xx_takes_all_but_the_skus_its_body_refuses() {
        assert_eq!(acked(200, ""), Ok(vec![0, 1, 2]));
        assert_eq!(acked(204, ""), Ok(vec![0, 1, 2]));
        assert_eq!(acked(200, "OK"), Ok(vec![0, 1, 2]));
        assert_eq!(acked(200, r#"{"ok": true}"#), Ok(vec![0, 1, 2]));
        assert_eq!(acked(200, r#"{"refused": []}"#), Ok(vec![0, 1, 2]));
        assert_eq!(acked(200, r#"{"refused": null}"#), Ok(vec![0, 1, 2]));
        assert_eq!(acked(200, r#"{"refused": 0}"#), Ok(vec![0, 1, 2]));
        assert_eq!(acked(200, r#"{"refused": false}"#), Ok(vec![0, 1, 2]));
        assert_eq!(acked(200, r#"{"refused": ["B"]}"#), Ok(vec![0, 2]));
        assert_eq!(
            acked(
                207,
                r#"{"refused": [{"sku": "A", "reason": "unknown SKU"}, "C", "not-sent"]}"#
            ),
            Ok(vec![1])
        );
    }

    #[test]
    fn an_answer_that_cannot_say_what_it_refused_takes_nothing() {
        for (status, body) in [
            (207, ""),
            (207, r#"{"ok": true}"#),
            (207, "some failed"),
            (200, r#"{"refused": "B"}"#),
            (200, r#"{"refused": [{"reason": "no sku"}]}"#),
            (200, r#"{"refused": [7]}"#),
            (200, r#"{"refused": 2}"#),
            (207, r#"{"refused": []}"#),
            (207, r#"{"refused": ["not-sent"]}"#),
        ] {
            let reason = acked(status, body).expect_err(body);
            assert!(reason.contains("refused"), "{status} {body}: {reason}");
        }
    }
}
