//! Training: data sets generated from stored documents, and fine-tuning jobs driven
//! by trainer events.
//!
//! Pure, host-testable domain logic: no Worker bindings, no I/O, no clock, so the
//! same inputs always give the same data set lines, errors and transitions (which
//! matters for idempotent replays).
//!
//! - `examples`: `POST /v1/training-data` — [`build_examples`] turns
//!   [`SourceDocument`]s into deduplicated JSONL [`Example`]s ([`Format::Chunks`] or
//!   [`Format::Chat`]) with [`BuildStats`].
//! - `requests`: the three request bodies — [`parse_dataset_request`],
//!   [`parse_job_request`], [`parse_event_request`] — into typed values, or a
//!   [`crate::request_body::RequestError`] naming the field by dotted path.
//! - `jobs`: the job state machine — [`transition`] from a [`JobState`] on a
//!   [`JobEvent`] (a trainer's [`JobEventKind`], or the tenant's cancel).
//!
//! A trainer event is handled as `parse_event_request` →
//! `transition(current, JobEvent::from(&req.kind))` → store the new state with
//! `req.kind.payload()` in the event history.

mod examples;
mod jobs;
mod requests;

pub use examples::{
    build_examples, chat_sections, estimate_tokens, BuildStats, Example, Format, SourceDocument,
};
pub use jobs::{transition, IllegalTransition, JobEvent, JobState};
pub use requests::{
    parse_cancel_request, parse_dataset_request, parse_event_request, parse_job_request,
    DatasetRequest, Hyperparameters, JobEventKind, JobEventRequest, JobRequest, BATCH_SIZE_RANGE,
    DATASET_FIELDS, EPOCHS_RANGE, EVENT_FIELDS, HYPERPARAMETER_FIELDS, JOB_FIELDS,
    MAX_ARTIFACT_CHARS, MAX_BASE_MODEL_CHARS, MAX_DATASET_DOCUMENTS, MAX_DATASET_EXAMPLES,
    MAX_ERROR_CHARS, MAX_EVENT_ID_CHARS,
};
