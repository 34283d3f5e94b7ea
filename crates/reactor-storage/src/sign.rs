//! Signed URLs: a token that lets whoever holds it download (or upload) one object until it
//! expires, without a key. The token is the grant itself (JSON, base64url) and an HMAC-SHA256
//! of it under the project's storage signing key, which lives in the database (sealed under
//! the master key when the server has one), so every replica verifies what any replica signed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::StorageError;

/// What a signed URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Download,
    Upload,
}

/// The signed statement: this operation on this object until `exp` (Unix seconds). An upload
/// grant carries who asked for it, so the object is owned by them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub op: Op,
    pub bucket: String,
    pub path: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upsert: bool,
}

/// Signs and verifies grants under one 32-byte key.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub fn new(key: [u8; 32]) -> Signer {
        Signer { key }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length; 32 bytes is always accepted.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(payload.as_bytes());
        mac
    }

    pub fn sign(&self, grant: &Grant) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(grant).unwrap_or_default());
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The grant in `token` when its signature holds, it allows `op` on `bucket`/`path`, and
    /// it has not expired at `now`.
    pub fn verify(
        &self,
        token: &str,
        op: Op,
        bucket: &str,
        path: &str,
        now: i64,
    ) -> Result<Grant, StorageError> {
        let (payload, tag) = token.split_once('.').ok_or(StorageError::BadSignature)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| StorageError::BadSignature)?;
        // Constant-time comparison.
        self.mac(payload)
            .verify_slice(&tag)
            .map_err(|_| StorageError::BadSignature)?;
        let grant: Grant = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(StorageError::BadSignature)?;
        if grant.op != op || grant.bucket != bucket || grant.path != path {
            return Err(StorageError::BadSignature);
        }
        if grant.exp < now {
            return Err(StorageError::SignatureExpired);
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(exp: i64) -> Grant {
        Grant {
            op: Op::Download,
            bucket: "docs".into(),
            path: "a/b.txt".into(),
            exp,
            owner: None,
            org: None,
            upsert: false,
        }
    }

    #[test]
    fn a_token_verifies_for_its_object_until_it_expires() {
        let signer = Signer::new([7; 32]);
        let token = signer.sign(&grant(100));
        assert!(
            signer
                .verify(&token, Op::Download, "docs", "a/b.txt", 99)
                .is_ok()
        );
        assert!(matches!(
            signer.verify(&token, Op::Download, "docs", "a/b.txt", 101),
            Err(StorageError::SignatureExpired)
        ));
        for (op, bucket, path) in [
            (Op::Upload, "docs", "a/b.txt"),
            (Op::Download, "other", "a/b.txt"),
            (Op::Download, "docs", "a/c.txt"),
        ] {
            assert!(matches!(
                signer.verify(&token, op, bucket, path, 50),
                Err(StorageError::BadSignature)
            ));
        }
    }

    #[test]
    fn tampering_or_another_key_fails() {
        let signer = Signer::new([7; 32]);
        let token = signer.sign(&grant(100));
        let (payload, tag) = token.split_once('.').expect("two parts");
        let longer = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&grant(10_000_000)).expect("json"));
        for bad in [
            format!("{longer}.{tag}"),
            format!("{payload}.{}", &tag[1..]),
            payload.to_string(),
            String::new(),
        ] {
            assert!(
                signer
                    .verify(&bad, Op::Download, "docs", "a/b.txt", 50)
                    .is_err(),
                "{bad}"
            );
        }
        assert!(
            Signer::new([8; 32])
                .verify(&token, Op::Download, "docs", "a/b.txt", 50)
                .is_err()
        );
    }
}
