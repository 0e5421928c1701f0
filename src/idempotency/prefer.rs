//! `Prefer: wait=N` (RFC 7240 §4.3).

/// Returns the requested wait in whole seconds, if the `Prefer` header holds a
/// well-formed `wait` preference. Several preferences may share one header
/// (`respond-async, wait=5`); the first `wait` wins, as RFC 7240 says to ignore
/// later duplicates. Malformed values are ignored, like any unknown preference.
pub fn parse_prefer_wait(header: &str) -> Option<u64> {
    header.split(',').find_map(|pref| {
        let first = pref.split(';').next()?.trim();
        let (name, value) = first.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("wait") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        value.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_read_among_other_preferences() {
        assert_eq!(parse_prefer_wait("wait=10"), Some(10));
        assert_eq!(parse_prefer_wait("respond-async, wait=5"), Some(5));
        assert_eq!(parse_prefer_wait("WAIT = 3 ; x=y"), Some(3));
        assert_eq!(parse_prefer_wait("wait=\"7\""), Some(7));
        assert_eq!(parse_prefer_wait("wait=1, wait=9"), Some(1));
    }

    #[test]
    fn malformed_wait_is_ignored() {
        assert_eq!(parse_prefer_wait("wait=-1"), None);
        assert_eq!(parse_prefer_wait("wait=abc"), None);
        assert_eq!(parse_prefer_wait("wait="), None);
        assert_eq!(parse_prefer_wait("return=minimal"), None);
        assert_eq!(parse_prefer_wait("waiting=3"), None);
    }
}
