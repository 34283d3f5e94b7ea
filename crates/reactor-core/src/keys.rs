//! Project API keys: `rk_pub_…` and `rk_svc_…`.
//!
//! A key is 32 base62 characters of randomness (about 190 bits) after its tier prefix. The
//! server stores only its SHA-256 and a short visible prefix; a plain hash is enough because
//! the secret is random and long, and it lets a request find its key with one indexed lookup.

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::KeyTier;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SECRET_LEN: usize = 32;
/// Characters of the secret kept visible in listings (`rk_pub_AbC123…`).
const VISIBLE_LEN: usize = 6;

/// A freshly generated key. `secret` is shown to its owner once and never stored.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub tier: KeyTier,
    pub secret: String,
    pub prefix: String,
    pub hash: String,
}

pub fn generate(tier: KeyTier) -> NewKey {
    let secret = format!("{}{}", tier.prefix(), random_base62(SECRET_LEN));
    NewKey {
        id: format!("key_{}", random_base62(16)),
        tier,
        prefix: visible_prefix(&secret),
        hash: hash(&secret),
        secret,
    }
}

/// The record of an existing secret (with a fresh id), for registering a key again on a
/// server that lost it — `reactor dev` after its database was reset. `None` if it is no key.
pub fn adopt(secret: &str) -> Option<NewKey> {
    let tier = tier_of(secret)?;
    Some(NewKey {
        id: format!("key_{}", random_base62(16)),
        tier,
        prefix: visible_prefix(secret),
        hash: hash(secret),
        secret: secret.to_string(),
    })
}

/// The tier of a string that looks like a key, or `None` when it does not (a JWT, garbage).
pub fn tier_of(candidate: &str) -> Option<KeyTier> {
    [KeyTier::Public, KeyTier::Service]
        .into_iter()
        .find(|tier| match candidate.strip_prefix(tier.prefix()) {
            Some(rest) => {
                rest.len() == SECRET_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            }
            None => false,
        })
}

/// Hex SHA-256 of the whole key, prefix included: what the database stores.
pub fn hash(secret: &str) -> String {
    hex::encode(digest(secret))
}

/// SHA-256 of the whole key, prefix included, as bytes (a cache key that needs no encoding).
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn visible_prefix(secret: &str) -> String {
    let cut = secret
        .len()
        .min(KeyTier::Public.prefix().len() + VISIBLE_LEN);
    secret[..cut].to_string()
}

/// `len` random base62 characters (about 5.95 bits each): opaque secrets such as refresh
/// tokens, and ids.
pub fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_with_their_tier() {
        for tier in [KeyTier::Public, KeyTier::Service] {
            let k = generate(tier);
            assert!(k.secret.starts_with(tier.prefix()));
            assert_eq!(tier_of(&k.secret), Some(tier));
            assert_eq!(k.hash, hash(&k.secret));
            assert!(k.secret.starts_with(&k.prefix));
            assert_eq!(k.prefix.len(), tier.prefix().len() + VISIBLE_LEN);
        }
    }

    #[test]
    fn adopting_a_secret_gives_the_same_hash_and_prefix() {
        let k = generate(KeyTier::Service);
        let again = adopt(&k.secret).expect("a key");
        assert_eq!(
            (again.tier, &again.hash, &again.prefix),
            (k.tier, &k.hash, &k.prefix)
        );
        assert_ne!(again.id, k.id);
        assert!(adopt("rk_svc_nope").is_none());
    }

    #[test]
    fn keys_are_unique() {
        let a = generate(KeyTier::Public);
        let b = generate(KeyTier::Public);
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn lookalikes_are_not_keys() {
        assert_eq!(tier_of("rk_pub_short"), None);
        assert_eq!(tier_of("eyJhbGciOiJFZERTQSJ9.e30.sig"), None);
        let k = generate(KeyTier::Service);
        assert_eq!(
            tier_of(&format!("{}!", &k.secret[..k.secret.len() - 1])),
            None
        );
        assert_eq!(tier_of(&format!("{}x", k.secret)), None);
    }
}
