//! Fronting an origin function, `POST /functions/v1/{name}` (handler:
//! `routes::functions`).

use super::{Input, KeyedCommand, KeyedDoc, Parsed};
use crate::config::{Config, KeyPolicy};
use crate::envelope::Envelope;
use crate::problem::ApiError;
use crate::routes::{functions, HandlerResult};
use serde::{Deserialize, Serialize};
use worker::D1Database;

/// The origin's URL (resolved from the function name) and the bytes to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallFunction {
    pub url: String,
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
}

impl CallFunction {
    /// Whether a call without a key goes straight through to the origin
    /// (`UPSTREAM_KEY_POLICY=optional`). The body plays no part in it, so the
    /// Worker may decide before reading it and stream the body on.
    pub fn passes_through(cfg: &Config) -> bool {
        cfg.upstream_key_policy == KeyPolicy::Optional
    }

    /// Whether a call goes straight through with its body streamed on unread:
    /// it passes through ([`Self::passes_through`]), carries neither key header
    /// (`has_key`: `Idempotency-Key` or `X-Idempotency-Key`, whatever its value)
    /// and declares a length within `MAX_BODY_BYTES`. One with no declared
    /// length is read first, so that the limit holds.
    pub fn streams_through(cfg: &Config, has_key: bool, declared: Option<usize>) -> bool {
        Self::passes_through(cfg) && !has_key && declared.is_some_and(|n| n <= cfg.max_body_bytes)
    }
}

impl KeyedCommand for CallFunction {
    const TEMPLATE: &'static str = "POST /functions/v1/{name}";
    const DOC: KeyedDoc = KeyedDoc::new(
        "callFunction",
        "Front an origin function: it runs once per key; the answer is the origin's",
        "functions",
        "FunctionBody",
        None,
    )
    .body_optional()
    .errors(&[502, 504])
    .key_help("The request's idempotency key; without one, UPSTREAM_KEY_POLICY says: 400, or passed straight through");

    fn key_policy(cfg: &Config) -> KeyPolicy {
        cfg.upstream_key_policy
    }

    /// Any body: fingerprinted as canonical JSON only if it declared JSON.
    fn parse(input: Input<'_>) -> Result<Parsed<Self>, ApiError> {
        let cfg = input.ctx.cfg;
        let url = functions::upstream_url(cfg, input.param)?;
        match input.header {
            Some(key) => Ok(Parsed::Keyed {
                command: CallFunction {
                    url,
                    body: input.body.to_vec(),
                },
                key,
                json: input.ctx.json_content,
            }),
            None if Self::passes_through(cfg) => Ok(Parsed::Passthrough { url }),
            None => Err(ApiError::KeyRequired),
        }
    }

    async fn apply(&self, _: &D1Database, cfg: &Config, env: &Envelope, _: i64) -> HandlerResult {
        let key = env.forwarded_key();
        let key = crate::upstream::OriginKey {
            key: &key,
            fence: env.fence,
        };
        Ok(functions::execute(cfg, &self.url, &self.body, &env.forward, key).await)
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

#[cfg(test)]
mod tests {
    use super::CallFunction;
    use crate::config::Config;

    fn cfg(policy: &str) -> Config {
        let vars = [("UPSTREAM_KEY_POLICY", policy), ("MAX_BODY_BYTES", "100")];
        Config::from_lookup(
            |n| {
                vars.iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            },
            &[],
        )
        .unwrap()
    }

    #[test]
    fn only_a_keyless_call_of_declared_length_within_the_limit_streams_through() {
        let optional = cfg("optional");
        assert!(CallFunction::streams_through(&optional, false, Some(0)));
        assert!(CallFunction::streams_through(&optional, false, Some(100)));
        // Over the limit, or no declared length: read first (413, or the limit
        // holds on what arrives).
        assert!(!CallFunction::streams_through(&optional, false, Some(101)));
        assert!(!CallFunction::streams_through(&optional, false, None));
        // A key header, whatever its value: the keyed path decides.
        assert!(!CallFunction::streams_through(&optional, true, Some(10)));
        // A key is required: nothing passes through.
        assert!(!CallFunction::streams_through(
            &cfg("required"),
            false,
            Some(10)
        ));
    }
}
