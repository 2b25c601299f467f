//! The worker as a DBA lives with it: it obeys a fast shutdown and pg_terminate_backend while
//! receivers are slow, applies a reload under a backlog, never waits on a lock someone holds,
//! never sends one delivery twice at once, keeps one slow endpoint from starving the others,
//! wakes on COMMIT PREPARED, prunes dead rows and reports its statistics.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::receiver::{Receiver, Reply};
use webhooks_e2e::wait_for;

const T: Duration = Duration::from_secs(30);

fn count(db: &mut postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn a_fast_stop_ends_within_the_timeout_while_receivers_are_slow_and_nothing_is_lost() {
    let c = Cluster::start(&["webhooks.timeout = '2s'"]);
    let slow = Arc::new(AtomicBool::new(true));
    let s2 = Arc::clone(&slow);
    let rx = Receiver::scripted(move |_, _| {
        if s2.load(Ordering::Relaxed) {
            Reply::Slow(Duration::from_millis(1500))
        } else {
            Reply::Status(200, "ok")
        }
    });
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.created"]);
    db.batch_execute(
        "SELECT webhooks.webhook_publish('user.created', jsonb_build_object('n', g)) FROM generate_series(1, 300) g",
    )
    .unwrap();
    wait_for("requests under way", T, || (rx.count() >= 16).then_some(()));
    drop(db);
    let t0 = Instant::now();
    c.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"]);
    let took = t0.elapsed();
    // Was: not stopped after 100 s. Bound: the 2 s timeout plus shutdown's own work.
    assert!(took < Duration::from_secs(10), "fast stop took {took:?}");
    assert!(c.log().contains("webhooks worker stopped"), "{}", c.log());
    slow.store(false, Ordering::Relaxed);
    c.pg_ctl(&["start", "-w", "-t", "60"]);
    let mut db = c.client();
    wait_for(
        "every event delivered after the restart",
        Duration::from_secs(120),
        || {
            let n = count(
            &mut db,
            "SELECT count(DISTINCT event_id) FROM webhooks.deliveries WHERE status = 'succeeded'",
        );
            (n == 300).then_some(())
        },
    );
    let ids: HashSet<String> = rx
        .all()
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    assert_eq!(ids.len(), 300, "every event reached the receiver");
}

#[test]
fn pg_terminate_backend_stops_the_worker_at_once_and_a_new_one_delivers() {
    let c = Cluster::start(&["webhooks.timeout = '2s'"]);
    let rx = Receiver::scripted(|r, _| {
        if r.json()["data"]["slow"] == true {
            Reply::Slow(Duration::from_millis(1500))
        } else {
            Reply::Status(200, "ok")
        }
    });
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.created"]);
    db.batch_execute(
        "SELECT webhooks.webhook_publish('user.created', '{\"slow\": true}') FROM generate_series(1, 100)",
    )
    .unwrap();
    wait_for("requests under way", T, || (rx.count() >= 8).then_some(()));
    let pid = c.worker_pid(&mut db).unwrap();
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    wait_for("the old worker gone", Duration::from_secs(10), || {
        let n = count(
            &mut db,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        );
        (n == 0).then_some(())
    });
    let again = wait_for("a new worker", T, || {
        c.worker_pid(&mut db).filter(|p| *p != pid)
    });
    assert_ne!(again, pid);
    let ev: String = db
        .query_one(
            "SELECT webhooks.webhook_publish('user.created', '{\"slow\": false}')",
            &[],
        )
        .unwrap()
        .get(0);
    wait_for("the new worker delivers", T, || {
        rx.all()
            .iter()
            .any(|r| r.header("webhook-id") == ev)
            .then_some(())
    });
}

#[test]
fn a_reload_applies_within_a_batch_under_a_backlog() {
    let c = Cluster::start(&["webhooks.timeout = '3s'"]);
    let rx = Receiver::scripted(|_, _| Reply::Slow(Duration::from_millis(500)));
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.created"]);
    db.batch_execute(
        "SELECT webhooks.webhook_publish('user.created', '{}') FROM generate_series(1, 2000)",
    )
    .unwrap();
    wait_for("a steady backlog", T, || (rx.count() >= 20).then_some(()));
    // The emergency switch: loopback targets forbidden again.
    db.batch_execute("ALTER SYSTEM SET webhooks.allow_private_targets = off")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    let refused = wait_for("attempts refused by the new setting", T, || {
        let n = count(
            &mut db,
            "SELECT count(*) FROM webhooks.attempts WHERE error LIKE '%allow_private_targets%'",
        );
        (n > 0).then_some(n)
    });
    assert!(refused > 0);
    let pending = count(
        &mut db,
        "SELECT count(*) FROM webhooks.deliveries WHERE status IN ('pending', 'in_flight')",
    );
    assert!(
        pending > 1000,
        "applied while the backlog was still there ({pending} left)"
    );
}

#[test]
fn an_admins_open_transaction_on_a_delivery_holds_up_nothing_else() {
    let c = Cluster::start(&["webhooks.timeout = '2s'"]);
    let slow = Receiver::scripted(|_, _| Reply::Slow(Duration::from_millis(1500)));
    let fast = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &slow.url, &["user.updated"]);
    c.endpoint(&mut db, &fast.url, &["user.created"]);
    let locked: String = db
        .query_one("SELECT webhooks.webhook_publish('user.updated', '{}')", &[])
        .unwrap()
        .get(0);
    wait_for("the slow delivery in flight", T, || {
        (slow.count() == 1).then_some(())
    });
    // An admin locks the in-flight delivery and forgets the transaction.
    let mut admin = c.client();
    let mut tx = admin.transaction().unwrap();
    tx.query(
        "SELECT id FROM webhooks.deliveries WHERE event_id = $1 FOR UPDATE",
        &[&locked],
    )
    .unwrap();
    // The worker must not wait on it: a new event to a healthy endpoint is delivered.
    let t0 = Instant::now();
    let ev: String = db
        .query_one("SELECT webhooks.webhook_publish('user.created', '{}')", &[])
        .unwrap()
        .get(0);
    wait_for("the healthy endpoint served", T, || {
        (fast.count() == 1).then_some(())
    });
    assert!(t0.elapsed() < Duration::from_secs(10));
    wait_for("its outcome recorded", T, || {
        let n = count(
            &mut db,
            &format!("SELECT count(*) FROM webhooks.deliveries WHERE event_id = '{ev}' AND status = 'succeeded'"),
        );
        (n == 1).then_some(())
    });
    // The locked delivery's outcome waits in the worker and is recorded once the lock goes.
    std::thread::sleep(Duration::from_secs(2));
    let st: String = db
        .query_one(
            "SELECT status FROM webhooks.deliveries WHERE event_id = $1",
            &[&locked],
        )
        .unwrap()
        .get(0);
    assert_eq!(st, "in_flight", "not recorded while locked");
    tx.rollback().unwrap();
    wait_for("recorded after the lock is released", T, || {
        let n = count(
            &mut db,
            &format!("SELECT count(*) FROM webhooks.deliveries WHERE event_id = '{locked}' AND status = 'succeeded'"),
        );
        (n == 1).then_some(())
    });
    assert_eq!(slow.count(), 1, "sent once");
}

#[test]
fn a_slow_endpoint_neither_starves_others_nor_gets_a_delivery_twice_at_once() {
    let c = Cluster::start(&["webhooks.timeout = '7s'"]);
    let slow = Receiver::scripted(|_, _| Reply::Slow(Duration::from_secs(5)));
    let healthy = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &slow.url, &["user.updated"]);
    c.endpoint(&mut db, &healthy.url, &["user.created"]);
    db.batch_execute(
        "SELECT webhooks.webhook_publish('user.updated', jsonb_build_object('n', g)) FROM generate_series(1, 1000) g",
    )
    .unwrap();
    wait_for("the slow endpoint busy", T, || {
        (slow.count() >= 10).then_some(())
    });
    let mut published = HashMap::new();
    for _ in 0..20 {
        let ev: String = db
            .query_one("SELECT webhooks.webhook_publish('user.created', '{}')", &[])
            .unwrap()
            .get(0);
        published.insert(ev, Instant::now());
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for("the healthy endpoint served", T, || {
        (healthy.count() >= 20).then_some(())
    });
    let mut lat: Vec<Duration> = healthy
        .all()
        .iter()
        .filter_map(|r| published.get(r.header("webhook-id")).map(|t| r.at - *t))
        .collect();
    lat.sort();
    let worst = *lat.last().unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "commit-to-receiver latencies {lat:?}"
    );
    // No webhook-id reached the slow endpoint twice: its first attempts are still unanswered
    // or answered, never re-claimed while under way.
    let all = slow.all();
    let ids: HashSet<&str> = all.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), all.len(), "a delivery was sent twice at once");
    let in_flight = count(
        &mut db,
        "SELECT count(*) FROM webhooks.deliveries d JOIN webhooks.endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 'in_flight' AND e.url LIKE '%' AND d.event_id IN (SELECT id FROM webhooks.events WHERE type = 'user.updated')",
    );
    // max_in_flight (32) caps the requests under way at the receiver: every one takes 5 s,
    // so no 32 + 1 arrive within less than that. The worker leases ahead at most four rounds.
    let mut at: Vec<Instant> = all.iter().map(|r| r.at).collect();
    at.sort();
    let busiest = at
        .iter()
        .enumerate()
        .map(|(i, t)| {
            at[i..]
                .iter()
                .take_while(|u| **u - *t < Duration::from_millis(4800))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest <= 32,
        "max_in_flight caps the slow endpoint's concurrent requests ({busiest})"
    );
    assert!(
        in_flight <= 32 * 4,
        "leased at most four rounds ahead ({in_flight})"
    );
}

#[test]
fn commit_prepared_wakes_the_worker() {
    let c = Cluster::start(&[
        "webhooks.poll_interval = '60s'",
        "max_prepared_transactions = 4",
    ]);
    let rx = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.created"]);
    // Let the worker settle into its 60 s sleep.
    std::thread::sleep(Duration::from_secs(1));
    db.batch_execute(
        "BEGIN; SELECT webhooks.webhook_publish('user.created', '{}'); PREPARE TRANSACTION 'p1';",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.count(), 0, "nothing before the commit");
    let mut other = c.client();
    other.batch_execute("COMMIT PREPARED 'p1'").unwrap();
    wait_for(
        "delivery woken by COMMIT PREPARED",
        Duration::from_secs(10),
        || (rx.count() == 1).then_some(()),
    );
}

#[test]
fn dead_deliveries_are_pruned_and_statistics_are_reported() {
    let c = Cluster::start(&[
        "webhooks.dead_retention = '1s'",
        "webhooks.retention = '2s'",
    ]);
    let rx = Receiver::scripted(|_, _| Reply::Status(500, "no"));
    let ok = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.deleted"]);
    c.endpoint(&mut db, &ok.url, &["user.created"]);
    db.batch_execute(
        "SELECT webhooks.webhook_publish('user.deleted', '{}'); SELECT webhooks.webhook_publish('user.created', '{}');",
    )
    .unwrap();
    wait_for("the failing delivery dead", T, || {
        (count(
            &mut db,
            "SELECT count(*) FROM webhooks.deliveries WHERE status = 'dead'",
        ) == 1)
            .then_some(())
    });
    wait_for(
        "dead and succeeded rows and their events pruned",
        Duration::from_secs(60),
        || {
            let d = count(&mut db, "SELECT count(*) FROM webhooks.deliveries");
            let e = count(&mut db, "SELECT count(*) FROM webhooks.events");
            (d == 0 && e == 0).then_some(())
        },
    );
    wait_for("the worker's writes in pg_stat_user_tables", T, || {
        let r = db
            .query_one(
                "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables
                 WHERE schemaname = 'webhooks' AND relname = 'attempts'",
                &[],
            )
            .unwrap();
        let (ins, _upd, del): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        let upd: i64 = db
            .query_one(
                "SELECT n_tup_upd FROM pg_stat_user_tables WHERE schemaname = 'webhooks' AND relname = 'deliveries'",
                &[],
            )
            .unwrap()
            .get(0);
        (ins >= 5 && del >= 5 && upd >= 5).then_some(())
    });
}

#[test]
fn a_table_lock_while_recording_delays_the_record_and_sends_nothing_twice() {
    let c = Cluster::start(&["webhooks.timeout = '3s'"]);
    let rx = Receiver::scripted(|_, _| Reply::Slow(Duration::from_millis(1000)));
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.created"]);
    db.batch_execute(
        "SELECT webhooks.webhook_publish('user.created', '{}') FROM generate_series(1, 10)",
    )
    .unwrap();
    wait_for("requests under way", T, || (rx.count() >= 5).then_some(()));
    // A DBA's maintenance holds the table longer than the worker's lock_timeout.
    let mut dba = c.client();
    let mut tx = dba.transaction().unwrap();
    tx.batch_execute("LOCK TABLE webhooks.deliveries IN EXCLUSIVE MODE")
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    tx.rollback().unwrap();
    wait_for("every delivery recorded", T, || {
        let n = count(
            &mut db,
            "SELECT count(*) FROM webhooks.deliveries WHERE status = 'succeeded'",
        );
        (n == 10).then_some(())
    });
    let all = rx.all();
    let ids: HashSet<&str> = all.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 10);
    assert_eq!(all.len(), 10, "nothing was sent twice");
}

#[test]
fn a_serializable_or_read_only_default_does_not_stop_the_worker() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.created"]);
    db.batch_execute("ALTER SYSTEM SET default_transaction_isolation = 'serializable'")
        .unwrap();
    db.batch_execute("ALTER SYSTEM SET default_transaction_read_only = on")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    // A worker started under those defaults.
    let pid = c.worker_pid(&mut db).unwrap();
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    wait_for("a new worker", T, || {
        c.worker_pid(&mut db).filter(|p| *p != pid)
    });
    db.batch_execute("SET default_transaction_read_only = off")
        .unwrap();
    db.batch_execute(
        "SELECT webhooks.webhook_publish('user.created', '{}') FROM generate_series(1, 20)",
    )
    .unwrap();
    wait_for("all delivered and recorded", T, || {
        let n = count(
            &mut db,
            "SELECT count(*) FROM webhooks.deliveries WHERE status = 'succeeded'",
        );
        (n == 20).then_some(())
    });
}
