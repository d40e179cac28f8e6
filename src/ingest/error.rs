//! The engine's errors as the HTTP edge answers them (`crate::refusal::ApiError`): busy
//! and storage failures are 503 with `Retry-After`, an invalid event 400.

use hyper::StatusCode;

use crate::engine::{EngineError, RETRY_AFTER_SECS};
pub use crate::refusal::ApiError;

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Busy { .. } => ApiError {
                retry_after: Some(RETRY_AFTER_SECS),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    format!("{e}; retry shortly"),
                )
            },
            EngineError::Stopped => ApiError {
                retry_after: Some(RETRY_AFTER_SECS),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string())
            },
            EngineError::Invalid { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", e.to_string())
            }
            // The shard refuses work until it has reopened its storage (`engine/shard.rs`):
            // unavailable, not a request's fault; nothing of the request was acknowledged.
            EngineError::Storage(_) => ApiError {
                retry_after: Some(RETRY_AFTER_SECS),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_failed",
                    format!("{e}; nothing of this request was acknowledged: retry it once the shard serves again (see /healthz)"),
                )
            },
            EngineError::DataDir(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                e.to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::api::error_response;

    #[test]
    fn a_busy_shard_is_503_with_retry_after() {
        let error = ApiError::from(EngineError::Busy { shard: 1 });
        let response = error_response(&error);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers()["retry-after"],
            RETRY_AFTER_SECS.to_string().as_str()
        );
        let body: serde_json::Value = serde_json::from_slice(&error.body()).unwrap();
        assert_eq!(body["error"], "busy");
    }
}
