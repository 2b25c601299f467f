//! Self-tests of the test support (PKI, HTTPS receiver, CONNECT proxy). No PostgreSQL needed:
//! `cargo test --test support_selftest`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
use webhooks_e2e::pki::{Pki, ServerCert};
use webhooks_e2e::proxy::ConnectProxy;
use webhooks_e2e::receiver::{ClientAuth, Receiver, Reply};
use webhooks_e2e::wait_for;

const BODY: &str = r#"{"hello":"world"}"#;

/// A client trusting only `roots`, optionally presenting `client = (cert_pem, key_pem)`, optionally
/// through `proxy`; ignores proxy environment variables; 5 s overall timeout per request.
fn agent(roots: &[String], client: Option<(String, String)>, proxy: Option<&str>) -> ureq::Agent {
    let certs: Vec<Certificate<'static>> = roots
        .iter()
        .map(|p| Certificate::from_pem(p.as_bytes()).unwrap())
        .collect();
    let client = client.map(|(c, k)| {
        ClientCert::new_with_certs(
            &[Certificate::from_pem(c.as_bytes()).unwrap()],
            PrivateKey::from_pem(k.as_bytes()).unwrap(),
        )
    });
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(certs)))
        .client_cert(client)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .proxy(proxy.map(|p| ureq::Proxy::new(p).unwrap()))
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent()
}

fn post(agent: &ureq::Agent, url: &str) -> Result<u16, ureq::Error> {
    agent
        .post(url)
        .header("content-type", "application/json")
        .send(BODY)
        .and_then(|r| {
            let status = r.status().as_u16();
            // Read the body to the end so the connection can go back to the pool.
            r.into_body().read_to_string()?;
            Ok(status)
        })
}

fn wait_failed(rx: &Receiver, n: usize) {
    wait_for("failed handshakes", Duration::from_secs(5), || {
        (rx.failed_handshakes() >= n).then_some(())
    });
}

#[test]
fn pki_files_are_readable_pem() {
    let pki = Pki::new();
    let dir = pki.dir().to_path_buf();
    assert!(dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(&format!("pki-{}-", std::process::id())));
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o755
    );
    for f in [
        pki.ca_file(),
        pki.other_ca_file(),
        pki.client_ca_file(),
        pki.client_cert_file(),
        pki.client_key_file(),
        pki.other_client_cert_file(),
        pki.other_client_key_file(),
        pki.server(ServerCert::Good).cert_file.clone(),
        pki.server(ServerCert::Expired).key_file.clone(),
    ] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}", f.display());
        assert!(std::fs::read_to_string(&f)
            .unwrap()
            .starts_with("-----BEGIN "));
    }
    assert_eq!(
        std::fs::read_to_string(pki.ca_file()).unwrap(),
        pki.ca_pem()
    );
    assert!(pki.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(pki
        .client_key_pem()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_ne!(pki.client_key_pem(), pki.other_client_key_pem());
    drop(pki);
    assert!(!dir.exists(), "dropping the Pki removes its directory");
}

#[test]
fn good_cert_verifies_and_request_is_recorded() {
    let pki = Pki::new();
    let rx = Receiver::https(&pki).ok();
    assert!(rx.url.starts_with("https://localhost:"));
    assert_eq!(rx.url_ip(), format!("https://127.0.0.1:{}/hook", rx.port()));
    let a = agent(&[pki.ca_pem()], None, None);
    assert_eq!(post(&a, &rx.url).unwrap(), 200);
    // The IP SAN verifies too.
    assert_eq!(post(&a, rx.url_ip()).unwrap(), 200);
    let all = rx.all();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].path, "/hook");
    assert_eq!(all[0].body, BODY);
    assert_eq!(all[0].header("content-type"), "application/json");
    assert!(all[0].tls && !all[0].client_cert);
    assert_eq!(rx.failed_handshakes(), 0);
}

#[test]
fn untrusted_wrong_host_and_expired_fail_on_the_client() {
    let pki = Pki::new();
    let a = agent(&[pki.ca_pem()], None, None);
    for cert in [
        ServerCert::Untrusted,
        ServerCert::WrongHost,
        ServerCert::Expired,
    ] {
        let rx = Receiver::https(&pki).cert(cert).ok();
        let err = post(&a, &rx.url).expect_err("must not verify");
        eprintln!("{cert:?}: {err}");
        wait_failed(&rx, 1);
        assert_eq!(rx.count(), 0, "{cert:?}");
        assert_eq!(rx.handshakes(), 0, "{cert:?}");
    }
    // The untrusted certificate itself is fine: trusting the other CA makes it verify.
    let rx = Receiver::https(&pki).cert(ServerCert::Untrusted).ok();
    let other = agent(&[pki.other_ca_pem()], None, None);
    assert_eq!(post(&other, &rx.url).unwrap(), 200);
}

#[test]
fn keep_alive_makes_one_handshake_for_twenty_requests() {
    let pki = Pki::new();
    let rx = Receiver::tls(&pki, ServerCert::Good, false, |_, n| {
        if n % 2 == 0 {
            Reply::Status(200, "even")
        } else {
            Reply::Status(202, "odd")
        }
    });
    let a = agent(&[pki.ca_pem()], None, None);
    for i in 0..20 {
        assert_eq!(
            post(&a, &rx.url).unwrap(),
            if i % 2 == 0 { 200 } else { 202 }
        );
    }
    assert_eq!(rx.count(), 20);
    assert_eq!(rx.handshakes(), 1);
    assert_eq!(rx.connections(), 1);
}

#[test]
fn mtls_requires_the_right_client_cert() {
    let pki = Pki::new();
    let rx = Receiver::https(&pki).require_client_cert().ok();
    let none = agent(&[pki.ca_pem()], None, None);
    let other = agent(
        &[pki.ca_pem()],
        Some((pki.other_client_cert_pem(), pki.other_client_key_pem())),
        None,
    );
    let good = agent(
        &[pki.ca_pem()],
        Some((pki.client_cert_pem(), pki.client_key_pem())),
        None,
    );
    for (what, a) in [("no cert", &none), ("other CA", &other)] {
        let err = post(a, &rx.url).expect_err(what);
        eprintln!("{what}: {err}");
    }
    wait_failed(&rx, 2);
    assert_eq!(rx.count(), 0);
    // The accept loop survived the failures.
    assert_eq!(post(&good, &rx.url).unwrap(), 200);
    let all = rx.all();
    assert_eq!(all.len(), 1);
    assert!(all[0].client_cert);
    assert_eq!(rx.handshakes(), 1);
}

/// The mismatched pair is rejected by rustls' key consistency check (ureq would panic on it when
/// building its TLS config, so the extension's own validation has to catch it first).
#[test]
fn mismatched_client_pair_does_not_match() {
    let pki = Pki::new();
    let provider = rustls::crypto::ring::default_provider();
    let pair = |c: &webhooks_e2e::pki::CertKey, k: &webhooks_e2e::pki::CertKey| {
        rustls::sign::CertifiedKey::from_der(vec![c.cert_der()], k.key_der(), &provider)
    };
    assert!(pair(pki.client(), pki.client()).is_ok());
    assert!(pair(pki.other_client(), pki.other_client()).is_ok());
    let err = pair(pki.client(), pki.other_client()).expect_err("mismatch");
    assert!(matches!(err, rustls::Error::InconsistentKeys(_)), "{err:?}");
    let (c, k) = pki.mismatched_client_pem();
    assert_eq!(c, pki.client_cert_pem());
    assert_eq!(k, pki.other_client_key_pem());
}

#[test]
fn optional_client_auth_records_whether_a_cert_was_sent() {
    let pki = Pki::new();
    let rx = Receiver::https(&pki).client_auth(ClientAuth::Optional).ok();
    let none = agent(&[pki.ca_pem()], None, None);
    let good = agent(
        &[pki.ca_pem()],
        Some((pki.client_cert_pem(), pki.client_key_pem())),
        None,
    );
    assert_eq!(post(&none, &rx.url).unwrap(), 200);
    assert_eq!(post(&good, &rx.url).unwrap(), 200);
    let all = rx.all();
    assert!(!all[0].client_cert);
    assert!(all[1].client_cert);
}

#[test]
fn plain_http_receiver_still_works() {
    let rx = Receiver::plain(|_, _| Reply::Status(200, "ok"));
    assert!(rx.url.starts_with("http://127.0.0.1:"));
    assert!(!rx.is_tls());
    let a = agent(&[], None, None);
    assert_eq!(post(&a, &rx.url).unwrap(), 200);
    let r = &rx.all()[0];
    assert!(!r.tls && !r.client_cert);
    assert_eq!(r.body, BODY);
    assert_eq!(rx.handshakes(), 0);
}

#[test]
fn proxy_tunnels_https_and_records_the_target() {
    let pki = Pki::new();
    let rx = Receiver::https(&pki).ok();
    let proxy = ConnectProxy::start();
    assert!(proxy.url().starts_with("http://127.0.0.1:"));
    let a = agent(&[pki.ca_pem()], None, Some(proxy.url()));
    assert_eq!(post(&a, &rx.url).unwrap(), 200);
    assert_eq!(post(&a, &rx.url).unwrap(), 200);
    assert_eq!(rx.count(), 2);
    assert_eq!(proxy.connects()[0], format!("localhost:{}", rx.port()));
    assert!(proxy.others().is_empty());
    // Certificate checks still apply end to end through the tunnel.
    let bad = Receiver::https(&pki).cert(ServerCert::WrongHost).ok();
    post(&a, &bad.url).expect_err("wrong host through proxy");
    wait_failed(&bad, 1);
}

#[test]
fn refusing_proxy_makes_the_client_fail() {
    let pki = Pki::new();
    let rx = Receiver::https(&pki).ok();
    let proxy = ConnectProxy::refusing();
    let a = agent(&[pki.ca_pem()], None, Some(proxy.url()));
    let err = post(&a, &rx.url).expect_err("refused");
    eprintln!("refused: {err}");
    assert_eq!(proxy.connects(), vec![format!("localhost:{}", rx.port())]);
    assert_eq!(rx.count(), 0);
    assert_eq!(rx.connections(), 0);
}

#[test]
fn proxy_answers_501_to_absolute_form_requests() {
    let proxy = ConnectProxy::start();
    let mut s = TcpStream::connect(proxy.url().trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"POST http://127.0.0.1:9/hook HTTP/1.1\r\nhost: 127.0.0.1:9\r\ncontent-length: 0\r\n\r\n",
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 501 "), "{resp}");
    assert_eq!(
        proxy.others(),
        vec!["POST http://127.0.0.1:9/hook HTTP/1.1"]
    );
    assert!(proxy.connects().is_empty());
}

#[test]
fn dropping_the_receiver_closes_its_connections() {
    let pki = Pki::new();
    let rx = Receiver::https(&pki).ok();
    let mut s = TcpStream::connect(("127.0.0.1", rx.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    wait_for("connection accepted", Duration::from_secs(5), || {
        (rx.connections() == 1).then_some(())
    });
    drop(rx);
    // The server side closes: read ends with EOF/reset well before the 30 s idle timeout.
    let mut buf = [0u8; 16];
    let start = std::time::Instant::now();
    let r = s.read(&mut buf);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(4));
}
