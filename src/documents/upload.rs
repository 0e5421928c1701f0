//! Parsing and validation of the `POST /v1/documents` request body.
//!
//! The body is a JSON object:
//!
//! ```json
//! { "filename": "notes.md", "content_type": "text/markdown",
//!   "content": "# Title\n...", "chunk_size": 1000, "chunk_overlap": 100 }
//! ```
//!
//! Invariants of a successfully parsed [`Upload`]:
//! - `filename` is non-blank and at most [`MAX_FILENAME_CHARS`] characters;
//! - `bytes` are valid UTF-8 (every supported type is textual);
//! - `MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE` when the size came from the
//!   request, and `chunk_overlap < chunk_size / 2` whenever either came from the request.
//!
//! A JSON `null` is treated exactly like an absent field, so clients that serialise
//! every optional field (`"chunk_size": null`) get the defaults instead of an error.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::request_body::{field, first_unknown, json_object};

/// Longest accepted `filename`, in Unicode scalar values.
pub const MAX_FILENAME_CHARS: usize = 255;
/// Smallest accepted `chunk_size`, in characters.
pub const MIN_CHUNK_SIZE: usize = 100;
/// Largest accepted `chunk_size`, in characters.
pub const MAX_CHUNK_SIZE: usize = 20_000;

/// Every field the body may contain; anything else is rejected so typos
/// (`chunksize`) fail loudly instead of silently using defaults.
pub const KNOWN_FIELDS: [&str; 6] = [
    "filename",
    "content_type",
    "content",
    "content_base64",
    "chunk_size",
    "chunk_overlap",
];

/// Standard alphabet, padding optional: clients differ on whether they pad.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an upload body was rejected. Every variant maps to a client error (4xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadError {
    /// The body is not JSON, or not a JSON object.
    InvalidJson(String),
    /// The object contains a field that is not part of the API (the field's name).
    UnknownField(String),
    /// A required field is absent (or `null`).
    MissingField(&'static str),
    /// A field is present but its value is not acceptable.
    InvalidField { field: &'static str, reason: String },
    /// `content_base64` is not valid standard base64.
    BadBase64(String),
    /// `content_type` names a media type we cannot extract text from (as given).
    UnsupportedType(String),
}

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidJson(e) => write!(f, "request body is not a valid JSON object: {e}"),
            Self::UnknownField(name) => write!(f, "unknown field `{name}`"),
            Self::MissingField(name) => write!(f, "missing required field `{name}`"),
            Self::InvalidField { field, reason } => write!(f, "invalid field `{field}`: {reason}"),
            Self::BadBase64(e) => write!(f, "`content_base64` is not valid base64: {e}"),
            Self::UnsupportedType(t) => write!(f, "unsupported content type `{t}`"),
        }
    }
}

impl std::error::Error for UploadError {}

/// The document formats we can extract text from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    PlainText,
    Markdown,
    Html,
    Json,
    Csv,
}

impl ContentType {
    /// Parses a media type, ignoring parameters (`; charset=utf-8`), surrounding
    /// whitespace and case. Aliases map to one variant (`text/x-markdown` → Markdown).
    pub fn parse(media_type: &str) -> Option<Self> {
        let essence = media_type.split(';').next().unwrap_or("").trim();
        let essence = essence.to_ascii_lowercase();
        match essence.as_str() {
            "text/plain" => Some(Self::PlainText),
            "text/markdown" | "text/x-markdown" => Some(Self::Markdown),
            "text/html" | "application/xhtml+xml" => Some(Self::Html),
            "application/json" => Some(Self::Json),
            "text/csv" => Some(Self::Csv),
            _ => None,
        }
    }

    /// The canonical media type (what we store and echo back), without parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlainText => "text/plain",
            Self::Markdown => "text/markdown",
            Self::Html => "text/html",
            Self::Json => "application/json",
            Self::Csv => "text/csv",
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialised as its canonical media type string, e.g. `"text/markdown"`.
impl serde::Serialize for ContentType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Read back from its media type (the form [`Upload`] crosses to the key's object in).
impl<'de> serde::Deserialize<'de> for ContentType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown media type {s:?}")))
    }
}

/// A validated upload, ready for [`super::process`].
///
/// Serialisable, so the Worker parses it once and the key's object applies it
/// (`commands::Command`); the bytes cross as a string, since they are UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Upload {
    pub filename: String,
    pub content_type: ContentType,
    /// The raw document bytes (decoded from base64 if sent that way); valid UTF-8.
    #[serde(with = "utf8_bytes")]
    pub bytes: Vec<u8>,
    pub chunk_size: usize,
    pub chunk_overlap: usize,
}

/// Serde for bytes known to be UTF-8: a JSON string, not an array of numbers.
mod utf8_bytes {
    use serde::{de, ser, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(bytes).map_err(ser::Error::custom)?;
        serializer.serialize_str(text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        String::deserialize(deserializer)
            .map(String::into_bytes)
            .map_err(de::Error::custom)
    }
}

/// Parses and validates a `POST /v1/documents` body.
///
/// `default_chunk_size` / `default_overlap` are used for absent fields and are not
/// themselves validated (they are operator configuration). When the client sets
/// `chunk_size` but not `chunk_overlap`, the default overlap is clamped below half of
/// the client's size rather than rejected, since the client never asked for it.
///
/// Unknown fields are reported before anything else, alphabetically first if several
/// (whatever serde_json's map order), so the error is deterministic. Duplicate
/// keys follow serde_json: the last occurrence wins.
pub fn parse_upload(
    body: &[u8],
    default_chunk_size: usize,
    default_overlap: usize,
) -> Result<Upload, UploadError> {
    let obj = json_object(body).map_err(UploadError::InvalidJson)?;
    if let Some(unknown) = first_unknown(&obj, &KNOWN_FIELDS) {
        return Err(UploadError::UnknownField(unknown.clone()));
    }

    let filename = parse_filename(&obj)?;
    let content_type = parse_content_type(&obj)?;
    let bytes = parse_content(&obj)?;
    let (chunk_size, chunk_overlap) = parse_chunking(&obj, default_chunk_size, default_overlap)?;

    Ok(Upload {
        filename,
        content_type,
        bytes,
        chunk_size,
        chunk_overlap,
    })
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, UploadError> {
    match field(obj, name) {
        None => Err(UploadError::MissingField(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(name, "must be a string")),
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> UploadError {
    UploadError::InvalidField {
        field,
        reason: reason.into(),
    }
}

fn parse_filename(obj: &Map<String, Value>) -> Result<String, UploadError> {
    let name = required_str(obj, "filename")?;
    if name.trim().is_empty() {
        return Err(invalid("filename", "must not be empty"));
    }
    if name.chars().count() > MAX_FILENAME_CHARS {
        return Err(invalid(
            "filename",
            format!("must be at most {MAX_FILENAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

fn parse_content_type(obj: &Map<String, Value>) -> Result<ContentType, UploadError> {
    let given = required_str(obj, "content_type")?;
    ContentType::parse(given).ok_or_else(|| UploadError::UnsupportedType(given.to_owned()))
}

/// Exactly one of `content` (text) and `content_base64` (bytes) must be present.
fn parse_content(obj: &Map<String, Value>) -> Result<Vec<u8>, UploadError> {
    match (field(obj, "content"), field(obj, "content_base64")) {
        (Some(_), Some(_)) => Err(invalid(
            "content",
            "send exactly one of `content` and `content_base64`, not both",
        )),
        (None, None) => Err(UploadError::MissingField("content")),
        (Some(Value::String(text)), None) => Ok(text.clone().into_bytes()),
        (Some(_), None) => Err(invalid("content", "must be a string")),
        (None, Some(Value::String(encoded))) => decode_base64(encoded),
        (None, Some(_)) => Err(invalid("content_base64", "must be a string")),
    }
}

/// Decodes standard base64, tolerating missing padding and ASCII whitespace anywhere
/// (MIME-style line wrapping), then insists on UTF-8 because every supported type is
/// textual and extraction works on `&str`.
fn decode_base64(encoded: &str) -> Result<Vec<u8>, UploadError> {
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = BASE64
        .decode(compact.as_bytes())
        .map_err(|e| UploadError::BadBase64(e.to_string()))?;
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(invalid(
            "content_base64",
            format!("decoded content is not valid UTF-8: {e}"),
        ));
    }
    Ok(bytes)
}

/// A non-negative JSON integer; floats (even `100.0`), negatives and strings are rejected.
fn integer(value: &Value) -> Option<u64> {
    value.as_u64()
}

fn parse_chunking(
    obj: &Map<String, Value>,
    default_size: usize,
    default_overlap: usize,
) -> Result<(usize, usize), UploadError> {
    let size = match field(obj, "chunk_size") {
        None => None,
        Some(v) => {
            let range = MIN_CHUNK_SIZE as u64..=MAX_CHUNK_SIZE as u64;
            match integer(v).filter(|n| range.contains(n)) {
                // In range, so the cast is lossless even on 32-bit targets.
                Some(n) => Some(n as usize),
                None => {
                    return Err(invalid(
                        "chunk_size",
                        format!("must be an integer from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}"),
                    ))
                }
            }
        }
    };
    let chunk_size = size.unwrap_or(default_size);
    // Exclusive upper bound for the overlap: `overlap < chunk_size / 2`.
    let overlap_bound = chunk_size / 2;

    let chunk_overlap = match field(obj, "chunk_overlap") {
        Some(v) => match integer(v) {
            Some(n) if n < overlap_bound as u64 => n as usize,
            _ => {
                return Err(invalid(
                    "chunk_overlap",
                    format!(
                        "must be an integer at least 0 and less than half of chunk_size \
                         (less than {overlap_bound})"
                    ),
                ))
            }
        },
        // The client chose the size but not the overlap: fit the default to it.
        None if size.is_some() => default_overlap.min(overlap_bound.saturating_sub(1)),
        None => default_overlap,
    };
    Ok((chunk_size, chunk_overlap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Upload, UploadError> {
        parse_upload(body.as_bytes(), 1000, 100)
    }

    fn invalid_field(err: UploadError) -> &'static str {
        match err {
            UploadError::InvalidField { field, .. } => field,
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn minimal_text_upload_uses_defaults() {
        let up =
            parse(r#"{"filename":"a.txt","content_type":"text/plain","content":"hi"}"#).unwrap();
        assert_eq!(
            up,
            Upload {
                filename: "a.txt".into(),
                content_type: ContentType::PlainText,
                bytes: b"hi".to_vec(),
                chunk_size: 1000,
                chunk_overlap: 100,
            }
        );
    }

    #[test]
    fn content_type_parameters_and_case_are_ignored() {
        let up =
            parse(r#"{"filename":"a","content_type":" Text/HTML ; charset=UTF-8","content":"x"}"#)
                .unwrap();
        assert_eq!(up.content_type, ContentType::Html);
    }

    #[test]
    fn content_type_aliases_map_to_canonical_names() {
        let cases = [
            ("text/plain", ContentType::PlainText, "text/plain"),
            ("text/markdown", ContentType::Markdown, "text/markdown"),
            ("text/x-markdown", ContentType::Markdown, "text/markdown"),
            ("text/html", ContentType::Html, "text/html"),
            ("application/xhtml+xml", ContentType::Html, "text/html"),
            ("application/json", ContentType::Json, "application/json"),
            ("text/csv", ContentType::Csv, "text/csv"),
        ];
        for (given, ct, canonical) in cases {
            assert_eq!(ContentType::parse(given), Some(ct), "{given}");
            assert_eq!(ct.as_str(), canonical);
            assert_eq!(ct.to_string(), canonical);
        }
    }

    #[test]
    fn content_type_serializes_as_media_type_string() {
        assert_eq!(
            serde_json::to_string(&ContentType::Markdown).unwrap(),
            r#""text/markdown""#
        );
    }

    #[test]
    fn unsupported_type_reports_the_given_type() {
        let err = parse(r#"{"filename":"a","content_type":"application/pdf","content":"x"}"#)
            .unwrap_err();
        assert_eq!(err, UploadError::UnsupportedType("application/pdf".into()));
    }

    #[test]
    fn non_object_or_broken_json_is_invalid_json() {
        for body in ["", "[]", "\"x\"", "42", "{", "{\"filename\":}"] {
            assert!(
                matches!(parse(body), Err(UploadError::InvalidJson(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn unknown_field_is_reported_by_name() {
        let err =
            parse(r#"{"filename":"a","content_type":"text/plain","content":"x","chunksize":5}"#)
                .unwrap_err();
        assert_eq!(err, UploadError::UnknownField("chunksize".into()));
    }

    #[test]
    fn missing_required_fields_are_named() {
        assert_eq!(
            parse(r#"{"content_type":"text/plain","content":"x"}"#).unwrap_err(),
            UploadError::MissingField("filename")
        );
        assert_eq!(
            parse(r#"{"filename":"a","content":"x"}"#).unwrap_err(),
            UploadError::MissingField("content_type")
        );
        assert_eq!(
            parse(r#"{"filename":"a","content_type":"text/plain"}"#).unwrap_err(),
            UploadError::MissingField("content")
        );
    }

    #[test]
    fn null_is_treated_as_absent() {
        assert_eq!(
            parse(r#"{"filename":null,"content_type":"text/plain","content":"x"}"#).unwrap_err(),
            UploadError::MissingField("filename")
        );
        let up = parse(
            r#"{"filename":"a","content_type":"text/plain","content":"x",
                "content_base64":null,"chunk_size":null,"chunk_overlap":null}"#,
        )
        .unwrap();
        assert_eq!((up.chunk_size, up.chunk_overlap), (1000, 100));
    }

    #[test]
    fn filename_must_be_a_non_empty_string_of_at_most_255_chars() {
        for name in [
            "\"\"",
            "\"   \"",
            "7",
            format!("\"{}\"", "é".repeat(256)).as_str(),
        ] {
            let body =
                format!(r#"{{"filename":{name},"content_type":"text/plain","content":"x"}}"#);
            assert_eq!(
                invalid_field(parse(&body).unwrap_err()),
                "filename",
                "{name}"
            );
        }
        let body = format!(
            r#"{{"filename":"{}","content_type":"text/plain","content":"x"}}"#,
            "é".repeat(255)
        );
        assert!(parse(&body).is_ok());
    }

    #[test]
    fn both_content_fields_are_rejected() {
        let err = parse(
            r#"{"filename":"a","content_type":"text/plain","content":"x","content_base64":"eA=="}"#,
        )
        .unwrap_err();
        assert_eq!(invalid_field(err), "content");
    }

    #[test]
    fn content_must_be_a_string() {
        let err =
            parse(r#"{"filename":"a","content_type":"text/plain","content":["x"]}"#).unwrap_err();
        assert_eq!(invalid_field(err), "content");
    }

    #[test]
    fn base64_content_is_decoded_with_or_without_padding_and_with_whitespace() {
        for encoded in [
            "aGVsbG8gd29ybGQ=",
            "aGVsbG8gd29ybGQ",
            "aGVs\nbG8g\r\nd29y bGQ=",
        ] {
            let body = format!(
                r#"{{"filename":"a","content_type":"text/plain","content_base64":{}}}"#,
                serde_json::to_string(encoded).unwrap()
            );
            assert_eq!(parse(&body).unwrap().bytes, b"hello world", "{encoded:?}");
        }
    }

    #[test]
    fn invalid_base64_is_bad_base64() {
        for encoded in ["not base64!", "a", "aGVsbG8-", "aGVsbG8_"] {
            let body = format!(
                r#"{{"filename":"a","content_type":"text/plain","content_base64":"{encoded}"}}"#
            );
            assert!(
                matches!(parse(&body), Err(UploadError::BadBase64(_))),
                "{encoded:?}"
            );
        }
    }

    #[test]
    fn base64_that_is_not_utf8_is_an_invalid_field() {
        // 0xff 0xfe 0xfd
        let err = parse(r#"{"filename":"a","content_type":"text/plain","content_base64":"//79"}"#)
            .unwrap_err();
        assert_eq!(invalid_field(err), "content_base64");
    }

    #[test]
    fn chunk_size_must_be_an_integer_in_range() {
        for size in ["99", "20001", "-1", "100.0", "1.5", "\"500\"", "true"] {
            let body = format!(
                r#"{{"filename":"a","content_type":"text/plain","content":"x","chunk_size":{size}}}"#
            );
            assert_eq!(
                invalid_field(parse(&body).unwrap_err()),
                "chunk_size",
                "{size}"
            );
        }
        for size in [100, 20000] {
            let body = format!(
                r#"{{"filename":"a","content_type":"text/plain","content":"x","chunk_size":{size}}}"#
            );
            assert_eq!(parse(&body).unwrap().chunk_size, size);
        }
    }

    #[test]
    fn chunk_overlap_must_be_below_half_the_chunk_size() {
        let body = |overlap: &str| {
            format!(
                r#"{{"filename":"a","content_type":"text/plain","content":"x",
                    "chunk_size":200,"chunk_overlap":{overlap}}}"#
            )
        };
        for overlap in ["100", "101", "-1", "2.5", "\"1\""] {
            assert_eq!(
                invalid_field(parse(&body(overlap)).unwrap_err()),
                "chunk_overlap",
                "{overlap}"
            );
        }
        assert_eq!(parse(&body("99")).unwrap().chunk_overlap, 99);
        assert_eq!(parse(&body("0")).unwrap().chunk_overlap, 0);
    }

    #[test]
    fn chunk_overlap_alone_is_checked_against_the_default_size() {
        let body = |overlap: u32| {
            format!(
                r#"{{"filename":"a","content_type":"text/plain","content":"x","chunk_overlap":{overlap}}}"#
            )
        };
        assert_eq!(parse(&body(499)).unwrap().chunk_overlap, 499);
        assert_eq!(
            invalid_field(parse(&body(500)).unwrap_err()),
            "chunk_overlap"
        );
    }

    #[test]
    fn default_overlap_is_clamped_to_a_client_chosen_size() {
        let up = parse_upload(
            br#"{"filename":"a","content_type":"text/plain","content":"x","chunk_size":100}"#,
            1000,
            200,
        )
        .unwrap();
        assert_eq!((up.chunk_size, up.chunk_overlap), (100, 49));
    }

    #[test]
    fn deeply_nested_bodies_are_invalid_json_not_a_crash() {
        for body in [
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!(r#"{{"filename":{}}}"#, "[".repeat(100_000)),
            format!(
                r#"{{"content":{}1{}}}"#,
                "{\"a\":".repeat(100_000),
                "}".repeat(100_000)
            ),
        ] {
            assert!(matches!(
                parse_upload(body.as_bytes(), 1000, 100),
                Err(UploadError::InvalidJson(_))
            ));
        }
    }

    #[test]
    fn errors_display_a_readable_message() {
        assert_eq!(
            UploadError::UnknownField("x".into()).to_string(),
            "unknown field `x`"
        );
        assert_eq!(
            UploadError::MissingField("filename").to_string(),
            "missing required field `filename`"
        );
        assert_eq!(
            invalid("chunk_size", "too big").to_string(),
            "invalid field `chunk_size`: too big"
        );
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Field values, odd and huge ones included.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("null".to_owned()),
                Just("true".to_owned()),
                Just("[]".to_owned()),
                Just("{}".to_owned()),
                Just("18446744073709551616".to_owned()),
                Just("-9223372036854775809".to_owned()),
                Just("1e308".to_owned()),
                Just("1e-400".to_owned()),
                Just("-0".to_owned()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                (0u64..30_000).prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|f| serde_json::Value::from(f).to_string()),
                any::<String>().prop_map(|s| serde_json::Value::from(s).to_string()),
                // base64-ish, with whitespace, padding and URL-safe letters mixed in.
                "[A-Za-z0-9+/=_\\- \n]{0,200}".prop_map(|s| serde_json::Value::from(s).to_string()),
                " ?(text|application)/[a-z+-]{0,12}(; ?[a-z]+=[A-Za-z0-9-]{0,8})?"
                    .prop_map(|s| serde_json::Value::from(s).to_string()),
                "[ \t]{0,2}.{0,300}".prop_map(|s| serde_json::Value::from(s).to_string()),
            ]
        }

        fn field_name() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(KNOWN_FIELDS.to_vec()).prop_map(str::to_owned),
                "[a-z_]{0,12}",
            ]
        }

        fn body() -> impl Strategy<Value = String> {
            prop::collection::vec((field_name(), value()), 0..8).prop_map(|fields| {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str())))
                    .collect();
                format!("{{{}}}", parts.join(","))
            })
        }

        /// Mostly-valid uploads, so the checks after the unknown-field one run.
        fn plausible_body() -> impl Strategy<Value = String> {
            let json_str = |s: String| serde_json::Value::from(s).to_string();
            let filename = prop_oneof![
                3 => ".{1,300}".prop_map(json_str),
                1 => value(),
            ];
            let content_type = prop_oneof![
                3 => (
                    prop::sample::select(vec![
                        "text/plain", "TEXT/Markdown", "text/x-markdown", "text/html",
                        "application/xhtml+xml", "application/json", "text/csv",
                    ]),
                    "( ?; ?charset=[a-z0-9-]{0,8})?",
                )
                    .prop_map(move |(t, p)| json_str(format!("{t}{p}"))),
                1 => value(),
            ];
            let content = prop_oneof![
                3 => ".{0,400}".prop_map(move |t| ("content", json_str(t))),
                2 => prop::collection::vec(any::<u8>(), 0..300)
                    .prop_map(move |b| ("content_base64", json_str(BASE64.encode(b)))),
                2 => ".{0,300}".prop_map(move |t| ("content_base64", json_str(BASE64.encode(t)))),
                1 => value().prop_map(|v| ("content", v)),
                1 => value().prop_map(|v| ("content_base64", v)),
            ];
            (
                filename,
                content_type,
                content,
                prop::option::of(prop_oneof![
                    3 => (0u64..25_000).prop_map(|n| n.to_string()),
                    1 => value(),
                ]),
                prop::option::of(prop_oneof![
                    3 => (0u64..600).prop_map(|n| n.to_string()),
                    1 => value(),
                ]),
            )
                .prop_map(|(filename, ct, (content_field, content), size, overlap)| {
                    let mut s = format!(
                        r#"{{"filename":{filename},"content_type":{ct},"{content_field}":{content}"#
                    );
                    if let Some(size) = size {
                        s.push_str(&format!(r#","chunk_size":{size}"#));
                    }
                    if let Some(overlap) = overlap {
                        s.push_str(&format!(r#","chunk_overlap":{overlap}"#));
                    }
                    s.push('}');
                    s
                })
        }

        fn check(
            body: &str,
            default_size: usize,
            default_overlap: usize,
        ) -> Result<(), TestCaseError> {
            let Ok(up) = parse_upload(body.as_bytes(), default_size, default_overlap) else {
                return Ok(());
            };
            prop_assert!(!up.filename.trim().is_empty());
            prop_assert!(up.filename.chars().count() <= MAX_FILENAME_CHARS);
            prop_assert!(std::str::from_utf8(&up.bytes).is_ok());
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let given = |f: &str| v.get(f).is_some_and(|x| !x.is_null());
            if given("chunk_size") {
                prop_assert!((MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&up.chunk_size));
            }
            if given("chunk_size") || given("chunk_overlap") {
                prop_assert!(up.chunk_overlap < up.chunk_size / 2);
            }
            // What was accepted can be processed without a panic.
            let _ = crate::documents::process(&up);
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..600)) {
                let _ = parse_upload(&body, 1000, 100);
            }

            #[test]
            fn odd_field_values_never_panic(body in body()) {
                check(&body, 1000, 100)?;
            }

            #[test]
            fn plausible_uploads_keep_the_invariants(
                body in plausible_body(),
                default_size in prop_oneof![Just(0usize), Just(usize::MAX), 100usize..20_000],
                default_overlap in prop_oneof![Just(0usize), Just(usize::MAX), 0usize..10_000],
            ) {
                // Operator defaults are not validated here; only the client's values are.
                let _ = parse_upload(body.as_bytes(), default_size, default_overlap);
                check(&body, 1000, 100)?;
            }
        }
    }
}
