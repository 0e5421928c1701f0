//! The job's state changes: the trainer's events (`POST
//! /v1/training-jobs/{id}/events`, the event id is the key) and `/cancel`, each
//! applied through the pure state machine with its history row; a repeated event
//! id is answered from that history.

use crate::envelope::Envelope;
use crate::http;
use crate::idempotency::StoredResponse;
use crate::problem::ApiError;
use crate::routes::{HandlerOutcome, HandlerResult};
use crate::store::{self, int, s, stmt};
use crate::training::{transition, JobEvent, JobEventRequest, JobState};
use serde::Deserialize;
use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use worker::{D1Database, Result};

/// Applies one event to a job: the transition is checked by the pure state
/// machine; the event row and the job update commit together, and only if the job
/// is still at the version read (else the batch fails and the caller retries).
#[allow(clippy::too_many_arguments)]
async fn apply_event(
    db: &D1Database,
    env: &Envelope,
    job_id: &str,
    event: JobEvent,
    type_name: &str,
    event_id: &str,
    payload: Value,
    now: i64,
) -> HandlerResult {
    #[derive(Deserialize)]
    struct Current {
        status: JobState,
        version: f64,
    }
    let current: Option<Current> = store::first(
        db,
        "SELECT status, version FROM training_jobs WHERE id = ?1 AND tenant = ?2",
        &[s(job_id), s(&env.scope)],
    )
    .await?;
    let Some(current) = current else {
        return Err(ApiError::NotFound(format!("training job {job_id} not found")).into());
    };
    let from = current.status;
    let to = match transition(from, event) {
        Ok(to) => to,
        Err(illegal) => {
            return Err(ApiError::InvalidTransition {
                detail: illegal.to_string(),
                current_state: from.as_str().to_string(),
            }
            .into())
        }
    };
    let version = current.version as i64;
    let field = |name: &str| {
        payload.get(name).map(|v| {
            if let Value::String(s) = v {
                s.clone()
            } else {
                v.to_string()
            }
        })
    };
    let progress = (event == JobEvent::Progress).then(|| payload.to_string());
    let writes = vec![
        stmt(
            db,
            "INSERT INTO training_job_events (job_id, seq, event_id, type, from_state, to_state, payload, actor, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            &[
                s(job_id),
                int(version + 1),
                s(event_id),
                s(type_name),
                s(from.as_str()),
                s(to.as_str()),
                s(&payload.to_string()),
                s(&env.caller_sub),
                int(now),
            ],
        )?,
        stmt(
            db,
            "UPDATE training_jobs SET status = ?1, version = version + 1, updated_at = ?2, \
             progress = COALESCE(?3, progress), artifact = COALESCE(?4, artifact), error = COALESCE(?5, error) \
             WHERE id = ?6 AND version = ?7",
            &[
                s(to.as_str()),
                int(now),
                progress.as_deref().map_or(JsValue::NULL, s),
                field("artifact").as_deref().map_or(JsValue::NULL, s),
                field("error").as_deref().map_or(JsValue::NULL, s),
                s(job_id),
                int(version),
            ],
        )?,
    ];
    Ok(HandlerOutcome::Commit {
        response: event_response(
            job_id,
            event_id,
            type_name,
            from.as_str(),
            to.as_str(),
            version + 1,
        ),
        writes,
        after: None,
    })
}

/// The answer to an applied event. Built from values that are all in its
/// `training_job_events` row (`version` is the row's `seq`), so a repeat of the
/// event can be answered with the same bytes from the row alone.
fn event_response(
    job_id: &str,
    event_id: &str,
    type_name: &str,
    from: &str,
    to: &str,
    version: i64,
) -> StoredResponse {
    let body = json!({
        "job_id": job_id,
        "event_id": event_id,
        "type": type_name,
        "from": from,
        "status": to,
        "version": version,
    });
    http::json_stored(200, &body, &[])
}

/// An event in a job's history, as its first application stored it.
#[derive(Debug, Clone, Deserialize)]
struct AppliedEvent {
    seq: f64,
    r#type: String,
    from_state: String,
    to_state: String,
    /// JSON, as written by [`apply_event`].
    payload: String,
}

/// The answer to an `event_id` that is already in the job's history: what its
/// first application answered if `type` and payload are the same (key order and
/// whitespace do not matter: the payload is compared as JSON), else the
/// `idempotency-key-reused` problem. An event id is a permanent fact about its
/// job, so this holds after the key's idempotency record has expired too.
fn repeated_event(
    job_id: &str,
    event_id: &str,
    applied: &AppliedEvent,
    type_name: &str,
    payload: &Value,
) -> std::result::Result<StoredResponse, ApiError> {
    let stored = serde_json::from_str::<Value>(&applied.payload).ok();
    if applied.r#type != type_name || stored.as_ref() != Some(payload) {
        return Err(ApiError::KeyReused {
            key: event_id.to_string(),
        });
    }
    Ok(event_response(
        job_id,
        event_id,
        &applied.r#type,
        &applied.from_state,
        &applied.to_state,
        applied.seq as i64,
    ))
}

/// The tenant's job's history entry for `event_id`, if the event was applied.
async fn find_applied_event(
    db: &D1Database,
    tenant: &str,
    job_id: &str,
    event_id: &str,
) -> Result<Option<AppliedEvent>> {
    store::first(
        db,
        "SELECT e.seq, e.type, e.from_state, e.to_state, e.payload FROM training_job_events e \
         JOIN training_jobs j ON j.id = e.job_id \
         WHERE e.job_id = ?1 AND e.event_id = ?2 AND j.tenant = ?3",
        &[s(job_id), s(event_id), s(tenant)],
    )
    .await
}

/// `POST /v1/training-jobs/{id}/events`: the event id is the idempotency key.
pub async fn job_event(
    db: &D1Database,
    env: &Envelope,
    job_id: &str,
    ev: &JobEventRequest,
    now: i64,
) -> HandlerResult {
    let payload = ev.kind.payload();
    // The idempotency record of `event_id` expires; the job's history does not. A
    // repeat that reaches the handler (after the record's TTL) is answered from the
    // history and never applied twice.
    if let Some(applied) = find_applied_event(db, &env.scope, job_id, &ev.event_id).await? {
        return Ok(
            match repeated_event(job_id, &ev.event_id, &applied, ev.kind.name(), &payload) {
                Ok(first) => HandlerOutcome::answer(first),
                // Not stored: the key stays free for the original payload, which
                // must keep getting the first answer.
                Err(reused) => HandlerOutcome::transient(http::problem_stored(&reused)),
            },
        );
    }
    let event = JobEvent::from(&ev.kind);
    apply_event(
        db,
        env,
        job_id,
        event,
        ev.kind.name(),
        &ev.event_id,
        payload,
        now,
    )
    .await
}

/// `POST /v1/training-jobs/{id}/cancel`.
pub async fn cancel_job(
    db: &D1Database,
    env: &Envelope,
    job_id: &str,
    reason: Option<&str>,
    now: i64,
) -> HandlerResult {
    let event_id = format!("cancel:{}", env.key);
    apply_event(
        db,
        env,
        job_id,
        JobEvent::Cancel,
        "cancelled",
        &event_id,
        json!({"reason": reason}),
        now,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::parse_event_request;

    /// The row the first application of `body` to a job at `version` wrote, and
    /// the answer it gave (as `apply_event` builds both).
    fn first_application(
        body: &Value,
        from: JobState,
        version: i64,
    ) -> (AppliedEvent, StoredResponse) {
        let ev = parse_event_request(body.to_string().as_bytes()).unwrap();
        let to = transition(from, JobEvent::from(&ev.kind)).unwrap();
        let row = AppliedEvent {
            seq: (version + 1) as f64,
            r#type: ev.kind.name().to_string(),
            from_state: from.as_str().to_string(),
            to_state: to.as_str().to_string(),
            payload: ev.kind.payload().to_string(),
        };
        let answer = event_response(
            "job_1",
            &ev.event_id,
            ev.kind.name(),
            from.as_str(),
            to.as_str(),
            version + 1,
        );
        (row, answer)
    }

    fn repeat(row: &AppliedEvent, body: &str) -> std::result::Result<StoredResponse, ApiError> {
        let ev = parse_event_request(body.as_bytes()).unwrap();
        repeated_event(
            "job_1",
            &ev.event_id,
            row,
            ev.kind.name(),
            &ev.kind.payload(),
        )
    }

    #[test]
    fn a_repeated_event_gets_the_first_answer_byte_for_byte() {
        let cases = [
            (
                json!({"event_id": "e1", "type": "claimed"}),
                JobState::Queued,
                0,
            ),
            (
                json!({"event_id": "e2", "type": "running"}),
                JobState::Claimed,
                1,
            ),
            (
                json!({"event_id": "e3", "type": "progress", "step": 10, "metrics": {"loss": 0.4, "acc": 1.0}}),
                JobState::Running,
                2,
            ),
            (
                json!({"event_id": "e4", "type": "succeeded", "artifact": "s3://m/1"}),
                JobState::Running,
                3,
            ),
            (
                json!({"event_id": "e5", "type": "failed", "error": "oom"}),
                JobState::Claimed,
                1,
            ),
        ];
        for (body, from, version) in cases {
            let (row, first) = first_application(&body, from, version);
            let again = repeat(&row, &body.to_string()).unwrap();
            assert_eq!(again.status, 200, "{body}");
            assert_eq!(again.headers, first.headers, "{body}");
            assert_eq!(
                String::from_utf8(again.body).unwrap(),
                String::from_utf8(first.body).unwrap(),
                "{body}"
            );
        }
    }

    #[test]
    fn the_first_answer_names_the_states_and_version_of_the_first_application() {
        let body = json!({"event_id": "e1", "type": "claimed"});
        let (row, _) = first_application(&body, JobState::Queued, 0);
        let again: Value =
            serde_json::from_slice(&repeat(&row, &body.to_string()).unwrap().body).unwrap();
        assert_eq!(
            again,
            json!({"job_id": "job_1", "event_id": "e1", "type": "claimed", "from": "queued",
                   "status": "claimed", "version": 1})
        );
    }

    #[test]
    fn key_order_and_whitespace_of_the_repeat_do_not_matter() {
        let body = json!({"event_id": "p", "type": "progress", "step": 3, "metrics": {"loss": 0.25, "acc": 0.5}});
        let (row, first) = first_application(&body, JobState::Running, 4);
        let reordered = r#"{ "metrics": {"acc": 0.5,  "loss": 0.25}, "step": 3, "type": "progress", "event_id": "p" }"#;
        assert_eq!(repeat(&row, reordered).unwrap().body, first.body);
    }

    #[test]
    fn a_repeated_event_id_with_another_payload_or_type_is_key_reused() {
        let reused = Err(ApiError::KeyReused { key: "e1".into() });
        let (row, _) = first_application(
            &json!({"event_id": "e1", "type": "claimed"}),
            JobState::Queued,
            0,
        );
        assert_eq!(
            repeat(&row, r#"{"event_id": "e1", "type": "running"}"#),
            reused
        );
        assert_eq!(
            repeat(
                &row,
                r#"{"event_id": "e1", "type": "failed", "error": "x"}"#
            ),
            reused
        );
        let body =
            json!({"event_id": "e1", "type": "progress", "step": 1, "metrics": {"loss": 0.5}});
        let (row, _) = first_application(&body, JobState::Running, 2);
        for other in [
            r#"{"event_id": "e1", "type": "progress", "step": 2, "metrics": {"loss": 0.5}}"#,
            r#"{"event_id": "e1", "type": "progress", "step": 1, "metrics": {"loss": 0.6}}"#,
            r#"{"event_id": "e1", "type": "progress", "step": 1}"#,
        ] {
            assert_eq!(repeat(&row, other), reused, "{other}");
        }
        let problem = ApiError::KeyReused { key: "e1".into() }.to_problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.body["type"], "/errors/idempotency-key-reused");
        assert_eq!(problem.body["idempotency_key"], "e1");
    }
}
