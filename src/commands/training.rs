//! Training data and jobs (handlers: `routes::training`): create a dataset,
//! start a job, the trainer's events, cancel.

use super::{path_param, Input, KeyedCommand, KeyedDoc, Parsed};
use crate::config::{Config, KeyPolicy};
use crate::envelope::Envelope;
use crate::idempotency::IdempotencyKey;
use crate::problem::ApiError;
use crate::routes::{training, HandlerResult};
use crate::training::{
    parse_cancel_request, parse_dataset_request, parse_event_request, parse_job_request,
    DatasetRequest, JobEventRequest, JobRequest,
};
use serde::{Deserialize, Serialize};
use worker::D1Database;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateDataset(pub DatasetRequest);

impl KeyedCommand for CreateDataset {
    const TEMPLATE: &'static str = "POST /v1/training-data";
    const DOC: KeyedDoc = KeyedDoc::new(
        "createDataset",
        "Generate training data from documents",
        "training",
        "CreateDataset",
        Some((201, "Dataset")),
    );

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        Parsed::under_header(
            CreateDataset(parse_dataset_request(input.body)?),
            input.header,
        )
    }

    async fn apply(&self, db: &D1Database, _: &Config, env: &Envelope, now: i64) -> HandlerResult {
        training::create_dataset(db, env, &self.0, now).await
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateJob(pub JobRequest);

impl KeyedCommand for CreateJob {
    const TEMPLATE: &'static str = "POST /v1/training-jobs";
    const DOC: KeyedDoc = KeyedDoc::new(
        "createJob",
        "Start a training job (queued, dispatched to TRAINER_URL if set)",
        "training",
        "CreateJob",
        Some((201, "Job")),
    );

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        Parsed::under_header(CreateJob(parse_job_request(input.body)?), input.header)
    }

    async fn apply(
        &self,
        db: &D1Database,
        cfg: &Config,
        env: &Envelope,
        now: i64,
    ) -> HandlerResult {
        training::create_job(db, cfg, env, &self.0, now).await
    }
}

/// The trainer reports an event of the job in the path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportJobEvent(pub JobEventRequest);

impl KeyedCommand for ReportJobEvent {
    const TEMPLATE: &'static str = "POST /v1/training-jobs/{id}/events";
    const DOC: KeyedDoc = KeyedDoc::new(
        "reportJobEvent",
        "The trainer reports a job event; its event_id is the key",
        "training",
        "JobEvent",
        Some((200, "JobEventApplied")),
    )
    .key_help("Optional: the key is the body's event_id; a header naming another key is 400");

    /// The body's event_id is the key.
    fn key_policy(_: &Config) -> KeyPolicy {
        KeyPolicy::Derive
    }

    /// An event is a fact about the job, whoever reports it.
    fn tenant_key(_: &IdempotencyKey) -> bool {
        true
    }

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        // The event id is the key; a header key, if sent, must name the same.
        let ev = parse_event_request(input.body)?;
        let key = IdempotencyKey::parse(&ev.event_id).map_err(|e| ApiError::InvalidKey {
            detail: e.to_string(),
        })?;
        if input.header.is_some_and(|h| h != key) {
            return Err(ApiError::InvalidKey {
                detail: "the Idempotency-Key header differs from the event_id".into(),
            });
        }
        Ok(Parsed::Keyed {
            command: ReportJobEvent(ev),
            key,
            json: true,
        })
    }

    async fn apply(&self, db: &D1Database, _: &Config, env: &Envelope, now: i64) -> HandlerResult {
        training::job_event(db, env, path_param(env), &self.0, now).await
    }
}

/// Cancel the job in the path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelJob {
    pub reason: Option<String>,
}

impl KeyedCommand for CancelJob {
    const TEMPLATE: &'static str = "POST /v1/training-jobs/{id}/cancel";
    const DOC: KeyedDoc = KeyedDoc::new(
        "cancelJob",
        "Cancel a job that has not finished",
        "training",
        "Cancel",
        Some((200, "JobEventApplied")),
    )
    .body_optional();

    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        let reason = parse_cancel_request(input.body)?;
        Parsed::under_header(CancelJob { reason }, input.header)
    }

    async fn apply(&self, db: &D1Database, _: &Config, env: &Envelope, now: i64) -> HandlerResult {
        let reason = self.reason.as_deref();
        training::cancel_job(db, env, path_param(env), reason, now).await
    }
}
