//! Sending a job to `TRAINER_URL` after its creation commits, and the scheduled
//! sweep that retries dispatches that failed or never ran.

use super::jobs::{job_json, JobRow, JOB_COLUMNS};
use crate::config::Config;
use crate::http;
use crate::store::{self, int, s, stmt};
use crate::upstream::{self, UpstreamResult};
use serde::Deserialize;
use serde_json::json;
use wasm_bindgen::JsValue;
use worker::{D1Database, Result};

/// The key the trainer sees for a job's dispatch: derived from the job id, so a
/// retried dispatch (after a failure, or by the sweep) is deduplicated by the trainer.
pub fn dispatch_key(job_id: &str) -> String {
    format!("dispatch-{job_id}")
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
            Some(upstream::OriginKey {
                key: &dispatch_key(job_id),
                fence: None,
            }),
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
