//! A keyed write in the Worker: its headers read once, its body read within
//! the limit, the key, the command's validation, the fingerprint and the
//! envelope — then the key's object (or, for an origin function called
//! without a key, the origin).

use super::gate_client::{call_gate, GateOp, Hop};
use super::incoming::Incoming;
use super::isolate::Outcome;
use crate::auth::Caller;
use crate::commands::plan;
use crate::commands::{key_scope, Command, Endpoint, Keyed, ParseContext, Parsed};
use crate::config::Config;
use crate::envelope::Envelope;
use crate::idempotency::{key_from_headers, parse_prefer_wait, Fingerprint, IdempotencyKey};
use crate::problem::ApiError;
use crate::request_log::{Stage, Trace};
use crate::routes::functions;
use crate::upstream::Outgoing;
use worker::{Context, Env};

/// Test hook headers (only with `IDEMGATE_TEST_HOOKS=1`).
const TEST_DELAY_HEADER: &str = "x-idemgate-test-delay-ms";
const TEST_FAIL_HEADER: &str = "x-idemgate-test-fail";
/// `fetch`: reach the key's object as an older Worker version does (`Hop::Fetch`).
const TEST_HOP_HEADER: &str = "x-idemgate-test-hop";

/// Reads the body, refusing more than `limit` bytes before doing any work
/// (`declared`: its `Content-Length`).
pub(super) async fn read_body(
    req: &Incoming,
    declared: Option<usize>,
    limit: usize,
) -> std::result::Result<Vec<u8>, ApiError> {
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let body = req.bytes().await.map_err(|_| {
        ApiError::bad_request("unreadable-body", "the request body could not be read")
    })?;
    if body.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(body)
}

/// The key from either header (400 if malformed or the two disagree).
fn request_key(req: &Incoming) -> std::result::Result<Option<IdempotencyKey>, ApiError> {
    key_from_headers(
        req.header("idempotency-key").as_deref(),
        req.header("x-idempotency-key").as_deref(),
    )
    .map_err(|e| ApiError::InvalidKey {
        detail: e.to_string(),
    })
}

/// A keyed write's headers, each read once (a read is a call into JavaScript).
struct WriteHeaders {
    declared: Option<usize>,
    /// Its error waits until the body limit has had its say (413 before 400).
    key: std::result::Result<Option<IdempotencyKey>, ApiError>,
    content_type: Option<String>,
    /// The headers an origin function's call passes on (none for another).
    forward: Vec<(String, String)>,
}

impl WriteHeaders {
    fn read(req: &Incoming, endpoint: Endpoint) -> Self {
        let header = |name| req.header(name);
        let forward = if endpoint == Endpoint::CallFunction {
            plan::forwarded(&header)
        } else {
            Vec::new()
        };
        WriteHeaders {
            declared: plan::declared_length(&header),
            key: request_key(req),
            content_type: req.header("content-type"),
            forward,
        }
    }
}

/// What a keyed write asks for, once its body is read.
enum Prepared {
    /// The key's object.
    Gate {
        envelope: Box<Envelope>,
        command: Command,
    },
    /// An origin function's call without a key, its body read already.
    Passthrough {
        url: String,
        forward: Vec<(String, String)>,
    },
}

/// A keyed write: body limit → key → validation (the command's) → fingerprint → object.
pub(super) async fn keyed_write(
    req: Incoming,
    env: &Env,
    ctx: &Context,
    caller: &Caller,
    cfg: &Config,
    keyed: Keyed,
    trace: &Trace,
) -> Outcome {
    let heads = WriteHeaders::read(&req, keyed.endpoint);
    let body = read_body(&req, heads.declared, cfg.max_body_bytes).await?;
    match prepare(&req, cfg, caller, &keyed, heads, &body)? {
        Prepared::Passthrough { url, forward } => {
            trace.at(Stage::Passthrough);
            Ok(functions::passthrough(cfg, &url, Outgoing::Bytes(&body), &forward).await)
        }
        Prepared::Gate { envelope, command } => {
            call_gate(
                env,
                ctx,
                &envelope,
                GateOp::Execute(&command),
                cfg.keygate_shards,
                hop(&req, cfg),
                trace,
            )
            .await
        }
    }
}

/// A keyed write with its body read (within the limit): the key, the
/// command's validation, the fingerprint, the envelope.
fn prepare(
    req: &Incoming,
    cfg: &Config,
    caller: &Caller,
    keyed: &Keyed,
    heads: WriteHeaders,
    body: &[u8],
) -> std::result::Result<Prepared, ApiError> {
    let endpoint = keyed.endpoint;
    let json_content = heads
        .content_type
        .as_deref()
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    let check = ParseContext {
        cfg,
        tenant: &caller.tenant,
        subject: &caller.sub,
        roles: &caller.roles,
        json_content,
    };
    let (command, key, json) = match endpoint.parse(keyed, body, heads.key?, &check)? {
        Parsed::Keyed { command, key, json } => (command, key, json),
        Parsed::Passthrough { url } => {
            return Ok(Prepared::Passthrough {
                url,
                forward: heads.forward,
            })
        }
    };
    let record_scope = key_scope(endpoint, &key, &caller.tenant, &caller.sub).encode();
    // The fingerprint covers the bytes as sent; the object gets the parsed
    // command.
    let (method, path) = endpoint.template().split_once(' ').unwrap_or_default();
    let fingerprint = Fingerprint::compute(method, path, body, json, heads.content_type.as_deref());
    let mut envelope = envelope(req, cfg, caller, keyed, &key, &fingerprint);
    envelope.record_scope = record_scope;
    envelope.forward = heads.forward;
    Ok(Prepared::Gate {
        envelope: Box::new(envelope),
        command,
    })
}

fn envelope(
    req: &Incoming,
    cfg: &Config,
    caller: &Caller,
    keyed: &Keyed,
    key: &IdempotencyKey,
    fp: &Fingerprint,
) -> Envelope {
    let wait_ms = req
        .header("prefer")
        .and_then(|p| parse_prefer_wait(&p))
        .map_or(0, |secs| {
            crate::idempotency::prefer::wait_ms(secs, cfg.max_wait_ms)
        });
    let hook = |name: &'static str| cfg.test_hooks.then(|| req.header(name)).flatten();
    let test_delay_ms = hook(TEST_DELAY_HEADER)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Envelope {
        scope: caller.tenant.clone(),
        record_scope: String::new(),
        route: keyed.route.clone(),
        template: keyed.endpoint.template().into(),
        param: keyed.param.clone(),
        forward: vec![],
        key: key.clone(),
        fingerprint: Some(fp.clone()),
        caller_sub: caller.sub.clone(),
        admin: caller.has_role("admin"),
        wait_ms,
        test_delay_ms,
        test_fail: hook(TEST_FAIL_HEADER),
        // The test hook's slow hop back is the object's to take, every time.
        copy: cfg.replay_cache_ms > 0 && test_delay_ms == 0,
        fence: None,
    }
}

/// How this request reaches its key's object: by RPC, unless the test hook
/// asks for the `fetch` form.
pub(super) fn hop(req: &Incoming, cfg: &Config) -> Hop {
    let by_fetch = cfg.test_hooks && req.header(TEST_HOP_HEADER).as_deref() == Some("fetch");
    if by_fetch {
        Hop::Fetch
    } else {
        Hop::Rpc
    }
}
