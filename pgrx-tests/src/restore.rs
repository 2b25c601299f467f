//! A database dumped and restored, on one major or from an older one into a newer one.

use crate::cluster::Cluster;
use crate::receiver::Receiver;
use crate::wait_for;
use std::collections::HashSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Dumps a database that uses everything the extension keeps (endpoints, a registered type,
/// due and waiting deliveries, delivered history, a tracked table with a condition, a v1a key
/// pair, a tenant's slug) from a cluster of major `from`, restores it into a cluster of major
/// `to` with that major's pg_restore, and checks it comes back and the restored cluster
/// delivers the waiting work. `from` < `to` is a major upgrade done the way users do it.
pub fn dump_and_restore(from: u32, to: u32) {
    // The dumped cluster's worker serves another database: its deliveries stay due, so the
    // restore brings back due work as well as parked work.
    let a = Cluster::start_bare_on(from, &["webhooks.database = 'template1'"]);
    a.client()
        .batch_execute("CREATE EXTENSION webhooks")
        .unwrap();
    let rx = Receiver::ok();
    let mut db = a.client();
    db.batch_execute("SELECT webhooks.event_type_register('invoice.paid', 'An invoice was paid.')")
        .unwrap();
    let (live, _) = a.endpoint(&mut db, &rx.url, &["user.*"]);
    let (parked, _) = a.endpoint(&mut db, &rx.url, &["invoice.*"]);
    // Undelivered work: published to the second endpoint, which is disabled in the same
    // transaction (so the worker never sees it enabled): its deliveries wait.
    let mut tx = db.transaction().unwrap();
    let mut waiting = Vec::new();
    for i in 0..2 {
        let id: String = tx
            .query_one(
                "SELECT webhooks.webhook_publish('invoice.paid', jsonb_build_object('n', $1::int))",
                &[&i],
            )
            .unwrap()
            .get(0);
        waiting.push(id);
    }
    tx.execute(
        "SELECT webhooks.endpoint_disable($1, 'maintenance')",
        &[&parked],
    )
    .unwrap();
    tx.commit().unwrap();
    let due: String = db
        .query_one("SELECT webhooks.webhook_publish('user.created', '{}')", &[])
        .unwrap()
        .get(0);
    // History stays behind: a delivery marked done is not dumped.
    let done: String = db
        .query_one("SELECT webhooks.webhook_publish('user.updated', '{}')", &[])
        .unwrap()
        .get(0);
    db.execute(
        "UPDATE webhooks.deliveries SET status = 'succeeded', attempts = 1, completed_at = now() WHERE event_id = $1",
        &[&done],
    )
    .unwrap();
    let endpoints = |db: &mut postgres::Client| -> Vec<String> {
        db.query(
            "SELECT row(id, url, secret, tenant_id, event_types, enabled, disabled_reason,
                        created_at, updated_at)::text FROM webhooks.endpoints ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    // 0.3.0's own state: a tracked table with a condition, a v1a endpoint's key pair, a slug.
    db.batch_execute(
        "CREATE TABLE members (id int PRIMARY KEY, email text);
         SELECT webhooks.track_table('members', 'user', condition => 'NEW.email IS DISTINCT FROM OLD.email');
         INSERT INTO webhooks.tenants (id, slug) VALUES ('acme', 'acme-corp');",
    )
    .unwrap();
    let v1a_rx = Receiver::ok();
    let v1a: (String, String) = {
        let r = db
            .query_one(
                "SELECT id, public_key FROM webhooks.endpoint_create($1, '{user.*}', signature => 'v1a')",
                &[&v1a_rx.url],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let private_key = |db: &mut postgres::Client, id: &str| -> String {
        db.query_one(
            "SELECT private_key FROM webhooks_internal.signing_keys WHERE endpoint_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0)
    };
    let key_before = private_key(&mut db, &v1a.0);
    let before = endpoints(&mut db);

    let dump = a.dir.join("db.dump");
    let dump = dump.to_str().unwrap();
    // The source major's pg_dump, the newer one's pg_restore. PostgreSQL's advice is the newer
    // pg_dump, but the newer major here may be the older release: Debian's 15.20 keeps a
    // `pg_attver` option on every column, which 15.20's pg_dump leaves out and the registry's
    // 17.11 (released before it) writes out for a 17.11 server that refuses it.
    a.tool("pg_dump", &["-Fc", "-f", dump, "postgres"]);

    // Housekeeping every 5 s (it releases the deliveries restored before their endpoint
    // and event, which the worker parked meanwhile).
    let b = Cluster::start_bare_on(to, &["webhooks.retention = '5s'"]);
    b.tool("pg_restore", &["-d", "postgres", dump]);
    let mut db = b.client();
    assert_eq!(
        endpoints(&mut db),
        before,
        "endpoints come back as they were: ids, URLs, secrets, timestamps"
    );
    let registered: i64 = db
        .query_one(
            "SELECT count(*) FROM webhooks.event_types WHERE name = 'invoice.paid' AND NOT builtin",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(registered, 1, "the type a user registered is restored");
    assert_eq!(
        private_key(&mut db, &v1a.0),
        key_before,
        "the v1a private key comes back"
    );
    let slug: String = db
        .query_one("SELECT slug FROM webhooks.tenants WHERE id = 'acme'", &[])
        .unwrap()
        .get(0);
    assert_eq!(slug, "acme-corp");
    let restored: Vec<String> = db
        .query(
            "SELECT d.event_id FROM webhooks.deliveries d JOIN webhooks.events e ON e.id = d.event_id
             ORDER BY d.id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected = waiting.clone();
    expected.push(due.clone());
    let mut restored = restored;
    restored.sort();
    expected.sort();
    assert_eq!(restored, expected, "the undelivered work and its events");
    let history: i64 = db
        .query_one(
            "SELECT count(*) FROM webhooks.deliveries WHERE endpoint_id = $1",
            &[&live],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        history, 1,
        "only the due delivery; the one done is history and stays behind"
    );

    // The dump holds the secrets sealed: the restored cluster's own key cannot open them, so
    // it sends nothing, says why, and loses nothing...
    let problem: String = wait_for("the restored endpoint's secret problem", T, || {
        db.query_one(
            "SELECT secret_problem FROM webhooks.endpoint_health WHERE endpoint_id = $1",
            &[&live],
        )
        .unwrap()
        .get::<_, Option<String>>(0)
    });
    assert!(
        problem.contains("webhooks.key_file does not hold"),
        "{problem}"
    );
    assert!(
        rx.all().iter().all(|r| r.header("webhook-id") != due),
        "nothing is sent with a secret that does not open"
    );
    let unreadable: i64 = db
        .query_one("SELECT secrets_unreadable FROM webhooks.status()", &[])
        .unwrap()
        .get(0);
    assert!(unreadable >= 1, "status() counts it");
    let attempts: i32 = db
        .query_one(
            "SELECT attempts FROM webhooks.deliveries WHERE event_id = $1 AND endpoint_id = $2",
            &[&due, &live],
        )
        .unwrap()
        .get(0);
    assert_eq!(attempts, 0, "a held request spends no attempt");
    // ...until the dumped cluster's key is added to its key file (no restart).
    b.add_keys_of(&a);

    // The restored cluster delivers what waited, and new work gets new ids.
    // A restored sequence behind deliveries.id would make this publish fail on the primary key.
    db.execute("SELECT webhooks.endpoint_enable($1)", &[&parked])
        .unwrap();
    let fresh: String = db
        .query_one(
            "SELECT webhooks.webhook_publish('invoice.paid', '{\"n\": 9}')",
            &[],
        )
        .unwrap()
        .get(0);
    wait_for("the restored work and a new event", T, || {
        let ids: HashSet<String> = rx
            .all()
            .iter()
            .map(|r| r.header("webhook-id").to_string())
            .collect();
        (waiting.iter().all(|w| ids.contains(w)) && ids.contains(&fresh) && ids.contains(&due))
            .then_some(())
    });
    // Signed with the secrets that were dumped: the reference library verifies them, and the
    // v1a endpoint's request verifies with its public key alone.
    let secret: String = db
        .query_one("SELECT webhooks.endpoint_secret($1)", &[&live])
        .unwrap()
        .get(0);
    let sent = rx
        .all()
        .into_iter()
        .find(|r| r.header("webhook-id") == due)
        .unwrap();
    assert!(
        crate::verify_signature(&secret, &sent),
        "the restored secret signs"
    );
    let again: String = db
        .query_one("SELECT webhooks.webhook_publish('user.updated', '{}')", &[])
        .unwrap()
        .get(0);
    let v1a_sent = wait_for("the v1a endpoint's request", T, || {
        v1a_rx
            .all()
            .into_iter()
            .find(|r| r.header("webhook-id") == again)
    });
    assert_eq!(crate::python_verifies_v1a(&v1a.1, &v1a_sent), [true]);
    let cleared: Option<String> = wait_for("the problem cleared", T, || {
        let p: Option<String> = db
            .query_one(
                "SELECT secret_problem FROM webhooks.endpoints WHERE id = $1",
                &[&live],
            )
            .unwrap()
            .get(0);
        p.is_none().then_some(p)
    });
    assert_eq!(cleared, None);
    // The tracked table publishes again, under its condition.
    db.batch_execute(
        "INSERT INTO members VALUES (1, 'a@x.io');
         UPDATE members SET email = email WHERE id = 1;",
    )
    .unwrap();
    let row_events: i64 = db
        .query_one(
            "SELECT count(*) FROM webhooks.events WHERE entity_key = 'user:1'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(row_events, 1, "created; the update changed no email");
}
