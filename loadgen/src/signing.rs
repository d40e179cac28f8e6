//! Standard Webhooks signatures as a channel computes them: `v1,` + base64 of
//! HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"), the key being the base64
//! part of a `whsec_` secret.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Decodes a `whsec_` secret into its key bytes.
pub fn key_of(secret: &str) -> Vec<u8> {
    B64.decode(secret.trim_start_matches("whsec_"))
        .expect("a whsec_ secret holds base64")
}

/// The signature value for one delivery.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Checks a `webhook-signature` header value (several space-separated signatures allowed).
pub fn verify(key: &[u8], id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    let expected = sign(key, id, ts, body);
    header.split_whitespace().any(|s| s == expected)
}

/// Headers for a signed delivery of `body` with id `id`, stamped now.
pub fn signed_headers(secret: &str, id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    signed_headers_at(secret, id, now, body)
}

/// Headers for a signed delivery stamped at `timestamp` (Unix seconds).
pub fn signed_headers_at(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            sign(&key_of(secret), id, timestamp, body),
        ),
        ("content-type", "application/json".to_string()),
    ]
}

/// Shopify's and WooCommerce's webhook signature: base64 of HMAC-SHA256 over the raw
/// body, keyed with the secret's bytes as they are.
pub fn body_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    B64.encode(mac.finalize().into_bytes())
}
