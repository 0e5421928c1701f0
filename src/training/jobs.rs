//! The training job state machine.
//!
//! ```text
//!            claimed           running
//!   queued ──────────► claimed ───────► running ──┐ progress (stays running)
//!     │                                  ▲   │  ◄─┘
//!     └──────────────── running ─────────┘   └─ succeeded ─► succeeded
//!
//!   queued | claimed | running ── failed ─► failed
//!   queued | claimed | running ── cancel ─► cancelled
//! ```
//!
//! Invariants:
//! - terminal states (`succeeded`, `failed`, `cancelled`) accept no event at all, so a
//!   finished job's outcome never changes;
//! - every state change is one legal edge of [`transition`]; anything else is an
//!   [`IllegalTransition`] (a conflict, not a malformed request);
//! - `succeeded` is reachable only from `running`; `claimed` and `running` are each
//!   entered once (a second `claimed` or `running` event is illegal — retries of the
//!   same event are the idempotency layer's job, keyed by `event_id`; once that key's
//!   record has expired, the events handler answers a repeated `event_id` from the
//!   job's history instead of running it through this machine again).
//!
//! Pure: no storage, so callers apply the result under their own concurrency control
//! (the job row's `version`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::requests::JobEventKind;

/// Where a training job is. Serialised as its lowercase name (`"queued"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Created, waiting for a trainer.
    Queued,
    /// A trainer took it but has not started.
    Claimed,
    /// Training; progress events arrive in this state.
    Running,
    /// Finished with an artifact. Terminal.
    Succeeded,
    /// Finished with an error. Terminal.
    Failed,
    /// Stopped by the tenant. Terminal.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 6] = [
        Self::Queued,
        Self::Claimed,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The stored and wire name (`training_jobs.status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Claimed => "claimed",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The inverse of [`JobState::as_str`]; exact, case-sensitive.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Whether no event can leave this state.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a job: a trainer's report ([`JobEventKind`]) or the tenant's
/// cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobEvent {
    Claimed,
    Running,
    Progress,
    Succeeded,
    Failed,
    /// Sent by the tenant (`POST /v1/training-jobs/{id}/cancel`), never by a trainer.
    Cancel,
}

impl JobEvent {
    /// Every event.
    pub const ALL: [JobEvent; 6] = [
        Self::Claimed,
        Self::Running,
        Self::Progress,
        Self::Succeeded,
        Self::Failed,
        Self::Cancel,
    ];

    /// The event's name: the trainer's `type` string, or `cancel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Running => "running",
            Self::Progress => "progress",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancel => "cancel",
        }
    }
}

impl fmt::Display for JobEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&JobEventKind> for JobEvent {
    fn from(kind: &JobEventKind) -> Self {
        match kind {
            JobEventKind::Claimed => Self::Claimed,
            JobEventKind::Running => Self::Running,
            JobEventKind::Progress { .. } => Self::Progress,
            JobEventKind::Succeeded { .. } => Self::Succeeded,
            JobEventKind::Failed { .. } => Self::Failed,
        }
    }
}

/// An event that the job's current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IllegalTransition {
    pub from: JobState,
    pub event: JobEvent,
}

impl fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event '{}' is not allowed in state '{}'",
            self.event, self.from
        )
    }
}

impl std::error::Error for IllegalTransition {}

/// The state after `event` happens in state `from`, or why it cannot.
///
/// Legal edges, and only these: queued→claimed (claimed); claimed→running and
/// queued→running (running; a trainer may skip claiming); running→running
/// (progress); running→succeeded (succeeded); queued, claimed or running→failed
/// (failed); queued, claimed or running→cancelled (cancel).
pub fn transition(from: JobState, event: JobEvent) -> Result<JobState, IllegalTransition> {
    use JobEvent as E;
    use JobState as S;
    match (from, event) {
        (S::Queued, E::Claimed) => Ok(S::Claimed),
        (S::Queued | S::Claimed, E::Running) => Ok(S::Running),
        (S::Running, E::Progress) => Ok(S::Running),
        (S::Running, E::Succeeded) => Ok(S::Succeeded),
        (S::Queued | S::Claimed | S::Running, E::Failed) => Ok(S::Failed),
        (S::Queued | S::Claimed | S::Running, E::Cancel) => Ok(S::Cancelled),
        _ => Err(IllegalTransition { from, event }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    use JobEvent as E;
    use JobState as S;

    /// `None` marks an illegal transition.
    const TABLE: [(JobState, JobEvent, Option<JobState>); 36] = [
        (S::Queued, E::Claimed, Some(S::Claimed)),
        (S::Queued, E::Running, Some(S::Running)),
        (S::Queued, E::Progress, None),
        (S::Queued, E::Succeeded, None),
        (S::Queued, E::Failed, Some(S::Failed)),
        (S::Queued, E::Cancel, Some(S::Cancelled)),
        (S::Claimed, E::Claimed, None),
        (S::Claimed, E::Running, Some(S::Running)),
        (S::Claimed, E::Progress, None),
        (S::Claimed, E::Succeeded, None),
        (S::Claimed, E::Failed, Some(S::Failed)),
        (S::Claimed, E::Cancel, Some(S::Cancelled)),
        (S::Running, E::Claimed, None),
        (S::Running, E::Running, None),
        (S::Running, E::Progress, Some(S::Running)),
        (S::Running, E::Succeeded, Some(S::Succeeded)),
        (S::Running, E::Failed, Some(S::Failed)),
        (S::Running, E::Cancel, Some(S::Cancelled)),
        (S::Succeeded, E::Claimed, None),
        (S::Succeeded, E::Running, None),
        (S::Succeeded, E::Progress, None),
        (S::Succeeded, E::Succeeded, None),
        (S::Succeeded, E::Failed, None),
        (S::Succeeded, E::Cancel, None),
        (S::Failed, E::Claimed, None),
        (S::Failed, E::Running, None),
        (S::Failed, E::Progress, None),
        (S::Failed, E::Succeeded, None),
        (S::Failed, E::Failed, None),
        (S::Failed, E::Cancel, None),
        (S::Cancelled, E::Claimed, None),
        (S::Cancelled, E::Running, None),
        (S::Cancelled, E::Progress, None),
        (S::Cancelled, E::Succeeded, None),
        (S::Cancelled, E::Failed, None),
        (S::Cancelled, E::Cancel, None),
    ];

    #[test]
    fn every_state_and_event_pair_matches_the_table() {
        for (from, event, expected) in TABLE {
            let expected = expected.ok_or(IllegalTransition { from, event });
            assert_eq!(transition(from, event), expected, "{from} × {event}");
        }
    }

    #[test]
    fn the_table_covers_every_state_and_event_exactly_once() {
        for from in JobState::ALL {
            for event in JobEvent::ALL {
                let rows = TABLE
                    .iter()
                    .filter(|(f, e, _)| *f == from && *e == event)
                    .count();
                assert_eq!(rows, 1, "{from} × {event}");
            }
        }
    }

    #[test]
    fn terminal_states_accept_no_event() {
        for from in JobState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in JobEvent::ALL {
                assert!(transition(from, event).is_err(), "{from} × {event}");
            }
        }
        let terminal: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, [S::Succeeded, S::Failed, S::Cancelled]);
    }

    #[test]
    fn illegal_transition_names_event_and_state() {
        let err = transition(S::Succeeded, E::Running).unwrap_err();
        assert_eq!(
            err.to_string(),
            "event 'running' is not allowed in state 'succeeded'"
        );
        assert_eq!((err.from, err.event), (S::Succeeded, E::Running));
        assert_eq!(
            transition(S::Cancelled, E::Cancel).unwrap_err().to_string(),
            "event 'cancel' is not allowed in state 'cancelled'"
        );
    }

    #[test]
    fn states_round_trip_through_their_names() {
        let names = [
            "queued",
            "claimed",
            "running",
            "succeeded",
            "failed",
            "cancelled",
        ];
        for (state, name) in JobState::ALL.into_iter().zip(names) {
            assert_eq!(state.as_str(), name);
            assert_eq!(JobState::parse(name), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::from(name)
            );
        }
        assert_eq!(JobState::parse("Queued"), None);
        assert_eq!(JobState::parse("cancel"), None);
    }

    #[test]
    fn trainer_event_kinds_map_to_events_of_the_same_name() {
        let kinds = [
            JobEventKind::Claimed,
            JobEventKind::Running,
            JobEventKind::Progress {
                step: 1,
                metrics: Map::new(),
            },
            JobEventKind::Succeeded {
                artifact: "a".into(),
            },
            JobEventKind::Failed { error: "e".into() },
        ];
        for kind in &kinds {
            let event = JobEvent::from(kind);
            assert_eq!(event.as_str(), kind.name());
            assert_ne!(event, E::Cancel);
        }
    }
}
