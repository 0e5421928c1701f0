//! What a request is, decided once from its method, path, headers and the
//! configuration, before its body is read: the Worker's quick passthrough and
//! its guarded path both act on this one decision ([`Plan::of`]), and on one
//! resolution of the caller (`auth::VerifiedTokens::resolve`).
//!
//! The quick passthrough ([`Plan::quick`]) answers only what the guarded path
//! ([`Plan::guarded`]) would: the same origin call, with the same headers, for
//! the same caller. The property test below drives both over generated
//! requests, configurations and token states.

use super::functions::CallFunction;
use super::{Endpoint, Keyed};
use crate::auth::{Caller, Resolved};
use crate::config::Config;
use crate::problem::ApiError;
use crate::routes::functions::{upstream_url, FORWARDED_HEADERS};

/// A request header by its lowercase name.
pub type HeaderFn<'a> = &'a dyn Fn(&'static str) -> Option<String>;

/// An origin call passed straight through: where, and the headers it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passthrough {
    pub url: String,
    pub forward: Vec<(String, String)>,
}

/// What a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// An origin function's call that carries neither key header and declares
    /// a length within `MAX_BODY_BYTES` under `UPSTREAM_KEY_POLICY=optional`:
    /// its body streams on unread ([`CallFunction::streams_through`]). `Err`:
    /// the function is not fronted here, or no origin is configured.
    StreamThrough(Result<Passthrough, ApiError>),
    /// A keyed route's write: its body is read, then its command decides
    /// (the key's object, or a keyless call of unknown length passed through).
    Write(Keyed),
    /// Anything else (reads, the key admin routes, health, the console, a
    /// method a route does not take): the router's.
    Route,
}

/// The guarded path's step after authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    Refused(ApiError),
    Pass(&'a Passthrough),
    Write(&'a Keyed),
    Route,
}

impl Plan {
    /// `method`: as sent; `keyed`: the path's keyed route
    /// ([`super::match_path`]).
    pub fn of(method: &str, keyed: Option<&Keyed>, cfg: &Config, header: HeaderFn<'_>) -> Plan {
        let Some(keyed) = keyed.filter(|k| method == k.endpoint.method()) else {
            return Plan::Route;
        };
        if keyed.endpoint == Endpoint::CallFunction && CallFunction::passes_through(cfg) {
            let has_key =
                header("idempotency-key").is_some() || header("x-idempotency-key").is_some();
            let declared = declared_length(header);
            if CallFunction::streams_through(cfg, has_key, declared) {
                let name = keyed.param.as_deref().unwrap_or_default();
                return Plan::StreamThrough(upstream_url(cfg, name).map(|url| Passthrough {
                    url,
                    forward: forwarded(header),
                }));
            }
        }
        Plan::Write(keyed.clone())
    }

    /// The quick passthrough's decision: the origin call, if this request
    /// streams through to a known function and its caller `resolved` without
    /// verifying anything; `None` leaves it to the guarded path.
    pub fn quick(&self, resolved: &Resolved) -> Option<(&Passthrough, Caller)> {
        match (self, resolved) {
            (Plan::StreamThrough(Ok(pass)), Resolved::Caller(caller)) => {
                Some((pass, caller.clone()))
            }
            _ => None,
        }
    }

    /// The guarded path's decision once the router has reached the keyed
    /// routes, given the caller as authentication `resolved` it.
    pub fn guarded(&self, resolved: &Resolved) -> Step<'_> {
        if let Plan::Route = self {
            return Step::Route;
        }
        if let Err(e) = caller(resolved) {
            return Step::Refused(e);
        }
        match self {
            Plan::StreamThrough(Ok(pass)) => Step::Pass(pass),
            Plan::StreamThrough(Err(e)) => Step::Refused(e.clone()),
            Plan::Write(keyed) => Step::Write(keyed),
            Plan::Route => Step::Route,
        }
    }
}

/// The caller, or the 401 its token gets.
pub fn caller(resolved: &Resolved) -> Result<Caller, ApiError> {
    match resolved {
        Resolved::Caller(caller) => Ok(caller.clone()),
        Resolved::Refused(e) => Err(ApiError::Unauthorized(e.to_string())),
        Resolved::Unverified | Resolved::Verify(_) => {
            Err(ApiError::Unauthorized("the token was not verified".into()))
        }
    }
}

/// The body's length as its `Content-Length` declares it.
pub fn declared_length(header: HeaderFn<'_>) -> Option<usize> {
    header("content-length").and_then(|v| v.parse::<usize>().ok())
}

/// The request headers passed on to the origin ([`FORWARDED_HEADERS`]).
pub fn forwarded(header: HeaderFn<'_>) -> Vec<(String, String)> {
    FORWARDED_HEADERS
        .iter()
        .filter_map(|name| header(name).map(|v| (name.to_string(), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ClaimChecks, Rules, VerifiedTokens};
    use crate::config::KeyPolicy;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"plan-secret";
    const NOW: f64 = 1_700_000_000.0;

    fn token(sub: &str, exp: f64) -> String {
        let claims = serde_json::json!({"sub": sub, "exp": NOW + exp});
        format!("Bearer {}", crate::auth::sign_hs256(&claims, SECRET))
    }

    fn config(optional: bool, base: bool, limit: usize) -> Config {
        Config {
            upstream_key_policy: if optional {
                KeyPolicy::Optional
            } else {
                KeyPolicy::Required
            },
            upstream_base_url: base.then(|| "http://origin.test".to_string()),
            upstream_functions: vec!["echo".into()],
            max_body_bytes: limit,
            ..Config::default()
        }
    }

    fn headers_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&'static str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn a_keyless_call_of_declared_length_streams_through_and_any_key_header_keeps_it_keyed() {
        let cfg = config(true, true, 100);
        let keyed = super::super::match_path("/functions/v1/echo");
        let h = headers_of(vec![
            ("content-length", "5".into()),
            ("content-type", "text/plain".into()),
        ]);
        let plan = Plan::of("POST", keyed.as_ref(), &cfg, &h);
        assert_eq!(
            plan,
            Plan::StreamThrough(Ok(Passthrough {
                url: "http://origin.test/echo".into(),
                forward: vec![("content-type".into(), "text/plain".into())],
            }))
        );
        for key in ["idempotency-key", "x-idempotency-key"] {
            for value in ["k", "", "bad key"] {
                let h = headers_of(vec![("content-length", "5".into()), (key, value.into())]);
                assert!(
                    matches!(Plan::of("POST", keyed.as_ref(), &cfg, &h), Plan::Write(_)),
                    "{key}: {value:?}"
                );
            }
        }
        // Over the limit, of unknown length, or under the `required` policy:
        // read first (the limit holds; the command decides).
        for (cfg, length) in [
            (config(true, true, 100), Some("101")),
            (config(true, true, 100), None),
            (config(true, true, 100), Some("five")),
            (config(false, true, 100), Some("5")),
        ] {
            let mut pairs = vec![];
            if let Some(l) = length {
                pairs.push(("content-length", l.to_string()));
            }
            let h = headers_of(pairs);
            assert!(matches!(
                Plan::of("POST", keyed.as_ref(), &cfg, &h),
                Plan::Write(_)
            ));
        }
        // Another method, or a read route: the router's.
        let h = headers_of(vec![("content-length", "5".into())]);
        assert_eq!(Plan::of("GET", keyed.as_ref(), &cfg, &h), Plan::Route);
        assert_eq!(Plan::of("POST", None, &cfg, &h), Plan::Route);
    }

    fn any_header_value() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some(String::new())),
            Just(Some("k-1".to_string())),
            Just(Some("bad key".to_string())),
            Just(Some(".".to_string())),
            "[ -~]{0,12}".prop_map(Some),
        ]
    }

    fn any_length() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            (0usize..300).prop_map(|n| Some(n.to_string())),
            Just(Some("abc".to_string())),
            Just(Some("-1".to_string())),
            Just(Some(" 5".to_string())),
            Just(Some("99999999999999999999999".to_string())),
        ]
    }

    proptest! {
        #[test]
        fn the_quick_passthrough_answers_only_what_the_guarded_path_would(
            method in prop_oneof![Just("POST"), Just("PUT"), Just("GET"), Just("post"), Just("PATCH")],
            path in prop_oneof![
                Just("/functions/v1/echo"), Just("/functions/v1/other"), Just("/functions/v1/echo/"),
                Just("/v1/documents"), Just("/v1/training-data"), Just("/healthz"), Just("/functions/v1/"),
            ],
            ietf in any_header_value(),
            legacy in any_header_value(),
            length in any_length(),
            content_type in prop_oneof![Just(None), Just(Some("application/json".to_string())), Just(Some("text/plain".to_string()))],
            optional in any::<bool>(),
            base in any::<bool>(),
            limit in 0usize..200,
            who in 0usize..5,
            access_who in 0usize..5,
            remembered in prop::collection::vec(0usize..5, 0..5),
            dt in -100.0f64..100.0,
        ) {
            let cfg = config(optional, base, limit);
            let tokens = [token("u1", 60.0), token("u2", 30.0), token("u3", -10.0),
                          "Bearer not.a.token".to_string(), String::new()];
            let checks = ClaimChecks::default();
            // The isolate's token memory, as earlier requests left it.
            let mut memory = VerifiedTokens::default();
            for i in remembered {
                let _ = memory.authenticate(Some(&tokens[i]), SECRET, NOW, &checks);
            }
            let authorization = Some(tokens[who].clone()).filter(|t| !t.is_empty());
            // Cloudflare Access's header: the bare token, read only without Authorization.
            let access = Some(tokens[access_who].trim_start_matches("Bearer ").to_string())
                .filter(|t| !t.is_empty());
            let mut pairs: Vec<(&'static str, String)> = vec![];
            for (name, value) in [("idempotency-key", ietf), ("x-idempotency-key", legacy),
                                  ("content-length", length), ("content-type", content_type),
                                  ("authorization", authorization.clone())] {
                if let Some(v) = value { pairs.push((name, v)); }
            }
            let header = headers_of(pairs);
            let keyed = super::super::match_path(path);
            // One plan for the request, as the Worker computes it once.
            let plan = Plan::of(method, keyed.as_ref(), &cfg, &header);
            let rules = Rules::hs256(SECRET, &checks);
            let recalled = memory.resolve(authorization.as_deref(), access.as_deref(), &rules, NOW + dt, false);
            let verified = memory.resolve(authorization.as_deref(), access.as_deref(), &rules, NOW + dt, true);
            if let Some((pass, caller)) = plan.quick(&recalled) {
                prop_assert_eq!(plan.guarded(&verified), Step::Pass(pass));
                prop_assert_eq!(&verified, &Resolved::Caller(caller));
                // The call the guarded path would make, had it read the headers itself.
                let name = keyed.as_ref().and_then(|k| k.param.clone()).unwrap_or_default();
                prop_assert_eq!(Ok(pass.url.clone()), upstream_url(&cfg, &name));
                prop_assert_eq!(&pass.forward, &forwarded(&header));
                prop_assert!(header("idempotency-key").is_none() && header("x-idempotency-key").is_none());
                prop_assert!(CallFunction::passes_through(&cfg));
            }
            // A refused or unknown token never passes, quick or guarded.
            if !matches!(verified, Resolved::Caller(_)) {
                prop_assert!(plan.quick(&recalled).is_none());
                prop_assert!(!matches!(plan.guarded(&verified), Step::Pass(_) | Step::Write(_)));
            }
        }
    }
}
