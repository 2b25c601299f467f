//! The wire formats: how a request is signed and which headers name it.

use crate::signing;

/// How a request is signed and which headers name it: the Standard Webhooks `webhook-*`
/// headers, or the hmac-hex format's `<prefix>Signature` (hex HMAC of the body), `Event-Id`,
/// `Event-Type`, `Delivery-Attempt` and `Timestamp`.
#[derive(Clone, Debug, Default)]
pub enum Format {
    #[default]
    StandardWebhooks,
    /// Standard Webhooks with `v1a` (ed25519) signatures: the keys are private key seeds.
    StandardWebhooksV1a,
    HmacHex {
        prefix: String,
    },
}

impl Format {
    pub fn from_columns(format: &str, prefix: Option<&str>, signature: Option<&str>) -> Format {
        match (format, signature) {
            ("hmac-hex", _) => Format::HmacHex {
                prefix: prefix.unwrap_or("X-Webhook-").to_string(),
            },
            (_, Some("v1a")) => Format::StandardWebhooksV1a,
            _ => Format::StandardWebhooks,
        }
    }

    /// The signing keys of a secret in this format: Standard Webhooks keys are the base64 after
    /// `whsec_`; an hmac-hex receiver holds the whole string.
    pub fn keys(&self, secrets: &[String]) -> Result<Vec<Vec<u8>>, String> {
        match self {
            Format::StandardWebhooks => signing::keys(secrets.iter().map(String::as_str))
                .map_err(|e| format!("endpoint secret unusable: {e}")),
            // (no key: refused, never sent unsigned)
            Format::StandardWebhooksV1a if secrets.is_empty() => {
                Err("the endpoint's v1a private key is missing".into())
            }
            Format::StandardWebhooksV1a => secrets
                .iter()
                .map(|s| {
                    signing::ed25519_seed(s).map_err(|e| format!("endpoint key unusable: {e}"))
                })
                .collect(),
            Format::HmacHex { .. } => Ok(secrets.iter().map(|s| s.as_bytes().to_vec()).collect()),
        }
    }
}
