//! Body signatures as Shopify and WooCommerce make them: base64 of HMAC-SHA256 over the
//! raw body bytes, keyed with a shared secret, in one header. Checked in constant time
//! against the current secret and, during a rotation, the previous one.
//!
//! - Shopify: `X-Shopify-Hmac-Sha256`, base64 of HMAC-SHA256 of the raw body with the
//!   app's client secret (https://shopify.dev/docs/apps/build/webhooks/delivery-structure;
//!   verification steps: https://shopify.dev/apps/webhooks/https, "Verify a webhook").
//! - WooCommerce: `X-WC-Webhook-Signature`, base64 of HMAC-SHA256 of the payload with the
//!   webhook's `secret` (https://woocommerce.github.io/woocommerce-rest-api-docs/#webhooks,
//!   "Delivery/payload").
//!
//! A refusal is the shared `crate::refusal::ApiError` (401 with the header named).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use hyper::StatusCode;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::refusal::ApiError;

/// base64(HMAC-SHA256(key, body)).
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    B64.encode(mac.finalize().into_bytes())
}

/// Checks `header` of `headers` against every key; 401 naming the header otherwise.
pub fn verify(
    headers: &HeaderMap,
    header: &'static str,
    body: &[u8],
    keys: &[Vec<u8>],
) -> Result<(), ApiError> {
    let Some(given) = headers.get(header).and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_signature",
            format!("the {header} header is missing"),
        ));
    };
    let Ok(given) = B64.decode(given.trim()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            format!("{header} is not base64"),
        ));
    };
    for key in keys {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(body);
        let expected = mac.finalize().into_bytes();
        if bool::from(expected.as_slice().ct_eq(&given)) {
            return Ok(());
        }
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        format!("{header} does not match the body signed with the channel's secret"),
    ))
}

/// HMAC-SHA256 of the concatenated `parts`.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Lowercase hex of bytes (TikTok Shop's signatures).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` (base64 or hex, as `encodings` allow) equals `expected`, in constant
/// time.
pub fn matches(given: &str, expected: &[u8], base64: bool, hex_too: bool) -> bool {
    let given = given.trim();
    let b64 = base64
        .then(|| B64.decode(given).ok())
        .flatten()
        .is_some_and(|g| bool::from(g.as_slice().ct_eq(expected)));
    let hexed = hex_too
        && bool::from(
            given
                .to_ascii_lowercase()
                .as_bytes()
                .ct_eq(hex(expected).as_bytes()),
        );
    b64 || hexed
}

/// The header `name` of a delivery as text, or 401 `missing_signature` naming it.
pub fn required_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_signature",
                format!("the {name} header is missing"),
            )
        })
}

/// 401 `bad_signature`: the delivery's credential does not match.
pub fn mismatch(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        format!("{what} does not match the channel's secret"),
    )
}

/// A shared-secret header configured on both sides as `Name: value` (Amazon's
/// EventBridge connection, BigCommerce's registered hook headers): checks it in constant
/// time. The config validated the form; an unparsable one refuses everything.
pub fn check_shared_header(headers: &HeaderMap, configured: &str) -> Result<(), ApiError> {
    let Some((name, value)) = configured.split_once(':') else {
        return Err(mismatch("the auth header"));
    };
    let (name, value) = (name.trim(), value.trim());
    let given = required_header(headers, name)?;
    if bool::from(given.trim().as_bytes().ct_eq(value.as_bytes())) {
        Ok(())
    } else {
        Err(mismatch(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_and_the_previous_secret_pass_and_nothing_else() {
        let body = br#"{"id":1}"#;
        let keys = vec![b"new".to_vec(), b"old".to_vec()];
        let mut headers = HeaderMap::new();
        for key in [b"new".as_slice(), b"old"] {
            headers.insert("x-sig", sign(key, body).parse().unwrap());
            verify(&headers, "x-sig", body, &keys).unwrap();
        }
        headers.insert("x-sig", sign(b"other", body).parse().unwrap());
        assert_eq!(
            verify(&headers, "x-sig", body, &keys).unwrap_err().code,
            "bad_signature"
        );
        headers.insert("x-sig", sign(b"new", body).parse().unwrap());
        assert!(
            verify(&headers, "x-sig", b"{\"id\":2}", &keys).is_err(),
            "another body"
        );
        assert_eq!(
            verify(&HeaderMap::new(), "x-sig", body, &keys)
                .unwrap_err()
                .code,
            "missing_signature"
        );
    }
}
