//! Whose key is it: the scope of an idempotency key, the key's object name, and
//! the key forwarded to an origin.
//!
//! A key a client sends belongs to its tenant **and** subject (FineFlow's
//! `UNIQUE (idempotency_key, user_id)`; the IETF draft's security section): two
//! users of one tenant sending the same key are two keys, so neither can be
//! answered with the other's response. A key the server derives (an unkeyed
//! document upload, a trainer's `event_id`) names a fact about the tenant's data
//! and is scoped by tenant only.
//!
//! The scope is stored as text: the tenant, or `tenant:subject`, each part with
//! `%` and `:` percent-escaped so no two pairs give the same text.

use super::fingerprint::hex;
use sha2::{Digest, Sha256};

/// The scope of a key: its tenant and, for a client's key, its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub tenant: String,
    pub subject: Option<String>,
}

fn escape(part: &str) -> String {
    part.replace('%', "%25").replace(':', "%3A")
}

impl Scope {
    /// A client-supplied key: per tenant and subject.
    pub fn client(tenant: &str, subject: &str) -> Self {
        Scope {
            tenant: tenant.into(),
            subject: Some(subject.into()),
        }
    }

    /// A server-derived key: per tenant.
    pub fn tenant(tenant: &str) -> Self {
        Scope {
            tenant: tenant.into(),
            subject: None,
        }
    }

    /// The stored form (`idempotency_records.scope`).
    pub fn encode(&self) -> String {
        match &self.subject {
            Some(s) => format!("{}:{}", escape(&self.tenant), escape(s)),
            None => escape(&self.tenant),
        }
    }

    /// The stored form of the tenant alone: every scope of the tenant is this
    /// text, or starts with it followed by `:` (what the stats select by).
    pub fn tenant_prefix(tenant: &str) -> String {
        escape(tenant)
    }
}

/// SHA-256 over length-prefixed parts: no two part lists hash the same text.
fn digest(domain: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex(&h.finalize())
}

/// The Durable Object's name for a key: one object per (scope, route, key).
pub fn object_name(scope: &str, route: &str, key: &str) -> String {
    digest("idemgate object v1", &[scope, route, key])
}

/// The gate object a key lives in: its own (`shards` = 0, named by the key's
/// name, [`object_name`]), or one of the tenant's `shards` objects, picked by
/// that name. The count is part of the name, so a key is never looked for in an
/// object that hashed keys by another count.
pub fn gate_object_name(tenant: &str, key_name: &str, shards: u32) -> String {
    if shards == 0 {
        return key_name.to_string();
    }
    // The key's name is hex SHA-256: its first 64 bits are uniform.
    let bits = key_name
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    let index = (bits % u64::from(shards)).to_string();
    digest("idemgate shard v1", &[tenant, &shards.to_string(), &index])
}

/// The `Idempotency-Key` sent to an origin function: hex SHA-256 of the whole
/// scope (tenant, subject), the route and the client's key. Never the raw key,
/// so an origin that dedupes on it cannot mix two tenants' or users' requests,
/// and the same client request always reaches the origin with the same key.
pub fn forwarded_key(scope: &str, route: &str, key: &str) -> String {
    digest("idemgate forwarded key v1", &[scope, route, key])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_their_tenants_shards_and_stay_in_one() {
        let names: Vec<String> = (0..4000)
            .map(|i| object_name("t1\u{1f}alice", "POST /functions/v1/echo", &format!("k{i}")))
            .collect();
        // Without shards a key's object is its own name.
        assert_eq!(gate_object_name("t1", &names[0], 0), names[0]);
        let mut per_object = std::collections::HashMap::new();
        for n in &names {
            let object = gate_object_name("t1", n, 8);
            assert_eq!(object, gate_object_name("t1", n, 8), "stable");
            *per_object.entry(object).or_insert(0) += 1;
        }
        assert_eq!(per_object.len(), 8);
        // 500 expected per shard; a fair hash stays well within ±20 %.
        assert!(
            per_object.values().all(|c| (400..=600).contains(c)),
            "{per_object:?}"
        );
        // Another tenant, or another shard count, never shares those objects.
        for n in names.iter().take(50) {
            assert!(!per_object.contains_key(&gate_object_name("t2", n, 8)));
            assert!(!per_object.contains_key(&gate_object_name("t1", n, 16)));
        }
    }

    #[test]
    fn client_scopes_differ_per_subject_and_never_collide_with_escaping_tricks() {
        let a = Scope::client("acme", "alice").encode();
        let b = Scope::client("acme", "bob").encode();
        assert_ne!(a, b);
        // "a:b" + "c" against "a" + "b:c": escaping keeps them apart.
        assert_ne!(
            Scope::client("a:b", "c").encode(),
            Scope::client("a", "b:c").encode()
        );
        assert_ne!(
            Scope::client("a%3Ab", "c").encode(),
            Scope::client("a:b", "c").encode()
        );
        // A tenant scope is never a client scope.
        assert_ne!(
            Scope::tenant("a:b").encode(),
            Scope::client("a", "b").encode()
        );
    }

    #[test]
    fn every_scope_of_a_tenant_starts_with_its_prefix() {
        let p = Scope::tenant_prefix("ac:me");
        assert_eq!(Scope::tenant("ac:me").encode(), p);
        assert!(Scope::client("ac:me", "x")
            .encode()
            .starts_with(&format!("{p}:")));
        assert!(!Scope::client("ac", "me:x")
            .encode()
            .starts_with(&format!("{p}:")));
    }

    #[test]
    fn forwarded_keys_differ_by_tenant_subject_route_and_key_and_are_stable() {
        let base = forwarded_key("acme:alice", "POST /functions/v1/echo", "k");
        assert_eq!(
            base,
            forwarded_key("acme:alice", "POST /functions/v1/echo", "k")
        );
        assert_eq!(base.len(), 64);
        for other in [
            forwarded_key("globex:alice", "POST /functions/v1/echo", "k"),
            forwarded_key("acme:bob", "POST /functions/v1/echo", "k"),
            forwarded_key("acme:alice", "POST /functions/v1/charge", "k"),
            forwarded_key("acme:alice", "POST /functions/v1/echo", "k2"),
        ] {
            assert_ne!(base, other);
        }
        // Length prefixes: moving a character between parts changes the hash.
        assert_ne!(forwarded_key("ab", "c", "k"), forwarded_key("a", "bc", "k"));
        assert_ne!(object_name("s", "r", "k"), forwarded_key("s", "r", "k"));
    }
}
