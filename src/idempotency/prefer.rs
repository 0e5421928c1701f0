//! `Prefer: wait=N` (RFC 7240 §4.3).

/// Returns the requested wait in whole seconds, if the `Prefer` header holds a
/// well-formed `wait` preference. Several preferences may share one header
/// (`respond-async, wait=5`); the first `wait` wins, as RFC 7240 says to ignore
/// later duplicates. Malformed values are ignored, like any unknown preference;
/// a well-formed value too large for `u64` saturates (it is capped later anyway).
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
        Some(value.parse().unwrap_or(u64::MAX))
    })
}

/// How long to wait, in milliseconds, for `wait=secs`, capped at `max_wait_ms`
/// (a negative cap counts as 0). The cap is applied before the conversion to
/// `i64`, so no requested value can wrap into a negative (= no) wait.
pub fn wait_ms(secs: u64, max_wait_ms: i64) -> i64 {
    let cap = max_wait_ms.max(0);
    i64::try_from(secs.saturating_mul(1000)).map_or(cap, |ms| ms.min(cap))
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
    fn wait_is_capped_before_it_can_wrap() {
        // `secs.saturating_mul(1000) as i64` made this negative: 409 at once.
        assert_eq!(wait_ms(10_000_000_000_000_000, 10_000), 10_000);
        assert_eq!(wait_ms(u64::MAX, 10_000), 10_000);
        assert_eq!(wait_ms(u64::MAX / 1000 + 1, 10_000), 10_000);
        assert_eq!(wait_ms(9_223_372_036_854_776, 10_000), 10_000);
        assert_eq!(wait_ms(3, 10_000), 3_000);
        assert_eq!(wait_ms(10, 10_000), 10_000);
        assert_eq!(wait_ms(11, 10_000), 10_000);
        assert_eq!(wait_ms(0, 10_000), 0);
        assert_eq!(wait_ms(5, 0), 0);
        assert_eq!(wait_ms(5, -1), 0);
        assert_eq!(wait_ms(u64::MAX, i64::MAX), i64::MAX);
    }

    /// What `fn envelope` in frontend_worker/write.rs computes from the header.
    fn prefer_wait_ms(header: Option<&str>, max_wait_ms: i64) -> i64 {
        header
            .and_then(parse_prefer_wait)
            .map_or(0, |secs| wait_ms(secs, max_wait_ms))
    }

    #[test]
    fn prefer_header_to_wait_ms() {
        assert_eq!(prefer_wait_ms(None, 10_000), 0);
        assert_eq!(prefer_wait_ms(Some("wait=2"), 10_000), 2_000);
        assert_eq!(
            prefer_wait_ms(Some("wait=10000000000000000"), 10_000),
            10_000
        );
        // Digits beyond u64 are still a (very long) wait: the cap, not "no wait".
        assert_eq!(
            prefer_wait_ms(Some("wait=99999999999999999999999999"), 10_000),
            10_000
        );
        assert_eq!(
            parse_prefer_wait("wait=99999999999999999999999999"),
            Some(u64::MAX)
        );
        assert_eq!(prefer_wait_ms(Some("wait=abc"), 10_000), 0);
    }

    #[test]
    fn malformed_wait_is_ignored() {
        assert_eq!(parse_prefer_wait("wait=-1"), None);
        assert_eq!(parse_prefer_wait("wait=abc"), None);
        assert_eq!(parse_prefer_wait("wait="), None);
        assert_eq!(parse_prefer_wait("return=minimal"), None);
        assert_eq!(parse_prefer_wait("waiting=3"), None);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn parse_never_panics(header in prop_oneof![
                any::<String>(),
                "[ ,;=\"a-zA-Z0-9-]{0,200}",
                "(respond-async, )?[wW][aA][iI][tT] ?= ?\"?[0-9]{0,40}\"?(;[a-z]=[a-z])?",
            ]) {
                let _ = parse_prefer_wait(&header);
            }

            #[test]
            fn every_digit_string_is_read_saturating(digits in "[0-9]{1,60}") {
                let expected = digits.parse::<u64>().unwrap_or(u64::MAX);
                prop_assert_eq!(parse_prefer_wait(&format!("wait={digits}")), Some(expected));
            }

            #[test]
            fn wait_is_within_zero_and_the_cap_and_monotonic(
                a in any::<u64>(),
                b in any::<u64>(),
                cap in any::<i64>(),
            ) {
                let (wa, wb) = (wait_ms(a, cap), wait_ms(b, cap));
                prop_assert!(wa >= 0 && wa <= cap.max(0));
                let ordered = if a <= b { wa <= wb } else { wa >= wb };
                prop_assert!(ordered);
                if a <= 1_000_000 && cap >= 0 {
                    prop_assert_eq!(wa, (a as i64 * 1000).min(cap));
                }
            }
        }
    }
}
