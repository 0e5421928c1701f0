//! The staged export state machine.
//!
//! ```text
//!      ┌──────────────────── approve ──────────────────┐
//!      │                                                ▼
//!   prepared ─review─► under_review ─approve─► approved ─post─► posted ─rollback─► rolled_back
//!    ▲ │  ▲                │  │                 ▲  │               ▲
//!    │ │  └ request_changes┘  │ first_approval  │  post_failed     │ post (retry)
//!    │ │                      ▼ (from prepared  │  ▼               │
//!    │ │        awaiting_second_approval ─approve┘ failed ─────────┘
//!    │ │             │  │  (too)                 ▲  │ post_failed (a retry failed again)
//!    │ └─ reject | expire ─► rejected ◄─ reject | expire (from any state awaiting a decision)
//!    └──── request_changes ─┘                   └──┘
//! ```
//!
//! Review is optional (`docs/staging.md`, as AP Intake's own workflow does): an export
//! may be approved or rejected straight from `prepared`. The audit row of the
//! approval records the state it came from, so the trail shows whether a review
//! happened.
//!
//! With `STAGING_SECOND_APPROVAL=amount_changes`, an approval whose corrections
//! change an amount ([`changes_an_amount`]) is a `first_approval`: the export
//! waits in `awaiting_second_approval` until another approver approves it (or
//! rejects it, or requests changes). `request_changes` sends an export under
//! review, or awaiting its second approval, back to `prepared`: to its preparer.
//!
//! Invariants:
//! - every state change is one legal edge of [`transition`]; anything else is a
//!   [`TransitionError`] (a conflict with the export's state, not a malformed
//!   request);
//! - `rejected` and `rolled_back` are terminal: they accept no event, so a rejection
//!   or a rollback is never undone;
//! - an export reaches `posted` only from `approved` or `failed`, so nothing is ever
//!   delivered without an approval;
//! - posts of a `failed` export are bounded: [`Attempts::retries`] counts the failed
//!   deliveries so far; a failed export may be posted again `max_retries` times
//!   (`docs/staging.md`: "retry (≤ max_retries)"), after which it stays
//!   `failed` for good ([`TransitionError::RetriesExhausted`]).
//!
//! Pure: no storage and no clock, so callers apply the result under their own
//! concurrency control (the row's `version`) and count the failures themselves
//! (`retries + 1` when they apply an [`ExportEvent::PostFailed`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a staged export is. Serialised, and stored in `staged_exports.status`, as
/// its snake_case name ([`ExportState::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportState {
    /// Staged and validated, waiting for a reviewer.
    Prepared,
    /// A reviewer has looked at it; waiting for an approval.
    UnderReview,
    /// Approved with corrections that change an amount, waiting for a second
    /// approver (with `STAGING_SECOND_APPROVAL=amount_changes`).
    AwaitingSecondApproval,
    /// Approved (possibly with corrected data); ready to post.
    Approved,
    /// Delivered to the destination system.
    Posted,
    /// A posted export withdrawn from the destination. Terminal.
    RolledBack,
    /// Rejected by a reviewer, or expired by the approval-timeout sweep. Terminal.
    Rejected,
    /// The last delivery failed; may be posted again while retries remain.
    Failed,
}

impl ExportState {
    /// Every state, in lifecycle order.
    pub const ALL: [ExportState; 8] = [
        Self::Prepared,
        Self::UnderReview,
        Self::AwaitingSecondApproval,
        Self::Approved,
        Self::Posted,
        Self::RolledBack,
        Self::Rejected,
        Self::Failed,
    ];

    /// The stored and wire name: `prepared`, `under_review`,
    /// `awaiting_second_approval`, `approved`, `posted`, `rolled_back`,
    /// `rejected` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepared => "prepared",
            Self::UnderReview => "under_review",
            Self::AwaitingSecondApproval => "awaiting_second_approval",
            Self::Approved => "approved",
            Self::Posted => "posted",
            Self::RolledBack => "rolled_back",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    /// The inverse of [`ExportState::as_str`]; exact, case-sensitive.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Whether no event can ever leave this state (`rolled_back`, `rejected`).
    ///
    /// A `failed` export whose retries are exhausted is stuck too, but that depends
    /// on its [`Attempts`], so it is not terminal here.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::RolledBack | Self::Rejected)
    }
}

impl fmt::Display for ExportState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state equals its stored and wire name (`ExportState::Prepared == "prepared"`).
impl PartialEq<&str> for ExportState {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

/// What happens to a staged export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportEvent {
    /// A reviewer looked at it (`PUT …/review`).
    Review,
    /// A reviewer approved it (`PUT …/approve`); of an export awaiting its
    /// second approval, the second approval.
    Approve,
    /// An approval whose corrections change an amount, with the second
    /// approval required (`PUT …/approve`): the first of two.
    FirstApproval,
    /// An approver sent it back to its preparer (`PUT …/request-changes`).
    RequestChanges,
    /// A reviewer rejected it (`PUT …/reject`).
    Reject,
    /// The scheduled sweep found it unapproved past the approval timeout.
    Expire,
    /// A delivery (`POST …/post`) succeeded.
    PostSucceeded,
    /// A delivery (`POST …/post`) failed.
    PostFailed,
    /// A posted export was withdrawn (`POST …/rollback`).
    Rollback,
}

impl ExportEvent {
    /// Every event.
    pub const ALL: [ExportEvent; 9] = [
        Self::Review,
        Self::Approve,
        Self::FirstApproval,
        Self::RequestChanges,
        Self::Reject,
        Self::Expire,
        Self::PostSucceeded,
        Self::PostFailed,
        Self::Rollback,
    ];

    /// The event's name, as written to `staging_audit.event`: `review`, `approve`,
    /// `first_approval`, `request_changes`, `reject`, `expire`, `post`,
    /// `post_failed` or `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Review => "review",
            Self::Approve => "approve",
            Self::FirstApproval => "first_approval",
            Self::RequestChanges => "request_changes",
            Self::Reject => "reject",
            Self::Expire => "expire",
            Self::PostSucceeded => "post",
            Self::PostFailed => "post_failed",
            Self::Rollback => "rollback",
        }
    }

    /// The event as a verb phrase for "cannot … an export" messages.
    fn verb(self) -> &'static str {
        match self {
            Self::Review => "review",
            Self::Approve | Self::FirstApproval => "approve",
            Self::RequestChanges => "request changes to",
            Self::Reject => "reject",
            Self::Expire => "expire",
            Self::PostSucceeded => "post",
            Self::PostFailed => "record a failed post of",
            Self::Rollback => "roll back",
        }
    }
}

impl fmt::Display for ExportEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often an export's delivery has failed, and how often it may.
///
/// `retries` is the number of failed post attempts so far (0 until the first
/// failure). Every failure after the first was itself a retry, so a `failed`
/// export may be posted again while `retries <= max_retries`: `max_retries`
/// retries after the first attempt. With the default 3 that is four deliveries
/// at most; with 0, one attempt and no retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    pub retries: u32,
    pub max_retries: u32,
}

impl Attempts {
    /// Whether another delivery of a `failed` export is allowed.
    fn remain(self) -> bool {
        self.retries <= self.max_retries
    }
}

/// Why an event cannot happen to an export in its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionError {
    /// The state has no edge for this event.
    NotAllowed {
        from: ExportState,
        event: ExportEvent,
    },
    /// A `failed` export has used up its deliveries.
    RetriesExhausted { retries: u32, max_retries: u32 },
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAllowed { from, event } => {
                write!(f, "cannot {} an export in state '{from}'", event.verb())
            }
            Self::RetriesExhausted {
                retries,
                max_retries,
            } => {
                let times = if *retries == 1 { "time" } else { "times" };
                write!(
                    f,
                    "posting failed {retries} {times}; max_retries is {max_retries}"
                )
            }
        }
    }
}

impl std::error::Error for TransitionError {}

/// The state after `event` happens in state `from`, or why it cannot.
///
/// Legal edges, and only these:
/// - prepared → under_review (review);
/// - prepared | under_review → approved (approve) — the review is optional;
/// - prepared | under_review → awaiting_second_approval (first_approval), and
///   awaiting_second_approval → approved (approve: the second approval);
/// - under_review | awaiting_second_approval → prepared (request_changes);
/// - prepared | under_review | awaiting_second_approval → rejected (reject, or
///   expire: the sweep's approval timeout ends the same way as a rejection);
/// - approved → posted (post) and approved → failed (post_failed), whatever the
///   attempts (an approved export has never failed);
/// - failed → posted (post) and failed → failed (post_failed), only while
///   `attempts.retries <= attempts.max_retries` (see [`Attempts`]), else
///   [`TransitionError::RetriesExhausted`];
/// - posted → rolled_back (rollback).
///
/// `attempts` matters only for the `failed` rows; the returned state does not
/// count the failure — the caller increments `retries` when it applies
/// `post_failed`.
pub fn transition(
    from: ExportState,
    event: ExportEvent,
    attempts: Attempts,
) -> Result<ExportState, TransitionError> {
    use ExportEvent as E;
    use ExportState as S;
    match (from, event) {
        (S::Prepared, E::Review) => Ok(S::UnderReview),
        (S::Prepared | S::UnderReview | S::AwaitingSecondApproval, E::Approve) => Ok(S::Approved),
        (S::Prepared | S::UnderReview, E::FirstApproval) => Ok(S::AwaitingSecondApproval),
        (S::UnderReview | S::AwaitingSecondApproval, E::RequestChanges) => Ok(S::Prepared),
        (S::Prepared | S::UnderReview | S::AwaitingSecondApproval, E::Reject | E::Expire) => {
            Ok(S::Rejected)
        }
        (S::Approved, E::PostSucceeded) => Ok(S::Posted),
        (S::Approved, E::PostFailed) => Ok(S::Failed),
        (S::Failed, E::PostSucceeded | E::PostFailed) => {
            can_post(from, attempts)?;
            Ok(if event == E::PostSucceeded {
                S::Posted
            } else {
                S::Failed
            })
        }
        (S::Posted, E::Rollback) => Ok(S::RolledBack),
        _ => Err(TransitionError::NotAllowed { from, event }),
    }
}

/// Whether a delivery may be attempted now: the check made *before* calling the
/// destination, so an export that could not record the outcome is never sent.
///
/// Ok for `approved`, and for `failed` while `attempts.retries <=
/// attempts.max_retries` (see [`Attempts`]); [`TransitionError::RetriesExhausted`]
/// for an exhausted `failed` export; [`TransitionError::NotAllowed`] (with event
/// `post`) for every other state. When it is Ok, both outcomes of the delivery
/// ([`ExportEvent::PostSucceeded`], [`ExportEvent::PostFailed`]) are legal
/// transitions with the same `attempts`.
///
/// The bound is inclusive:
///
/// ```
/// use idemgate::staging::workflow::{can_post, Attempts, ExportState};
/// let at = |retries| Attempts { retries, max_retries: 3 };
/// assert!(can_post(ExportState::Failed, at(3)).is_ok());
/// assert!(can_post(ExportState::Failed, at(4)).is_err());
/// ```
pub fn can_post(from: ExportState, attempts: Attempts) -> Result<(), TransitionError> {
    match from {
        ExportState::Approved => Ok(()),
        ExportState::Failed if attempts.remain() => Ok(()),
        ExportState::Failed => Err(TransitionError::RetriesExhausted {
            retries: attempts.retries,
            max_retries: attempts.max_retries,
        }),
        _ => Err(TransitionError::NotAllowed {
            from,
            event: ExportEvent::PostSucceeded,
        }),
    }
}

/// Segregation of duties: the rule that keeps `actor` from taking `event` on
/// an export `prepared_by` prepared, if one does. The preparer may submit
/// the export for review, but never approve or post it: money moves only
/// after someone else has looked.
pub fn segregation_refuses(
    event: ExportEvent,
    prepared_by: &str,
    actor: &str,
) -> Option<&'static str> {
    if prepared_by != actor {
        return None;
    }
    match event {
        ExportEvent::Approve | ExportEvent::FirstApproval => {
            Some("the approver must not be the preparer of the export")
        }
        ExportEvent::PostSucceeded | ExportEvent::PostFailed => {
            Some("the poster must not be the preparer of the export")
        }
        _ => None,
    }
}

/// Segregation of duties for the second approval: the rule that keeps `actor`
/// from confirming a first approval `first_approver` made, if one does.
pub fn second_approval_refuses(first_approver: &str, actor: &str) -> Option<&'static str> {
    (first_approver == actor)
        .then_some("the second approver must not be the approver who made the first approval")
}

/// Whether corrections change an amount: any change but to the vendor, the
/// invoice number, the date or a line's description — a total, a currency, a
/// line's quantity, unit price or amount, a line added or removed. A value
/// rewritten to the same amount (`"30.0"` for `"30.00"`, `30` for `"30"`) is no
/// change of amount.
pub fn changes_an_amount(changes: &[crate::staging::diff::Change]) -> bool {
    const WORDS: [&str; 3] = ["$.vendor_name", "$.invoice_number", "$.invoice_date"];
    changes.iter().any(|c| {
        let words = WORDS.contains(&c.path.as_str())
            || (c.path.starts_with("$.line_items[") && c.path.ends_with("].description"));
        let same_amount = match (&c.before, &c.after) {
            (Some(b), Some(a)) => {
                let money = crate::staging::data::parse_money;
                matches!((money(b), money(a)), (Some(x), Some(y)) if x == y)
            }
            _ => false,
        };
        !words && !same_amount
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use ExportEvent as E;
    use ExportState as S;

    /// Attempts with failures left: 1 of 3 failed deliveries used.
    const LEFT: Attempts = Attempts {
        retries: 1,
        max_retries: 3,
    };
    /// Attempts used up: the first delivery and 3 retries all failed.
    const USED: Attempts = Attempts {
        retries: 4,
        max_retries: 3,
    };

    /// The expected outcome of one row.
    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        To(ExportState),
        NotAllowed,
        Exhausted,
    }
    use Outcome::{Exhausted, NotAllowed, To};

    /// Every state × every event, with attempts both below and at the maximum.
    /// Only the `failed` rows differ between the two columns.
    const TABLE: [(ExportState, ExportEvent, Outcome, Outcome); 72] = [
        // (from, event, with attempts LEFT, with attempts USED)
        (
            S::Prepared,
            E::Review,
            To(S::UnderReview),
            To(S::UnderReview),
        ),
        (S::Prepared, E::Approve, To(S::Approved), To(S::Approved)),
        (
            S::Prepared,
            E::FirstApproval,
            To(S::AwaitingSecondApproval),
            To(S::AwaitingSecondApproval),
        ),
        (S::Prepared, E::RequestChanges, NotAllowed, NotAllowed),
        (S::Prepared, E::Reject, To(S::Rejected), To(S::Rejected)),
        (S::Prepared, E::Expire, To(S::Rejected), To(S::Rejected)),
        (S::Prepared, E::PostSucceeded, NotAllowed, NotAllowed),
        (S::Prepared, E::PostFailed, NotAllowed, NotAllowed),
        (S::Prepared, E::Rollback, NotAllowed, NotAllowed),
        (S::UnderReview, E::Review, NotAllowed, NotAllowed),
        (S::UnderReview, E::Approve, To(S::Approved), To(S::Approved)),
        (
            S::UnderReview,
            E::FirstApproval,
            To(S::AwaitingSecondApproval),
            To(S::AwaitingSecondApproval),
        ),
        (
            S::UnderReview,
            E::RequestChanges,
            To(S::Prepared),
            To(S::Prepared),
        ),
        (S::UnderReview, E::Reject, To(S::Rejected), To(S::Rejected)),
        (S::UnderReview, E::Expire, To(S::Rejected), To(S::Rejected)),
        (S::UnderReview, E::PostSucceeded, NotAllowed, NotAllowed),
        (S::UnderReview, E::PostFailed, NotAllowed, NotAllowed),
        (S::UnderReview, E::Rollback, NotAllowed, NotAllowed),
        (S::AwaitingSecondApproval, E::Review, NotAllowed, NotAllowed),
        (
            S::AwaitingSecondApproval,
            E::Approve,
            To(S::Approved),
            To(S::Approved),
        ),
        (
            S::AwaitingSecondApproval,
            E::FirstApproval,
            NotAllowed,
            NotAllowed,
        ),
        (
            S::AwaitingSecondApproval,
            E::RequestChanges,
            To(S::Prepared),
            To(S::Prepared),
        ),
        (
            S::AwaitingSecondApproval,
            E::Reject,
            To(S::Rejected),
            To(S::Rejected),
        ),
        (
            S::AwaitingSecondApproval,
            E::Expire,
            To(S::Rejected),
            To(S::Rejected),
        ),
        (
            S::AwaitingSecondApproval,
            E::PostSucceeded,
            NotAllowed,
            NotAllowed,
        ),
        (
            S::AwaitingSecondApproval,
            E::PostFailed,
            NotAllowed,
            NotAllowed,
        ),
        (
            S::AwaitingSecondApproval,
            E::Rollback,
            NotAllowed,
            NotAllowed,
        ),
        (S::Approved, E::Review, NotAllowed, NotAllowed),
        (S::Approved, E::Approve, NotAllowed, NotAllowed),
        (S::Approved, E::FirstApproval, NotAllowed, NotAllowed),
        (S::Approved, E::RequestChanges, NotAllowed, NotAllowed),
        (S::Approved, E::Reject, NotAllowed, NotAllowed),
        (S::Approved, E::Expire, NotAllowed, NotAllowed),
        (S::Approved, E::PostSucceeded, To(S::Posted), To(S::Posted)),
        (S::Approved, E::PostFailed, To(S::Failed), To(S::Failed)),
        (S::Approved, E::Rollback, NotAllowed, NotAllowed),
        (S::Posted, E::Review, NotAllowed, NotAllowed),
        (S::Posted, E::Approve, NotAllowed, NotAllowed),
        (S::Posted, E::FirstApproval, NotAllowed, NotAllowed),
        (S::Posted, E::RequestChanges, NotAllowed, NotAllowed),
        (S::Posted, E::Reject, NotAllowed, NotAllowed),
        (S::Posted, E::Expire, NotAllowed, NotAllowed),
        (S::Posted, E::PostSucceeded, NotAllowed, NotAllowed),
        (S::Posted, E::PostFailed, NotAllowed, NotAllowed),
        (S::Posted, E::Rollback, To(S::RolledBack), To(S::RolledBack)),
        (S::RolledBack, E::Review, NotAllowed, NotAllowed),
        (S::RolledBack, E::Approve, NotAllowed, NotAllowed),
        (S::RolledBack, E::FirstApproval, NotAllowed, NotAllowed),
        (S::RolledBack, E::RequestChanges, NotAllowed, NotAllowed),
        (S::RolledBack, E::Reject, NotAllowed, NotAllowed),
        (S::RolledBack, E::Expire, NotAllowed, NotAllowed),
        (S::RolledBack, E::PostSucceeded, NotAllowed, NotAllowed),
        (S::RolledBack, E::PostFailed, NotAllowed, NotAllowed),
        (S::RolledBack, E::Rollback, NotAllowed, NotAllowed),
        (S::Rejected, E::Review, NotAllowed, NotAllowed),
        (S::Rejected, E::Approve, NotAllowed, NotAllowed),
        (S::Rejected, E::FirstApproval, NotAllowed, NotAllowed),
        (S::Rejected, E::RequestChanges, NotAllowed, NotAllowed),
        (S::Rejected, E::Reject, NotAllowed, NotAllowed),
        (S::Rejected, E::Expire, NotAllowed, NotAllowed),
        (S::Rejected, E::PostSucceeded, NotAllowed, NotAllowed),
        (S::Rejected, E::PostFailed, NotAllowed, NotAllowed),
        (S::Rejected, E::Rollback, NotAllowed, NotAllowed),
        (S::Failed, E::Review, NotAllowed, NotAllowed),
        (S::Failed, E::Approve, NotAllowed, NotAllowed),
        (S::Failed, E::FirstApproval, NotAllowed, NotAllowed),
        (S::Failed, E::RequestChanges, NotAllowed, NotAllowed),
        (S::Failed, E::Reject, NotAllowed, NotAllowed),
        (S::Failed, E::Expire, NotAllowed, NotAllowed),
        (S::Failed, E::PostSucceeded, To(S::Posted), Exhausted),
        (S::Failed, E::PostFailed, To(S::Failed), Exhausted),
        (S::Failed, E::Rollback, NotAllowed, NotAllowed),
    ];

    fn expected(
        from: ExportState,
        event: ExportEvent,
        outcome: Outcome,
        attempts: Attempts,
    ) -> Result<ExportState, TransitionError> {
        match outcome {
            To(state) => Ok(state),
            NotAllowed => Err(TransitionError::NotAllowed { from, event }),
            Exhausted => Err(TransitionError::RetriesExhausted {
                retries: attempts.retries,
                max_retries: attempts.max_retries,
            }),
        }
    }

    #[test]
    fn every_state_and_event_pair_matches_the_table_below_and_at_max_retries() {
        for (from, event, left, used) in TABLE {
            for (outcome, attempts) in [(left, LEFT), (used, USED)] {
                assert_eq!(
                    transition(from, event, attempts),
                    expected(from, event, outcome, attempts),
                    "{from} × {event} with {attempts:?}"
                );
            }
        }
    }

    #[test]
    fn the_table_covers_every_state_and_event_exactly_once() {
        for from in ExportState::ALL {
            for event in ExportEvent::ALL {
                let rows = TABLE
                    .iter()
                    .filter(|(f, e, _, _)| *f == from && *e == event)
                    .count();
                assert_eq!(rows, 1, "{from} × {event}");
            }
        }
    }

    #[test]
    fn terminal_states_accept_no_event_whatever_the_attempts() {
        let terminal: Vec<_> = ExportState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, [S::RolledBack, S::Rejected]);
        for from in terminal {
            for event in ExportEvent::ALL {
                for attempts in [LEFT, USED] {
                    assert_eq!(
                        transition(from, event, attempts),
                        Err(TransitionError::NotAllowed { from, event })
                    );
                }
            }
        }
    }

    #[test]
    fn review_is_optional_approve_and_reject_work_from_prepared_and_under_review() {
        for from in [S::Prepared, S::UnderReview] {
            assert_eq!(transition(from, E::Approve, LEFT), Ok(S::Approved));
            assert_eq!(transition(from, E::Reject, LEFT), Ok(S::Rejected));
        }
        // Reviewing is still a step of its own, once, before a decision.
        assert_eq!(transition(S::Prepared, E::Review, LEFT), Ok(S::UnderReview));
        for from in [S::UnderReview, S::Approved, S::Rejected] {
            assert!(transition(from, E::Review, LEFT).is_err(), "{from}");
        }
    }

    #[test]
    fn can_post_allows_approved_and_failed_with_retries_left_only() {
        let none_left = Attempts {
            retries: 9,
            max_retries: 3,
        };
        for from in ExportState::ALL {
            for attempts in [LEFT, USED, none_left] {
                let expected = match from {
                    S::Approved => Ok(()),
                    S::Failed if attempts == LEFT => Ok(()),
                    S::Failed => Err(TransitionError::RetriesExhausted {
                        retries: attempts.retries,
                        max_retries: 3,
                    }),
                    _ => Err(TransitionError::NotAllowed {
                        from,
                        event: E::PostSucceeded,
                    }),
                };
                assert_eq!(can_post(from, attempts), expected, "{from} {attempts:?}");
            }
        }
    }

    #[test]
    fn when_can_post_is_ok_both_delivery_outcomes_are_legal() {
        for from in ExportState::ALL {
            for attempts in [LEFT, USED] {
                let outcomes = [E::PostSucceeded, E::PostFailed]
                    .map(|event| transition(from, event, attempts).is_ok());
                let allowed = can_post(from, attempts).is_ok();
                assert_eq!(outcomes, [allowed, allowed], "{from} {attempts:?}");
            }
        }
    }

    #[test]
    fn default_three_retries_allow_the_first_delivery_and_three_more() {
        // Count failures as the caller does: +1 for each post_failed applied.
        let mut state = S::Approved;
        let mut attempts = Attempts {
            retries: 0,
            max_retries: 3,
        };
        let mut deliveries = 0;
        while can_post(state, attempts).is_ok() {
            deliveries += 1;
            state = transition(state, E::PostFailed, attempts).unwrap();
            attempts.retries += 1;
        }
        assert_eq!((deliveries, state, attempts.retries), (4, S::Failed, 4));
        assert_eq!(
            can_post(state, attempts).unwrap_err().to_string(),
            "posting failed 4 times; max_retries is 3"
        );
    }

    #[test]
    fn zero_max_retries_still_allows_the_first_delivery_but_no_retry() {
        let attempts = Attempts {
            retries: 0,
            max_retries: 0,
        };
        assert_eq!(can_post(S::Approved, attempts), Ok(()));
        assert_eq!(
            transition(S::Approved, E::PostFailed, attempts),
            Ok(S::Failed)
        );
        let after = Attempts {
            retries: 1,
            ..attempts
        };
        assert_eq!(
            can_post(S::Failed, after),
            Err(TransitionError::RetriesExhausted {
                retries: 1,
                max_retries: 0
            })
        );
    }

    #[test]
    fn a_failed_export_posted_again_successfully_is_posted() {
        let attempts = Attempts {
            retries: 2,
            max_retries: 3,
        };
        assert_eq!(can_post(S::Failed, attempts), Ok(()));
        assert_eq!(
            transition(S::Failed, E::PostSucceeded, attempts),
            Ok(S::Posted)
        );
        assert_eq!(
            transition(S::Posted, E::Rollback, attempts),
            Ok(S::RolledBack)
        );
    }

    #[test]
    fn errors_name_the_event_and_state_or_the_attempts() {
        let cases = [
            (
                S::Approved,
                E::Approve,
                "cannot approve an export in state 'approved'",
            ),
            (
                S::Posted,
                E::Review,
                "cannot review an export in state 'posted'",
            ),
            (
                S::Approved,
                E::Reject,
                "cannot reject an export in state 'approved'",
            ),
            (
                S::Posted,
                E::Expire,
                "cannot expire an export in state 'posted'",
            ),
            (
                S::UnderReview,
                E::PostSucceeded,
                "cannot post an export in state 'under_review'",
            ),
            (
                S::Rejected,
                E::PostFailed,
                "cannot record a failed post of an export in state 'rejected'",
            ),
            (
                S::Approved,
                E::Rollback,
                "cannot roll back an export in state 'approved'",
            ),
        ];
        for (from, event, message) in cases {
            assert_eq!(
                transition(from, event, LEFT).unwrap_err().to_string(),
                message
            );
        }
        assert_eq!(
            can_post(S::RolledBack, LEFT).unwrap_err().to_string(),
            "cannot post an export in state 'rolled_back'"
        );
        let once = TransitionError::RetriesExhausted {
            retries: 1,
            max_retries: 1,
        };
        assert_eq!(once.to_string(), "posting failed 1 time; max_retries is 1");
    }

    #[test]
    fn states_round_trip_through_their_snake_case_names() {
        let names = [
            "prepared",
            "under_review",
            "awaiting_second_approval",
            "approved",
            "posted",
            "rolled_back",
            "rejected",
            "failed",
        ];
        for (state, name) in ExportState::ALL.into_iter().zip(names) {
            assert_eq!(state.as_str(), name);
            assert_eq!(state.to_string(), name);
            assert_eq!(ExportState::parse(name), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::from(name)
            );
            assert_eq!(
                serde_json::from_value::<ExportState>(serde_json::Value::from(name)).unwrap(),
                state
            );
        }
        assert_eq!(ExportState::parse("UnderReview"), None);
        assert_eq!(ExportState::parse("under-review"), None);
        assert_eq!(ExportState::parse(""), None);
    }

    #[test]
    fn events_have_their_audit_names() {
        let names = [
            "review",
            "approve",
            "first_approval",
            "request_changes",
            "reject",
            "expire",
            "post",
            "post_failed",
            "rollback",
        ];
        for (event, name) in ExportEvent::ALL.into_iter().zip(names) {
            assert_eq!(event.as_str(), name);
            assert_eq!(event.to_string(), name);
        }
    }

    #[test]
    fn the_preparer_may_submit_for_review_but_never_approve_or_post() {
        for event in ExportEvent::ALL {
            assert_eq!(segregation_refuses(event, "clara", "dan"), None, "{event}");
        }
        let refused: Vec<ExportEvent> = ExportEvent::ALL
            .into_iter()
            .filter(|e| segregation_refuses(*e, "clara", "clara").is_some())
            .collect();
        assert_eq!(
            refused,
            [
                E::Approve,
                E::FirstApproval,
                E::PostSucceeded,
                E::PostFailed
            ]
        );
    }

    #[test]
    fn the_second_approval_is_someone_elses() {
        assert_eq!(second_approval_refuses("bob", "dana"), None);
        assert_eq!(
            second_approval_refuses("bob", "bob"),
            Some("the second approver must not be the approver who made the first approval")
        );
    }

    #[test]
    fn requested_changes_go_back_to_the_preparer_from_review_or_a_pending_second_approval() {
        for from in [S::UnderReview, S::AwaitingSecondApproval] {
            assert_eq!(transition(from, E::RequestChanges, LEFT), Ok(S::Prepared));
        }
        // Already with the preparer, or decided: nothing to send back.
        for from in [S::Prepared, S::Approved, S::Posted, S::Rejected] {
            assert!(transition(from, E::RequestChanges, LEFT).is_err(), "{from}");
        }
        assert_eq!(
            transition(S::Approved, E::RequestChanges, LEFT)
                .unwrap_err()
                .to_string(),
            "cannot request changes to an export in state 'approved'"
        );
    }

    #[test]
    fn nothing_reaches_approved_from_a_first_approval_but_a_second_approval() {
        assert_eq!(
            transition(S::UnderReview, E::FirstApproval, LEFT),
            Ok(S::AwaitingSecondApproval)
        );
        for event in ExportEvent::ALL {
            let to = transition(S::AwaitingSecondApproval, event, LEFT);
            match event {
                E::Approve => assert_eq!(to, Ok(S::Approved)),
                E::RequestChanges => assert_eq!(to, Ok(S::Prepared)),
                E::Reject | E::Expire => assert_eq!(to, Ok(S::Rejected)),
                _ => assert!(to.is_err(), "{event}"),
            }
        }
    }

    fn changes(before: serde_json::Value, after: serde_json::Value) -> bool {
        changes_an_amount(&crate::staging::diff::diff(&before, &after))
    }

    #[test]
    fn an_amount_change_is_any_change_but_to_words() {
        use serde_json::json;
        let invoice = json!({
            "vendor_name": "Acme", "invoice_number": "INV-1", "invoice_date": "2026-10-31",
            "currency": "EUR", "total_amount": "30.00",
            "line_items": [{"description": "Widget", "quantity": 3, "unit_price": "10.00", "amount": "30.00"}]
        });
        let with = |pointer: &str, v: serde_json::Value| {
            let mut d = invoice.clone();
            *d.pointer_mut(pointer).unwrap() = v;
            d
        };
        assert!(!changes(invoice.clone(), invoice.clone()));
        for (pointer, v) in [
            ("/vendor_name", json!("Acme Supplies")),
            ("/invoice_number", json!("INV-2")),
            ("/invoice_date", json!("2026-11-01")),
            ("/line_items/0/description", json!("Widgets")),
            // The same amounts, written otherwise.
            ("/total_amount", json!("30.0")),
            ("/total_amount", json!(30)),
            ("/line_items/0/quantity", json!("3")),
        ] {
            assert!(
                !changes(invoice.clone(), with(pointer, v.clone())),
                "{pointer} {v}"
            );
        }
        for (pointer, v) in [
            ("/total_amount", json!("31.00")),
            ("/currency", json!("USD")),
            ("/line_items/0/quantity", json!(4)),
            ("/line_items/0/unit_price", json!("9.99")),
            ("/line_items/0/amount", json!("29.97")),
            ("/total_amount", json!(null)),
        ] {
            assert!(
                changes(invoice.clone(), with(pointer, v.clone())),
                "{pointer} {v}"
            );
        }
        let mut more = invoice.clone();
        more["line_items"]
            .as_array_mut()
            .unwrap()
            .push(json!({"description": "Free", "quantity": 1, "unit_price": "0", "amount": "0"}));
        assert!(changes(invoice.clone(), more), "a line added");
        let mut removed = invoice.clone();
        removed.as_object_mut().unwrap().remove("total_amount");
        assert!(changes(invoice, removed), "the total removed");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::staging::data::strategies::text;
    use proptest::prelude::*;
    use proptest::sample::select;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any state, event and attempts (stored counters can be anything): an
        /// answer, never a panic, and the invariants of the module hold.
        #[test]
        fn transitions_never_panic_and_keep_the_invariants(
            from in select(&ExportState::ALL[..]),
            event in select(&ExportEvent::ALL[..]),
            retries in prop_oneof![0u32..6, Just(u32::MAX)],
            max_retries in prop_oneof![0u32..6, Just(u32::MAX)],
        ) {
            let attempts = Attempts { retries, max_retries };
            match transition(from, event, attempts) {
                Ok(to) => {
                    prop_assert!(!from.is_terminal());
                    if to == ExportState::Posted {
                        prop_assert!(matches!(from, ExportState::Approved | ExportState::Failed));
                    }
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            if can_post(from, attempts).is_ok() {
                prop_assert!(transition(from, ExportEvent::PostSucceeded, attempts).is_ok());
                prop_assert!(transition(from, ExportEvent::PostFailed, attempts).is_ok());
            }
        }

        #[test]
        fn state_names_parse_only_exactly(s in text()) {
            if let Some(state) = ExportState::parse(&s) {
                prop_assert_eq!(state.as_str(), s.as_str());
            }
        }
    }
}
