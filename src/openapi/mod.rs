//! The OpenAPI 3.1 description served at `GET /openapi.json`.
//!
//! Built from the code, so it cannot drift from it:
//!
//! - the keyed writes' paths, methods and roles come from the command table
//!   ([`Endpoint::ALL`], [`Endpoint::template`], [`Endpoint::role`],
//!   [`Endpoint::key_policy`]): a new keyed route is in the document, or the
//!   match in [`keyed_doc`] does not compile;
//! - the reads are listed in [`READS`]; a test reads the Worker's router
//!   (`frontend_worker.rs`) and fails on a routed path the document lacks;
//! - the schemas are `utoipa::ToSchema` types: the problem document
//!   ([`ProblemDetails`]), the key state ([`KeyState`]) and the health answer are
//!   the very types the Worker serialises; the other bodies are described in
//!   [`schemas`], and schemathesis checks the running Worker against them.
//!
//! Pure: no `worker::` import; `cargo test` checks the document.

pub mod schemas;

use crate::commands::Endpoint;
use crate::config::{Config, KeyPolicy};
use crate::idempotency::execute::KeyState;
use crate::idempotency::key::MAX_KEY_LEN;
use crate::problem::{ApiError, ProblemDetails, PROBLEM_BASE};
use schemas::*;
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApiBuilder, RefOr, Schema};
use utoipa::ToSchema;

/// Where the document is served (no auth).
pub const PATH: &str = "/openapi.json";

/// The security scheme's name in the document.
const BEARER: &str = "bearerAuth";

/// A read (or the key routes): method, path template, operation id, summary,
/// tag, the 200 answer's content type and schema, and extra problem statuses.
struct Read {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    tag: &'static str,
    ok: (u16, &'static str, Option<&'static str>),
    errors: &'static [u16],
    query: &'static [(&'static str, &'static str, bool)],
}

const PAGE_QUERY: [(&str, &str, bool); 2] =
    [("offset", "integer", false), ("limit", "integer", false)];
const JSON: &str = "application/json";
const PROBLEM_JSON: &str = "application/problem+json";
const STATUS_QUERY: (&str, &str, bool) = ("status", "string", false);

/// Every authenticated route that is not a keyed write.
const READS: &[Read] = &[
    Read {
        method: "get",
        path: "/v1/documents/{id}",
        id: "getDocument",
        summary: "A document: metadata, stats and extracted text",
        tag: "documents",
        ok: (200, JSON, Some("Document")),
        errors: &[404],
        query: &[],
    },
    Read {
        method: "get",
        path: "/v1/documents/{id}/chunks",
        id: "listChunks",
        summary: "A document's chunks, paged",
        tag: "documents",
        ok: (200, JSON, Some("ChunkPage")),
        errors: &[404],
        query: &PAGE_QUERY,
    },
    Read {
        method: "get",
        path: "/v1/training-data/{id}",
        id: "getDataset",
        summary: "A dataset's metadata and statistics",
        tag: "training",
        ok: (200, JSON, Some("Dataset")),
        errors: &[404],
        query: &[],
    },
    Read {
        method: "get",
        path: "/v1/training-data/{id}.jsonl",
        id: "getDatasetExamples",
        summary: "A dataset's examples, one JSON object a line",
        tag: "training",
        ok: (200, "application/x-ndjson", None),
        errors: &[404],
        query: &[],
    },
    Read {
        method: "get",
        path: "/v1/training-jobs",
        id: "listJobs",
        summary: "The tenant's training jobs, oldest first",
        tag: "training",
        ok: (200, JSON, Some("JobList")),
        errors: &[400],
        query: &[STATUS_QUERY, PAGE_QUERY[0], PAGE_QUERY[1]],
    },
    Read {
        method: "get",
        path: "/v1/training-jobs/{id}",
        id: "getJob",
        summary: "A job, its dispatch state and its event history",
        tag: "training",
        ok: (200, JSON, Some("Job")),
        errors: &[404],
        query: &[],
    },
    Read {
        method: "get",
        path: "/v1/staging/exports",
        id: "listExports",
        summary: "The tenant's exports, paged, optionally by status",
        tag: "staging",
        ok: (200, JSON, Some("ExportList")),
        errors: &[400],
        query: &[STATUS_QUERY, PAGE_QUERY[0], PAGE_QUERY[1]],
    },
    Read {
        method: "get",
        path: "/v1/staging/exports/{id}",
        id: "getExport",
        summary: "An export with its quality score and findings",
        tag: "staging",
        ok: (200, JSON, Some("Export")),
        errors: &[404],
        query: &[],
    },
    Read {
        method: "get",
        path: "/v1/staging/exports/{id}/diff",
        id: "getExportDiff",
        summary: "The approval's field-level diff",
        tag: "staging",
        ok: (200, JSON, Some("Diff")),
        errors: &[404],
        query: &[],
    },
    Read {
        method: "get",
        path: "/v1/staging/exports/{id}/audit",
        id: "getExportAudit",
        summary: "The export's audit trail",
        tag: "staging",
        ok: (200, JSON, Some("Audit")),
        errors: &[404],
        query: &[],
    },
    Read {
        method: "get",
        path: "/v1/staging/exports/{id}/file",
        id: "getExportFile",
        summary: "The posted file (CSV or JSON, as the export's format)",
        tag: "staging",
        ok: (200, "text/csv", None),
        errors: &[404],
        query: &[],
    },
    Read {
        method: "get",
        path: "/v1/staging/exports/{id}/preview",
        id: "getExportPreview",
        summary: "The file as JSON: posted, or as posting would render it now",
        tag: "staging",
        ok: (200, JSON, Some("Preview")),
        errors: &[404],
        query: &[],
    },
    Read {
        method: "get",
        path: "/v1/staging/batches/{id}",
        id: "getBatch",
        summary: "A batch's progress by state and average quality",
        tag: "staging",
        ok: (200, JSON, Some("BatchProgress")),
        errors: &[404],
        query: &[],
    },
    Read {
        method: "get",
        path: "/v1/idempotency/stats",
        id: "getIdempotencyStats",
        summary: "The tenant's records by route and status, and outcome counts (admin role)",
        tag: "idempotency",
        ok: (200, JSON, Some("Stats")),
        errors: &[403],
        query: &[],
    },
    Read {
        method: "get",
        path: "/metrics",
        id: "getMetrics",
        summary: "The tenant's idempotency counters, Prometheus text format 0.0.4 (admin role)",
        tag: "idempotency",
        ok: (200, "text/plain", None),
        errors: &[403],
        query: &[],
    },
    Read {
        method: "get",
        path: "/v1/idempotency/keys/{key}",
        id: "getKeyState",
        summary: "A key's state: processing or completed",
        tag: "idempotency",
        ok: (200, JSON, Some("KeyState")),
        errors: &[400, 403, 404],
        query: &[("route", "string", true), ("subject", "string", false)],
    },
    Read {
        method: "delete",
        path: "/v1/idempotency/keys/{key}",
        id: "releaseKey",
        summary: "Release a key so its next request runs again (its owner or an admin)",
        tag: "idempotency",
        ok: (204, "", None),
        errors: &[400, 403, 404, 409],
        query: &[("route", "string", true), ("subject", "string", false)],
    },
];

/// What the document says about a keyed write beyond its template.
struct KeyedDoc {
    id: &'static str,
    summary: &'static str,
    tag: &'static str,
    request: &'static str,
    body_required: bool,
    /// The answer on success; `None`: the origin's answer, any status.
    ok: Option<(u16, &'static str)>,
    errors: &'static [u16],
}

/// Problems every keyed write may answer: a bad body or key (400), no or a bad
/// token (401), a missing export, job, document or function (404), the key in
/// flight or a state that forbids the transition (409), a body too large (413),
/// the key reused with another body or an unusable request (422), storage or
/// auth configuration down (503).
const KEYED_ERRORS: [u16; 8] = [400, 401, 404, 409, 413, 415, 422, 503];

fn keyed_doc(e: Endpoint) -> KeyedDoc {
    let doc = |id, summary, tag, request, ok| KeyedDoc {
        id,
        summary,
        tag,
        request,
        body_required: true,
        ok,
        errors: &[],
    };
    match e {
        Endpoint::UploadDocument => doc(
            "uploadDocument",
            "Process a document: extract text, stats and chunks",
            "documents",
            "UploadDocument",
            Some((201, "Document")),
        ),
        Endpoint::CreateDataset => doc(
            "createDataset",
            "Generate training data from documents",
            "training",
            "CreateDataset",
            Some((201, "Dataset")),
        ),
        Endpoint::CreateJob => doc(
            "createJob",
            "Start a training job (queued, dispatched to TRAINER_URL if set)",
            "training",
            "CreateJob",
            Some((201, "Job")),
        ),
        Endpoint::ReportJobEvent => doc(
            "reportJobEvent",
            "The trainer reports a job event; its event_id is the key",
            "training",
            "JobEvent",
            Some((200, "JobEventApplied")),
        ),
        Endpoint::CancelJob => KeyedDoc {
            body_required: false,
            ..doc(
                "cancelJob",
                "Cancel a job that has not finished",
                "training",
                "Cancel",
                Some((200, "JobEventApplied")),
            )
        },
        Endpoint::CallFunction => KeyedDoc {
            body_required: false,
            errors: &[502, 504],
            ..doc(
                "callFunction",
                "Front an origin function: it runs once per key; the answer is the origin's",
                "functions",
                "FunctionBody",
                None,
            )
        },
        Endpoint::StageExport => doc(
            "stageExport",
            "Stage an invoice export",
            "staging",
            "StageExport",
            Some((201, "Export")),
        ),
        Endpoint::ReviewExport => KeyedDoc {
            body_required: false,
            ..doc(
                "reviewExport",
                "Review an export",
                "staging",
                "Review",
                Some((200, "Export")),
            )
        },
        Endpoint::ApproveExport => KeyedDoc {
            body_required: false,
            ..doc(
                "approveExport",
                "Approve an export, optionally with corrected data (approver role)",
                "staging",
                "Approve",
                Some((200, "Export")),
            )
        },
        Endpoint::RejectExport => doc(
            "rejectExport",
            "Reject an export with a reason (approver role)",
            "staging",
            "Reject",
            Some((200, "Export")),
        ),
        Endpoint::PostExport => KeyedDoc {
            body_required: false,
            errors: &[502],
            ..doc(
                "postExport",
                "Post an approved export to the accounting system",
                "staging",
                "Post",
                Some((200, "Export")),
            )
        },
        Endpoint::RollbackExport => KeyedDoc {
            errors: &[502],
            ..doc(
                "rollbackExport",
                "Roll back a posted export",
                "staging",
                "Rollback",
                Some((200, "Export")),
            )
        },
        Endpoint::StageBatch => doc(
            "stageBatch",
            "Stage many exports at once (per-item results)",
            "staging",
            "StageBatch",
            Some((201, "BatchResult")),
        ),
    }
}

/// Links from a created resource to the operations that take its id
/// (operation, status, JSON pointer of the id in its answer, operations):
/// clients (and schemathesis' stateful phase) follow them.
const LINKS: [(&str, u16, &str, &[&str]); 5] = [
    ("uploadDocument", 201, "/id", &["getDocument", "listChunks"]),
    (
        "createDataset",
        201,
        "/dataset_id",
        &["getDataset", "getDatasetExamples"],
    ),
    (
        "createJob",
        201,
        "/id",
        &["getJob", "cancelJob", "reportJobEvent"],
    ),
    (
        "stageExport",
        201,
        "/id",
        &[
            "getExport",
            "getExportDiff",
            "getExportAudit",
            "getExportFile",
            "getExportPreview",
            "reviewExport",
            "approveExport",
            "rejectExport",
            "postExport",
            "rollbackExport",
        ],
    ),
    ("stageBatch", 201, "/batch_id", &["getBatch"]),
];

fn add_links(paths: &mut Map<String, Value>) {
    for (source, status, pointer, targets) in LINKS {
        let links: Map<String, Value> = targets
            .iter()
            .map(|t| {
                let link = json!({"operationId": t, "parameters": {"id": format!("$response.body#{pointer}")}});
                (t.to_string(), link)
            })
            .collect();
        for item in paths.values_mut() {
            for op in item
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
            {
                if op["operationId"] == source {
                    op["responses"][status.to_string()]["links"] = Value::Object(links.clone());
                }
            }
        }
    }
}

/// The request bodies: closed objects, as their parsers reject unknown fields.
const REQUEST_SCHEMAS: [&str; 12] = [
    "UploadDocument",
    "CreateDataset",
    "CreateJob",
    "Hyperparameters",
    "JobEvent",
    "Cancel",
    "StageExport",
    "StageBatch",
    "Review",
    "Approve",
    "Reject",
    "Rollback",
];

/// One named schema and the schemas it refers to.
fn add<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) {
    T::schemas(out);
    out.push((T::name().into_owned(), T::schema()));
}

fn components() -> utoipa::openapi::Components {
    let mut s = Vec::new();
    add::<ProblemDetails>(&mut s);
    add::<KeyState>(&mut s);
    add::<Health>(&mut s);
    add::<UploadDocument>(&mut s);
    add::<Document>(&mut s);
    add::<ChunkPage>(&mut s);
    add::<CreateDataset>(&mut s);
    add::<Dataset>(&mut s);
    add::<CreateJob>(&mut s);
    add::<Job>(&mut s);
    add::<JobList>(&mut s);
    add::<JobEvent>(&mut s);
    add::<JobEventApplied>(&mut s);
    add::<Cancel>(&mut s);
    add::<StageExport>(&mut s);
    add::<StageBatch>(&mut s);
    add::<Review>(&mut s);
    add::<Approve>(&mut s);
    add::<Reject>(&mut s);
    add::<Rollback>(&mut s);
    add::<Post>(&mut s);
    add::<Export>(&mut s);
    add::<ExportList>(&mut s);
    add::<Diff>(&mut s);
    add::<Audit>(&mut s);
    add::<Preview>(&mut s);
    add::<BatchResult>(&mut s);
    add::<BatchProgress>(&mut s);
    add::<Stats>(&mut s);
    ComponentsBuilder::new()
        .schemas_from_iter(s)
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 JWT: claims sub, tenant (defaults to sub), roles (approver, admin), exp; \
                         iss and aud when configured",
                    ))
                    .build(),
            ),
        )
        .build()
}

/// The problem `type` URIs of the fixed problems (routes add their own slugs
/// under the same base, e.g. `invalid-body`, `identity-from-token`,
/// `quality-below-threshold`, `delivery-failed`).
fn problem_types() -> Vec<String> {
    let key = String::from("k");
    [
        ApiError::InvalidKey {
            detail: key.clone(),
        },
        ApiError::KeyRequired,
        ApiError::Unauthorized(key.clone()),
        ApiError::Forbidden(key.clone()),
        ApiError::NotFound(key.clone()),
        ApiError::MethodNotAllowed { allow: "GET" },
        ApiError::KeyInFlight { key: key.clone() },
        ApiError::PayloadTooLarge { limit: 1 },
        ApiError::UnsupportedMediaType(key.clone()),
        ApiError::DataTooLarge(key.clone()),
        ApiError::KeyReused { key: key.clone() },
        ApiError::AuthNotConfigured,
        ApiError::StorageUnavailable,
        ApiError::UpstreamUnreachable,
        ApiError::UpstreamTimeout,
        ApiError::AnswerTooLarge { limit: 1 },
        ApiError::UpstreamNotConfigured,
        ApiError::InvalidTransition {
            detail: key.clone(),
            current_state: key,
        },
        ApiError::Internal,
    ]
    .iter()
    .map(|e| {
        let p = e.to_problem();
        format!(
            "{} ({})",
            p.body["type"].as_str().unwrap_or_default(),
            p.status
        )
    })
    .collect()
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn header(description: &str, schema: Value) -> Value {
    json!({"description": description, "schema": schema})
}

fn problem_response(status: u16) -> Value {
    let description = match status {
        400 => "Bad request: a malformed body, key header or parameter (problem+json)",
        401 => "No token, or a token that does not verify (problem+json)",
        403 => "The caller lacks the role or is not allowed (problem+json)",
        404 => "Not found in the caller's tenant (problem+json)",
        409 => "The key's request is still running (idempotency-key-in-flight; Retry-After), or the state forbids this (invalid-transition) (problem+json)",
        413 => "The body or the data is too large (problem+json)",
        415 => "Unsupported media type (problem+json)",
        422 => "The key was used with another payload (idempotency-key-reused), or the request is unusable (problem+json)",
        502 => "The origin or destination could not be reached, or answered too much (problem+json)",
        503 => "Storage, authentication or the upstream is not available; retry after Retry-After (problem+json)",
        504 => "The origin did not answer in time (problem+json)",
        _ => "An error (problem+json)",
    };
    let mut r = json!({
        "description": description,
        "content": {PROBLEM_JSON: {"schema": schema_ref("Problem")}},
    });
    if matches!(status, 409 | 503) {
        r["headers"] = json!({"Retry-After": header("Seconds to wait before retrying", json!({"type": "integer", "minimum": 0}))});
    }
    r
}

fn key_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_KEY_LEN, "pattern": "^[A-Za-z0-9._:~+/=-]+$"})
}

/// The answer headers of a keyed write's stored answer.
fn replay_headers(created: bool) -> Value {
    let mut h = json!({
        "Idempotent-Replayed": header("`true` when this answer is a replay of the key's stored answer", json!({"type": "string", "enum": ["true"]})),
        "X-Idempotency-Replay": header("The same as Idempotent-Replayed (the legacy name)", json!({"type": "string", "enum": ["true"]})),
        "Idempotency-Key": header("The key this answer is stored under, on replays", key_schema()),
        "Idempotency-Expires": header("When the stored answer expires and the key is new again (HTTP-date)", json!({"type": "string"})),
        "Preference-Applied": header("`wait=N` when the request's Prefer: wait was honoured", json!({"type": "string"})),
    });
    if created {
        h["Location"] = header("The created resource", json!({"type": "string"}));
    }
    h
}

fn param(name: &str, location: &str, required: bool, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": location, "required": required, "schema": schema, "description": description})
}

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| {
            let name = seg.strip_prefix('{')?.split('}').next()?;
            let schema = if name == "key" {
                key_schema()
            } else {
                json!({"type": "string", "minLength": 1})
            };
            Some(param(name, "path", true, schema, ""))
        })
        .collect()
}

fn security() -> Value {
    json!([{BEARER: []}])
}

fn keyed_operation(e: Endpoint) -> (String, String, Value) {
    let d = keyed_doc(e);
    let (method, path) = e.template().split_once(' ').unwrap_or_default();
    let key_required = e.key_policy(&Config::default()) == KeyPolicy::Required;
    let key_help = match e {
        Endpoint::UploadDocument => "The request's idempotency key; without one the server derives it from the tenant and the upload",
        Endpoint::ReportJobEvent => "Optional: the key is the body's event_id; a header naming another key is 400",
        Endpoint::CallFunction => "The request's idempotency key; without one, UPSTREAM_KEY_POLICY says: 400, or passed straight through",
        _ => "The request's idempotency key (required)",
    };
    let mut params = path_params(path);
    params.push(param(
        "Idempotency-Key",
        "header",
        key_required,
        key_schema(),
        key_help,
    ));
    params.push(param(
        "X-Idempotency-Key",
        "header",
        false,
        key_schema(),
        "The same key under its legacy name; if both are sent they must be equal",
    ));
    params.push(param("Prefer", "header", false, json!({"type": "string"}), "`wait=N`: while the key's first request runs, wait up to N seconds (capped) for its answer instead of a 409"));
    let mut responses = Map::new();
    match d.ok {
        Some((status, schema)) => {
            responses.insert(
                status.to_string(),
                json!({"description": "The answer; stored and replayed for the key", "headers": replay_headers(status == 201),
                       "content": {JSON: {"schema": schema_ref(schema)}}}),
            );
        }
        None => {
            responses.insert(
                "default".into(),
                json!({"description": "The origin function's answer (its status, headers and body), stored and replayed for the key",
                       "headers": replay_headers(false), "content": {"*/*": {}}}),
            );
        }
    }
    let mut errors: Vec<u16> = KEYED_ERRORS.to_vec();
    errors.extend_from_slice(d.errors);
    if e.role().is_some() || e == Endpoint::ApproveExport {
        errors.push(403);
    }
    for status in errors {
        responses.insert(status.to_string(), problem_response(status));
    }
    let request_schema = match d.request {
        "FunctionBody" => json!({"description": "Any body; forwarded to the origin as sent"}),
        name => schema_ref(name),
    };
    let op = json!({
        "operationId": d.id,
        "summary": d.summary,
        "tags": [d.tag],
        "description": format!("Keyed write `{}`{}.", e.template(), e.role().map(|r| format!(" (the `{r}` role)")).unwrap_or_default()),
        "security": security(),
        "parameters": params,
        "requestBody": {"required": d.body_required, "content": {JSON: {"schema": request_schema}}},
        "responses": responses,
    });
    (path.to_string(), method.to_ascii_lowercase(), op)
}

fn read_operation(r: &Read) -> Value {
    let mut params = path_params(r.path);
    for (name, ty, required) in r.query {
        let mut p = param(name, "query", *required, json!({"type": ty}), "");
        if *name == "route" {
            p["description"] = json!("The keyed write's path, ids filled in");
            p["example"] = json!("/v1/documents");
        }
        params.push(p);
    }
    let mut responses = Map::new();
    let (status, content_type, schema) = r.ok;
    let mut ok = json!({"description": "OK"});
    if !content_type.is_empty() {
        let schema = schema
            .map(schema_ref)
            .unwrap_or_else(|| json!({"type": "string"}));
        ok["content"] = json!({content_type: {"schema": schema}});
        if content_type == "text/csv" {
            ok["content"][JSON] = json!({});
        }
    }
    if r.id == "getKeyState" {
        ok["headers"] = json!({"Idempotency-Expires": header("A completed key's expiry (HTTP-date)", json!({"type": "string"}))});
    }
    responses.insert(status.to_string(), ok);
    for s in [401, 503].iter().chain(r.errors) {
        responses.insert(s.to_string(), problem_response(*s));
    }
    json!({"operationId": r.id, "summary": r.summary, "tags": [r.tag], "security": security(),
           "parameters": params, "responses": responses})
}

/// Routes without auth: health, the console's files, this document.
fn open_operations() -> Vec<(&'static str, Value)> {
    let file = |id: &str, summary: &str, ct: &str| {
        json!({"operationId": id, "summary": summary, "tags": ["console"], "security": [],
               "responses": {"200": {"description": "The file", "content": {ct: {"schema": {"type": "string"}}}}}})
    };
    vec![
        (
            "/healthz",
            json!({"operationId": "healthz", "summary": "Liveness", "tags": ["meta"], "security": [],
                            "responses": {"200": {"description": "Up", "content": {JSON: {"schema": schema_ref("Health")}}}}}),
        ),
        (
            PATH,
            json!({"operationId": "openapi", "summary": "This document (OpenAPI 3.1)", "tags": ["meta"], "security": [],
                      "responses": {"200": {"description": "The document", "content": {JSON: {"schema": {"type": "object"}}}}}}),
        ),
        (
            "/console",
            file("console", "The approvers' console: a page", "text/html"),
        ),
        (
            "/console/app.js",
            file("consoleScript", "The console's script", "text/javascript"),
        ),
        (
            "/console/app.css",
            file("consoleStyle", "The console's style sheet", "text/css"),
        ),
    ]
}

/// The whole document.
pub fn document() -> Value {
    let info = InfoBuilder::new()
        .title("idemgate")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(format!(
            "{}\n\nEvery error is RFC 9457 `application/problem+json` (schema `Problem`); its `type` is one of:\n\n{}\n\n\
             and route-specific types under {PROBLEM_BASE}.",
            env!("CARGO_PKG_DESCRIPTION"),
            problem_types().iter().map(|t| format!("- {t}")).collect::<Vec<_>>().join("\n"),
        )))
        .build();
    let api = OpenApiBuilder::new()
        .info(info)
        .components(Some(components()))
        .build();
    let mut doc = serde_json::to_value(&api).unwrap_or_else(|_| json!({}));
    let mut paths = Map::new();
    let mut put = |path: &str, method: &str, op: Value| {
        let item = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        item[method] = op;
    };
    for (path, op) in open_operations() {
        put(path, "get", op);
    }
    for e in Endpoint::ALL {
        let (path, method, op) = keyed_operation(e);
        put(&path, &method, op);
    }
    for r in READS {
        put(r.path, r.method, read_operation(r));
    }
    add_links(&mut paths);
    doc["paths"] = Value::Object(paths);
    for name in REQUEST_SCHEMAS.iter().chain(&["Post"]) {
        doc["components"]["schemas"][name]["additionalProperties"] = Value::Bool(false);
    }
    doc["tags"] = json!([
        "documents",
        "training",
        "functions",
        "staging",
        "idempotency",
        "console",
        "meta"
    ]
    .iter()
    .map(|t| json!({"name": t}))
    .collect::<Vec<_>>());
    doc
}

thread_local! {
    /// The document, serialised once per isolate.
    static DOCUMENT: String = document().to_string();
}

/// The document as sent.
pub fn json_text() -> String {
    DOCUMENT.with(|d| d.clone())
}

#[cfg(test)]
mod tests;
