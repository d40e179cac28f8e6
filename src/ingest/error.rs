//! API errors: a status, a machine-readable code, a message for people, and the field at
//! fault. Every refusal the HTTP edge sends goes through here, so all look alike:
//! `{"error": "<code>", "message": "...", "field": "events[3].qty"}`.

use hyper::StatusCode;

use crate::engine::{EngineError, RETRY_AFTER_SECS};

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for `Retry-After`, on 503.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 400 for an invalid field; the code names the field.
    pub fn field(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ApiError {
        let field = field.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: format!("{field}: {}", message.into()),
            field: Some(field),
            retry_after: None,
        }
    }

    pub fn body(&self) -> Vec<u8> {
        let mut body = serde_json::json!({"error": self.code, "message": self.message});
        if let Some(field) = &self.field {
            body["field"] = serde_json::Value::String(field.clone());
        }
        serde_json::to_vec(&body).expect("json serializes")
    }
}

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
            // The shard refuses work until a restart recovers it from disk: unavailable,
            // not a request's fault; nothing of the request was acknowledged.
            EngineError::Storage(_) => ApiError {
                retry_after: Some(RETRY_AFTER_SECS),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_failed",
                    format!("{e}; nothing of this request was acknowledged. The shard refuses work until lockstep restarts and recovers from disk (see /healthz)"),
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
