//! generate-training-data, start-training and the trainer's side:
//! `POST /v1/training-data`, `POST /v1/training-jobs`, `POST
//! /v1/training-jobs/{id}/events` and `/cancel`, and their reads. The logic
//! (examples, validation, the job state machine) is in [`crate::training`].

use super::{AfterCommit, HandlerOutcome, HandlerResult};
use crate::auth::Caller;
use crate::config::Config;
use crate::envelope::Envelope;
use crate::http;
use crate::idempotency::StoredResponse;
use crate::ids::new_id;
use crate::problem::ApiError;
use crate::store::{self, int, s, stmt};
use crate::training::{
    build_examples, parse_cancel_request, parse_dataset_request, parse_event_request,
    parse_job_request, transition, Format, JobEvent, JobState, SourceDocument,
};
use crate::upstream::{self, UpstreamResult};
use serde::Deserialize;
use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Headers, Response, ResponseBuilder, Result};

/// Examples per multi-row INSERT: 5 bound values each, under D1's 100 per statement.
const EXAMPLES_PER_INSERT: usize = 20;
/// Examples per page of the JSONL stream: memory stays bounded whatever the size.
const JSONL_PAGE: i64 = 500;

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loads the caller's documents in request order; ids that are unknown or
/// belong to another tenant are returned as missing (the same answer for both:
/// another tenant's ids must not be distinguishable from unknown ones).
async fn load_sources(
    db: &D1Database,
    tenant: &str,
    ids: &[String],
    format: Format,
) -> Result<std::result::Result<Vec<SourceDocument>, Vec<String>>> {
    #[derive(Deserialize)]
    struct DocRow {
        id: String,
        text: Option<String>,
    }
    #[derive(Deserialize)]
    struct ChunkRow {
        document_id: String,
        text: String,
    }
    let mut args: Vec<JsValue> = vec![s(tenant)];
    args.extend(ids.iter().map(|i| s(i)));
    let text_col = if format == Format::Chat {
        "text"
    } else {
        "NULL AS text"
    };
    let found: Vec<DocRow> = store::all(
        db,
        &format!(
            "SELECT id, {text_col} FROM documents WHERE tenant = ?1 AND id IN ({})",
            placeholders(2, ids.len())
        ),
        &args,
    )
    .await?;
    let missing: Vec<String> = ids
        .iter()
        .filter(|i| !found.iter().any(|d| &d.id == *i))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Ok(Err(missing));
    }
    let chunks: Vec<ChunkRow> = if format == Format::Chunks {
        store::all(db,
            &format!(
                "SELECT document_id, text FROM chunks WHERE tenant = ?1 AND document_id IN ({}) ORDER BY document_id, idx",
                placeholders(2, ids.len())
            ),
            &args).await?
    } else {
        vec![]
    };
    let mut by_id: std::collections::HashMap<String, SourceDocument> = found
        .into_iter()
        .map(|d| {
            (
                d.id.clone(),
                SourceDocument {
                    id: d.id,
                    text: d.text.unwrap_or_default(),
                    chunks: vec![],
                },
            )
        })
        .collect();
    for c in chunks {
        if let Some(d) = by_id.get_mut(&c.document_id) {
            d.chunks.push(c.text);
        }
    }
    Ok(Ok(ids.iter().filter_map(|i| by_id.remove(i)).collect()))
}

/// `POST /v1/training-data`: builds the dataset and stores it with its examples.
pub async fn create_dataset(
    db: &D1Database,
    env: &Envelope,
    body: &[u8],
    now: i64,
) -> HandlerResult {
    let req = parse_dataset_request(body)?;
    let docs = match load_sources(db, &env.scope, &req.document_ids, req.format).await? {
        Ok(d) => d,
        Err(missing) => {
            return Err(
                ApiError::NotFound(format!("documents not found: {}", missing.join(", "))).into(),
            )
        }
    };
    let (examples, stats) = build_examples(&docs, req.format, req.min_chars, req.max_examples);
    let id = new_id("ds");
    let per_document: Vec<Value> = stats
        .per_document
        .iter()
        .map(|(d, n)| json!({"document_id": d, "examples": n}))
        .collect();
    let mut writes: Vec<D1PreparedStatement> =
        Vec::with_capacity(1 + examples.len() / EXAMPLES_PER_INSERT + 1);
    writes.push(stmt(
        db,
        "INSERT INTO datasets (id, tenant, format, document_ids, min_chars, max_examples, example_count, \
         duplicates_dropped, too_short_dropped, char_count, estimated_tokens, per_document, created_by, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        &[
            s(&id),
            s(&env.scope),
            s(req.format.as_str()),
            s(&json!(req.document_ids).to_string()),
            int(req.min_chars as i64),
            req.max_examples.map_or(JsValue::NULL, |m| int(m as i64)),
            int(stats.examples as i64),
            int(stats.duplicates_dropped as i64),
            int(stats.too_short_dropped as i64),
            int(stats.chars as i64),
            int(stats.estimated_tokens as i64),
            s(&Value::Array(per_document.clone()).to_string()),
            s(&env.caller_sub),
            int(now),
        ],
    )?);
    for (batch_no, batch) in examples.chunks(EXAMPLES_PER_INSERT).enumerate() {
        let mut args = Vec::with_capacity(batch.len() * 5);
        let mut rows = Vec::with_capacity(batch.len());
        for (i, ex) in batch.iter().enumerate() {
            let p = i * 5;
            rows.push(format!(
                "(?{}, ?{}, ?{}, ?{}, ?{})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5
            ));
            args.extend([
                s(&id),
                int((batch_no * EXAMPLES_PER_INSERT + i) as i64),
                s(&ex.document_id),
                s(&ex.sha256),
                s(&ex.line),
            ]);
        }
        writes.push(stmt(
            db,
            &format!(
                "INSERT INTO examples (dataset_id, idx, document_id, sha256, line) VALUES {}",
                rows.join(", ")
            ),
            &args,
        )?);
    }
    let body = json!({
        "dataset_id": id,
        "format": req.format.as_str(),
        "document_ids": req.document_ids,
        "stats": {
            "examples": stats.examples,
            "duplicates_dropped": stats.duplicates_dropped,
            "too_short_dropped": stats.too_short_dropped,
            "chars": stats.chars,
            "estimated_tokens": stats.estimated_tokens,
            "per_document": per_document,
        },
        "examples_url": format!("/v1/training-data/{id}.jsonl"),
        "created_at": now,
    });
    Ok(HandlerOutcome::Commit {
        response: http::json_stored(
            201,
            &body,
            &[("location", &format!("/v1/training-data/{id}"))],
        ),
        writes,
        after: None,
    })
}

#[derive(Deserialize)]
struct DatasetRow {
    id: String,
    format: Format,
    document_ids: String,
    min_chars: f64,
    max_examples: Option<f64>,
    example_count: f64,
    duplicates_dropped: f64,
    too_short_dropped: f64,
    char_count: f64,
    estimated_tokens: f64,
    per_document: String,
    created_at: f64,
}

async fn find_dataset(db: &D1Database, tenant: &str, id: &str) -> Result<Option<DatasetRow>> {
    store::first(db,
        "SELECT id, format, document_ids, min_chars, max_examples, example_count, duplicates_dropped, \
         too_short_dropped, char_count, estimated_tokens, per_document, created_at \
         FROM datasets WHERE id = ?1 AND tenant = ?2",
        &[s(id), s(tenant)]).await
}

fn not_found(what: &str, id: &str) -> Response {
    http::problem(&ApiError::NotFound(format!("{what} {id} not found")))
}

/// `GET /v1/training-data/{id}`.
pub async fn get_dataset(db: &D1Database, caller: &Caller, id: &str) -> Result<Response> {
    let Some(d) = find_dataset(db, &caller.tenant, id).await? else {
        return Ok(not_found("dataset", id));
    };
    let parse = |t: &str| serde_json::from_str::<Value>(t);
    Ok(http::json(
        200,
        &json!({
            "dataset_id": d.id,
            "format": d.format,
            "document_ids": parse(&d.document_ids)?,
            "min_chars": d.min_chars as i64,
            "max_examples": d.max_examples.map(|m| m as i64),
            "stats": {
                "examples": d.example_count as i64,
                "duplicates_dropped": d.duplicates_dropped as i64,
                "too_short_dropped": d.too_short_dropped as i64,
                "chars": d.char_count as i64,
                "estimated_tokens": d.estimated_tokens as i64,
                "per_document": parse(&d.per_document)?,
            },
            "examples_url": format!("/v1/training-data/{}.jsonl", d.id),
            "created_at": d.created_at as i64,
        }),
    ))
}

/// `GET /v1/training-data/{id}.jsonl`: the examples as `application/x-ndjson`,
/// streamed page by page (keyset on `idx`), so memory stays bounded.
pub async fn dataset_jsonl(db: D1Database, caller: &Caller, id: &str) -> Result<Response> {
    if find_dataset(&db, &caller.tenant, id).await?.is_none() {
        return Ok(not_found("dataset", id));
    }
    #[derive(Deserialize)]
    struct Line {
        idx: f64,
        line: String,
    }
    let id = id.to_string();
    let db = std::rc::Rc::new(db);
    let pages = futures_util::stream::try_unfold(Some(-1i64), move |after| {
        let (db, id) = (db.clone(), id.clone());
        async move {
            let Some(after) = after else { return Ok(None) };
            let rows: Vec<Line> = store::all(&db,
                "SELECT idx, line FROM examples WHERE dataset_id = ?1 AND idx > ?2 ORDER BY idx LIMIT ?3",
                &[s(&id), int(after), int(JSONL_PAGE)]).await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let next = (rows.len() as i64 == JSONL_PAGE)
                .then(|| rows.last().map_or(after, |r| r.idx as i64));
            let mut out = Vec::new();
            for r in rows {
                out.extend_from_slice(r.line.as_bytes());
                out.push(b'\n');
            }
            Ok::<_, worker::Error>(Some((out, next)))
        }
    });
    let headers = Headers::new();
    headers.set("content-type", "application/x-ndjson")?;
    ResponseBuilder::new()
        .with_headers(headers)
        .from_stream(pages)
}

/// `POST /v1/training-jobs`: a `queued` job for one of the tenant's datasets.
pub async fn create_job(
    db: &D1Database,
    cfg: &Config,
    env: &Envelope,
    body: &[u8],
    now: i64,
) -> HandlerResult {
    let req = parse_job_request(body)?;
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
        "dispatch": dispatch,
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

/// The key the trainer sees for a job's dispatch: derived from the job id, so a
/// retried dispatch (after a failure, or by the sweep) is deduplicated by the trainer.
pub fn dispatch_key(job_id: &str) -> String {
    format!("dispatch-{job_id}")
}

/// A training job as stored. The state is parsed as the row is read: a state the
/// code does not know fails the row's decoding (bad stored data, 500).
#[derive(Deserialize)]
struct JobRow {
    id: String,
    tenant: String,
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

const JOB_COLUMNS: &str =
    "id, tenant, dataset_id, base_model, hyperparameters, status, version, progress, artifact, \
     error, dispatch_status, dispatch_error, dispatch_attempts, created_at, updated_at";

/// The job's public view. Fails (bad stored data) if a stored JSON column does
/// not parse.
fn job_json(j: &JobRow) -> Result<Value> {
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

/// Sends a job to `TRAINER_URL` and records the outcome on the job. A failed
/// dispatch leaves the job `queued` with the error; the scheduled sweep retries it
/// (with the same derived key) and the trainer can also pull queued jobs.
pub async fn dispatch_job(db: &D1Database, cfg: &Config, job_id: &str) {
    let Some(url) = cfg.trainer_url.as_deref() else {
        return;
    };
    let result = async {
        let job: Option<JobRow> = store::first(
            db,
            &format!("SELECT {JOB_COLUMNS} FROM training_jobs WHERE id = ?1"),
            &[s(job_id)],
        )
        .await?;
        let Some(job) = job else { return Ok(()) };
        let mut payload = job_json(&job)?;
        payload["tenant"] = json!(job.tenant);
        payload["events_url"] = json!(format!("/v1/training-jobs/{}/events", job.id));
        let forward = [("content-type".to_string(), http::JSON.to_string())];
        let (status, error) = match upstream::call(
            cfg,
            url,
            payload.to_string().as_bytes(),
            &forward,
            Some(&dispatch_key(job_id)),
        )
        .await
        {
            UpstreamResult::Answered { status, .. } if (200..300).contains(&status) => {
                ("dispatched", None)
            }
            UpstreamResult::Answered { status, .. } => {
                ("failed", Some(format!("trainer answered {status}")))
            }
            UpstreamResult::TimedOut => {
                ("failed", Some("trainer did not answer in time".to_string()))
            }
            UpstreamResult::Unreachable(e) => ("failed", Some(format!("trainer unreachable: {e}"))),
        };
        stmt(
            db,
            "UPDATE training_jobs SET dispatch_status = ?1, dispatch_error = ?2, \
             dispatch_attempts = dispatch_attempts + 1 WHERE id = ?3",
            &[
                s(status),
                error.as_deref().map_or(JsValue::NULL, s),
                s(job_id),
            ],
        )?
        .run()
        .await?;
        Ok::<_, worker::Error>(())
    }
    .await;
    if let Err(e) = result {
        worker::console_error!("dispatch of {job_id} failed: {e}");
    }
}

/// The scheduled sweep's share: re-dispatch queued jobs whose dispatch failed, or
/// is still pending a minute after creation. Bounded per run.
pub async fn retry_dispatches(db: &D1Database, cfg: &Config, now: i64) -> Result<usize> {
    if cfg.trainer_url.is_none() {
        return Ok(0);
    }
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let ids: Vec<Id> = store::all(
        db,
        "SELECT id FROM training_jobs WHERE status = 'queued' AND dispatch_attempts < 10 \
         AND (dispatch_status = 'failed' OR (dispatch_status = 'pending' AND created_at < ?1)) \
         ORDER BY created_at LIMIT 20",
        &[int(now - 60_000)],
    )
    .await?;
    for id in &ids {
        dispatch_job(db, cfg, &id.id).await;
    }
    Ok(ids.len())
}

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
    body: &[u8],
    now: i64,
) -> HandlerResult {
    let ev = parse_event_request(body)?;
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
    body: &[u8],
    now: i64,
) -> HandlerResult {
    let reason = parse_cancel_request(body)?;
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

    #[test]
    fn a_stored_dataset_format_is_parsed_as_the_row_is_read() {
        let stored = |format: &str| {
            json!({"id": "ds_1", "format": format, "document_ids": "[]", "min_chars": 0.0,
                   "max_examples": null, "example_count": 0.0, "duplicates_dropped": 0.0,
                   "too_short_dropped": 0.0, "char_count": 0.0, "estimated_tokens": 0.0,
                   "per_document": "[]", "created_at": 1.0})
        };
        let row: DatasetRow = serde_json::from_value(stored("chat")).unwrap();
        assert_eq!(row.format, Format::Chat);
        assert!(serde_json::from_value::<DatasetRow>(stored("markdown")).is_err());
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
        assert_eq!(
            problem.body["type"],
            "https://idemgate.dev/errors/idempotency-key-reused"
        );
        assert_eq!(problem.body["idempotency_key"], "e1");
    }
}
