//! Random identifiers.

use crate::idempotency::fingerprint::hex;

/// `n` random bytes as lowercase hex, from the platform CSPRNG.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the platform random source is available");
    hex(&buf)
}

/// A prefixed id such as `doc_3f9a…` (128 random bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_hex(16))
}
