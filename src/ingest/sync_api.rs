//! The onboarding endpoints: `GET /v1/channels` (each channel's first-sync state,
//! `propagate/sync_state.rs`), `GET /v1/channels/{name}/plan` (what approving it would
//! write), `POST /v1/channels/{name}/approve`, `/pause` and `/resume` (the operator's
//! actions on a channel's state), and `POST /v1/channels/{name}/import-levels`
//! (the channel's levels taken as counts, `propagate/level_import.rs`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use crate::ingest::api::{json_response, read_body, App, HttpResponse};
use crate::ingest::error::ApiError;
use crate::propagate::level_import;
use crate::propagate::reconcile::Reconciler;
use crate::propagate::sync_state::{Action, Changed, SyncState};

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

/// 409 for an action that writes to a channel lockstep does not write to now.
pub fn not_pushing(name: &str, state: SyncState) -> ApiError {
    let (code, what) = match state {
        SyncState::Paused => (
            "channel_paused",
            format!("channel {name:?} is paused: nothing is written to it until POST /v1/channels/{name}/resume"),
        ),
        _ => (
            "channel_observing",
            format!(
                "channel {name:?} is observing: nothing is written to it before it is approved; \
                 see GET /v1/channels/{name}/plan, then POST /v1/channels/{name}/approve"
            ),
        ),
    };
    ApiError::new(StatusCode::CONFLICT, code, what)
}

/// Refused SKUs a channel's answer names, at most (`refused_skus` counts them all).
pub(crate) const REFUSED_NAMES_MAX: usize = 10;

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
        let (refused, refused_names) = link.outbox.refused_waiting(REFUSED_NAMES_MAX);
        json!({
            "name": name,
            "kind": self
                .config
                .channels
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.kind.name()),
            "sync": link.sync.borrow().as_str(),
            "since": change.as_ref().map(|c| crate::clock::format_rfc3339(c.at)),
            "by": change.as_ref().map(|c| c.by.clone()),
            "why": change.as_ref().map(|c| c.why.clone()),
            "outbox_skus": link.outbox.len(),
            "refused_skus": refused,
            "refused": refused_names,
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

    /// An operator's action on a channel (approve, pause, resume); `{"by": "who"}`
    /// (optional) names who, for the audit. An action that finds the channel in the
    /// state it makes changes nothing (200, `"changed": false`); one that does not apply
    /// to the channel's state is a 409 saying why.
    pub(crate) async fn post_action(
        &self,
        name: &str,
        action: Action,
        req: Request<Incoming>,
    ) -> Result<HttpResponse, ApiError> {
        let reconciler = self.reconciler(name)?;
        let body = read_body(req).await?;
        let by = approver(&body)?;
        let changed = self
            .sync
            .act(name, action, &by)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_failed",
                    format!("the change could not be stored, so it was not made: {e}"),
                )
            })?
            .expect("a configured channel is in the book");
        if let Changed::Refused(why) = changed {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "wrong_channel_state",
                why,
            ));
        }
        let mut answer = self.channel_json(reconciler);
        answer["changed"] = json!(changed == Changed::Now);
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
                .map_err(|stopped| {
                    // The pages before the one that stopped it were counted: said, so
                    // the caller knows importing again is safe and what it will add.
                    let so_far = stopped.taken_so_far();
                    let mut error = match stopped.cause {
                        level_import::ImportFailure::Read(reason) => {
                            channel_unreachable(name, reason)
                        }
                        level_import::ImportFailure::Engine(e) => ApiError::from(e),
                    };
                    error.message = format!("{}; {so_far}", error.message);
                    error
                })?;
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
    let value = crate::channels::strict_json::body(body)?;
    if !value.is_object() {
        return Err(ApiError::field(
            "invalid_body",
            "body",
            "must be a JSON object, as {\"by\": \"who\"}, or empty",
        ));
    }
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
