//! A refused request: a status, a machine-readable code, a message for people, and the
//! field at fault. Every refusal lockstep answers is one (the HTTP edge's, and a channel
//! adapter's of a delivery it cannot take), so all look alike:
//! `{"error": "<code>", "message": "...", "field": "events[3].qty"}`. It sits at the
//! bottom of the house (it imports nothing of the crate): channels refuse deliveries
//! with it, and the edge sends it (`ingest/error.rs` maps the engine's errors onto it).

use hyper::StatusCode;

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
