//! Access tokens: EdDSA (Ed25519) JWTs.
//!
//! The server makes its first signing key at first start and keeps every key in the database,
//! so all replicas sign and verify alike. Rotation makes a new key the signer and retires the
//! old one, which stays in the JWKS (and keeps verifying) until every token it signed expired.
//! Verification accepts EdDSA with a known `kid` and nothing else: `alg: none`, HMAC tokens and
//! keys from elsewhere are refused by construction.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use reactor_core::seal::{self, MasterKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The audience of user access tokens, as Supabase sets it.
pub const AUDIENCE: &str = "authenticated";

/// A signing key as stored: the private half in PKCS#8 — sealed with the master key when the
/// server has one (`v1:…`), plain base64 otherwise — and the public half as the JWK `x`.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub kid: String,
    pub private_pkcs8: String,
    pub public_x: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

impl StoredKey {
    pub fn generate(now: i64, master: Option<&MasterKey>) -> Result<StoredKey, JwtError> {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let der = key
            .to_pkcs8_der()
            .map_err(|e| JwtError::Key(e.to_string()))?;
        let mut kid = [0u8; 12];
        rand::rng().fill_bytes(&mut kid);
        Ok(StoredKey {
            kid: URL_SAFE_NO_PAD.encode(kid),
            private_pkcs8: match master {
                Some(master) => master.seal(der.as_bytes()),
                None => STANDARD.encode(der.as_bytes()),
            },
            public_x: URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
            created_at: now,
            retired_at: None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("signing key error: {0}")]
    Key(String),
    #[error("there is no active signing key")]
    NoSigner,
    #[error("the token is expired")]
    Expired,
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error("the token was signed by an unknown key")]
    UnknownKey,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    pub email: String,
    pub role: String,
    pub session_id: String,
    pub org_id: Option<String>,
    pub org_role: Option<String>,
    pub app_metadata: Value,
    pub user_metadata: Value,
}

struct Verifier {
    key: DecodingKey,
    public_x: String,
    retired_at: Option<i64>,
}

/// The keys in memory: the newest active one signs, all unexpired ones verify.
pub struct Keyring {
    signer: Option<(String, EncodingKey)>,
    verifiers: HashMap<String, Verifier>,
    /// How long a retired key keeps verifying: the access token lifetime.
    token_ttl: i64,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("signer", &self.signer.as_ref().map(|(kid, _)| kid))
            .field("verifiers", &self.verifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    pub fn new(
        keys: &[StoredKey],
        token_ttl: i64,
        master: Option<&MasterKey>,
    ) -> Result<Keyring, JwtError> {
        let mut verifiers = HashMap::new();
        let mut signer: Option<(&StoredKey, EncodingKey)> = None;
        for k in keys {
            let decoding = DecodingKey::from_ed_components(&k.public_x)
                .map_err(|e| JwtError::Key(e.to_string()))?;
            verifiers.insert(
                k.kid.clone(),
                Verifier {
                    key: decoding,
                    public_x: k.public_x.clone(),
                    retired_at: k.retired_at,
                },
            );
            if k.retired_at.is_none()
                && signer
                    .as_ref()
                    .is_none_or(|(s, _)| k.created_at >= s.created_at)
            {
                let der = private_der(&k.private_pkcs8, master)?;
                signer = Some((k, EncodingKey::from_ed_der(&der)));
            }
        }
        Ok(Keyring {
            signer: signer.map(|(k, enc)| (k.kid.clone(), enc)),
            verifiers,
            token_ttl,
        })
    }

    pub fn knows(&self, kid: &str) -> bool {
        self.verifiers.contains_key(kid)
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String, JwtError> {
        let (kid, key) = self.signer.as_ref().ok_or(JwtError::NoSigner)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key).map_err(|e| JwtError::Key(e.to_string()))
    }

    /// Verifies signature, algorithm, audience and expiry at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, JwtError> {
        let kid = kid_of(token)?;
        let verifier = self.verifiers.get(&kid).ok_or(JwtError::UnknownKey)?;
        if verifier
            .retired_at
            .is_some_and(|r| now > r + self.token_ttl)
        {
            return Err(JwtError::UnknownKey);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &verifier.key, &validation)
            .map_err(|e| JwtError::Invalid(e.to_string()))?;
        // Expiry against the caller's clock, so tests can drive time.
        if data.claims.exp <= now {
            return Err(JwtError::Expired);
        }
        Ok(data.claims)
    }

    /// The JWKS document: every key that may still verify a live token.
    pub fn jwks(&self, now: i64) -> Value {
        let mut keys: Vec<_> = self
            .verifiers
            .iter()
            .filter(|(_, v)| v.retired_at.is_none_or(|r| now <= r + self.token_ttl))
            .map(|(kid, v)| json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": v.public_x}))
            .collect();
        keys.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
        json!({ "keys": keys })
    }
}

fn private_der(stored: &str, master: Option<&MasterKey>) -> Result<Vec<u8>, JwtError> {
    if seal::is_sealed(stored) {
        let master = master.ok_or_else(|| {
            JwtError::Key("the signing keys are sealed with a master key, and none is configured (REACTOR_MASTER_KEY)".into())
        })?;
        return master
            .open(stored)
            .map_err(|e| JwtError::Key(format!("cannot open the signing key: {e}")));
    }
    STANDARD
        .decode(stored)
        .map_err(|e| JwtError::Key(e.to_string()))
}

/// The `kid` of a token's header, refusing any algorithm but EdDSA before anything else.
pub fn kid_of(token: &str) -> Result<String, JwtError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
    if header.alg != Algorithm::EdDSA {
        return Err(JwtError::Invalid(format!(
            "algorithm {:?} is not accepted",
            header.alg
        )));
    }
    header
        .kid
        .ok_or_else(|| JwtError::Invalid("the token has no kid".into()))
}

/// Whether a bearer string has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().take(2).all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64, ttl: i64) -> AccessClaims {
        AccessClaims {
            sub: "u1".into(),
            aud: AUDIENCE.into(),
            iss: "reactor".into(),
            iat: now,
            exp: now + ttl,
            email: "a@example.com".into(),
            role: "authenticated".into(),
            session_id: "s1".into(),
            org_id: None,
            org_role: None,
            app_metadata: json!({}),
            user_metadata: json!({}),
        }
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
    }

    #[test]
    fn signs_and_verifies_and_refuses_forgeries() {
        let now = 1_800_000_000;
        let k = StoredKey::generate(now, None).expect("key");
        let ring = Keyring::new(std::slice::from_ref(&k), 3600, None).expect("ring");
        let token = ring.sign(&claims(now, 3600)).expect("sign");
        assert!(looks_like_jwt(&token));
        assert_eq!(ring.verify(&token, now + 10).expect("valid").sub, "u1");
        assert!(matches!(
            ring.verify(&token, now + 3600),
            Err(JwtError::Expired)
        ));

        // Edited claims: the signature no longer matches.
        let parts: Vec<&str> = token.split('.').collect();
        let mut edited = claims(now, 3600);
        edited.sub = "someone-else".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_value(&edited).expect("json")),
            parts[2]
        );
        assert!(matches!(
            ring.verify(&forged, now),
            Err(JwtError::Invalid(_))
        ));

        // alg: none.
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": k.kid})),
            b64(&serde_json::to_value(claims(now, 3600)).expect("json"))
        );
        assert!(ring.verify(&none, now).is_err());

        // Signed by another key, even one claiming our kid.
        let other = StoredKey::generate(now, None).expect("key");
        let other_ring = Keyring::new(
            std::slice::from_ref(&StoredKey {
                kid: k.kid.clone(),
                ..other
            }),
            3600,
            None,
        )
        .expect("ring");
        let foreign = other_ring.sign(&claims(now, 3600)).expect("sign");
        assert!(matches!(
            ring.verify(&foreign, now),
            Err(JwtError::Invalid(_))
        ));
    }

    #[test]
    fn sealed_signing_keys_need_their_master_key() {
        let master = MasterKey::generate();
        let k = StoredKey::generate(1_800_000_000, Some(&master)).expect("key");
        assert!(seal::is_sealed(&k.private_pkcs8), "sealed at rest");
        let ring = Keyring::new(std::slice::from_ref(&k), 3600, Some(&master)).expect("opens");
        let token = ring.sign(&claims(1_800_000_000, 60)).expect("signs");
        assert!(ring.verify(&token, 1_800_000_001).is_ok());
        assert!(matches!(
            Keyring::new(std::slice::from_ref(&k), 3600, None),
            Err(JwtError::Key(_))
        ));
        let other = MasterKey::generate();
        assert!(matches!(
            Keyring::new(std::slice::from_ref(&k), 3600, Some(&other)),
            Err(JwtError::Key(_))
        ));
    }

    #[test]
    fn rotation_keeps_retired_keys_until_their_tokens_expire() {
        let now = 1_800_000_000;
        let old = StoredKey::generate(now - 100, None).expect("key");
        let old_ring = Keyring::new(std::slice::from_ref(&old), 3600, None).expect("ring");
        let old_token = old_ring.sign(&claims(now, 3600)).expect("sign");

        let retired = StoredKey {
            retired_at: Some(now),
            ..old.clone()
        };
        let new = StoredKey::generate(now, None).expect("key");
        let ring = Keyring::new(&[retired, new.clone()], 3600, None).expect("ring");
        let new_token = ring.sign(&claims(now, 3600)).expect("sign");
        assert_eq!(kid_of(&new_token).expect("kid"), new.kid);
        assert!(ring.verify(&old_token, now + 60).is_ok());
        assert_eq!(
            ring.jwks(now + 60)["keys"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            ring.jwks(now + 3601)["keys"].as_array().map(Vec::len),
            Some(1)
        );
        assert!(matches!(
            ring.verify(&old_token, now + 3601),
            Err(JwtError::UnknownKey)
        ));
    }
}
