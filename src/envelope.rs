//! The envelope: what the Worker tells a key's object about a request, besides
//! its body — who asks, for which key and route, with which fingerprint. Plain
//! data (sent as a JSON header), shared by the Worker, the handlers and the object.

use crate::idempotency::gate::RecordKey;
use crate::idempotency::scope::{forwarded_key, Scope};
use crate::idempotency::{Fingerprint, IdempotencyKey};
use serde::{Deserialize, Serialize};

/// Header carrying the [`Envelope`] from the Worker to the object.
pub const ENVELOPE_HEADER: &str = "x-idemgate-envelope";

/// What the Worker tells the object about a request, besides its body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The caller's tenant: the scope of the handlers' domain rows.
    pub scope: String,
    /// The key's scope (`idempotency::scope`): tenant and subject for a
    /// client's key, the tenant for a server-derived one.
    pub record_scope: String,
    /// The concrete route (`POST /v1/training-jobs/job_1/cancel`): part of the key's identity.
    pub route: String,
    /// Its template (`POST /v1/training-jobs/{id}/cancel`): picks the handler.
    pub template: String,
    /// The path parameter (job id, function name), if the template has one.
    #[serde(default)]
    pub param: Option<String>,
    /// Request headers the handler forwards (origin functions).
    #[serde(default)]
    pub forward: Vec<(String, String)>,
    pub key: IdempotencyKey,
    /// The request's fingerprint (none for the key's state and release).
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    pub caller_sub: String,
    /// The caller has the `admin` role (may release any key of the tenant).
    #[serde(default)]
    pub admin: bool,
    /// `Prefer: wait=N`, capped by `IDEMPOTENCY_MAX_WAIT_SECONDS`; 0 = answer at once.
    pub wait_ms: i64,
    /// Test hooks, honoured only with `IDEMGATE_TEST_HOOKS=1` (checked by the Worker).
    #[serde(default)]
    pub test_delay_ms: u64,
    #[serde(default)]
    pub test_fail: Option<String>,
    /// The Worker keeps copies of replays (`REPLAY_CACHE_MS`): the object may
    /// lend one ([`crate::idempotency::copies`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy: bool,
    /// The execution's fence (`gate::Decision::Execute`), set by the key's
    /// object when it admits the execution; never sent by the Worker.
    #[serde(skip)]
    pub fence: Option<i64>,
}

impl Envelope {
    /// The identity of the key's record.
    pub fn record_key(&self) -> RecordKey {
        RecordKey {
            scope: self.record_scope.clone(),
            route: self.route.clone(),
            key: self.key.as_str().into(),
        }
    }

    /// The fingerprint's text (empty when the envelope has none: state, release).
    pub fn fingerprint_str(&self) -> &str {
        self.fingerprint.as_ref().map_or("", Fingerprint::as_str)
    }

    /// The key sent to an origin function (never the raw client key).
    pub fn forwarded_key(&self) -> String {
        forwarded_key(&self.record_scope, &self.route, self.key.as_str())
    }

    /// Whether the key's scope is the caller's own (tenant and subject).
    pub fn own_scope(&self) -> bool {
        self.record_scope == Scope::client(&self.scope, &self.caller_sub).encode()
    }
}

/// What the key's object did with a request, sent back to the Worker in an
/// internal header (stripped before the answer leaves): the Worker logs and
/// counts executions, replays, conflicts, mismatches and failures by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateOutcome {
    /// The handler ran and its answer is final.
    Executed,
    /// A stored answer was sent again.
    Replayed,
    /// In flight: 409.
    Conflict,
    /// Same key, other payload: 422.
    Mismatch,
    /// Not stored: a 5xx, a throw, a storage failure.
    Failed,
}

impl GateOutcome {
    pub const ALL: [GateOutcome; 5] = [
        GateOutcome::Executed,
        GateOutcome::Replayed,
        GateOutcome::Conflict,
        GateOutcome::Mismatch,
        GateOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GateOutcome::Executed => "executed",
            GateOutcome::Replayed => "replayed",
            GateOutcome::Conflict => "conflict",
            GateOutcome::Mismatch => "mismatch",
            GateOutcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        GateOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// A final answer (stored, with its expiry).
    pub fn is_final(self) -> bool {
        matches!(self, GateOutcome::Executed | GateOutcome::Replayed)
    }
}

/// What the Worker asks of a key's object. By RPC (the object's `serve`
/// method, through `src/entry.js`) it is the call's first argument, by name;
/// by `fetch` (the form an older Worker version sends during a gradual
/// deployment) it is a method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateCall {
    /// Run (or replay) the command in the body.
    Execute,
    /// The key's state.
    State,
    /// Release the key.
    Release,
}

impl GateCall {
    pub const ALL: [GateCall; 3] = [GateCall::Execute, GateCall::State, GateCall::Release];

    /// The name the RPC call carries.
    pub fn as_str(self) -> &'static str {
        match self {
            GateCall::Execute => "execute",
            GateCall::State => "state",
            GateCall::Release => "release",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        GateCall::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The `fetch` form: method and path on the object.
    pub fn http(self) -> (&'static str, &'static str) {
        match self {
            GateCall::Execute => ("POST", "/execute"),
            GateCall::State => ("GET", "/state"),
            GateCall::Release => ("DELETE", "/state"),
        }
    }

    pub fn from_http(method: &str, path: &str) -> Option<Self> {
        GateCall::ALL
            .into_iter()
            .find(|c| c.http() == (method, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_call_reads_back_from_its_name_and_from_its_http_form() {
        for c in GateCall::ALL {
            assert_eq!(GateCall::parse(c.as_str()), Some(c));
            let (method, path) = c.http();
            assert_eq!(GateCall::from_http(method, path), Some(c));
        }
        assert_eq!(GateCall::parse("EXECUTE"), None);
        assert_eq!(GateCall::parse(""), None);
        assert_eq!(GateCall::from_http("GET", "/execute"), None);
        assert_eq!(GateCall::from_http("POST", "/state"), None);
        assert_eq!(GateCall::from_http("PUT", "/state"), None);
        assert_eq!(GateCall::from_http("POST", "/execute/"), None);
    }

    fn sample() -> Envelope {
        Envelope {
            scope: "acme".into(),
            record_scope: "acme:alice".into(),
            route: "POST /functions/v1/echo".into(),
            template: "POST /functions/v1/{name}".into(),
            param: Some("echo".into()),
            forward: vec![],
            key: IdempotencyKey::parse("k-1").unwrap(),
            fingerprint: Some(crate::idempotency::Fingerprint::compute(
                "POST",
                "/functions/v1/{name}",
                b"{}",
                true,
                None,
            )),
            caller_sub: "alice".into(),
            admin: false,
            wait_ms: 0,
            test_delay_ms: 0,
            test_fail: None,
            copy: false,
            fence: None,
        }
    }

    #[test]
    fn a_fence_is_never_taken_from_the_wire() {
        let mut e = sample();
        e.fence = Some(42);
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains("fence"), "{text}");
        let forged = text.replacen('{', "{\"fence\":99,", 1);
        let back: Envelope = serde_json::from_str(&forged).unwrap();
        assert_eq!(back.fence, None);
    }

    #[test]
    fn an_envelope_round_trips_and_its_key_is_parsed_again_on_arrival() {
        let e = sample();
        let text = serde_json::to_string(&e).unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.key, e.key);
        assert_eq!(back.fingerprint, e.fingerprint);
        assert_eq!(back.fingerprint_str().len(), 64);
        // A key that is not a valid idempotency key never reaches the object.
        let bad = text.replace("\"k-1\"", "\"bad key\"");
        assert!(serde_json::from_str::<Envelope>(&bad).is_err());
        // State and release envelopes carry no fingerprint.
        let none = text.replace(&format!("\"{}\"", e.fingerprint_str()), "null");
        let back: Envelope = serde_json::from_str(&none).unwrap();
        assert_eq!(back.fingerprint_str(), "");
        assert_eq!(back.fingerprint, None);
    }

    #[test]
    fn outcomes_round_trip_through_their_header_text() {
        for o in GateOutcome::ALL {
            assert_eq!(GateOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(GateOutcome::parse("Executed"), None);
        assert_eq!(GateOutcome::parse(""), None);
    }
}
