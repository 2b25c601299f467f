//! A throw-away test PKI generated at run time with `rcgen` (ECDSA P-256, `ring`).
//!
//! [`Pki::new`] writes every certificate and key as PEM into a fresh directory under
//! `$WEBHOOKS_TEST_DIR` (default `/var/tmp/webhooks-test`), readable by the `postgres` OS user
//! (directories 755, files 644: these are test keys, not secrets).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Which server certificate an HTTPS [`crate::receiver::Receiver`] presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerCert {
    /// Signed by the CA; SANs `localhost`, 127.0.0.1, ::1; currently valid.
    Good,
    /// Signed by the CA; SAN only `wrong.example.com`.
    WrongHost,
    /// Signed by the CA; SANs like `Good`; valid 2020-01-01 .. 2021-01-01.
    Expired,
    /// Like `Good`, but signed by the other (untrusted) CA.
    Untrusted,
}

/// A certificate (and its private key) as PEM strings, DER and files on disk.
#[derive(Clone, Debug)]
pub struct CertKey {
    pub cert_pem: String,
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl CertKey {
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// The whole test PKI. See the module docs.
pub struct Pki {
    dir: PathBuf,
    ca: CertKey,
    other_ca: CertKey,
    client_ca: CertKey,
    good: CertKey,
    wrong_host: CertKey,
    expired: CertKey,
    untrusted: CertKey,
    client: CertKey,
    other_client: CertKey,
}

type Issuer = CertifiedIssuer<'static, KeyPair>;

impl Pki {
    /// Generates a fresh PKI in `$WEBHOOKS_TEST_DIR/pki-<pid>-<seq>`. Panics on I/O errors.
    pub fn new() -> Pki {
        let base = PathBuf::from(
            std::env::var("WEBHOOKS_TEST_DIR").unwrap_or_else(|_| "/var/tmp/webhooks-test".into()),
        );
        std::fs::create_dir_all(&base).expect("create WEBHOOKS_TEST_DIR");
        let mode = std::fs::metadata(&base)
            .expect("stat base")
            .permissions()
            .mode();
        if mode & 0o755 != 0o755 {
            chmod(&base, (mode & 0o7777) | 0o755);
        }
        let dir = base.join(format!(
            "pki-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create pki dir");
        chmod(&dir, 0o755);

        let now = OffsetDateTime::now_utc();
        let (ca_i, ca) = make_ca(&dir, "ca", "webhooks test CA");
        let (other_i, other_ca) = make_ca(&dir, "other-ca", "webhooks other (untrusted) CA");
        let (client_i, client_ca) = make_ca(&dir, "client-ca", "webhooks test client CA");

        let server_sans = || {
            vec![
                SanType::DnsName("localhost".try_into().expect("dns name")),
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
            ]
        };
        let leaf = |cn: &str,
                    sans: Vec<SanType>,
                    eku: ExtendedKeyUsagePurpose,
                    validity: (OffsetDateTime, OffsetDateTime)| {
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.subject_alt_names = sans;
            p.extended_key_usages = vec![eku];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.not_before = validity.0;
            p.not_after = validity.1;
            p
        };
        let current = (now - Duration::hours(1), now + Duration::days(365));
        let past = (
            rcgen::date_time_ymd(2020, 1, 1),
            rcgen::date_time_ymd(2021, 1, 1),
        );
        let server = ExtendedKeyUsagePurpose::ServerAuth;
        let client = ExtendedKeyUsagePurpose::ClientAuth;

        let good = issue(
            &dir,
            "server-good",
            leaf("localhost", server_sans(), server.clone(), current),
            &ca_i,
        );
        let wrong_host = issue(
            &dir,
            "server-wrong-host",
            leaf(
                "wrong.example.com",
                vec![SanType::DnsName(
                    "wrong.example.com".try_into().expect("dns name"),
                )],
                server.clone(),
                current,
            ),
            &ca_i,
        );
        let expired = issue(
            &dir,
            "server-expired",
            leaf("localhost", server_sans(), server.clone(), past),
            &ca_i,
        );
        let untrusted = issue(
            &dir,
            "server-untrusted",
            leaf("localhost", server_sans(), server, current),
            &other_i,
        );
        let client_ck = issue(
            &dir,
            "client",
            leaf("webhooks-client", vec![], client.clone(), current),
            &client_i,
        );
        let other_client = issue(
            &dir,
            "other-client",
            leaf("webhooks-other-client", vec![], client, current),
            &other_i,
        );
        Pki {
            dir,
            ca,
            other_ca,
            client_ca,
            good,
            wrong_host,
            expired,
            untrusted,
            client: client_ck,
            other_client,
        }
    }

    /// The directory holding all files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA that signs the Good/WrongHost/Expired server certificates.
    pub fn ca(&self) -> &CertKey {
        &self.ca
    }
    pub fn ca_file(&self) -> PathBuf {
        self.ca.cert_file.clone()
    }
    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem.clone()
    }

    /// An unrelated CA: signs the Untrusted server certificate and the other client certificate.
    pub fn other_ca(&self) -> &CertKey {
        &self.other_ca
    }
    pub fn other_ca_file(&self) -> PathBuf {
        self.other_ca.cert_file.clone()
    }
    pub fn other_ca_pem(&self) -> String {
        self.other_ca.cert_pem.clone()
    }

    /// The CA an mTLS receiver trusts for client certificates.
    pub fn client_ca(&self) -> &CertKey {
        &self.client_ca
    }
    pub fn client_ca_file(&self) -> PathBuf {
        self.client_ca.cert_file.clone()
    }
    pub fn client_ca_pem(&self) -> String {
        self.client_ca.cert_pem.clone()
    }

    /// A server certificate and key.
    pub fn server(&self, which: ServerCert) -> &CertKey {
        match which {
            ServerCert::Good => &self.good,
            ServerCert::WrongHost => &self.wrong_host,
            ServerCert::Expired => &self.expired,
            ServerCert::Untrusted => &self.untrusted,
        }
    }

    /// The client certificate signed by the client CA (accepted by mTLS receivers).
    pub fn client(&self) -> &CertKey {
        &self.client
    }
    pub fn client_cert_pem(&self) -> String {
        self.client.cert_pem.clone()
    }
    pub fn client_key_pem(&self) -> String {
        self.client.key_pem.clone()
    }
    pub fn client_cert_file(&self) -> PathBuf {
        self.client.cert_file.clone()
    }
    pub fn client_key_file(&self) -> PathBuf {
        self.client.key_file.clone()
    }

    /// A client certificate signed by the other CA (rejected by mTLS receivers).
    pub fn other_client(&self) -> &CertKey {
        &self.other_client
    }
    pub fn other_client_cert_pem(&self) -> String {
        self.other_client.cert_pem.clone()
    }
    pub fn other_client_key_pem(&self) -> String {
        self.other_client.key_pem.clone()
    }
    pub fn other_client_cert_file(&self) -> PathBuf {
        self.other_client.cert_file.clone()
    }
    pub fn other_client_key_file(&self) -> PathBuf {
        self.other_client.key_file.clone()
    }

    /// `(cert_pem, key_pem)` that do not belong together: the client certificate with the other
    /// client's key.
    pub fn mismatched_client_pem(&self) -> (String, String) {
        (
            self.client.cert_pem.clone(),
            self.other_client.key_pem.clone(),
        )
    }
    /// Files of [`Pki::mismatched_client_pem`]: `(cert_file, key_file)`.
    pub fn mismatched_client_files(&self) -> (PathBuf, PathBuf) {
        (
            self.client.cert_file.clone(),
            self.other_client.key_file.clone(),
        )
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        if std::env::var("WEBHOOKS_KEEP").is_err() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chmod(&path, 0o644);
    path
}

fn make_ca(dir: &Path, name: &str, cn: &str) -> (Issuer, CertKey) {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "webhooks e2e tests");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Valid from before the Expired certificate until far in the future.
    p.not_before = rcgen::date_time_ymd(2019, 1, 1);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
    let key = KeyPair::generate().expect("generate CA key");
    let key_pem = key.serialize_pem();
    let key_der = key.serialize_der();
    let issuer = CertifiedIssuer::self_signed(p, key).expect("self-sign CA");
    let cert_pem = issuer.pem();
    let ck = CertKey {
        cert_file: write(dir, &format!("{name}.pem"), &cert_pem),
        key_file: write(dir, &format!("{name}-key.pem"), &key_pem),
        cert_der: issuer.der().clone(),
        cert_pem,
        key_pem,
        key_der,
    };
    (issuer, ck)
}

fn issue(dir: &Path, name: &str, params: CertificateParams, issuer: &Issuer) -> CertKey {
    let key = KeyPair::generate().expect("generate key");
    let cert = params.signed_by(&key, issuer).expect("sign certificate");
    let cert_pem = cert.pem();
    let key_pem = key.serialize_pem();
    CertKey {
        cert_file: write(dir, &format!("{name}.pem"), &cert_pem),
        key_file: write(dir, &format!("{name}-key.pem"), &key_pem),
        cert_der: cert.der().clone(),
        cert_pem,
        key_pem,
        key_der: key.serialize_der(),
    }
}

/// One PKI for the whole test process: `Receiver::ok()`/`scripted()` present its `Good`
/// certificate and every `Cluster` trusts its CA. Never dropped (its directory is removed by
/// the next run of scripts/test.sh).
pub fn shared() -> &'static Pki {
    static SHARED: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    SHARED.get_or_init(Pki::new)
}
