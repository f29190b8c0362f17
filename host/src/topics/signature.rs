//! Signing outgoing webhooks per Standard Webhooks: `webhook-id`,
//! `webhook-timestamp` (seconds) and `webhook-signature`, which is
//! `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under the
//! secret's bytes (the base64 after `whsec_`). During a rotation both
//! secrets sign, space-separated, so a receiver with either verifies.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// A fresh secret: `whsec_` and 24 random bytes in base64.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// The `webhook-signature` header for a message under every secret given.
pub fn sign(secrets: &[String], id: &str, timestamp: u64, body: &[u8]) -> Result<String, String> {
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .map_err(|e| format!("a webhook secret is not base64: {e}"))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        signatures.push(format!(
            "v1,{}",
            STANDARD.encode(mac.finalize().into_bytes())
        ));
    }
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_reference_example() {
        // The example of the Standard Webhooks libraries' tests.
        let signature = sign(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_sign_twice_and_secrets_are_fresh() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("whsec_"));
        let both = sign(&[a.clone(), b], "msg_1", 1, b"{}").unwrap();
        let one = sign(&[a], "msg_1", 1, b"{}").unwrap();
        assert_eq!(both.split(' ').count(), 2);
        assert!(both.starts_with(&one));
        assert!(sign(&["whsec_!!".to_string()], "m", 1, b"").is_err());
    }
}
