//! The key object's timing decisions, as plain functions: how long a request
//! that finds its key in flight waits before it decides again, how often a
//! live holder renews its lease, and whether the object's alarm must move.
//! The object (`keygate_do`) only sleeps, renews and sets the alarm as told.

/// What a request that found its key in flight does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Its wait (`Prefer: wait=N`) is over, or it asked for none: 409.
    Conflict,
    /// Sleep this many milliseconds (at least 1), or until the run it waits
    /// on answers, whichever is first; then decide again.
    For(i64),
}

/// At `now`, a request allowed to wait until `deadline` finds the key held
/// under a lease that expires at `lease_expires_at`. It wakes at the end of
/// its wait or just after the lease ends — when a live holder has renewed it
/// or a dead one's is taken over — whichever is first.
pub fn in_flight(now: i64, deadline: i64, lease_expires_at: i64) -> Wait {
    if now >= deadline {
        return Wait::Conflict;
    }
    let wake = deadline.min(lease_expires_at.saturating_add(1));
    Wait::For(wake.saturating_sub(now).max(1))
}

/// How often a live holder renews its lease: every third of it (so two
/// renewals can be late before it runs out), and no more than every 50 ms.
pub fn renew_every_ms(lease_ms: i64) -> i64 {
    (lease_ms / 3).max(50)
}

/// The time the object's alarm must be set to, if it must be set: the
/// earliest time a slot is due (`next_due`), unless the alarm is known to be
/// set to it already (`set`: `None` until this instance set the alarm or saw
/// it fire, then what it is set to, `Some(None)` for no alarm).
pub fn alarm_to_set(set: Option<Option<i64>>, next_due: Option<i64>) -> Option<i64> {
    match next_due {
        Some(t) if set != Some(Some(t)) => Some(t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_request_without_a_wait_answers_409_at_once() {
        assert_eq!(in_flight(1_000, 1_000, 5_000), Wait::Conflict);
        assert_eq!(in_flight(1_001, 1_000, 5_000), Wait::Conflict);
    }

    #[test]
    fn it_wakes_just_after_the_lease_ends_or_at_the_end_of_its_wait() {
        // The lease ends first: wake one millisecond after it.
        assert_eq!(in_flight(1_000, 11_000, 4_000), Wait::For(3_001));
        // The wait ends first.
        assert_eq!(in_flight(1_000, 2_000, 4_000), Wait::For(1_000));
        // A lease already over (a dead holder): at once, to take it over.
        assert_eq!(in_flight(1_000, 11_000, 500), Wait::For(1));
        // No overflow at the far end of time.
        assert_eq!(in_flight(0, i64::MAX, i64::MAX), Wait::For(i64::MAX));
    }

    #[test]
    fn a_lease_is_renewed_every_third_and_never_more_often_than_every_50_ms() {
        assert_eq!(renew_every_ms(30_000), 10_000);
        assert_eq!(renew_every_ms(90), 50);
        assert_eq!(renew_every_ms(0), 50);
    }

    #[test]
    fn the_alarm_moves_only_to_a_new_earliest_time() {
        // Not known to be set: set it.
        assert_eq!(alarm_to_set(None, Some(5)), Some(5));
        // Set to it already: nothing to do.
        assert_eq!(alarm_to_set(Some(Some(5)), Some(5)), None);
        // Set to another time, or fired: move it.
        assert_eq!(alarm_to_set(Some(Some(9)), Some(5)), Some(5));
        assert_eq!(alarm_to_set(Some(None), Some(5)), Some(5));
        // Nothing due.
        assert_eq!(alarm_to_set(None, None), None);
        assert_eq!(alarm_to_set(Some(Some(5)), None), None);
    }

    proptest! {
        /// A waiter that keeps finding the key held, the holder renewing its
        /// lease as it runs: every sleep is at least 1 ms and ends no later than
        /// its deadline or just after the lease, and it answers 409 once the
        /// deadline has come, never before.
        #[test]
        fn a_waiter_never_sleeps_past_its_deadline_and_ends_with_a_conflict(
            start in 0i64..1_000_000,
            wait in 0i64..20_000,
            lease in 1i64..30_000,
            late in 0i64..5_000,
        ) {
            let deadline = start + wait;
            let mut now = start;
            let mut lease_end = start + lease;
            let mut sleeps = 0;
            loop {
                match in_flight(now, deadline, lease_end) {
                    Wait::Conflict => {
                        prop_assert!(now >= deadline);
                        break;
                    }
                    Wait::For(ms) => {
                        prop_assert!(ms >= 1 && now < deadline);
                        prop_assert!(now + ms <= deadline.max(now + 1));
                        prop_assert!(now + ms <= (lease_end + 1).max(now + 1));
                        now += ms;
                        // The holder renews, sometimes late, for another lease.
                        if now > lease_end {
                            lease_end = now + late.min(lease) + lease;
                        }
                        sleeps += 1;
                        prop_assert!(sleeps <= wait + 2);
                    }
                }
            }
        }
    }
}
