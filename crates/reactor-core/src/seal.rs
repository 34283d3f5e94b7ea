//! Secrets at rest: values the server must read back (signing keys today; credentials and
//! function secrets later) are sealed with ChaCha20-Poly1305 under the server's master key.
//! A sealed value is `v1:` + base64(nonce ‖ ciphertext ‖ tag), so it is recognisable and
//! versioned; tampering or a wrong key fails to open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;

/// The server's master key: 32 random bytes, written as base64.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("a master key is 32 bytes written in base64 (e.g. from `openssl rand -base64 32`)")]
    BadKey,
    #[error("the value cannot be opened: wrong master key, or it was altered")]
    Open,
    #[error("the value is not sealed")]
    NotSealed,
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        MasterKey(key)
    }

    pub fn from_base64(text: &str) -> Result<MasterKey, SealError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        Ok(MasterKey(key))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// A key for one purpose (`"connect-vault"`), derived from this one, so a capability with
    /// its own cipher never uses the master key itself.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"reactor-key-derivation\0");
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(self.0);
        h.finalize().into()
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.0))
    }

    pub fn seal(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a 32-byte key and a 12-byte nonce cannot fail.
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        let body = sealed.strip_prefix(PREFIX).ok_or(SealError::NotSealed)?;
        let bytes = STANDARD.decode(body).map_err(|_| SealError::Open)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SealError::Open)
    }
}

/// Whether a stored value is sealed (as opposed to a legacy plain value).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_refuses_tampering_and_other_keys() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"signing key");
        assert!(is_sealed(&sealed));
        assert_ne!(sealed, key.seal(b"signing key"), "fresh nonce each time");
        assert_eq!(key.open(&sealed).as_deref(), Ok(&b"signing key"[..]));
        assert_eq!(MasterKey::generate().open(&sealed), Err(SealError::Open));
        let mut tampered = sealed.clone();
        tampered.replace_range(10..11, if &sealed[10..11] == "A" { "B" } else { "A" });
        assert_eq!(key.open(&tampered), Err(SealError::Open));
        assert_eq!(key.open("plain"), Err(SealError::NotSealed));
        let again = MasterKey::from_base64(&key.to_base64()).expect("round trip");
        assert_eq!(again.open(&sealed).as_deref(), Ok(&b"signing key"[..]));
        assert_eq!(
            MasterKey::from_base64("c2hvcnQ=").err(),
            Some(SealError::BadKey)
        );
    }
}
