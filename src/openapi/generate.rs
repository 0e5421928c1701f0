//! Generates the OpenAPI 3.1 document from the code, on the host; the Worker
//! serves the committed file ([`super::TEXT`]), and a unit test fails while
//! that file differs from [`text`].
//!
//! Built from the code, so it cannot drift from it:
//!
//! - the keyed writes' paths, methods, roles and descriptions come from the
//!   command table ([`Endpoint::ALL`], [`Endpoint::template`], [`Endpoint::role`],
//!   [`Endpoint::key_policy`], [`Endpoint::doc`]): every keyed route is in the
//!   document, since a command does not compile without its `DOC`;
//! - every other route comes from the route table ([`crate::route_table`]),
//!   which the Worker's router dispatches from: a route cannot be served
//!   without being described;
//! - the schemas are `utoipa::ToSchema` types: the problem document
//!   ([`ProblemDetails`]), the key state ([`KeyState`]) and the health answer are
//!   the very types the Worker serialises; the other bodies are described in
//!   [`super::schemas`], and schemathesis checks the running Worker against them;
//! - the problem types listed are the catalog's ([`crate::problem_types`]).
//!
//! Pure: no `worker::` import.

use super::schemas::*;
use super::Health;
use crate::commands::Endpoint;
use crate::config::{Config, KeyPolicy};
use crate::idempotency::execute::KeyState;
use crate::idempotency::key::MAX_KEY_LEN;
use crate::problem::ProblemDetails;
use crate::problem_types::{self, CATALOG};
use crate::route_table::{Route, JSON, PROBLEM_JSON, ROUTES};
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApiBuilder, RefOr, Schema};
use utoipa::ToSchema;

/// The security scheme's name in the document.
const BEARER: &str = "bearerAuth";

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
const REQUEST_SCHEMAS: [&str; 13] = [
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
    "RequestChanges",
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
    add::<super::Me>(&mut s);
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
    add::<RequestChanges>(&mut s);
    add::<Rollback>(&mut s);
    add::<Post>(&mut s);
    add::<Export>(&mut s);
    add::<ExportList>(&mut s);
    add::<Diff>(&mut s);
    add::<Audit>(&mut s);
    add::<Preview>(&mut s);
    add::<Check>(&mut s);
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
                        "JWT signed HS256 (AUTH_JWT_SECRET) or RS256, ES256, EdDSA (a key of AUTH_JWKS_URL); \
                         claims sub, the tenant (defaults to sub), roles (approver, poster, admin), exp; \
                         iss and aud when configured. Without Authorization, Cf-Access-Jwt-Assertion is read",
                    ))
                    .build(),
            ),
        )
        .build()
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
        404 => "Not found (a resource of another tenant is not found either) (problem+json)",
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
    json!({"type": "string", "minLength": 1, "maxLength": MAX_KEY_LEN, "pattern": "^[A-Za-z0-9._:~+/=-]+$",
        "description": "No `/`-separated segment may be `.` or `..` (URLs rewrite them)"})
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

/// ` (the `approver` or `poster` role)`, or nothing for a route any caller may use.
fn roles_text(roles: &[&str]) -> String {
    if roles.is_empty() {
        return String::new();
    }
    let names: Vec<String> = roles.iter().map(|r| format!("`{r}`")).collect();
    format!(" (the {} role)", names.join(" or "))
}

fn security() -> Value {
    json!([{BEARER: []}])
}

/// Problems every keyed write may answer: a bad body or key (400), no or a bad
/// token (401), a missing export, job, document or function (404), the key in
/// flight or a state that forbids the transition (409), a body too large (413),
/// an unsupported media type (415), the key reused with another body or an
/// unusable request (422), storage or auth configuration down (503).
const KEYED_ERRORS: [u16; 8] = [400, 401, 404, 409, 413, 415, 422, 503];

fn keyed_operation(e: Endpoint) -> (String, String, Value) {
    let d = e.doc();
    let (method, path) = e.template().split_once(' ').unwrap_or_default();
    let key_required = e.key_policy(&Config::default()) == KeyPolicy::Required;
    let key_help = d.key_help;
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
    if !e.roles().is_empty() {
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
        "description": format!("Keyed write `{}`{}.", e.template(), roles_text(e.roles())),
        "security": security(),
        "parameters": params,
        "requestBody": {"required": d.body_required, "content": {JSON: {"schema": request_schema}}},
        "responses": responses,
    });
    (path.to_string(), method.to_ascii_lowercase(), op)
}

fn read_operation(route: &Route) -> Value {
    let r = &route.doc;
    let open = route.kind.is_open();
    let mut params = path_params(route.path);
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
        let schema = match (schema, content_type) {
            (Some(name), _) => schema_ref(name),
            (None, JSON) => json!({"type": "object"}),
            (None, _) => json!({"type": "string"}),
        };
        ok["content"] = json!({content_type: {"schema": schema}});
        if content_type == "text/csv" {
            ok["content"][JSON] = json!({});
        }
    }
    if r.id == "getKeyState" {
        ok["headers"] = json!({"Idempotency-Expires": header("A completed key's expiry (HTTP-date)", json!({"type": "string"}))});
    }
    responses.insert(status.to_string(), ok);
    let always: &[u16] = if open { &[] } else { &[401, 503] };
    for s in always.iter().chain(r.errors) {
        responses.insert(s.to_string(), problem_response(*s));
    }
    let security = if open { json!([]) } else { security() };
    let mut op = json!({"operationId": r.id, "summary": r.summary, "tags": [r.tag], "security": security,
           "responses": responses});
    if !params.is_empty() || !open {
        op["parameters"] = json!(params);
    }
    if let Some(body) = r.body {
        op["requestBody"] =
            json!({"required": false, "content": {JSON: {"schema": schema_ref(body)}}});
    }
    op
}

/// The operations' tags, in the document's order, with their descriptions.
const TAGS: [(&str, &str); 7] = [
    (
        "documents",
        "Upload documents; read their extracted text and chunks",
    ),
    (
        "training",
        "Build training datasets from documents, and run and follow training jobs",
    ),
    (
        "functions",
        "Origin functions called through idemgate: each keyed request runs once",
    ),
    (
        "staging",
        "Stage exports, review and approve them, post them to their destination, roll back",
    ),
    (
        "idempotency",
        "The idempotency records: a key's state, releasing a key, statistics and metrics",
    ),
    ("console", "The approvers' console: a page and its files"),
    (
        "meta",
        "Health, this document, the caller's identity, and the problem types' descriptions",
    ),
];

/// The document's `info.license`: the project's license (the `LICENSE` file at
/// the repository's root, the crate's and the npm packages' `license`), by its
/// SPDX identifier.
const LICENSE: (&str, &str) = ("Apache-2.0", "Apache-2.0");

/// The whole document.
pub fn document() -> Value {
    let types: Vec<String> = CATALOG
        .iter()
        .map(|t| {
            let statuses: Vec<String> = t.statuses.iter().map(u16::to_string).collect();
            format!(
                "- `{}` ({}): {}",
                problem_types::uri(t.slug),
                statuses.join(", "),
                t.title
            )
        })
        .collect();
    let info = InfoBuilder::new()
        .title("idemgate")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(format!(
            "{}\n\nEvery error is RFC 9457 `application/problem+json` (schema `Problem`). Its `type` is a URI \
             relative to the request's URL, `/errors/<slug>`; `GET` it (no token) for what the problem means \
             and what to do, or `GET /errors` for every type:\n\n{}",
            env!("CARGO_PKG_DESCRIPTION"),
            types.join("\n"),
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
    for e in Endpoint::ALL {
        let (path, method, op) = keyed_operation(e);
        put(&path, &method, op);
    }
    for r in ROUTES {
        put(r.path, r.method, read_operation(r));
    }
    add_links(&mut paths);
    doc["paths"] = Value::Object(paths);
    for name in REQUEST_SCHEMAS.iter().chain(&["Post"]) {
        doc["components"]["schemas"][name]["additionalProperties"] = Value::Bool(false);
    }
    doc["tags"] = TAGS
        .iter()
        .map(|(name, description)| json!({"name": name, "description": description}))
        .collect();
    // The deployment that serves the document: a relative server URL is
    // resolved against the document's own URL.
    doc["servers"] =
        json!([{"url": "/", "description": "The idemgate deployment serving this document"}]);
    doc["info"]["license"] = json!({"name": LICENSE.0, "identifier": LICENSE.1});
    doc
}

/// The document as committed: pretty-printed, one final newline.
pub fn text() -> String {
    let mut out = serde_json::to_string_pretty(&document()).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests;
