//! webhooks on a Citus cluster: a coordinator and one worker node on this machine, both
//! preloading `citus,webhooks`, a users table distributed by tenant. Row events are written on
//! the node that holds the shard and sent by that node's worker; endpoints, tenants and
//! bindings made on the coordinator reach every node; psql on the coordinator sees deliveries
//! of every node, a tenant's admin only its tenant's. Citus is built by scripts/citus.sh (for
//! PostgreSQL 15, which Citus 13.2 and this machine share; scripts/test.sh runs this file on 15).

use std::collections::{HashMap, HashSet};
use std::time::Duration;
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::receiver::Receiver;
use webhooks_e2e::{verify_signature, wait_for};

const T: Duration = Duration::from_secs(90);
const CITUS: &[&str] = &[
    "shared_preload_libraries = 'citus,webhooks'",
    "max_connections = 100",
    // (2PC left in doubt by a node's restart is settled within a second, not a minute)
    "citus.recover_2pc_interval = '1s'",
];

fn count(db: &mut postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).unwrap().get(0)
}

/// The coordinator and a worker node. The node reads the coordinator's key file: the sealed
/// secrets copied to it open only under the same key (README, "Citus").
fn citus_cluster() -> (Cluster, Cluster) {
    let coordinator = Cluster::start_bare(CITUS);
    let key = format!("webhooks.key_file = '{}'", coordinator.key_file().display());
    let mut node_settings = CITUS.to_vec();
    node_settings.push(&key);
    let node = Cluster::start_bare(&node_settings);
    node.client()
        .batch_execute("CREATE EXTENSION citus")
        .unwrap();
    let mut c = coordinator.client();
    c.batch_execute(&format!(
        "CREATE EXTENSION citus;
         SELECT citus_set_coordinator_host('127.0.0.1', {});
         SELECT citus_add_node('127.0.0.1', {});
         CREATE EXTENSION webhooks;",
        coordinator.port, node.port
    ))
    .unwrap();
    (coordinator, node)
}

/// The distinct webhook-ids a receiver got, and how many requests it got in all.
fn received(rx: &Receiver) -> (HashSet<String>, usize) {
    let all = rx.all();
    let ids = all
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    (ids, all.len())
}

fn user_ids(rx: &Receiver) -> HashSet<i64> {
    rx.all()
        .iter()
        .filter(|r| r.json()["type"] == "user.created")
        .map(|r| r.json()["data"]["user"]["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn a_distributed_users_table_delivers_from_the_node_that_holds_it() {
    let (coordinator, node) = citus_cluster();
    let mut c = coordinator.client();
    let mut n = node.client();
    // The extension reached the node with CREATE EXTENSION; nothing is configured there.
    assert_eq!(
        count(
            &mut n,
            "SELECT count(*) FROM pg_extension WHERE extname = 'webhooks'"
        ),
        1
    );
    c.batch_execute(
        "CREATE TABLE users (tenant_id text NOT NULL, id bigint NOT NULL, email text, password_hash text,
                             PRIMARY KEY (tenant_id, id));
         SELECT create_distributed_table('users', 'tenant_id');",
    )
    .unwrap();
    // Without the setup the node has no endpoints to match.
    let setup: String = c
        .query_one("SELECT webhooks.cluster_setup()", &[])
        .unwrap()
        .get(0);
    assert!(setup.contains("2 Citus nodes"), "{setup}");
    // No global switch: track_table works on the distributed table as it is.
    let unsafe_on: String = c
        .query_one("SHOW citus.enable_unsafe_triggers", &[])
        .unwrap()
        .get(0);
    assert_eq!(unsafe_on, "off");
    // (one statement per transaction: Citus makes a role over one connection per node)
    for sql in [
        "SELECT webhooks.track_table('users', 'user', tenant_column => 'tenant_id')",
        "CREATE ROLE adm LOGIN IN ROLE webhooks_admin",
        "SELECT webhooks.tenant_grant('adm', 't3')",
    ] {
        c.batch_execute(sql).unwrap();
    }
    let unsafe_after: String = c
        .query_one("SHOW citus.enable_unsafe_triggers", &[])
        .unwrap()
        .get(0);
    assert_eq!(unsafe_after, "off", "track_table left the switch on");

    let platform = Receiver::ok();
    let tenant3 = Receiver::ok();
    let created =
        |c: &mut postgres::Client, url: &str, types: &str, tenant: &str| -> (String, String) {
            let r = c
                .query_one(
                    &format!("SELECT id, secret FROM webhooks.endpoint_create($1, '{types}', $2)"),
                    &[&url, &tenant],
                )
                .unwrap();
            (r.get(0), r.get(1))
        };
    let (_, platform_secret) = created(&mut c, &platform.url, "{user.*}", "*");
    let t3 = created(&mut c, &tenant3.url, "{user.created}", "t3");
    // Both endpoints are on the node, their secrets sealed as on the coordinator, and open there.
    assert_eq!(
        count(&mut n, "SELECT count(*) FROM webhooks.endpoints"),
        2,
        "the endpoints reached the node"
    );
    assert_eq!(
        count(
            &mut n,
            "SELECT count(*) FROM webhooks.endpoints WHERE secret LIKE 'whsec_%'"
        ),
        0,
        "a secret was copied in the clear"
    );

    // 1,000 users across 10 tenants, through the coordinator.
    for batch in 0..10 {
        c.batch_execute(&format!(
            "INSERT INTO users (tenant_id, id, email, password_hash)
             SELECT 't' || (i % 10), i, 'u' || i || '@example.com', 'hash-' || i
             FROM generate_series({}, {}) i",
            batch * 100 + 1,
            batch * 100 + 100
        ))
        .unwrap();
    }
    // The events are the node's: the coordinator holds no shard.
    assert_eq!(count(&mut c, "SELECT count(*) FROM webhooks.events"), 0);
    assert_eq!(count(&mut n, "SELECT count(*) FROM webhooks.events"), 1000);
    wait_for("1,000 deliveries to the platform", T, || {
        (platform.count() >= 1000 && tenant3.count() >= 100).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (ids, requests) = received(&platform);
    assert_eq!((ids.len(), requests), (1000, 1000), "exactly once");
    assert_eq!(user_ids(&platform), (1..=1000).collect::<HashSet<i64>>());
    let (ids3, requests3) = received(&tenant3);
    assert_eq!((ids3.len(), requests3), (100, 100));
    for r in platform.all() {
        assert!(verify_signature(&platform_secret, &r), "platform signature");
        assert!(
            !r.body.contains("hash-"),
            "a secret-looking column was sent"
        );
    }
    for r in tenant3.all() {
        assert!(verify_signature(&t3.1, &r), "tenant signature");
        assert_eq!(r.json()["data"]["user"]["tenant_id"], "t3");
    }

    // webhook_publish on either node: that node's outbox, that node's worker.
    for (db, who) in [(&mut c, "coordinator"), (&mut n, "node")] {
        db.execute(
            "SELECT webhooks.webhook_publish('user.deleted', jsonb_build_object('from', $1::text), 't5')",
            &[&who],
        )
        .unwrap();
    }
    wait_for("an event published on each node", T, || {
        let from: HashSet<String> = platform
            .all()
            .iter()
            .filter(|r| r.json()["type"] == "user.deleted")
            .map(|r| r.json()["data"]["from"].as_str().unwrap_or("").to_string())
            .collect();
        (from.len() == 2).then_some(())
    });
    assert_eq!(count(&mut c, "SELECT count(*) FROM webhooks.events"), 1);

    // An endpoint made after the table was distributed and its events flowed reaches the node.
    let late = Receiver::ok();
    let (late_id, late_secret) = created(&mut c, &late.url, "{user.updated}", "*");
    c.batch_execute("UPDATE users SET email = 'new-' || email WHERE id <= 20")
        .unwrap();
    wait_for("the late endpoint's 20 updates", T, || {
        (late.count() >= 20).then_some(())
    });
    assert!(late.all().iter().all(|r| verify_signature(&late_secret, r)));
    // Deleting it on the coordinator deletes it on the node.
    c.execute("SELECT webhooks.endpoint_delete($1)", &[&late_id])
        .unwrap();
    assert_eq!(
        n.query_one(
            "SELECT count(*) FROM webhooks.endpoints WHERE id = $1",
            &[&late_id]
        )
        .unwrap()
        .get::<_, i64>(0),
        0
    );

    // The node restarted in the middle of a burst: every row that committed is delivered.
    let platform_before = platform.count();
    let inserter = {
        let port = coordinator.port;
        std::thread::spawn(move || {
            let mut db = postgres::Client::connect(
                &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
                postgres::NoTls,
            )
            .unwrap();
            let mut committed = HashSet::new();
            let mut failed = 0;
            for id in 2001..=2400i64 {
                let tenant = format!("t{}", id % 10);
                match db.execute(
                    "INSERT INTO users (tenant_id, id, email) VALUES ($1, $2, 'burst')",
                    &[&tenant, &id],
                ) {
                    Ok(_) => {
                        committed.insert(id);
                    }
                    Err(_) => {
                        failed += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            (committed, failed)
        })
    };
    wait_for("the burst under way", T, || {
        (platform.count() > platform_before + 50).then_some(())
    });
    node.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60"]);
    let (committed, failed) = inserter.join().unwrap();
    assert!(committed.len() > 100, "{failed} inserts failed");
    let mut n = node.client();
    assert_eq!(
        count(&mut n, "SELECT count(*) FROM users WHERE id > 2000"),
        committed.len() as i64
    );
    wait_for("every committed row of the burst delivered", T, || {
        committed.is_subset(&user_ids(&platform)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let delivered: HashSet<i64> = user_ids(&platform)
        .into_iter()
        .filter(|id| *id > 2000)
        .collect();
    assert_eq!(delivered, committed, "events of rows that did not commit");
    // Each event once (a request cut off by the stop would come again, with the same id).
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in platform.all() {
        *per_id
            .entry(r.header("webhook-id").to_string())
            .or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");

    // psql on the coordinator: every node's deliveries and health; a tenant's admin, its own.
    let total = count(&mut c, "SELECT count(*) FROM webhooks_cluster.deliveries");
    let on_node: i64 = c
        .query_one(
            "SELECT count(*) FROM webhooks_cluster.deliveries d JOIN pg_dist_node p ON p.nodeid = d.node_id
             WHERE p.nodeport = $1",
            &[&(node.port as i32)],
        )
        .unwrap()
        .get(0);
    // (the coordinator's own: the one event published there)
    let on_coordinator = count(&mut c, "SELECT count(*) FROM webhooks.deliveries");
    assert_eq!(on_coordinator, 1);
    assert!(total > 1000 && on_node == total - 1, "{total} {on_node}");
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM webhooks_cluster.endpoint_health WHERE succeeded > 0"
        ),
        3,
        "both endpoints' health on the node, the platform's on the coordinator"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM webhooks_cluster.nodes WHERE answered"
        ),
        2
    );
    let mut adm = coordinator.client_as("adm");
    let (seen, others): (i64, i64) = {
        let r = adm
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE tenant_id <> 't3') FROM webhooks_cluster.deliveries",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(seen >= 100, "the admin of t3 saw {seen} deliveries");
    assert_eq!(others, 0, "the admin of t3 saw other tenants' deliveries");
    // And writes nothing it could not write on one PostgreSQL.
    assert!(adm
        .execute("DELETE FROM webhooks_cluster.config", &[])
        .is_err());
}

#[test]
fn cluster_setup_without_citus_says_why() {
    let c = Cluster::start(&[]);
    let err = c
        .client()
        .query_one("SELECT webhooks.cluster_setup()", &[])
        .unwrap_err();
    let msg = err.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("Citus is not installed"), "{msg}");
}
