//! What a database owner (or any role with CREATEDB) can make our processes run. It may set a
//! search_path for its database (ALTER DATABASE, ALTER ROLE ALL IN DATABASE) that puts its own
//! operators, functions and types before pg_catalog's; the worker connects to every database as
//! a superuser and receives those settings, and superusers call our functions from sessions with
//! such a path. None of that may ever run the owner's code as anyone but the owner, while
//! deliveries go on as usual.

use std::time::Duration;
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::receiver::{Receiver, Reply};
use webhooks_e2e::{trojan, wait_for};

const T: Duration = Duration::from_secs(40);

fn connect(c: &Cluster, user: &str, db: &str) -> postgres::Client {
    postgres::Client::connect(
        &format!("host=127.0.0.1 port={} user={user} dbname={db}", c.port),
        postgres::NoTls,
    )
    .unwrap()
}

fn commits(pg: &mut postgres::Client, db: &str) -> i64 {
    pg.query_one(
        "SELECT coalesce(xact_commit, 0) FROM pg_stat_database WHERE datname = $1",
        &[&db],
    )
    .unwrap()
    .get(0)
}

#[test]
fn a_createdb_role_cannot_become_superuser_through_the_worker() {
    // Every database is served (the default): the launcher's worker visits each new one.
    let c = Cluster::start_bare(&["webhooks.database = ''"]);
    let mut pg = c.client();
    pg.batch_execute("CREATE ROLE mallory LOGIN CREATEDB")
        .unwrap();
    let mut m = c.client_as("mallory");
    m.batch_execute("CREATE DATABASE mine").unwrap();
    drop(m);
    let mut mine = connect(&c, "mallory", "mine");
    trojan::plant(&mut mine, "mallory");
    mine.batch_execute(&format!(
        "ALTER DATABASE mine SET search_path = {p}; ALTER ROLE ALL IN DATABASE mine SET search_path = {p}",
        p = trojan::PATH
    ))
    .unwrap();
    drop(mine);
    std::thread::sleep(Duration::from_secs(1));
    // The launcher's worker comes, finds no extension and leaves: its transactions show in the
    // database's statistics when it has gone (no session of ours is connected meanwhile). A
    // CREATE EXTENSION committed anywhere makes the launcher look at every database again, in
    // case its first look came before the settings.
    let before = commits(&mut pg, "mine");
    pg.batch_execute("CREATE DATABASE other").unwrap();
    connect(&c, "postgres", "other")
        .batch_execute("CREATE EXTENSION webhooks")
        .unwrap();
    wait_for("the launcher's worker to visit the database", T, || {
        (commits(&mut pg, "mine") > before).then_some(())
    });
    std::thread::sleep(Duration::from_secs(6));
    let mut mine = connect(&c, "mallory", "mine");
    assert!(
        !trojan::is_superuser(&mut pg, "mallory"),
        "mallory became superuser"
    );
    let fired = trojan::fired(&c, &mut mine);
    assert!(fired.is_empty(), "trojans ran: {fired:?}");
}

#[test]
fn a_database_owner_cannot_run_code_as_the_worker_or_a_superuser_while_deliveries_flow() {
    let c = Cluster::start_bare(&[
        "webhooks.database = ''",
        "webhooks.retention = '2s'",
        "webhooks.dead_retention = '2s'",
    ]);
    let ok = Receiver::ok();
    let gone = Receiver::scripted(|_, _| Reply::Status(410, "gone"));
    let failing = Receiver::scripted(|_, _| Reply::Status(500, "no"));
    let mut pg = c.client();
    pg.batch_execute("CREATE ROLE alice LOGIN").unwrap();
    pg.batch_execute("CREATE DATABASE app OWNER alice").unwrap();
    let mut su = connect(&c, "postgres", "app");
    su.batch_execute(
        "CREATE EXTENSION webhooks;
         CREATE ROLE bob LOGIN IN ROLE webhooks_publisher;
         GRANT webhooks_admin TO alice;",
    )
    .unwrap();

    // The owner's trojans, and its database's settings that put them first: for every role,
    // for every role in this database, and (as a superuser may) for the worker's own role.
    let mut alice = connect(&c, "alice", "app");
    trojan::plant(&mut alice, "alice");
    alice
        .batch_execute(&format!(
            "ALTER DATABASE app SET search_path = {p}; ALTER ROLE ALL IN DATABASE app SET search_path = {p};
             CREATE TABLE public.users (id int PRIMARY KEY, email text, password_hash text);
             GRANT INSERT, UPDATE, DELETE, SELECT ON public.users TO bob;
             SELECT webhooks.track_table('public.users', 'user');",
            p = trojan::PATH
        ))
        .unwrap();
    su.batch_execute(&format!(
        "ALTER ROLE postgres IN DATABASE app SET search_path = {}",
        trojan::PATH
    ))
    .unwrap();
    drop((su, alice));
    // The workers connect again with those settings.
    c.pg_ctl(&["restart", "-w", "-t", "60"]);
    // `su` is a superuser at work with that path: it only calls our functions, with literal
    // arguments (anything else it wrote would reach the trojans itself). `chk` reads the
    // results with a path of its own.
    let mut su = connect(&c, "postgres", "app");
    let path: String = su.query_one("SHOW search_path", &[]).unwrap().get(0);
    assert!(path.starts_with("trojan"), "{path}");
    let mut chk = connect(&c, "postgres", "app");
    chk.batch_execute("SET search_path = pg_catalog, public")
        .unwrap();
    let count =
        |chk: &mut postgres::Client, sql: &str| -> i64 { chk.query_one(sql, &[]).unwrap().get(0) };

    let created = |su: &mut postgres::Client, url: &str, types: &str| -> String {
        su.query_one(
            &format!("SELECT id FROM webhooks.endpoint_create($1, '{types}')"),
            &[&url],
        )
        .unwrap()
        .get(0)
    };
    let ok_ep = created(&mut su, &ok.url, "{user.*}");
    let ops_ep = created(&mut su, &ok.url, "{webhook.*}");
    created(&mut su, &gone.url, "{user.*}");
    let failing_ep = created(&mut su, &failing.url, "{user.*}");
    su.batch_execute(&format!(
        "SELECT webhooks.event_type_register('user.reviewed', 'reviewed');
         SELECT webhooks.endpoint_update('{ok_ep}', description => 'ok', headers => '{{\"x-a\": \"b\"}}',
                                         filter => '$.type starts with \"user.\"');
         SELECT webhooks.endpoint_update('{ops_ep}', filter => '$.data.endpoint_id starts with \"ep\"');
         SELECT webhooks.endpoint_disable('{ok_ep}', 'a moment');
         SELECT webhooks.endpoint_enable('{ok_ep}');
         SELECT webhooks.endpoint_rotate_secret('{ok_ep}', '1 hour');
         SELECT webhooks.webhook_sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', 1, '{{}}');
         SELECT webhooks.filter_path('$.data.x == 1');
         SELECT webhooks.tenant_scope(), webhooks.current_tenant();
         SELECT * FROM webhooks.status();
         SELECT * FROM webhooks.endpoint_health;
         SELECT * FROM webhooks.dead_letters;
         SELECT * FROM webhooks.metrics;
         SELECT webhooks.webhook_publish('user.reviewed', '{{\"n\": 1}}');
         SELECT webhooks.webhook_publish_many('user.reviewed', '{{\"{{\\\"n\\\": 2}}\", \"{{\\\"n\\\": 3}}\"}}');
         SELECT * FROM webhooks.endpoint_test('{ok_ep}');"
    ))
    .unwrap();
    // A writer of the tracked table, in a session with the same path (its own statements
    // qualify what they compare).
    let mut bob = connect(&c, "bob", "app");
    bob.batch_execute(
        "INSERT INTO public.users VALUES (1, 'a@example.com', 'h'), (2, 'b@example.com', 'h');
         INSERT INTO public.users VALUES (3, 'c@example.com', 'h');
         UPDATE public.users SET email = 'z@example.com' WHERE id OPERATOR(pg_catalog.=) 1;
         DELETE FROM public.users WHERE id OPERATOR(pg_catalog.=) 2;",
    )
    .unwrap();

    // The worker delivers, retries, dead-letters, disables on 410 (an operational event to the
    // ops endpoint, through its filter) and prunes, all in this database.
    wait_for("every user event at the ok receiver", T, || {
        (ok.all()
            .iter()
            .filter(|r| r.header("webhook-event-type").starts_with("user."))
            .count()
            >= 8)
            .then_some(())
    });
    let first_ok: i64 = chk
        .query_one(
            "SELECT min(id) FROM webhooks.deliveries WHERE endpoint_id = $1",
            &[&ok_ep],
        )
        .unwrap()
        .get(0);
    wait_for("the 410 endpoint disabled, and said so", T, || {
        ok.all()
            .iter()
            .any(|r| {
                r.header("webhook-event-type") == "webhook.endpoint.disabled"
                    && r.body.contains("410")
            })
            .then_some(())
    });
    wait_for("a dead letter of the failing endpoint", T, || {
        (count(
            &mut chk,
            &format!("SELECT count(*) FROM webhooks.deliveries WHERE status = 'dead' AND endpoint_id = '{failing_ep}'"),
        ) > 0)
            .then_some(())
    });
    let dead: i64 = chk
        .query_one(
            "SELECT id FROM webhooks.deliveries WHERE status = 'dead' LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    let dead_event: String = chk
        .query_one(
            "SELECT event_id FROM webhooks.deliveries WHERE id = $1",
            &[&dead],
        )
        .unwrap()
        .get(0);
    su.batch_execute(&format!(
        "SELECT * FROM webhooks.delivery_retry({dead});
         SELECT * FROM webhooks.event_replay('{dead_event}');
         SELECT webhooks.endpoint_recover('{failing_ep}', '2000-01-01');
         SELECT webhooks.untrack_table('public.users');
         SELECT webhooks.endpoint_delete('{failing_ep}');"
    ))
    .unwrap();
    // Pruning (retention 2 s) has run by now: the first delivery is gone.
    wait_for("history pruned", T, || {
        (count(
            &mut chk,
            &format!("SELECT count(*) FROM webhooks.deliveries WHERE id = {first_ok}"),
        ) == 0)
            .then_some(())
    });

    let mut alice = connect(&c, "alice", "app");
    alice
        .batch_execute("SET search_path = pg_catalog, public")
        .unwrap();
    let fired = trojan::fired(&c, &mut alice);
    assert!(fired.is_empty(), "trojans ran: {fired:#?}");
    assert!(!trojan::is_superuser(&mut chk, "alice"));
    // And they are live: a statement of another role's that does reach one sets it off.
    bob.batch_execute("SELECT 1 WHERE 'x' = 'x'").unwrap();
    assert!(
        !trojan::fired(&c, &mut alice).is_empty(),
        "the trojans are live"
    );
}

/// A DBA may run the workers as a role of its own (webhooks.worker_role) instead of the bootstrap
/// superuser: a LOGIN role with BYPASSRLS that is a member of webhooks_worker. It does all the
/// worker does, no more: if anything the worker runs were ever reached by someone else's code,
/// that code would have this role's rights, not a superuser's.
#[test]
fn the_worker_runs_as_a_role_of_its_own_and_does_all_it_does_with_its_grants() {
    let c = Cluster::start(&[
        "webhooks.worker_role = 'hooks'",
        "webhooks.retention = '2s'",
    ]);
    let ok = Receiver::ok();
    let gone = Receiver::scripted(|_, _| Reply::Status(410, "gone"));
    let failing = Receiver::scripted(|_, _| Reply::Status(500, "no"));
    let mut su = c.client();
    let worker_role = |su: &mut postgres::Client| -> Option<String> {
        // A worker that has started but not yet connected shows no role yet (NULL), and for a
        // moment the one that is exiting and the one replacing it may both be listed.
        su.query(
            "SELECT usename::text FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
            &[],
        )
        .unwrap()
        .iter()
        .find_map(|r| r.get(0))
    };
    // Without BYPASSRLS the worker says why it delivers nothing, and stops.
    su.batch_execute("CREATE ROLE hooks LOGIN IN ROLE webhooks_worker")
        .unwrap();
    wait_for("the worker to refuse a role without BYPASSRLS", T, || {
        c.log().contains("has no BYPASSRLS").then_some(())
    });
    su.batch_execute("ALTER ROLE hooks BYPASSRLS").unwrap();
    wait_for("the worker connected as hooks", T, || {
        (worker_role(&mut su).as_deref() == Some("hooks")).then_some(())
    });
    let superuser: bool = su
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = 'hooks'", &[])
        .unwrap()
        .get(0);
    assert!(!superuser);

    let created = |su: &mut postgres::Client, url: &str, types: &str| -> String {
        su.query_one(
            &format!("SELECT id FROM webhooks.endpoint_create($1, '{types}')"),
            &[&url],
        )
        .unwrap()
        .get(0)
    };
    let ok_ep = created(&mut su, &ok.url, "{user.*}");
    let ops_ep = created(&mut su, &ok.url, "{webhook.*}");
    created(&mut su, &gone.url, "{user.*}");
    created(&mut su, &failing.url, "{user.*,sms.created}");
    su.execute(
        "SELECT webhooks.endpoint_update($1, filter => '$.type starts with \"webhook.\"')",
        &[&ops_ep],
    )
    .unwrap();
    su.batch_execute(
        "CREATE ROLE bound; SELECT webhooks.tenant_grant('bound', '');
         DROP ROLE bound;
         SELECT webhooks.webhook_publish('user.created', '{\"n\": 1}');
         SELECT webhooks.webhook_publish_many('user.created',
             ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(2, 151) g));",
    )
    .unwrap();
    // a failed synchronous send whose transaction rolls back: recorded by the worker
    assert!(su
        .batch_execute("SELECT webhooks.webhook_send_sync('sms.created', '{\"code\": \"1\"}')")
        .is_err());
    wait_for("every event at the ok receiver", T, || {
        (ok.all()
            .iter()
            .filter(|r| r.header("webhook-event-type") == "user.created")
            .count()
            >= 151)
            .then_some(())
    });
    wait_for("the 410 endpoint disabled and said so", T, || {
        ok.all()
            .iter()
            .any(|r| r.header("webhook-event-type") == "webhook.endpoint.disabled")
            .then_some(())
    });
    wait_for("dead letters, said so too", T, || {
        ok.all()
            .iter()
            .any(|r| r.header("webhook-event-type") == "webhook.delivery.dead")
            .then_some(())
    });
    let count =
        |su: &mut postgres::Client, sql: &str| -> i64 { su.query_one(sql, &[]).unwrap().get(0) };
    wait_for("the failed synchronous send on record", T, || {
        (count(
            &mut su,
            "SELECT count(*) FROM webhooks.deliveries WHERE sync AND status = 'dead'",
        ) == 1)
            .then_some(())
    });
    wait_for(
        "history pruned and the dropped role's binding gone",
        T,
        || {
            (count(
            &mut su,
            &format!(
                "SELECT count(*) FROM webhooks.deliveries WHERE endpoint_id = '{ok_ep}' AND status = 'succeeded'"
            ),
        ) < 151
            && count(&mut su, "SELECT count(*) FROM webhooks.tenant_roles") == 0)
            .then_some(())
        },
    );
    assert_eq!(worker_role(&mut su).as_deref(), Some("hooks"));
    let denied: Vec<String> = c
        .log()
        .lines()
        .filter(|l| {
            l.contains("permission denied")
                || l.contains("webhooks worker:") && l.contains("failed")
        })
        .map(str::to_string)
        .collect();
    assert!(denied.is_empty(), "{denied:#?}");
}

/// The same, in every-database mode: the launcher finds the role and starts the workers as it;
/// a role that does not exist starts none (never the superuser in its place).
#[test]
fn in_every_database_the_launcher_starts_workers_as_the_worker_role_or_none() {
    let c = Cluster::start_bare(&["webhooks.database = ''", "webhooks.worker_role = 'hooks'"]);
    let ok = Receiver::ok();
    let mut pg = c.client();
    pg.batch_execute("CREATE DATABASE app").unwrap();
    let mut app = connect(&c, "postgres", "app");
    app.batch_execute("CREATE EXTENSION webhooks").unwrap();
    app.execute(
        "SELECT webhooks.endpoint_create($1, '{user.*}')",
        &[&ok.url],
    )
    .unwrap();
    app.batch_execute("SELECT webhooks.webhook_publish('user.created', '{}')")
        .unwrap();
    wait_for("the launcher to say the role is missing", T, || {
        c.log().contains("\"hooks\" does not exist").then_some(())
    });
    assert_eq!(ok.count(), 0, "no worker delivered without its role");
    pg.batch_execute("CREATE ROLE hooks LOGIN BYPASSRLS IN ROLE webhooks_worker")
        .unwrap();
    wait_for("the delivery, by a worker of app as hooks", T, || {
        (ok.count() == 1).then_some(())
    });
    let who: Vec<(String, String)> = pg
        .query(
            "SELECT datname::text, usename::text FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(who, [("app".to_string(), "hooks".to_string())]);
}

#[test]
fn a_table_owner_s_condition_runs_nothing_as_anyone_but_the_owner() {
    // A condition's literals are read by their types' input functions when its holder trigger
    // is made; a domain's CHECK may call any function of the table owner's. 0.3.0 made the
    // holder as the extension's owner, so a publisher became superuser in one track_table.
    let c = Cluster::start(&[]);
    let rx = Receiver::scripted(|_, _| Reply::Status(204, ""));
    let mut su = c.client();
    su.batch_execute(
        "CREATE ROLE mallory LOGIN IN ROLE webhooks_publisher;
         CREATE SCHEMA m AUTHORIZATION mallory;
         SELECT webhooks.event_type_register('thing.created'),
                webhooks.event_type_register('thing.updated'),
                webhooks.event_type_register('thing.deleted');",
    )
    .unwrap();
    c.endpoint(&mut su, &rx.url, &["thing.*"]);
    let mut m = c.client_as("mallory");
    m.batch_execute(
        "CREATE TABLE m.seen (by_role name, at timestamptz DEFAULT now());
         CREATE FUNCTION m.pwn(text) RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
           INSERT INTO m.seen (by_role) VALUES (current_user);
           IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
             EXECUTE 'ALTER ROLE mallory SUPERUSER';
           END IF;
           RETURN true;
         END $$;
         CREATE DOMAIN m.d AS text CHECK (m.pwn(VALUE));
         CREATE TABLE m.t (id int PRIMARY KEY, v text);",
    )
    .unwrap();
    m.batch_execute(
        "SELECT webhooks.track_table('m.t', 'thing',
             condition => $c$NEW.v IS NOT NULL AND '{x}'::m.d[] IS NOT NULL$c$)",
    )
    .unwrap();
    assert!(
        !trojan::is_superuser(&mut su, "mallory"),
        "mallory became superuser"
    );
    let ran_as: Vec<String> = su
        .query("SELECT DISTINCT by_role::text FROM m.seen", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        ran_as,
        ["mallory"],
        "the domain's check ran as its owner only"
    );
    // The condition holds as before: a row it is false for publishes nothing.
    m.batch_execute(
        "INSERT INTO m.t VALUES (1, NULL), (2, 'x');
         UPDATE m.t SET v = 'y' WHERE id = 1;",
    )
    .unwrap();
    let types: Vec<String> = su
        .query(
            "SELECT e.type || ':' || (e.data->'thing'->>'id') FROM webhooks.events e ORDER BY e.occurred_at, e.id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(types, ["thing.created:2", "thing.updated:1"]);
    wait_for("both delivered", T, || (rx.count() == 2).then_some(()));
    // A superuser's later writes evaluate the condition with the writer's rights, as any
    // trigger's: that is PostgreSQL's rule for the owner's triggers, not ours to change.
    assert!(!trojan::is_superuser(&mut su, "mallory"));
    // Enabled by hand (as a data-only pg_restore --disable-triggers leaves it), the holder is
    // named in a WARNING and track_table disables it again.
    let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let heard = said.clone();
    let mut m2 = postgres::Config::new()
        .host("127.0.0.1")
        .port(c.port)
        .user("mallory")
        .dbname("postgres")
        .notice_callback(move |n| heard.lock().unwrap().push(n.message().to_string()))
        .connect(postgres::NoTls)
        .unwrap();
    m2.batch_execute("ALTER TABLE m.t ENABLE TRIGGER ALL")
        .unwrap();
    assert!(
        said.lock()
            .unwrap()
            .iter()
            .any(|w| w.contains("webhooks_row_condition") && w.contains("is enabled")),
        "{:?}",
        said.lock().unwrap()
    );
    m2.batch_execute(
        "SELECT webhooks.track_table('m.t', 'thing',
             condition => $c$NEW.v IS NOT NULL AND '{x}'::m.d[] IS NOT NULL$c$)",
    )
    .unwrap();
    let enabled: String = su
        .query_one(
            "SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = 'm.t'::regclass AND tgname = 'webhooks_row_condition'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(enabled, "D");
    assert!(!trojan::is_superuser(&mut su, "mallory"));
}

#[test]
fn a_database_s_default_role_does_not_become_the_worker_s() {
    // ALTER DATABASE ... SET role applies at every connection, the worker's included: it would
    // act as that role there. The worker pins role = none before its first statement.
    let c = Cluster::start(&[]);
    let ok = Receiver::ok();
    let mut pg = c.client();
    pg.batch_execute(
        "CREATE ROLE nobody NOLOGIN;
         ALTER DATABASE postgres SET role = 'nobody';",
    )
    .unwrap();
    c.endpoint(&mut pg, &ok.url, &["user.*"]);
    drop(pg);
    c.pg_ctl(&["restart", "-w", "-t", "60"]);
    let mut pg = c.client();
    let role: String = pg.query_one("SHOW role", &[]).unwrap().get(0);
    assert_eq!(role, "nobody", "the setting applies to sessions");
    pg.batch_execute("SET ROLE NONE").unwrap();
    pg.execute("SELECT webhooks.webhook_publish('user.created', '{}')", &[])
        .unwrap();
    wait_for("the delivery", T, || (ok.count() == 1).then_some(()));
    assert!(
        !c.log().contains("permission denied"),
        "the worker acted as nobody:\n{}",
        c.log()
    );
}
