// #[pg_test]s: SQL behaviour inside one rolled-back transaction each (the worker never sees
// these rows; delivery is covered by pgrx-tests/).
use pgrx::prelude::*;

fn one<T: FromDatum + IntoDatum>(sql: &str) -> Option<T> {
    Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Runs `sql` in a subtransaction and returns its error message (with detail and hint), or None.
fn err(sql: &str) -> Option<String> {
    // Created once per test, before any SET ROLE, and owned by the test's superuser.
    if one::<bool>("SELECT to_regprocedure('pg_temp.err(text)') IS NULL") == Some(true) {
        run(r#"CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $f$
        DECLARE m text; h text; d text;
        BEGIN EXECUTE q; RETURN NULL;
        EXCEPTION WHEN others THEN
            GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, h = PG_EXCEPTION_HINT, d = PG_EXCEPTION_DETAIL;
            RETURN m || coalesce(' DETAIL: ' || nullif(d, ''), '') || coalesce(' HINT: ' || nullif(h, ''), '');
        END $f$"#);
    }
    Spi::get_one_with_args::<String>("SELECT pg_temp.err($1)", &[sql.into()]).unwrap()
}

fn expect_err(sql: &str, needle: &str) {
    match err(sql) {
        Some(m) => assert!(m.contains(needle), "{sql}: error {m:?} does not mention {needle:?}"),
        None => panic!("{sql}: expected an error mentioning {needle:?}"),
    }
}

fn endpoint(url: &str, types: &str, tenant: Option<&str>) -> String {
    let t = tenant.map(|t| format!("'{t}'")).unwrap_or("NULL".into());
    one::<String>(&format!("SELECT id FROM webhooks.endpoint_create('{url}', '{types}', {t})")).unwrap()
}

fn count(sql: &str) -> i64 {
    one::<i64>(sql).unwrap_or(0)
}

#[pg_test]
fn sign_and_verify_match_the_standard_webhooks_example() {
    let sig = one::<String>(
        r#"SELECT webhooks.webhook_sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}')"#,
    );
    assert_eq!(sig.as_deref(), Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
    // A fresh timestamp verifies; a tampered body or an old timestamp does not.
    run("CREATE TEMP TABLE m AS SELECT extract(epoch FROM now())::bigint AS ts, 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'::text AS s");
    assert_eq!(one::<bool>("SELECT webhooks.webhook_verify(s, 'id1', ts, 'body', 'v1,bad ' || webhooks.webhook_sign(s, 'id1', ts, 'body')) FROM m"), Some(true));
    assert_eq!(one::<bool>("SELECT webhooks.webhook_verify(s, 'id1', ts, 'body!', webhooks.webhook_sign(s, 'id1', ts, 'body')) FROM m"), Some(false));
    assert_eq!(one::<bool>("SELECT webhooks.webhook_verify(s, 'id1', ts - 600, 'body', webhooks.webhook_sign(s, 'id1', ts - 600, 'body')) FROM m"), Some(false));
    assert_eq!(
        one::<bool>("SELECT webhooks.webhook_verify(s, jsonb_build_object('Webhook-Id', 'id1', 'Webhook-Timestamp', ts::text, 'Webhook-Signature', webhooks.webhook_sign(s, 'id1', ts, 'b')), 'b') FROM m"),
        Some(true)
    );
    expect_err("SELECT webhooks.webhook_sign('nope', 'a', 1, 'b')", "whsec_");
}

#[pg_test]
fn publish_checks_its_input_and_names_the_problem() {
    expect_err("SELECT webhooks.webhook_publish('user.exploded', '{}')", "unknown event type \"user.exploded\"");
    expect_err("SELECT webhooks.webhook_publish('user.exploded', '{}')", "event_type_register");
    expect_err("SELECT webhooks.webhook_publish('user.created', '[1,2]')", "data must be a JSON object, got array");
    expect_err("SELECT webhooks.webhook_publish('user.created', NULL)", "data must be a JSON object");
    expect_err("SELECT webhooks.webhook_publish('sms.created', '{}')", "webhook_send_sync");
    expect_err("SELECT webhooks.webhook_publish('user.created', '{}', actor => '\"me\"')", "actor must be a JSON object");
    run("SET webhooks.max_payload = 1024");
    expect_err("SELECT webhooks.webhook_publish('user.created', jsonb_build_object('x', repeat('a', 2000)))", "webhooks.max_payload");
    expect_err("SELECT webhooks.webhook_send_sync('user.created', '{}')", "asynchronously");
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 0, "failed publishes leave nothing");
}

#[pg_test]
fn publish_fans_out_to_matching_enabled_endpoints_of_the_tenant() {
    let all = endpoint("https://a.example.com/h", "{*}", None);
    let users = endpoint("https://b.example.com/h", "{user.*}", None);
    let exact = endpoint("https://c.example.com/h", "{password.updated}", None);
    let acme = endpoint("https://d.example.com/h", "{*}", Some("acme"));
    let off = endpoint("https://e.example.com/h", "{*}", None);
    run(&format!("SELECT webhooks.endpoint_disable('{off}')"));
    let id = one::<String>("SELECT webhooks.webhook_publish('user.registration.completed', '{\"u\":1}', 'globex')").unwrap();
    assert!(id.starts_with("evt_") && id.len() == 30);
    let got = |ev: &str| -> Vec<String> {
        Spi::connect(|c| {
            c.select("SELECT endpoint_id FROM webhooks.deliveries WHERE event_id = $1 ORDER BY endpoint_id", None, &[ev.into()])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap())
                .collect()
        })
    };
    let mut want = vec![all.clone(), users.clone()];
    want.sort();
    assert_eq!(got(&id), want);
    let id2 = one::<String>("SELECT webhooks.webhook_publish('password.updated', '{}', 'acme')").unwrap();
    let mut want = vec![all.clone(), exact.clone(), acme.clone()];
    want.sort();
    assert_eq!(got(&id2), want);
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries WHERE status = 'pending' AND attempts = 0"), 5);
    // the event row carries what the envelope needs
    assert_eq!(one::<String>(&format!("SELECT type || '|' || version || '|' || tenant_id FROM webhooks.events WHERE id = '{id}'")).as_deref(), Some("user.registration.completed|1|globex"));
    // ids sort by publish time
    assert!(id < id2);
}

#[pg_test]
fn endpoints_are_validated_on_every_write() {
    run("SET webhooks.allow_private_targets = off; SET webhooks.require_https = on");
    expect_err("SELECT webhooks.endpoint_create('http://hooks.example.com/x')", "require_https");
    expect_err("SELECT webhooks.endpoint_create('https://169.254.169.254/latest')", "allow_private_targets");
    expect_err("SELECT webhooks.endpoint_create('https://localhost/x')", "localhost");
    expect_err("SELECT webhooks.endpoint_create('https://2130706433/x')", "loopback");
    expect_err("SELECT webhooks.endpoint_create('not a url')", "not a valid absolute URL");
    expect_err("SELECT webhooks.endpoint_create('https://h.example.com', '{user.nope}')", "unknown event type \"user.nope\"");
    expect_err("SELECT webhooks.endpoint_create('https://h.example.com', '{User.*}')", "not a valid event type name");
    expect_err("SELECT webhooks.endpoint_create('https://h.example.com', '{}')", "at least one");
    // plain INSERT/UPDATE go through the same checks
    expect_err("INSERT INTO webhooks.endpoints (url) VALUES ('https://10.0.0.1/')", "private");
    let id = endpoint("https://h.example.com/in", "{user.*}", None);
    expect_err(&format!("UPDATE webhooks.endpoints SET url = 'https://[::1]/' WHERE id = '{id}'"), "loopback");
    expect_err(&format!("SELECT webhooks.endpoint_update('{id}', headers => '{{\"Webhook-Signature\": \"x\"}}')"), "cannot be overridden");
    expect_err(&format!("SELECT webhooks.endpoint_update('{id}', headers => '{{\"X-Ok\": \"a\\r\\nb\"}}')"), "line breaks");
    expect_err("SELECT webhooks.endpoint_update('ep_missing', url => 'https://x.example.com')", "endpoint \"ep_missing\" not found");
    expect_err("SELECT webhooks.endpoint_delete('ep_missing')", "not found");
    // secrets: whsec_ + base64 of 32 random bytes, unique
    let s = one::<String>(&format!("SELECT secret FROM webhooks.endpoints WHERE id = '{id}'")).unwrap();
    assert!(s.starts_with("whsec_") && s.len() == 6 + 44, "{s}");
    expect_err(&format!("UPDATE webhooks.endpoints SET secret = 'whsec_c2hvcnQ=' WHERE id = '{id}'"), "24-64 bytes");
}

#[pg_test]
fn bad_settings_are_refused_by_name() {
    expect_err("SET webhooks.timeout = 'soon'", "webhooks.timeout");
    expect_err("SET webhooks.timeout = '5 parsecs'", "unknown unit");
    expect_err("SET webhooks.max_payload = 10", "webhooks.max_payload");
    run("SET webhooks.timeout = '3s'");
    assert_eq!(one::<String>("SHOW webhooks.timeout").as_deref(), Some("3s"));
}

#[pg_test]
fn rotation_keeps_the_previous_secret_for_the_grace_period() {
    let id = endpoint("https://h.example.com/in", "{*}", None);
    let old = one::<String>(&format!("SELECT secret FROM webhooks.endpoints WHERE id = '{id}'")).unwrap();
    let new = one::<String>(&format!("SELECT webhooks.endpoint_rotate_secret('{id}', '1 hour')")).unwrap();
    assert_ne!(old, new);
    assert_eq!(
        one::<bool>(&format!("SELECT previous_secret = '{old}' AND secret = '{new}' AND previous_secret_expires_at > now() + '59 minutes' FROM webhooks.endpoints WHERE id = '{id}'")),
        Some(true)
    );
    expect_err(&format!("SELECT webhooks.endpoint_rotate_secret('{id}', '-1 hour')"), "grace");
}

#[pg_test]
fn catalogue_ships_the_seed_events_and_accepts_new_ones() {
    assert_eq!(count("SELECT count(*) FROM webhooks.event_types WHERE builtin"), 62);
    assert_eq!(
        one::<String>("SELECT string_agg(name, ',' ORDER BY name) FROM webhooks.event_types WHERE mode = 'sync'").as_deref(),
        Some("action.verify,email.created,push.created,sms.created")
    );
    assert_eq!(count("SELECT count(*) FROM webhooks.event_types WHERE mode = 'batched'"), 2);
    run("SELECT webhooks.event_type_register('invoice.paid', 'An invoice was paid.')");
    assert_eq!(one::<String>("SELECT category FROM webhooks.event_types WHERE name = 'invoice.paid'").as_deref(), Some("invoice"));
    assert!(one::<String>("SELECT webhooks.webhook_publish('invoice.paid', '{}')").is_some());
    expect_err("SELECT webhooks.event_type_register('Bad Name')", "not a valid event type name");
    expect_err("SELECT webhooks.event_type_register('x.y', mode => 'eventually')", "mode must be");
}

#[pg_test]
fn tracked_tables_publish_row_events_without_secrets() {
    run("CREATE TABLE users (id int PRIMARY KEY, tenant text, email text, password_hash text, totp_secret text)");
    expect_err("SELECT webhooks.track_table('users', 'member')", "member.created");
    expect_err("SELECT webhooks.track_table('users', 'user', '{nope}')", "column \"nope\" does not exist");
    run("SELECT webhooks.track_table('users', 'user', '{password_hash,totp_secret}', 'tenant')");
    endpoint("https://h.example.com/in", "{user.*}", None);
    run("INSERT INTO users VALUES (7, 'acme', 'a@x.io', 'argon2$h', 'JBSWY3DP')");
    run("UPDATE users SET email = 'b@x.io' WHERE id = 7");
    run("UPDATE users SET password_hash = 'argon2$new' WHERE id = 7"); // excluded only: nothing
    run("DELETE FROM users WHERE id = 7");
    let rows: Vec<(String, String, String, String)> = Spi::connect(|c| {
        c.select("SELECT type, data::text, tenant_id, entity_key FROM webhooks.events ORDER BY id", None, &[])
            .unwrap()
            .map(|r| (r.get(1).unwrap().unwrap(), r.get(2).unwrap().unwrap(), r.get(3).unwrap().unwrap(), r.get(4).unwrap().unwrap()))
            .collect()
    });
    let types: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(types, ["user.created", "user.updated", "user.deleted"]);
    for (_, data, tenant, key) in &rows {
        assert!(!data.contains("argon2") && !data.contains("JBSWY3DP") && !data.contains("password_hash"), "{data}");
        assert_eq!(tenant, "acme");
        assert_eq!(key, "user:7");
    }
    let upd: serde_json::Value = serde_json::from_str(&rows[1].1).unwrap();
    assert_eq!(upd["changed"], serde_json::json!(["email"]));
    assert_eq!(upd["previous"]["email"], "a@x.io");
    assert_eq!(upd["user"]["email"], "b@x.io");
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries"), 3);
    // the actor of row events comes from the session
    run("SET webhooks.actor = '{\"kind\": \"admin\", \"id\": \"adm_1\"}'");
    run("INSERT INTO users VALUES (8, 'acme', 'c@x.io', 'h', 's')");
    assert_eq!(one::<String>("SELECT actor->>'id' FROM webhooks.events WHERE type = 'user.created' AND entity_key = 'user:8'").as_deref(), Some("adm_1"));
    run("SELECT webhooks.untrack_table('users')");
    run("INSERT INTO users VALUES (9, 'acme', 'd@x.io', 'h', 's')");
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 4);
}

#[pg_test]
fn retry_and_replay_refuse_what_makes_no_sense() {
    let ep = endpoint("https://h.example.com/in", "{*}", None);
    let ev = one::<String>("SELECT webhooks.webhook_publish('user.created', '{}')").unwrap();
    run(&format!("UPDATE webhooks.deliveries SET status = 'succeeded', attempts = 1, next_attempt_at = NULL, completed_at = now() WHERE event_id = '{ev}'"));
    let did = one::<i64>(&format!("SELECT id FROM webhooks.deliveries WHERE event_id = '{ev}'")).unwrap();
    expect_err(&format!("SELECT webhooks.delivery_retry({did})"), "event_replay");
    expect_err("SELECT webhooks.delivery_retry(-1)", "not found");
    expect_err("SELECT webhooks.event_replay('evt_nope')", "not found");
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks.event_replay('{ev}', '{ep}')")), 1);
    run(&format!("UPDATE webhooks.deliveries SET status = 'dead', next_attempt_at = NULL WHERE id = {did}"));
    assert_eq!(one::<String>(&format!("SELECT status FROM webhooks.delivery_retry({did})")).as_deref(), Some("pending"));
    // the state machine refuses impossible rows
    expect_err(&format!("UPDATE webhooks.deliveries SET status = 'succeeded' WHERE id = {did}"), "deliveries_state");
}

#[pg_test]
fn roles_get_exactly_their_rights() {
    err("SELECT 1");
    run("CREATE ROLE wh_nobody; CREATE ROLE wh_pub IN ROLE webhooks_publisher; CREATE ROLE wh_admin IN ROLE webhooks_admin");
    let ep = endpoint("https://h.example.com/in", "{*}", None);
    run("GRANT USAGE ON SCHEMA webhooks TO wh_nobody");
    run("SET ROLE wh_nobody");
    for sql in [
        "SELECT webhooks.webhook_publish('user.created', '{}')",
        "SELECT webhooks.endpoint_create('https://x.example.com')",
        "SELECT webhooks.webhook_send_sync('sms.created', '{}')",
        "SELECT * FROM webhooks.endpoints",
        "SELECT * FROM webhooks.events",
        "SELECT * FROM webhooks.dead_letters",
        "SELECT * FROM webhooks.status()",
        "SELECT webhooks.delivery_retry(1)",
    ] {
        expect_err(sql, "permission denied");
    }
    run("RESET ROLE; SET ROLE wh_pub");
    assert!(one::<String>("SELECT webhooks.webhook_publish('user.created', '{}')").is_some());
    expect_err("SELECT secret FROM webhooks.endpoints", "permission denied");
    expect_err("SELECT * FROM webhooks._claim(1, '1 minute', false)", "permission denied");
    expect_err("SELECT webhooks.endpoint_create('https://x.example.com')", "permission denied");
    expect_err(&format!("SELECT webhooks.endpoint_rotate_secret('{ep}')"), "permission denied");
    run("RESET ROLE; SET ROLE wh_admin");
    assert!(one::<String>(&format!("SELECT secret FROM webhooks.endpoints WHERE id = '{ep}'")).is_some());
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries"), 1);
    run("RESET ROLE");
}

#[pg_test]
fn a_tenant_sees_and_changes_only_its_own_rows() {
    err("SELECT 1");
    run("CREATE ROLE wh_tadmin IN ROLE webhooks_admin");
    let mine = endpoint("https://a.example.com/h", "{*}", Some("acme"));
    let theirs = endpoint("https://b.example.com/h", "{*}", Some("globex"));
    run("SELECT webhooks.webhook_publish('user.created', '{}', 'globex')");
    run("SET ROLE wh_tadmin; SET webhooks.tenant_id = 'acme'");
    assert_eq!(count("SELECT count(*) FROM webhooks.endpoints"), 1);
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 0);
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries"), 0);
    assert_eq!(count("SELECT count(*) FROM webhooks.endpoint_health"), 1);
    expect_err(&format!("SELECT webhooks.endpoint_update('{theirs}', url => 'https://evil.example.com')"), "not found");
    expect_err(&format!("SELECT webhooks.endpoint_delete('{theirs}')"), "not found");
    expect_err(&format!("SELECT webhooks.endpoint_rotate_secret('{theirs}')"), "not found");
    expect_err(&format!("SELECT webhooks.endpoint_disable('{theirs}')"), "not found");
    run(&format!("UPDATE webhooks.endpoints SET description = 'x' WHERE id = '{theirs}'"));
    expect_err("SELECT webhooks.endpoint_create('https://c.example.com', tenant_id => 'globex')", "does not match");
    expect_err("SELECT webhooks.webhook_publish('user.created', '{}', 'globex')", "does not match");
    // created without a tenant, an endpoint belongs to the session's tenant
    assert_eq!(one::<String>("SELECT tenant_id FROM webhooks.endpoint_create('https://c.example.com/h')").as_deref(), Some("acme"));
    assert!(one::<String>("SELECT webhooks.webhook_publish('user.created', '{}')").is_some());
    assert_eq!(count("SELECT count(*) FROM webhooks.events WHERE tenant_id = 'acme'"), 1);
    run("RESET webhooks.tenant_id; RESET ROLE");
    assert_eq!(one::<String>(&format!("SELECT description FROM webhooks.endpoints WHERE id = '{theirs}'")), None);
    assert_eq!(count("SELECT count(*) FROM webhooks.endpoints"), 3);
    let _ = mine;
}

#[pg_test]
fn deletes_cascade_without_foreign_keys() {
    let a = endpoint("https://a.example.com/h", "{*}", None);
    let b = endpoint("https://b.example.com/h", "{*}", None);
    let ev = one::<String>("SELECT webhooks.webhook_publish('user.created', '{}')").unwrap();
    run(&format!(
        "INSERT INTO webhooks.attempts (delivery_id, attempt, started_at) SELECT id, 1, now() FROM webhooks.deliveries WHERE endpoint_id = '{a}'"
    ));
    run(&format!("SELECT webhooks.endpoint_delete('{a}')"));
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries"), 1);
    assert_eq!(count("SELECT count(*) FROM webhooks.attempts"), 0);
    run(&format!("DELETE FROM webhooks.events WHERE id = '{ev}'"));
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks.deliveries WHERE endpoint_id = '{b}'")), 0);
}

#[pg_test]
fn a_rolled_back_publish_leaves_nothing() {
    endpoint("https://h.example.com/in", "{*}", None);
    // A subtransaction that publishes, then fails: as if the caller's transaction rolled back.
    assert!(err("DO $$ BEGIN PERFORM webhooks.webhook_publish('user.created', '{}'); RAISE EXCEPTION 'app failed'; END $$")
        .unwrap()
        .contains("app failed"));
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 0);
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries"), 0);
}
