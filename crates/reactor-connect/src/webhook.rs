//! Webhook signatures, as each provider makes them. Every comparison is constant-time, and a
//! timestamped signature (Slack, Stripe) older than five minutes is a replay.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::catalog::{WEBHOOK_TOLERANCE_SECS, Webhook, WebhookScheme};

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| HmacSha256::new_from_slice(&[0]).expect("a one-byte key"));
    for p in parts {
        mac.update(p);
    }
    mac
}

/// Whether `hex_signature` is the HMAC of `parts` under `secret`.
fn matches(secret: &str, parts: &[&[u8]], hex_signature: &str) -> bool {
    match hex::decode(hex_signature.trim()) {
        Ok(bytes) => mac(secret, parts).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// Checks a delivery's signature; the error says what is wrong (never the expected value).
pub fn verify(
    webhook: &Webhook,
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let signature = header(&webhook.header)
        .ok_or_else(|| format!("the `{}` header is missing", webhook.header))?;
    let fresh = |ts: &str| -> Result<(), String> {
        let t: i64 = ts
            .trim()
            .parse()
            .map_err(|_| "the signature's timestamp is not a number".to_string())?;
        if (now_secs - t).abs() > WEBHOOK_TOLERANCE_SECS {
            return Err("the signature's timestamp is too old (a replay?)".into());
        }
        Ok(())
    };
    let ok = match webhook.scheme {
        WebhookScheme::Github => signature
            .strip_prefix("sha256=")
            .is_some_and(|hex| matches(secret, &[body], hex)),
        WebhookScheme::HmacSha256 => matches(secret, &[body], &signature),
        WebhookScheme::Slack => {
            let ts = header("x-slack-request-timestamp")
                .ok_or("the `x-slack-request-timestamp` header is missing")?;
            fresh(&ts)?;
            signature
                .strip_prefix("v0=")
                .is_some_and(|hex| matches(secret, &[b"v0:", ts.as_bytes(), b":", body], hex))
        }
        WebhookScheme::Stripe => {
            let mut ts = None;
            let mut candidates = Vec::new();
            for part in signature.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", v)) => ts = Some(v.to_string()),
                    Some(("v1", v)) => candidates.push(v.to_string()),
                    _ => {}
                }
            }
            let ts = ts.ok_or("the signature has no timestamp (`t=`)")?;
            fresh(&ts)?;
            candidates
                .iter()
                .any(|hex| matches(secret, &[ts.as_bytes(), b".", body], hex))
        }
    };
    if ok {
        Ok(())
    } else {
        Err("the signature does not match the body".into())
    }
}

/// A signature as a provider would make it (for tests and for the docs' examples).
pub fn sign(scheme: WebhookScheme, secret: &str, body: &[u8], ts: i64) -> String {
    let hex_of = |parts: &[&[u8]]| hex::encode(mac(secret, parts).finalize().into_bytes());
    let ts = ts.to_string();
    match scheme {
        WebhookScheme::Github => format!("sha256={}", hex_of(&[body])),
        WebhookScheme::HmacSha256 => hex_of(&[body]),
        WebhookScheme::Slack => format!("v0={}", hex_of(&[b"v0:", ts.as_bytes(), b":", body])),
        WebhookScheme::Stripe => {
            format!("t={ts},v1={}", hex_of(&[ts.as_bytes(), b".", body]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(scheme: WebhookScheme, header: &str) -> Webhook {
        Webhook {
            scheme,
            header: header.into(),
        }
    }

    #[test]
    fn each_scheme_accepts_its_signature_and_refuses_tampering() {
        let body = br#"{"action":"opened"}"#;
        let now = 1_800_000_000;
        for (scheme, header) in [
            (WebhookScheme::Github, "x-hub-signature-256"),
            (WebhookScheme::HmacSha256, "linear-signature"),
            (WebhookScheme::Slack, "x-slack-signature"),
            (WebhookScheme::Stripe, "stripe-signature"),
        ] {
            let w = hook(scheme, header);
            let mut headers = HeaderMap::new();
            let signature = sign(scheme, "s3cret", body, now);
            headers.insert(header, signature.parse().expect("header"));
            headers.insert(
                "x-slack-request-timestamp",
                now.to_string().parse().expect("ts"),
            );
            assert_eq!(
                verify(&w, "s3cret", &headers, body, now),
                Ok(()),
                "{scheme:?}"
            );
            assert!(
                verify(&w, "other", &headers, body, now).is_err(),
                "{scheme:?}"
            );
            assert!(
                verify(&w, "s3cret", &headers, br#"{"action":"closed"}"#, now).is_err(),
                "{scheme:?}"
            );
            if matches!(scheme, WebhookScheme::Slack | WebhookScheme::Stripe) {
                let late = verify(&w, "s3cret", &headers, body, now + 600).expect_err("replay");
                assert!(late.contains("too old"), "{late}");
            }
            headers.remove(header);
            assert!(verify(&w, "s3cret", &headers, body, now).is_err());
        }
    }
}
