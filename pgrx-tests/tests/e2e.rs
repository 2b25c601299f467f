//! End to end: real clusters, the real worker, a real receiver on 127.0.0.1, real time
//! (shortened through the settings).

use std::collections::HashSet;
use std::time::Duration;
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::receiver::{Receiver, Reply, Request};
use webhooks_e2e::wait_for;

const T: Duration = Duration::from_secs(30);

fn verify_with_reference_library(secret: &str, req: &Request) {
    assert!(
        webhooks_e2e::verify_signature(secret, req),
        "signature verifies with the standardwebhooks crate"
    );
}

fn status_of(db: &mut postgres::Client, event_id: &str) -> Vec<(String, i32)> {
    db.query(
        "SELECT status, attempts FROM webhooks.deliveries WHERE event_id = $1 ORDER BY id",
        &[&event_id],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn publish(db: &mut postgres::Client, ty: &str, data: &str) -> String {
    db.query_one(
        "SELECT webhooks.webhook_publish($1, $2::text::jsonb)",
        &[&ty, &data],
    )
    .unwrap()
    .get(0)
}

#[test]
fn delivers_a_signed_envelope_that_the_reference_library_verifies() {
    let c = Cluster::start(&["webhooks.source = 'https://id.example.com'"]);
    let rx = Receiver::ok();
    let mut db = c.client();
    let (ep, secret) = c.endpoint(&mut db, &rx.url, &["user.*"]);
    db.execute(
        "SELECT webhooks.endpoint_update($1, headers => '{\"X-Api-Key\": \"k1\"}')",
        &[&ep],
    )
    .unwrap();
    // The event below is tenant-1's: an endpoint receives the events of its own tenant.
    db.execute(
        "UPDATE webhooks.endpoints SET tenant_id = 'tenant-1' WHERE id = $1",
        &[&ep],
    )
    .unwrap();
    let id: String = db
        .query_one(
            "SELECT webhooks.webhook_publish('user.created', '{\"email\":\"a@b.c\"}', 'tenant-1', '{\"kind\":\"admin\"}')",
            &[],
        )
        .unwrap()
        .get(0);
    publish(&mut db, "password.updated", "{}"); // not subscribed
    wait_for("the delivery", T, || (rx.count() == 1).then_some(()));
    let req = &rx.all()[0];
    verify_with_reference_library(&secret, req);
    assert_eq!(req.header("webhook-id"), id);
    assert_eq!(req.header("webhook-event-type"), "user.created");
    assert_eq!(req.header("webhook-attempt"), "1");
    assert_eq!(req.header("content-type"), "application/json");
    assert_eq!(req.header("x-api-key"), "k1");
    assert!(req.header("user-agent").starts_with("webhooks-pg/"));
    let v = req.json();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["type"], "user.created");
    assert_eq!(v["version"], "1");
    assert_eq!(v["source"], "https://id.example.com");
    assert_eq!(v["tenant_id"], "tenant-1");
    assert_eq!(v["actor"]["kind"], "admin");
    assert_eq!(v["data"]["email"], "a@b.c");
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    wait_for("succeeded", T, || {
        (status_of(&mut db, &id) == vec![("succeeded".into(), 1)]).then_some(())
    });
    let row = db
        .query_one("SELECT attempt, status_code, response_body FROM webhooks.attempts a JOIN webhooks.deliveries d ON d.id = a.delivery_id WHERE d.event_id = $1", &[&id])
        .unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, Option<i32>>(1)),
        (1, Some(200))
    );
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("ok"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.count(), 1, "the unsubscribed event must not be sent");
}

#[test]
fn failing_receiver_is_retried_on_schedule_then_dead_lettered_and_can_be_retried() {
    // Five retry steps, as in the default 1m,5m,30m,2h,12h: six attempts in all.
    let c = Cluster::start(&["webhooks.retry_schedule = '1s,1s,1s,1s,2s'"]);
    let rx = Receiver::scripted(|_, _| Reply::Status(500, "{\"error\":\"down\"}"));
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["*"]);
    let id = publish(&mut db, "user.updated", "{\"n\":1}");
    wait_for("dead", T, || {
        (status_of(&mut db, &id) == vec![("dead".into(), 6)]).then_some(())
    });
    let reqs = rx.all();
    assert_eq!(reqs.len(), 6, "exactly six attempts");
    let attempts: Vec<&str> = reqs.iter().map(|r| r.header("webhook-attempt")).collect();
    assert_eq!(attempts, ["1", "2", "3", "4", "5", "6"]);
    assert!(
        reqs.iter().all(|r| r.header("webhook-id") == id),
        "same webhook-id on every attempt"
    );
    let gaps: Vec<f64> = reqs
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs_f64())
        .collect();
    // webhooks.retry_jitter's default spreads each delay by up to 10% either way.
    assert!(
        gaps[..4].iter().all(|g| *g >= 0.9) && gaps[4] >= 1.8,
        "retries follow the schedule: {gaps:?}"
    );
    let dl = db
        .query_one("SELECT delivery_id, attempts, last_status, last_error FROM webhooks.dead_letters WHERE event_id = $1", &[&id])
        .unwrap();
    assert_eq!(dl.get::<_, i32>(1), 6);
    assert_eq!(dl.get::<_, Option<i32>>(2), Some(500));
    assert!(dl.get::<_, String>(3).contains("retry schedule exhausted"));
    let n_attempts: i64 = db
        .query_one(
            "SELECT count(*) FROM webhooks.attempts WHERE delivery_id = $1",
            &[&dl.get::<_, i64>(0)],
        )
        .unwrap()
        .get(0);
    assert_eq!(n_attempts, 6, "six attempts rows");
    // A manual retry sends it again at once.
    db.execute(
        "SELECT webhooks.delivery_retry($1)",
        &[&dl.get::<_, i64>(0)],
    )
    .unwrap();
    wait_for("the manual retry", T, || (rx.count() == 7).then_some(()));
    let health = db
        .query_one("SELECT dead, last_error FROM webhooks.endpoint_health", &[])
        .unwrap();
    assert!(health
        .get::<_, Option<String>>(1)
        .unwrap()
        .contains("HTTP 500"));
}

#[test]
fn deliveries_failed_together_retry_spread_around_the_schedule() {
    // An outage fails forty deliveries in the same second: their retries are spread over
    // 15-45 s (30 s ± 50%), not all due at once when the receiver comes back.
    let c = Cluster::start(&[
        "webhooks.retry_schedule = '30s'",
        "webhooks.retry_jitter = 0.5",
    ]);
    let rx = Receiver::scripted(|_, _| Reply::Status(500, "down"));
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["*"]);
    db.batch_execute(
        "SELECT webhooks.webhook_publish_many('user.updated', \
           (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 40) g))",
    )
    .unwrap();
    let waits: Vec<f64> = wait_for("forty first attempts recorded", T, || {
        let rows = db
            .query(
                "SELECT extract(epoch FROM d.next_attempt_at - a.started_at)::float8 \
                   FROM webhooks.deliveries d JOIN webhooks.attempts a ON a.delivery_id = d.id \
                  WHERE d.status = 'pending' AND d.attempts = 1",
                &[],
            )
            .unwrap();
        (rows.len() == 40).then(|| rows.iter().map(|r| r.get(0)).collect())
    });
    let (lo, hi) = waits
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), w| (lo.min(*w), hi.max(*w)));
    assert!(
        lo >= 14.5 && hi <= 46.0,
        "every retry within 30 s ± 50%: {waits:?}"
    );
    assert!(hi - lo >= 10.0, "the retries are spread: {waits:?}");
    let seconds: std::collections::BTreeSet<i64> = waits.iter().map(|w| *w as i64).collect();
    assert!(
        seconds.len() >= 15,
        "no second holds most of them: {waits:?}"
    );
    assert_eq!(rx.count(), 40, "nothing retried early");
}

#[test]
fn a_receiver_that_fails_twice_then_recovers_gets_the_event() {
    let c = Cluster::start(&[]);
    let rx = Receiver::scripted(|_, n| {
        if n < 2 {
            Reply::Status(503, "busy")
        } else {
            Reply::Status(204, "")
        }
    });
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["*"]);
    let id = publish(&mut db, "user.deleted", "{}");
    wait_for("succeeded", T, || {
        (status_of(&mut db, &id) == vec![("succeeded".into(), 3)]).then_some(())
    });
    let codes: Vec<Option<i32>> = db
        .query(
            "SELECT status_code FROM webhooks.attempts ORDER BY attempt",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(codes, [Some(503), Some(503), Some(204)]);
}

#[test]
fn hangs_resets_and_garbage_are_failed_attempts_and_the_worker_survives() {
    let c = Cluster::start(&["webhooks.retry_schedule = ''"]);
    let hang = Receiver::scripted(|_, _| Reply::Slow(Duration::from_secs(5)));
    let reset = Receiver::scripted(|_, _| Reply::Reset);
    let garbage = Receiver::scripted(|_, _| Reply::Garbage);
    let huge = Receiver::scripted(|_, _| Reply::HugeHead);
    let fine = Receiver::ok();
    let mut db = c.client();
    let pid = c.worker_pid(&mut db).expect("worker runs");
    for rx in [&hang, &reset, &garbage, &huge, &fine] {
        c.endpoint(&mut db, &rx.url, &["*"]);
    }
    let id = publish(&mut db, "user.created", "{}");
    wait_for("all five outcomes", T, || {
        let s = status_of(&mut db, &id);
        (s.len() == 5 && s.iter().all(|(st, _)| st != "pending" && st != "in_flight")).then_some(())
    });
    let errors: Vec<(String, Option<String>)> = db
        .query(
            "SELECT ep.url, d.last_error FROM webhooks.deliveries d JOIN webhooks.endpoints ep ON ep.id = d.endpoint_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let err_of = |url: &str| errors.iter().find(|(u, _)| u == url).unwrap().1.clone();
    assert!(err_of(&hang.url).unwrap().contains("timeout"), "{errors:?}");
    assert!(err_of(&reset.url).is_some());
    assert!(err_of(&garbage.url).is_some());
    // (named for what it is: at the buffer's size it read as "Peer disconnected")
    assert!(
        err_of(&huge.url).unwrap().contains("headers over 48 KiB"),
        "{errors:?}"
    );
    assert_eq!(err_of(&fine.url), None);
    assert_eq!(
        c.worker_pid(&mut db),
        Some(pid),
        "the worker did not restart"
    );
}

#[test]
fn rolled_back_events_are_never_sent_and_commits_wake_the_worker_at_once() {
    // A poll interval of a minute: only the commit's latch can explain a prompt delivery.
    let c = Cluster::start(&["webhooks.poll_interval = '60s'"]);
    let rx = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["*"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut tx = db.transaction().unwrap();
    tx.execute(
        "SELECT webhooks.webhook_publish('user.created', '{\"rolled\":\"back\"}')",
        &[],
    )
    .unwrap();
    tx.rollback().unwrap();
    let mut tx = db.transaction().unwrap();
    tx.execute(
        "SELECT webhooks.webhook_publish('user.created', '{\"committed\":true}')",
        &[],
    )
    .unwrap();
    tx.commit().unwrap();
    let started = std::time::Instant::now();
    wait_for("the committed event", Duration::from_secs(10), || {
        (rx.count() == 1).then_some(())
    });
    assert!(started.elapsed() < Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.count(), 1);
    assert_eq!(rx.all()[0].json()["data"]["committed"], true);
    let events: i64 = db
        .query_one("SELECT count(*) FROM webhooks.events", &[])
        .unwrap()
        .get(0);
    assert_eq!(events, 1, "the rolled-back event left no row");
}

#[test]
fn nothing_is_lost_when_the_worker_or_the_server_crashes() {
    let c = Cluster::start(&[]);
    let rx = Receiver::scripted(|_, _| Reply::Slow(Duration::from_millis(2)));
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["*"]);
    db.execute("SELECT webhooks.webhook_publish('user.created', jsonb_build_object('i', g)) FROM generate_series(1, 1500) g", &[])
        .unwrap();
    wait_for("some deliveries", T, || (rx.count() > 50).then_some(()));
    let pid = c.worker_pid(&mut db).unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    drop(db);
    // kill -9 of a backend makes the postmaster reinitialise; then an immediate restart on top.
    std::thread::sleep(Duration::from_secs(2));
    let mut db = wait_for("reconnect", T, || {
        postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                c.port
            ),
            postgres::NoTls,
        )
        .ok()
    });
    db.execute("SELECT webhooks.webhook_publish('user.created', jsonb_build_object('i', g)) FROM generate_series(1501, 3000) g", &[])
        .unwrap();
    c.pg_ctl(&["restart", "-m", "immediate", "-w", "-t", "60"]);
    let mut db = c.client();
    wait_for("every event delivered", Duration::from_secs(120), || {
        let ok: i64 = db
            .query_one(
                "SELECT count(*) FROM webhooks.deliveries WHERE status = 'succeeded'",
                &[],
            )
            .unwrap()
            .get(0);
        (ok == 3000).then_some(())
    });
    let ids: HashSet<String> = rx
        .all()
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    assert_eq!(
        ids.len(),
        3000,
        "every committed event reached the receiver at least once"
    );
}

#[test]
fn the_worker_survives_the_extension_being_dropped_and_created_again() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut db = c.client();
    let pid = c.worker_pid(&mut db).expect("worker runs");
    db.batch_execute("DROP EXTENSION webhooks CASCADE").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    db.batch_execute("CREATE EXTENSION webhooks").unwrap();
    c.endpoint(&mut db, &rx.url, &["*"]);
    publish(&mut db, "user.created", "{}");
    wait_for("delivery after re-creation", T, || {
        (rx.count() == 1).then_some(())
    });
    assert_eq!(c.worker_pid(&mut db), Some(pid));
    let st = db
        .query_one(
            "SELECT preloaded, worker_running, worker_pid FROM webhooks.status()",
            &[],
        )
        .unwrap();
    assert!(st.get::<_, bool>(0) && st.get::<_, bool>(1));
    assert_eq!(st.get::<_, Option<i32>>(2), Some(pid));
}

#[test]
fn a_burst_released_at_once_is_delivered_whatever_the_planner_statistics() {
    // 20,000 deliveries wait on a disabled endpoint, then enable makes them all due in one
    // statement: the claim must not depend on statistics gathered before the burst.
    let c = Cluster::start(&["webhooks.poll_interval = '100ms'"]);
    let rx = Receiver::ok();
    let mut db = c.client();
    let (ep, _) = c.endpoint(&mut db, &rx.url, &["*"]);
    db.execute("SELECT webhooks.endpoint_disable($1)", &[&ep])
        .unwrap();
    db.execute(
        "UPDATE webhooks.endpoints SET enabled = true WHERE id = $1",
        &[&ep],
    )
    .unwrap();
    db.execute(
        "UPDATE webhooks.endpoints SET enabled = false WHERE id = $1",
        &[&ep],
    )
    .unwrap();
    let mut tx = db.transaction().unwrap();
    tx.execute(
        "UPDATE webhooks.endpoints SET enabled = true WHERE id = $1",
        &[&ep],
    )
    .unwrap();
    tx.execute("SELECT webhooks.webhook_publish('user.created', jsonb_build_object('i', g)) FROM generate_series(1, 20000) g", &[])
        .unwrap();
    tx.execute(
        "UPDATE webhooks.endpoints SET enabled = false WHERE id = $1",
        &[&ep],
    )
    .unwrap();
    tx.execute(
        "UPDATE webhooks.deliveries SET next_attempt_at = 'infinity'",
        &[],
    )
    .unwrap();
    tx.commit().unwrap();
    db.execute("SELECT webhooks.endpoint_enable($1)", &[&ep])
        .unwrap();
    wait_for("20,000 deliveries", Duration::from_secs(180), || {
        (rx.count() >= 20000).then_some(())
    });
    wait_for("every outcome recorded", T, || {
        let ok: i64 = db
            .query_one(
                "SELECT count(*) FROM webhooks.deliveries WHERE status = 'succeeded'",
                &[],
            )
            .unwrap()
            .get(0);
        (ok == 20000).then_some(())
    });
}

#[test]
fn sql_signatures_interoperate_with_the_reference_library() {
    let c = Cluster::start(&[]);
    let mut db = c.client();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    let ts: i64 = db
        .query_one("SELECT extract(epoch FROM now())::int8", &[])
        .unwrap()
        .get(0);
    let body = r#"{"type":"user.created","data":{"email":"a@b.c"}}"#;
    // webhook_sign -> the reference library verifies it
    let ours: String = db
        .query_one(
            "SELECT webhooks.webhook_sign($1, 'msg_1', $2, $3)",
            &[&secret, &ts, &body],
        )
        .unwrap()
        .get(0);
    let mut h = http::HeaderMap::new();
    h.insert("webhook-id", "msg_1".parse().unwrap());
    h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
    h.insert("webhook-signature", ours.parse().unwrap());
    wh.verify(body.as_bytes(), &h)
        .expect("the reference library accepts webhook_sign");
    // the reference library signs -> webhook_verify accepts it, alone and in a list
    let theirs = wh.sign("msg_2", ts, body.as_bytes()).unwrap();
    let ok: bool = db
        .query_one(
            "SELECT webhooks.webhook_verify($1, 'msg_2', $2, $3, 'v1,Zm9v ' || $4)",
            &[&secret, &ts, &body, &theirs],
        )
        .unwrap()
        .get(0);
    assert!(ok);
    let tampered: bool = db
        .query_one(
            "SELECT webhooks.webhook_verify($1, 'msg_2', $2, $3 || ' ', $4)",
            &[&secret, &ts, &body, &theirs],
        )
        .unwrap()
        .get(0);
    assert!(!tampered);
}

/// A session's webhooks.traceparent reaches the receiver as the `traceparent` header of the
/// events it published (asynchronous and synchronous); other events carry none.
#[test]
fn the_publishing_transactions_trace_context_reaches_the_receiver() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["*", "email.created"]);
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    db.batch_execute(&format!(
        "SELECT webhooks.webhook_publish('user.created', '{{\"n\": 1}}');
         SET webhooks.traceparent = '{trace}';
         SELECT webhooks.webhook_publish('user.created', '{{\"n\": 2}}');
         SELECT webhooks.webhook_send_sync('email.created', '{{\"n\": 3}}');
         RESET webhooks.traceparent;"
    ))
    .unwrap();
    wait_for("three requests", Duration::from_secs(10), || {
        (rx.count() == 3).then_some(())
    });
    for r in rx.all() {
        let n = r.json()["data"]["n"].as_i64().unwrap();
        let expected = if n == 1 { "" } else { trace };
        assert_eq!(r.header("traceparent"), expected, "event {n}");
    }
}

/// A v1a endpoint: the receiver holds only the public key and verifies every request with it;
/// after a rotation both key pairs sign during the grace period, each checkable with its own
/// public key.
#[test]
fn a_v1a_endpoint_is_verified_with_its_public_key_alone() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut db = c.client();
    let row = db
        .query_one(
            "SELECT id, public_key FROM webhooks.endpoint_create($1, '{user.*}', signature => 'v1a')",
            &[&rx.url],
        )
        .unwrap();
    let (ep, old_key): (String, String) = (row.get(0), row.get(1));
    db.execute(
        "SELECT webhooks.webhook_publish('user.created', '{\"n\": 1}')",
        &[],
    )
    .unwrap();
    wait_for("the first request", Duration::from_secs(10), || {
        (rx.count() == 1).then_some(())
    });
    assert_eq!(
        webhooks_e2e::python_verifies_v1a(&old_key, &rx.all()[0]),
        [true]
    );
    let new_key: String = db
        .query_one(
            "SELECT webhooks.endpoint_rotate_secret($1, '1 hour')",
            &[&ep],
        )
        .unwrap()
        .get(0);
    assert_ne!(new_key, old_key);
    db.execute(
        "SELECT webhooks.webhook_publish('user.created', '{\"n\": 2}')",
        &[],
    )
    .unwrap();
    wait_for("the second request", Duration::from_secs(10), || {
        (rx.count() == 2).then_some(())
    });
    let second = &rx.all()[1];
    // the new key's signature first, the old one's after it: each verifies with its own key
    assert_eq!(
        webhooks_e2e::python_verifies_v1a(&new_key, second),
        [true, false]
    );
    assert_eq!(
        webhooks_e2e::python_verifies_v1a(&old_key, second),
        [false, true]
    );
    // webhook_verify, given the public key, agrees
    let ok: bool = db
        .query_one(
            "SELECT webhooks.webhook_verify($1, $2, $3::bigint, $4, $5)",
            &[
                &new_key,
                &second.header("webhook-id"),
                &second.header("webhook-timestamp").parse::<i64>().unwrap(),
                &second.body,
                &second.header("webhook-signature"),
            ],
        )
        .unwrap()
        .get(0);
    assert!(ok);
}
