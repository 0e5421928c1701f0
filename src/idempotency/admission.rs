//! The admission decision: what the per-key Durable Object does with a request.
//!
//! [`decide`] is pure. The object reads its slot, calls it, and writes the new
//! slot in the same synchronous turn (no `await` in between), which is what makes
//! the check-and-set atomic.

use super::replay::StoredResponse;

/// What the object remembers about its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub fingerprint: String,
    pub state: SlotState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// A request holds the lease until `lease_expires_at` (ms since the epoch).
    Processing {
        token: String,
        lease_expires_at: i64,
    },
    /// The answer is final until `expires_at` (ms since the epoch).
    Completed {
        response: StoredResponse,
        expires_at: i64,
    },
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Run the handler under a new lease. `takeover` is set when a previous lease
    /// expired without completing: that holder may have committed to D1 before it
    /// died, so the executor must look for a stored record before running again.
    Execute { takeover: bool },
    /// Same key and payload already answered: send the stored answer (final
    /// until `expires_at`).
    Replay {
        response: StoredResponse,
        expires_at: i64,
    },
    /// Another request with this key is running; its lease ends then.
    InFlight { lease_expires_at: i64 },
    /// Same key, other payload: nothing runs.
    Mismatch,
}

/// Decides at time `now` (ms) for a request whose fingerprint is `fingerprint`.
pub fn decide(slot: Option<&Slot>, fingerprint: &str, now: i64) -> Admission {
    let Some(slot) = slot else {
        return Admission::Execute { takeover: false };
    };
    match &slot.state {
        SlotState::Completed { expires_at, .. } if *expires_at <= now => {
            Admission::Execute { takeover: false }
        }
        SlotState::Processing {
            lease_expires_at, ..
        } if *lease_expires_at <= now => Admission::Execute { takeover: true },
        _ if slot.fingerprint != fingerprint => Admission::Mismatch,
        SlotState::Completed {
            response,
            expires_at,
        } => Admission::Replay {
            response: response.clone(),
            expires_at: *expires_at,
        },
        SlotState::Processing {
            lease_expires_at, ..
        } => Admission::InFlight {
            lease_expires_at: *lease_expires_at,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn stored() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
        }
    }

    fn processing(fp: &str, lease_expires_at: i64) -> Slot {
        Slot {
            fingerprint: fp.into(),
            state: SlotState::Processing {
                token: "t".into(),
                lease_expires_at,
            },
        }
    }

    fn completed(fp: &str, expires_at: i64) -> Slot {
        Slot {
            fingerprint: fp.into(),
            state: SlotState::Completed {
                response: stored(),
                expires_at,
            },
        }
    }

    /// The whole decision as a table: slot × fingerprint × clock → admission.
    #[test]
    fn admission_table() {
        let fresh = Admission::Execute { takeover: false };
        let takeover = Admission::Execute { takeover: true };
        let in_flight = Admission::InFlight {
            lease_expires_at: NOW + 1,
        };
        let rows: Vec<(&str, Option<Slot>, &str, Admission)> = vec![
            ("unknown key runs", None, "A", fresh.clone()),
            (
                "running, same payload",
                Some(processing("A", NOW + 1)),
                "A",
                in_flight.clone(),
            ),
            (
                "running, other payload",
                Some(processing("A", NOW + 1)),
                "B",
                Admission::Mismatch,
            ),
            (
                "lease expired, same payload",
                Some(processing("A", NOW)),
                "A",
                takeover.clone(),
            ),
            (
                "lease expired, other payload",
                Some(processing("A", NOW - 5)),
                "B",
                takeover,
            ),
            (
                "completed, same payload",
                Some(completed("A", NOW + 1)),
                "A",
                Admission::Replay {
                    response: stored(),
                    expires_at: NOW + 1,
                },
            ),
            (
                "completed, other payload",
                Some(completed("A", NOW + 1)),
                "B",
                Admission::Mismatch,
            ),
            (
                "completed and expired",
                Some(completed("A", NOW)),
                "A",
                fresh.clone(),
            ),
            (
                "expired, other payload",
                Some(completed("A", NOW - 1)),
                "B",
                fresh,
            ),
        ];
        for (name, slot, fp, want) in rows {
            assert_eq!(decide(slot.as_ref(), fp, NOW), want, "{name}");
        }
    }
}
