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
//! serialises ([`crate::problem::ProblemDetails`], [`super::Health`]).

#![allow(dead_code)] // Fields are read by the schema derive only.

use serde_json::Value;
use utoipa::ToSchema;

// ---- documents ----

// `pattern = r"\S"`: a non-blank text, at least one character that is not white space.

/// `POST /v1/documents`: the text itself (`content`) or its bytes in base64.
#[derive(ToSchema)]
#[schema(example = json!({"filename": "note.md", "content_type": "text/markdown",
                          "content": "# Invoices\n\nPaid on receipt. Thank you."}))]
pub struct UploadDocument {
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    filename: String,
    /// The media type (parameters such as `; charset=utf-8` allowed).
    content_type: DocumentType,
    /// The text (give this or `content_base64`).
    content: Option<String>,
    /// The bytes, standard base64 (give this or `content`).
    content_base64: Option<String>,
    /// Characters per chunk (default `CHUNK_SIZE`).
    #[schema(minimum = 1)]
    chunk_size: Option<u32>,
    /// Characters shared by neighbouring chunks (default `CHUNK_OVERLAP`).
    chunk_overlap: Option<u32>,
}

#[derive(ToSchema)]
pub enum DocumentType {
    #[schema(rename = "text/plain")]
    Plain,
    #[schema(rename = "text/markdown")]
    Markdown,
    #[schema(rename = "text/html")]
    Html,
    #[schema(rename = "text/csv")]
    Csv,
    #[schema(rename = "application/json")]
    Json,
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
    /// Document ids of the caller's tenant.
    #[schema(min_items = 1, max_items = 50)]
    document_ids: Vec<String>,
    format: DatasetFormat,
    #[schema(minimum = 0)]
    min_chars: Option<u32>,
    #[schema(minimum = 1, maximum = 100_000)]
    max_examples: Option<u32>,
}

/// `chunks`: one line per chunk; `chat`: chat-formatted sections.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum DatasetFormat {
    Chunks,
    Chat,
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
#[schema(example = json!({"dataset_id": "ds_example", "base_model": "llama-3-8b",
                          "hyperparameters": {"epochs": 3, "learning_rate": 0.0002, "batch_size": 8}}))]
pub struct CreateJob {
    #[schema(min_length = 1, pattern = r"\S")]
    dataset_id: String,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    base_model: String,
    hyperparameters: Hyperparameters,
}

#[derive(ToSchema)]
pub struct Hyperparameters {
    #[schema(minimum = 1, maximum = 100)]
    epochs: u32,
    #[schema(exclusive_minimum = 0)]
    learning_rate: f64,
    #[schema(minimum = 1, maximum = 4096)]
    batch_size: u32,
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
    dispatch: Dispatch,
    created_at: i64,
}

/// Where the job's dispatch to `TRAINER_URL` stands.
#[derive(ToSchema)]
pub struct Dispatch {
    /// `none` (no trainer configured), `pending`, `dispatched`, `failed`.
    status: String,
    error: Option<String>,
    attempts: u32,
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
    #[schema(min_length = 1, max_length = 255, pattern = "^[A-Za-z0-9._:~+/=-]+$")]
    event_id: String,
    /// `claimed`, `running`, `progress` (with step, metrics), `succeeded` (with
    /// artifact), `failed` (with error).
    #[schema(rename = "type")]
    kind: JobEventType,
    step: Option<u64>,
    #[schema(value_type = Option<Object>)]
    metrics: Option<Value>,
    artifact: Option<String>,
    error: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum JobEventType {
    Claimed,
    Running,
    Progress,
    Succeeded,
    Failed,
}

/// An event applied to a job (a cancel is the event `cancelled`).
#[derive(ToSchema)]
pub struct JobEventApplied {
    job_id: String,
    event_id: String,
    #[schema(rename = "type")]
    kind: String,
    status: String,
}

/// `POST /v1/training-jobs/{id}/cancel`: an optional reason.
#[derive(ToSchema)]
pub struct Cancel {
    #[schema(max_length = 1000)]
    reason: Option<String>,
}

// ---- staging ----

/// `POST /v1/staging/exports` (also an item of a batch).
#[derive(ToSchema)]
#[schema(example = json!({"invoice_id": "inv-1001", "export_format": "csv", "destination_system": "quickbooks",
    "export_data": {"vendor_name": "Acme GmbH", "invoice_number": "INV-1001", "invoice_date": "2026-10-31",
        "currency": "EUR", "total_amount": "119.00",
        "line_items": [{"description": "Widgets", "quantity": "2", "unit_price": "59.50", "amount": "119.00"}]}}))]
pub struct StageExport {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    invoice_id: String,
    export_format: ExportFormat,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    destination_system: String,
    /// The invoice: vendor_name, invoice_number, invoice_date, currency,
    /// total_amount (decimal string), line_items.
    #[schema(value_type = Object)]
    export_data: Value,
    #[schema(minimum = 0, maximum = 10)]
    max_retries: Option<u32>,
    /// The token's subject, if given (the preparer is always the caller).
    prepared_by: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Json,
}

#[derive(ToSchema)]
#[schema(example = json!({"exports": [{"invoice_id": "inv-2001", "export_format": "json", "destination_system": "erp",
    "export_data": {"vendor_name": "Acme GmbH", "invoice_number": "INV-2001", "invoice_date": "2026-11-02",
        "currency": "EUR", "total_amount": "10.00",
        "line_items": [{"description": "Bolt", "quantity": "1", "unit_price": "10.00", "amount": "10.00"}]}}]}))]
pub struct StageBatch {
    /// Up to `STAGING_MAX_BATCH_SIZE` exports.
    #[schema(min_items = 1)]
    exports: Vec<StageExport>,
}

/// `PUT /v1/staging/exports/{id}/review`.
#[derive(ToSchema)]
pub struct Review {
    #[schema(max_length = 2000)]
    comments: Option<String>,
    /// The token's subject, if given.
    reviewed_by: Option<String>,
}

/// `PUT /v1/staging/exports/{id}/approve`: optionally with corrected data.
#[derive(ToSchema)]
pub struct Approve {
    #[schema(value_type = Option<Object>)]
    approved_data: Option<Value>,
    change_reason: Option<String>,
    approval_comments: Option<String>,
    /// The token's subject, if given.
    approved_by: Option<String>,
}

/// `PUT …/reject`: the reason is required.
#[derive(ToSchema)]
pub struct Reject {
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    reason: String,
    /// The token's subject, if given.
    rejected_by: Option<String>,
}

/// `PUT …/request-changes`: what the preparer should change is required.
#[derive(ToSchema)]
pub struct RequestChanges {
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    reason: String,
    /// The token's subject, if given.
    requested_by: Option<String>,
}

/// `POST …/rollback`: the reason is required.
#[derive(ToSchema)]
pub struct Rollback {
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    reason: String,
    /// The token's subject, if given.
    rolled_back_by: Option<String>,
}

/// `POST /v1/staging/exports/{id}/post`.
#[derive(ToSchema)]
pub struct Post {
    #[schema(max_length = 255)]
    external_reference: Option<String>,
    #[schema(max_length = 255)]
    export_filename: Option<String>,
    /// The token's subject, if given.
    posted_by: Option<String>,
}

/// A staged export, with its quality score and findings.
#[derive(ToSchema)]
pub struct Export {
    id: String,
    /// `prepared`, `under_review`, `awaiting_second_approval`, `approved`,
    /// `posted`, `rolled_back`, `rejected` or `failed`.
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

/// What approving with given data would do (`POST …/check`).
#[derive(ToSchema)]
pub struct Check {
    export_id: String,
    quality_score: u8,
    /// `STAGING_QUALITY_THRESHOLD`.
    threshold: u8,
    /// The score reaches the threshold.
    approvable: bool,
    validation_errors: Vec<Finding>,
    validation_warnings: Vec<Finding>,
    /// The changes against the prepared data (as `GET …/diff` lists them).
    #[schema(value_type = Vec<Object>)]
    changes: Vec<Value>,
    /// There are changes: an approval needs a `change_reason`.
    change_reason_required: bool,
    changes_an_amount: bool,
    /// `STAGING_SECOND_APPROVAL=amount_changes` and an amount changes.
    second_approval_required: bool,
    preview: CheckPreview,
}

/// The file posting the checked data would record.
#[derive(ToSchema)]
pub struct CheckPreview {
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
