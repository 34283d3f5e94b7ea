//! The credential vault: a connection's credentials sealed with XChaCha20-Poly1305 (a random
//! 192-bit nonce per seal, so nonces never need counting), bound to the connection's id as
//! associated data so a sealed value copied onto another row does not open. A sealed value
//! names the key that sealed it, so keys rotate by re-encryption: the server opens with any
//! key it is given and seals with the first.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "x1";
const NONCE_LEN: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("this server has no vault key, so it cannot keep credentials")]
    NoKey,
    #[error("credentials sealed with key {0}, which this server was not given")]
    UnknownKey(String),
    #[error("credentials cannot be opened: they were altered or belong to another connection")]
    Open,
    #[error("the stored credentials are not sealed")]
    NotSealed,
}

#[derive(Clone)]
struct VaultKey {
    /// The first 8 bytes of SHA-256 of the key, in hex: names it without revealing it.
    id: String,
    cipher: XChaCha20Poly1305,
}

impl VaultKey {
    fn new(bytes: &[u8; 32]) -> VaultKey {
        let id = hex::encode(&Sha256::digest(bytes)[..8]);
        VaultKey {
            id,
            cipher: XChaCha20Poly1305::new(Key::from_slice(bytes)),
        }
    }
}

/// The keys a server seals and opens credentials with.
#[derive(Clone, Default)]
pub struct Vault {
    /// The first seals; all open.
    keys: Vec<VaultKey>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Vault").field("key_ids", &ids).finish()
    }
}

impl Vault {
    /// `current` seals; `previous` only open (until everything is sealed again).
    pub fn new(current: &[u8; 32], previous: &[[u8; 32]]) -> Vault {
        Vault {
            keys: std::iter::once(current)
                .chain(previous)
                .map(VaultKey::new)
                .collect(),
        }
    }

    /// A vault that has no key: every seal and open fails with a hint.
    pub fn none() -> Vault {
        Vault::default()
    }

    /// The id of the key that seals, if any.
    pub fn current_id(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    /// `x1:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>`.
    pub fn seal(&self, bound_to: &str, plaintext: &[u8]) -> Result<String, VaultError> {
        let key = self.keys.first().ok_or(VaultError::NoKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: bound_to.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Open)?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(format!("{PREFIX}:{}:{}", key.id, STANDARD.encode(out)))
    }

    pub fn open(&self, bound_to: &str, sealed: &str) -> Result<Vec<u8>, VaultError> {
        let (id, body) = parts(sealed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| VaultError::UnknownKey(id.to_string()))?;
        let bytes = STANDARD.decode(body).map_err(|_| VaultError::Open)?;
        if bytes.len() < NONCE_LEN {
            return Err(VaultError::Open);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        key.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: bound_to.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Open)
    }

    /// Whether `sealed` was sealed by another key than the current one.
    pub fn is_stale(&self, sealed: &str) -> bool {
        match (parts(sealed), self.current_id()) {
            (Ok((id, _)), Some(current)) => id != current,
            _ => false,
        }
    }
}

fn parts(sealed: &str) -> Result<(&str, &str), VaultError> {
    let rest = sealed
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or(VaultError::NotSealed)?;
    rest.split_once(':').ok_or(VaultError::NotSealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_refuses_tampering_other_rows_and_unknown_keys() {
        let (a, b) = ([7u8; 32], [9u8; 32]);
        let vault = Vault::new(&a, &[]);
        let sealed = vault
            .seal("conn-1", b"{\"access_token\":\"t\"}")
            .expect("sealed");
        assert!(!sealed.contains("access_token"));
        assert_ne!(
            sealed,
            vault
                .seal("conn-1", b"{\"access_token\":\"t\"}")
                .expect("sealed")
        );
        assert_eq!(
            vault.open("conn-1", &sealed).expect("opened"),
            b"{\"access_token\":\"t\"}"
        );
        assert_eq!(vault.open("conn-2", &sealed), Err(VaultError::Open));
        let mut tampered = sealed.clone();
        let i = tampered.len() - 3;
        let c = if &tampered[i..=i] == "A" { "B" } else { "A" };
        tampered.replace_range(i..=i, c);
        assert_eq!(vault.open("conn-1", &tampered), Err(VaultError::Open));

        // Rotation: the new key seals, the old one still opens, and says it is stale.
        let rotated = Vault::new(&b, &[a]);
        assert!(rotated.is_stale(&sealed));
        assert_eq!(
            rotated.open("conn-1", &sealed).expect("old key opens"),
            b"{\"access_token\":\"t\"}"
        );
        let resealed = rotated.seal("conn-1", b"x").expect("sealed");
        assert!(!rotated.is_stale(&resealed));
        assert!(matches!(
            Vault::new(&a, &[]).open("conn-1", &resealed),
            Err(VaultError::UnknownKey(_))
        ));
        assert_eq!(Vault::none().seal("c", b"x"), Err(VaultError::NoKey));
        assert_eq!(vault.open("c", "plain"), Err(VaultError::NotSealed));
    }
}
