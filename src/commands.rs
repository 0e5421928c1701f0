//! The keyed-command table: every keyed write idemgate accepts, in one enum.
//!
//! A [`Command`] carries its route template (and so its method and path), the
//! role it needs, where its key comes from without a header, the validation the
//! Worker runs before any idempotency work (an invalid request is not stored and
//! does not use up its key), and the handler the key's object runs under the
//! lease. The Worker matches a path with [`match_path`] and calls
//! [`Command::validate`]; the object calls [`Command::run`]. Adding a keyed
//! route is one variant, its template, and one arm in `validate` and in `run`.

use crate::config::{Config, KeyPolicy};
use crate::envelope::Envelope;
use crate::idempotency::scope::Scope;
use crate::idempotency::IdempotencyKey;
use crate::problem::ApiError;
use crate::routes::{
    documents, functions, request_error, settle, staging, training, HandlerOutcome,
};
use crate::staging::data::validate_export_data;
use crate::staging::requests::{
    parse_approve_request, parse_batch_request, parse_post_request, parse_reject_request,
    parse_review_request, parse_rollback_request, parse_stage_request,
};
use worker::D1Database;

/// The role that may approve or reject staged exports.
pub const APPROVER_ROLE: &str = "approver";

/// Prefix of the keys the server derives (document uploads without a key).
pub const DERIVED_PREFIX: &str = "derived:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
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

/// What a valid keyed request is idempotent under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validated {
    /// Run under `key` (whose scope [`key_scope`] tells); `json` if the body is
    /// fingerprinted as canonical JSON.
    Keyed { key: IdempotencyKey, json: bool },
    /// No key, and the route lets such requests pass straight through.
    Passthrough,
}

/// A keyed route matched on a path: the command, the concrete route (ids filled
/// in: part of the key's identity) and the path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub command: Command,
    pub route: String,
    pub param: Option<String>,
}

impl Command {
    pub const ALL: [Command; 13] = [
        Command::UploadDocument,
        Command::CreateDataset,
        Command::CreateJob,
        Command::ReportJobEvent,
        Command::CancelJob,
        Command::CallFunction,
        Command::StageExport,
        Command::ReviewExport,
        Command::ApproveExport,
        Command::RejectExport,
        Command::PostExport,
        Command::RollbackExport,
        Command::StageBatch,
    ];

    /// The route template: the fingerprint's route, the stats' grouping, and
    /// the path pattern (`{id}`, `{name}`: one parameter segment).
    pub fn template(self) -> &'static str {
        match self {
            Command::UploadDocument => "POST /v1/documents",
            Command::CreateDataset => "POST /v1/training-data",
            Command::CreateJob => "POST /v1/training-jobs",
            Command::ReportJobEvent => "POST /v1/training-jobs/{id}/events",
            Command::CancelJob => "POST /v1/training-jobs/{id}/cancel",
            Command::CallFunction => "POST /functions/v1/{name}",
            Command::StageExport => "POST /v1/staging/exports",
            Command::ReviewExport => "PUT /v1/staging/exports/{id}/review",
            Command::ApproveExport => "PUT /v1/staging/exports/{id}/approve",
            Command::RejectExport => "PUT /v1/staging/exports/{id}/reject",
            Command::PostExport => "POST /v1/staging/exports/{id}/post",
            Command::RollbackExport => "POST /v1/staging/exports/{id}/rollback",
            Command::StageBatch => "POST /v1/staging/batches",
        }
    }

    pub fn from_template(template: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.template() == template)
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
            Command::ApproveExport | Command::RejectExport => Some(APPROVER_ROLE),
            _ => None,
        }
    }

    /// What happens without a key header.
    pub fn key_policy(self, cfg: &Config) -> KeyPolicy {
        match self {
            Command::UploadDocument => KeyPolicy::Derive,
            Command::CallFunction => cfg.upstream_key_policy,
            // The body's event_id is the key.
            Command::ReportJobEvent => KeyPolicy::Derive,
            _ => KeyPolicy::Required,
        }
    }

    /// Validates a keyed request before any idempotency work: role, body (400,
    /// 413, 415), and the key it runs under (`header`: the parsed key header).
    /// `tenant` derives document keys; `json_content` says whether the request
    /// declared a JSON body (origin functions fingerprint other bodies as bytes).
    pub fn validate(
        self,
        keyed: &Keyed,
        body: &[u8],
        header: Option<IdempotencyKey>,
        ctx: &ValidateContext<'_>,
    ) -> Result<Validated, ApiError> {
        if let Some(role) = self.role() {
            if !ctx.roles.iter().any(|r| r == role) {
                return Err(ApiError::Forbidden(format!("the {role} role is required")));
            }
        }
        let cfg = ctx.cfg;
        let client = |header: Option<IdempotencyKey>| -> Result<Validated, ApiError> {
            Ok(Validated::Keyed {
                key: header.ok_or(ApiError::KeyRequired)?,
                json: true,
            })
        };
        match self {
            Command::UploadDocument => {
                let upload = documents::validate(body, cfg)?;
                Ok(match header {
                    Some(k) if k.as_str().starts_with(DERIVED_PREFIX) => {
                        return Err(ApiError::InvalidKey {
                            detail: format!(
                                "keys starting with {DERIVED_PREFIX:?} are reserved for derived keys"
                            ),
                        })
                    }
                    Some(key) => Validated::Keyed {
                        key,
                        json: true,
                    },
                    None => Validated::Keyed {
                        key: documents::derived_key(ctx.tenant, body, &upload),
                        json: true,
                    },
                })
            }
            Command::CreateDataset => {
                crate::training::parse_dataset_request(body).map_err(request_error)?;
                client(header)
            }
            Command::CreateJob => {
                crate::training::parse_job_request(body).map_err(request_error)?;
                client(header)
            }
            Command::CancelJob => {
                crate::training::parse_cancel_request(body).map_err(request_error)?;
                client(header)
            }
            Command::ReportJobEvent => {
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
                Ok(Validated::Keyed { key, json: true })
            }
            Command::StageExport => {
                let req = parse_stage_request(body, ctx.subject).map_err(request_error)?;
                validate_export_data(&req.export_data).map_err(staging::data_error)?;
                client(header)
            }
            Command::ReviewExport => {
                parse_review_request(body, ctx.subject).map_err(request_error)?;
                client(header)
            }
            Command::ApproveExport => {
                let req = parse_approve_request(body, ctx.subject).map_err(request_error)?;
                if let Some(data) = &req.approved_data {
                    validate_export_data(data).map_err(staging::data_error)?;
                }
                client(header)
            }
            Command::RejectExport => {
                parse_reject_request(body, ctx.subject).map_err(request_error)?;
                client(header)
            }
            Command::RollbackExport => {
                parse_rollback_request(body, ctx.subject).map_err(request_error)?;
                client(header)
            }
            Command::PostExport => {
                parse_post_request(body, ctx.subject).map_err(request_error)?;
                client(header)
            }
            Command::StageBatch => {
                parse_batch_request(body, cfg.staging_max_batch_size, ctx.subject)
                    .map_err(request_error)?;
                client(header)
            }
            Command::CallFunction => {
                functions::upstream_url(cfg, keyed.param.as_deref().unwrap_or_default())?;
                match (header, cfg.upstream_key_policy) {
                    (Some(key), _) => Ok(Validated::Keyed {
                        key,
                        json: ctx.json_content,
                    }),
                    (None, KeyPolicy::Optional) => Ok(Validated::Passthrough),
                    (None, _) => Err(ApiError::KeyRequired),
                }
            }
        }
    }

    /// Runs the handler in the key's object, under the lease. An `Err` counts as
    /// a throw: 500, the key released.
    pub async fn run(
        self,
        db: &D1Database,
        cfg: &Config,
        env: &Envelope,
        body: &[u8],
        now: i64,
    ) -> worker::Result<HandlerOutcome> {
        let param = || env.param.clone().unwrap_or_default();
        match self {
            Command::UploadDocument => settle(documents::execute(db, cfg, env, body, now)),
            Command::CreateDataset => settle(training::create_dataset(db, env, body, now).await),
            Command::CreateJob => settle(training::create_job(db, cfg, env, body, now).await),
            Command::ReportJobEvent => {
                settle(training::job_event(db, env, &param(), body, now).await)
            }
            Command::CancelJob => settle(training::cancel_job(db, env, &param(), body, now).await),
            Command::StageExport => settle(staging::stage(db, env, body, now)),
            Command::ReviewExport => settle(staging::review(db, env, &param(), body, now).await),
            Command::ApproveExport => {
                settle(staging::approve(db, cfg, env, &param(), body, now).await)
            }
            Command::RejectExport => settle(staging::reject(db, env, &param(), body, now).await),
            Command::PostExport => settle(staging::post(db, cfg, env, &param(), body, now).await),
            Command::RollbackExport => {
                settle(staging::rollback(db, cfg, env, &param(), body, now).await)
            }
            Command::StageBatch => settle(staging::stage_batch(db, cfg, env, body, now)),
            Command::CallFunction => {
                let url = match functions::upstream_url(cfg, &param()) {
                    Ok(u) => u,
                    Err(e) => {
                        return Ok(HandlerOutcome::transient(crate::http::problem_stored(&e)))
                    }
                };
                Ok(functions::execute(cfg, &url, body, &env.forward, &env.forwarded_key()).await)
            }
        }
    }
}

/// What validation needs to know about the caller and the request.
pub struct ValidateContext<'a> {
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

/// Matches a request path (without query) against the command table; each
/// path belongs to at most one command.
pub fn match_path(path: &str) -> Option<Keyed> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    Command::ALL.into_iter().find_map(|command| {
        let pattern: Vec<&str> = command.path_pattern().split('/').skip(1).collect();
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
            Some(v) => command.template().replace("{id}", v).replace("{name}", v),
            None => command.template().to_string(),
        };
        Some(Keyed {
            command,
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

/// The scope of `command`'s `key` for a caller of `tenant` acting as `subject`:
/// the tenant's for a derived document key or a trainer's `event_id` (a fact
/// about the job, whoever reports it), else the subject's own.
pub fn key_scope(command: Command, key: &IdempotencyKey, tenant: &str, subject: &str) -> Scope {
    let tenants = match command {
        Command::ReportJobEvent => true,
        Command::UploadDocument => key.as_str().starts_with(DERIVED_PREFIX),
        _ => false,
    };
    if tenants {
        Scope::tenant(tenant)
    } else {
        Scope::client(tenant, subject)
    }
}

/// Runs the handler for `env.template`, with the test hooks (honoured only with
/// `IDEMGATE_TEST_HOOKS=1`, checked by the Worker).
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
    match Command::from_template(&env.template) {
        Some(command) => command.run(db, cfg, env, body, now).await,
        None => Err(worker::Error::RustError(format!(
            "no handler for route {}",
            env.template
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_distinct_template_that_maps_back() {
        for c in Command::ALL {
            assert_eq!(Command::from_template(c.template()), Some(c));
            assert!(matches!(c.method(), "POST" | "PUT"), "{c:?}");
        }
        let mut templates: Vec<_> = Command::ALL.iter().map(|c| c.template()).collect();
        templates.sort();
        templates.dedup();
        assert_eq!(templates.len(), Command::ALL.len());
    }

    #[test]
    fn paths_match_their_command_and_fill_in_their_parameter() {
        let rows = [
            (
                "/v1/documents",
                Command::UploadDocument,
                "POST /v1/documents",
                None,
            ),
            (
                "/v1/documents/",
                Command::UploadDocument,
                "POST /v1/documents",
                None,
            ),
            (
                "/v1/training-jobs/job_1/events",
                Command::ReportJobEvent,
                "POST /v1/training-jobs/job_1/events",
                Some("job_1"),
            ),
            (
                "/v1/training-jobs/job_1/cancel",
                Command::CancelJob,
                "POST /v1/training-jobs/job_1/cancel",
                Some("job_1"),
            ),
            (
                "/functions/v1/echo",
                Command::CallFunction,
                "POST /functions/v1/echo",
                Some("echo"),
            ),
            (
                "/v1/staging/exports/exp_9/approve",
                Command::ApproveExport,
                "PUT /v1/staging/exports/exp_9/approve",
                Some("exp_9"),
            ),
            (
                "/v1/staging/batches",
                Command::StageBatch,
                "POST /v1/staging/batches",
                None,
            ),
        ];
        for (path, command, route, param) in rows {
            let k = match_path(path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(k.command, command, "{path}");
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
        assert_eq!(a.command, Command::ReviewExport);
        assert_eq!(a.route, "PUT /v1/staging/exports/e1/review");
        assert_eq!(
            keyed_route("POST /v1/documents").unwrap().route,
            "POST /v1/documents"
        );
        assert_eq!(keyed_route("/v1/nope"), None);
    }

    /// A caller of tenant `acme` with no role, sending JSON.
    fn no_role(cfg: &Config) -> ValidateContext<'_> {
        ValidateContext {
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
        for c in [Command::ApproveExport, Command::RejectExport] {
            let k =
                match_path(&c.template().replace("{id}", "e1")[c.method().len() + 1..]).unwrap();
            assert!(matches!(
                c.validate(&k, b"{}", None, &ctx),
                Err(ApiError::Forbidden(_))
            ));
        }
        assert_eq!(Command::ReviewExport.role(), None);
    }

    #[test]
    fn keys_are_required_derived_or_taken_from_the_body_as_the_table_says() {
        let cfg = Config::default();
        let ctx = no_role(&cfg);
        let k = |p: &str| match_path(p).unwrap();
        let review = k("/v1/staging/exports/e1/review");
        assert_eq!(
            Command::ReviewExport.validate(&review, b"{}", None, &ctx),
            Err(ApiError::KeyRequired)
        );
        let doc = br#"{"filename":"a.txt","content_type":"text/plain","content":"hi"}"#;
        match Command::UploadDocument.validate(&k("/v1/documents"), doc, None, &ctx) {
            Ok(Validated::Keyed { key, .. }) => {
                assert!(key.as_str().starts_with(DERIVED_PREFIX));
                assert_eq!(
                    key_scope(Command::UploadDocument, &key, "acme", "alice"),
                    Scope::tenant("acme")
                );
            }
            other => panic!("{other:?}"),
        }
        let mine = IdempotencyKey::parse("upload-1").unwrap();
        assert_eq!(
            key_scope(Command::UploadDocument, &mine, "acme", "alice"),
            Scope::client("acme", "alice")
        );
        let reserved = IdempotencyKey::parse("derived:mine").unwrap();
        assert!(matches!(
            Command::UploadDocument.validate(&k("/v1/documents"), doc, Some(reserved), &ctx),
            Err(ApiError::InvalidKey { .. })
        ));
        let event = br#"{"event_id":"ev-1","type":"claimed"}"#;
        let events = k("/v1/training-jobs/j1/events");
        match Command::ReportJobEvent.validate(&events, event, None, &ctx) {
            Ok(Validated::Keyed { key, .. }) => {
                assert_eq!(key.as_str(), "ev-1");
                assert_eq!(
                    key_scope(Command::ReportJobEvent, &key, "acme", "alice"),
                    Scope::tenant("acme")
                );
            }
            other => panic!("{other:?}"),
        }
        let other = IdempotencyKey::parse("ev-2").unwrap();
        assert!(matches!(
            Command::ReportJobEvent.validate(&events, event, Some(other), &ctx),
            Err(ApiError::InvalidKey { .. })
        ));
    }
}
