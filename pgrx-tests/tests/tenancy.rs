//! Tenancy on the delivery side, as the hostile roles it is about: a tenant's admin next to a
//! platform endpoint, an endpoint id taken over by another tenant, an admin moving an endpoint
//! to another tenant, role bindings across rename and drop, and synchronous events' secrets.
//! Every test runs the worker in the default configuration (HTTPS, verified certificates).

use std::time::Duration;
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::receiver::{Receiver, Reply};
use webhooks_e2e::wait_for;

const T: Duration = Duration::from_secs(30);

fn error_of<T>(r: Result<T, postgres::Error>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string()),
    }
}

fn count(db: &mut postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn a_tenant_admin_never_sees_or_moves_a_platform_endpoints_deliveries() {
    let c = Cluster::start(&[]);
    let acme_rx = Receiver::ok();
    // The platform's endpoint (every tenant's events) fails, naming itself in its answer.
    let platform_rx = Receiver::scripted(|_, _| Reply::Status(500, "PLATFORM_INTERNAL_BODY"));
    let platform_alerts = Receiver::ok();
    let acme_alerts = Receiver::ok();
    let mut su = c.client();
    su.batch_execute(
        "CREATE ROLE adm LOGIN IN ROLE webhooks_admin;
         SELECT webhooks.tenant_grant('adm', 'acme');",
    )
    .unwrap();
    let acme_ep: String = su
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{user.*}', 'acme')",
            &[&acme_rx.url],
        )
        .unwrap()
        .get(0);
    let platform_ep: String = su
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{user.*}', '*')",
            &[&platform_rx.url],
        )
        .unwrap()
        .get(0);
    su.execute(
        "SELECT webhooks.endpoint_create($1, '{webhook.delivery.dead}', '*')",
        &[&platform_alerts.url],
    )
    .unwrap();
    su.execute(
        "SELECT webhooks.endpoint_create($1, '{webhook.delivery.dead}', 'acme')",
        &[&acme_alerts.url],
    )
    .unwrap();

    let mut a = c.client_as("adm");
    let ev: String = a
        .query_one(
            "SELECT webhooks.webhook_publish('user.created', '{\"id\": 1}')",
            &[],
        )
        .unwrap()
        .get(0);
    // The platform endpoint's delivery dies (three tries on the test schedule).
    let dead_note = wait_for("the platform's dead-letter alert", T, || {
        platform_alerts
            .all()
            .into_iter()
            .find(|r| r.json()["type"] == "webhook.delivery.dead")
    });
    let note = dead_note.json();
    assert_eq!(note["data"]["endpoint_id"], platform_ep.as_str());
    assert_eq!(
        note["tenant_id"], "*",
        "an event about a platform endpoint is the platform's"
    );
    assert_eq!(acme_rx.count(), 1);

    // The tenant's admin sees its own endpoint's delivery of its own event, nothing of the
    // platform endpoint: not its delivery, attempts, errors, answers or dead letters.
    let seen: Vec<String> = a
        .query(
            "SELECT endpoint_id FROM webhooks.deliveries WHERE event_id = $1",
            &[&ev],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, vec![acme_ep.clone()]);
    assert_eq!(
        count(
            &mut a,
            "SELECT count(*) FROM webhooks.attempts WHERE response_body LIKE '%PLATFORM%' OR error LIKE '%localhost%'"
        ),
        0
    );
    assert_eq!(
        count(&mut a, "SELECT count(*) FROM webhooks.dead_letters"),
        0
    );
    assert_eq!(
        count(
            &mut a,
            "SELECT count(*) FROM webhooks.events WHERE type = 'webhook.delivery.dead'"
        ),
        0,
        "nor the platform's operational event about it"
    );
    // Nor is the alert sent to the tenant's own alert receiver.
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        acme_alerts
            .all()
            .iter()
            .all(|r| r.json()["data"]["endpoint_id"] != platform_ep.as_str()),
        "the tenant was told about the platform endpoint"
    );

    // No write on deliveries: not back to pending, not a replay of what is not theirs.
    let platform_delivery: i64 = su
        .query_one(
            "SELECT id FROM webhooks.deliveries WHERE event_id = $1 AND endpoint_id = $2",
            &[&ev, &platform_ep],
        )
        .unwrap()
        .get(0);
    let acme_delivery: i64 = su
        .query_one(
            "SELECT id FROM webhooks.deliveries WHERE event_id = $1 AND endpoint_id = $2",
            &[&ev, &acme_ep],
        )
        .unwrap()
        .get(0);
    for sql in [
        format!("UPDATE webhooks.deliveries SET status = 'pending', next_attempt_at = now(), completed_at = NULL WHERE id = {acme_delivery}"),
        format!("UPDATE webhooks.deliveries SET next_attempt_at = now() WHERE id = {platform_delivery}"),
    ] {
        let e = error_of(a.execute(sql.as_str(), &[]));
        assert!(e.contains("permission denied"), "{sql}: {e}");
    }
    let e = error_of(a.query(
        "SELECT * FROM webhooks.delivery_retry($1)",
        &[&platform_delivery],
    ));
    assert!(e.contains("not found"), "{e}");
    let e = error_of(a.query(
        "SELECT * FROM webhooks.endpoint_recover($1, now() - interval '1 day')",
        &[&platform_ep],
    ));
    assert!(e.contains("not found"), "{e}");
    // Its own succeeded delivery: refused, named; the platform's admin (a superuser) may retry
    // the dead one.
    let e = error_of(a.query(
        "SELECT * FROM webhooks.delivery_retry($1)",
        &[&acme_delivery],
    ));
    assert!(e.contains("already succeeded"), "{e}");
    let status: String = su
        .query_one(
            "SELECT status FROM webhooks.delivery_retry($1)",
            &[&platform_delivery],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "pending");
}

#[test]
fn work_left_for_a_deleted_endpoint_never_reaches_another_tenant_taking_its_id() {
    let c = Cluster::start(&[]);
    let acme_rx = Receiver::ok();
    let globex_rx = Receiver::ok();
    let mut su = c.client();
    su.execute(
        "INSERT INTO webhooks.endpoints (id, tenant_id, url, event_types) VALUES ('ep_shared', 'acme', $1, '{user.*}')",
        &[&acme_rx.url],
    )
    .unwrap();
    // A publish still open when the endpoint is deleted: the cascade cannot see its delivery.
    let mut publisher = c.client();
    let mut tx = publisher.transaction().unwrap();
    let ev: String = tx
        .query_one(
            "SELECT webhooks.webhook_publish('user.created', '{\"secret_of\": \"acme\"}', 'acme')",
            &[],
        )
        .unwrap()
        .get(0);
    su.batch_execute("SELECT webhooks.endpoint_delete('ep_shared')")
        .unwrap();
    // Another tenant's admin creates an endpoint with the same id (ids are the admin's choice).
    su.execute(
        "INSERT INTO webhooks.endpoints (id, tenant_id, url, event_types) VALUES ('ep_shared', 'globex', $1, '{user.*}')",
        &[&globex_rx.url],
    )
    .unwrap();
    tx.commit().unwrap();
    // The orphan is parked, never sent to globex.
    wait_for("the orphan parked", T, || {
        let n = count(
            &mut su,
            &format!(
                "SELECT count(*) FROM webhooks.deliveries WHERE event_id = '{ev}' AND next_attempt_at = 'infinity'"
            ),
        );
        (n == 1).then_some(())
    });
    // A globex event still goes to globex's endpoint; acme's never does.
    su.batch_execute("SELECT webhooks.webhook_publish('user.created', '{\"n\": 2}', 'globex')")
        .unwrap();
    wait_for("globex's own event", T, || {
        (globex_rx.count() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        globex_rx
            .all()
            .iter()
            .all(|r| r.header("webhook-id") != ev.as_str()),
        "acme's event reached globex's endpoint"
    );
    assert_eq!(acme_rx.count(), 0);
    // It stays parked (housekeeping releases an orphan only to its own endpoint, by id and
    // tenant, and deletes it an hour later if that never comes back).
    assert_eq!(
        count(
            &mut su,
            &format!("SELECT count(*) FROM webhooks.deliveries WHERE event_id = '{ev}' AND status = 'pending'")
        ),
        1
    );
}

#[test]
fn an_endpoint_cannot_change_tenant_while_work_waits_for_it() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut su = c.client();
    su.batch_execute(
        "CREATE ROLE platform LOGIN IN ROLE webhooks_admin;
         SELECT webhooks.tenant_grant('platform', '*');
         CREATE ROLE globex_admin LOGIN IN ROLE webhooks_admin;
         SELECT webhooks.tenant_grant('globex_admin', 'globex');",
    )
    .unwrap();
    let ep: String = su
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{user.*}', 'acme')",
            &[&rx.url],
        )
        .unwrap()
        .get(0);
    // Work waits: published, and the endpoint disabled in the same transaction (the worker
    // never sees it enabled): its delivery is parked.
    {
        let mut tx = su.transaction().unwrap();
        tx.batch_execute("SELECT webhooks.webhook_publish('user.created', '{\"id\": 1}', 'acme')")
            .unwrap();
        tx.execute(
            "SELECT webhooks.endpoint_disable($1, 'maintenance')",
            &[&ep],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    // A platform admin (who may see both tenants) moves it to another tenant; the owner gives
    // it another id: both refused, named.
    let mut p = c.client_as("platform");
    for (db, sql) in [
        (
            &mut p,
            "UPDATE webhooks.endpoints SET tenant_id = 'globex' WHERE id = $1",
        ),
        (
            &mut su,
            "UPDATE webhooks.endpoints SET id = 'ep_renamed' WHERE id = $1",
        ),
    ] {
        let e = error_of(db.execute(sql, &[&ep]));
        assert!(
            e.contains("deliveries waiting for tenant \"acme\"") && e.contains(&ep),
            "{sql}: {e}"
        );
    }
    // Once the work is done (delivered to acme's receiver), the move is allowed.
    su.execute("SELECT webhooks.endpoint_enable($1)", &[&ep])
        .unwrap();
    wait_for("the waiting delivery", T, || {
        (rx.count() == 1).then_some(())
    });
    wait_for("recorded", T, || {
        let n = count(
            &mut su,
            "SELECT count(*) FROM webhooks.deliveries WHERE status IN ('pending', 'in_flight')",
        );
        (n == 0).then_some(())
    });
    p.execute(
        "UPDATE webhooks.endpoints SET tenant_id = 'globex' WHERE id = $1",
        &[&ep],
    )
    .unwrap();
    assert_eq!(rx.all()[0].json()["tenant_id"], "acme");
    // The new tenant sees the endpoint, not the history it made for acme.
    let mut g = c.client_as("globex_admin");
    assert_eq!(count(&mut g, "SELECT count(*) FROM webhooks.endpoints"), 1);
    assert_eq!(count(&mut g, "SELECT count(*) FROM webhooks.deliveries"), 0);
    assert_eq!(count(&mut g, "SELECT count(*) FROM webhooks.attempts"), 0);
}

#[test]
fn tenant_bindings_follow_the_role_through_rename_and_end_with_it() {
    // (a short retention: housekeeping, which removes dead bindings, runs every 5 seconds)
    let c = Cluster::start(&["webhooks.retention = '5s'"]);
    let mut su = c.client();
    su.batch_execute(
        "CREATE ROLE alice LOGIN IN ROLE webhooks_admin;
         SELECT webhooks.tenant_grant('alice', 'acme');
         ALTER ROLE alice RENAME TO alice2;",
    )
    .unwrap();
    let scope = |c: &Cluster, role: &str| -> Option<Vec<String>> {
        c.client_as(role)
            .query_one("SELECT webhooks.tenant_scope()", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(scope(&c, "alice2"), Some(vec!["acme".to_string()]));
    let shown: String = su
        .query_one("SELECT role_name::text FROM webhooks.tenant_roles", &[])
        .unwrap()
        .get(0);
    assert_eq!(shown, "alice2", "listed under its current name");
    // Dropped, and a new role takes the name: it inherits nothing.
    su.batch_execute(
        "DROP ROLE alice2;
         CREATE ROLE alice2 LOGIN IN ROLE webhooks_admin;",
    )
    .unwrap();
    let s = scope(&c, "alice2");
    assert!(
        s.as_ref().is_some_and(|s| !s.contains(&"acme".to_string())),
        "{s:?}"
    );
    let e = error_of(
        c.client_as("alice2")
            .batch_execute("SET webhooks.tenant_id = 'acme'; SELECT webhooks.tenant_scope()"),
    );
    assert!(e.contains("not a tenant of role alice2"), "{e}");
    // The dead binding goes with housekeeping (the worker's next pass); tenants stay in use, so
    // an unbound role still sees nothing, not the rows without a tenant.
    su.execute(
        "SELECT webhooks.endpoint_create('https://no-tenant.example.com/h', '{*}', NULL)",
        &[],
    )
    .unwrap();
    wait_for("the dropped role's binding removed", T, || {
        (count(&mut su, "SELECT count(*) FROM webhooks.tenant_roles") == 0).then_some(())
    });
    assert_eq!(scope(&c, "alice2"), Some(vec![]));
    assert_eq!(
        count(
            &mut c.client_as("alice2"),
            "SELECT count(*) FROM webhooks.endpoints"
        ),
        0
    );
}

#[test]
fn synchronous_events_keep_no_data_for_admins_to_read() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut su = c.client();
    su.batch_execute(
        "CREATE ROLE adm LOGIN IN ROLE webhooks_admin;
         SELECT webhooks.tenant_grant('adm', 'acme');",
    )
    .unwrap();
    su.execute(
        "SELECT webhooks.endpoint_create($1, '{email.created}', 'acme')",
        &[&rx.url],
    )
    .unwrap();
    let answer: String = su
        .query_one(
            "SELECT webhooks.webhook_send_sync('email.created',
                 '{\"to\": \"ann@example.com\", \"code\": \"918273\", \"link\": \"https://app.example.com/magic?t=SECRET_LINK\"}',
                 'acme')::text",
            &[],
        )
        .unwrap()
        .get(0);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let ev = answer["event_id"].as_str().unwrap().to_string();
    // The receiver got the code; the database keeps that it was sent and what came back.
    assert!(rx.all()[0].body.contains("918273"));
    let mut a = c.client_as("adm");
    let row = a
        .query_one(
            "SELECT e.data::text, d.status, a.status_code
             FROM webhooks.events e JOIN webhooks.deliveries d ON d.event_id = e.id
             JOIN webhooks.attempts a ON a.delivery_id = d.id WHERE e.id = $1",
            &[&ev],
        )
        .unwrap();
    let (data, status, code): (String, String, Option<i32>) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(data, "{}");
    assert_eq!((status.as_str(), code), ("succeeded", Some(200)));
    assert_eq!(
        count(
            &mut su,
            "SELECT count(*) FROM webhooks.events WHERE data::text LIKE '%918273%' OR data::text LIKE '%SECRET_LINK%'"
        ),
        0
    );
}

/// A tenant's publisher sending a synchronous event learns only of its own tenant's endpoints:
/// a platform endpoint ('*') that also received it is not named in the answers or the errors
/// (0.3.0 returned its id, status and body), though its failure still fails the call. And what
/// a target may be is the server's setting alone: no role, database or session changes it.
#[test]
fn a_tenants_synchronous_send_shows_nothing_of_the_platforms_endpoints() {
    let c = Cluster::start(&[]);
    let acme_rx = Receiver::scripted(|_, _| Reply::Status(200, "{\"acme\": true}"));
    let platform_fails = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fails = std::sync::Arc::clone(&platform_fails);
    let platform_rx = Receiver::scripted(move |_, _| {
        if fails.load(std::sync::atomic::Ordering::Relaxed) {
            Reply::Status(500, "PLATFORM_SECRET_BODY")
        } else {
            Reply::Status(200, "PLATFORM_SECRET_BODY")
        }
    });
    let mut su = c.client();
    su.batch_execute(
        "CREATE ROLE app LOGIN IN ROLE webhooks_publisher;
         SELECT webhooks.tenant_grant('app', 'acme');",
    )
    .unwrap();
    let acme_ep: String = su
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{sms.created}', 'acme')",
            &[&acme_rx.url],
        )
        .unwrap()
        .get(0);
    let platform_ep: String = su
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{sms.created}', '*')",
            &[&platform_rx.url],
        )
        .unwrap()
        .get(0);
    let mut app = c.client_as("app");
    let answer: String = app
        .query_one(
            "SELECT webhooks.webhook_send_sync('sms.created', '{\"code\": \"1\"}')::text",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(platform_rx.count(), 1, "the platform endpoint got it");
    assert!(answer.contains(&acme_ep), "{answer}");
    assert!(
        !answer.contains(&platform_ep) && !answer.contains("PLATFORM_SECRET_BODY"),
        "{answer}"
    );
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["responses"].as_array().map(|a| a.len()), Some(1));
    // A failing platform endpoint fails the tenant's call, unnamed.
    platform_fails.store(true, std::sync::atomic::Ordering::Relaxed);
    let e = error_of(app.query_one(
        "SELECT webhooks.webhook_send_sync('sms.created', '{\"code\": \"2\"}')",
        &[],
    ));
    assert!(e.contains("a platform endpoint failed"), "{e}");
    assert!(
        !e.contains(&platform_ep) && !e.contains("500") && !e.contains("PLATFORM_SECRET_BODY"),
        "{e}"
    );
    let r: String = app
        .query_one(
            "SELECT webhooks.webhook_send_sync_result('sms.created', '{\"code\": \"3\"}')::text",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        r.contains("a platform endpoint failed") && !r.contains(&platform_ep),
        "{r}"
    );
    // The platform's own roles see it all.
    let e = error_of(su.query_one(
        "SELECT webhooks.webhook_send_sync('sms.created', '{\"code\": \"4\"}')",
        &[],
    ));
    assert!(e.contains(&platform_ep) && e.contains("HTTP 500"), "{e}");

    // The outbound policy: refused to every kind of setting but the server's.
    for sql in [
        "ALTER ROLE app SET webhooks.allow_private_targets = on",
        "ALTER DATABASE postgres SET webhooks.allow_private_targets = on",
        "ALTER ROLE ALL SET webhooks.require_https = off",
        "SET webhooks.allow_private_targets = on",
        "SET webhooks.require_https = off",
    ] {
        let e = error_of(su.batch_execute(sql));
        assert!(e.contains("cannot be changed now"), "{sql}: {e}");
    }
}

#[test]
fn a_tenant_admin_neither_locks_the_shared_tables_nor_takes_a_tenant_s_name() {
    // LOCK TABLE needs only UPDATE or DELETE, which admins have on the shared tables, and
    // row-level security does not apply to locks: in 0.3.0 an admin's ACCESS EXCLUSIVE on
    // webhooks.endpoints held every tenant's publishes.
    let c = Cluster::start(&[]);
    let globex_rx = Receiver::ok();
    let mut su = c.client();
    su.batch_execute(
        "CREATE ROLE adm LOGIN IN ROLE webhooks_admin;
         CREATE ROLE app LOGIN IN ROLE webhooks_publisher;
         SELECT webhooks.tenant_grant('adm', 'acme');
         SELECT webhooks.tenant_grant('app', '*');
         SELECT webhooks.event_type_register('thing.created');
         CREATE SCHEMA adm AUTHORIZATION adm;",
    )
    .unwrap();
    su.execute(
        "SELECT webhooks.endpoint_create($1, '{thing.*}', 'globex')",
        &[&globex_rx.url],
    )
    .unwrap();
    let mut adm = c.client_as("adm");
    adm.batch_execute("CREATE VIEW adm.mine AS SELECT id FROM webhooks.endpoints")
        .unwrap();
    for (table, mode) in [
        ("webhooks.endpoints", "ACCESS EXCLUSIVE"),
        ("webhooks.event_types", "EXCLUSIVE"),
        ("webhooks.tenants", "SHARE"),
        ("webhooks.endpoints", "SHARE UPDATE EXCLUSIVE"),
        ("adm.mine", "ACCESS EXCLUSIVE"),
    ] {
        let e = error_of(adm.batch_execute(&format!("BEGIN; LOCK TABLE {table} IN {mode} MODE")));
        assert!(e.contains("LOCK TABLE of webhooks."), "{table} {mode}: {e}");
        adm.batch_execute("ROLLBACK").unwrap();
    }
    // What reads and writes take themselves stays allowed (pg_dump locks ACCESS SHARE).
    adm.batch_execute(
        "BEGIN; LOCK TABLE webhooks.endpoints IN ACCESS SHARE MODE;
                LOCK TABLE webhooks.endpoints IN ROW EXCLUSIVE MODE; ROLLBACK",
    )
    .unwrap();
    let mut app = c.client_as("app");
    app.execute(
        "SELECT webhooks.webhook_publish('thing.created', '{}', 'globex')",
        &[],
    )
    .unwrap();
    wait_for("globex's delivery", T, || {
        (globex_rx.count() == 1).then_some(())
    });
    // The table's owner may.
    su.batch_execute("BEGIN; LOCK TABLE webhooks.endpoints IN ACCESS EXCLUSIVE MODE; ROLLBACK")
        .unwrap();

    // A tenant known only through its events (published for, not yet onboarded): acme's admin
    // may not make it acme's slug, which the platform's receivers would take for it.
    app.execute(
        "SELECT webhooks.webhook_publish('thing.created', '{}', 'initech')",
        &[],
    )
    .unwrap();
    adm.batch_execute("INSERT INTO webhooks.tenants (id, slug) VALUES ('acme', 'acme')")
        .unwrap();
    let e = error_of(adm.execute(
        "UPDATE webhooks.tenants SET slug = 'initech' WHERE id = 'acme'",
        &[],
    ));
    assert!(e.contains("initech"), "{e}");
    adm.execute(
        "UPDATE webhooks.tenants SET slug = 'acme-corp' WHERE id = 'acme'",
        &[],
    )
    .unwrap();
    // The platform onboards initech as usual.
    su.batch_execute(
        "INSERT INTO webhooks.tenants (id, slug) VALUES ('initech', 'initech-inc');
         CREATE ROLE iadm IN ROLE webhooks_admin;
         SELECT webhooks.tenant_grant('iadm', 'initech');",
    )
    .unwrap();
}
