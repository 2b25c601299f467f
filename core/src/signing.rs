//! Standard Webhooks signatures: `v1,<base64(HMAC-SHA256(key, "{id}.{ts}.{body}"))>`.
//! Pure Rust so it is unit-tested without PostgreSQL.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, PartialEq, Eq)]
pub enum SigningError {
    MissingPrefix,
    BadBase64,
    EmptyKey,
}

impl std::fmt::Display for SigningError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningError::MissingPrefix => write!(f, "secret must start with \"whsec_\""),
            SigningError::BadBase64 => write!(f, "secret is not valid base64 after \"whsec_\""),
            SigningError::EmptyKey => write!(f, "secret has an empty key"),
        }
    }
}

/// The HMAC key is the base64-decoded part after `whsec_`.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SigningError> {
    let b64 = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SigningError::MissingPrefix)?;
    let key = B64
        .decode(b64.trim())
        .map_err(|_| SigningError::BadBase64)?;
    if key.is_empty() {
        return Err(SigningError::EmptyKey);
    }
    Ok(key)
}

fn mac(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so new_from_slice cannot fail here.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(msg_id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The keys of every active secret of an endpoint (current, then previous during rotation).
pub fn keys<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Result<Vec<Vec<u8>>, SigningError> {
    secrets.into_iter().map(secret_key).collect()
}

/// The hmac-hex format's signature (IntelliAuth-style `X-...-Signature`): HMAC-SHA256 of the body alone, hex. The key is
/// the endpoint's secret as the receiver holds it (the whole `whsec_...` string).
pub fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// One `v1,<base64>` signature.
pub fn sign_with_key(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(key, msg_id, timestamp, body).finalize().into_bytes();
    let mut out = String::with_capacity(48);
    out.push_str("v1,");
    B64.encode_string(tag, &mut out);
    out
}

pub fn sign(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    Ok(sign_with_key(&secret_key(secret)?, msg_id, timestamp, body))
}

/// The `webhook-signature` header value: one signature per active key, space separated.
pub fn signature_header(keys: &[Vec<u8>], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| sign_with_key(k, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

pub const PRIVATE_KEY_PREFIX: &str = "whsk_";
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// A new ed25519 key pair for `v1a` signatures: (`whsk_` + base64 of the 32-byte seed, `whpk_`
/// + base64 of the 32-byte public key).
pub fn ed25519_key_pair(seed: [u8; 32]) -> Result<(String, String), String> {
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|_| "ed25519 key pair rejected".to_string())?;
    use ring::signature::KeyPair;
    Ok((
        format!("{PRIVATE_KEY_PREFIX}{}", B64.encode(seed)),
        format!(
            "{PUBLIC_KEY_PREFIX}{}",
            B64.encode(pair.public_key().as_ref())
        ),
    ))
}

/// The signing key of a `whsk_` private key: its 32-byte seed.
pub fn ed25519_seed(private_key: &str) -> Result<Vec<u8>, String> {
    let seed = private_key
        .strip_prefix(PRIVATE_KEY_PREFIX)
        .and_then(|b| B64.decode(b.trim()).ok())
        .filter(|s| s.len() == 32)
        .ok_or_else(|| "private key must be whsk_ and the base64 of 32 bytes".to_string())?;
    Ok(seed)
}

/// One `v1a,<base64>` signature: ed25519 over `{id}.{ts}.{body}` with a 32-byte seed.
pub fn sign_v1a(seed: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|_| "ed25519 seed rejected".to_string())?;
    let mut msg = Vec::with_capacity(msg_id.len() + body.len() + 24);
    msg.extend_from_slice(msg_id.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(timestamp.to_string().as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    Ok(format!("v1a,{}", B64.encode(pair.sign(&msg).as_ref())))
}

/// The `webhook-signature` header of a `v1a` endpoint: one signature per active key.
pub fn signature_header_v1a(
    seeds: &[Vec<u8>],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    seeds
        .iter()
        .filter_map(|s| sign_v1a(s, msg_id, timestamp, body).ok())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `verify` for a `whpk_` public key: any `v1a,` entry that verifies.
fn verify_v1a(
    public_key: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    signatures: &str,
) -> Result<bool, SigningError> {
    let key = public_key
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .and_then(|b| B64.decode(b.trim()).ok())
        .filter(|k| k.len() == 32)
        .ok_or(SigningError::BadBase64)?;
    let mut msg = Vec::with_capacity(msg_id.len() + body.len() + 24);
    msg.extend_from_slice(msg_id.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(timestamp.to_string().as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
    Ok(signatures.split_whitespace().any(|entry| {
        entry
            .strip_prefix("v1a,")
            .and_then(|b| B64.decode(b).ok())
            .is_some_and(|sig| key.verify(&msg, &sig).is_ok())
    }))
}

/// True when the timestamp is within `tolerance` seconds of `now` (either direction) and any
/// `v1,` entry of the space-separated list matches. Comparison is constant-time (`verify_slice`).
pub fn verify(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    signatures: &str,
    tolerance_seconds: i64,
    now: i64,
) -> Result<bool, SigningError> {
    if (now - timestamp).abs() > tolerance_seconds {
        // (the key is still checked: a malformed one is an error, not a mismatch)
        if !secret.starts_with(PUBLIC_KEY_PREFIX) {
            secret_key(secret)?;
        }
        return Ok(false);
    }
    // A whpk_ public key checks v1a (ed25519) signatures; a whsec_ secret v1 (HMAC).
    if secret.starts_with(PUBLIC_KEY_PREFIX) {
        return verify_v1a(secret, msg_id, timestamp, body, signatures);
    }
    let key = secret_key(secret)?;
    let expected = mac(&key, msg_id, timestamp, body);
    for entry in signatures.split_whitespace() {
        let Some(b64) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(tag) = B64.decode(b64) else { continue };
        if expected.clone().verify_slice(&tag).is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example published with the Standard Webhooks specification.
    pub const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    pub const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    pub const SPEC_TS: i64 = 1614265330;
    pub const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    pub const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn v1a_signs_with_the_private_key_and_verifies_with_the_public_one() {
        let (private, public) = ed25519_key_pair([7; 32]).unwrap();
        assert!(private.starts_with("whsk_") && public.starts_with("whpk_"));
        let seed = ed25519_seed(&private).unwrap();
        let sig = signature_header_v1a(&[seed], SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes());
        assert!(sig.starts_with("v1a,"));
        assert_eq!(
            verify(
                &public,
                SPEC_ID,
                SPEC_TS,
                SPEC_BODY.as_bytes(),
                &sig,
                300,
                SPEC_TS
            ),
            Ok(true)
        );
        assert_eq!(
            verify(&public, SPEC_ID, SPEC_TS, b"{}", &sig, 300, SPEC_TS),
            Ok(false)
        );
        let (_, other) = ed25519_key_pair([8; 32]).unwrap();
        assert_eq!(
            verify(
                &other,
                SPEC_ID,
                SPEC_TS,
                SPEC_BODY.as_bytes(),
                &sig,
                300,
                SPEC_TS
            ),
            Ok(false)
        );
        // a v1 entry never passes for a public key, nor a v1a one for a secret
        assert_eq!(
            verify(
                SPEC_SECRET,
                SPEC_ID,
                SPEC_TS,
                SPEC_BODY.as_bytes(),
                &sig,
                300,
                SPEC_TS
            ),
            Ok(false)
        );
        assert!(ed25519_seed("whsk_short").is_err());
    }

    #[test]
    fn matches_spec_example() {
        assert_eq!(
            sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes()).unwrap(),
            SPEC_SIG
        );
    }

    #[test]
    fn verify_accepts_any_listed_signature_and_rejects_tampering() {
        let list = format!("v1,bm90IGl0 {SPEC_SIG}");
        let ok = |body: &str, sigs: &str, now: i64| {
            verify(
                SPEC_SECRET,
                SPEC_ID,
                SPEC_TS,
                body.as_bytes(),
                sigs,
                300,
                now,
            )
            .unwrap()
        };
        assert!(ok(SPEC_BODY, &list, SPEC_TS));
        assert!(!ok(r#"{"test": 2432232315}"#, &list, SPEC_TS));
        assert!(!ok(SPEC_BODY, "v1,bm90IGl0", SPEC_TS));
        assert!(!ok(SPEC_BODY, "v2,abc garbage", SPEC_TS));
        // outside the tolerance in either direction
        assert!(!ok(SPEC_BODY, SPEC_SIG, SPEC_TS + 301));
        assert!(!ok(SPEC_BODY, SPEC_SIG, SPEC_TS - 301));
        assert!(ok(SPEC_BODY, SPEC_SIG, SPEC_TS + 300));
    }

    #[test]
    fn bad_secrets_are_named() {
        assert_eq!(secret_key("abc"), Err(SigningError::MissingPrefix));
        assert_eq!(secret_key("whsec_!!!"), Err(SigningError::BadBase64));
        assert_eq!(secret_key("whsec_"), Err(SigningError::EmptyKey));
    }

    #[test]
    fn header_carries_one_signature_per_key() {
        let k1 = secret_key(SPEC_SECRET).unwrap();
        let k2 = vec![7u8; 32];
        let h = signature_header(&[k1, k2], SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes());
        let parts: Vec<_> = h.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], SPEC_SIG);
    }
}
