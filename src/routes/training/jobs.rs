//! Training jobs: `POST /v1/training-jobs` creates a `queued` job; the job row,
//! its columns and its public view; `GET /v1/training-jobs/{id}` and the list.

use super::datasets::find_dataset;
use super::not_found;
use crate::auth::Caller;
use crate::config::Config;
use crate::envelope::Envelope;
use crate::http;
use crate::ids::new_id;
use crate::problem::ApiError;
use crate::routes::{AfterCommit, HandlerOutcome, HandlerResult};
use crate::store::{self, int, s, stmt};
use crate::training::{JobRequest, JobState};
use serde::Deserialize;
use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use worker::{D1Database, Response, Result};

/// `POST /v1/training-jobs`: a `queued` job for one of the tenant's datasets.
pub async fn create_job(
    db: &D1Database,
    cfg: &Config,
    env: &Envelope,
    req: &JobRequest,
    now: i64,
) -> HandlerResult {
    match find_dataset(db, &env.scope, &req.dataset_id).await? {
        None => {
            return Err(ApiError::NotFound(format!("dataset {} not found", req.dataset_id)).into())
        }
        Some(d) if d.example_count < 1.0 => {
            return Err(ApiError::Unprocessable {
                slug: "empty-dataset",
                detail: format!("dataset {} has no examples to train on", req.dataset_id),
            }
            .into())
        }
        Some(_) => {}
    }
    let id = new_id("job");
    let dispatch = if cfg.trainer_url.is_some() {
        "pending"
    } else {
        "none"
    };
    let hyper = serde_json::to_value(req.hyperparameters)
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    let writes = vec![stmt(
        db,
        "INSERT INTO training_jobs (id, tenant, dataset_id, base_model, hyperparameters, status, version, \
         dispatch_status, created_by, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'queued', 0, ?6, ?7, ?8, ?8)",
        &[s(&id), s(&env.scope), s(&req.dataset_id), s(&req.base_model), s(&hyper.to_string()), s(dispatch), s(&env.caller_sub), int(now)],
    )?];
    let body = json!({
        "id": id,
        "status": JobState::Queued.as_str(),
        "dataset_id": req.dataset_id,
        "base_model": req.base_model,
        "hyperparameters": hyper,
        // The same shape as the job's GET (found by the OpenAPI schema check).
        "dispatch": {"status": dispatch, "error": null, "attempts": 0},
        "created_at": now,
    });
    Ok(HandlerOutcome::Commit {
        response: http::json_stored(
            201,
            &body,
            &[("location", &format!("/v1/training-jobs/{id}"))],
        ),
        writes,
        after: cfg
            .trainer_url
            .is_some()
            .then_some(AfterCommit::DispatchJob { job_id: id }),
    })
}

/// A training job as stored. The state is parsed as the row is read: a state the
/// code does not know fails the row's decoding (bad stored data, 500).
#[derive(Deserialize)]
pub(super) struct JobRow {
    pub(super) id: String,
    pub(super) tenant: String,
    dataset_id: String,
    base_model: String,
    hyperparameters: String,
    status: JobState,
    version: f64,
    progress: Option<String>,
    artifact: Option<String>,
    error: Option<String>,
    dispatch_status: String,
    dispatch_error: Option<String>,
    dispatch_attempts: f64,
    created_at: f64,
    updated_at: f64,
}

/// The SELECT list that reads a [`JobRow`].
pub(super) const JOB_COLUMNS: &str =
    "id, tenant, dataset_id, base_model, hyperparameters, status, version, progress, artifact, \
     error, dispatch_status, dispatch_error, dispatch_attempts, created_at, updated_at";

/// The job's public view. Fails (bad stored data) if a stored JSON column does
/// not parse.
pub(super) fn job_json(j: &JobRow) -> Result<Value> {
    let parse = |t: &str| serde_json::from_str::<Value>(t);
    Ok(json!({
        "id": j.id,
        "status": j.status,
        "version": j.version as i64,
        "dataset_id": j.dataset_id,
        "base_model": j.base_model,
        "hyperparameters": parse(&j.hyperparameters)?,
        "progress": j.progress.as_deref().map(parse).transpose()?,
        "artifact": j.artifact,
        "error": j.error,
        "dispatch": {"status": j.dispatch_status, "error": j.dispatch_error, "attempts": j.dispatch_attempts as i64},
        "examples_url": format!("/v1/training-data/{}.jsonl", j.dataset_id),
        "created_at": j.created_at as i64,
        "updated_at": j.updated_at as i64,
    }))
}

/// `GET /v1/training-jobs/{id}`: the job and its event history.
pub async fn get_job(db: &D1Database, caller: &Caller, id: &str) -> Result<Response> {
    let job: Option<JobRow> = store::first(
        db,
        &format!("SELECT {JOB_COLUMNS} FROM training_jobs WHERE id = ?1 AND tenant = ?2"),
        &[s(id), s(&caller.tenant)],
    )
    .await?;
    let Some(job) = job else {
        return Ok(not_found("training job", id));
    };
    #[derive(Deserialize)]
    struct EventRow {
        seq: f64,
        event_id: String,
        r#type: String,
        from_state: String,
        to_state: String,
        payload: String,
        actor: String,
        created_at: f64,
    }
    let events: Vec<EventRow> = store::all(db,
        "SELECT seq, event_id, type, from_state, to_state, payload, actor, created_at FROM training_job_events \
         WHERE job_id = ?1 ORDER BY seq",
        &[s(id)]).await?;
    let mut body = job_json(&job)?;
    body["events"] = events
        .into_iter()
        .map(|e| {
            Ok(json!({
                "seq": e.seq as i64, "event_id": e.event_id, "type": e.r#type, "from": e.from_state,
                "to": e.to_state, "payload": serde_json::from_str::<Value>(&e.payload)?,
                "actor": e.actor, "created_at": e.created_at as i64,
            }))
        })
        .collect::<Result<Vec<Value>>>()?
        .into();
    Ok(http::json(200, &body))
}

/// `GET /v1/training-jobs?status=&offset=&limit=`: the tenant's jobs, oldest first.
pub async fn list_jobs(
    db: &D1Database,
    caller: &Caller,
    status: Option<&str>,
    offset: u32,
    limit: u32,
) -> Result<Response> {
    if let Some(st) = status {
        if JobState::parse(st).is_none() {
            return Ok(http::problem(&ApiError::bad_request(
                "invalid-field",
                format!("status {st:?} is not one of queued, claimed, running, succeeded, failed, cancelled"),
            )));
        }
    }
    let jobs: Vec<JobRow> = store::all(db,
        &format!(
            "SELECT {JOB_COLUMNS} FROM training_jobs WHERE tenant = ?1 AND (?2 IS NULL OR status = ?2) \
             ORDER BY created_at, id LIMIT ?3 OFFSET ?4"
        ),
        &[s(&caller.tenant), status.map_or(JsValue::NULL, s), int(limit as i64 + 1), int(offset as i64)]).await?;
    let more = jobs.len() > limit as usize;
    let items = jobs
        .iter()
        .take(limit as usize)
        .map(job_json)
        .collect::<Result<Vec<Value>>>()?;
    let next = more.then(|| offset as i64 + limit as i64);
    Ok(http::json(
        200,
        &json!({"jobs": items, "offset": offset, "limit": limit, "next_offset": next}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_job(status: &str) -> Value {
        json!({"id": "job_1", "tenant": "t", "dataset_id": "ds_1", "base_model": "m",
               "hyperparameters": "{\"epochs\":3}", "status": status, "version": 1.0,
               "progress": null, "artifact": null, "error": null, "dispatch_status": "none",
               "dispatch_error": null, "dispatch_attempts": 0.0, "created_at": 1.0,
               "updated_at": 1.0})
    }

    #[test]
    fn a_stored_job_state_the_code_does_not_know_fails_the_row() {
        for st in JobState::ALL {
            let row: JobRow = serde_json::from_value(stored_job(st.as_str())).unwrap();
            assert_eq!(row.status, st);
            assert_eq!(job_json(&row).unwrap()["status"], st.as_str());
        }
        for unknown in ["archived", "Queued", ""] {
            assert!(
                serde_json::from_value::<JobRow>(stored_job(unknown)).is_err(),
                "{unknown:?}"
            );
        }
    }

    #[test]
    fn a_stored_json_column_that_does_not_parse_is_bad_stored_data_not_null() {
        let mut stored = stored_job("queued");
        stored["hyperparameters"] = json!("{\"epochs\":");
        let row: JobRow = serde_json::from_value(stored).unwrap();
        let err = job_json(&row).unwrap_err();
        assert!(store::is_bad_stored_data(&err), "{err}");
        assert_eq!(store::read_failure(&err), ApiError::Internal);

        let mut stored = stored_job("running");
        stored["progress"] = json!("not json");
        let row: JobRow = serde_json::from_value(stored).unwrap();
        assert!(job_json(&row).is_err());
    }
}
