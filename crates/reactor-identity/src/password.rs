//! Passwords: argon2id with the library's defaults (19 MiB, 2 passes), a minimum policy, and
//! a dummy hash so a login for an unknown email costs what a wrong password costs.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

/// Longer inputs are refused before hashing, so nobody can make the server hash megabytes.
pub const MAX_LEN: usize = 1024;

pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks `password` against `stored`; with `None` (no such user) it checks against a dummy
/// hash and returns false, taking the same time.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("reactor-dummy-password").unwrap_or_default());
    let candidate = stored.unwrap_or(dummy);
    let ok = PasswordHash::new(candidate)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    ok && stored.is_some()
}

/// Why a password is refused, in words for the user; `None` when it passes.
pub fn weakness(password: &str, min_len: usize) -> Option<String> {
    let chars = password.chars().count();
    if chars < min_len {
        return Some(format!(
            "the password must be at least {min_len} characters long"
        ));
    }
    if password.len() > MAX_LEN {
        return Some(format!("the password must be at most {MAX_LEN} bytes long"));
    }
    let first = password.chars().next();
    if password.chars().all(|c| Some(c) == first) {
        return Some("the password must not repeat one character".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_argon2id_and_verify() {
        let a = hash("correct horse").expect("hash");
        let b = hash("correct horse").expect("hash");
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(verify("correct horse", Some(&a)));
        assert!(!verify("wrong horse", Some(&a)));
        assert!(!verify("correct horse", None));
    }

    #[test]
    fn policy() {
        assert!(weakness("short", 8).is_some());
        assert!(weakness("aaaaaaaaaa", 8).is_some());
        assert!(weakness(&"ab".repeat(600), 8).is_some());
        assert_eq!(weakness("correct horse", 8), None);
    }
}
