//! Body signatures as Shopify and WooCommerce make them: base64 of HMAC-SHA256 over the
//! raw body bytes, keyed with a shared secret, in one header. Checked in constant time
//! against the current secret and, during a rotation, the previous one.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use hyper::StatusCode;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ingest::error::ApiError;

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
