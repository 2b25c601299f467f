//! Secrets at rest: what a dump, a replica or a superuser's SELECT carries of the endpoints'
//! secrets (nothing in the clear), what happens when the key file is missing or too open
//! (nothing sent, said where an operator looks, nothing lost, delivered once it is back), and a
//! key rotation while the worker sends. The dump restored into another cluster with the key is
//! in webhooks_e2e::restore (upgrade.rs, majors.rs).

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::receiver::Receiver;
use webhooks_e2e::{verify_signature, wait_for};

const T: Duration = Duration::from_secs(30);

fn publish(db: &mut postgres::Client, n: i32) -> String {
    db.query_one(
        "SELECT webhooks.webhook_publish('user.created', jsonb_build_object('n', $1::int))",
        &[&n],
    )
    .unwrap()
    .get(0)
}

fn ids(rx: &Receiver) -> HashSet<String> {
    rx.all()
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect()
}

/// The message of the error a statement is refused with (the test fails if it is not).
fn refused(
    db: &mut postgres::Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> String {
    let e = db.query_one(sql, params).unwrap_err();
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

fn problem(db: &mut postgres::Client, ep: &str) -> Option<String> {
    db.query_one(
        "SELECT secret_problem FROM webhooks.endpoint_health WHERE endpoint_id = $1",
        &[&ep],
    )
    .unwrap()
    .get(0)
}

/// pg_dump's output and every column a superuser reads hold the secrets sealed only: the v1
/// secret, the v1a private key and the mTLS client key appear nowhere in the clear, while the
/// receivers get requests signed with them.
#[test]
fn dumps_and_selects_carry_no_secret_in_the_clear() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut db = c.client();
    let (ep, secret) = c.endpoint(&mut db, &rx.url, &["user.*"]);
    let pki = webhooks_e2e::pki::shared();
    db.execute(
        "SELECT webhooks.endpoint_update($1, tls_client_cert => $2, tls_client_key => $3)",
        &[&ep, &pki.client_cert_pem(), &pki.client_key_pem()],
    )
    .unwrap();
    let v1a: String = db
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{user.*}', signature => 'v1a')",
            &[&rx.url],
        )
        .unwrap()
        .get(0);
    let private: String = db
        .query_one(
            "SELECT webhooks_internal._open(private_key) FROM webhooks_internal.signing_keys WHERE endpoint_id = $1",
            &[&v1a],
        )
        .unwrap()
        .get(0);
    assert!(private.starts_with("whsk_"));
    let id = publish(&mut db, 1);
    wait_for("both requests", T, || (rx.count() == 2).then_some(()));
    let to_v1 = rx
        .all()
        .into_iter()
        .find(|r| r.header("webhook-signature").starts_with("v1,"))
        .unwrap();
    assert_eq!(to_v1.header("webhook-id"), id);
    assert!(verify_signature(&secret, &to_v1), "signed with the secret");

    // what must never appear: the secret's key material, the private key's, the client key's
    // body (a line of its base64)
    let client_key_line = pki
        .client_key_pem()
        .lines()
        .find(|l| l.len() > 40 && !l.starts_with("-----"))
        .unwrap()
        .to_string();
    let clear = [
        secret.trim_start_matches("whsec_").to_string(),
        private.trim_start_matches("whsk_").to_string(),
        client_key_line,
    ];
    let dump = c.tool("pg_dump", &["postgres"]);
    assert!(
        dump.contains("whenc1:"),
        "the dump carries the sealed values"
    );
    for s in &clear {
        assert!(
            !dump.contains(s.as_str()),
            "pg_dump output holds a secret in the clear"
        );
    }
    let rows: Vec<String> = db
        .query(
            "SELECT e::text FROM webhooks.endpoints e
             UNION ALL SELECT k::text FROM webhooks_internal.signing_keys k",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        for s in &clear {
            assert!(
                !row.contains(s.as_str()),
                "SELECT * holds a secret in the clear"
            );
        }
    }
    // the key itself is in no setting and no log line
    let key = std::fs::read_to_string(c.key_file()).unwrap();
    let key_b64 = key
        .lines()
        .find(|l| !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    let settings: String = db
        .query_one(
            "SELECT string_agg(coalesce(setting, ''), ' ') FROM pg_settings",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!settings.contains(&key_b64));
    assert!(!c.log().contains(&key_b64));
    assert!(!dump.contains(&key_b64));
}

/// A cluster whose key is gone (its key file lost: the next start makes a new one, which does
/// not open what the old one sealed) sends nothing to the endpoints it cannot sign for, says
/// why in endpoint_health, status() and the log, spends no attempt, and delivers everything once
/// the old key is back in the file (no restart).
#[test]
fn a_missing_key_holds_delivery_and_loses_nothing() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut db = c.client();
    let (ep, secret) = c.endpoint(&mut db, &rx.url, &["user.*"]);
    publish(&mut db, 0);
    wait_for("the first request", T, || (rx.count() == 1).then_some(()));
    drop(db);
    let saved = std::fs::read_to_string(c.key_file()).unwrap();
    c.pg_ctl(&["stop", "-m", "fast", "-w"]);
    std::fs::remove_file(c.key_file()).unwrap();
    c.pg_ctl(&["start", "-w", "-t", "60"]);
    let made = std::fs::read_to_string(c.key_file()).unwrap();
    assert_ne!(made, saved, "the start made a new key");
    let mode = std::fs::metadata(c.key_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let mut db = c.client();
    let waiting: Vec<String> = (1..=3).map(|n| publish(&mut db, n)).collect();
    let why = wait_for("the endpoint's secret problem", T, || problem(&mut db, &ep));
    assert!(
        why.contains("webhooks.key_file does not hold"),
        "names the key and the file: {why}"
    );
    let unreadable: i64 = db
        .query_one("SELECT secrets_unreadable FROM webhooks.status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(unreadable, 1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(rx.count(), 1, "nothing is sent meanwhile");
    let spent: i64 = db
        .query_one(
            "SELECT count(*) FROM webhooks.deliveries WHERE status = 'pending' AND attempts = 0 AND event_id = ANY ($1)",
            &[&waiting],
        )
        .unwrap()
        .get(0);
    assert_eq!(spent, 3, "pending, no attempt spent");
    assert!(
        c.log()
            .contains(&format!("nothing is sent to endpoint \"{ep}\"")),
        "said in the log"
    );
    // new endpoints work under the new key meanwhile
    let rx2 = Receiver::ok();
    let (_, secret2) = c.endpoint(&mut db, &rx2.url, &["user.*"]);
    let later = publish(&mut db, 4);
    wait_for("the new endpoint's request", T, || {
        rx2.all()
            .into_iter()
            .find(|r| r.header("webhook-id") == later)
    });
    assert!(verify_signature(&secret2, &rx2.all()[0]));

    // the old key back (appended: the new one keeps sealing)
    let old_line = saved
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap();
    // (written in place: the file keeps its owner and mode)
    std::fs::write(c.key_file(), format!("{old_line}\n{made}")).unwrap();
    wait_for("what waited, delivered", Duration::from_secs(60), || {
        let got = ids(&rx);
        (waiting.iter().all(|w| got.contains(w)) && got.contains(&later)).then_some(())
    });
    for r in rx.all() {
        assert!(verify_signature(&secret, &r), "signed with the old secret");
    }
    wait_for("the problem cleared", T, || {
        problem(&mut db, &ep).is_none().then_some(())
    });
    assert_eq!(
        rx.count(),
        5,
        "each once (the first, the three held, the later one)"
    );
}

/// A key file that group or others may read is refused, with the reason, wherever a key is
/// needed: writing a secret fails, the worker sends nothing and says why; once it is 0600
/// again both work and what waited is delivered.
#[test]
fn a_key_file_others_may_read_is_refused() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut db = c.client();
    let (ep, secret) = c.endpoint(&mut db, &rx.url, &["user.*"]);
    publish(&mut db, 0);
    wait_for("the first request", T, || (rx.count() == 1).then_some(()));
    let key = c.key_file();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let msg = refused(
        &mut db,
        "SELECT id FROM webhooks.endpoint_create($1)",
        &[&rx.url],
    );
    assert!(
        msg.contains("mode 0644") && msg.contains("chmod 600"),
        "says why: {msg}"
    );
    let held = publish(&mut db, 1);
    let why = wait_for("the endpoint's secret problem", T, || problem(&mut db, &ep));
    assert!(why.contains("mode 0644"), "{why}");
    assert_eq!(rx.count(), 1);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    c.endpoint(&mut db, &rx.url, &["email.*"]);
    // Gone while the server runs: an error where a key is needed, never a new key made then
    // (new secrets sealed under it would not open once the file is back).
    let away = c.dir.join("webhooks.key.away");
    std::fs::rename(&key, &away).unwrap();
    let msg = refused(
        &mut db,
        "SELECT id FROM webhooks.endpoint_create($1)",
        &[&rx.url],
    );
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(!key.exists(), "no key is made while the server runs");
    std::fs::rename(&away, &key).unwrap();
    c.endpoint(&mut db, &rx.url, &["email.*"]);
    wait_for("what waited, delivered", Duration::from_secs(60), || {
        ids(&rx).contains(&held).then_some(())
    });
    assert!(rx.all().iter().all(|r| verify_signature(&secret, r)));
}

/// webhooks.key_rotate() while events keep flowing: the new key seals from then on, the
/// worker reseals every stored secret under it in small steps (webhooks.secret_keys shows the
/// old key emptying), and every event is delivered once, signed with the unchanged secret.
#[test]
fn a_key_rotation_reseals_while_the_worker_sends() {
    // housekeeping (which reseals) every 2 s
    let c = Cluster::start(&["webhooks.retention = '2s'"]);
    let rx = Receiver::ok();
    let mut db = c.client();
    let mut secrets = Vec::new();
    for _ in 0..3 {
        secrets.push(c.endpoint(&mut db, &rx.url, &["user.*"]));
    }
    let old: String = db
        .query_one("SELECT key_id FROM webhooks.secret_keys WHERE seals", &[])
        .unwrap()
        .get(0);
    // The key file as a symbolic link to a file kept elsewhere: a rotation writes that file.
    let real = c.dir.join("keys").join("webhooks.key");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::process::Command::new("chown")
        .args(["postgres", real.parent().unwrap().to_str().unwrap()])
        .status()
        .unwrap();
    std::fs::copy(c.key_file(), &real).unwrap();
    std::process::Command::new("chown")
        .args(["postgres", real.to_str().unwrap()])
        .status()
        .unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(c.key_file()).unwrap();
    std::os::unix::fs::symlink(&real, c.key_file()).unwrap();
    // A physical standby (here its slot) reads a key file of its own: rotating here alone is
    // refused, saying what to do.
    db.batch_execute("SELECT pg_create_physical_replication_slot('standby_1')")
        .unwrap();
    let msg = refused(&mut db, "SELECT webhooks.key_rotate()", &[]);
    assert!(msg.contains("standbys"), "{msg}");
    db.batch_execute("SELECT pg_drop_replication_slot('standby_1')")
        .unwrap();
    let mut published = Vec::new();
    for n in 0..100 {
        published.push(publish(&mut db, n));
        if n == 50 {
            let fresh: String = db
                .query_one("SELECT webhooks.key_rotate()", &[])
                .unwrap()
                .get(0);
            assert_ne!(fresh, old);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for("the old key emptied", Duration::from_secs(30), || {
        let n: i64 = db
            .query_one(
                "SELECT coalesce(sum(sealed_values), 0)::int8 FROM webhooks.secret_keys WHERE key_id = $1",
                &[&old],
            )
            .unwrap()
            .get(0);
        (n == 0).then_some(())
    });
    let in_file: bool = db
        .query_one(
            "SELECT in_key_file FROM webhooks.secret_keys WHERE key_id = $1",
            &[&old],
        )
        .unwrap()
        .get(0);
    assert!(
        in_file,
        "the old key stays in the file, for an operator to remove"
    );
    assert!(
        std::fs::symlink_metadata(c.key_file())
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link stays"
    );
    let lines = std::fs::read_to_string(&real)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(lines, 2, "the file it names has both keys");
    wait_for("every delivery", T, || (rx.count() >= 300).then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.count(), 300, "each event once per endpoint");
    for (ep, secret) in &secrets {
        let now: String = db
            .query_one("SELECT webhooks.endpoint_secret($1)", &[ep])
            .unwrap()
            .get(0);
        assert_eq!(&now, secret, "resealing keeps the secret");
    }
    for r in rx.all() {
        assert!(
            secrets.iter().any(|(_, s)| verify_signature(s, &r)),
            "signed"
        );
    }
    let got = ids(&rx);
    assert!(published.iter().all(|p| got.contains(p)));
}
