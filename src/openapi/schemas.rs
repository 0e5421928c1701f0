//! The wire shapes of request and response bodies, as OpenAPI schemas.
//!
//! The handlers build most answers with `serde_json::json!` (they are stored
//! and replayed as bytes); these types describe those bodies field for field
//! beside nothing that could check them at compile time, so schemathesis'
//! `response_schema_conformance` (tests/e2e/test_openapi.py) is their guard.
//! Objects are open (extra fields allowed): a client must ignore fields it does
//! not know. Request schemas describe what the parsers in `staging::requests`,
//! `training::requests` and `documents` accept.
//!
//! The problem document and the health answer are the types the Worker
//! serialises ([`crate::problem::ProblemDetails`], [`Health`]).

#![allow(dead_code)] // Fields are read by the schema derive only.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// `GET /healthz`: the body the Worker sends.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

// ---- documents ----

/// `POST /v1/documents`: the text itself (`content`) or its bytes in base64.
#[derive(ToSchema)]
pub struct UploadDocument {
    filename: String,
    /// `text/plain`, `text/markdown`, `text/html`, `text/csv`, `application/json`.
    content_type: String,
    /// The text (give this or `content_base64`).
    content: Option<String>,
    /// The bytes, standard base64 (give this or `content`).
    content_base64: Option<String>,
    /// Characters per chunk (default `CHUNK_SIZE`).
    chunk_size: Option<u32>,
    /// Characters shared by neighbouring chunks (default `CHUNK_OVERLAP`).
    chunk_overlap: Option<u32>,
}

#[derive(ToSchema)]
pub struct TextStats {
    words: u64,
    lines: u64,
    chars: u64,
    chunks: u64,
}

#[derive(ToSchema)]
pub struct Chunking {
    size: u64,
    overlap: u64,
}

/// A processed document (the upload's answer; `GET` adds `text`).
#[derive(ToSchema)]
pub struct Document {
    id: String,
    filename: String,
    content_type: String,
    sha256: String,
    size_bytes: u64,
    stats: TextStats,
    chunking: Chunking,
    /// On the upload's answer.
    chunk_ids: Option<Vec<String>>,
    /// On `GET /v1/documents/{id}`: the extracted text.
    text: Option<String>,
    /// Milliseconds since the epoch.
    created_at: i64,
}

#[derive(ToSchema)]
pub struct Chunk {
    id: String,
    index: u64,
    text: String,
    start: u64,
    end: u64,
}

#[derive(ToSchema)]
pub struct ChunkPage {
    document_id: String,
    total: u64,
    offset: u64,
    limit: u64,
    next_offset: Option<u64>,
    chunks: Vec<Chunk>,
}

// ---- training ----

/// `POST /v1/training-data`.
#[derive(ToSchema)]
pub struct CreateDataset {
    /// 1 to 100 document ids of the caller's tenant.
    document_ids: Vec<String>,
    /// `chat`, `completion` or `instruction` (default `chat`).
    format: Option<String>,
    min_chars: Option<u32>,
    max_examples: Option<u32>,
}

/// A dataset (the creation's answer and `GET /v1/training-data/{id}`).
#[derive(ToSchema)]
pub struct Dataset {
    dataset_id: String,
    format: String,
    document_ids: Vec<String>,
    #[schema(value_type = Object)]
    stats: Value,
    examples_url: String,
    created_at: i64,
}

/// `POST /v1/training-jobs`.
#[derive(ToSchema)]
pub struct CreateJob {
    dataset_id: String,
    base_model: String,
    #[schema(value_type = Option<Object>)]
    hyperparameters: Option<Value>,
}

/// A training job.
#[derive(ToSchema)]
pub struct Job {
    id: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`, …
    status: String,
    dataset_id: String,
    base_model: String,
    #[schema(value_type = Object)]
    hyperparameters: Value,
    #[schema(value_type = Object)]
    dispatch: Value,
    created_at: i64,
}

#[derive(ToSchema)]
pub struct JobList {
    jobs: Vec<Job>,
    offset: u64,
    limit: u64,
    next_offset: Option<u64>,
}

/// `POST /v1/training-jobs/{id}/events`: `event_id` is the idempotency key.
#[derive(ToSchema)]
pub struct JobEvent {
    event_id: String,
    /// `claimed`, `running`, `progress`, `succeeded`, `failed`.
    #[schema(rename = "type")]
    kind: String,
    step: Option<u64>,
    #[schema(value_type = Option<Object>)]
    metrics: Option<Value>,
    artifact: Option<String>,
    error: Option<String>,
}

/// An event applied to a job.
#[derive(ToSchema)]
pub struct JobEventApplied {
    job_id: String,
    event_id: String,
    #[schema(rename = "type")]
    kind: String,
    status: String,
}

/// A reason, optional or required by the route.
#[derive(ToSchema)]
pub struct Reason {
    reason: Option<String>,
}

// ---- staging ----

/// `POST /v1/staging/exports` (also an item of a batch).
#[derive(ToSchema)]
pub struct StageExport {
    invoice_id: String,
    /// `csv` or `json`.
    export_format: String,
    destination_system: String,
    /// The invoice: vendor_name, invoice_number, invoice_date, currency,
    /// total_amount (decimal string), line_items.
    #[schema(value_type = Object)]
    export_data: Value,
    max_retries: Option<u32>,
}

#[derive(ToSchema)]
pub struct StageBatch {
    exports: Vec<StageExport>,
}

/// `PUT /v1/staging/exports/{id}/review`.
#[derive(ToSchema)]
pub struct Review {
    comments: Option<String>,
}

/// `PUT /v1/staging/exports/{id}/approve`: optionally with corrected data.
#[derive(ToSchema)]
pub struct Approve {
    #[schema(value_type = Option<Object>)]
    approved_data: Option<Value>,
    change_reason: Option<String>,
    approval_comments: Option<String>,
}

/// `PUT …/reject`, `POST …/rollback`: the reason is required.
#[derive(ToSchema)]
pub struct RequiredReason {
    reason: String,
}

/// `POST /v1/staging/exports/{id}/post`.
#[derive(ToSchema)]
pub struct Post {
    external_reference: Option<String>,
    export_filename: Option<String>,
}

/// A staged export, with its quality score and findings.
#[derive(ToSchema)]
pub struct Export {
    id: String,
    /// `prepared`, `reviewed`, `approved`, `rejected`, `posted`, `failed`,
    /// `rolled_back`, `expired`.
    status: String,
    invoice_id: String,
    export_format: String,
    destination_system: String,
    quality_score: f64,
    validation_errors: Vec<Finding>,
    validation_warnings: Vec<Finding>,
    created_at: i64,
    updated_at: i64,
}

#[derive(ToSchema)]
pub struct Finding {
    code: String,
    field: String,
    message: String,
}

#[derive(ToSchema)]
pub struct ExportList {
    exports: Vec<Export>,
    offset: u64,
    limit: u64,
    next_offset: Option<u64>,
}

#[derive(ToSchema)]
pub struct Diff {
    export_id: String,
    status: String,
    approved: bool,
    change_reason: Option<String>,
    #[schema(value_type = Vec<Object>)]
    changes: Vec<Value>,
}

#[derive(ToSchema)]
pub struct AuditEntry {
    seq: u64,
    actor: String,
    event: String,
    from: Option<String>,
    to: String,
    idempotency_key: Option<String>,
    created_at: i64,
}

#[derive(ToSchema)]
pub struct Audit {
    export_id: String,
    entries: Vec<AuditEntry>,
}

/// The export's file as JSON: the posted one, or as posting would render it.
#[derive(ToSchema)]
pub struct Preview {
    export_id: String,
    status: String,
    /// `posted` or `rendered`.
    source: String,
    file_name: String,
    content_type: String,
    size: u64,
    content: String,
}

/// One item of a batch: staged (with its export) or invalid (with its error).
#[derive(ToSchema)]
pub struct BatchItem {
    index: u64,
    /// `staged` or `invalid`.
    status: String,
    export_id: Option<String>,
    error: Option<String>,
}

#[derive(ToSchema)]
pub struct BatchResult {
    batch_id: String,
    total: u64,
    staged: u64,
    invalid: u64,
    items: Vec<BatchItem>,
}

#[derive(ToSchema)]
pub struct BatchProgress {
    batch_id: String,
    total: u64,
    staged: u64,
    invalid: u64,
    #[schema(value_type = Object)]
    by_state: Value,
    average_quality: Option<f64>,
    created_at: i64,
}

// ---- idempotency ----

/// The tenant's idempotency records and outcome counts.
#[derive(ToSchema)]
pub struct Stats {
    tenant: String,
    #[schema(value_type = Object)]
    totals: Value,
    #[schema(value_type = Object)]
    routes: Value,
}
