//! generate-training-data, start-training and the trainer's side:
//! `POST /v1/training-data`, `POST /v1/training-jobs`, `POST
//! /v1/training-jobs/{id}/events` and `/cancel`, and their reads. The logic
//! (examples, validation, the job state machine) is in [`crate::training`]; this
//! module reads and writes the rows.
//!
//! - [`datasets`]: build and store a dataset, its reads and its JSONL stream;
//! - [`jobs`]: create a job, the job row and its public view, the job reads;
//! - [`dispatch`]: send a job to the trainer, and the sweep's retries;
//! - [`events`]: the trainer's events and cancel, and repeated event ids.

mod datasets;
mod dispatch;
mod events;
mod jobs;

pub use datasets::{create_dataset, dataset_jsonl, get_dataset};
pub use dispatch::{dispatch_job, dispatch_key, retry_dispatches};
pub use events::{cancel_job, job_event};
pub use jobs::{create_job, get_job, list_jobs};

use crate::http;
use crate::problem::ApiError;
use worker::Response;

fn not_found(what: &str, id: &str) -> Response {
    http::problem(&ApiError::NotFound(format!("{what} {id} not found")))
}
