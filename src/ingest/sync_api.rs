//! The onboarding endpoints: `GET /v1/channels` (each channel's first-sync state,
//! `propagate/first_sync.rs`), `GET /v1/channels/{name}/plan` (what approving it would
//! write), `POST /v1/channels/{name}/approve`, and `POST /v1/channels/{name}/import-levels`
//! (the channel's levels taken as counts, `propagate/level_import.rs`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use crate::ingest::api::{json_response, read_body, App, HttpResponse};
use crate::ingest::error::ApiError;
use crate::propagate::first_sync::Approved;
use crate::propagate::level_import;
use crate::propagate::reconcile::Reconciler;

/// Longest `by` an approval records.
const BY_BYTES_MAX: usize = 128;

/// 404 for a channel name no channel has.
pub fn unknown_channel(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_channel",
        format!("no channel named {name:?} is configured"),
    )
}

/// 502 for a channel whose reads failed.
pub fn channel_unreachable(name: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "channel_unreachable",
        format!("reading channel {name:?} failed: {reason}"),
    )
}

/// 409 for an action that writes to a channel still observing.
pub fn observing(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "channel_observing",
        format!(
            "channel {name:?} is observing: nothing is written to it before it is approved; \
             see GET /v1/channels/{name}/plan, then POST /v1/channels/{name}/approve"
        ),
    )
}

impl App {
    fn reconciler(&self, name: &str) -> Result<&Arc<Reconciler>, ApiError> {
        self.reconcilers
            .values()
            .find(|r| r.link.adapter.name() == name)
            .ok_or_else(|| unknown_channel(name))
    }

    /// Each channel's name, kind, state and its latest change.
    fn channel_json(&self, reconciler: &Reconciler) -> Value {
        let link = &reconciler.link;
        let name = link.adapter.name();
        let change = self.sync.current(name);
        json!({
            "name": name,
            "kind": self
                .config
                .channels
                .iter()
                .find(|c| c.name == name)
                .map(|c| format!("{:?}", c.kind).to_lowercase()),
            "sync": if link.pushing() { "pushing" } else { "observing" },
            "since": change.as_ref().map(|c| crate::clock::format_rfc3339(c.at)),
            "by": change.as_ref().map(|c| c.by.clone()),
            "why": change.as_ref().map(|c| c.why.clone()),
            "outbox_skus": link.outbox.len(),
        })
    }

    pub(crate) fn get_channels(&self) -> HttpResponse {
        let channels: Vec<Value> = self
            .reconcilers
            .values()
            .map(|r| self.channel_json(r))
            .collect();
        json_response(StatusCode::OK, &json!({ "channels": channels }))
    }

    /// Reads every listing the channel carries through its budget (a 10,000-listing store
    /// takes as long as its reads do) and answers what approving it would write.
    pub(crate) async fn get_plan(&self, name: &str) -> Result<HttpResponse, ApiError> {
        let reconciler = self.reconciler(name)?;
        let plan = reconciler
            .plan(&self.engine, &self.client)
            .await
            .map_err(|e| channel_unreachable(name, e))?;
        let mut answer = self.channel_json(reconciler);
        answer["plan"] = plan.json();
        Ok(json_response(StatusCode::OK, &answer))
    }

    /// Approves an observing channel; `{"by": "who"}` (optional) names who did, for the
    /// audit. Approving a channel that pushes already changes nothing (200).
    pub(crate) async fn post_approve(
        &self,
        name: &str,
        req: Request<Incoming>,
    ) -> Result<HttpResponse, ApiError> {
        let reconciler = self.reconciler(name)?;
        let body = read_body(req).await?;
        let by = approver(&body)?;
        let approved = self
            .sync
            .approve(name, &by)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_failed",
                    format!("the approval could not be stored, so it was not made: {e}"),
                )
            })?
            .expect("a configured channel is in the book");
        let mut answer = self.channel_json(reconciler);
        answer["approved"] = json!(approved == Approved::Now);
        Ok(json_response(StatusCode::OK, &answer))
    }
}

impl App {
    /// Reads the channel's level of every SKU the catalog maps to it and takes each as
    /// a count of what is available.
    pub(crate) async fn post_import_levels(&self, name: &str) -> Result<HttpResponse, ApiError> {
        let reconciler = self.reconciler(name)?;
        let rows = self.config.catalog_rows().map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "catalog_unreadable",
                e.to_string(),
            )
        })?;
        let mut skus: Vec<String> = rows
            .into_iter()
            .filter(|r| r.channel == name)
            .map(|r| r.sku)
            .collect();
        skus.sort();
        skus.dedup();
        if skus.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_catalog_rows",
                format!(
                    "the catalog maps no SKU to channel {name:?}, so there are no listings to \
                     read: add its rows (lockstep catalog discover) first"
                ),
            ));
        }
        let report =
            level_import::import_levels(&reconciler.link, &self.engine, &self.client, &skus)
                .await
                .map_err(|e| channel_unreachable(name, e))?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "channel": name, "report": report.json() }),
        ))
    }
}

/// `by` from an approval's body: empty body → "api".
fn approver(body: &[u8]) -> Result<String, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("api".to_string());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("body is not valid JSON: {e}"),
        )
    })?;
    match value.get("by") {
        None | Some(Value::Null) => Ok("api".to_string()),
        Some(Value::String(by))
            if !by.is_empty() && by.len() <= BY_BYTES_MAX && !by.chars().any(char::is_control) =>
        {
            Ok(by.clone())
        }
        Some(_) => Err(ApiError::field(
            "invalid_by",
            "by",
            format!("must be a string of 1 to {BY_BYTES_MAX} bytes without control characters"),
        )),
    }
}
