//! The keyed-command table: every keyed write idemgate accepts.
//!
//! Two steps, as in mini-redis (`Command::from_frame`, then `apply`):
//!
//! - The Worker matches a path to an [`Endpoint`] ([`match_path`]): its route
//!   template (and so its method and path), the role it needs and where its key
//!   comes from without a header. [`Endpoint::parse`] then checks the role and
//!   parses and validates the body, once, into a [`Command`] and the key it runs
//!   under. An invalid request is answered there (400, 403, 413, 415): it is not
//!   stored and does not use up its key.
//! - The [`Command`] crosses to the key's object as its serde form (the object's
//!   request body: trusted data the Worker wrote, so no client error can arise
//!   there) and the object runs [`Command::apply`] under the lease.
//!
//! Adding a keyed route: an [`Endpoint`] variant with its template (and its role
//! or key policy if not the defaults), a [`Command`] variant for its parsed
//! request, one arm in [`Endpoint::parse`] and one in [`Command::apply`].

use crate::config::{Config, KeyPolicy};
use crate::documents::Upload;
use crate::envelope::Envelope;
use crate::idempotency::scope::Scope;
use crate::idempotency::IdempotencyKey;
use crate::problem::ApiError;
use crate::routes::staging::BatchItem;
use crate::routes::{
    documents, functions, request_error, settle, staging, training, HandlerOutcome,
};
use crate::staging::data::validate_export_data;
use crate::staging::requests::{
    parse_approve_request, parse_post_request, parse_reject_request, parse_review_request,
    parse_rollback_request, parse_stage_request, ApproveRequest, PostRequest, StageRequest,
};
use crate::training::{DatasetRequest, JobEventRequest, JobRequest};
use serde::{Deserialize, Serialize};
use worker::D1Database;

/// The role that may approve or reject staged exports.
pub const APPROVER_ROLE: &str = "approver";

/// Prefix of the keys the server derives (document uploads without a key).
pub const DERIVED_PREFIX: &str = "derived:";

/// A keyed route: what the Worker knows from the method and path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    UploadDocument,
    CreateDataset,
    CreateJob,
    ReportJobEvent,
    CancelJob,
    CallFunction,
    StageExport,
    ReviewExport,
    ApproveExport,
    RejectExport,
    PostExport,
    RollbackExport,
    StageBatch,
}

/// A keyed request parsed and validated by the Worker, applied by the key's
/// object. Each variant holds what its handler needs and nothing it would
/// have to parse again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    UploadDocument(Upload),
    CreateDataset(DatasetRequest),
    CreateJob(JobRequest),
    ReportJobEvent(JobEventRequest),
    CancelJob {
        reason: Option<String>,
    },
    /// The origin's URL (resolved from the function name) and the bytes to send.
    CallFunction {
        url: String,
        #[serde(with = "base64_bytes")]
        body: Vec<u8>,
    },
    StageExport(StageRequest),
    ReviewExport {
        comments: Option<String>,
    },
    ApproveExport(ApproveRequest),
    RejectExport {
        reason: String,
    },
    PostExport(PostRequest),
    RollbackExport {
        reason: String,
    },
    StageBatch(Vec<BatchItem>),
}

/// What a valid keyed request is idempotent under.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Run `command` under `key` (whose scope [`key_scope`] tells); `json` if
    /// the body is fingerprinted as canonical JSON.
    Keyed {
        command: Command,
        key: IdempotencyKey,
        json: bool,
    },
    /// No key, and the route lets such requests pass straight through to `url`.
    Passthrough { url: String },
}

/// A keyed route matched on a path: the endpoint, the concrete route (ids
/// filled in: part of the key's identity) and the path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub endpoint: Endpoint,
    pub route: String,
    pub param: Option<String>,
}

impl Endpoint {
    pub const ALL: [Endpoint; 13] = [
        Endpoint::UploadDocument,
        Endpoint::CreateDataset,
        Endpoint::CreateJob,
        Endpoint::ReportJobEvent,
        Endpoint::CancelJob,
        Endpoint::CallFunction,
        Endpoint::StageExport,
        Endpoint::ReviewExport,
        Endpoint::ApproveExport,
        Endpoint::RejectExport,
        Endpoint::PostExport,
        Endpoint::RollbackExport,
        Endpoint::StageBatch,
    ];

    /// The route template: the fingerprint's route, the stats' grouping, and
    /// the path pattern (`{id}`, `{name}`: one parameter segment).
    pub fn template(self) -> &'static str {
        match self {
            Endpoint::UploadDocument => "POST /v1/documents",
            Endpoint::CreateDataset => "POST /v1/training-data",
            Endpoint::CreateJob => "POST /v1/training-jobs",
            Endpoint::ReportJobEvent => "POST /v1/training-jobs/{id}/events",
            Endpoint::CancelJob => "POST /v1/training-jobs/{id}/cancel",
            Endpoint::CallFunction => "POST /functions/v1/{name}",
            Endpoint::StageExport => "POST /v1/staging/exports",
            Endpoint::ReviewExport => "PUT /v1/staging/exports/{id}/review",
            Endpoint::ApproveExport => "PUT /v1/staging/exports/{id}/approve",
            Endpoint::RejectExport => "PUT /v1/staging/exports/{id}/reject",
            Endpoint::PostExport => "POST /v1/staging/exports/{id}/post",
            Endpoint::RollbackExport => "POST /v1/staging/exports/{id}/rollback",
            Endpoint::StageBatch => "POST /v1/staging/batches",
        }
    }

    /// The HTTP method (`POST` or `PUT`).
    pub fn method(self) -> &'static str {
        self.template().split_once(' ').map_or("POST", |(m, _)| m)
    }

    fn path_pattern(self) -> &'static str {
        self.template().split_once(' ').map_or("", |(_, p)| p)
    }

    /// The role the caller needs, if any.
    pub fn role(self) -> Option<&'static str> {
        match self {
            Endpoint::ApproveExport | Endpoint::RejectExport => Some(APPROVER_ROLE),
            _ => None,
        }
    }

    /// What happens without a key header.
    pub fn key_policy(self, cfg: &Config) -> KeyPolicy {
        match self {
            Endpoint::UploadDocument => KeyPolicy::Derive,
            Endpoint::CallFunction => cfg.upstream_key_policy,
            // The body's event_id is the key.
            Endpoint::ReportJobEvent => KeyPolicy::Derive,
            _ => KeyPolicy::Required,
        }
    }

    /// Checks the role, parses and validates the body into its [`Command`], and
    /// settles the key it runs under (`header`: the parsed key header), before
    /// any idempotency work. `ctx.tenant` derives document keys;
    /// `ctx.json_content` says whether the request declared a JSON body (origin
    /// functions fingerprint other bodies as bytes).
    pub fn parse(
        self,
        keyed: &Keyed,
        body: &[u8],
        header: Option<IdempotencyKey>,
        ctx: &ParseContext<'_>,
    ) -> Result<Parsed, ApiError> {
        if let Some(role) = self.role() {
            if !ctx.roles.iter().any(|r| r == role) {
                return Err(ApiError::Forbidden(format!("the {role} role is required")));
            }
        }
        let cfg = ctx.cfg;
        // Most commands run under the client's own key header.
        let keyed_by_header = |command: Command| -> Result<Parsed, ApiError> {
            Ok(Parsed::Keyed {
                command,
                key: header.clone().ok_or(ApiError::KeyRequired)?,
                json: true,
            })
        };
        let data_ok = |data| validate_export_data(data).map_err(staging::data_error);
        match self {
            Endpoint::UploadDocument => {
                let upload = documents::validate(body, cfg)?;
                let key = match header {
                    Some(k) if k.as_str().starts_with(DERIVED_PREFIX) => {
                        return Err(ApiError::InvalidKey {
                            detail: format!(
                                "keys starting with {DERIVED_PREFIX:?} are reserved for derived keys"
                            ),
                        })
                    }
                    Some(key) => key,
                    None => documents::derived_key(ctx.tenant, body, &upload),
                };
                Ok(Parsed::Keyed {
                    command: Command::UploadDocument(upload),
                    key,
                    json: true,
                })
            }
            Endpoint::CreateDataset => keyed_by_header(Command::CreateDataset(
                crate::training::parse_dataset_request(body).map_err(request_error)?,
            )),
            Endpoint::CreateJob => keyed_by_header(Command::CreateJob(
                crate::training::parse_job_request(body).map_err(request_error)?,
            )),
            Endpoint::CancelJob => keyed_by_header(Command::CancelJob {
                reason: crate::training::parse_cancel_request(body).map_err(request_error)?,
            }),
            Endpoint::ReportJobEvent => {
                // The event id is the key; a header key, if sent, must name the same.
                let ev = crate::training::parse_event_request(body).map_err(request_error)?;
                let key =
                    IdempotencyKey::parse(&ev.event_id).map_err(|e| ApiError::InvalidKey {
                        detail: e.to_string(),
                    })?;
                if header.is_some_and(|h| h != key) {
                    return Err(ApiError::InvalidKey {
                        detail: "the Idempotency-Key header differs from the event_id".into(),
                    });
                }
                Ok(Parsed::Keyed {
                    command: Command::ReportJobEvent(ev),
                    key,
                    json: true,
                })
            }
            Endpoint::StageExport => {
                let req = parse_stage_request(body, ctx.subject).map_err(request_error)?;
                data_ok(&req.export_data)?;
                keyed_by_header(Command::StageExport(req))
            }
            Endpoint::ReviewExport => keyed_by_header(Command::ReviewExport {
                comments: parse_review_request(body, ctx.subject).map_err(request_error)?,
            }),
            Endpoint::ApproveExport => {
                let req = parse_approve_request(body, ctx.subject).map_err(request_error)?;
                if let Some(data) = &req.approved_data {
                    data_ok(data)?;
                }
                keyed_by_header(Command::ApproveExport(req))
            }
            Endpoint::RejectExport => keyed_by_header(Command::RejectExport {
                reason: parse_reject_request(body, ctx.subject).map_err(request_error)?,
            }),
            Endpoint::RollbackExport => keyed_by_header(Command::RollbackExport {
                reason: parse_rollback_request(body, ctx.subject).map_err(request_error)?,
            }),
            Endpoint::PostExport => keyed_by_header(Command::PostExport(
                parse_post_request(body, ctx.subject).map_err(request_error)?,
            )),
            Endpoint::StageBatch => keyed_by_header(Command::StageBatch(
                staging::parse_batch(body, cfg.staging_max_batch_size, ctx.subject)
                    .map_err(request_error)?,
            )),
            Endpoint::CallFunction => {
                let url = functions::upstream_url(cfg, keyed.param.as_deref().unwrap_or_default())?;
                match (header, cfg.upstream_key_policy) {
                    (Some(key), _) => Ok(Parsed::Keyed {
                        command: Command::CallFunction {
                            url,
                            body: body.to_vec(),
                        },
                        key,
                        json: ctx.json_content,
                    }),
                    (None, KeyPolicy::Optional) => Ok(Parsed::Passthrough { url }),
                    (None, _) => Err(ApiError::KeyRequired),
                }
            }
        }
    }
}

impl Command {
    /// Runs the handler in the key's object, under the lease. An `Err` counts as
    /// a throw: 500, the key released.
    pub async fn apply(
        &self,
        db: &D1Database,
        cfg: &Config,
        env: &Envelope,
        now: i64,
    ) -> worker::Result<HandlerOutcome> {
        let param = env.param.as_deref().unwrap_or_default();
        match self {
            Command::UploadDocument(upload) => settle(documents::execute(db, env, upload, now)),
            Command::CreateDataset(req) => {
                settle(training::create_dataset(db, env, req, now).await)
            }
            Command::CreateJob(req) => settle(training::create_job(db, cfg, env, req, now).await),
            Command::ReportJobEvent(ev) => {
                settle(training::job_event(db, env, param, ev, now).await)
            }
            Command::CancelJob { reason } => {
                settle(training::cancel_job(db, env, param, reason.as_deref(), now).await)
            }
            Command::StageExport(req) => settle(staging::stage(db, env, req, now)),
            Command::ReviewExport { comments } => {
                settle(staging::review(db, env, param, comments.as_deref(), now).await)
            }
            Command::ApproveExport(req) => {
                settle(staging::approve(db, cfg, env, param, req, now).await)
            }
            Command::RejectExport { reason } => {
                settle(staging::reject(db, env, param, reason, now).await)
            }
            Command::PostExport(req) => settle(staging::post(db, cfg, env, param, req, now).await),
            Command::RollbackExport { reason } => {
                settle(staging::rollback(db, cfg, env, param, reason, now).await)
            }
            Command::StageBatch(items) => settle(staging::stage_batch(db, env, items, now)),
            Command::CallFunction { url, body } => {
                Ok(functions::execute(cfg, url, body, &env.forward, &env.forwarded_key()).await)
            }
        }
    }

    /// The object's request body for this command.
    pub fn encode(&self) -> Result<Vec<u8>, ApiError> {
        serde_json::to_vec(self).map_err(|_| ApiError::Internal)
    }

    /// Reads back what [`Command::encode`] wrote. Fails only if the Worker and
    /// the object run different builds (a deploy in between): a throw, so the
    /// key is released and the client's retry runs again.
    pub fn decode(body: &[u8]) -> worker::Result<Command> {
        serde_json::from_slice(body)
            .map_err(|e| worker::Error::RustError(format!("unreadable command: {e}")))
    }
}

/// Serde for opaque bytes in the command's JSON form: standard base64.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(de::Error::custom)
    }
}

/// What parsing needs to know about the caller and the request.
pub struct ParseContext<'a> {
    pub cfg: &'a Config,
    pub tenant: &'a str,
    /// The token's subject: every identity field of a body must name it.
    pub subject: &'a str,
    pub roles: &'a [String],
    /// The request declared a JSON `Content-Type`.
    pub json_content: bool,
}

/// Path parameters (ids, function names) are limited to `A-Za-z0-9_-`.
fn is_param(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Matches a request path (without query) against the table; each path
/// belongs to at most one endpoint.
pub fn match_path(path: &str) -> Option<Keyed> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    Endpoint::ALL.into_iter().find_map(|endpoint| {
        let pattern: Vec<&str> = endpoint.path_pattern().split('/').skip(1).collect();
        if pattern.len() != segments.len() {
            return None;
        }
        let mut param = None;
        for (p, s) in pattern.iter().zip(&segments) {
            if p.starts_with('{') {
                if !is_param(s) {
                    return None;
                }
                param = Some(s.to_string());
            } else if p != s {
                return None;
            }
        }
        let route = match &param {
            Some(v) => endpoint.template().replace("{id}", v).replace("{name}", v),
            None => endpoint.template().to_string(),
        };
        Some(Keyed {
            endpoint,
            route,
            param,
        })
    })
}

/// Resolves `?route=` of the key admin endpoints: a route (`PUT /v1/staging/…`)
/// or just its path (`/v1/training-jobs/job_1/cancel`).
pub fn keyed_route(query: &str) -> Option<Keyed> {
    let q = query.trim();
    let path = q.split_once(' ').map_or(q, |(_, p)| p);
    match_path(path.trim())
}

/// The scope of `endpoint`'s `key` for a caller of `tenant` acting as `subject`:
/// the tenant's for a derived document key or a trainer's `event_id` (a fact
/// about the job, whoever reports it), else the subject's own.
pub fn key_scope(endpoint: Endpoint, key: &IdempotencyKey, tenant: &str, subject: &str) -> Scope {
    let tenants = match endpoint {
        Endpoint::ReportJobEvent => true,
        Endpoint::UploadDocument => key.as_str().starts_with(DERIVED_PREFIX),
        _ => false,
    };
    if tenants {
        Scope::tenant(tenant)
    } else {
        Scope::client(tenant, subject)
    }
}

/// The object's entry: decodes the command the Worker parsed and applies it,
/// with the test hooks (honoured only with `IDEMGATE_TEST_HOOKS=1`, checked by
/// the Worker).
pub async fn run(
    db: &D1Database,
    cfg: &Config,
    env: &Envelope,
    body: &[u8],
    now: i64,
) -> worker::Result<HandlerOutcome> {
    if env.test_fail.as_deref() == Some("handler") {
        return Err(worker::Error::RustError(
            "simulated handler failure (test hook)".into(),
        ));
    }
    if env.test_fail.as_deref() == Some("panic") {
        // Test hook: a Rust panic inside the handler, under the lease (issue 9).
        panic!("simulated handler panic (test hook)");
    }
    Command::decode(body)?.apply(db, cfg, env, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_has_a_distinct_template_whose_path_matches_it() {
        for c in Endpoint::ALL {
            assert!(matches!(c.method(), "POST" | "PUT"), "{c:?}");
            let path = c
                .path_pattern()
                .replace("{id}", "x1")
                .replace("{name}", "x1");
            assert_eq!(match_path(&path).map(|k| k.endpoint), Some(c), "{path}");
        }
        let mut templates: Vec<_> = Endpoint::ALL.iter().map(|c| c.template()).collect();
        templates.sort();
        templates.dedup();
        assert_eq!(templates.len(), Endpoint::ALL.len());
    }

    #[test]
    fn paths_match_their_command_and_fill_in_their_parameter() {
        let rows = [
            (
                "/v1/documents",
                Endpoint::UploadDocument,
                "POST /v1/documents",
                None,
            ),
            (
                "/v1/documents/",
                Endpoint::UploadDocument,
                "POST /v1/documents",
                None,
            ),
            (
                "/v1/training-jobs/job_1/events",
                Endpoint::ReportJobEvent,
                "POST /v1/training-jobs/job_1/events",
                Some("job_1"),
            ),
            (
                "/v1/training-jobs/job_1/cancel",
                Endpoint::CancelJob,
                "POST /v1/training-jobs/job_1/cancel",
                Some("job_1"),
            ),
            (
                "/functions/v1/echo",
                Endpoint::CallFunction,
                "POST /functions/v1/echo",
                Some("echo"),
            ),
            (
                "/v1/staging/exports/exp_9/approve",
                Endpoint::ApproveExport,
                "PUT /v1/staging/exports/exp_9/approve",
                Some("exp_9"),
            ),
            (
                "/v1/staging/batches",
                Endpoint::StageBatch,
                "POST /v1/staging/batches",
                None,
            ),
        ];
        for (path, endpoint, route, param) in rows {
            let k = match_path(path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(k.endpoint, endpoint, "{path}");
            assert_eq!(k.route, route, "{path}");
            assert_eq!(k.param.as_deref(), param, "{path}");
        }
    }

    #[test]
    fn other_paths_and_odd_parameters_match_nothing() {
        for path in [
            "/",
            "/v1",
            "/v1/documents/doc_1",
            "/v1/training-jobs/job_1",
            "/v1/training-jobs/job 1/events",
            "/v1/training-jobs//events",
            "/v1/training-jobs/a.b/cancel",
            "/v1/staging/exports/exp_1/delete",
            "/functions/v1/a.b",
            "/functions/v1/echo/extra",
            &format!("/functions/v1/{}", "x".repeat(129)),
        ] {
            assert_eq!(match_path(path), None, "{path}");
        }
    }

    #[test]
    fn the_key_admin_route_accepts_a_route_or_its_path() {
        let a = keyed_route("PUT /v1/staging/exports/e1/review").unwrap();
        let b = keyed_route(" /v1/staging/exports/e1/review ").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.endpoint, Endpoint::ReviewExport);
        assert_eq!(a.route, "PUT /v1/staging/exports/e1/review");
        assert_eq!(
            keyed_route("POST /v1/documents").unwrap().route,
            "POST /v1/documents"
        );
        assert_eq!(keyed_route("/v1/nope"), None);
    }

    /// A caller of tenant `acme` with no role, sending JSON.
    fn no_role(cfg: &Config) -> ParseContext<'_> {
        ParseContext {
            cfg,
            tenant: "acme",
            subject: "alice",
            roles: &[],
            json_content: true,
        }
    }

    #[test]
    fn only_approvers_approve_or_reject_and_others_need_no_role() {
        let cfg = Config::default();
        let ctx = no_role(&cfg);
        for c in [Endpoint::ApproveExport, Endpoint::RejectExport] {
            let k =
                match_path(&c.template().replace("{id}", "e1")[c.method().len() + 1..]).unwrap();
            assert!(matches!(
                c.parse(&k, b"{}", None, &ctx),
                Err(ApiError::Forbidden(_))
            ));
        }
        assert_eq!(Endpoint::ReviewExport.role(), None);
    }

    #[test]
    fn keys_are_required_derived_or_taken_from_the_body_as_the_table_says() {
        let cfg = Config::default();
        let ctx = no_role(&cfg);
        let k = |p: &str| match_path(p).unwrap();
        let review = k("/v1/staging/exports/e1/review");
        assert_eq!(
            Endpoint::ReviewExport.parse(&review, b"{}", None, &ctx),
            Err(ApiError::KeyRequired)
        );
        let doc = br#"{"filename":"a.txt","content_type":"text/plain","content":"hi"}"#;
        match Endpoint::UploadDocument.parse(&k("/v1/documents"), doc, None, &ctx) {
            Ok(Parsed::Keyed { key, .. }) => {
                assert!(key.as_str().starts_with(DERIVED_PREFIX));
                assert_eq!(
                    key_scope(Endpoint::UploadDocument, &key, "acme", "alice"),
                    Scope::tenant("acme")
                );
            }
            other => panic!("{other:?}"),
        }
        let mine = IdempotencyKey::parse("upload-1").unwrap();
        assert_eq!(
            key_scope(Endpoint::UploadDocument, &mine, "acme", "alice"),
            Scope::client("acme", "alice")
        );
        let reserved = IdempotencyKey::parse("derived:mine").unwrap();
        assert!(matches!(
            Endpoint::UploadDocument.parse(&k("/v1/documents"), doc, Some(reserved), &ctx),
            Err(ApiError::InvalidKey { .. })
        ));
        let event = br#"{"event_id":"ev-1","type":"claimed"}"#;
        let events = k("/v1/training-jobs/j1/events");
        match Endpoint::ReportJobEvent.parse(&events, event, None, &ctx) {
            Ok(Parsed::Keyed { key, .. }) => {
                assert_eq!(key.as_str(), "ev-1");
                assert_eq!(
                    key_scope(Endpoint::ReportJobEvent, &key, "acme", "alice"),
                    Scope::tenant("acme")
                );
            }
            other => panic!("{other:?}"),
        }
        let other = IdempotencyKey::parse("ev-2").unwrap();
        assert!(matches!(
            Endpoint::ReportJobEvent.parse(&events, event, Some(other), &ctx),
            Err(ApiError::InvalidKey { .. })
        ));
    }

    /// Parses `body` for the endpoint of `path` with a key header.
    fn parsed(path: &str, body: &[u8], roles: &[String]) -> Command {
        let cfg = Config {
            upstream_functions: vec!["echo".into()],
            upstream_base_url: Some("http://127.0.0.1:9/".into()),
            ..Config::default()
        };
        let ctx = ParseContext {
            cfg: &cfg,
            tenant: "acme",
            subject: "alice",
            roles,
            json_content: false,
        };
        let keyed = match_path(path).unwrap();
        let key = IdempotencyKey::parse("k-1").ok();
        match keyed.endpoint.parse(&keyed, body, key, &ctx) {
            Ok(Parsed::Keyed { command, .. }) => command,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn every_command_reaches_the_object_exactly_as_the_worker_parsed_it() {
        let approver = vec![APPROVER_ROLE.to_string()];
        let invoice = r#"{"invoice_number":"INV-1","vendor_name":"Acme","invoice_date":"2026-01-02","currency":"EUR","total_amount":"10.10","line_items":[{"description":"x","quantity":"1","unit_price":"10.10","amount":"10.10"}]}"#;
        let cases: Vec<(&str, String, &[String])> = vec![
            ("/v1/documents", r##"{"filename":"ü.md","content_type":"text/markdown","content":"# héllo\n\t \"quoted\"","chunk_size":300}"##.into(), &[]),
            ("/v1/training-data", r#"{"document_ids":["d1","d2"],"format":"chat","min_chars":3}"#.into(), &[]),
            ("/v1/training-jobs", r#"{"dataset_id":"ds_1","base_model":"m","hyperparameters":{"epochs":3,"learning_rate":0.1,"batch_size":8}}"#.into(), &[]),
            ("/v1/training-jobs/j1/events", r#"{"event_id":"k-1","type":"progress","step":7,"metrics":{"loss":0.30000000000000004,"acc":1e-300}}"#.into(), &[]),
            ("/v1/training-jobs/j1/cancel", r#"{"reason":"stop"}"#.into(), &[]),
            ("/functions/v1/echo", String::new(), &[]),
            ("/v1/staging/exports", format!(r#"{{"invoice_id":"i1","export_format":"json","destination_system":"erp","export_data":{invoice}}}"#), &[]),
            ("/v1/staging/exports/e1/review", r#"{"comments":"ok"}"#.into(), &[]),
            ("/v1/staging/exports/e1/approve", format!(r#"{{"approved_data":{invoice},"change_reason":"fix"}}"#), &approver),
            ("/v1/staging/exports/e1/reject", r#"{"reason":"no"}"#.into(), &approver),
            ("/v1/staging/exports/e1/post", r#"{"external_reference":"QB-1","export_filename":"a b.csv","posted_by":"alice"}"#.into(), &[]),
            ("/v1/staging/exports/e1/rollback", r#"{"reason":"undo"}"#.into(), &[]),
            ("/v1/staging/batches", format!(r#"{{"exports":[{{"invoice_id":"i1","export_format":"csv","destination_system":"erp","export_data":{invoice}}},{{"invoice_id":""}}]}}"#), &[]),
        ];
        for (path, body, roles) in &cases {
            let command = parsed(path, body.as_bytes(), roles);
            let back = Command::decode(&command.encode().unwrap()).unwrap();
            assert_eq!(back, command, "{path}");
        }
        // Bytes that are not UTF-8 cross to an origin function unchanged.
        let raw: Vec<u8> = (0..=255).collect();
        let command = parsed("/functions/v1/echo", &raw, &[]);
        assert_eq!(
            Command::decode(&command.encode().unwrap()).unwrap(),
            command
        );
        assert!(matches!(command, Command::CallFunction { ref body, .. } if *body == raw));
        // A batch keeps its invalid items with their errors.
        match parsed("/v1/staging/batches", cases[12].1.as_bytes(), &[]) {
            Command::StageBatch(items) => {
                assert!(items[0].is_ok());
                let error = items[1].as_ref().unwrap_err();
                assert!(error.contains("exports[1]"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_command_from_another_build_is_an_error_not_a_panic() {
        for body in [
            &b""[..],
            b"{}",
            b"\"Nope\"",
            b"{\"CancelJob\":{\"reason\":7}}",
            &[0xff, 0xfe],
        ] {
            assert!(Command::decode(body).is_err());
        }
    }
}
