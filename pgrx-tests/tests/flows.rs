//! End to end: synchronous events, batches, ordering, rotation, the outbound guard at delivery
//! time, settings reload, tracked tables and retention.

use std::time::Duration;
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::receiver::{Receiver, Reply, Request};
use webhooks_e2e::wait_for;

const T: Duration = Duration::from_secs(30);

fn verify(secret: &str, req: &Request) -> bool {
    webhooks_e2e::verify_signature(secret, req)
}

#[test]
fn sync_events_return_answers_and_fail_the_caller_on_any_non_2xx() {
    let c = Cluster::start(&["webhooks.timeout = '1s'"]);
    let ok = Receiver::scripted(|_, _| Reply::Status(200, "{\"delivered\":true}"));
    let mut db = c.client();
    let (ep_ok, _) = c.endpoint(&mut db, &ok.url, &["sms.created"]);
    let answer: serde_json::Value = db
        .query_one("SELECT webhooks.webhook_send_sync('sms.created', '{\"phone\":\"+6421000\",\"code\":\"123456\"}')::text", &[])
        .map(|r| serde_json::from_str(&r.get::<_, String>(0)).unwrap())
        .unwrap();
    assert_eq!(ok.count(), 1, "delivered before the call returned");
    assert_eq!(answer["responses"][0]["status"], 200);
    assert_eq!(answer["responses"][0]["body"]["delivered"], true);
    assert_eq!(answer["responses"][0]["endpoint_id"], ep_ok.as_str());
    assert_eq!(ok.all()[0].json()["data"]["code"], "123456");

    // Nobody subscribed: an error of its own.
    let e = db
        .execute(
            "SELECT webhooks.webhook_send_sync('push.created', '{}')",
            &[],
        )
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "WH002", "{e:?}");

    // A failing subscriber fails the caller's transaction, rows it wrote included.
    let bad = Receiver::scripted(|_, _| Reply::Status(500, "no"));
    let (ep_bad, _) = c.endpoint(&mut db, &bad.url, &["email.created"]);
    db.batch_execute("CREATE TABLE challenges (id int)")
        .unwrap();
    let mut tx = db.transaction().unwrap();
    tx.execute("INSERT INTO challenges VALUES (1)", &[])
        .unwrap();
    let e = tx
        .execute(
            "SELECT webhooks.webhook_send_sync('email.created', '{\"to\":\"a@b.c\"}')",
            &[],
        )
        .unwrap_err();
    drop(tx);
    let db_err = e.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "WH001");
    assert!(
        db_err.message().contains(&ep_bad) && db_err.message().contains("HTTP 500"),
        "{}",
        db_err.message()
    );
    let n: i64 = db
        .query_one("SELECT count(*) FROM challenges", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the caller's transaction rolled back");

    // A hanging subscriber times out within webhooks.timeout.
    let hang = Receiver::scripted(|_, _| Reply::Slow(Duration::from_secs(5)));
    c.endpoint(&mut db, &hang.url, &["action.verify"]);
    let t0 = std::time::Instant::now();
    let e = db
        .execute(
            "SELECT webhooks.webhook_send_sync('action.verify', '{}')",
            &[],
        )
        .unwrap_err();
    assert!(
        e.as_db_error().unwrap().message().contains("timeout"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
}

#[test]
fn batched_endpoints_receive_signed_arrays() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut db = c.client();
    let (ep, secret) = c.endpoint(&mut db, &rx.url, &["challenge.log_created"]);
    db.execute(
        "SELECT webhooks.endpoint_update($1, batch_max => 10, batch_window => '1 second')",
        &[&ep],
    )
    .unwrap();
    db.execute("SELECT webhooks.webhook_publish('challenge.log_created', jsonb_build_object('i', g)) FROM generate_series(1, 25) g", &[])
        .unwrap();
    wait_for("25 events in batches", T, || {
        let n: usize = rx
            .all()
            .iter()
            .map(|r| r.json().as_array().map(|a| a.len()).unwrap_or(0))
            .sum();
        (n == 25).then_some(())
    });
    let reqs = rx.all();
    assert_eq!(reqs.len(), 3, "25 events, at most 10 per POST");
    let mut seen: Vec<i64> = Vec::new();
    for r in &reqs {
        assert!(verify(&secret, r), "each batch is signed as one message");
        assert!(r.header("webhook-id").starts_with("msg_"));
        for e in r.json().as_array().unwrap() {
            assert_eq!(e["type"], "challenge.log_created");
            seen.push(e["data"]["i"].as_i64().unwrap());
        }
    }
    seen.sort();
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
}

#[test]
fn ordered_endpoints_hold_back_only_the_failing_entity() {
    let c = Cluster::start(&[]);
    // The first attempt for user:1 fails; everything else succeeds.
    let rx = Receiver::scripted(|r, _| {
        let v = r.json();
        if v["data"]["user"] == 1 && v["data"]["step"] == 1 && r.header("webhook-attempt") == "1" {
            Reply::Status(500, "later")
        } else {
            Reply::Status(200, "ok")
        }
    });
    let mut db = c.client();
    let (ep, _) = c.endpoint(&mut db, &rx.url, &["user.*"]);
    db.execute(
        "SELECT webhooks.endpoint_update($1, ordered => true)",
        &[&ep],
    )
    .unwrap();
    for step in 1..=3 {
        for user in 1..=2 {
            db.execute(
                "SELECT webhooks.webhook_publish('user.updated', jsonb_build_object('user', $1::int, 'step', $2::int), entity_key => 'user:' || $1::int)",
                &[&user, &step],
            )
            .unwrap();
        }
    }
    wait_for("all succeeded", T, || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM webhooks.deliveries WHERE status = 'succeeded'",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 6).then_some(())
    });
    let got: Vec<(i64, i64, String)> = rx
        .all()
        .iter()
        .map(|r| {
            let v = r.json();
            (
                v["data"]["user"].as_i64().unwrap(),
                v["data"]["step"].as_i64().unwrap(),
                r.header("webhook-attempt").to_string(),
            )
        })
        .collect();
    let steps = |u: i64| -> Vec<i64> {
        got.iter()
            .filter(|g| g.0 == u && (g.2 == "1" || g.1 == 1))
            .map(|g| g.1)
            .collect()
    };
    assert_eq!(
        steps(1),
        [1, 1, 2, 3],
        "user 1 waits for its failed step 1: {got:?}"
    );
    assert_eq!(steps(2), [1, 2, 3]);
    // user 2 finished before user 1's retry came due
    let pos = |u: i64, s: i64, a: &str| {
        got.iter()
            .position(|g| g.0 == u && g.1 == s && g.2 == a)
            .unwrap()
    };
    assert!(pos(2, 3, "1") < pos(1, 1, "2"), "{got:?}");
}

#[test]
fn rotated_secrets_sign_with_both_until_the_grace_period_ends() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut db = c.client();
    let (ep, old) = c.endpoint(&mut db, &rx.url, &["*"]);
    let new: String = db
        .query_one(
            "SELECT webhooks.endpoint_rotate_secret($1, '3 seconds')",
            &[&ep],
        )
        .unwrap()
        .get(0);
    db.execute("SELECT webhooks.webhook_publish('user.created', '{}')", &[])
        .unwrap();
    wait_for("first", T, || (rx.count() == 1).then_some(()));
    let r = &rx.all()[0];
    assert_eq!(r.header("webhook-signature").split(' ').count(), 2);
    assert!(verify(&old, r) && verify(&new, r));
    std::thread::sleep(Duration::from_secs(4));
    db.execute("SELECT webhooks.webhook_publish('user.created', '{}')", &[])
        .unwrap();
    wait_for("second", T, || (rx.count() == 2).then_some(()));
    let r = &rx.all()[1];
    assert_eq!(r.header("webhook-signature").split(' ').count(), 1);
    assert!(verify(&new, r) && !verify(&old, r));
}

#[test]
fn the_outbound_guard_is_checked_again_at_delivery_and_settings_reload() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["*"]);
    // Endpoint written while private targets were allowed; then the guard is switched on.
    db.batch_execute("ALTER SYSTEM SET webhooks.allow_private_targets = off")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let id: String = db
        .query_one("SELECT webhooks.webhook_publish('user.created', '{}')", &[])
        .unwrap()
        .get(0);
    wait_for("a refused attempt", T, || {
        db.query_opt("SELECT a.error FROM webhooks.attempts a JOIN webhooks.deliveries d ON d.id = a.delivery_id WHERE d.event_id = $1", &[&id])
            .unwrap()
            .and_then(|r| r.get::<_, Option<String>>(0))
    });
    let e: String = db
        .query_one(
            "SELECT last_error FROM webhooks.deliveries WHERE event_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(
        e.contains("refused") && e.contains("allow_private_targets"),
        "{e}"
    );
    assert_eq!(rx.count(), 0, "a refused delivery is never a request");
    // Bad values are refused by name and the old value stays.
    let bad = db
        .batch_execute("ALTER SYSTEM SET webhooks.retry_schedule = '1m,soon'")
        .unwrap_err();
    assert!(
        bad.to_string().contains("webhooks.retry_schedule")
            || bad
                .as_db_error()
                .unwrap()
                .message()
                .contains("webhooks.retry_schedule"),
        "{bad:?}"
    );
    // Allowing it again takes effect on reload, without a restart; the waiting delivery goes out.
    let pid = c.worker_pid(&mut db);
    db.batch_execute("ALTER SYSTEM SET webhooks.allow_private_targets = on")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_for("the retried delivery", T, || {
        (rx.count() == 1).then_some(())
    });
    assert_eq!(c.worker_pid(&mut db), pid);
}

#[test]
fn a_tracked_users_table_reaches_the_receiver_and_retention_prunes() {
    let c = Cluster::start(&["webhooks.retention = '2s'"]);
    let rx = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.*"]);
    db.batch_execute(
        "CREATE TABLE users (id serial PRIMARY KEY, email text, password_hash text);
         SELECT webhooks.track_table('users', 'user', '{password_hash}');
         INSERT INTO users (email, password_hash) VALUES ('a@x.io', 'argon2$secret');
         UPDATE users SET email = 'b@x.io';
         DELETE FROM users;",
    )
    .unwrap();
    wait_for("three events", T, || (rx.count() == 3).then_some(()));
    // One batch is sent concurrently: only ordered endpoints promise order.
    let mut types: Vec<String> = rx
        .all()
        .iter()
        .map(|r| r.header("webhook-event-type").to_string())
        .collect();
    types.sort();
    assert_eq!(types, ["user.created", "user.deleted", "user.updated"]);
    assert!(rx.all().iter().all(|r| !r.body.contains("argon2")));
    let st = db
        .query_one(
            "SELECT worker_running, pending, dead FROM webhooks.status()",
            &[],
        )
        .unwrap();
    assert!(st.get::<_, bool>(0));
    // Housekeeping runs once per retention period (at most every minute).
    wait_for("pruned", Duration::from_secs(40), || {
        let n: i64 = db
            .query_one("SELECT count(*) FROM webhooks.deliveries", &[])
            .unwrap()
            .get(0);
        let e: i64 = db
            .query_one("SELECT count(*) FROM webhooks.events", &[])
            .unwrap()
            .get(0);
        (n == 0 && e == 0).then_some(())
    });
    // An administrator's pg_terminate_backend does not stop deliveries for good.
    let pid = c.worker_pid(&mut db).unwrap();
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let again = wait_for("the worker back", T, || {
        c.worker_pid(&mut db).filter(|p| *p != pid)
    });
    assert_ne!(again, pid);
    db.execute(
        "INSERT INTO users (email, password_hash) VALUES ('c@x.io', 'h')",
        &[],
    )
    .unwrap();
    wait_for("delivery after the restart", T, || {
        (rx.count() == 4).then_some(())
    });
}

#[test]
fn a_sync_send_stays_cancellable_and_returns_any_2xx_body() {
    let c = Cluster::start(&["webhooks.timeout = '20s'"]);
    // A 2xx whose JSON carries U+0000 (which jsonb cannot store) is still an answer.
    let nul = Receiver::scripted(|_, _| Reply::Status(200, "{\"note\":\"a\\u0000b\"}"));
    let mut db = c.client();
    c.endpoint(&mut db, &nul.url, &["sms.created"]);
    let answer: String = db
        .query_one(
            "SELECT webhooks.webhook_send_sync('sms.created', '{}')::text",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(answer.contains("\"note\": \"ab\""), "{answer}");
    // A receiver slower than the caller's statement_timeout: the caller is cancelled on time
    // (signals are not held blocked while the request runs).
    let hang = Receiver::scripted(|_, _| Reply::Slow(Duration::from_secs(15)));
    c.endpoint(&mut db, &hang.url, &["push.created"]);
    db.batch_execute("SET statement_timeout = '1s'").unwrap();
    let t0 = std::time::Instant::now();
    let e = db
        .execute(
            "SELECT webhooks.webhook_send_sync('push.created', '{}')",
            &[],
        )
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "57014", "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

/// A synchronous send has one deadline: its targets start at once (up to 32), and one whose
/// turn comes after webhooks.timeout is not sent. With 8 at a time, a tenant's admin who
/// subscribed 24 silent endpoints to the OTP type made every send take three timeouts.
#[test]
fn a_sync_send_lasts_about_one_timeout_however_many_endpoints_its_type_has() {
    let c = Cluster::start(&["webhooks.timeout = '2s'"]);
    let hang = Receiver::scripted(|_, _| Reply::Slow(Duration::from_secs(20)));
    let mut db = c.client();
    for _ in 0..24 {
        c.endpoint(&mut db, &hang.url, &["sms.created"]);
    }
    let t0 = std::time::Instant::now();
    let e = db
        .execute(
            "SELECT webhooks.webhook_send_sync('sms.created', '{\"code\": \"1\"}')",
            &[],
        )
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        e.to_string().contains("timeout")
            || e.as_db_error()
                .is_some_and(|d| d.message().contains("timeout")),
        "{e:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "24 targets took {took:?} with webhooks.timeout 2 s (twice it at most)"
    );
    // Every target was tried within that one timeout.
    wait_for("the 24 requests", T, || (hang.count() == 24).then_some(()));
}

/// A backfill and a bulk UPDATE of a tracked table: each statement publishes its rows in one
/// call, past 100 deliveries through a fanout that the worker turns into deliveries; every row
/// reaches both receivers, and the ordered one gets each user's events in order.
#[test]
fn a_backfill_and_a_bulk_update_reach_every_endpoint_in_entity_order() {
    let c = Cluster::start(&[]);
    let rx = Receiver::ok();
    let ordered_rx = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &rx.url, &["user.*"]);
    let (ordered, _) = c.endpoint(&mut db, &ordered_rx.url, &["user.*"]);
    db.execute(
        "SELECT webhooks.endpoint_update($1, ordered => true)",
        &[&ordered],
    )
    .unwrap();
    db.batch_execute(
        "CREATE TABLE users (id int PRIMARY KEY, email text, plan text, password_hash text);
         SELECT webhooks.track_table('users', 'user');
         INSERT INTO users SELECT g, 'u' || g || '@x.io', 'free', 'argon2$' || g FROM generate_series(1, 1500) g;
         UPDATE users SET plan = 'pro' WHERE id % 3 = 0;",
    )
    .unwrap();
    let updated: i64 = db
        .query_one(
            "SELECT count(*) FROM webhooks.events WHERE type = 'user.updated'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(updated, 500);
    wait_for(
        "2,000 events at each receiver",
        Duration::from_secs(60),
        || (rx.count() == 2000 && ordered_rx.count() == 2000).then_some(()),
    );
    let mut seen = std::collections::HashMap::new();
    for r in ordered_rx.all() {
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(!r.body.contains("argon2"), "{}", r.body);
        let id = body["data"]["user"]["id"].as_i64().unwrap();
        let ty = r.header("webhook-event-type").to_string();
        let before = seen.insert(id, ty.clone());
        if ty == "user.updated" {
            assert_eq!(before.as_deref(), Some("user.created"), "user {id}");
        } else {
            assert_eq!(before, None, "user {id}");
        }
    }
    let left: i64 = db
        .query_one("SELECT count(*) FROM webhooks_internal.fanouts", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// A receiver written from IntelliAuth's webhook page alone: the body's fields, the X-IntelliAuth-*
/// headers, and the hex HMAC-SHA256 of the raw body with the endpoint's secret (ring's HMAC,
/// not the extension's). A retry says so in the body and the header; a batched endpoint gets
/// an array of such bodies.
#[test]
fn an_hmac_hex_endpoint_receives_the_intelliauth_body_and_headers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = Cluster::start(&[]);
    let failed_once = std::sync::Arc::new(AtomicBool::new(false));
    let f = failed_once.clone();
    let rx = Receiver::scripted(move |_, _| {
        if f.swap(true, Ordering::SeqCst) {
            Reply::Status(200, "ok")
        } else {
            Reply::Status(503, "busy")
        }
    });
    let mut db = c.client();
    let row = db
        .query_one(
            "SELECT id, secret FROM webhooks.endpoint_create($1, '{user.*}', 'tnt_1',
                 format => 'hmac-hex', header_prefix => 'X-IntelliAuth-')",
            &[&rx.url],
        )
        .unwrap();
    let (ep, secret): (String, String) = (row.get(0), row.get(1));
    db.batch_execute(
        "INSERT INTO webhooks.tenants (id, slug) VALUES ('tnt_1', 'banking-cymmetri');
         SELECT webhooks.webhook_publish('user.signed_up',
             '{\"user\": {\"id\": \"usr_1\", \"email\": \"anita@cymmetri.com\", \"name\": \"Anita Singh\"}}',
             'tnt_1', actor => '{\"kind\": \"user\", \"id\": \"usr_1\", \"email\": \"anita@cymmetri.com\"}');",
    )
    .unwrap();
    wait_for("the retry", Duration::from_secs(20), || {
        (rx.count() == 2).then_some(())
    });
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (i, r) in rx.all().iter().enumerate() {
        let attempt = i as i64 + 1;
        let expected = hex(ring::hmac::sign(&key, r.body.as_bytes()).as_ref());
        assert_eq!(
            r.header("x-intelliauth-signature"),
            expected,
            "signature over the raw body"
        );
        let b = r.json();
        assert!(b["event_id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(
            r.header("x-intelliauth-event-id"),
            b["event_id"].as_str().unwrap()
        );
        assert_eq!(b["event_type"], "user.signed_up");
        assert_eq!(r.header("x-intelliauth-event-type"), "user.signed_up");
        let at = b["occurred_at"].as_str().unwrap();
        assert!(
            at.len() == 24 && at.ends_with('Z') && at.as_bytes()[19] == b'.',
            "{at}"
        );
        assert_eq!(
            b["tenant"],
            serde_json::json!({"id": "tnt_1", "slug": "banking-cymmetri"})
        );
        assert_eq!(b["actor"]["email"], "anita@cymmetri.com");
        assert_eq!(b["data"]["user"]["name"], "Anita Singh");
        assert_eq!(b["delivery"]["attempt"], attempt);
        assert_eq!(b["delivery"]["subscription_id"], ep.as_str());
        assert_eq!(
            r.header("x-intelliauth-delivery-attempt"),
            attempt.to_string()
        );
        let ts: i64 = r.header("x-intelliauth-timestamp").parse().unwrap();
        assert!((now - ts).abs() < 60, "{ts}");
        assert_eq!(
            r.header("webhook-signature"),
            "",
            "no Standard Webhooks headers"
        );
    }
    // Batched: an array of such bodies, signed as one; the default prefix is X-Webhook-.
    db.execute(
        "SELECT webhooks.endpoint_update($1, header_prefix => '', batch_max => 10, batch_window => '1 second')",
        &[&ep],
    )
    .unwrap();
    db.batch_execute(
        "SELECT webhooks.webhook_publish('user.updated', '{\"n\": 1}', 'tnt_1');
         SELECT webhooks.webhook_publish('user.updated', '{\"n\": 2}', 'tnt_1');",
    )
    .unwrap();
    wait_for("the batch", Duration::from_secs(20), || {
        (rx.count() == 3).then_some(())
    });
    let r = &rx.all()[2];
    assert_eq!(
        r.header("x-webhook-signature"),
        hex(ring::hmac::sign(&key, r.body.as_bytes()).as_ref())
    );
    let items = r.json();
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["data"]["n"], 1);
    assert_eq!(items[1]["delivery"]["subscription_id"], ep.as_str());
}

/// Content filters and a tracked table's condition, end to end: the receiver behind a filter
/// gets only the events it matches, and a tracked table sends only the rows its condition
/// picks (here: an email change), evaluated with the writer's rights.
#[test]
fn filters_and_conditions_decide_what_reaches_a_receiver() {
    let c = Cluster::start(&[]);
    let everything = Receiver::ok();
    let verified = Receiver::ok();
    let mut db = c.client();
    c.endpoint(&mut db, &everything.url, &["user.*"]);
    db.execute(
        "SELECT webhooks.endpoint_create($1, '{user.*}', filter => '$.data.user.email_verified == true')",
        &[&verified.url],
    )
    .unwrap();
    db.batch_execute(
        "CREATE ROLE writer LOGIN IN ROLE webhooks_publisher;
         CREATE TABLE accounts (id int PRIMARY KEY, email text, email_verified boolean, plan text);
         GRANT INSERT, UPDATE, SELECT ON accounts TO writer;
         SELECT webhooks.track_table('accounts', 'user',
             condition => 'NEW.email_verified IS DISTINCT FROM OLD.email_verified');",
    )
    .unwrap();
    let mut w = c.client_as("writer");
    w.batch_execute(
        "INSERT INTO accounts VALUES (1, 'a@x.io', false, 'free'), (2, 'b@x.io', true, 'free');
         UPDATE accounts SET plan = 'pro';
         UPDATE accounts SET email_verified = true WHERE id = 1;",
    )
    .unwrap();
    // created 1 (false), created 2 (true), updated 1 (now true); the plan change publishes nothing
    wait_for("three events", Duration::from_secs(10), || {
        (everything.count() == 3).then_some(())
    });
    wait_for("the verified ones", Duration::from_secs(10), || {
        (verified.count() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(everything.count(), 3);
    assert_eq!(verified.count(), 2);
    for r in verified.all() {
        assert_eq!(r.json()["data"]["user"]["email_verified"], true);
    }
}
