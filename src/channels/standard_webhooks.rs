//! Standard Webhooks signatures (standardwebhooks.com), both ways: `webhook-id`,
//! `webhook-timestamp` (Unix seconds) and `webhook-signature`, a space-separated list of
//! `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`. For the `webhook` kind the
//! key is the base64 part of a `whsec_` secret; BigCommerce's is its secret as it is
//! (`Key::raw`), Etsy's either form (`Key::lenient`): both sign the same way.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::clock::{Micros, MICROS_PER_SECOND};

/// How far a delivery's timestamp may be from our clock, either way. Bounds replays of a
/// captured delivery; the standard's own recommendation.
pub const TIMESTAMP_TOLERANCE_S: i64 = 5 * 60;

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header is absent or not text.
    #[error("missing or unreadable {0} header")]
    MissingHeader(&'static str),
    /// The timestamp is not a number, or too far from now.
    #[error("webhook-timestamp {0} is not within 5 minutes of now")]
    Timestamp(String),
    /// No signature in the header matches any of our secrets.
    #[error("no webhook-signature matches")]
    Mismatch,
}

/// A signing key: the bytes behind `whsec_...`.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl Key {
    /// Decodes a `whsec_` secret (validated by the config already).
    pub fn from_secret(secret: &str) -> Option<Key> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        B64.decode(encoded).ok().map(Key)
    }

    /// A key given as is (BigCommerce signs with the app's client secret's bytes).
    pub fn raw(secret: &str) -> Key {
        Key(secret.as_bytes().to_vec())
    }

    /// A `whsec_` secret decoded, any other secret as its bytes (Etsy's signing-secret
    /// form is unverified, CHANNELS.md §7).
    pub fn lenient(secret: &str) -> Key {
        match secret.strip_prefix("whsec_") {
            Some(_) => Key::from_secret(secret).unwrap_or_else(|| Key::raw(secret)),
            None => Key::raw(secret),
        }
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    /// The `webhook-signature` value for a delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            B64.encode(self.mac(id, &timestamp.to_string(), body))
        )
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, SignatureError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(SignatureError::MissingHeader(name))
}

/// Checks a delivery against every key (the current one, and the previous one during a
/// rotation). Returns the `webhook-id` and the timestamp in `Micros`.
pub fn verify(
    headers: &HeaderMap,
    body: &[u8],
    keys: &[Key],
    now: Micros,
) -> Result<(String, Micros), SignatureError> {
    let id = header(headers, "webhook-id")?;
    let timestamp = header(headers, "webhook-timestamp")?;
    let signatures = header(headers, "webhook-signature")?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::Timestamp(timestamp.to_string()))?;
    // `webhook-timestamp` is integer Unix seconds and a verifier compares it with its own
    // clock within a tolerance (Standard Webhooks specification, "Verifying webhook
    // authenticity": https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md).
    // Checked: the header is the sender's, and `i64::MIN` has no absolute value.
    let skew = (now / MICROS_PER_SECOND)
        .checked_sub(seconds)
        .and_then(i64::checked_abs);
    if skew.is_none_or(|s| s > TIMESTAMP_TOLERANCE_S) {
        return Err(SignatureError::Timestamp(timestamp.to_string()));
    }
    let given: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| B64.decode(s).ok())
        .collect();
    for key in keys {
        let expected = key.mac(id, timestamp, body);
        // Compare against every signature: the sender may be mid-rotation too.
        if given
            .iter()
            .any(|g| bool::from(g.as_slice().ct_eq(&expected)))
        {
            return Ok((id.to_string(), seconds * MICROS_PER_SECOND));
        }
    }
    Err(SignatureError::Mismatch)
}

/// `verify` as the webhook endpoint answers it: 401 `bad_signature` naming the problem.
pub fn verify_delivery(
    headers: &HeaderMap,
    body: &[u8],
    keys: &[Key],
    now: Micros,
) -> Result<(String, Micros), crate::refusal::ApiError> {
    verify(headers, body, keys, now).map_err(|e| {
        crate::refusal::ApiError::new(
            hyper::StatusCode::UNAUTHORIZED,
            "bad_signature",
            e.to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn matches_the_standards_published_example() {
        // The example of the Standard Webhooks specification.
        let key = Key::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let now = 1614265330 * MICROS_PER_SECOND + 10;
        let h = headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            &format!("v1,bm9wZQ== {sig}"),
        );
        assert_eq!(
            verify(&h, body, std::slice::from_ref(&key), now).unwrap().0,
            "msg_p5jXN8AQM9LWM0D4loKWxJek"
        );

        let forged = headers("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, "v1,bm9wZQ==");
        assert_eq!(
            verify(&forged, body, std::slice::from_ref(&key), now),
            Err(SignatureError::Mismatch)
        );
        let tampered = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify(&h, tampered, std::slice::from_ref(&key), now),
            Err(SignatureError::Mismatch)
        );
        let late = now + 6 * 60 * MICROS_PER_SECOND;
        assert!(matches!(
            verify(&h, body, &[key], late),
            Err(SignatureError::Timestamp(_))
        ));
    }

    #[test]
    fn a_previous_key_is_accepted_during_rotation() {
        let old = Key::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let new = Key::from_secret("whsec_c2Vjb25kLXNlY3JldC1vZi0yNC1ieXRlcyE=").unwrap();
        let sig = old.sign("m1", 100, b"{}");
        let h = headers("m1", 100, &sig);
        assert!(verify(&h, b"{}", &[new.clone(), old], 100 * MICROS_PER_SECOND).is_ok());
        assert!(verify(&h, b"{}", &[new], 100 * MICROS_PER_SECOND).is_err());
    }
}
