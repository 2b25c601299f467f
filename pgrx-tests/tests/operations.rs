//! Running it for years: receivers that push back, endpoints that switch themselves off and
//! say so, recovering after an outage, testing an endpoint, idempotent publish, rate limits.

use postgres::fallible_iterator::FallibleIterator;
use std::time::Duration;
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::receiver::{Receiver, Reply, Request};
use webhooks_e2e::wait_for;

const T: Duration = Duration::from_secs(30);

fn msg(e: &postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

fn publish(db: &mut postgres::Client, ty: &str) -> String {
    db.query_one(
        "SELECT webhooks.webhook_publish($1, jsonb_build_object('at', clock_timestamp()))",
        &[&ty],
    )
    .unwrap()
    .get(0)
}

fn endpoint_row(db: &mut postgres::Client, ep: &str) -> (bool, Option<String>) {
    let r = db
        .query_one(
            "SELECT enabled, disabled_reason FROM webhooks.endpoints WHERE id = $1",
            &[&ep],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// The operational events an alerting receiver got, as (type, data).
fn operational(rx: &Receiver) -> Vec<(String, serde_json::Value)> {
    rx.all()
        .iter()
        .map(|r| {
            (
                r.header("webhook-event-type").to_string(),
                r.json()["data"].clone(),
            )
        })
        .collect()
}

fn alerting(c: &Cluster, db: &mut postgres::Client, rx: &Receiver) -> String {
    c.endpoint(db, &rx.url, &["webhook.*"]).0
}

#[test]
fn a_throttling_answer_with_retry_after_pauses_the_whole_endpoint() {
    let c = Cluster::start(&[]);
    // The first request is told to come back in 3 seconds; the schedule alone would retry
    // after 1 second, and a second event would go at once.
    let rx = Receiver::scripted(|_, n| {
        if n == 0 {
            Reply::RetryAfter(503, "3".into())
        } else {
            Reply::Status(200, "ok")
        }
    });
    let mut db = c.client();
    let (ep, _) = c.endpoint(&mut db, &rx.url, &["user.*"]);
    let first = publish(&mut db, "user.created");
    wait_for("the pause recorded", T, || {
        db.query_one(
            "SELECT paused_until IS NOT NULL FROM webhooks.endpoints WHERE id = $1",
            &[&ep],
        )
        .unwrap()
        .get::<_, Option<bool>>(0)
        .unwrap_or(false)
        .then_some(())
    });
    let second = publish(&mut db, "user.updated");
    let all = wait_for("both delivered", T, || {
        let all = rx.all();
        (all.len() >= 3).then_some(all)
    });
    let t0 = all[0].at;
    for r in &all[1..] {
        assert!(
            r.at.duration_since(t0) >= Duration::from_millis(2800),
            "{} went {:?} after the 503 that asked for 3 s",
            r.header("webhook-id"),
            r.at.duration_since(t0)
        );
    }
    let ids: Vec<&str> = all.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.contains(&first.as_str()) && ids.contains(&second.as_str()));
    // (the receiver answers before the worker records: wait for the record)
    let (code, attempts) = wait_for("the retry recorded", T, || {
        let (status, code, attempts): (String, Option<i32>, i32) = db
            .query_one(
                "SELECT d.status, (SELECT status_code FROM webhooks.attempts a WHERE a.delivery_id = d.id AND a.attempt = 1), d.attempts
                 FROM webhooks.deliveries d WHERE d.event_id = $1",
                &[&first],
            )
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .unwrap();
        (status == "succeeded").then_some((code, attempts))
    });
    assert_eq!((code, attempts), (Some(503), 2));
}

#[test]
fn gone_disables_the_endpoint_keeps_its_work_and_tells_the_operator() {
    let c = Cluster::start(&[]);
    let alerts = Receiver::ok();
    let everything = Receiver::ok();
    let gone = Receiver::scripted(|_, n| {
        if n == 0 {
            Reply::Status(410, "gone")
        } else {
            Reply::Status(200, "ok")
        }
    });
    let mut db = c.client();
    let mut listener = c.client();
    listener.batch_execute("LISTEN webhooks").unwrap();
    alerting(&c, &mut db, &alerts);
    // '*' means every event of the application, not the extension's own.
    c.endpoint(&mut db, &everything.url, &["*"]);
    let (ep, _) = c.endpoint(&mut db, &gone.url, &["user.*"]);
    db.execute(
        "SELECT webhooks.endpoint_update($1, max_in_flight => 1)",
        &[&ep],
    )
    .unwrap();
    let mut tx = db.transaction().unwrap();
    let events = [
        publish_in(&mut tx, "user.created"),
        publish_in(&mut tx, "user.updated"),
    ];
    tx.commit().unwrap();

    let reason = wait_for("the endpoint disabled", T, || {
        match endpoint_row(&mut db, &ep) {
            (false, reason) => reason,
            _ => None,
        }
    });
    assert!(reason.contains("410 Gone"), "{reason}");
    // Both deliveries are kept, waiting: the one that got the 410 at once, the one leased with
    // it once the worker gives it back unsent.
    wait_for("both deliveries parked", T, || {
        let parked: i64 = db
            .query_one(
                "SELECT count(*) FROM webhooks.deliveries
                 WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at = 'infinity'",
                &[&ep],
            )
            .unwrap()
            .get(0);
        (parked == 2).then_some(())
    });

    let got = wait_for("the operator's alert", T, || {
        operational(&alerts)
            .into_iter()
            .find(|(ty, _)| ty == "webhook.endpoint.disabled")
    });
    assert_eq!(got.1["endpoint_id"], ep.as_str());
    assert_eq!(got.1["reason"], reason.as_str());
    assert_eq!(got.1["pending_deliveries"], 2);
    let note = listener
        .notifications()
        .timeout_iter(Duration::from_secs(5))
        .next()
        .unwrap()
        .expect("a NOTIFY on channel webhooks");
    assert_eq!(note.channel(), "webhooks");
    let payload: serde_json::Value = serde_json::from_str(note.payload()).unwrap();
    assert_eq!(payload["type"], "webhook.endpoint.disabled");
    assert!(
        payload.get("data").is_none(),
        "any role may LISTEN: only id and type"
    );
    let about: String = db
        .query_one(
            "SELECT data->>'endpoint_id' FROM webhooks.events WHERE id = $1",
            &[&payload["id"].as_str().unwrap_or_default()],
        )
        .unwrap()
        .get(0);
    assert_eq!(about, ep);

    // Back after the outage: enabling sends what waited.
    db.execute("SELECT webhooks.endpoint_enable($1)", &[&ep])
        .unwrap();
    wait_for("the kept deliveries", T, || {
        let ids: Vec<String> = gone.all()[1..]
            .iter()
            .map(|r| r.header("webhook-id").to_string())
            .collect();
        events.iter().all(|e| ids.contains(e)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        everything
            .all()
            .iter()
            .all(|r: &Request| !r.header("webhook-event-type").starts_with("webhook.")),
        "no operational event reached the '*' endpoint"
    );
}

fn publish_in(tx: &mut postgres::Transaction<'_>, ty: &str) -> String {
    tx.query_one(
        "SELECT webhooks.webhook_publish($1, jsonb_build_object('at', clock_timestamp()))",
        &[&ty],
    )
    .unwrap()
    .get(0)
}

#[test]
fn an_endpoint_failing_for_disable_after_is_disabled_and_one_that_recovers_is_announced() {
    let c = Cluster::start(&["webhooks.disable_after = '3s'"]);
    let alerts = Receiver::ok();
    let down = Receiver::scripted(|_, _| Reply::Status(500, "down"));
    // Fails the first two attempts (at 0 s and about 1 s: a streak well short of disable_after),
    // then answers.
    let flaky = Receiver::scripted(|_, n| {
        if n < 2 {
            Reply::Status(500, "flaky")
        } else {
            Reply::Status(200, "ok")
        }
    });
    let mut db = c.client();
    alerting(&c, &mut db, &alerts);
    let (dead_ep, _) = c.endpoint(&mut db, &down.url, &["user.created"]);
    let (flaky_ep, _) = c.endpoint(&mut db, &flaky.url, &["user.created"]);
    publish(&mut db, "user.created");

    let reason = wait_for("the failing endpoint disabled", T, || {
        match endpoint_row(&mut db, &dead_ep) {
            (false, reason) => reason,
            _ => None,
        }
    });
    assert!(
        reason.contains("every attempt has failed since") && reason.contains("disable_after"),
        "{reason}"
    );
    let recovered = wait_for("the recovered endpoint's announcement", T, || {
        operational(&alerts)
            .into_iter()
            .find(|(ty, _)| ty == "webhook.endpoint.recovered")
    });
    assert_eq!(recovered.1["endpoint_id"], flaky_ep.as_str());
    assert!(recovered.1["failing_since"].is_string());
    wait_for("the disabled one's announcement", T, || {
        operational(&alerts).into_iter().find(|(ty, d)| {
            ty == "webhook.endpoint.disabled" && d["endpoint_id"] == dead_ep.as_str()
        })
    });
    assert_eq!(
        endpoint_row(&mut db, &flaky_ep),
        (true, None),
        "a success ended its streak before disable_after"
    );
    let streak: Option<bool> = db
        .query_one(
            "SELECT failing_since IS NULL FROM webhooks.endpoints WHERE id = $1",
            &[&flaky_ep],
        )
        .unwrap()
        .get(0);
    assert_eq!(streak, Some(true));
}

#[test]
fn a_dead_delivery_is_announced_and_endpoint_recover_sends_it_again() {
    let c = Cluster::start(&[]);
    let alerts = Receiver::ok();
    // Down for the four attempts of the test schedule (1s,1s,2s), back afterwards.
    let rx = Receiver::scripted(|_, n| {
        if n < 4 {
            Reply::Status(503, "outage")
        } else {
            Reply::Status(200, "ok")
        }
    });
    let mut db = c.client();
    alerting(&c, &mut db, &alerts);
    let (ep, _) = c.endpoint(&mut db, &rx.url, &["user.*"]);
    let ev = publish(&mut db, "user.created");
    let dead = wait_for("the dead-letter announcement", T, || {
        operational(&alerts)
            .into_iter()
            .find(|(ty, _)| ty == "webhook.delivery.dead")
    });
    assert_eq!(dead.1["event_id"], ev.as_str());
    assert_eq!(dead.1["endpoint_id"], ep.as_str());
    assert_eq!(dead.1["event_type"], "user.created");
    assert_eq!(dead.1["attempts"], 4);
    assert_eq!(dead.1["last_status"], 503);

    let bad = db
        .query_one("SELECT webhooks.endpoint_recover($1, NULL)", &[&ep])
        .unwrap_err();
    assert!(msg(&bad).contains("since must be a time"), "{bad}");
    let n: i64 = db
        .query_one(
            "SELECT webhooks.endpoint_recover($1, now() - interval '1 hour')",
            &[&ep],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    wait_for("the recovered delivery succeeded", T, || {
        let s: String = db
            .query_one(
                "SELECT status FROM webhooks.deliveries WHERE event_id = $1",
                &[&ev],
            )
            .unwrap()
            .get(0);
        (s == "succeeded").then_some(())
    });
    assert_eq!(rx.all()[4].header("webhook-id"), ev);
}

#[test]
fn endpoint_test_sends_a_signed_test_event_now_and_returns_the_answer() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let broken = Receiver::scripted(|_, _| Reply::Status(500, "{\"why\": \"broken\"}"));
    let mut db = c.client();
    let (ep, secret) = c.endpoint(&mut db, &rx.url, &["user.created"]);
    let (bad, _) = c.endpoint(&mut db, &broken.url, &["user.created"]);
    let row = db
        .query_one(
            "SELECT status, ok, error, event_id FROM webhooks.endpoint_test($1)",
            &[&ep],
        )
        .unwrap();
    let (status, ok, error, event_id): (Option<i32>, Option<bool>, Option<String>, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((status, ok, error), (Some(200), Some(true), None));
    let req = &rx.all()[0];
    assert_eq!(req.header("webhook-event-type"), "webhook.test");
    assert_eq!(req.header("webhook-id"), event_id);
    assert_eq!(req.json()["data"]["test"], true);
    assert!(webhooks_e2e::verify_signature(&secret, req));

    let row = db
        .query_one(
            "SELECT status, ok, error, response::text FROM webhooks.endpoint_test($1, 'user.created')",
            &[&bad],
        )
        .unwrap();
    let (status, ok, error, body): (Option<i32>, Option<bool>, Option<String>, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, ok), (Some(500), Some(false)));
    assert!(error.unwrap_or_default().contains("500"));
    assert_eq!(body["why"], "broken");
    assert_eq!(broken.all()[0].header("webhook-event-type"), "user.created");

    let recorded: i64 = db
        .query_one("SELECT count(*) FROM webhooks.events", &[])
        .unwrap()
        .get(0);
    assert_eq!(recorded, 0, "a probe records nothing");
    let e = db
        .query_one("SELECT * FROM webhooks.endpoint_test('ep_nope')", &[])
        .unwrap_err();
    assert!(msg(&e).contains("endpoint \"ep_nope\" not found"), "{e}");
}

#[test]
fn an_idempotency_key_returns_the_first_event_within_the_ttl_only() {
    let c = Cluster::start(&["webhooks.ttl = '3s'"]);
    let rx = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.*"]);
    let key_publish = |db: &mut postgres::Client, tenant: Option<&str>| -> String {
        db.query_one(
            "SELECT webhooks.webhook_publish('user.created', '{}', $1, idempotency_key => 'signup-7')",
            &[&tenant],
        )
        .unwrap()
        .get(0)
    };
    let first = key_publish(&mut db, None);
    let again = key_publish(&mut db, None);
    assert_eq!(
        first, again,
        "the retry of the application's transaction gets the first event"
    );
    let other = key_publish(&mut db, Some("acme"));
    assert_ne!(other, first, "keys are per tenant");
    let deliveries: i64 = db
        .query_one(
            "SELECT count(*) FROM webhooks.deliveries d JOIN webhooks.events e ON e.id = d.event_id
             WHERE e.idempotency_key = 'signup-7' AND e.tenant_id IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(deliveries, 1);
    std::thread::sleep(Duration::from_millis(3200));
    let later = key_publish(&mut db, None);
    assert_ne!(later, first, "after webhooks.ttl the key is free again");
    let e = db
        .query_one(
            "SELECT webhooks.webhook_publish('user.created', '{}', idempotency_key => '')",
            &[],
        )
        .unwrap_err();
    assert!(
        msg(&e).contains("idempotency_key must be 1 to 255 bytes"),
        "{e}"
    );
    let e = db
        .query_one(
            "SELECT webhooks.webhook_publish('webhook.endpoint.disabled', '{}')",
            &[],
        )
        .unwrap_err();
    assert!(msg(&e).contains("only the extension publishes it"), "{e}");
}

#[test]
fn a_rate_limit_spaces_the_deliveries_to_an_endpoint() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut db = c.client();
    let (ep, _) = c.endpoint(&mut db, &rx.url, &["user.*"]);
    db.execute(
        "SELECT webhooks.endpoint_update($1, rate_limit => 5)",
        &[&ep],
    )
    .unwrap();
    db.batch_execute(
        "SELECT webhooks.webhook_publish('user.created', jsonb_build_object('i', g)) FROM generate_series(1, 20) g",
    )
    .unwrap();
    wait_for("all twenty", T, || (rx.all().len() == 20).then_some(()));
    // When each attempt started (before connect and TLS), as the worker recorded it.
    let started: Vec<f64> = wait_for("twenty attempts recorded", T, || {
        let t: Vec<f64> = db
            .query(
                "SELECT extract(epoch FROM started_at)::float8 FROM webhooks.attempts ORDER BY started_at",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        (t.len() == 20).then_some(t)
    });
    // One second of burst (5), then 5 per second: the last starts about 3 s after the first.
    let span = started[19] - started[0];
    assert!(span >= 2.4, "20 deliveries at 5/s took {span:.2} s");
    // A GCRA with one second of burst: any window of w seconds holds at most 5 * (w + 1).
    for (i, a) in started.iter().enumerate() {
        let within = started[i..].iter().filter(|b| *b - a < 1.0).count();
        assert!(
            within <= 10,
            "{within} deliveries started within one second"
        );
    }
    db.execute(
        "SELECT webhooks.endpoint_update($1, rate_limit => 0)",
        &[&ep],
    )
    .unwrap();
    let limit: Option<i32> = db
        .query_one(
            "SELECT rate_limit FROM webhooks.endpoints WHERE id = $1",
            &[&ep],
        )
        .unwrap()
        .get(0);
    assert_eq!(limit, None, "0 lifts the limit");
}

/// The exporter Debian ships, run against a test cluster with the repository's queries file.
struct Exporter(std::process::Child, u16);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Exporter {
    fn start(c: &Cluster) -> Exporter {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let queries = concat!(env!("CARGO_MANIFEST_DIR"), "/../monitoring/queries.yaml");
        let child = std::process::Command::new("/usr/bin/prometheus-postgres-exporter")
            .env(
                "DATA_SOURCE_NAME",
                format!(
                    "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=disable",
                    c.port
                ),
            )
            .arg(format!("--extend.query-path={queries}"))
            .arg("--disable-default-metrics")
            .arg("--disable-settings-metrics")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus-postgres-exporter (scripts/setup.sh installs it)");
        Exporter(child, port)
    }

    fn scrape(&self) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    }
}

/// The value of series `name` whose labels include `endpoint="<endpoint>"`.
fn series(page: &str, name: &str, endpoint: &str) -> Option<f64> {
    let label = format!("endpoint=\"{endpoint}\"");
    page.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_metrics_view_and_the_exporter_queries_show_what_happened() {
    let c = Cluster::start(&["webhooks.retry_schedule = ''"]);
    let ok = Receiver::ok();
    let down = Receiver::scripted(|_, _| Reply::Status(503, "down"));
    let mut db = c.client();
    let (good, _) = c.endpoint(&mut db, &ok.url, &["user.created"]);
    let (bad, _) = c.endpoint(&mut db, &down.url, &["user.created"]);
    // A third endpoint, disabled, holds a backlog.
    let (held, _) = c.endpoint(&mut db, &ok.url, &["user.updated"]);
    db.execute("SELECT webhooks.endpoint_disable($1)", &[&held])
        .unwrap();
    for _ in 0..3 {
        publish(&mut db, "user.created");
    }
    wait_for("six outcomes recorded", T, || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM webhooks.deliveries WHERE status IN ('succeeded', 'dead')",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 6).then_some(())
    });
    let row = db
        .query_one(
            "SELECT succeeded, dead, attempts_5m, answered_2xx_5m, answered_5xx_5m,
                    latency_p50_ms IS NOT NULL, worker_running
             FROM webhooks.metrics WHERE endpoint_id IS NULL",
            &[],
        )
        .unwrap();
    let overall: (i64, i64, i64, i64, i64, bool, Option<bool>) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
    );
    assert_eq!(overall, (3, 3, 6, 3, 3, true, Some(true)));

    let exporter = Exporter::start(&c);
    let page = wait_for("the exporter's page with webhooks series", T, || {
        exporter
            .scrape()
            .filter(|p| p.contains("webhooks_succeeded{"))
    });
    let v = |name: &str, ep: &str| series(&page, name, ep);
    assert_eq!(v("webhooks_succeeded", &good), Some(3.0), "{page}");
    assert_eq!(v("webhooks_dead", &bad), Some(3.0));
    assert_eq!(v("webhooks_answered_5xx_5m", &bad), Some(3.0));
    assert_eq!(v("webhooks_answered_2xx_5m", "all"), Some(3.0));
    assert_eq!(v("webhooks_attempts_5m", "all"), Some(6.0));
    assert_eq!(v("webhooks_enabled", &held), Some(0.0));
    assert!(v("webhooks_failing_seconds", &bad).unwrap_or(0.0) > 0.0);
    assert_eq!(v("webhooks_failing_seconds", &good), Some(0.0));
    assert!(v("webhooks_latency_p99_ms", &good).unwrap_or(0.0) > 0.0);
    assert!(page
        .lines()
        .any(|l| l.starts_with("webhooks_worker_up{") && l.ends_with(" 1")));
}

#[test]
fn a_failed_synchronous_send_still_raises_wh001_and_leaves_its_attempt_for_the_operator() {
    let c = Cluster::start(&[]);
    let down = Receiver::scripted(|_, _| Reply::Status(502, "{\"sms\": \"provider down\"}"));
    let mut db = c.client();
    let (ep, _) = c.endpoint(&mut db, &down.url, &["sms.created"]);
    let e = db
        .query_one(
            "SELECT webhooks.webhook_send_sync('sms.created', '{\"phoneNumber\": \"+15555550100\", \"code\": \"482913\"}')",
            &[],
        )
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("WH001"), "{e}");
    // The caller's transaction rolled back; the worker records the attempt on its own.
    let (status, code, error, attempt_error): (
        String,
        Option<i32>,
        Option<String>,
        Option<String>,
    ) = wait_for("the failed attempt recorded", T, || {
        db.query_opt(
            "SELECT d.status, d.last_status, d.last_error, a.error
                 FROM webhooks.deliveries d JOIN webhooks.attempts a ON a.delivery_id = d.id
                 WHERE d.endpoint_id = $1",
            &[&ep],
        )
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    });
    assert_eq!((status.as_str(), code), ("dead", Some(502)));
    assert!(error.unwrap_or_default().contains("502"));
    assert!(attempt_error.unwrap_or_default().contains("502"));
    let health: (i64, Option<String>) = db
        .query_one(
            "SELECT dead, last_error FROM webhooks.endpoint_health WHERE endpoint_id = $1",
            &[&ep],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(health.0, 1);
    assert!(health.1.unwrap_or_default().contains("502"));
    let kept: String = db
        .query_one(
            "SELECT data::text FROM webhooks.events WHERE type = 'sms.created'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept, "{}", "the code the caller withdrew is not kept");

    // A caller that catches the error and commits keeps its own rows: recorded once.
    db.batch_execute(
        "DO $$ BEGIN
             PERFORM webhooks.webhook_send_sync('sms.created', '{\"code\": \"1\"}');
         EXCEPTION WHEN SQLSTATE 'WH001' THEN NULL;
         END $$;
         SELECT webhooks.webhook_send_sync_result('sms.created', '{\"code\": \"2\"}');",
    )
    .unwrap();
    wait_for("three failures, each once", T, || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM webhooks.deliveries WHERE endpoint_id = $1",
                &[&ep],
            )
            .unwrap()
            .get(0);
        (n == 3).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM webhooks.attempts a JOIN webhooks.deliveries d ON d.id = a.delivery_id
             WHERE d.endpoint_id = $1",
            &[&ep],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 3, "no failure recorded twice");
}

#[test]
fn operational_events_reach_filtered_endpoints_through_the_worker_s_expansion() {
    // The statement that records outcomes evaluates no tenant's filter: an operational event's
    // filtered endpoints get it through a fanout, matched by the worker's expansion.
    let c = Cluster::start(&["webhooks.retry_schedule = ''"]);
    let down = Receiver::scripted(|_, _| Reply::Status(500, "down"));
    let (all, matching, other) = (Receiver::ok(), Receiver::ok(), Receiver::ok());
    let mut db = c.client();
    let (bad, _) = c.endpoint(&mut db, &down.url, &["user.created"]);
    let create = |db: &mut postgres::Client, url: &str, filter: Option<String>| {
        db.execute(
            "SELECT webhooks.endpoint_create($1, '{webhook.delivery.dead}', filter => $2)",
            &[&url, &filter],
        )
        .unwrap();
    };
    create(&mut db, &all.url, None);
    create(
        &mut db,
        &matching.url,
        Some(format!("$.data.endpoint_id == \"{bad}\"")),
    );
    create(
        &mut db,
        &other.url,
        Some("$.data.endpoint_id == \"ep_nobody\"".into()),
    );
    for _ in 0..3 {
        publish(&mut db, "user.created");
    }
    wait_for("three dead letters at the unfiltered endpoint", T, || {
        (all.count() == 3).then_some(())
    });
    wait_for("and at the one whose filter they pass", T, || {
        (matching.count() == 3).then_some(())
    });
    for r in matching.all() {
        assert_eq!(r.json()["type"], "webhook.delivery.dead");
        assert_eq!(r.json()["data"]["endpoint_id"], bad.as_str());
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(other.count(), 0, "a filter they do not pass keeps them out");
    let left: i64 = db
        .query_one("SELECT count(*) FROM webhooks_internal.fanouts", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the fanouts are written and gone");
}
