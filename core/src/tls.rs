//! TLS for delivery: which CAs are trusted, endpoints' client certificates, and failures told in
//! plain words. Pure Rust (rustls with the ring provider): nothing here touches PostgreSQL.

use std::path::Path;
use std::sync::Arc;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey};

/// Where distributions keep their CA bundle (what `update-ca-certificates` and friends write).
/// A fixed list, not the environment: a server's `SSL_CERT_FILE` must not change what the
/// extension trusts behind the DBA's back.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // FreeBSD, macOS
];

pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CAs that delivery trusts: the operating system's bundle plus `webhooks.tls_ca_file`.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    pub roots: Arc<Vec<Certificate<'static>>>,
    /// The system bundle read, if any (for status and error messages).
    pub system_bundle: Option<String>,
}

fn certificates(pem: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// Reads `path` as a PEM bundle of CA certificates; the error names the setting and the path.
pub fn read_ca_file(path: &str) -> Result<Vec<Certificate<'static>>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("webhooks.tls_ca_file: cannot read \"{path}\": {e}"))?;
    let certs = certificates(&bytes);
    if certs.is_empty() {
        return Err(format!(
            "webhooks.tls_ca_file: \"{path}\" contains no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

/// The system bundle (the first of `SYSTEM_BUNDLES` that exists) plus the extra CA file.
pub fn load_trust(ca_file: Option<&str>) -> Result<Trust, String> {
    let mut roots = Vec::new();
    let mut system_bundle = None;
    for p in SYSTEM_BUNDLES {
        if Path::new(p).exists() {
            if let Ok(bytes) = std::fs::read(p) {
                roots.extend(certificates(&bytes));
                system_bundle = Some(p.to_string());
                break;
            }
        }
    }
    if let Some(f) = ca_file.filter(|f| !f.trim().is_empty()) {
        roots.extend(read_ca_file(f.trim())?);
    }
    Ok(Trust {
        roots: Arc::new(roots),
        system_bundle,
    })
}

/// Parses an endpoint's client certificate chain and private key, and checks that they belong
/// together. Errors name the column.
/// A file's path with its size and modification time: a CA bundle replaced at the same path is
/// noticed (the worker's reload, the sync path's kept client).
pub fn file_stamp(path: &str) -> String {
    let meta = std::fs::metadata(path.trim()).ok();
    let (len, mtime) = meta
        .map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            (m.len(), t)
        })
        .unwrap_or((0, 0));
    format!("{path}|{len}|{mtime}")
}

pub fn client_cert(cert_pem: &str, key_pem: &str) -> Result<ClientCert, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain_der: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .filter_map(Result::ok)
            .collect();
    if chain_der.is_empty() {
        return Err(
            "tls_client_cert is not a PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        );
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
        "tls_client_key is not a PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC)"
            .to_string()
    })?;
    // ureq panics on a pair that does not match: check it here, where it is an error.
    rustls::sign::CertifiedKey::from_der(chain_der, key_der, &crypto_provider()).map_err(|e| {
        match e {
            rustls::Error::InconsistentKeys(_) => {
                "tls_client_key does not match the public key of tls_client_cert".to_string()
            }
            other => format!("tls_client_key unusable with tls_client_cert: {other}"),
        }
    })?;
    let chain = certificates(cert_pem.as_bytes());
    let key = PrivateKey::from_pem(key_pem.as_bytes())
        .map_err(|e| format!("tls_client_key unusable: {e}"))?;
    Ok(ClientCert::new_with_certs(&chain, key))
}

fn unix_date(secs: u64) -> String {
    crate::envelope::rfc3339_utc(secs as i64 * 1_000_000)
}

/// Says what a TLS failure means for whoever reads `last_error`.
pub fn describe(e: &rustls::Error, host: &str) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => format!(
                "TLS: untrusted certificate: {host} presented a certificate not signed by a trusted CA \
                 (system trust store or webhooks.tls_ca_file)"
            ),
            C::NotValidForName => {
                format!("TLS: hostname mismatch: the certificate is not valid for {host}")
            }
            C::NotValidForNameContext { expected, presented } => format!(
                "TLS: hostname mismatch: expected {}, the certificate is for {}",
                expected.to_str(),
                presented.join(", ")
            ),
            C::Expired => format!("TLS: the certificate of {host} has expired"),
            C::ExpiredContext { not_after, .. } => format!(
                "TLS: the certificate of {host} expired at {}",
                unix_date(not_after.as_secs())
            ),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("TLS: the certificate of {host} is not valid yet")
            }
            C::Revoked => format!("TLS: the certificate of {host} is revoked"),
            C::BadSignature => format!("TLS: the certificate of {host} has a bad signature"),
            other => format!("TLS: invalid certificate from {host}: {other:?}"),
        },
        E::AlertReceived(A::CertificateRequired) => format!(
            "TLS: {host} requires a client certificate (set tls_client_cert and tls_client_key on the endpoint)"
        ),
        E::AlertReceived(a @ (A::BadCertificate | A::UnknownCA | A::AccessDenied)) => format!(
            "TLS: {host} refused our client certificate (alert {a:?})"
        ),
        E::AlertReceived(a) => format!("TLS: handshake failure: {host} sent alert {a:?}"),
        E::PeerIncompatible(p) => format!("TLS: handshake failure: {host} is incompatible ({p:?})"),
        other => format!("TLS: handshake failure with {host}: {other}"),
    }
}

/// Finds a rustls error inside an I/O error (rustls reports handshake failures through I/O).
pub fn rustls_error(io: &std::io::Error) -> Option<&rustls::Error> {
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error_naming_setting_and_path() {
        let e = load_trust(Some("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            e.contains("webhooks.tls_ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("wh-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("empty.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        let e = load_trust(f.to_str()).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_system_bundle_is_read_without_any_setting() {
        let t = load_trust(None).unwrap();
        if t.system_bundle.is_some() {
            assert!(t.roots.len() > 10, "a distribution bundle has many roots");
        }
    }

    #[test]
    fn bad_client_pem_names_the_column() {
        let e = client_cert("junk", "junk").err().unwrap();
        assert!(e.contains("tls_client_cert"), "{e}");
    }

    #[test]
    fn errors_are_plain_words() {
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(describe(&e, "h.example.com").contains("untrusted certificate"));
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                1_700_000_000,
            )),
            not_after: rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(1_609_459_200),
            ),
        });
        let d = describe(&e, "h");
        assert!(d.contains("expired at 2021-01-01"), "{d}");
    }
}
