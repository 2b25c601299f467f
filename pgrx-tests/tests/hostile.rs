//! Hostile roles with LOGIN, each in its own session, against a cluster running the worker:
//! a publisher and a tenant admin try to run code as the owner, reach another tenant, call the
//! internals and learn a URL. Every attempt fails with a clear error and leaves no trace.

use std::time::Duration;
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::receiver::Receiver;
use webhooks_e2e::wait_for;

fn error_of(r: Result<u64, postgres::Error>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string()),
    }
}

#[test]
fn hostile_publisher_and_tenant_admin_get_nowhere() {
    let c = Cluster::start(&[]);
    let acme_rx = Receiver::ok();
    let globex_rx = Receiver::ok();
    let mut su = c.client();
    su.batch_execute(
        "CREATE ROLE pub LOGIN IN ROLE webhooks_publisher;
         CREATE ROLE adm LOGIN IN ROLE webhooks_admin;
         CREATE SCHEMA pub AUTHORIZATION pub;
         SELECT webhooks.tenant_grant('pub', 'acme');
         SELECT webhooks.tenant_grant('adm', 'acme');",
    )
    .unwrap();
    let globex_url = format!("{}?token=GLOBEX_SECRET_TOKEN", globex_rx.url);
    su.execute(
        "SELECT webhooks.endpoint_create($1, '{*}', 'acme')",
        &[&acme_rx.url],
    )
    .unwrap();
    let globex_ep: String = su
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{*}', 'globex')",
            &[&globex_url],
        )
        .unwrap()
        .get(0);

    // The publisher: code as the owner through a tracked table's cast.
    let mut p = c.client_as("pub");
    p.batch_execute(
        "CREATE TYPE pub.mood AS ENUM ('up');
         CREATE FUNCTION pub.mood_json(pub.mood) RETURNS json LANGUAGE plpgsql AS
           $f$ BEGIN EXECUTE 'ALTER ROLE pub SUPERUSER'; RETURN '\"x\"'::json; END $f$;
         CREATE CAST (pub.mood AS json) WITH FUNCTION pub.mood_json(pub.mood);
         CREATE TABLE pub.users (id int PRIMARY KEY, tenant text, m pub.mood);
         SELECT webhooks.track_table('pub.users', 'user', tenant_column => 'tenant');",
    )
    .unwrap();
    let e = error_of(p.execute("INSERT INTO pub.users VALUES (1, 'acme', 'up')", &[]));
    assert!(
        e.contains("must be superuser") || e.contains("permission denied"),
        "{e}"
    );
    // Another tenant, by argument or by setting.
    let e = error_of(p.execute(
        "SELECT webhooks.webhook_publish('user.created', '{}', 'globex')",
        &[],
    ));
    assert!(e.contains("cannot publish for tenant_id \"globex\""), "{e}");
    let e = error_of(
        p.batch_execute(
            "SET webhooks.tenant_id = 'globex'; SELECT webhooks.webhook_publish('user.created', '{}')",
        )
        .map(|_| 0),
    );
    assert!(e.contains("not a tenant of role pub"), "{e}");
    p.batch_execute("RESET webhooks.tenant_id").unwrap();
    // The internals and the endpoints.
    for sql in [
        "SELECT * FROM webhooks_internal._claim(100000, '100 years', true)",
        "SELECT webhooks_internal._publish('user.created', '{}', 'globex', NULL, NULL, NULL)",
        "SELECT url FROM webhooks.endpoints",
        "SELECT * FROM webhooks.deliveries",
    ] {
        let e = error_of(p.execute(sql, &[]));
        assert!(e.contains("permission denied"), "{sql}: {e}");
    }
    // The tenant admin: another tenant's rows with the setting reset, changed or spoofed.
    let mut a = c.client_as("adm");
    for setup in ["RESET webhooks.tenant_id", "SET webhooks.tenant_id = ''"] {
        a.batch_execute(setup).unwrap();
        let urls: Vec<String> = a
            .query("SELECT url FROM webhooks.endpoints", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(urls, vec![acme_rx.url.clone()], "{setup}");
    }
    let e = error_of(
        a.batch_execute(
            "SET webhooks.tenant_id = 'globex'; SELECT count(*) FROM webhooks.endpoints",
        )
        .map(|_| 0),
    );
    assert!(e.contains("not a tenant of role adm"), "{e}");
    a.batch_execute("RESET webhooks.tenant_id").unwrap();
    let n = a
        .execute(
            "UPDATE webhooks.endpoints SET url = 'https://evil.example.com/' WHERE id = $1",
            &[&globex_ep],
        )
        .unwrap();
    assert_eq!(n, 0, "another tenant's endpoint is invisible");
    let e = error_of(
        a.execute("SELECT webhooks.tenant_grant('adm', '*')", &[])
            .map(|_| 0),
    );
    assert!(e.contains("only a platform admin"), "{e}");

    // Nothing leaked, nothing changed: globex got nothing, acme got only acme's.
    let mut p2 = c.client_as("pub");
    p2.execute("SELECT webhooks.webhook_publish('user.created', '{}')", &[])
        .unwrap();
    wait_for(
        "acme's own event delivered",
        Duration::from_secs(30),
        || (acme_rx.count() == 1).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(globex_rx.count(), 0);
    let (superuser, url): (bool, String) = su
        .query_one(
            "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = 'pub'), (SELECT url FROM webhooks.endpoints WHERE id = $1)",
            &[&globex_ep],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(!superuser);
    assert_eq!(url, globex_url);
    let stars: i64 = su
        .query_one(
            "SELECT count(*) FROM webhooks.tenant_roles WHERE tenant_id = '*'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stars, 0);
}

/// The entry points find the extension's owner without anything the caller can define: an
/// `=` of the caller's, first on its search_path, must not make another extension's superuser
/// owner pass for the owner (the calling role would then look like that superuser).
#[test]
fn a_shadowed_operator_cannot_change_who_the_api_acts_for() {
    let c = Cluster::start(&[]);
    let mut su = c.client();
    su.batch_execute(
        "CREATE ROLE other_su SUPERUSER;
         SET ROLE other_su; CREATE EXTENSION pgcrypto; RESET ROLE;
         CREATE ROLE mallory LOGIN IN ROLE webhooks_admin;
         CREATE SCHEMA mal AUTHORIZATION mallory;
         SELECT webhooks.tenant_grant('mallory', 'acme');",
    )
    .unwrap();
    su.execute(
        "SELECT webhooks.endpoint_create('https://globex.example.com/h?token=SECRET', '{*}', 'globex')",
        &[],
    )
    .unwrap();
    // A fresh session: nothing cached yet.
    let mut m = c.client_as("mallory");
    m.batch_execute(
        "CREATE FUNCTION mal.pick(oid, oid) RETURNS bool LANGUAGE sql SET search_path = pg_catalog
           AS $$ SELECT $1 OPERATOR(pg_catalog.=) (SELECT oid FROM pg_extension WHERE extname = 'pgcrypto') $$;
         CREATE OPERATOR mal.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = mal.pick);
         SET search_path = mal, pg_catalog;",
    )
    .unwrap();
    let _ = m.query_one("SELECT webhooks.current_tenant()", &[]);
    m.batch_execute("RESET search_path").unwrap();
    let e = m
        .batch_execute("SELECT webhooks.tenant_grant('mallory', '*')")
        .unwrap_err();
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("only a platform admin"), "{e:?}");
    let n: i64 = m
        .query_one("SELECT count(*) FROM webhooks.endpoints", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "globex's endpoint stays invisible");
}

/// DROP DATABASE (and a rename or copy of a database) must find no worker connected to it, so
/// our hook asks them to leave first: only for a caller PostgreSQL then lets do it. Refused
/// statements in a loop stopped any database's delivery (and made requests in flight go again).
#[test]
fn a_role_that_may_not_drop_a_database_cannot_stop_its_workers() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut su = c.client();
    su.batch_execute("CREATE ROLE nobody LOGIN; CREATE ROLE maker LOGIN CREATEDB")
        .unwrap();
    c.endpoint(&mut su, &rx.url, &["user.*"]);
    let pid = wait_for("the worker", Duration::from_secs(30), || {
        c.worker_pid(&mut su)
    });
    // (from another database: connected to postgres itself, the refusal would have another
    // reason than the one tested)
    su.batch_execute("CREATE DATABASE other").unwrap();
    let elsewhere = |user: &str| {
        postgres::Client::connect(
            &format!("host=127.0.0.1 port={} user={user} dbname=other", c.port),
            postgres::NoTls,
        )
        .unwrap()
    };
    let (mut nobody, mut maker) = (elsewhere("nobody"), elsewhere("maker"));
    for _ in 0..3 {
        for (maker_asks, sql, refusal) in [
            (false, "DROP DATABASE postgres", "must be owner"),
            (
                false,
                "DROP DATABASE postgres WITH (FORCE)",
                "must be owner",
            ),
            (
                false,
                "ALTER DATABASE postgres RENAME TO elsewhere",
                "must be owner",
            ),
            (
                false,
                "CREATE DATABASE copy TEMPLATE postgres",
                "permission denied to create database",
            ),
            (
                true,
                "CREATE DATABASE copy TEMPLATE postgres",
                "permission denied to copy database",
            ),
            (
                true,
                "ALTER DATABASE postgres RENAME TO elsewhere",
                "must be owner",
            ),
        ] {
            let who = if maker_asks { &mut maker } else { &mut nobody };
            let e = error_of(who.execute(sql, &[]));
            assert!(e.contains(refusal), "{sql}: {e}");
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        c.worker_pid(&mut su),
        Some(pid),
        "the worker was never asked to leave"
    );
    su.execute("SELECT webhooks.webhook_publish('user.created', '{}')", &[])
        .unwrap();
    wait_for("the delivery", Duration::from_secs(5), || {
        (rx.count() == 1).then_some(())
    });
}
