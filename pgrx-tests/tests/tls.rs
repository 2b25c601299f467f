//! HTTPS in the default configuration (require_https on, certificates verified): private CAs
//! through webhooks.tls_ca_file, failures named in last_error, client certificates, a CONNECT
//! proxy, and connection reuse. Only allow_private_targets is on, to reach 127.0.0.1.

use std::time::Duration;
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::pki::{self, ServerCert};
use webhooks_e2e::proxy::ConnectProxy;
use webhooks_e2e::receiver::{Receiver, Reply};
use webhooks_e2e::wait_for;

const T: Duration = Duration::from_secs(30);

fn publish(db: &mut postgres::Client, ty: &str) -> String {
    db.query_one("SELECT webhooks.webhook_publish($1, '{}')", &[&ty])
        .unwrap()
        .get(0)
}

fn delivery(db: &mut postgres::Client, ev: &str) -> (String, i32, Option<String>) {
    let r = db
        .query_one(
            "SELECT status, attempts, last_error FROM webhooks.deliveries WHERE event_id = $1",
            &[&ev],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[test]
fn https_with_a_private_ca_delivers_and_the_reference_library_verifies() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    assert!(rx.url.starts_with("https://"));
    let mut db = c.client();
    let require: String = db
        .query_one("SHOW webhooks.require_https", &[])
        .unwrap()
        .get(0);
    assert_eq!(require, "on", "the tested configuration is the default one");
    let (_, secret) = c.endpoint(&mut db, &rx.url, &["user.*"]);
    let ev = publish(&mut db, "user.created");
    wait_for("the delivery", T, || (rx.count() == 1).then_some(()));
    let req = &rx.all()[0];
    assert!(req.tls);
    assert!(webhooks_e2e::verify_signature(&secret, req));
    assert_eq!(req.header("webhook-id"), ev);
    wait_for("succeeded", T, || {
        (delivery(&mut db, &ev).0 == "succeeded").then_some(())
    });
    // http:// is refused by default, with the setting named
    let e = db
        .execute(
            "SELECT webhooks.endpoint_create('http://127.0.0.1:9/x')",
            &[],
        )
        .unwrap_err();
    assert!(
        e.as_db_error().unwrap().message().contains("require_https"),
        "{e:?}"
    );
}

#[test]
fn bad_certificates_are_failed_attempts_that_say_why_and_are_never_delivered() {
    let c = Cluster::start(&[]);
    let p = pki::shared();
    let cases = [
        (ServerCert::Untrusted, "untrusted certificate"),
        (
            ServerCert::WrongHost,
            "hostname mismatch: expected localhost",
        ),
        (ServerCert::Expired, "expired at 2021-01-01"),
    ];
    let mut db = c.client();
    let mut rxs = Vec::new();
    for (cert, _) in &cases {
        let rx = Receiver::https(p).cert(*cert).ok();
        c.endpoint(&mut db, &rx.url, &["user.created"]);
        rxs.push(rx);
    }
    let ev = publish(&mut db, "user.created");
    wait_for("two failed attempts each", T, || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM webhooks.deliveries WHERE event_id = $1 AND attempts >= 2",
                &[&ev],
            )
            .unwrap()
            .get(0);
        (n == 3).then_some(())
    });
    for ((_, why), rx) in cases.iter().zip(&rxs) {
        let err: String = db
            .query_one(
                "SELECT d.last_error FROM webhooks.deliveries d JOIN webhooks.endpoints e ON e.id = d.endpoint_id
                 WHERE d.event_id = $1 AND e.url = $2",
                &[&ev, &rx.url],
            )
            .unwrap()
            .get(0);
        assert!(err.contains(why), "{why}: {err}");
        assert_eq!(rx.count(), 0, "{why}: nothing reached the receiver");
        assert!(rx.failed_handshakes() >= 2, "{why}: retried");
    }
    // The same errors fail a synchronous send, named for the caller.
    let rx = Receiver::https(p).cert(ServerCert::Untrusted).ok();
    c.endpoint(&mut db, &rx.url, &["sms.created"]);
    let e = db
        .execute(
            "SELECT webhooks.webhook_send_sync('sms.created', '{}')",
            &[],
        )
        .unwrap_err();
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("untrusted certificate"), "{msg}");
    // (named by endpoint id for the publisher who reads it: never by URL, host or port)
    assert!(
        !msg.contains("localhost")
            && !msg.contains("/hook")
            && !msg.contains(&rx.port().to_string()),
        "{msg}"
    );
}

#[test]
fn a_receiver_that_requires_a_client_certificate_gets_the_endpoints_own() {
    let c = Cluster::start(&[]);
    let p = pki::shared();
    let rx = Receiver::https(p).require_client_cert().ok();
    let mut db = c.client();
    let (with, _) = c.endpoint(&mut db, &rx.url, &["user.created"]);
    let (without, _) = c.endpoint(&mut db, &format!("{}?no-cert", rx.url), &["user.created"]);
    // A pair that does not belong together is refused when written, naming the column.
    let (bad_cert, bad_key) = p.mismatched_client_pem();
    let e = db
        .execute(
            "SELECT webhooks.endpoint_update($1, tls_client_cert => $2, tls_client_key => $3)",
            &[&with, &bad_cert, &bad_key],
        )
        .unwrap_err();
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("does not match"),
        "{e:?}"
    );
    db.execute(
        "SELECT webhooks.endpoint_update($1, tls_client_cert => $2, tls_client_key => $3)",
        &[&with, &p.client_cert_pem(), &p.client_key_pem()],
    )
    .unwrap();
    let ev = publish(&mut db, "user.created");
    wait_for("the delivery with a client certificate", T, || {
        (rx.count() == 1).then_some(())
    });
    assert!(rx.all()[0].client_cert);
    assert_eq!(rx.all()[0].path, "/hook");
    wait_for("the other endpoint to fail twice", T, || {
        let r = db
            .query_one(
                "SELECT attempts, last_error FROM webhooks.deliveries WHERE event_id = $1 AND endpoint_id = $2",
                &[&ev, &without],
            )
            .unwrap();
        let (n, err): (i32, Option<String>) = (r.get(0), r.get(1));
        (n >= 2).then_some(err)
    });
    assert_eq!(
        rx.count(),
        1,
        "the endpoint without a certificate never got through"
    );
    assert!(rx.failed_handshakes() >= 2);
}

#[test]
fn deliveries_go_through_the_configured_proxy_and_never_through_the_environment() {
    let proxy = ConnectProxy::start();
    let c = Cluster::start(&[&format!("webhooks.http_proxy = '{}'", proxy.url())]);
    let rx = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.created"]);
    let ev = publish(&mut db, "user.created");
    wait_for("delivery through the proxy", T, || {
        (rx.count() == 1).then_some(())
    });
    let connects = proxy.connects();
    assert!(!connects.is_empty(), "tunnelled with CONNECT");
    // The target was resolved and checked by the extension, and the proxy was asked to
    // connect to the address that passed, never to the name (which it would resolve again:
    // a rebinding name could answer it with another address).
    assert!(
        [
            format!("127.0.0.1:{}", rx.port()),
            format!("[::1]:{}", rx.port())
        ]
        .contains(&connects[0]),
        "{connects:?}"
    );
    wait_for("succeeded", T, || {
        (delivery(&mut db, &ev).0 == "succeeded").then_some(())
    });
    // A proxy that refuses: the attempt fails saying so.
    let refusing = ConnectProxy::refusing();
    db.batch_execute(&format!(
        "ALTER SYSTEM SET webhooks.http_proxy = '{}'",
        refusing.url()
    ))
    .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let ev = publish(&mut db, "user.created");
    let err = wait_for("a failed attempt", T, || delivery(&mut db, &ev).2);
    assert!(err.contains("proxy refused"), "{err}");
    // A bad value is refused when set, naming the setting.
    let e = db
        .batch_execute("ALTER SYSTEM SET webhooks.http_proxy = 'https://p:1'")
        .unwrap_err();
    assert!(format!("{e:?}").contains("webhooks.http_proxy"), "{e:?}");
}

#[test]
fn an_unreadable_ca_file_is_an_error_naming_the_setting() {
    let c = Cluster::start(&[]);
    let mut db = c.client();
    let e = db
        .batch_execute("ALTER SYSTEM SET webhooks.tls_ca_file = '/nonexistent/ca.pem'")
        .unwrap_err();
    let msg = format!("{e:?}");
    assert!(
        msg.contains("webhooks.tls_ca_file") && msg.contains("/nonexistent/ca.pem"),
        "{msg}"
    );
}

/// A CA file that becomes unreadable after it was accepted (deleted, its permissions changed):
/// the worker claims nothing until it is readable again and the server reloads, and says so in
/// the log; deliveries wait, no attempt is used up, and once it is back they are delivered.
#[test]
fn a_ca_file_that_becomes_unreadable_pauses_delivery_until_it_is_back() {
    let dir = std::env::temp_dir().join(format!("webhooks-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::copy(pki::shared().ca_file(), &ca).unwrap();
    let setting = format!("webhooks.tls_ca_file = '{}'", ca.display());
    let c = Cluster::start(&[&setting]);
    let rx = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.created"]);
    let first = publish(&mut db, "user.created");
    wait_for("the first delivery", T, || {
        (delivery(&mut db, &first).0 == "succeeded").then_some(())
    });
    let away = dir.join("ca.pem.away");
    std::fs::rename(&ca, &away).unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_for("the worker to say why it claims nothing", T, || {
        c.log()
            .contains("nothing is claimed until it is fixed")
            .then_some(())
    });
    let second = publish(&mut db, "user.created");
    std::thread::sleep(Duration::from_secs(3));
    let (status, attempts, _) = delivery(&mut db, &second);
    assert_eq!(
        (status.as_str(), attempts),
        ("pending", 0),
        "no attempt used up"
    );
    assert_eq!(rx.count(), 1);
    std::fs::rename(&away, &ca).unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_for("the waiting delivery", T, || {
        (delivery(&mut db, &second).0 == "succeeded").then_some(())
    });
    assert_eq!(delivery(&mut db, &second).1, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_thousand_deliveries_to_one_endpoint_cost_at_most_concurrency_handshakes() {
    let c = Cluster::start(&["webhooks.concurrency = 4"]);
    let rx = Receiver::scripted(|_, _| Reply::Status(200, "ok"));
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.created"]);
    db.batch_execute(
        "SELECT webhooks.webhook_publish('user.created', jsonb_build_object('n', g)) FROM generate_series(1, 1000) g",
    )
    .unwrap();
    wait_for("1000 deliveries", Duration::from_secs(120), || {
        (rx.count() >= 1000).then_some(())
    });
    assert!(
        rx.handshakes() <= 4,
        "{} handshakes for 1000 deliveries with concurrency 4",
        rx.handshakes()
    );
}
