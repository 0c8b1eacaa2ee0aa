//! Identifiers and secrets. Mozilla tokens are 256-bit random bearer secrets; the store
//! keeps only their SHA-256 digest (`TokenId`), so a leaked database does not leak working
//! tokens and the digest can travel between processes. Queue ids are 128-bit random
//! capabilities; message keys are UUIDv7 (time-ordered, not secret).

use sha2::{Digest, Sha256};

/// The store's name for a token: hex SHA-256 of the secret, 64 characters.
pub type TokenId = String;

/// A new Mozilla token: 32 random bytes as 64 lowercase hex characters.
pub fn new_mozilla_token() -> String {
    random_hex(32)
}

/// A new queue id (the capability in a queue URL): 16 random bytes, 32 hex characters.
pub fn new_queue_id() -> String {
    random_hex(16)
}

/// A new message key: UUIDv7 without dashes, 32 hex characters.
pub fn new_message_key() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The store id of a presented token, or `None` when it cannot be one of ours (wrong
/// length or alphabet), which callers report exactly like an unknown token.
pub fn mozilla_token_id(token: &str) -> Option<TokenId> {
    is_hex(token, 64).then(|| hex(&Sha256::digest(token.as_bytes())))
}

/// True when `s` is `len` lowercase hex digits (the shape of ids and keys we issue).
pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A random non-zero `u64` (router epochs).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    u64::from_ne_bytes(bytes).max(1)
}

/// `n` bytes from the operating system's CSPRNG, hex encoded.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let a = new_mozilla_token();
        let b = new_mozilla_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        let id = mozilla_token_id(&a).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(Some(id), mozilla_token_id(&a));
        assert_ne!(mozilla_token_id(&a), mozilla_token_id(&b));
    }

    #[test]
    fn foreign_shapes_are_not_tokens() {
        assert_eq!(mozilla_token_id(""), None);
        assert_eq!(mozilla_token_id(&"A".repeat(64)), None);
        assert_eq!(mozilla_token_id(&"a".repeat(63)), None);
    }

    #[test]
    fn ids_and_keys_have_the_documented_shape() {
        assert!(is_hex(&new_queue_id(), 32));
        assert!(is_hex(&new_message_key(), 32));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
