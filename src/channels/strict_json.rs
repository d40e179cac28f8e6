//! JSON bodies read as written, or refused: a name that appears twice in one object.
//!
//! RFC 8259, section 4 (https://www.rfc-editor.org/rfc/rfc8259#section-4): "The names
//! within an object SHOULD be unique", and when they are not, "the behavior of software
//! that receives such an object is unpredictable": what `{"qty": 1, "qty": 100}` means is
//! left to the reader. serde_json keeps the last;
//! another reader on the way (a proxy, the sender's own log, a validator) may keep the
//! first. For a stock movement that is two different events behind one body, so lockstep
//! refuses it (`duplicate_key`, naming the name) instead of choosing. Channels' own
//! payloads are read as serde_json reads them: the vendors write them, and
//! `payload.rs` only takes the fields it needs.

use hyper::StatusCode;
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use crate::refusal::ApiError;

/// A request body as JSON: 400 `duplicate_key` for a name twice in one object (the
/// message names it and where), 400 `malformed_json` for anything that is not JSON.
pub fn body(body: &[u8]) -> Result<Value, ApiError> {
    from_slice(body).map_err(|e| {
        if is_duplicate(&e) {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "duplicate_key",
                format!("body is ambiguous: {e}; send each name once"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("body is not valid JSON: {e}"),
            )
        }
    })
}

/// Parses `body` as JSON, refusing an object that names a key twice. A duplicate is a
/// `serde_json::Error` of category `Data` (`is_duplicate`); syntax errors are as usual.
pub fn from_slice(body: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Unambiguous>(body).map(|u| u.0)
}

/// Whether a `from_slice` error is a duplicate key (the only data error it makes: any
/// JSON text is otherwise a `Value`; syntax, end of input, depth and number errors are
/// other categories). Holds while serde_json's `arbitrary_precision` feature is off: with
/// it, numbers would reach `visit_map` as a private one-entry map
/// (`reads_what_serde_json_reads` would fail).
pub fn is_duplicate(error: &serde_json::Error) -> bool {
    error.classify() == serde_json::error::Category::Data
}

/// A `Value` whose objects each name every key once.
struct Unambiguous(Value);

impl<'de> Deserialize<'de> for Unambiguous {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Unambiguous, D::Error> {
        deserializer.deserialize_any(ValueVisitor).map(Unambiguous)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity, so every f64 it yields is a Number.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Unambiguous(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            match map.entry(key) {
                Entry::Occupied(taken) => {
                    return Err(A::Error::custom(format_args!(
                        "the name {:?} appears twice in one object",
                        taken.key()
                    )))
                }
                Entry::Vacant(free) => {
                    free.insert(access.next_value::<Unambiguous>()?.0);
                }
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_serde_json_reads() {
        let text = br#"{"a": [1, -2, 3.5, "x", true, null, {"b": {}}], "c": 18446744073709551615}"#;
        assert_eq!(
            from_slice(text).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
    }

    #[test]
    fn refuses_a_name_twice_in_one_object_at_any_depth() {
        for text in [
            &br#"{"qty": 1, "qty": 100}"#[..],
            br#"{"events": [{"sku": "A", "sku": "B"}]}"#,
        ] {
            let error = from_slice(text).unwrap_err();
            assert!(is_duplicate(&error), "{error}");
            assert!(error.to_string().contains("appears twice"), "{error}");
        }
        // The same name in two objects is fine.
        assert!(from_slice(br#"[{"a": 1}, {"a": 2}]"#).is_ok());
        // A syntax error is not a duplicate.
        assert!(!is_duplicate(&from_slice(b"{\"a\": ").unwrap_err()));
    }
}
