//! Every database at once (`webhooks.database` empty, the default) and several workers per
//! database: a launcher starts workers where the extension is, they leave where it is not (or
//! no longer), DROP DATABASE is not blocked by them, and two workers share a backlog, delivering
//! each event once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::receiver::Receiver;
use webhooks_e2e::wait_for;

const T: Duration = Duration::from_secs(40);

fn workers(pg: &mut postgres::Client) -> HashMap<String, i64> {
    pg.query(
        // A worker that has started but not yet connected shows a NULL datname for a moment.
        "SELECT datname, count(*) FROM pg_stat_activity \
         WHERE backend_type = 'webhooks worker' AND datname IS NOT NULL GROUP BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[test]
fn every_database_with_the_extension_gets_its_workers_and_each_event_goes_once() {
    let c = Cluster::start_bare(&[
        "webhooks.database = ''",
        "webhooks.workers = 2",
        "max_worker_processes = 16",
    ]);
    let rx = Receiver::ok();
    let mut pg = c.client();
    for db in ["app1", "app2", "plain"] {
        pg.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    }
    let connect = |db: &str| {
        postgres::Client::connect(
            &format!("host=127.0.0.1 port={} user=postgres dbname={db}", c.port),
            postgres::NoTls,
        )
        .unwrap()
    };
    let (mut app1, mut app2) = (connect("app1"), connect("app2"));
    for db in [&mut app1, &mut app2] {
        db.batch_execute("CREATE EXTENSION webhooks").unwrap();
        db.execute(
            "SELECT webhooks.endpoint_create($1, '{user.*}')",
            &[&rx.url],
        )
        .unwrap();
    }
    // Two workers in each database with the extension, none elsewhere.
    let running = wait_for("two workers in app1 and app2", T, || {
        let w = workers(&mut pg);
        (w.get("app1") == Some(&2) && w.get("app2") == Some(&2)).then_some(w)
    });
    assert_eq!(
        running.len(),
        2,
        "no worker stays where the extension is not: {running:?}"
    );
    // Each database's events are delivered by its own workers, each exactly once.
    app1.batch_execute(
        "SELECT count(webhooks.webhook_publish('user.created', jsonb_build_object('n', g))) FROM generate_series(1, 300) g",
    )
    .unwrap();
    app2.batch_execute("SELECT webhooks.webhook_publish('user.created', '{\"from\": \"app2\"}')")
        .unwrap();
    wait_for("301 deliveries", T, || (rx.count() >= 301).then_some(()));
    std::thread::sleep(Duration::from_millis(1000));
    let all = rx.all();
    let ids: HashSet<&str> = all.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(all.len(), 301, "every event once");
    assert_eq!(ids.len(), 301, "no webhook-id twice");
    assert!(all.iter().any(|r| r.json()["data"]["from"] == "app2"));
    // Both of app1's workers took part: each leases only its half of the endpoint's allowance
    // (once the first to claim leased it all and the second found no room).
    let claimers: i64 = app1
        .query_one(
            "SELECT count(DISTINCT claimed_by) FROM webhooks.deliveries WHERE status = 'succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(claimers, 2, "both workers of app1 delivered");
    let status: (bool, String) = app2
        .query_one(
            "SELECT worker_running, database FROM webhooks.status()",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(status, (true, "app2".to_string()));

    // DROP DATABASE is not blocked by the workers; DROP EXTENSION sends them away; CREATE
    // EXTENSION brings them back.
    drop(app2);
    pg.batch_execute("DROP DATABASE app2").unwrap();
    app1.batch_execute("DROP EXTENSION webhooks CASCADE")
        .unwrap();
    wait_for("app1's workers gone", T, || {
        (!workers(&mut pg).contains_key("app1")).then_some(())
    });
    app1.batch_execute("CREATE EXTENSION webhooks").unwrap();
    app1.execute(
        "SELECT webhooks.endpoint_create($1, '{user.*}')",
        &[&rx.url],
    )
    .unwrap();
    app1.batch_execute("SELECT webhooks.webhook_publish('user.created', '{\"again\": true}')")
        .unwrap();
    wait_for("delivered after CREATE EXTENSION", T, || {
        rx.all()
            .iter()
            .any(|r| r.json()["data"]["again"] == true)
            .then_some(())
    });
}

/// Failed synchronous sends whose transaction rolled back are recorded by their database's
/// worker from a ring in shared memory that every database shares: another database's worker
/// leaves them alone (0.3.0's dropped them), and a publisher that fails in a loop pushes out
/// only its own (0.3.0's pushed out everyone's).
#[test]
fn failed_sync_sends_of_one_database_survive_another_databases_worker_and_floods() {
    let c = Cluster::start_bare(&["webhooks.database = ''", "max_worker_processes = 16"]);
    let failing = Receiver::scripted(|_, _| webhooks_e2e::receiver::Reply::Status(500, "no"));
    let mut pg = c.client();
    for db in ["quiet", "noisy"] {
        pg.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    }
    let connect = |db: &str| {
        postgres::Client::connect(
            &format!("host=127.0.0.1 port={} user=postgres dbname={db}", c.port),
            postgres::NoTls,
        )
        .unwrap()
    };
    let (mut quiet, mut noisy) = (connect("quiet"), connect("noisy"));
    for db in [&mut quiet, &mut noisy] {
        db.batch_execute("CREATE EXTENSION webhooks").unwrap();
        db.execute(
            "SELECT webhooks.endpoint_create($1, '{sms.created}')",
            &[&failing.url],
        )
        .unwrap();
    }
    wait_for("a worker in each", T, || {
        let w = workers(&mut pg);
        (w.contains_key("quiet") && w.contains_key("noisy")).then_some(())
    });
    // quiet's failure waits in the ring while its transaction is open...
    let mut tx = quiet.transaction().unwrap();
    let answer: String = tx
        .query_one(
            "SELECT webhooks.webhook_send_sync_result('sms.created', '{\"code\": \"quiet\"}')::text",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(answer.contains("WH001"), "{answer}");
    // ...while noisy fails a hundred times, each rolled back, and its worker records them.
    for i in 0..100 {
        let e = noisy.batch_execute(&format!(
            "SELECT webhooks.webhook_send_sync('sms.created', '{{\"code\": \"{i}\"}}')"
        ));
        assert!(e.is_err());
    }
    wait_for("noisy's worker to record some", T, || {
        let n: i64 = noisy
            .query_one("SELECT count(*) FROM webhooks.attempts", &[])
            .unwrap()
            .get(0);
        (n > 0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    tx.rollback().unwrap();
    wait_for("quiet's failure recorded by its own worker", T, || {
        let n: i64 = quiet
            .query_one(
                "SELECT count(*) FROM webhooks.deliveries WHERE status = 'dead' AND sync",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 1).then_some(())
    });
}
