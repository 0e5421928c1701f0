//! Request fingerprint: SHA-256 over `METHOD \n route-template \n payload`, where
//! the payload is a JSON body's canonical text, or for any other body a raw
//! domain of its own: its `Content-Type` and its bytes.
//!
//! The key and the credentials are never part of it: the same payload sent by the
//! same tenant with the same key is the same request, whoever's token carried it.
//!
//! # Canonical JSON
//!
//! A body declared JSON that serde_json accepts is hashed in canonical form
//! ([`canonical_json_text`]): object keys sorted by code point at every depth (a
//! duplicated key keeps its last value, as serde_json does), insignificant
//! whitespace removed, strings decoded and re-escaped the way serde_json writes
//! them (so `"\u00e9"` and `"é"` are the same string).
//!
//! **Numbers keep their literal's exact text.** They are never read through a
//! float, so `100000000000000000001` and `100000000000000000000` (which collapse
//! to one `f64`) stay different requests. The flip side is that different
//! spellings of one value differ too: `1`, `1.0`, `1e0`, `1E0` and `10e-1` are five
//! fingerprints, and so are `0` and `-0`. A client that retries resends the same
//! bytes, so the spelling is stable where it matters; deciding that two
//! spellings mean the same number is the handler's business, not the key's.
//!
//! A body that is not JSON (or not declared JSON, or nested deeper than
//! serde_json's recursion limit of 128) is hashed as raw bytes.
//!
//! # Raw bodies
//!
//! A raw body's payload starts with a NUL byte, which canonical JSON text never
//! starts with, so no raw body shares a fingerprint with a JSON one: bytes equal
//! to the canonical text of an earlier JSON body under the same key are another
//! request (the origin would get other bytes and another `Content-Type`), not a
//! replay. The JSON payload is left as it was before raw bodies had a domain of
//! their own, so fingerprints stored for JSON bodies stay valid.
//!
//! A raw body is forwarded with its `Content-Type`, which tells the origin how
//! to read the bytes, so it is part of the payload ([`normalized_content_type`]);
//! a request without one is distinct from every request with one, an empty one
//! included. A JSON body's `Content-Type` is not: the command reads the JSON,
//! whatever type declared it.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;

/// Lowercase hex SHA-256 of a request's identity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// `is_json` says the command reads the body as JSON; if it then parses, it
    /// is hashed in canonical form, otherwise (or for any other body) as raw
    /// bytes together with `content_type`, the request's `Content-Type` as sent
    /// (see the module doc).
    pub fn compute(
        method: &str,
        route: &str,
        body: &[u8],
        is_json: bool,
        content_type: Option<&str>,
    ) -> Self {
        let mut h = Sha256::new();
        h.update(method.as_bytes());
        h.update(b"\n");
        h.update(route.as_bytes());
        h.update(b"\n");
        match is_json.then(|| canonical_json_text(body)).flatten() {
            Some(canonical) => h.update(canonical.as_bytes()),
            None => {
                // The raw domain: NUL, then the content type (absent, or
                // present with its length), then the bytes.
                h.update(b"\0raw\0");
                match content_type.map(normalized_content_type) {
                    None => h.update([0]),
                    Some(ct) => {
                        h.update([1]);
                        h.update((ct.len() as u64).to_be_bytes());
                        h.update(ct.as_bytes());
                    }
                }
                h.update(body);
            }
        }
        Fingerprint(hex(&h.finalize()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `Content-Type` value as a raw body's fingerprint reads it: the media type
/// (before the first `;`) without the blanks around it and in lowercase (media
/// types are case-insensitive), then, if any follow, `;` and the parameters as
/// sent without the blanks around them (a parameter's value may be
/// case-sensitive, e.g. a multipart `boundary`). `Text/Plain ; charset=UTF-8`
/// reads `text/plain;charset=UTF-8`; a `charset=utf-8` is another value.
pub fn normalized_content_type(value: &str) -> String {
    let blank = |c: char| c == ' ' || c == '\t';
    let (media, params) = value.split_once(';').unwrap_or((value, ""));
    let mut out = media.trim_matches(blank).to_ascii_lowercase();
    let params = params.trim_matches(blank);
    if !params.is_empty() {
        out.push(';');
        out.push_str(params);
    }
    out
}

/// Lowercase hex SHA-256 of `bytes` (64 chars): the crate's one content digest
/// (document hashes, data set lines, rendered export files).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Canonical JSON of an already parsed [`Value`]: object keys sorted (by code
/// point) at every depth, no insignificant whitespace, numbers as serde_json holds
/// them (so an integer beyond `u64`/`i64` has already become an `f64`; request
/// fingerprints use [`canonical_json_text`], which keeps the literal). Keys are sorted here
/// explicitly rather than relying on `serde_json::Map`'s order, which a feature
/// elsewhere in the dependency tree (`preserve_order`) could change.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(val, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The canonical form of a JSON text (see the module doc), or `None` when serde_json
/// does not accept it (syntax, invalid UTF-8, a lone surrogate, a number out of
/// `f64` range, nesting at or beyond its recursion limit of 128).
///
/// serde_json validates first, so the acceptance set (and the depth bound that
/// keeps the recursion below safe) is exactly serde_json's; the walk that follows
/// only has to find token boundaries, and still answers `None` rather than
/// panicking on anything unexpected.
pub fn canonical_json_text(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Validated>(body).ok()?;
    let text = std::str::from_utf8(body).ok()?;
    let mut parser = Parser { text, pos: 0 };
    let node = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != text.len() {
        return None;
    }
    let mut out = String::with_capacity(body.len());
    node.write(&mut out);
    Some(out)
}

/// Accepts any JSON value through `deserialize_any`, so serde_json checks
/// everything (string escapes and UTF-8 included) and its recursion limit applies.
struct Validated;

impl<'de> Deserialize<'de> for Validated {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Validated)
    }
}

impl<'de> Visitor<'de> for Validated {
    type Value = Validated;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_str<E>(self, _: &str) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_unit<E>(self) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Validated, A::Error> {
        while seq.next_element::<Validated>()?.is_some() {}
        Ok(Validated)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Validated, A::Error> {
        while map.next_entry::<Validated, Validated>()?.is_some() {}
        Ok(Validated)
    }
}

/// Deeper than serde_json's limit (which validation already enforced): a guard
/// that keeps the recursive walk bounded whatever happens to that limit.
const MAX_DEPTH: usize = 128;

enum Node<'a> {
    /// Written as is: a number literal, `true`, `false`, `null`, or a string
    /// literal (quotes included) without escapes.
    Raw(&'a str),
    /// A string that had escapes, decoded; re-escaped when written.
    Str(String),
    Array(Vec<Node<'a>>),
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl Node<'_> {
    fn write(&self, out: &mut String) {
        match self {
            Node::Raw(s) => out.push_str(s),
            Node::Str(s) => write_json_string(s, out),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Node::Object(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// serde_json's escaping: `"`, `\\` and control characters; everything else as is.
fn write_json_string(s: &str, out: &mut String) {
    out.push_str(&Value::String(s.to_owned()).to_string());
}

/// A walk over text serde_json has accepted.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.skip_ws();
        (self.peek()? == b).then(|| self.pos += 1)
    }

    fn value(&mut self, depth: usize) -> Option<Node<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_ws();
        match self.peek()? {
            b'{' => {
                self.pos += 1;
                let mut entries = Vec::new();
                self.skip_ws();
                if self.peek()? == b'}' {
                    self.pos += 1;
                } else {
                    loop {
                        self.skip_ws();
                        let key = self.string()?;
                        self.eat(b':')?;
                        let value = self.value(depth + 1)?;
                        entries.push((key, value));
                        self.skip_ws();
                        match self.peek()? {
                            b',' => self.pos += 1,
                            b'}' => {
                                self.pos += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                // Stable, so among equal keys the last occurrence ends its run.
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                let mut deduped: Vec<(Cow<'a, str>, Node<'a>)> = Vec::with_capacity(entries.len());
                for entry in entries {
                    match deduped.last_mut() {
                        Some(last) if last.0 == entry.0 => *last = entry,
                        _ => deduped.push(entry),
                    }
                }
                Some(Node::Object(deduped))
            }
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek()? == b']' {
                    self.pos += 1;
                } else {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.skip_ws();
                        match self.peek()? {
                            b',' => self.pos += 1,
                            b']' => {
                                self.pos += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                Some(Node::Array(items))
            }
            b'"' => {
                let start = self.pos;
                let decoded = self.string()?;
                Some(match decoded {
                    Cow::Borrowed(_) => Node::Raw(self.text.get(start..self.pos)?),
                    Cow::Owned(s) => Node::Str(s),
                })
            }
            _ => {
                // A number literal or true/false/null: up to the next delimiter.
                let start = self.pos;
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.pos += 1;
                }
                let token = self.text.get(start..self.pos)?;
                (!token.is_empty()).then_some(Node::Raw(token))
            }
        }
    }

    /// A string literal at `pos`: borrowed content when it has no escapes,
    /// else decoded by serde_json.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.pos;
        let bytes = self.text.as_bytes();
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            match *bytes.get(i)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                _ => i += 1,
            }
        }
        self.pos = i + 1;
        if escaped {
            serde_json::from_str::<String>(self.text.get(start..self.pos)?)
                .ok()
                .map(Cow::Owned)
        } else {
            self.text.get(start + 1..i).map(Cow::Borrowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_is_lowercase_hex_of_the_digest() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn fp(body: &str) -> Fingerprint {
        Fingerprint::compute("POST", "/v1/documents", body.as_bytes(), true, None)
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        assert_eq!(fp(r#"{"a":1,"b":2}"#), fp("{ \"b\":2,\n \"a\":1 }"));
        assert_eq!(
            fp(r#"{"x":{"z":[1,{"q":true,"p":null}],"y":"s"}}"#),
            fp(r#"{ "x" : { "y":"s", "z":[ 1, {"p":null, "q":true} ] } }"#)
        );
    }

    #[test]
    fn values_matter() {
        assert_ne!(fp(r#"{"a":1}"#), fp(r#"{"a":2}"#));
        assert_ne!(fp(r#"{"a":"1"}"#), fp(r#"{"a":1}"#));
        assert_ne!(fp(r#"{"a":[1,2]}"#), fp(r#"{"a":[2,1]}"#));
        assert_ne!(fp(r#"{"a":null}"#), fp(r#"{}"#));
    }

    #[test]
    fn method_and_route_matter() {
        let body = br#"{"a":1}"#;
        let a = Fingerprint::compute("POST", "/v1/documents", body, true, None);
        assert_ne!(
            a,
            Fingerprint::compute("PUT", "/v1/documents", body, true, None)
        );
        assert_ne!(
            a,
            Fingerprint::compute("POST", "/v1/other", body, true, None)
        );
    }

    #[test]
    fn non_json_bodies_are_hashed_as_bytes() {
        let a = Fingerprint::compute("POST", "/f", b"{ \"a\":1}", false, None);
        let b = Fingerprint::compute("POST", "/f", b"{\"a\":1}", false, None);
        assert_ne!(a, b);
        let c = Fingerprint::compute("POST", "/f", b"not json", true, None);
        assert_eq!(
            c,
            Fingerprint::compute("POST", "/f", b"not json", false, None)
        );
    }

    #[test]
    fn a_raw_body_equal_to_the_canonical_text_of_a_json_body_is_another_request() {
        for body in [
            r#"{"a":1}"#,
            "[]",
            r#""s""#,
            "42",
            "null",
            r#"{"a":[1,{"b":"é"}]}"#,
        ] {
            assert_eq!(canonical_json_text(body.as_bytes()).as_deref(), Some(body));
            let json = Fingerprint::compute("POST", "/f", body.as_bytes(), true, None);
            for content_type in [
                Some("text/plain"),
                Some("application/json"),
                Some("application/octet-stream"),
                None,
            ] {
                let raw = Fingerprint::compute("POST", "/f", body.as_bytes(), false, content_type);
                assert_ne!(json, raw, "{body} as {content_type:?}");
            }
        }
    }

    #[test]
    fn a_raw_bodys_content_type_is_part_of_its_fingerprint() {
        let raw = |ct| Fingerprint::compute("POST", "/f", b"hello", false, ct);
        let distinct = [
            raw(Some("text/plain")),
            raw(Some("application/octet-stream")),
            raw(Some("text/plain; charset=utf-8")),
            raw(Some("text/plain; charset=UTF-8")),
            raw(Some("")),
            raw(None),
        ];
        for (i, a) in distinct.iter().enumerate() {
            for b in &distinct[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Normalised: the media type's case and the blanks around it and the
        // parameters do not matter.
        assert_eq!(raw(Some("Text/Plain")), raw(Some("text/plain")));
        assert_eq!(
            raw(Some(" text/plain ; charset=UTF-8 ")),
            raw(Some("text/plain;charset=UTF-8"))
        );
        assert_eq!(raw(Some("text/plain;")), raw(Some("text/plain")));
        // A body declared JSON that does not parse is a raw body with its type.
        let bad = b"{oops";
        assert_ne!(
            Fingerprint::compute("POST", "/f", bad, true, Some("application/json")),
            Fingerprint::compute("POST", "/f", bad, false, Some("text/plain"))
        );
        assert_eq!(
            Fingerprint::compute("POST", "/f", bad, true, Some("application/json")),
            Fingerprint::compute("POST", "/f", bad, false, Some("application/json"))
        );
    }

    #[test]
    fn a_json_bodys_fingerprint_ignores_the_content_type_and_is_unchanged() {
        let json = |body: &str, ct| Fingerprint::compute("POST", "/f", body.as_bytes(), true, ct);
        let a = json(r#"{"a":1,"b":[2]}"#, Some("application/json"));
        assert_eq!(
            a,
            json("{ \"b\": [2], \"a\": 1 }", Some("application/json"))
        );
        assert_eq!(
            a,
            json(
                r#"{"b":[2],"a":1}"#,
                Some("application/json; charset=utf-8")
            )
        );
        assert_eq!(a, json(r#"{"a":1,"b":[2]}"#, None));
        // The hashed input of a JSON body is what it was before raw bodies got
        // their own domain, so fingerprints stored for JSON bodies still match.
        assert_eq!(a.as_str(), sha256_hex(b"POST\n/f\n{\"a\":1,\"b\":[2]}"));
    }

    #[test]
    fn canonical_form_is_compact_and_sorted() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [1, 2.5, "é\n"], "a": {"d":1,"c":2} }"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":2,"d":1},"b":[1,2.5,"é\n"]}"#
        );
    }

    #[test]
    fn numbers_keep_their_exact_digits() {
        // Beyond u64/i64 serde_json falls back to f64: these pairs used to collapse.
        assert_ne!(
            fp(r#"{"n":100000000000000000001}"#),
            fp(r#"{"n":100000000000000000000}"#)
        );
        assert_ne!(
            fp(r#"{"n":18446744073709551617}"#),
            fp(r#"{"n":18446744073709551616}"#)
        );
        assert_ne!(
            fp(r#"{"n":-9223372036854775809}"#),
            fp(r#"{"n":-9223372036854775810}"#)
        );
        // Two decimals that round to the same f64.
        assert_ne!(fp(r#"{"n":0.1}"#), fp(r#"{"n":0.10000000000000001}"#));
        // The documented rule: the literal is kept, so these spellings differ.
        let spellings = ["1", "1.0", "1e0", "1E0", "1e+0", "10e-1", "0", "-0", "0.0"];
        for (i, a) in spellings.iter().enumerate() {
            for b in &spellings[i + 1..] {
                assert_ne!(
                    fp(&format!(r#"{{"n":{a}}}"#)),
                    fp(&format!(r#"{{"n":{b}}}"#)),
                    "{a} vs {b}"
                );
            }
        }
        // The same literal still matches whatever surrounds it.
        assert_eq!(
            fp(r#"{"n":100000000000000000001,"a":[1.50]}"#),
            fp("{ \"a\" : [ 1.50 ] ,\n\"n\":100000000000000000001 }")
        );
    }

    #[test]
    fn text_canonical_form_matches_the_value_form_for_plain_bodies() {
        for body in [
            r#"{ "b": [1, 2.5, "é\n", -3, 1e-7], "a": {"d":true,"c":null} }"#,
            r#"[{"z":{"y":{"x":[]}}}, {}, "", 0]"#,
            r#""just a string""#,
            "  42 ",
            r#"{"ctl":"\u0001\t\"\\\/","u":"\u00e9\ud83d\ude00","del":"\u007f"}"#,
        ] {
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(
                canonical_json_text(body.as_bytes()).as_deref(),
                Some(canonical_json(&v).as_str()),
                "{body}"
            );
        }
    }

    #[test]
    fn escapes_are_decoded_before_comparing() {
        assert_eq!(fp(r#"{"k":"\u00e9\/"}"#), fp(r#"{"k":"é/"}"#));
        assert_eq!(fp(r#"{"\u0062":1,"a":2}"#), fp(r#"{"a":2,"b":1}"#));
        assert_ne!(fp(r#"{"k":"a\nb"}"#), fp(r#"{"k":"a\\nb"}"#));
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_like_serde_json() {
        assert_eq!(fp(r#"{"a":1,"b":0,"a":2}"#), fp(r#"{"b":0,"a":2}"#));
        assert_ne!(fp(r#"{"a":1,"a":2}"#), fp(r#"{"a":1}"#));
        assert_eq!(
            canonical_json_text(br#"{"a":{"x":1},"a":[2]}"#).as_deref(),
            Some(r#"{"a":[2]}"#)
        );
    }

    #[test]
    fn what_serde_json_rejects_is_hashed_as_bytes() {
        for body in [
            "{\"a\":1} x",
            "{\"a\":01}",
            "[1,]",
            r#"{"s":"\ud800"}"#,
            "{\"n\":1e400}",
            "\"\u{1}\"",
            "",
        ] {
            assert_eq!(canonical_json_text(body.as_bytes()), None, "{body:?}");
            assert_eq!(
                fp(body),
                Fingerprint::compute("POST", "/v1/documents", body.as_bytes(), false, None)
            );
        }
        assert_eq!(canonical_json_text(b"[\"\xff\"]"), None);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(canonical_json_text(nested(127).as_bytes()).is_some());
        assert_eq!(canonical_json_text(nested(128).as_bytes()), None);
        for body in [
            nested(100_000),
            "[".repeat(100_000),
            "{\"a\":".repeat(100_000),
            format!("{}1{}", "{\"a\":[".repeat(50_000), "]}".repeat(50_000)),
        ] {
            assert_eq!(canonical_json_text(body.as_bytes()), None);
            assert_eq!(
                fp(&body),
                Fingerprint::compute("POST", "/v1/documents", body.as_bytes(), false, None)
            );
        }
    }

    #[test]
    fn fingerprint_is_lowercase_hex_sha256() {
        let f = fp("{}");
        assert_eq!(f.as_str().len(), 64);
        assert!(f
            .as_str()
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// A JSON number literal serde_json accepts (or, for huge exponents,
        /// rejects as out of range: then the body is hashed as bytes).
        fn number_literal() -> impl Strategy<Value = String> {
            "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?"
        }

        /// A number literal within `f64` range (exponent below 100).
        fn in_range_literal() -> impl Strategy<Value = String> {
            "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,2})?"
        }

        /// A JSON document as a tree whose objects keep their entry order (and
        /// may repeat keys), with numbers as literals.
        #[derive(Debug, Clone)]
        enum Doc {
            Lit(String),
            Str(String),
            Arr(Vec<Doc>),
            Obj(Vec<(String, Doc)>),
        }

        fn doc() -> impl Strategy<Value = Doc> {
            let leaf = prop_oneof![
                in_range_literal().prop_map(Doc::Lit),
                Just(Doc::Lit("true".into())),
                Just(Doc::Lit("null".into())),
                any::<String>().prop_map(Doc::Str),
                "[a-c\"\\\\/\n\u{1}é]{0,4}".prop_map(Doc::Str),
            ];
            leaf.prop_recursive(6, 64, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Doc::Arr),
                    prop::collection::vec(("[a-d\"é]{0,2}", inner), 0..6).prop_map(Doc::Obj),
                ]
            })
        }

        fn string_literal(s: &str, escape_all: bool) -> String {
            if !escape_all {
                return Value::String(s.to_owned()).to_string();
            }
            let mut out = String::from("\"");
            for unit in s.encode_utf16() {
                out.push_str(&format!("\\u{unit:04x}"));
            }
            out.push('"');
            out
        }

        /// Writes `d` with object entries in their order (`reverse` = the
        /// reversed order of distinct keys, keeping each key's last value), blank
        /// space `ws` between tokens, and every string char \u-escaped if `escape`.
        fn render(d: &Doc, reverse: bool, ws: &str, escape: bool) -> String {
            match d {
                Doc::Lit(l) => l.clone(),
                Doc::Str(s) => string_literal(s, escape),
                Doc::Arr(items) => {
                    let parts: Vec<String> = items
                        .iter()
                        .map(|i| render(i, reverse, ws, escape))
                        .collect();
                    format!("[{ws}{}{ws}]", parts.join(&format!("{ws},{ws}")))
                }
                Doc::Obj(entries) => {
                    let mut entries: Vec<&(String, Doc)> = entries.iter().collect();
                    if reverse {
                        // Last value per key, then the keys in reverse.
                        let mut last: Vec<&(String, Doc)> = Vec::new();
                        for e in entries {
                            last.retain(|x| x.0 != e.0);
                            last.push(e);
                        }
                        last.reverse();
                        entries = last;
                    }
                    let parts: Vec<String> = entries
                        .iter()
                        .map(|(k, v)| {
                            format!(
                                "{}{ws}:{ws}{}",
                                string_literal(k, escape),
                                render(v, reverse, ws, escape)
                            )
                        })
                        .collect();
                    format!("{{{ws}{}{ws}}}", parts.join(&format!("{ws},{ws}")))
                }
            }
        }

        fn fp(body: &str) -> Fingerprint {
            Fingerprint::compute("POST", "/r", body.as_bytes(), true, None)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..1000)) {
                let _ = Fingerprint::compute("POST", "/r", &body, true, None);
            }

            #[test]
            fn json_like_text_never_panics_and_canonical_form_is_stable(
                body in "[\\[\\]{}\",:0-9eE.+ \n\\\\u-]{0,300}|[\\[\\]{}\",:a-z0-9 ]{0,300}",
            ) {
                if let Some(c) = canonical_json_text(body.as_bytes()) {
                    prop_assert_eq!(canonical_json_text(c.as_bytes()), Some(c.clone()));
                    let v: Value = serde_json::from_str(&c).unwrap();
                    prop_assert_eq!(v, serde_json::from_str::<Value>(&body).unwrap());
                }
            }

            #[test]
            fn key_order_whitespace_and_escapes_do_not_change_the_fingerprint(
                d in doc(),
                ws in "[ \t\r\n]{0,3}",
            ) {
                let plain = render(&d, false, "", false);
                prop_assert_eq!(fp(&plain), fp(&render(&d, true, &ws, false)));
                prop_assert_eq!(fp(&plain), fp(&render(&d, true, &ws, true)));
                let canonical = canonical_json_text(plain.as_bytes());
                if let Some(c) = &canonical {
                    let again = canonical_json_text(c.as_bytes());
                    prop_assert_eq!(again.as_ref(), Some(c));
                }
            }

            #[test]
            fn a_raw_body_never_takes_a_json_bodys_fingerprint(
                d in doc(),
                content_type in proptest::option::of("[ -~]{0,40}"),
            ) {
                let text = render(&d, false, "", false);
                if let Some(canonical) = canonical_json_text(text.as_bytes()) {
                    let raw = Fingerprint::compute(
                        "POST", "/r", canonical.as_bytes(), false, content_type.as_deref(),
                    );
                    prop_assert_ne!(fp(&text), raw);
                }
            }

            #[test]
            fn different_number_literals_give_different_fingerprints(
                a in number_literal(),
                b in number_literal(),
                d in doc(),
            ) {
                prop_assume!(a != b);
                let wrap = |n: &str| format!(r#"{{"n":{n},"rest":{}}}"#, render(&d, false, "", false));
                prop_assert_ne!(fp(&wrap(&a)), fp(&wrap(&b)));
            }

            #[test]
            fn serde_written_values_canonicalise_as_before(v in any_value()) {
                // For what serde_json itself writes (integers within 64 bits,
                // shortest float spellings) the text form equals the old Value
                // form: stored fingerprints of such bodies do not change.
                let text = v.to_string();
                prop_assert_eq!(canonical_json_text(text.as_bytes()), Some(canonical_json(&v)));
                let pretty = serde_json::to_string_pretty(&v).unwrap();
                prop_assert_eq!(fp(&pretty), fp(&text));
            }
        }

        fn any_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                any::<String>().prop_map(Value::from),
            ];
            leaf.prop_recursive(5, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                    prop::collection::btree_map(any::<String>(), inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }
    }
}
