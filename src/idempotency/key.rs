//! `Idempotency-Key` parsing: parse, don't validate.

use std::fmt;

/// Longest key accepted, in bytes (all accepted characters are ASCII).
pub const MAX_KEY_LEN: usize = 255;

/// A syntactically valid idempotency key: 1..=255 characters from
/// `A-Za-z0-9-_.:~+/=`, none of whose `/`-separated segments is `.` or `..`. A
/// value wrapped in double quotes (the RFC 8941 sf-string form used by the IETF
/// draft) is unquoted first.
///
/// Dot segments are refused because the key admin routes name the key in the
/// URL path (`/v1/idempotency/keys/{key}`), and URL parsing removes dot
/// segments (also written `%2E`) before the Worker sees the path: such a key
/// could be written but never inspected or released, and `a/../b` would
/// address the key `b`.
///
/// It crosses from the Worker to the key's object as text and is parsed again on
/// arrival (`serde(try_from)`), so the object never holds an unchecked key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl TryFrom<String> for IdempotencyKey {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        IdempotencyKey::parse(&s)
    }
}

impl From<IdempotencyKey> for String {
    fn from(k: IdempotencyKey) -> String {
        k.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    TooLong(usize),
    /// A comma means the header was sent more than once or as a list.
    List,
    InvalidChar(char),
    /// `Idempotency-Key` and `X-Idempotency-Key` both present with different values.
    Conflicting,
    /// A `/`-separated segment is `.` or `..`.
    DotSegment,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => write!(f, "the idempotency key is empty"),
            KeyError::TooLong(n) => write!(
                f,
                "the idempotency key is {n} characters long; at most {MAX_KEY_LEN} are allowed"
            ),
            KeyError::List => write!(
                f,
                "the idempotency key must be a single value, not a list (it contains a comma)"
            ),
            KeyError::InvalidChar(c) => write!(
                f,
                "the idempotency key contains {c:?}; allowed are A-Z a-z 0-9 and - _ . : ~ + / ="
            ),
            KeyError::Conflicting => write!(
                f,
                "Idempotency-Key and X-Idempotency-Key are both present and differ"
            ),
            KeyError::DotSegment => write!(
                f,
                "the idempotency key has a \".\" or \"..\" segment between slashes; URLs rewrite \
                 dot segments, so the key could not be inspected or released at \
                 /v1/idempotency/keys/{{key}}"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '~' | '+' | '/' | '=')
}

impl IdempotencyKey {
    /// Parses one header value.
    pub fn parse(raw: &str) -> Result<Self, KeyError> {
        let trimmed = raw.trim_matches(|c| c == ' ' || c == '\t');
        if trimmed.contains(',') {
            return Err(KeyError::List);
        }
        let inner = match trimmed.strip_prefix('"') {
            Some(rest) => rest.strip_suffix('"').ok_or(KeyError::InvalidChar('"'))?,
            None => trimmed,
        };
        if inner.is_empty() {
            return Err(KeyError::Empty);
        }
        if let Some(bad) = inner.chars().find(|c| !allowed(*c)) {
            return Err(KeyError::InvalidChar(bad));
        }
        if inner.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(inner.len()));
        }
        if inner.split('/').any(|s| s == "." || s == "..") {
            return Err(KeyError::DotSegment);
        }
        Ok(IdempotencyKey(inner.to_string()))
    }

    /// A key the server derives itself (e.g. from a content hash). The caller
    /// guarantees the syntax; it is checked in debug builds.
    pub fn derived(value: String) -> Self {
        debug_assert!(IdempotencyKey::parse(&value).is_ok());
        IdempotencyKey(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The path prefix of the key admin routes (`GET|HEAD|DELETE /v1/idempotency/keys/{key}`).
pub const ADMIN_PATH_PREFIX: &str = "/v1/idempotency/keys/";

/// Why a key admin path names no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminPathError {
    /// The path is not under [`ADMIN_PATH_PREFIX`], a `%` is not followed by two
    /// hex digits, or the decoded bytes are not UTF-8.
    BadEscape,
    /// The decoded text is not a key.
    Key(KeyError),
}

impl fmt::Display for AdminPathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminPathError::BadEscape => write!(f, "bad percent-encoding in key"),
            AdminPathError::Key(e) => e.fmt(f),
        }
    }
}

/// The key named by a key admin route's path (`path`: the whole path as the
/// runtime serializes the URL, percent-encoded as sent, e.g.
/// `/v1/idempotency/keys/a%2Fb`): everything after [`ADMIN_PATH_PREFIX`],
/// slashes included, percent-decoded and parsed as a key. A client may write
/// any character of the key escaped (`/` as `%2F`, `+` as `%2B`); a `+` left as
/// is stays a `+` (a path is not form-encoded).
///
/// The runtime has removed dot segments (`.`, `..`, also written `%2E`) from
/// the path before the Worker sees it, which is why [`IdempotencyKey::parse`]
/// refuses keys that contain one: every key it accepts reads back here as
/// itself.
pub fn key_from_admin_path(path: &str) -> Result<IdempotencyKey, AdminPathError> {
    let raw = path
        .strip_prefix(ADMIN_PATH_PREFIX)
        .ok_or(AdminPathError::BadEscape)?;
    // percent_decode_str leaves a malformed escape as it is; it is refused here
    // instead, so that `%zz` is a bad URL rather than a key containing `%`.
    let well_formed = raw.split('%').skip(1).all(|after| {
        after
            .as_bytes()
            .get(..2)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(AdminPathError::BadEscape);
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| AdminPathError::BadEscape)?;
    IdempotencyKey::parse(&decoded).map_err(AdminPathError::Key)
}

/// Reads the key from the IETF header and the legacy one. Absent from both →
/// `Ok(None)`; both present → they must name the same key.
pub fn key_from_headers(
    ietf: Option<&str>,
    legacy: Option<&str>,
) -> Result<Option<IdempotencyKey>, KeyError> {
    match (ietf, legacy) {
        (None, None) => Ok(None),
        (Some(v), None) | (None, Some(v)) => IdempotencyKey::parse(v).map(Some),
        (Some(a), Some(b)) => {
            let a = IdempotencyKey::parse(a)?;
            let b = IdempotencyKey::parse(b)?;
            if a == b {
                Ok(Some(a))
            } else {
                Err(KeyError::Conflicting)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_are_accepted() {
        for k in [
            "abc",
            "A-Z_0.9:~+/=",
            "550e8400-e29b-41d4-a716-446655440000",
            "x",
        ] {
            assert_eq!(IdempotencyKey::parse(k).unwrap().as_str(), k);
        }
    }

    #[test]
    fn quoted_sf_string_is_unquoted() {
        assert_eq!(
            IdempotencyKey::parse("\"8e03978e-40d5\"").unwrap().as_str(),
            "8e03978e-40d5"
        );
        assert_eq!(IdempotencyKey::parse("  \"k1\" ").unwrap().as_str(), "k1");
    }

    #[test]
    fn unbalanced_quote_is_rejected() {
        assert_eq!(
            IdempotencyKey::parse("\"abc"),
            Err(KeyError::InvalidChar('"'))
        );
        assert_eq!(
            IdempotencyKey::parse("abc\""),
            Err(KeyError::InvalidChar('"'))
        );
    }

    #[test]
    fn empty_key_is_rejected_quoted_or_not() {
        assert_eq!(IdempotencyKey::parse(""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse("   "), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse("\"\""), Err(KeyError::Empty));
    }

    #[test]
    fn key_of_255_is_accepted_and_256_rejected() {
        assert!(IdempotencyKey::parse(&"a".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::parse(&"a".repeat(256)),
            Err(KeyError::TooLong(256))
        );
        assert!(IdempotencyKey::parse(&format!("\"{}\"", "a".repeat(255))).is_ok());
    }

    #[test]
    fn comma_means_a_list_and_is_rejected() {
        assert_eq!(IdempotencyKey::parse("a,b"), Err(KeyError::List));
        assert_eq!(IdempotencyKey::parse("\"a\", \"b\""), Err(KeyError::List));
    }

    #[test]
    fn non_ascii_and_spaces_inside_are_rejected() {
        assert_eq!(
            IdempotencyKey::parse("clé"),
            Err(KeyError::InvalidChar('é'))
        );
        assert_eq!(
            IdempotencyKey::parse("a b"),
            Err(KeyError::InvalidChar(' '))
        );
        assert_eq!(
            IdempotencyKey::parse("a;b"),
            Err(KeyError::InvalidChar(';'))
        );
        assert_eq!(
            IdempotencyKey::parse("🔑"),
            Err(KeyError::InvalidChar('🔑'))
        );
    }

    #[test]
    fn a_dot_segment_is_refused_plain_or_quoted() {
        for k in [
            ".", "..", "a/../b", "./a", "a/.", "a/./b", "../a", "a/..", "/.", "./", "a//./b",
        ] {
            assert_eq!(IdempotencyKey::parse(k), Err(KeyError::DotSegment), "{k}");
            let quoted = format!("\"{k}\"");
            assert_eq!(IdempotencyKey::parse(&quoted), Err(KeyError::DotSegment));
        }
        let why = KeyError::DotSegment.to_string();
        assert!(why.contains("inspected or released"), "{why}");
    }

    #[test]
    fn dots_within_a_segment_are_accepted() {
        for k in [
            "...",
            ".a",
            "a.",
            "a..b",
            "a/.../b",
            ".hidden/x",
            "a/..b",
            "a./b",
            "/",
            "a//b",
            "a/",
        ] {
            assert_eq!(IdempotencyKey::parse(k).unwrap().as_str(), k);
        }
    }

    #[test]
    fn both_headers_must_agree() {
        assert_eq!(key_from_headers(None, None), Ok(None));
        assert_eq!(
            key_from_headers(Some("a"), None).unwrap().unwrap().as_str(),
            "a"
        );
        assert_eq!(
            key_from_headers(None, Some("b")).unwrap().unwrap().as_str(),
            "b"
        );
        assert_eq!(
            key_from_headers(Some("a"), Some("\"a\""))
                .unwrap()
                .unwrap()
                .as_str(),
            "a"
        );
        assert_eq!(
            key_from_headers(Some("a"), Some("b")),
            Err(KeyError::Conflicting)
        );
        assert_eq!(key_from_headers(Some(""), Some("b")), Err(KeyError::Empty));
    }

    fn from_path(rest: &str) -> Result<IdempotencyKey, AdminPathError> {
        key_from_admin_path(&format!("{ADMIN_PATH_PREFIX}{rest}"))
    }

    #[test]
    fn the_admin_path_names_the_key_after_the_prefix_decoded() {
        for (rest, key) in [
            ("abc", "abc"),
            ("a/b", "a/b"),
            ("a%2Fb", "a/b"),
            ("a%2fb", "a/b"),
            ("a/", "a/"),
            ("/a", "/a"),
            ("%2F", "/"),
            // A path is not form-encoded: `+` is a plus, written or escaped.
            ("a+b", "a+b"),
            ("a%2Bb", "a+b"),
            ("a%3Db", "a=b"),
            ("%61%3A%62%7E%63", "a:b~c"),
            ("%2E%2E%2E", "..."),
        ] {
            assert_eq!(from_path(rest).unwrap().as_str(), key, "{rest}");
        }
    }

    #[test]
    fn a_bad_escape_in_the_admin_path_is_refused_as_such() {
        for rest in ["%", "a%2", "a%zz", "%G0", "a%2Fb%", "%FF", "%C3"] {
            assert_eq!(from_path(rest), Err(AdminPathError::BadEscape), "{rest}");
        }
        assert_eq!(
            key_from_admin_path("/v1/idempotency/stats"),
            Err(AdminPathError::BadEscape)
        );
    }

    #[test]
    fn the_admin_path_key_is_checked_like_a_header_key() {
        assert_eq!(from_path(""), Err(AdminPathError::Key(KeyError::Empty)));
        assert_eq!(
            from_path("bad%20key"),
            Err(AdminPathError::Key(KeyError::InvalidChar(' ')))
        );
        assert_eq!(
            from_path("cl%C3%A9"),
            Err(AdminPathError::Key(KeyError::InvalidChar('é')))
        );
        assert_eq!(
            from_path("%25"),
            Err(AdminPathError::Key(KeyError::InvalidChar('%')))
        );
        assert_eq!(
            from_path(&"a".repeat(256)),
            Err(AdminPathError::Key(KeyError::TooLong(256)))
        );
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Candidate keys made of `/`-separated segments, likely to hold dot
        /// segments (`.`, `..`), empty ones (a leading, trailing or doubled
        /// `/`) and segments that only look like them (`...`, `.a`, `a..`),
        /// sometimes quoted, sometimes long.
        fn segmented_key() -> impl Strategy<Value = String> {
            let segment = prop_oneof![
                2 => Just(".".to_string()),
                2 => Just("..".to_string()),
                2 => Just(String::new()),
                1 => Just("...".to_string()),
                2 => "\\.[a-z]{1,2}|[a-z]{1,2}\\.\\.?",
                5 => "[A-Za-z0-9_.:~+=\\-]{1,6}",
                1 => "[a-z]{40,120}",
            ];
            (prop::collection::vec(segment, 1..8), any::<bool>()).prop_map(|(parts, quoted)| {
                let key = parts.join("/");
                if quoted {
                    format!("\"{key}\"")
                } else {
                    key
                }
            })
        }

        fn has_dot_segment(key: &str) -> bool {
            key.split('/').any(|s| s == "." || s == "..")
        }

        /// The key as the path of a key admin URL, parsed by a WHATWG parser
        /// (as the runtime parses the request's URL), then read back.
        fn through_url(written: &str) -> Result<IdempotencyKey, AdminPathError> {
            let url = url::Url::parse(&format!("https://h/v1/idempotency/keys/{written}"))
                .expect("a key admin URL parses");
            key_from_admin_path(url.path())
        }

        fn every_char_escaped(key: &str) -> String {
            key.bytes().map(|b| format!("%{b:02X}")).collect()
        }

        /// Every `.` written `%2E` or `%2e` (alternately), the rest as is.
        fn dots_escaped(key: &str) -> String {
            let mut lower = false;
            key.chars()
                .map(|c| match c {
                    '.' => {
                        lower = !lower;
                        if lower { "%2e" } else { "%2E" }.to_string()
                    }
                    c => c.to_string(),
                })
                .collect()
        }

        /// Header values: mostly key-ish characters, with the ones that matter
        /// to the parser (quotes, commas, blanks, non-ASCII) mixed in.
        fn header_value() -> impl Strategy<Value = String> {
            prop_oneof![
                "[A-Za-z0-9_.:~+/=\\-]{0,300}",
                "[ \t\",]{0,3}[A-Za-z0-9\"',; \t=é🔑\u{0}\u{7f}]{0,1000}[ \t\",]{0,3}",
                any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn parse_never_panics_and_accepts_only_the_contract(raw in header_value()) {
                if let Ok(key) = IdempotencyKey::parse(&raw) {
                    let k = key.as_str();
                    prop_assert!(!k.is_empty() && k.len() <= MAX_KEY_LEN);
                    prop_assert!(k.chars().all(allowed));
                    prop_assert!(!has_dot_segment(k));
                    // Parsing is idempotent, and the quoted form names the same key.
                    prop_assert_eq!(IdempotencyKey::parse(k), Ok(key.clone()));
                    prop_assert_eq!(IdempotencyKey::parse(&format!("\"{k}\"")), Ok(key.clone()));
                }
            }

            #[test]
            fn valid_keys_always_parse(key in "[A-Za-z0-9_.:~+/=\\-]{1,255}") {
                let parsed = IdempotencyKey::parse(&key);
                if has_dot_segment(&key) {
                    prop_assert_eq!(parsed, Err(KeyError::DotSegment));
                } else {
                    prop_assert_eq!(parsed.as_ref().map(|k| k.as_str()), Ok(key.as_str()));
                }
            }

            #[test]
            fn key_from_headers_never_panics_and_is_symmetric(
                a in proptest::option::of(header_value()),
                b in proptest::option::of(header_value()),
            ) {
                let ab = key_from_headers(a.as_deref(), b.as_deref());
                let ba = key_from_headers(b.as_deref(), a.as_deref());
                match (&ab, &ba) {
                    (Ok(x), Ok(y)) => prop_assert_eq!(x, y),
                    (Err(_), Err(_)) => {}
                    _ => prop_assert!(false, "asymmetric: {:?} vs {:?}", ab, ba),
                }
                if let (Some(v), None) = (&a, &b) {
                    prop_assert_eq!(ab, IdempotencyKey::parse(v).map(Some));
                }
            }
        }

        proptest! {
            // Most generated keys hold a dot segment: more cases, so that both
            // properties see many keys of their kind.
            #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

            #[test]
            fn every_accepted_key_reads_back_from_its_admin_url(raw in segmented_key()) {
                let Ok(key) = IdempotencyKey::parse(&raw) else {
                    return Ok(());
                };
                let k = key.as_str();
                for written in [k.to_string(), k.replace('/', "%2F"), every_char_escaped(k)] {
                    prop_assert_eq!(through_url(&written), Ok(key.clone()), "written as {}", written);
                }
            }

            #[test]
            fn keys_with_a_dot_segment_are_refused_because_urls_rewrite_them(raw in segmented_key()) {
                let inner = raw.trim_matches('"');
                prop_assume!(has_dot_segment(inner) && inner.len() <= MAX_KEY_LEN);
                prop_assert_eq!(IdempotencyKey::parse(&raw), Err(KeyError::DotSegment));
                // Why: a URL parser removes the dot segments (written as dots
                // or as %2E / %2e) from the path, so the admin URL built from
                // such a key would read back as another key, or none, and the
                // key could never be inspected or released.
                for written in [inner.to_string(), dots_escaped(inner)] {
                    let read = through_url(&written);
                    prop_assert!(
                        read.as_ref().map_or(true, |k| k.as_str() != inner),
                        "{} read back as itself: {:?}", written, read
                    );
                }
            }
        }
    }
}
