//! The rules every typed JSON request body follows (training, staging, document
//! upload), in one place so the endpoints cannot drift apart:
//!
//! - the body must be a JSON object ([`json_object`], [`parse_object`]);
//! - a field the API does not define is rejected by name, so typos fail loudly;
//!   when several are present the alphabetically first is reported
//!   ([`first_unknown`], [`reject_unknown`]) — deterministic whatever
//!   serde_json's map order;
//! - a JSON `null` is treated exactly like an absent field ([`field`]);
//! - integer fields must be JSON integers: `3.0`, `1e2`, strings and booleans are
//!   rejected even when their value would be in range ([`u32_in`]);
//! - string limits count Unicode scalar values, and "non-empty" means not empty
//!   after trimming whitespace; the value itself is kept untrimmed ([`text`]).
//!
//! Errors are [`RequestError`]s naming the field by dotted path from the top of
//! the body (`hyperparameters.epochs`, `exports[3].invoice_id`). The document
//! upload keeps its own error type (it has upload-only variants) and uses the
//! error-free primitives: [`json_object`], [`first_unknown`], [`field`].

use std::fmt;
use std::ops::RangeInclusive;

use serde_json::{Map, Value};

/// Why a request body was rejected. Every variant maps to a client error.
///
/// Field names are dotted paths from the top of the body (`hyperparameters.momentum`);
/// array items are indexed (`document_ids[2]`) and metric values keyed
/// (`metrics.loss`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The body is not JSON, or not a JSON object.
    InvalidJson(String),
    /// A field that is not part of the API, or not part of this event type.
    UnknownField(String),
    /// A required field is absent (or `null`).
    MissingField(String),
    /// A field is present but its value is not acceptable.
    InvalidField { field: String, reason: String },
    /// An identity field (`prepared_by`, `posted_by`, …) names someone other than
    /// the authenticated caller: who acts comes from the token, never the body.
    NotTheCaller(String),
}

impl RequestError {
    /// The offending field's dotted path, if the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidJson(_) => None,
            Self::UnknownField(f)
            | Self::MissingField(f)
            | Self::InvalidField { field: f, .. }
            | Self::NotTheCaller(f) => Some(f),
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidJson(e) => write!(f, "request body is not a valid JSON object: {e}"),
            Self::UnknownField(name) => write!(f, "unknown field `{name}`"),
            Self::MissingField(name) => write!(f, "missing required field `{name}`"),
            Self::InvalidField { field, reason } => write!(f, "invalid field `{field}`: {reason}"),
            Self::NotTheCaller(name) => write!(
                f,
                "`{name}` must name the authenticated caller: the identity comes from the token \
                 (its `sub`), not from the request body; send your own subject or leave the field out"
            ),
        }
    }
}

impl std::error::Error for RequestError {}

/// The message of a body that is JSON but not an object.
const NOT_AN_OBJECT: &str = "expected a JSON object at the top level";

/// The body as a JSON object, or why it is not one (serde_json's message, or
/// "expected a JSON object at the top level").
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(NOT_AN_OBJECT.to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// [`json_object`], as a [`RequestError::InvalidJson`].
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    json_object(body).map_err(RequestError::InvalidJson)
}

/// Like [`parse_object`], but an empty or all-whitespace body is `{}`.
pub fn parse_optional_object(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    parse_object(body)
}

/// `InvalidJson` for a value that should have been the top-level object.
pub fn not_an_object() -> RequestError {
    RequestError::InvalidJson(NOT_AN_OBJECT.to_owned())
}

/// The alphabetically first key not in `known` (a `null` value counts: the name
/// itself is wrong).
pub fn first_unknown<'a>(obj: &'a Map<String, Value>, known: &[&str]) -> Option<&'a String> {
    obj.keys().filter(|k| !known.contains(&k.as_str())).min()
}

/// Rejects [`first_unknown`], reported with its path under `prefix` (see [`join`]).
pub fn reject_unknown(
    obj: &Map<String, Value>,
    known: &[&str],
    prefix: &str,
) -> Result<(), RequestError> {
    match first_unknown(obj, known) {
        Some(unknown) => Err(RequestError::UnknownField(join(prefix, unknown))),
        None => Ok(()),
    }
}

/// `prefix.name`, or `name` alone under an empty prefix (or one ending in a dot).
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('.') {
        format!("{prefix}{name}")
    } else {
        format!("{prefix}.{name}")
    }
}

/// The field's value, with `null` treated as absent.
pub fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

pub fn missing(path: impl Into<String>) -> RequestError {
    RequestError::MissingField(path.into())
}

pub fn invalid(path: impl Into<String>, reason: impl Into<String>) -> RequestError {
    RequestError::InvalidField {
        field: path.into(),
        reason: reason.into(),
    }
}

/// A string, not blank, at most `max_chars` chars if given; kept untrimmed.
pub fn text(value: &Value, path: &str, max_chars: Option<usize>) -> Result<String, RequestError> {
    let Value::String(s) = value else {
        return Err(invalid(path, "must be a string"));
    };
    if s.trim().is_empty() {
        return Err(invalid(path, "must not be empty"));
    }
    if let Some(max) = max_chars {
        if s.chars().count() > max {
            return Err(invalid(path, format!("must be at most {max} characters")));
        }
    }
    Ok(s.clone())
}

/// A required [`text`] field: `MissingField(path)` when absent or `null`.
pub fn required_text(
    obj: &Map<String, Value>,
    name: &str,
    path: &str,
    max_chars: Option<usize>,
) -> Result<String, RequestError> {
    match field(obj, name) {
        None => Err(missing(path)),
        Some(v) => text(v, path, max_chars),
    }
}

/// A JSON integer within `range`.
pub fn u32_in(value: &Value, path: &str, range: RangeInclusive<u32>) -> Result<u32, RequestError> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            invalid(
                path,
                format!(
                    "must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test bodies are objects"),
        }
    }

    #[test]
    fn a_body_must_be_a_json_object() {
        assert_eq!(json_object(b"{\"a\":1}").unwrap(), obj(json!({"a": 1})));
        assert_eq!(json_object(b"[1]"), Err(NOT_AN_OBJECT.to_owned()));
        assert!(matches!(
            parse_object(b"{"),
            Err(RequestError::InvalidJson(_))
        ));
        assert_eq!(parse_object(b"null"), Err(not_an_object()));
    }

    #[test]
    fn an_empty_optional_body_is_an_empty_object() {
        assert_eq!(parse_optional_object(b" \n\t").unwrap(), Map::new());
        assert_eq!(parse_optional_object(b"").unwrap(), Map::new());
        assert_eq!(parse_optional_object(b"1"), Err(not_an_object()));
    }

    #[test]
    fn unknown_fields_are_reported_alphabetically_first_with_their_path() {
        let o = obj(json!({"zeta": 1, "known": 1, "beta": null}));
        assert_eq!(
            first_unknown(&o, &["known"]).map(String::as_str),
            Some("beta")
        );
        assert_eq!(first_unknown(&o, &["known", "beta", "zeta"]), None);
        assert_eq!(
            reject_unknown(&o, &["known"], "hp."),
            Err(RequestError::UnknownField("hp.beta".into()))
        );
        assert_eq!(
            reject_unknown(&o, &["known"], "exports[2]"),
            Err(RequestError::UnknownField("exports[2].beta".into()))
        );
    }

    #[test]
    fn null_is_absent() {
        let o = obj(json!({"a": null, "b": 0}));
        assert_eq!(field(&o, "a"), None);
        assert_eq!(field(&o, "b"), Some(&json!(0)));
        assert_eq!(field(&o, "c"), None);
    }

    #[test]
    fn text_is_a_non_blank_string_within_its_limit_kept_untrimmed() {
        assert_eq!(text(&json!(" é "), "p", Some(3)).unwrap(), " é ");
        assert_eq!(
            text(&json!("abcd"), "p", Some(3)),
            Err(invalid("p", "must be at most 3 characters"))
        );
        assert_eq!(
            text(&json!(" "), "p", None),
            Err(invalid("p", "must not be empty"))
        );
        assert_eq!(
            text(&json!(1), "p", None),
            Err(invalid("p", "must be a string"))
        );
        let o = obj(json!({"a": null}));
        assert_eq!(required_text(&o, "a", "x.a", None), Err(missing("x.a")));
    }

    #[test]
    fn integers_must_be_json_integers_in_range() {
        assert_eq!(u32_in(&json!(3), "n", 0..=10), Ok(3));
        for bad in [json!(3.0), json!(11), json!(-1), json!("3"), json!(true)] {
            assert_eq!(
                u32_in(&bad, "n", 0..=10),
                Err(invalid("n", "must be an integer from 0 to 10")),
                "{bad}"
            );
        }
    }
}
