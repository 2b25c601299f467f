//! Running it for years: ALTER EXTENSION UPDATE from the 0.1.0 and 0.2.0 that shipped (their
//! install scripts are kept in sql/versions/), and pg_dump/pg_restore of a database that uses
//! the extension.

use std::collections::HashSet;
use std::time::Duration;
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::receiver::Receiver;
use webhooks_e2e::wait_for;

const T: Duration = Duration::from_secs(30);

/// The extension's version, as its Cargo.toml says.
fn current_version() -> String {
    include_str!("../../Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("the extension's Cargo.toml names its version")
        .to_string()
}

/// The extension's whole schema as pg_upgrade would recreate it (binary-upgrade mode is the
/// one where pg_dump writes out an extension's members), minus what differs between any two
/// databases: oids, transaction ids, sequence positions, and the users' own tables.
fn extension_schema(c: &Cluster, db: &str) -> String {
    c.tool(
        "pg_dump",
        &["--schema-only", "--binary-upgrade", "-T", "public.*", db],
    )
    .lines()
    .filter(|l| {
        !(l.is_empty()
            || l.starts_with("--")
            || l.contains("binary_upgrade_set")
            || l.contains("relfrozenxid")
            || l.starts_with("\\restrict")
            || l.starts_with("\\unrestrict")
            || (l.starts_with("WHERE oid = '") && l.ends_with("';")))
    })
    .map(|l| {
        if l.contains("binary_upgrade_create_empty_extension") {
            // The config tables' oids, in the one line that lists them.
            let start = l.find("'{").unwrap_or(0);
            let end = l[start..].find("}'").map(|e| start + e).unwrap_or(start);
            format!("{}{}", &l[..start], &l[end..])
        } else if l.contains("pg_catalog.setval(") {
            l.split(',').next().unwrap_or(l).to_string()
        } else {
            l.to_string()
        }
    })
    .collect::<Vec<_>>()
    .join("\n")
}

fn first_difference(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for i in 0..a.len().max(b.len()) {
        if a.get(i) != b.get(i) {
            let from = i.saturating_sub(3);
            return format!(
                "line {i}:\nupgraded:\n{}\nfresh:\n{}",
                a[from.min(a.len())..(i + 3).min(a.len())].join("\n"),
                b[from.min(b.len())..(i + 3).min(b.len())].join("\n")
            );
        }
    }
    String::new()
}

#[test]
fn alter_extension_update_from_0_1_0_keeps_the_work_and_builds_the_same_schema_as_a_fresh_install()
{
    let c = Cluster::start_bare(&[]);
    let rx = Receiver::ok();
    let mut db = c.client();

    // A 0.1.0 database as 0.1.0's own functions built it: an endpoint, a tracked table, events,
    // and deliveries in every state. The library is 0.2.0 already (installed, restarted).
    db.batch_execute("CREATE EXTENSION webhooks VERSION '0.1.0'")
        .unwrap();
    let ep: String = db
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{user.*}')",
            &[&rx.url],
        )
        .unwrap()
        .get(0);
    db.batch_execute(
        "CREATE TABLE users (id int PRIMARY KEY, email text, password_hash text, api_token text);
         SELECT webhooks.track_table('users', 'user', '{password_hash}');
         INSERT INTO users VALUES (1, 'a@example.com', 'h1', 't1'), (2, 'b@example.com', 'h2', 't2');",
    )
    .unwrap();
    let published: String = db
        .query_one(
            "SELECT webhooks.webhook_publish('user.signed_in', '{\"user\": 1}')",
            &[],
        )
        .unwrap()
        .get(0);
    // Two more made history before the upgrade: one succeeded, one dead-lettered.
    db.batch_execute(
        "INSERT INTO users VALUES (3, 'c@example.com', 'h3', 't3'), (4, 'd@example.com', 'h4', 't4');
         UPDATE webhooks.deliveries SET status = 'succeeded', attempts = 1, completed_at = now()
          WHERE id = (SELECT max(id) - 1 FROM webhooks.deliveries);
         UPDATE webhooks.deliveries SET status = 'dead', attempts = 6, completed_at = now(), last_error = 'gave up'
          WHERE id = (SELECT max(id) FROM webhooks.deliveries);",
    )
    .unwrap();
    let pending: Vec<String> = db
        .query(
            "SELECT event_id FROM webhooks.deliveries WHERE status = 'pending' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        pending.len(),
        3,
        "two row events and one published event wait"
    );
    assert!(pending.contains(&published));

    // The 0.2.0 worker does not touch a 0.1.0 schema: it waits, and says why.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        rx.all().is_empty(),
        "nothing is sent before ALTER EXTENSION UPDATE"
    );
    wait_for("the worker's note in the log", T, || {
        c.log()
            .contains("the extension in this database is 0.1.0")
            .then_some(())
    });

    // A user's object built on a 0.1.0 function stops the upgrade, named, before any change.
    db.batch_execute("CREATE VIEW my_status AS SELECT * FROM webhooks.status()")
        .unwrap();
    let blocked = db
        .batch_execute("ALTER EXTENSION webhooks UPDATE")
        .unwrap_err();
    let msg = blocked
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("view public.my_status"), "{msg}");
    db.batch_execute("DROP VIEW my_status").unwrap();

    db.batch_execute("ALTER EXTENSION webhooks UPDATE").unwrap();
    let v: String = db
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'webhooks'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        v,
        current_version(),
        "through 0.2.0 and 0.3.0 to the current version"
    );

    // What waited is delivered; history is still there.
    let got = wait_for("the pending deliveries", T, || {
        let ids: HashSet<String> = rx
            .all()
            .iter()
            .map(|r| r.header("webhook-id").to_string())
            .collect();
        pending.iter().all(|p| ids.contains(p)).then_some(ids)
    });
    assert_eq!(got.len(), 3, "exactly the pending ones: {got:?}");
    let states: Vec<(String, i64)> = db
        .query(
            "SELECT status, count(*) FROM webhooks.deliveries GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    wait_for("the outcomes recorded", T, || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM webhooks.deliveries WHERE status = 'succeeded'",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 4).then_some(())
    });
    assert!(
        states.contains(&("dead".to_string(), 1)),
        "the dead-lettered delivery is kept: {states:?}"
    );
    let dead: String = db
        .query_one(
            "SELECT last_error FROM webhooks.dead_letters WHERE endpoint_id = $1",
            &[&ep],
        )
        .unwrap()
        .get(0);
    assert_eq!(dead, "gave up");

    // The tracked table is tracked the 0.2.0 way: same entity and exclusions, plus the
    // secret-looking column 0.1.0 only warned about.
    let tracked: (String, Vec<String>) = db
        .query_one(
            "SELECT entity, auto_excluded FROM webhooks.tracked_tables WHERE relid = 'users'::regclass",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(tracked, ("user".to_string(), vec!["api_token".to_string()]));
    db.batch_execute("INSERT INTO users VALUES (5, 'e@example.com', 'h5', 't5')")
        .unwrap();
    let row = wait_for("the new row event", T, || {
        rx.all()
            .into_iter()
            .find(|r| r.json()["data"]["user"]["id"] == 5)
    });
    let user = &row.json()["data"]["user"];
    assert_eq!(user["email"], "e@example.com");
    assert!(user.get("password_hash").is_none() && user.get("api_token").is_none());

    // The same schema as a fresh install: tables, columns and their order, constraints,
    // indexes, functions, views, triggers, policies, grants and comments.
    db.batch_execute("CREATE DATABASE fresh").unwrap();
    let mut fresh = postgres::Client::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname=fresh", c.port),
        postgres::NoTls,
    )
    .unwrap();
    fresh.batch_execute("CREATE EXTENSION webhooks").unwrap();
    let (upgraded, new) = (
        extension_schema(&c, "postgres"),
        extension_schema(&c, "fresh"),
    );
    assert!(
        upgraded.contains("CREATE TABLE webhooks.endpoints") && upgraded.len() > 20_000,
        "the dump lists the extension's members"
    );
    assert!(
        upgraded == new,
        "upgraded and fresh schemas differ at {}",
        first_difference(&upgraded, &new)
    );
}

#[test]
fn alter_extension_update_from_0_2_0_keeps_work_bindings_and_tracking_and_closes_its_holes() {
    let c = Cluster::start_bare(&[]);
    let rx = Receiver::ok();
    let platform_rx = Receiver::ok();
    let mut db = c.client();
    db.batch_execute("CREATE EXTENSION webhooks VERSION '0.2.0'")
        .unwrap();
    // A populated 0.2.0: tenants bound by name (one of them to a role since dropped), an acme
    // endpoint and a platform one, a tracked table, a synchronous event with its code, and
    // deliveries waiting (published while the endpoints were disabled, so nothing went out).
    db.batch_execute(
        "CREATE ROLE adm LOGIN IN ROLE webhooks_admin;
         CREATE ROLE gone LOGIN;
         CREATE ROLE \"Acme Ops\" IN ROLE webhooks_admin;
         CREATE ROLE \"sa@proj.iam\" IN ROLE webhooks_admin;
         CREATE ROLE acme;
         SELECT webhooks.tenant_grant('adm', 'acme');
         SELECT webhooks.tenant_grant('gone', 'acme');
         SELECT webhooks.tenant_grant('Acme Ops', 'acme');
         SELECT webhooks.tenant_grant('sa@proj.iam', 'globex');
         DROP ROLE gone;
         CREATE TABLE users (id int PRIMARY KEY, tenant text, email text, password_hash text);
         SELECT webhooks.track_table('users', 'user', '{password_hash}', 'tenant');",
    )
    .unwrap();
    let ep: String = db
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{user.*,email.created}', 'acme')",
            &[&rx.url],
        )
        .unwrap()
        .get(0);
    let platform: String = db
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{user.*}', '*')",
            &[&platform_rx.url],
        )
        .unwrap()
        .get(0);
    db.batch_execute(
        "SELECT webhooks.webhook_send_sync('email.created', '{\"code\": \"424242\"}', 'acme')",
    )
    .unwrap();
    // 0.2.0 let an endpoint change tenant while work waited for it: acme's event waits for an
    // endpoint that globex now has.
    let moved_rx = Receiver::ok();
    let moved: String = db
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{password.*}', 'acme')",
            &[&moved_rx.url],
        )
        .unwrap()
        .get(0);
    {
        let mut tx = db.transaction().unwrap();
        tx.batch_execute(
            "SELECT webhooks.webhook_publish('password.updated', '{\"user\": 1}', 'acme')",
        )
        .unwrap();
        tx.execute("SELECT webhooks.endpoint_disable($1)", &[&moved])
            .unwrap();
        tx.execute(
            "UPDATE webhooks.endpoints SET tenant_id = 'globex' WHERE id = $1",
            &[&moved],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    {
        let mut tx = db.transaction().unwrap();
        tx.batch_execute("INSERT INTO users VALUES (1, 'acme', 'a@example.com', 'h1')")
            .unwrap();
        tx.execute("SELECT webhooks.endpoint_disable($1)", &[&ep])
            .unwrap();
        tx.execute("SELECT webhooks.endpoint_disable($1)", &[&platform])
            .unwrap();
        tx.commit().unwrap();
    }
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        rx.count() == 1 && platform_rx.count() == 0,
        "only the sync send went out"
    );

    db.batch_execute("ALTER EXTENSION webhooks UPDATE").unwrap();
    let v: String = db
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'webhooks'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, current_version());
    // Deliveries know their endpoint's tenant; bindings are the roles', the dropped one's gone.
    let tenants: Vec<(String, Option<String>)> = db
        .query(
            "SELECT endpoint_id, endpoint_tenant FROM webhooks.deliveries WHERE NOT sync AND endpoint_id <> $1 ORDER BY endpoint_id",
            &[&moved],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut want = vec![
        (ep.clone(), Some("acme".to_string())),
        (platform.clone(), Some("*".to_string())),
    ];
    want.sort();
    assert_eq!(tenants, want);
    let mut bound: Vec<String> = db
        .query(
            "SELECT role_name::text || ' ' || tenant_id FROM webhooks.tenant_roles",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    bound.sort();
    assert_eq!(
        bound,
        vec![
            "\"Acme Ops\" acme".to_string(),
            "\"sa@proj.iam\" globex".to_string(),
            "adm acme".to_string()
        ],
        "each binding kept by its own role (the role acme gets nothing)"
    );
    assert_eq!(
        db.query_one(
            "SELECT count(*) FROM webhooks.events WHERE data::text LIKE '%424242%'",
            &[]
        )
        .unwrap()
        .get::<_, i64>(0),
        0,
        "the sync event's code is not kept"
    );
    // The admin reads its tenant's delivery, not the platform endpoint's, and writes none.
    let mut a = c.client_as("adm");
    let seen: Vec<String> = a
        .query(
            "SELECT endpoint_id FROM webhooks.deliveries WHERE NOT sync",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, vec![ep.clone()]);
    assert!(a
        .batch_execute("UPDATE webhooks.deliveries SET next_attempt_at = now()")
        .is_err());
    // The waiting work goes out once enabled; the table is still tracked.
    db.execute("SELECT webhooks.endpoint_enable($1)", &[&ep])
        .unwrap();
    db.execute("SELECT webhooks.endpoint_enable($1)", &[&platform])
        .unwrap();
    db.execute("SELECT webhooks.endpoint_enable($1)", &[&moved])
        .unwrap();
    wait_for("the waiting row event at both", T, || {
        (rx.count() == 2 && platform_rx.count() == 1).then_some(())
    });
    // acme's work for the endpoint globex took over stays parked, never sent there.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        moved_rx.count(),
        0,
        "acme's event reached globex's endpoint"
    );
    db.batch_execute("INSERT INTO users VALUES (2, 'acme', 'b@example.com', 'h2')")
        .unwrap();
    let row = wait_for("a new row event", T, || {
        rx.all()
            .into_iter()
            .find(|r| r.json()["data"]["user"]["id"] == 2)
    });
    assert!(row.json()["data"]["user"].get("password_hash").is_none());
    // 0.2.0's row trigger became 0.3.0's statement triggers; a bulk UPDATE publishes each row.
    let triggers: Vec<String> = db
        .query(
            "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'users'::regclass AND NOT tgisinternal ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        triggers,
        [
            "webhooks_row_delete",
            "webhooks_row_insert",
            "webhooks_row_update"
        ]
    );
    db.batch_execute("UPDATE users SET email = 'x' || email")
        .unwrap();
    wait_for("both rows' updates", T, || {
        (rx.all()
            .iter()
            .filter(|r| r.header("webhook-event-type") == "user.updated")
            .count()
            == 2)
            .then_some(())
    });

    // The same schema as a fresh install.
    db.batch_execute("CREATE DATABASE fresh").unwrap();
    let mut fresh = postgres::Client::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname=fresh", c.port),
        postgres::NoTls,
    )
    .unwrap();
    fresh.batch_execute("CREATE EXTENSION webhooks").unwrap();
    let (upgraded, new) = (
        extension_schema(&c, "postgres"),
        extension_schema(&c, "fresh"),
    );
    assert!(
        upgraded == new,
        "upgraded and fresh schemas differ at {}",
        first_difference(&upgraded, &new)
    );
}

#[test]
fn pg_dump_and_pg_restore_keep_endpoints_the_catalogue_and_undelivered_work() {
    let major = webhooks_e2e::cluster::major();
    webhooks_e2e::restore::dump_and_restore(major, major);
}

#[test]
fn alter_extension_update_from_0_3_0_keeps_the_work_and_hardens_what_it_had() {
    let c = Cluster::start_bare(&[]);
    let rx = Receiver::ok();
    let loose_rx = Receiver::ok();
    let mut db = c.client();
    db.batch_execute("CREATE EXTENSION webhooks VERSION '0.3.0'")
        .unwrap();
    // A populated 0.3.0: an endpoint with a filter 0.4.0 accepts, one with a filter it refuses
    // (nested .**), a tracked table with a condition and a column kept out for its name, and
    // work waiting (the 0.4.0 library's worker sends nothing to a 0.3.0 schema): single
    // deliveries and a bulk publish's fanout.
    db.batch_execute(
        "CREATE TABLE users (id int PRIMARY KEY, email text, api_token text, plan text);
         SELECT webhooks.track_table('users', 'user', condition => 'NEW.plan IS DISTINCT FROM ''test''');",
    )
    .unwrap();
    let (ep, secret): (String, String) = {
        let r = db
            .query_one(
                "SELECT id, secret FROM webhooks.endpoint_create($1, '{user.*}', filter => '$.data.n > 0 || exists($.data.user)')",
                &[&rx.url],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let v1a: String = db
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{organization.*}', signature => 'v1a')",
            &[&rx.url],
        )
        .unwrap()
        .get(0);
    let v1a_private: String = db
        .query_one(
            "SELECT private_key FROM webhooks_internal.signing_keys WHERE endpoint_id = $1",
            &[&v1a],
        )
        .unwrap()
        .get(0);
    let loose: String = db
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{user.*}', filter => 'exists($.** ? (exists(@.** ? (@ == \"never\"))))')",
            &[&loose_rx.url],
        )
        .unwrap()
        .get(0);
    db.batch_execute(
        "INSERT INTO users VALUES (1, 'a@example.com', 'tok-1', 'free'), (2, 'b@example.com', 'tok-2', 'test');
         SELECT webhooks.webhook_publish('user.signed_in', '{\"n\": 1}');
         SELECT webhooks.webhook_publish('user.signed_in', '{\"n\": 0}');
         SELECT webhooks.webhook_publish_many('user.created',
             ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 120) g));",
    )
    .unwrap();
    let fanouts: i64 = db
        .query_one("SELECT count(*) FROM webhooks_internal.fanouts", &[])
        .unwrap()
        .get(0);
    assert!(fanouts > 0, "the bulk publish waits as a fanout");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        rx.count() + loose_rx.count(),
        0,
        "nothing sent to a 0.3.0 schema"
    );

    db.batch_execute("ALTER EXTENSION webhooks UPDATE").unwrap();
    let v: String = db
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'webhooks'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, current_version());
    assert!(
        c.log().contains(&loose) && c.log().contains("not evaluated"),
        "the upgrade names the endpoint whose filter it no longer evaluates"
    );
    let weights: Vec<(String, Option<i32>)> = db
        .query(
            "SELECT id, filter_weight FROM webhooks.endpoints ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut want = vec![
        (ep.clone(), Some(2)),
        (loose.clone(), None),
        (v1a.clone(), None),
    ];
    want.sort();
    assert_eq!(weights, want);
    // 0.3.0 stored secrets in the clear: the update sealed every one, and they open to what
    // they were (the requests below verify with the secret 0.3.0 handed out).
    let plain: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM webhooks.endpoints WHERE secret NOT LIKE 'whenc1:%')
                  + (SELECT count(*) FROM webhooks_internal.signing_keys WHERE private_key NOT LIKE 'whenc1:%')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(plain, 0, "no secret left in the clear");
    let opened: String = db
        .query_one(
            "SELECT webhooks_internal._open(private_key) FROM webhooks_internal.signing_keys WHERE endpoint_id = $1",
            &[&v1a],
        )
        .unwrap()
        .get(0);
    assert_eq!(opened, v1a_private);
    let now: String = db
        .query_one("SELECT webhooks.endpoint_secret($1)", &[&ep])
        .unwrap()
        .get(0);
    assert_eq!(now, secret);
    // Everything that waited goes out (0.3.0 filtered it when it was published: the row event of
    // user 1, n = 1 and the bulk publish's 120 passed one filter, nothing the other); a new event
    // now reaches the endpoint whose filter is no longer evaluated, unfiltered.
    wait_for("what waited", T, || (rx.count() == 122).then_some(()));
    assert!(
        rx.all()
            .iter()
            .all(|r| webhooks_e2e::verify_signature(&secret, r)),
        "signed with the secret 0.3.0 handed out"
    );
    db.batch_execute("SELECT webhooks.webhook_publish('user.signed_in', '{\"n\": 5}')")
        .unwrap();
    wait_for("the new event at both", T, || {
        (rx.count() == 123 && loose_rx.count() == 1).then_some(())
    });
    // The column 0.3.0 kept out for its name stays out under another name.
    db.batch_execute(
        "ALTER TABLE users RENAME COLUMN api_token TO tk;
         INSERT INTO users VALUES (3, 'c@example.com', 'tok-3', 'free');",
    )
    .unwrap();
    let row = wait_for("the new row event", T, || {
        rx.all()
            .into_iter()
            .find(|r| r.json()["data"]["user"]["id"] == 3)
    });
    let user = &row.json()["data"]["user"];
    assert_eq!(user["email"], "c@example.com");
    assert!(
        user.get("tk").is_none() && user.get("api_token").is_none(),
        "{user}"
    );
    // The condition still holds.
    db.batch_execute("INSERT INTO users VALUES (4, 'd@example.com', 'tok-4', 'test')")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!rx.all().iter().any(|r| r.json()["data"]["user"]["id"] == 4));

    // The same schema as a fresh install.
    db.batch_execute("CREATE DATABASE fresh").unwrap();
    let mut fresh = postgres::Client::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname=fresh", c.port),
        postgres::NoTls,
    )
    .unwrap();
    fresh.batch_execute("CREATE EXTENSION webhooks").unwrap();
    let (upgraded, new) = (
        extension_schema(&c, "postgres"),
        extension_schema(&c, "fresh"),
    );
    assert!(
        upgraded == new,
        "upgraded and fresh schemas differ at {}",
        first_difference(&upgraded, &new)
    );
}
