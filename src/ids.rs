//! Random identifiers.

use crate::idempotency::fingerprint::hex;

/// Bytes drawn from the platform CSPRNG at a time: one call into the platform
/// (`crypto.getRandomValues`) serves 64 request ids instead of one.
const POOL_BYTES: usize = 1024;

thread_local! {
    /// Random bytes not handed out yet (each byte is handed out once).
    static POOL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `n` random bytes as lowercase hex, from the platform CSPRNG.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    fill(&mut buf);
    hex(&buf)
}

/// Fills `buf` from the pool, refilled from the platform CSPRNG when short.
fn fill(buf: &mut [u8]) {
    if buf.len() > POOL_BYTES {
        return draw(buf);
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < buf.len() {
            pool.resize(POOL_BYTES, 0);
            draw(&mut pool);
        }
        let rest = pool.len() - buf.len();
        buf.copy_from_slice(&pool[rest..]);
        pool.truncate(rest);
    })
}

fn draw(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the platform random source is available");
}

/// A prefixed id such as `doc_3f9a…` (128 random bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_hex(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_the_pool_are_distinct_and_the_pool_refills() {
        let mut seen = std::collections::HashSet::new();
        // Many times the pool's size: every refill is crossed.
        for _ in 0..(POOL_BYTES / 16) * 20 + 3 {
            let id = random_hex(16);
            assert_eq!(id.len(), 32);
            assert!(seen.insert(id), "a random id repeated");
        }
        // Sizes that do not divide the pool, and one larger than it.
        for n in [7, 33, POOL_BYTES, POOL_BYTES + 1, 3 * POOL_BYTES] {
            let (a, b) = (random_hex(n), random_hex(n));
            assert_eq!(a.len(), 2 * n);
            assert_ne!(a, b);
        }
    }
}
