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
//! Each keyed route is one type implementing [`KeyedCommand`]: its parsed
//! request, with its template, role, key policy, `parse`, `apply` and OpenAPI
//! description, in the file of its domain (`documents.rs`, `training.rs`,
//! `functions.rs`, `staging.rs` here); its handler's D1 work is in `routes/`.
//! The table below (`keyed_commands!`) lists the types, one a line, and
//! generates [`Endpoint`], [`Command`], [`Endpoint::ALL`] and the matches that
//! hand each variant to its type.
//!
//! Adding a keyed route: a type implementing [`KeyedCommand`], and its line in
//! the table. The Worker's routing, the object's dispatch, the stats, the route
//! TTL check and the OpenAPI document all read the table.

mod doc;
pub mod documents;
pub mod functions;
mod paths;
pub mod plan;
pub mod staging;
pub mod training;

pub use doc::KeyedDoc;
pub use paths::{keyed_route, match_path, Keyed};
pub use staging::{APPROVER_ROLE, POSTER_ROLE};

use crate::config::{Config, KeyPolicy};
use crate::envelope::Envelope;
use crate::idempotency::scope::Scope;
use crate::idempotency::IdempotencyKey;
use crate::problem::ApiError;
use crate::routes::{settle, HandlerOutcome, HandlerResult};
use serde::{Deserialize, Serialize};
use worker::D1Database;

/// Prefix of the keys the server derives (document uploads without a key).
pub const DERIVED_PREFIX: &str = "derived:";

/// One keyed route: the request it parses into, and everything the table
/// needs to know about it. `parse` runs in the Worker, `apply` in the key's
/// object; the value crosses between them inside [`Command`] (so it is serde).
// Only called through the table's matches (static dispatch), and a Worker is
// single-threaded: the futures need no `Send` bound, which is what the lint
// asks callers to be able to name.
#[allow(async_fn_in_trait)]
pub trait KeyedCommand: Sized {
    /// `METHOD /path`, `{id}` or `{name}` one parameter segment: the path
    /// matched, the fingerprint's route, the stats' grouping.
    const TEMPLATE: &'static str;

    /// The roles of which the caller needs one (none: any caller), checked
    /// before the body is read.
    const ROLES: &'static [&'static str] = &[];

    /// What the OpenAPI document says about the route. No default: a keyed
    /// route cannot compile undocumented.
    const DOC: KeyedDoc;

    /// What happens without a key header.
    fn key_policy(_cfg: &Config) -> KeyPolicy {
        KeyPolicy::Required
    }

    /// Whether `key` is the whole tenant's rather than the caller's own
    /// (see [`key_scope`]).
    fn tenant_key(_key: &IdempotencyKey) -> bool {
        false
    }

    /// Parses and validates the body and settles the key it runs under, before
    /// any idempotency work (the role is already checked).
    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError>;

    /// Runs the handler in the key's object, under the lease. A client error
    /// is a stored 4xx answer; an internal one is a throw (500, the key released).
    async fn apply(&self, db: &D1Database, cfg: &Config, env: &Envelope, now: i64)
        -> HandlerResult;
}

/// A keyed request as [`KeyedCommand::parse`] sees it.
pub struct Input<'a> {
    /// The body as sent.
    pub body: &'a [u8],
    /// The parsed key header, if one was sent.
    pub header: Option<IdempotencyKey>,
    /// The path parameter (`{id}`, `{name}`); empty if the template has none.
    pub param: &'a str,
    pub ctx: &'a ParseContext<'a>,
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

/// What a valid keyed request is idempotent under.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<C = Command> {
    /// Run `command` under `key` (whose scope [`key_scope`] tells); `json` if
    /// the body is fingerprinted as canonical JSON.
    Keyed {
        command: C,
        key: IdempotencyKey,
        json: bool,
    },
    /// No key, and the route lets such requests pass straight through to `url`.
    Passthrough { url: String },
}

impl<C> Parsed<C> {
    /// Most routes: `command` runs under the client's key header (400 without
    /// one), its body fingerprinted as canonical JSON.
    pub fn under_header(command: C, header: Option<IdempotencyKey>) -> Result<Self, ApiError> {
        Ok(Parsed::Keyed {
            command,
            key: header.ok_or(ApiError::KeyRequired)?,
            json: true,
        })
    }

    fn map<D>(self, f: impl FnOnce(C) -> D) -> Parsed<D> {
        match self {
            Parsed::Keyed { command, key, json } => Parsed::Keyed {
                command: f(command),
                key,
                json,
            },
            Parsed::Passthrough { url } => Parsed::Passthrough { url },
        }
    }
}

/// The path parameter the Worker matched (export or job id), as the object's
/// handlers get it.
fn path_param(env: &Envelope) -> &str {
    env.param.as_deref().unwrap_or_default()
}

/// Declares the keyed routes, one `Variant(Type)` a line (`Type:
/// KeyedCommand`), and generates from them:
/// - [`Endpoint`], a data-less variant per route: what a path matched;
/// - [`Command`], the same variants, each holding its parsed `Type`: what
///   crosses to the object;
/// - [`Endpoint::ALL`], in table order (the order paths are matched in);
/// - one match per [`KeyedCommand`] item, handing each variant to its type.
macro_rules! keyed_commands {
    ($($variant:ident($ty:ty),)+) => {
        /// A keyed route: what the Worker knows from the method and path alone.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Endpoint {
            $($variant,)+
        }

        /// A keyed request parsed and validated by the Worker, applied by the
        /// key's object. Each variant holds what its handler needs and nothing
        /// it would have to parse again.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum Command {
            $($variant($ty),)+
        }

        impl Endpoint {
            /// Every keyed route, in table order.
            pub const ALL: [Endpoint; [$(stringify!($variant)),+].len()] =
                [$(Endpoint::$variant),+];

            /// The route template: the fingerprint's route, the stats'
            /// grouping, and the path pattern.
            pub fn template(self) -> &'static str {
                match self {
                    $(Endpoint::$variant => <$ty as KeyedCommand>::TEMPLATE,)+
                }
            }

            /// The role the caller needs, if any.
            pub fn roles(self) -> &'static [&'static str] {
                match self {
                    $(Endpoint::$variant => <$ty as KeyedCommand>::ROLES,)+
                }
            }

            /// What happens without a key header.
            pub fn key_policy(self, cfg: &Config) -> KeyPolicy {
                match self {
                    $(Endpoint::$variant => <$ty as KeyedCommand>::key_policy(cfg),)+
                }
            }

            /// What the OpenAPI document says about the route.
            pub fn doc(self) -> KeyedDoc {
                match self {
                    $(Endpoint::$variant => <$ty as KeyedCommand>::DOC,)+
                }
            }

            fn tenant_key(self, key: &IdempotencyKey) -> bool {
                match self {
                    $(Endpoint::$variant => <$ty as KeyedCommand>::tenant_key(key),)+
                }
            }

            fn parse_body(self, input: Input<'_>) -> Result<Parsed, ApiError> {
                match self {
                    $(Endpoint::$variant => {
                        Ok(<$ty as KeyedCommand>::parse(input)?.map(Command::$variant))
                    })+
                }
            }
        }

        impl Command {
            async fn handle(
                &self,
                db: &D1Database,
                cfg: &Config,
                env: &Envelope,
                now: i64,
            ) -> HandlerResult {
                match self {
                    $(Command::$variant(command) => command.apply(db, cfg, env, now).await,)+
                }
            }
        }
    };
}

// The table. A path matches the first route whose pattern fits; no two overlap.
keyed_commands! {
    UploadDocument(documents::UploadDocument),
    CreateDataset(training::CreateDataset),
    CreateJob(training::CreateJob),
    ReportJobEvent(training::ReportJobEvent),
    CancelJob(training::CancelJob),
    CallFunction(functions::CallFunction),
    StageExport(staging::StageExport),
    ReviewExport(staging::ReviewExport),
    ApproveExport(staging::ApproveExport),
    RejectExport(staging::RejectExport),
    RequestChanges(staging::RequestChanges),
    PostExport(staging::PostExport),
    RollbackExport(staging::RollbackExport),
    StageBatch(staging::StageBatch),
}

impl Endpoint {
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
        let roles = self.roles();
        if !roles.is_empty() && !ctx.roles.iter().any(|r| roles.contains(&r.as_str())) {
            return Err(ApiError::Forbidden(format!(
                "the {} role is required",
                roles.join(" or ")
            )));
        }
        self.parse_body(Input {
            body,
            header,
            param: keyed.param.as_deref().unwrap_or_default(),
            ctx,
        })
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
        settle(self.handle(db, cfg, env, now).await)
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

/// The scope of `endpoint`'s `key` for a caller of `tenant` acting as `subject`:
/// the tenant's for a derived document key or a trainer's `event_id` (a fact
/// about the job, whoever reports it), else the subject's own.
pub fn key_scope(endpoint: Endpoint, key: &IdempotencyKey, tenant: &str, subject: &str) -> Scope {
    if endpoint.tenant_key(key) {
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
        // Test hook: a Rust panic inside the handler, under the lease.
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
    fn money_moving_steps_need_their_roles_and_others_need_none() {
        let cfg = Config::default();
        let with = |roles: &'static [String]| ParseContext {
            roles,
            ..no_role(&cfg)
        };
        static NONE: [String; 0] = [];
        static CLERK: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["clerk".into(), "viewer".into()]);
        static POSTER: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec![POSTER_ROLE.into()]);
        static APPROVER: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["clerk".into(), APPROVER_ROLE.into()]);
        let body = |c: Endpoint| -> &'static [u8] {
            match c {
                Endpoint::RejectExport | Endpoint::RollbackExport | Endpoint::RequestChanges => {
                    br#"{"reason":"wrong period"}"#
                }
                _ => b"{}",
            }
        };
        // Which of no role, other roles, poster and approver may take each step.
        let cases = [
            (Endpoint::ApproveExport, [false, false, false, true]),
            (Endpoint::RejectExport, [false, false, false, true]),
            (Endpoint::RequestChanges, [false, false, false, true]),
            (Endpoint::PostExport, [false, false, true, true]),
            (Endpoint::RollbackExport, [false, false, false, true]),
            (Endpoint::ReviewExport, [true, true, true, true]),
            (Endpoint::StageExport, [true, true, true, true]),
        ];
        for (c, allowed) in cases {
            let k =
                match_path(&c.template().replace("{id}", "e1")[c.method().len() + 1..]).unwrap();
            let who: [&'static [String]; 4] = [&NONE, &CLERK, &POSTER, &APPROVER];
            for (roles, allowed) in who.into_iter().zip(allowed) {
                let key = Some(IdempotencyKey::parse("k-1").unwrap());
                let got = c.parse(&k, body(c), key, &with(roles));
                match got {
                    Err(ApiError::Forbidden(why)) => {
                        assert!(!allowed, "{c:?} refused {roles:?}: {why}");
                        assert!(why.contains("role is required"), "{why}");
                    }
                    // Allowed: past the role check (the body may still be refused).
                    _ => assert!(allowed, "{c:?} let {roles:?} through"),
                }
            }
        }
        assert_eq!(Endpoint::ReviewExport.roles(), &[] as &[&str]);
        assert_eq!(
            Endpoint::PostExport.parse(
                &match_path("/v1/staging/exports/e1/post").unwrap(),
                b"{}",
                None,
                &with(&CLERK)
            ),
            Err(ApiError::Forbidden(
                "the approver or poster role is required".into()
            ))
        );
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
            ("/v1/staging/exports/e1/post", r#"{"external_reference":"QB-1","export_filename":"a b.csv","posted_by":"alice"}"#.into(), &approver),
            ("/v1/staging/exports/e1/rollback", r#"{"reason":"undo"}"#.into(), &approver),
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
        assert!(
            matches!(command, Command::CallFunction(functions::CallFunction { ref body, .. }) if *body == raw)
        );
        // A batch keeps its invalid items with their errors.
        match parsed("/v1/staging/batches", cases[12].1.as_bytes(), &[]) {
            Command::StageBatch(staging::StageBatch(items)) => {
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
