//! The console's SKU search: by prefix, a walk of the shards' stored heads in SKU order
//! from the prefix that ends at the first SKU past it; by substring, a walk of each
//! shard's names in memory (`Engine::find_skus`), merged. Either way a page is the first
//! `SKUS_PAGE` in SKU order after the last one shown.

use hyper::StatusCode;
use minijinja::context;
use serde_json::{json, Value};

use super::{form_pairs, page, value_of, Access};
use crate::core::event::SKU_BYTES_MAX;
use crate::ingest::api::{App, HttpResponse};

/// SKUs a search page shows.
const SKUS_PAGE: usize = 50;

/// A SKU's line on the search page.
fn sku_row(sku: &str, head: &crate::core::records::HeadRecord) -> Value {
    json!({"sku": sku, "on_hand": head.on_hand, "committed": head.committed,
           "available": head.on_hand - head.committed})
}

impl App {
    /// SKUs starting with, or containing, `q`, `SKUS_PAGE` a page in SKU order, after
    /// `after`.
    pub(super) async fn skus_page(&self, access: &Access, query: &str) -> HttpResponse {
        let pairs = match form_pairs(query) {
            Ok(pairs) => pairs,
            Err(e) => return page(e.status, "text/plain; charset=utf-8", e.message),
        };
        let param = |name: &str| value_of(&pairs, name);
        let (q, after) = (param("q"), param("after"));
        // Nothing longer than a SKU can match; a longer text is a mistake, said so.
        if let Some((name, text)) = [("q", &q), ("after", &after)]
            .into_iter()
            .find(|(_, text)| text.len() > SKU_BYTES_MAX)
        {
            return page(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                format!(
                    "{name} is {} bytes; a SKU is at most {SKU_BYTES_MAX}",
                    text.len()
                ),
            );
        }
        let contains = match param("match").as_str() {
            "" | "prefix" => false,
            "contains" => true,
            other => {
                return page(
                    StatusCode::BAD_REQUEST,
                    "text/plain; charset=utf-8",
                    format!("match is `prefix` or `contains`, not {other:?}"),
                )
            }
        };
        let found = if contains {
            self.skus_containing(&q, &after).await
        } else {
            self.skus_starting(&q, &after)
        };
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    e,
                )
            }
        };
        let next = (found.len() == SKUS_PAGE)
            .then(|| {
                found
                    .last()
                    .and_then(|s| s["sku"].as_str().map(str::to_string))
            })
            .flatten();
        let (csrf, signed_in) = self.who(access);
        let html = self.console.render(
            "skus.html",
            context! {
                title => "SKUs", signed_in, csrf, q, next,
                matching => if contains { "contains" } else { "prefix" },
                skus => minijinja::Value::from_serialize(&found),
            },
        );
        page(StatusCode::OK, "text/html; charset=utf-8", html)
    }

    /// Up to `SKUS_PAGE` SKUs whose name contains `needle` (ASCII letters in either
    /// case), after `after`, with their stock: the shards walk their names in memory.
    async fn skus_containing(&self, needle: &str, after: &str) -> Result<Vec<Value>, String> {
        let names = self
            .engine
            .find_skus(needle, after, SKUS_PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let mut found = Vec::with_capacity(names.len());
        for sku in names {
            // A SKU the shard knows but whose first batch is not durable yet has no head.
            if let Some(head) = self.engine.head(&sku).map_err(|e| e.to_string())? {
                found.push(sku_row(&sku, &head));
            }
        }
        Ok(found)
    }

    /// Up to `SKUS_PAGE` SKUs starting with `prefix`, after `after` (the page before's
    /// last), with their stock: a walk of the shards' stored heads in SKU order from the
    /// prefix, which ends at the first SKU past it.
    fn skus_starting(&self, prefix: &str, after: &str) -> Result<Vec<Value>, String> {
        let mut found = Vec::new();
        let mut from = if after.is_empty() {
            prefix.to_string()
        } else {
            after.to_string()
        };
        // `heads_after` is exclusive: the prefix itself, when it is a SKU, comes first.
        if after.is_empty() && !prefix.is_empty() {
            if let Some(head) = self.engine.head(prefix).map_err(|e| e.to_string())? {
                found.push(sku_row(prefix, &head));
            }
        }
        while found.len() < SKUS_PAGE {
            let heads = self
                .engine
                .heads_after((!from.is_empty()).then_some(from.as_str()), SKUS_PAGE)
                .map_err(|e| e.to_string())?;
            let Some((last, _)) = heads.last() else {
                break;
            };
            let last = last.clone();
            for (sku, head) in &heads {
                if !sku.starts_with(prefix) || found.len() == SKUS_PAGE {
                    return Ok(found);
                }
                found.push(sku_row(sku, head));
            }
            from = last;
        }
        Ok(found)
    }
}
