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
    // A tracked row over the limit fails its INSERT, naming the setting and the column to leave out.
    run("CREATE TABLE big_users (id int PRIMARY KEY, email text, avatar text)");
    run("SELECT webhooks.track_table('big_users', 'user')");
    let e = err("INSERT INTO big_users VALUES (1, 'a@b.c', repeat('x', 3000))").unwrap();
    assert!(e.contains("webhooks.max_payload") && e.contains("largest field is user.avatar") && e.contains("exclude_columns"), "{e}");
    expect_err("SELECT webhooks.webhook_send_sync('user.created', '{}')", "asynchronously");
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 0, "failed publishes leave nothing");
}

#[pg_test]
fn publish_fans_out_to_matching_enabled_endpoints_of_the_tenant() {
    // '*': platform endpoints, for every tenant; NULL: events without a tenant only.
    let all = endpoint("https://a.example.com/h", "{*}", Some("*"));
    let users = endpoint("https://b.example.com/h", "{user.*}", Some("*"));
    let exact = endpoint("https://c.example.com/h", "{password.updated}", None);
    let acme = endpoint("https://d.example.com/h", "{*}", Some("acme"));
    let off = endpoint("https://e.example.com/h", "{*}", Some("*"));
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
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(got(&id), sorted(vec![all.clone(), users.clone()]));
    let id2 = one::<String>("SELECT webhooks.webhook_publish('password.updated', '{}', 'acme')").unwrap();
    assert_eq!(got(&id2), sorted(vec![all.clone(), acme.clone()]));
    let id3 = one::<String>("SELECT webhooks.webhook_publish('password.updated', '{}')").unwrap();
    assert_eq!(got(&id3), sorted(vec![all.clone(), exact.clone()]));
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries WHERE status = 'pending' AND attempts = 0"), 6);
    // the event row carries what the envelope needs
    assert_eq!(one::<String>(&format!("SELECT type || '|' || version || '|' || tenant_id FROM webhooks.events WHERE id = '{id}'")).as_deref(), Some("user.registration.completed|1|globex"));
    // ids sort by publish order, also within one millisecond
    assert!(id < id2 && id2 < id3);
    expect_err("SELECT webhooks.webhook_publish('user.created', '{}', '*')", "tenant_id \"*\" is not valid");
}

#[pg_test]
fn endpoints_are_validated_on_every_write() {
    // (the server's policy, as a user has it: private targets refused, https required; no session
    // may change it)
    expect_err("SET webhooks.allow_private_targets = on", "cannot be changed now");
    expect_err("ALTER ROLE CURRENT_USER SET webhooks.allow_private_targets = on", "cannot be changed now");
    expect_err("SET webhooks.require_https = off", "cannot be changed now");
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
    let s = one::<String>(&format!("SELECT webhooks.endpoint_secret('{id}')")).unwrap();
    assert!(s.starts_with("whsec_") && s.len() == 6 + 44, "{s}");
    expect_err(&format!("UPDATE webhooks.endpoints SET secret = 'whsec_c2hvcnQ=' WHERE id = '{id}'"), "24-64 bytes");
}

#[pg_test]
fn settings_refuse_bad_values_and_accept_both_duration_notations() {
    expect_err("SET webhooks.actor = 'adm_9'", "webhooks.actor");
    expect_err("SET webhooks.actor = '[1]'", "must be a JSON object");
    run("SET webhooks.actor = '{\"kind\": \"admin\"}'");
    expect_err("SET webhooks.timeout = '0'", "more than zero");
    expect_err("SET webhooks.timeout = '0s'", "webhooks.timeout");
    run("SET webhooks.timeout = '30 seconds'");
    run("SET webhooks.timeout = '1 min'");
    expect_err("SELECT webhooks.endpoint_create('https://h.example.com', '{users.*}')", "unknown event category \"users.*\"");
    assert!(one::<String>("SELECT id FROM webhooks.endpoint_create('https://h.example.com', '{user.*,user.registration.*}')").is_some());
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
    let old = one::<String>(&format!("SELECT webhooks.endpoint_secret('{id}')")).unwrap();
    let new = one::<String>(&format!("SELECT webhooks.endpoint_rotate_secret('{id}', '1 hour')")).unwrap();
    assert_ne!(old, new);
    assert!(new.starts_with("whsec_"), "{new}");
    assert_eq!(
        one::<bool>(&format!("SELECT webhooks_internal._open(previous_secret) = '{old}' AND webhooks_internal._open(secret) = '{new}'
                                  AND previous_secret LIKE 'whenc1:%' AND previous_secret_expires_at > now() + '59 minutes'
                             FROM webhooks.endpoints WHERE id = '{id}'")),
        Some(true)
    );
    expect_err(&format!("SELECT webhooks.endpoint_rotate_secret('{id}', '-1 hour')"), "grace");
}

#[pg_test]
fn catalogue_ships_identity_events_and_accepts_new_ones() {
    assert_eq!(count("SELECT count(*) FROM webhooks.event_types WHERE builtin"), 66);
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
    endpoint("https://h.example.com/in", "{user.*}", Some("*"));
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
    expect_err("SELECT * FROM webhooks_internal._claim(1, '1 minute', false)", "permission denied");
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
    run("CREATE ROLE wh_tadmin IN ROLE webhooks_admin; CREATE ROLE wh_tpub IN ROLE webhooks_publisher");
    run("SELECT webhooks.tenant_grant('wh_tadmin', 'acme'); SELECT webhooks.tenant_grant('wh_tpub', 'acme')");
    let mine = endpoint("https://a.example.com/h", "{*}", Some("acme"));
    let theirs = endpoint("https://b.example.com/h", "{*}", Some("globex"));
    let platform = endpoint("https://p.example.com/h", "{*}", Some("*"));
    let global = endpoint("https://g.example.com/h", "{*}", None);
    let foreign_ev = one::<String>("SELECT webhooks.webhook_publish('user.created', '{}', 'globex')").unwrap();
    // Whatever the session sets, a bound role sees only its tenants: no setting, reset, spoofed.
    for setup in ["RESET webhooks.tenant_id", "SET webhooks.tenant_id = 'acme'", "SET webhooks.tenant_id = ''"] {
        run(&format!("SET ROLE wh_tadmin; {setup}"));
        assert_eq!(count("SELECT count(*) FROM webhooks.endpoints"), 1, "{setup}");
        assert_eq!(one::<String>("SELECT string_agg(id, ',') FROM webhooks.endpoints").as_deref(), Some(mine.as_str()));
        assert_eq!(count("SELECT count(*) FROM webhooks.events"), 0, "{setup}");
        assert_eq!(count("SELECT count(*) FROM webhooks.deliveries"), 0, "{setup}");
        assert_eq!(count("SELECT count(*) FROM webhooks.endpoint_health"), 1, "{setup}");
        assert_eq!(count("SELECT pending FROM webhooks.status()"), 0, "{setup}");
        run("RESET webhooks.tenant_id; RESET ROLE");
    }
    run("SET ROLE wh_tadmin");
    expect_err("SET webhooks.tenant_id = 'globex'; SELECT count(*) FROM webhooks.endpoints", "not a tenant of role wh_tadmin");
    run("RESET webhooks.tenant_id");
    for other in [&theirs, &platform, &global] {
        expect_err(&format!("SELECT webhooks.endpoint_update('{other}', url => 'https://evil.example.com')"), "not found");
        expect_err(&format!("SELECT webhooks.endpoint_delete('{other}')"), "not found");
        expect_err(&format!("SELECT webhooks.endpoint_rotate_secret('{other}')"), "not found");
        expect_err(&format!("SELECT webhooks.endpoint_disable('{other}')"), "not found");
        run(&format!("UPDATE webhooks.endpoints SET description = 'x' WHERE id = '{other}'"));
    }
    expect_err("SELECT webhooks.endpoint_create('https://c.example.com', tenant_id => 'globex')", "outside the tenants of role wh_tadmin");
    expect_err("SELECT webhooks.endpoint_create('https://c.example.com', tenant_id => '*')", "outside the tenants");
    expect_err(&format!("UPDATE webhooks.endpoints SET tenant_id = 'globex' WHERE id = '{mine}'"), "outside the tenants");
    expect_err(&format!("SELECT webhooks.event_replay('{foreign_ev}')"), "not found");
    expect_err(&format!("SELECT webhooks.event_replay('{foreign_ev}', '{mine}')"), "not found");
    expect_err("SELECT webhooks.tenant_grant('wh_tadmin', 'globex')", "only a platform admin");
    // created without a tenant, an endpoint belongs to the role's only tenant
    assert_eq!(one::<String>("SELECT tenant_id FROM webhooks.endpoint_create('https://c.example.com/h')").as_deref(), Some("acme"));
    run("RESET ROLE; SET ROLE wh_tpub");
    expect_err("SELECT webhooks.webhook_publish('user.created', '{}', 'globex')", "cannot publish for tenant_id \"globex\"");
    expect_err("SET webhooks.tenant_id = 'globex'; SELECT webhooks.webhook_publish('user.created', '{}', 'globex')", "not a tenant of role wh_tpub");
    run("RESET webhooks.tenant_id");
    assert!(one::<String>("SELECT webhooks.webhook_publish('user.created', '{}')").is_some());
    run("RESET ROLE");
    assert_eq!(count("SELECT count(*) FROM webhooks.events WHERE tenant_id = 'acme'"), 1);
    // no trace of the refused attempts, nothing changed
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 2);
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks.endpoints WHERE description IS NOT NULL AND id IN ('{theirs}', '{platform}', '{global}')")), 0);
    // revoking the last binding closes the role, never opens it
    run("SELECT webhooks.tenant_revoke('wh_tadmin', 'acme'); SET ROLE wh_tadmin");
    assert_eq!(count("SELECT count(*) FROM webhooks.endpoints"), 0, "unbound while tenants are in use: nothing");
    run("RESET ROLE");
    let _ = global;
}

#[pg_test]
fn unbound_roles_see_rows_without_tenant_and_star_binds_the_platform() {
    err("SELECT 1");
    run("CREATE ROLE wh_plain IN ROLE webhooks_admin; CREATE ROLE wh_ops IN ROLE webhooks_admin");
    endpoint("https://a.example.com/h", "{*}", Some("acme"));
    endpoint("https://g.example.com/h", "{*}", None);
    // A single-tenant install: no binding anywhere, every role sees the rows without a tenant.
    run("SET ROLE wh_plain");
    assert_eq!(count("SELECT count(*) FROM webhooks.endpoints"), 1);
    assert_eq!(one::<Vec<String>>("SELECT webhooks.tenant_scope()"), Some(vec!["".to_string()]));
    expect_err("SELECT webhooks.endpoint_create('https://x.example.com', tenant_id => '*')", "outside the tenants");
    run("RESET ROLE");
    // Once tenants are in use, an unbound role sees nothing until it is bound.
    run("SELECT webhooks.tenant_grant('wh_ops', '*')");
    run("SET ROLE wh_plain");
    assert_eq!(count("SELECT count(*) FROM webhooks.endpoints"), 0);
    run("RESET ROLE; SET ROLE wh_ops");
    assert_eq!(count("SELECT count(*) FROM webhooks.endpoints"), 2);
    assert!(one::<Vec<String>>("SELECT webhooks.tenant_scope()").is_none());
    // a setting narrows a platform role to one tenant
    run("SET webhooks.tenant_id = 'acme'");
    assert_eq!(count("SELECT count(*) FROM webhooks.endpoints"), 1);
    run("RESET webhooks.tenant_id");
    run("SELECT webhooks.tenant_grant('wh_plain', '')");
    expect_err("SELECT webhooks.tenant_grant('no_such_role', 'acme')", "role \"no_such_role\" does not exist");
    expect_err("SELECT webhooks.tenant_grant('wh_plain', E'a\\x01b')", "not valid");
    run("RESET ROLE; SET ROLE wh_plain");
    assert_eq!(count("SELECT count(*) FROM webhooks.endpoints"), 1, "bound to '': rows without a tenant");
    // the catalogue is shared: only a platform admin changes it
    expect_err("DELETE FROM webhooks.event_types WHERE name = 'email.created'", "only a platform admin");
    expect_err("UPDATE webhooks.event_types SET mode = 'sync' WHERE name = 'user.created'", "only a platform admin");
    expect_err("SELECT webhooks.event_type_register('invoice.paid')", "only a platform admin");
    run("RESET ROLE");
    expect_err("DELETE FROM webhooks.event_types WHERE name = 'email.created'", "cannot be deleted");
}

/// The API acts for the role that called it, not for the session's: someone else's code that
/// a session runs (a definer function, an index expression ANALYZE evaluates as the table's
/// owner) gets its own owner's rights, never the session's.
#[pg_test]
fn the_api_acts_for_its_immediate_caller_not_the_session() {
    err("SELECT 1");
    run("CREATE ROLE wh_mallory IN ROLE webhooks_admin; CREATE SCHEMA mal AUTHORIZATION wh_mallory");
    run("SELECT webhooks.tenant_grant('wh_mallory', 'acme')");
    endpoint("https://globex.example.com/h", "{*}", Some("globex"));
    run("SET ROLE wh_mallory");
    run(r#"CREATE FUNCTION mal.bait() RETURNS int LANGUAGE plpgsql SECURITY DEFINER AS $f$
        BEGIN PERFORM webhooks.tenant_grant('wh_mallory', '*'); RETURN 1; END $f$"#);
    run(r#"CREATE FUNCTION mal.peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS
        'SELECT count(*) FROM webhooks.endpoints'"#);
    run(r#"CREATE FUNCTION mal.idx(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
        BEGIN PERFORM webhooks.tenant_grant('wh_mallory', '*'); RETURN $1; END $f$"#);
    run("CREATE TABLE mal.t (x int); INSERT INTO mal.t VALUES (1)");
    run("RESET ROLE");
    // A superuser session runs mallory's code.
    expect_err("SELECT mal.bait()", "only a platform admin");
    assert_eq!(count("SELECT mal.peek()"), 0, "mallory's function sees mallory's rows");
    expect_err("CREATE INDEX ON mal.t (mal.idx(x))", "only a platform admin");
    assert_eq!(count("SELECT count(*) FROM webhooks.tenant_roles WHERE tenant_id = '*'"), 0);
    // A publisher's definer function publishes with the publisher's scope, whoever calls it.
    run("CREATE ROLE wh_pubx IN ROLE webhooks_publisher; SELECT webhooks.tenant_grant('wh_pubx', 'acme')");
    run("CREATE SCHEMA pubx AUTHORIZATION wh_pubx; SET ROLE wh_pubx");
    run(r#"CREATE FUNCTION pubx.forge() RETURNS text LANGUAGE sql SECURITY DEFINER AS
        $f$ SELECT webhooks.webhook_publish('user.created', '{}', 'globex') $f$"#);
    run("RESET ROLE");
    expect_err("SELECT pubx.forge()", "cannot publish for tenant_id \"globex\"");
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 0);
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

/// A publisher who owns a table with a type whose cast to json escalates: tracking and writing
/// that table must run the cast with the publisher's rights, never the extension owner's.
#[pg_test]
fn a_publisher_cannot_run_code_as_the_owner_through_a_tracked_table() {
    err("SELECT 1");
    run("CREATE ROLE wh_evil IN ROLE webhooks_publisher");
    run("CREATE SCHEMA evil AUTHORIZATION wh_evil");
    endpoint("https://h.example.com/in", "{user.*}", None);
    run("SET ROLE wh_evil; SET search_path = evil, public");
    run("CREATE TYPE evil.mood AS ENUM ('happy')");
    run(r#"CREATE FUNCTION evil.mood_json(evil.mood) RETURNS json LANGUAGE plpgsql AS $f$
        BEGIN EXECUTE 'ALTER ROLE wh_evil SUPERUSER'; RETURN '"x"'::json; END $f$"#);
    // The owner of the type may create the cast.
    run("CREATE CAST (evil.mood AS json) WITH FUNCTION evil.mood_json(evil.mood)");
    run("CREATE TABLE evil.users (id int PRIMARY KEY, m evil.mood)");
    run("SELECT webhooks.track_table('evil.users', 'user')");
    let e = err("INSERT INTO evil.users VALUES (1, 'happy')");
    // Several rows take the statement-level path (the transition table, one set-based publish)
    let many = err("INSERT INTO evil.users VALUES (2, 'happy'), (3, 'happy'), (4, 'happy')");
    run("RESET ROLE; RESET search_path");
    for e in [e, many] {
        assert!(
            e.as_deref().is_some_and(|m| m.contains("must be superuser") || m.contains("permission denied")),
            "the cast ran as wh_evil and failed: {e:?}"
        );
    }
    assert_eq!(one::<bool>("SELECT rolsuper FROM pg_roles WHERE rolname = 'wh_evil'"), Some(false));
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 0, "no trace");
}

/// Definer functions ignore what a caller puts in pg_temp or its own schemas.
#[pg_test]
fn definer_functions_ignore_pg_temp_and_caller_operators() {
    err("SELECT 1");
    run("CREATE ROLE wh_shadow IN ROLE webhooks_publisher; GRANT CREATE, TEMP ON DATABASE pgrx_tests TO wh_shadow");
    let ep = endpoint("https://h.example.com/in", "{user.*}", None);
    run("SET ROLE wh_shadow");
    run("CREATE TEMP TABLE endpoints (id text, url text, enabled boolean, tenant_id text, event_types text[], batch_window interval)");
    run("CREATE TEMP TABLE event_types (name text, mode text, version text, category text, description text, builtin boolean)");
    run("CREATE SCHEMA shadow");
    run("CREATE FUNCTION shadow.always(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true'");
    run("CREATE OPERATOR shadow.= (leftarg = text, rightarg = text, function = shadow.always)");
    run("SET search_path = shadow, pg_temp, pg_catalog");
    let id = one::<String>("SELECT webhooks.webhook_publish('user.created', '{}')").unwrap();
    expect_err("SELECT webhooks.webhook_publish('no.such_type', '{}')", "unknown event type");
    run("RESET search_path; RESET ROLE");
    assert_eq!(one::<String>(&format!("SELECT endpoint_id FROM webhooks.deliveries WHERE event_id = '{id}'")).as_deref(), Some(ep.as_str()));
    // every definer function pins its search_path with pg_temp last
    assert_eq!(
        count("SELECT count(*) FROM pg_proc p WHERE p.pronamespace IN ('webhooks'::regnamespace, 'webhooks_internal'::regnamespace) AND p.prosecdef \
               AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, webhooks, pg_temp']"),
        0
    );
}

/// The internals live in webhooks_internal and belong to the owner alone; the documented API
/// (schema webhooks, every function with a COMMENT) is all a role gets.
#[pg_test]
fn internals_are_for_the_owner_only() {
    err("SELECT 1");
    let leaks = one::<String>(
        "SELECT string_agg(p.oid::regprocedure::text || ' to ' || r, ', ') FROM pg_proc p,
                unnest(ARRAY['webhooks_admin', 'webhooks_publisher', 'public']) r
         WHERE p.pronamespace = 'webhooks_internal'::regnamespace
           AND has_function_privilege(r, p.oid, 'EXECUTE')",
    );
    assert_eq!(leaks, None, "internal functions executable by others");
    assert_eq!(
        one::<String>(
            "SELECT string_agg(r, ', ') FROM unnest(ARRAY['webhooks_admin', 'webhooks_publisher', 'public']) r
             WHERE has_schema_privilege(r, 'webhooks_internal', 'USAGE')"
        ),
        None,
        "the internal schema is the owner's"
    );
    assert_eq!(
        one::<String>(
            "SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_proc p
             WHERE p.pronamespace = 'webhooks'::regnamespace
               AND (p.proname LIKE '\\_%' OR obj_description(p.oid, 'pg_proc') IS NULL)"
        ),
        None,
        "\\df webhooks.* lists the documented API only, each function with a COMMENT"
    );
    run("CREATE ROLE wh_adm IN ROLE webhooks_admin");
    run("SET ROLE wh_adm");
    for sql in [
        "SELECT * FROM webhooks_internal._claim(100000, '100 years', true)",
        "SELECT webhooks_internal._record('{1}', '{0}', '{succeeded}', '{1}', '{200}', '{NULL}', '{NULL}', '{0}', '{1}', '{NULL}', '{NULL}', '1 day')",
        "SELECT webhooks_internal._sync_send('sms.created', '[]')",
        "SELECT webhooks_internal._sync_finish('sms.created', '{}', '[]')",
        "SELECT * FROM webhooks_internal._sync_prepare('sms.created', '{}', NULL, NULL)",
        "SELECT webhooks_internal._new_secret()",
        "SELECT webhooks_internal._scope_of(1)",
        "INSERT INTO webhooks.deliveries (event_id, endpoint_id) VALUES ('e', 'x')",
        "UPDATE webhooks.deliveries SET endpoint_id = 'x'",
        "UPDATE webhooks.deliveries SET lease_until = 'infinity'",
        "UPDATE webhooks.deliveries SET event_id = 'evt_x'",
    ] {
        expect_err(sql, "permission denied");
    }
    run("RESET ROLE");
}

/// Publishers see endpoint ids, never URLs (which may carry tokens), in results or errors.
#[pg_test]
fn publishers_never_learn_endpoint_urls() {
    err("SELECT 1");
    // An endpoint written while the guard allowed loopback (written here past its check), refused
    // at send time: the error names the endpoint, never its URL or host. (A receiver that fails
    // on the network is tested end to end, in tls.rs.)
    run("ALTER TABLE webhooks.endpoints DISABLE TRIGGER endpoints_before_write");
    run("INSERT INTO webhooks.endpoints (id, url, event_types, secret) VALUES ('ep_loop', 'https://127.0.0.1:1/hooks/tok_SECRET123', '{sms.created}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')");
    run("ALTER TABLE webhooks.endpoints ENABLE TRIGGER endpoints_before_write");
    run("CREATE ROLE wh_p IN ROLE webhooks_publisher");
    run("SET ROLE wh_p");
    let e = err("SELECT webhooks.webhook_send_sync('sms.created', '{\"code\":\"1\"}')").unwrap();
    assert!(e.contains("refused") && e.contains("ep_loop"), "{e}");
    assert!(!e.contains("tok_SECRET123") && !e.contains("/hooks") && !e.contains("127.0.0.1"), "{e}");
    run("RESET ROLE");
}

#[pg_test]
fn track_table_checks_the_current_role_and_refuses_the_extensions_tables() {
    err("SELECT 1");
    run("CREATE ROLE wh_low IN ROLE webhooks_publisher");
    run("CREATE TABLE su_users (id int PRIMARY KEY, email text)");
    // a superuser login that SET ROLEs down has only that role's rights
    run("SET ROLE wh_low");
    expect_err("SELECT webhooks.track_table('su_users', 'user')", "only the owner of public.su_users");
    expect_err("SELECT webhooks.untrack_table('su_users')", "only the owner");
    run("RESET ROLE");
    expect_err("SELECT webhooks.track_table('webhooks.events', 'user')", "cannot be tracked");
    expect_err("SELECT webhooks.track_table('webhooks.endpoints', 'user')", "cannot be tracked");
    expect_err("SELECT webhooks.track_table('pg_class', 'user')", "cannot be tracked");
}

#[pg_test]
fn row_events_follow_renames_and_never_send_new_secret_columns() {
    endpoint("https://h.example.com/in", "{user.*}", None);
    run("CREATE TABLE users (id int PRIMARY KEY, email text, pw text, nick text)");
    run("SELECT webhooks.track_table('users', 'user', exclude_columns => '{pw}')");
    run("ALTER TABLE users RENAME COLUMN pw TO credential");
    run("ALTER TABLE users ADD COLUMN reset_token text");
    run("INSERT INTO users VALUES (1, 'a@x.io', 'p4ss', 'al', 'rt-123')");
    let data = one::<String>("SELECT data::text FROM webhooks.events").unwrap();
    assert!(!data.contains("p4ss") && !data.contains("rt-123"), "{data}");
    assert!(data.contains("a@x.io") && data.contains("\"nick\""), "{data}");
    // include_columns: an allow-list; a column added later is not sent
    run("SELECT webhooks.track_table('users', 'user', include_columns => '{id,email}')");
    run("ALTER TABLE users ADD COLUMN phone text");
    run("INSERT INTO users VALUES (2, 'b@x.io', 'p', 'bo', 'rt', '+64')");
    let data = one::<String>("SELECT data::text FROM webhooks.events WHERE entity_key = 'user:2'").unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&data).unwrap(), serde_json::json!({"user": {"id": 2, "email": "b@x.io"}}));
    // a tenant column that is dropped: the ALTER goes through (with a WARNING), the table's writes
    // fail saying why and how to go on, and webhooks.tracked_tables says so too
    run("CREATE TABLE orgs (id int PRIMARY KEY, tenant text)");
    run("SELECT webhooks.event_type_register('org.created'), webhooks.event_type_register('org.updated'), webhooks.event_type_register('org.deleted')");
    run("SELECT webhooks.track_table('orgs', 'org', tenant_column => 'tenant')");
    run("ALTER TABLE orgs DROP COLUMN tenant");
    let e = err("INSERT INTO orgs VALUES (1)").unwrap();
    assert!(e.contains("tenant column was dropped") && e.contains("untrack_table"), "{e}");
    assert_eq!(
        one::<String>("SELECT problem FROM webhooks.tracked_tables WHERE relid = 'orgs'::regclass").as_deref(),
        Some("its tenant column was dropped")
    );
    run("SELECT webhooks.track_table('orgs', 'org')");
    run("INSERT INTO orgs VALUES (1)");
    assert_eq!(count("SELECT count(*) FROM webhooks.events WHERE type = 'org.created'"), 1);
}

/// What a row event carries is decided from the catalog when the statement runs: DDL made with
/// pg_dump's session settings, or while event triggers do not fire at all (a restore, a
/// replica's session_replication_role), never sends a column that was kept out, looks secret
/// or is outside include_columns, and a secret-looking column stays out whatever it is renamed
/// to (0.3.0 sent all three: its triggers carried names, refreshed by an event trigger).
#[pg_test]
fn no_ddl_path_sends_a_column_that_was_kept_out() {
    endpoint("https://h.example.com/in", "{user.*}", None);
    run("CREATE TABLE accounts (id int PRIMARY KEY, email text, password_hash text, pin text)");
    run("SELECT webhooks.track_table('accounts', 'user', exclude_columns => '{pin}')");
    let sent = |id: i32| -> serde_json::Value {
        let d = one::<String>(&format!("SELECT data::text FROM webhooks.events WHERE entity_key = 'user:{id}'")).unwrap();
        serde_json::from_str::<serde_json::Value>(&d).unwrap()["user"].clone()
    };
    // pg_dump's settings
    run("SET row_security = off; SET check_function_bodies = off");
    run("ALTER TABLE accounts ADD COLUMN reset_token text");
    run("ALTER TABLE accounts RENAME COLUMN password_hash TO ph");
    run("ALTER TABLE accounts RENAME COLUMN pin TO code");
    run("RESET row_security; RESET check_function_bodies");
    run("INSERT INTO accounts VALUES (1, 'a@x.io', 'h1', '1234', 'rt1')");
    assert_eq!(sent(1), serde_json::json!({"id": 1, "email": "a@x.io"}));
    // no event trigger at all
    run("SET session_replication_role = replica");
    run("ALTER TABLE accounts ADD COLUMN api_key text");
    run("ALTER TABLE accounts RENAME COLUMN reset_token TO rt");
    run("SET session_replication_role = origin");
    run("INSERT INTO accounts VALUES (2, 'b@x.io', 'h2', '5678', 'rt2', 'key2')");
    assert_eq!(sent(2), serde_json::json!({"id": 2, "email": "b@x.io"}));
    run("UPDATE accounts SET ph = 'h3', rt = 'rt3', api_key = 'k3', code = '0000' WHERE id = 2");
    assert_eq!(count("SELECT count(*) FROM webhooks.events WHERE type = 'user.updated'"), 0, "only kept-out columns changed");
    // include_columns: a column added later (with event triggers off) is not sent
    run("SELECT webhooks.track_table('accounts', 'user', include_columns => '{id,email}')");
    run("SET session_replication_role = replica");
    run("ALTER TABLE accounts ADD COLUMN phone text");
    run("SET session_replication_role = origin");
    run("INSERT INTO accounts (id, email, phone) VALUES (3, 'c@x.io', '+64')");
    assert_eq!(sent(3), serde_json::json!({"id": 3, "email": "c@x.io"}));
    // and what is sent can be read
    assert_eq!(
        one::<Vec<String>>("SELECT sent FROM webhooks.tracked_columns('accounts')"),
        Some(vec!["email".to_string(), "id".to_string()])
    );
}

/// A tracked table's owner drops a function its condition calls (CASCADE takes the condition):
/// nobody's DDL fails for it (0.3.0 failed every CREATE TABLE in the database), the drop says
/// what became of the table's events, tracked_tables shows it, and the table's writes fail
/// with the way out rather than commit without their events.
#[pg_test]
fn a_lost_condition_breaks_no_ones_ddl_and_no_row_commits_without_its_event() {
    endpoint("https://h.example.com/in", "{user.*}", None);
    run("CREATE ROLE wh_owner IN ROLE webhooks_publisher; CREATE ROLE wh_other");
    run("CREATE SCHEMA p AUTHORIZATION wh_owner; GRANT CREATE ON SCHEMA public TO wh_other");
    run("SET ROLE wh_owner");
    run("CREATE FUNCTION p.f(int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 > 0'");
    run("CREATE TABLE p.members (id int PRIMARY KEY, x int)");
    run("SELECT webhooks.track_table('p.members', 'user', condition => 'p.f(NEW.x)')");
    run("INSERT INTO p.members VALUES (1, 1), (2, 0)");
    run("DROP FUNCTION p.f(int) CASCADE");
    run("RESET ROLE");
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 1);
    // everyone's DDL
    run("CREATE TABLE public.unrelated (id int)");
    run("CREATE TEMP TABLE scratch (id int)");
    run("ALTER TABLE public.unrelated ADD COLUMN y int");
    run("SET ROLE wh_other");
    run("CREATE TABLE public.theirs (id int)");
    run("CREATE TEMP TABLE theirs_too (id int)");
    run("RESET ROLE");
    let problem = one::<String>("SELECT problem FROM webhooks.tracked_tables WHERE relid = 'p.members'::regclass").unwrap();
    assert!(problem.contains("condition") && problem.contains("p.f"), "{problem}");
    run("SET ROLE wh_owner");
    let e = err("INSERT INTO p.members VALUES (3, 5)").unwrap();
    assert!(e.contains("cannot be made") && e.contains("condition") && e.contains("track_table"), "{e}");
    assert_eq!(count("SELECT count(*) FROM p.members"), 2, "the row was not written without its event");
    // tracked again, with a condition that exists: writes publish again
    run("SELECT webhooks.track_table('p.members', 'user', condition => 'NEW.x > 1')");
    run("INSERT INTO p.members VALUES (3, 5), (4, 1)");
    run("RESET ROLE");
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 2);
}

#[pg_test]
fn limits_apply_to_what_is_sent_and_bad_values_are_named() {
    run("SET webhooks.max_payload = 1024");
    // 300 control characters: ~300 bytes stored, 1,800 bytes of JSON text as sent
    expect_err("SELECT webhooks.webhook_publish('user.created', jsonb_build_object('x', repeat(E'\\x01', 300)))", "as sent, over webhooks.max_payload");
    expect_err("SELECT webhooks.webhook_publish('user.created', '{}', repeat('t', 200))", "tenant_id");
    expect_err("SELECT webhooks.webhook_publish('user.created', '{}', E'a\\nb')", "tenant_id");
    expect_err("SELECT webhooks.webhook_publish('user.created', '{}', entity_key => repeat('k', 600))", "entity_key is 600 bytes");
    expect_err("SELECT webhooks.webhook_publish('user.created', '{}', actor => jsonb_build_object('a', repeat('a', 9000)))", "actor is");
    let id = endpoint("https://h.example.com/in", "{*}", None);
    expect_err(&format!("SELECT webhooks.endpoint_update('{id}', headers => '{{\"X-Ok\": \"a\\u0001b\"}}')"), "control character");
    expect_err(&format!("UPDATE webhooks.endpoints SET previous_secret = 'whsec_c2hvcnQ=' WHERE id = '{id}'"), "24-64 bytes");
    expect_err(&format!("SELECT webhooks.endpoint_update('{id}', tls_client_cert => 'junk', tls_client_key => 'junk')"), "tls_client_cert is not a PEM certificate");
    expect_err(&format!("UPDATE webhooks.endpoints SET tls_client_key = 'x' WHERE id = '{id}'"), "set together");
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 0);
}

#[pg_test]
fn replay_checks_tenant_subscription_and_mode() {
    let acme = endpoint("https://a.example.com/h", "{user.*}", Some("acme"));
    let globex = endpoint("https://b.example.com/h", "{*}", Some("globex"));
    let pw = endpoint("https://c.example.com/h", "{password.updated}", Some("acme"));
    let ev = one::<String>("SELECT webhooks.webhook_publish('user.created', '{}', 'acme')").unwrap();
    expect_err(&format!("SELECT webhooks.event_replay('{ev}', '{globex}')"), "does not receive events of tenant \"acme\"");
    expect_err(&format!("SELECT webhooks.event_replay('{ev}', '{pw}')"), "does not subscribe");
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks.event_replay('{ev}', '{acme}')")), 1);
    endpoint("https://s.example.com/h", "{sms.created}", None);
    run("INSERT INTO webhooks.events (id, type, source, data) VALUES ('evt_sync1', 'sms.created', 'x', '{}')");
    expect_err("SELECT webhooks.event_replay('evt_sync1')", "cannot be replayed");
}

#[pg_test]
fn a_plain_update_of_enabled_parks_and_releases_like_the_functions() {
    let ep = endpoint("https://h.example.com/in", "{*}", None);
    run("SELECT webhooks.webhook_publish('user.created', '{}')");
    run(&format!("UPDATE webhooks.endpoints SET enabled = false WHERE id = '{ep}'"));
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries WHERE next_attempt_at = 'infinity'"), 1);
    run(&format!("UPDATE webhooks.endpoints SET enabled = true WHERE id = '{ep}'"));
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries WHERE next_attempt_at <= now()"), 1);
    run(&format!("SELECT webhooks.endpoint_disable('{ep}', 'maintenance')"));
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries WHERE next_attempt_at = 'infinity'"), 1);
    assert_eq!(one::<String>(&format!("SELECT disabled_reason FROM webhooks.endpoints WHERE id = '{ep}'")).as_deref(), Some("maintenance"));
}

/// A full head of the due index that cannot be taken (an endpoint at its max_in_flight, an
/// ordered entity behind a failed row) never starves another endpoint.
#[pg_test]
fn a_blocked_head_of_the_queue_starves_no_other_endpoint() {
    let slow = endpoint("https://slow.example.com/h", "{user.updated}", None);
    let ord = endpoint("https://ordered.example.com/h", "{user.deleted}", None);
    let other = endpoint("https://other.example.com/h", "{user.created}", None);
    run(&format!("SELECT webhooks.endpoint_update('{slow}', max_in_flight => 1)"));
    run(&format!("SELECT webhooks.endpoint_update('{ord}', ordered => true)"));
    run("SELECT webhooks.webhook_publish('user.updated', '{}') FROM generate_series(1, 2100)");
    run("SELECT webhooks.webhook_publish('user.deleted', '{}', entity_key => 'user:1') FROM generate_series(1, 2100)");
    let ev = one::<String>("SELECT webhooks.webhook_publish('user.created', '{}')").unwrap();
    // the due index: the ordered entity's rows first, then the slow endpoint's, the other last
    run(&format!(
        "UPDATE webhooks.deliveries SET next_attempt_at = now() - interval '1 minute' WHERE endpoint_id = '{slow}'"
    ));
    run(&format!(
        "UPDATE webhooks.deliveries SET next_attempt_at = now() - interval '2 minutes' WHERE endpoint_id = '{ord}'"
    ));
    // the first of the ordered entity failed and waits an hour for its retry
    run(&format!(
        "UPDATE webhooks.deliveries SET next_attempt_at = now() + interval '1 hour'
         WHERE id = (SELECT min(id) FROM webhooks.deliveries WHERE endpoint_id = '{ord}')"
    ));
    let claimed = one::<String>(
        "SELECT string_agg((request).endpoint_id || ':' || (request).event_id, ',') FROM webhooks_internal._claim(500, '1 minute', false)",
    )
    .unwrap_or_default();
    assert!(claimed.contains(&format!("{other}:{ev}")), "the other endpoint's delivery was claimed: {claimed}");
    assert_eq!(claimed.matches(&slow).count(), 1, "max_in_flight 1: {claimed}");
    assert_eq!(claimed.matches(&ord).count(), 0);
    // the ordered entity's rows the claim looked at moved behind its retry
    let moved = count(&format!(
        "SELECT count(*) FROM webhooks.deliveries WHERE endpoint_id = '{ord}' AND next_attempt_at >= now() + interval '59 minutes'"
    ));
    assert!(moved > 32, "{moved} rows moved behind the failed one");
}

#[pg_test]
fn every_table_and_view_and_their_user_columns_say_what_they_are() {
    let missing = one::<String>(
        "SELECT string_agg(c.relname, ', ') FROM pg_class c
         WHERE c.relnamespace = 'webhooks'::regnamespace AND c.relkind IN ('r', 'v')
           AND obj_description(c.oid, 'pg_class') IS NULL",
    );
    assert_eq!(missing, None, "tables and views without a COMMENT");
    let missing = one::<String>(
        "SELECT string_agg(c.relname || '.' || a.attname, ', ') FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE c.oid IN ('webhooks.endpoints'::regclass, 'webhooks.deliveries'::regclass)
           AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname NOT IN ('created_at', 'updated_at', 'completed_at', 'previous_secret_expires_at', 'description', 'disabled_reason', 'event_id', 'endpoint_id', 'tenant_id', 'entity_key', 'sync', 'id')
           AND col_description(c.oid, a.attnum) IS NULL",
    );
    assert_eq!(missing, None, "columns without a COMMENT");
}

/// Only the leader knows who called: `_caller` never runs in a parallel worker.
#[pg_test]
fn the_caller_is_never_asked_in_a_parallel_worker() {
    assert_eq!(
        one::<String>("SELECT proparallel::text FROM pg_proc WHERE oid = 'webhooks_internal._caller()'::regprocedure").as_deref(),
        Some("u")
    );
}

/// The endpoint trigger keeps rows as given while pg_restore loads them (row_security and
/// check_function_bodies off). An admin cannot use that to skip the checks: with row_security
/// off, a role that row-level security binds cannot write endpoints at all.
#[pg_test]
fn an_admin_cannot_pose_as_pg_restore_to_skip_endpoint_checks() {
    err("SELECT 1");
    run("CREATE ROLE wh_restorer IN ROLE webhooks_admin");
    run("SET ROLE wh_restorer");
    run("SET row_security = off; SET check_function_bodies = off");
    expect_err(
        "INSERT INTO webhooks.endpoints (id, url, secret) VALUES ('ep_x', 'http://169.254.169.254/latest', 'whsec_x')",
        "row-level security",
    );
    run("RESET row_security; RESET check_function_bodies");
    // Nor can it set the worker's bookkeeping (which could stall every claim).
    expect_err(
        "INSERT INTO webhooks.endpoints (url, rate_next_at) VALUES ('https://a.example.com/h', 'infinity')",
        "permission denied",
    );
    run("RESET ROLE");
    assert_eq!(count("SELECT count(*) FROM webhooks.endpoints WHERE id = 'ep_x'"), 0);
}

/// The set form: the same checks per element (the failing one named, nothing written), ids in
/// array order, the same fan-out, idempotency keys within the call and across calls.
#[pg_test]
fn publish_many_checks_every_element_and_fans_out_like_publish() {
    let all = endpoint("https://a.example.com/h", "{user.*}", Some("*"));
    let acme = endpoint("https://d.example.com/h", "{*}", Some("acme"));
    let ids: Vec<Option<String>> = one(
        "SELECT webhooks.webhook_publish_many('user.created', ARRAY['{\"n\":1}', '{\"n\":2}', '{\"n\":3}']::jsonb[], \
         ARRAY['acme', NULL, 'acme'], entity_keys => ARRAY['u:1', 'u:2', 'u:1'])",
    )
    .unwrap();
    let ids: Vec<String> = ids.into_iter().map(Option::unwrap).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
    let order: Vec<String> = Spi::connect(|c| {
        c.select("SELECT (data->>'n') || '/' || coalesce(tenant_id, '-') || '/' || entity_key FROM webhooks.events ORDER BY id", None, &[])
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect()
    });
    assert_eq!(order, ["1/acme/u:1", "2/-/u:2", "3/acme/u:1"]);
    // acme's events go to acme's endpoint and the platform's; the tenant-less one to the platform's
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks.deliveries WHERE endpoint_id = '{acme}'")), 2);
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks.deliveries WHERE endpoint_id = '{all}' AND endpoint_tenant = '*'")), 3);
    // a bad element is named, with the single form's message, and nothing of the call stays
    let before = count("SELECT count(*) FROM webhooks.events");
    expect_err(
        "SELECT webhooks.webhook_publish_many('user.created', ARRAY['{}', '\"x\"', '{}']::jsonb[])",
        "element 2 of data: data must be a JSON object, got string",
    );
    expect_err(
        "SELECT webhooks.webhook_publish_many('user.created', ARRAY['{}', '{}']::jsonb[], entity_keys => ARRAY['k', repeat('k', 600)])",
        "element 2 of data: entity_key is 600 bytes",
    );
    expect_err(
        "SELECT webhooks.webhook_publish_many('user.created', ARRAY['{}', '{}']::jsonb[], ARRAY['acme'])",
        "tenant_ids has 1 elements from index 1, data has 2",
    );
    expect_err("SELECT webhooks.webhook_publish_many('nope.never', ARRAY['{}']::jsonb[])", "unknown event type \"nope.never\"");
    expect_err("SELECT webhooks.webhook_publish_many('user.created', NULL)", "data must be an array of JSON objects");
    expect_err("SELECT webhooks.webhook_publish_many('user.created', ARRAY['{}']::jsonb[], ARRAY['*'])", "tenant_id \"*\" is not valid");
    expect_err("SELECT webhooks.webhook_publish_many('user.created', ARRAY['{}']::jsonb[], ARRAY[''])", "tenant_id \"\" is not valid");
    expect_err("SELECT webhooks.webhook_publish_many('user.created', '[0:1]={\"{}\",\"{}\"}'::jsonb[])", "data must start at index 1");
    run("SET webhooks.max_payload = 1024");
    expect_err(
        "SELECT webhooks.webhook_publish_many('user.created', ARRAY['{}', jsonb_build_object('big', repeat('x', 2000))])",
        "element 2 of data: data is",
    );
    run("RESET webhooks.max_payload");
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), before);
    assert_eq!(
        one::<Vec<Option<String>>>("SELECT webhooks.webhook_publish_many('user.created', '{}'::jsonb[])").map(|v| v.len()),
        Some(0)
    );
    // idempotency keys: a repeat within the call and a later call get the first event
    let k: Vec<Option<String>> = one(
        "SELECT webhooks.webhook_publish_many('user.created', ARRAY['{\"a\":1}', '{\"a\":2}', '{\"a\":3}']::jsonb[], \
         idempotency_keys => ARRAY['imp-1', 'imp-2', 'imp-1'])",
    )
    .unwrap();
    assert_eq!(k[0], k[2]);
    assert_ne!(k[0], k[1]);
    let again: Vec<Option<String>> = one(
        "SELECT webhooks.webhook_publish_many('user.created', ARRAY['{\"a\":9}']::jsonb[], idempotency_keys => ARRAY['imp-2'])",
    )
    .unwrap();
    assert_eq!(again[0], k[1]);
    assert_eq!(count("SELECT count(*) FROM webhooks.events WHERE idempotency_key LIKE 'imp-%'"), 2);
}

/// Past 100 deliveries a call writes its events and one fanout per tenant; the deliveries
/// follow from it, in event order (the worker writes them: here, the same function by hand).
#[pg_test]
fn a_large_publish_leaves_its_deliveries_to_a_fanout_in_order() {
    let a = endpoint("https://a.example.com/h", "{user.*}", None);
    let b = endpoint("https://b.example.com/h", "{user.*}", None);
    run("SELECT webhooks.endpoint_update(id, ordered => true) FROM webhooks.endpoints");
    run("SELECT webhooks.webhook_publish_many('user.updated', array_agg(jsonb_build_object('n', g) ORDER BY g), \
         entity_keys => array_agg('user:' || (g % 7) ORDER BY g)) FROM generate_series(1, 300) g");
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries"), 0);
    assert_eq!(count("SELECT count(*) FROM webhooks_internal.fanouts"), 1);
    assert_eq!(one::<i64>("SELECT pending FROM webhooks.status()"), Some(600));
    // a single publish of an entity while the fanout waits goes behind it
    let last = one::<String>("SELECT webhooks.webhook_publish('user.updated', '{\"n\": 301}', entity_key => 'user:3')").unwrap();
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries"), 0);
    assert_eq!(one::<i32>("SELECT webhooks_internal._expand(250)"), Some(250));
    assert_eq!(one::<i32>("SELECT webhooks_internal._expand(100000)"), Some(352));
    assert_eq!(count("SELECT count(*) FROM webhooks_internal.fanouts"), 0);
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries WHERE status = 'pending'"), 602);
    for ep in [&a, &b] {
        // delivery ids follow event ids, for every endpoint, the single publish last
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM (SELECT d.event_id, lag(d.event_id) OVER (ORDER BY d.id) AS prev
                 FROM webhooks.deliveries d WHERE d.endpoint_id = '{ep}') x WHERE x.prev > x.event_id"
            )),
            0
        );
        assert_eq!(
            one::<String>(&format!("SELECT event_id FROM webhooks.deliveries WHERE endpoint_id = '{ep}' ORDER BY id DESC LIMIT 1")),
            Some(last.clone())
        );
    }
}

/// The deliveries' state check (a function call since 0.3.0) still refuses a row whose
/// status lacks the timestamps it needs, and takes one that has them.
#[pg_test]
fn a_delivery_state_without_its_timestamps_is_refused() {
    endpoint("https://a.example.com/h", "{user.*}", None);
    run("SELECT webhooks.webhook_publish('user.created', '{}')");
    expect_err("UPDATE webhooks.deliveries SET status = 'succeeded'", "deliveries_state");
    expect_err("UPDATE webhooks.deliveries SET status = 'in_flight'", "deliveries_state");
    expect_err("UPDATE webhooks.deliveries SET status = 'pending', next_attempt_at = NULL", "deliveries_state");
    expect_err("UPDATE webhooks.deliveries SET status = 'sent', completed_at = now()", "deliveries_state");
    expect_err("UPDATE webhooks.deliveries SET attempts = -1", "deliveries_state");
    run("UPDATE webhooks.deliveries SET status = 'succeeded', attempts = 1, completed_at = now(), next_attempt_at = NULL");
    assert_eq!(count("SELECT count(*) FROM webhooks.deliveries WHERE status = 'succeeded'"), 1);
}

/// A burst of one tenant without keys or filters is cut into fanouts of 1,000 events straight
/// from the arrays: every event once, in publish order, each with its own entity key.
#[pg_test]
fn a_burst_is_cut_into_fanouts_of_a_thousand_in_publish_order() {
    endpoint("https://a.example.com/h", "{user.*}", None);
    endpoint("https://b.example.com/h", "{user.*}", None);
    let ids: Vec<Option<String>> = one(
        "SELECT webhooks.webhook_publish_many('user.updated', array_agg(jsonb_build_object('n', g) ORDER BY g), \
         entity_keys => array_agg('user:' || g ORDER BY g)) FROM generate_series(1, 2500) g",
    )
    .unwrap();
    assert_eq!(ids.len(), 2500);
    assert_eq!(
        one::<Vec<i32>>("SELECT array_agg(cardinality(event_ids) ORDER BY id) FROM webhooks_internal.fanouts"),
        Some(vec![1000, 1000, 500])
    );
    // the fanouts' events, read in order, are the call's ids, with the keys they were given
    let listed: Vec<Option<String>> = one(
        "SELECT array_agg(e ORDER BY f.id, o) FROM webhooks_internal.fanouts f, unnest(f.event_ids) WITH ORDINALITY u(e, o)",
    )
    .unwrap();
    assert_eq!(listed, ids);
    assert_eq!(
        count(
            "SELECT count(*) FROM webhooks_internal.fanouts f, unnest(f.event_ids, f.entity_keys) u(e, k) \
             JOIN webhooks.events ev ON ev.id = u.e WHERE ev.entity_key = u.k AND ev.entity_key = 'user:' || (ev.data->>'n')"
        ),
        2500
    );
    assert_eq!(count("SELECT count(*) FROM webhooks_internal.fanouts WHERE cardinality(endpoints) = 2"), 3);
    // A burst of a type nobody subscribes to, with entity keys, while those fanouts wait:
    // events only (no fanout without endpoints), and a tracked table's multi-row write too.
    run("SELECT webhooks.event_type_register('order.created', 'orders')");
    run("SELECT webhooks.webhook_publish_many('order.created', array_agg(jsonb_build_object('n', g)), \
         entity_keys => array_agg('order:' || g)) FROM generate_series(1, 150) g");
    run("CREATE TABLE quiet (id int PRIMARY KEY, name text)");
    run("SELECT webhooks.event_type_register(t, 'quiet') FROM unnest(ARRAY['quiet.created', 'quiet.updated', 'quiet.deleted']) t");
    run("SELECT webhooks.track_table('quiet', 'quiet')");
    run("INSERT INTO quiet SELECT g, 'q' || g FROM generate_series(1, 3) g");
    run("UPDATE quiet SET name = name || 'x' WHERE id <= 2");
    assert_eq!(count("SELECT count(*) FROM webhooks.events WHERE type LIKE 'order.%' OR type LIKE 'quiet.%'"), 155);
    assert_eq!(count("SELECT count(*) FROM webhooks_internal.fanouts"), 3);
}

/// A bulk UPDATE of a table whose tenant column is also kept out of the payload still
/// publishes each row for its tenant, and never sends that column.
#[pg_test]
fn a_bulk_update_keeps_the_tenant_of_an_excluded_tenant_column() {
    run("CREATE TABLE seats (id int PRIMARY KEY, org text, plan text)");
    run("SELECT webhooks.track_table('seats', 'user', exclude_columns => '{org}', tenant_column => 'org')");
    run("INSERT INTO seats VALUES (1, 'acme', 'free'), (2, 'globex', 'free'), (3, 'acme', 'free')");
    run("UPDATE seats SET plan = 'pro'");
    assert_eq!(
        one::<String>("SELECT string_agg(tenant_id || ' ' || entity_key, ',' ORDER BY id) FROM webhooks.events WHERE type = 'user.updated'")
            .as_deref(),
        Some("acme user:1,globex user:2,acme user:3")
    );
    assert_eq!(count("SELECT count(*) FROM webhooks.events WHERE data::text LIKE '%org%'"), 0);
}

/// One record call that carries a stale answer of a row (an older claim's lease) beside its
/// current one records the current answer alone: its state, one attempt, and no dead letter
/// for the stale 'dead'.
#[pg_test]
fn a_stale_answer_beside_the_current_one_changes_nothing() {
    endpoint("https://a.example.com/h", "{user.*}", None);
    run("SELECT webhooks.webhook_publish('user.created', '{}')");
    let (id, lease) = Spi::connect(|c| {
        let r = c
            .select("SELECT (request).delivery_id, (request).lease_us FROM webhooks_internal._claim(10, '1 minute', false)", None, &[])
            .expect("a claim")
            .first();
        let col = |i: usize| r.get::<i64>(i).ok().flatten().expect("a claimed row");
        (col(1), col(2))
    });
    run(&format!(
        "SELECT webhooks_internal._record('{{{id},{id}}}', '{{{stale},{lease}}}', '{{dead,pending}}', '{{1,1}}', \
         '{{500,503}}', '{{NULL,NULL}}', '{{NULL,60000000}}', '{{0,0}}', '{{1,1}}', '{{NULL,NULL}}', '{{NULL,NULL}}', '1 day')",
        stale = lease - 1_000_000
    ));
    assert_eq!(one::<String>(&format!("SELECT status FROM webhooks.deliveries WHERE id = {id}")).as_deref(), Some("pending"));
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks.attempts WHERE delivery_id = {id}")), 1);
    assert_eq!(one::<i32>(&format!("SELECT status_code FROM webhooks.attempts WHERE delivery_id = {id}")), Some(503));
    assert_eq!(count("SELECT count(*) FROM webhooks.events WHERE type = 'webhook.delivery.dead'"), 0);
}

/// Statement-level row events: one event per row in the order the statement wrote them, an
/// UPDATE's changed/previous per row, rows where only excluded columns changed left out.
#[pg_test]
fn a_bulk_statement_publishes_one_event_per_row_in_order() {
    endpoint("https://h.example.com/in", "{user.*}", None);
    run("CREATE TABLE members (id int PRIMARY KEY, email text, plan text, password_hash text)");
    run("SELECT webhooks.track_table('members', 'user')");
    run("INSERT INTO members SELECT g, 'm' || g || '@x.io', 'free', 'h' || g FROM generate_series(5, 1, -1) g");
    run("UPDATE members SET plan = CASE WHEN id % 2 = 0 THEN 'pro' ELSE plan END, password_hash = 'rotated'");
    run("DELETE FROM members WHERE id > 3");
    let rows: Vec<(String, String, String)> = Spi::connect(|c| {
        c.select("SELECT type, entity_key, data::text FROM webhooks.events ORDER BY id", None, &[])
            .unwrap()
            .map(|r| (r.get(1).unwrap().unwrap(), r.get(2).unwrap().unwrap(), r.get(3).unwrap().unwrap()))
            .collect()
    });
    let seen: Vec<String> = rows.iter().map(|r| format!("{} {}", r.0, r.1)).collect();
    assert_eq!(
        seen,
        [
            "user.created user:5", "user.created user:4", "user.created user:3", "user.created user:2",
            "user.created user:1", "user.updated user:4", "user.updated user:2", "user.deleted user:5",
            "user.deleted user:4"
        ]
    );
    for (_, _, data) in &rows {
        assert!(!data.contains("password_hash") && !data.contains("rotated"), "{data}");
    }
    let upd: serde_json::Value = serde_json::from_str(&rows[5].2).unwrap();
    assert_eq!(upd["changed"], serde_json::json!(["plan"]));
    assert_eq!(upd["previous"], serde_json::json!({"plan": "free"}));
    assert_eq!(upd["user"]["plan"], "pro");
    // the same payloads as a one-row statement
    run("UPDATE members SET email = 'new@x.io' WHERE id = 1");
    let one_row: serde_json::Value = serde_json::from_str(
        &one::<String>("SELECT data::text FROM webhooks.events WHERE entity_key = 'user:1' AND type = 'user.updated'").unwrap(),
    )
    .unwrap();
    assert_eq!(one_row["previous"], serde_json::json!({"email": "m1@x.io"}));
    assert_eq!(one_row["changed"], serde_json::json!(["email"]));
    // a statement that writes no row publishes nothing
    run("UPDATE members SET plan = 'x' WHERE false");
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 10);
}

/// A writer who may insert into a tracked table but not read it: its rows are still published
/// (the transition table is the trigger's, not a SELECT of the writer's), and the writer reads
/// nothing of them back.
#[pg_test]
fn a_writer_that_cannot_read_the_table_publishes_without_reading_back() {
    err("SELECT 1");
    endpoint("https://h.example.com/in", "{user.*}", None);
    run("CREATE TABLE inbox (id int PRIMARY KEY, email text)");
    run("SELECT webhooks.track_table('inbox', 'user')");
    run("CREATE ROLE wh_writeonly IN ROLE webhooks_publisher");
    run("GRANT INSERT, UPDATE (email) ON inbox TO wh_writeonly");
    run("SET ROLE wh_writeonly");
    run("INSERT INTO inbox VALUES (1, 'a@x.io')");
    expect_err("SELECT * FROM inbox", "permission denied");
    expect_err("SELECT data FROM webhooks.events", "permission denied");
    run("RESET ROLE");
    assert_eq!(one::<String>("SELECT data->'user'->>'email' FROM webhooks.events").as_deref(), Some("a@x.io"));
}

/// webhooks.traceparent: refused unless W3C, stored with what this session publishes, nothing
/// when unset.
#[pg_test]
fn a_session_trace_context_is_kept_with_its_events() {
    expect_err("SET webhooks.traceparent = 'abc'", "is not a W3C traceparent");
    expect_err(
        "SET webhooks.traceparent = '00-00000000000000000000000000000000-00f067aa0ba902b7-01'",
        "ids not all zeros",
    );
    let plain = one::<String>("SELECT webhooks.webhook_publish('user.created', '{}')").unwrap();
    run("SET webhooks.traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'");
    let traced = one::<String>("SELECT webhooks.webhook_publish('user.created', '{}')").unwrap();
    run("SELECT webhooks.webhook_publish_many('user.updated', ARRAY['{}', '{}']::jsonb[])");
    run("RESET webhooks.traceparent");
    assert_eq!(one::<String>(&format!("SELECT traceparent FROM webhooks.events WHERE id = '{plain}'")), None);
    assert_eq!(
        one::<String>(&format!("SELECT traceparent FROM webhooks.events WHERE id = '{traced}'")).as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(count("SELECT count(*) FROM webhooks.events WHERE type = 'user.updated' AND traceparent LIKE '00-4bf9%'"), 2);
}

/// Formats: standard-webhooks by default; hmac-hex with a prefix that makes valid headers;
/// anything else refused by name.
#[pg_test]
fn endpoint_formats_and_prefixes_are_checked() {
    let id = endpoint("https://h.example.com/in", "{*}", None);
    assert_eq!(one::<String>(&format!("SELECT format FROM webhooks.endpoints WHERE id = '{id}'")).as_deref(), Some("standard-webhooks"));
    expect_err(&format!("SELECT webhooks.endpoint_update('{id}', format => 'xml')"), "format \"xml\" is not known");
    expect_err(&format!("SELECT webhooks.endpoint_update('{id}', header_prefix => 'X-Acme-')"), "hmac-hex format only");
    expect_err(
        &format!("SELECT webhooks.endpoint_update('{id}', format => 'hmac-hex', header_prefix => 'X Acme:')"),
        "header_prefix \"X Acme:\" does not make valid headers",
    );
    expect_err(
        &format!("SELECT webhooks.endpoint_update('{id}', format => 'hmac-hex', header_prefix => 'Webhook-')"),
        "cannot be overridden",
    );
    run(&format!("SELECT webhooks.endpoint_update('{id}', format => 'hmac-hex', header_prefix => 'X-IntelliAuth-')"));
    expect_err(
        &format!("SELECT webhooks.endpoint_update('{id}', headers => '{{\"x-intelliauth-signature\": \"forged\"}}')"),
        "hmac-hex format's own",
    );
    run(&format!("SELECT webhooks.endpoint_update('{id}', header_prefix => '')"));
    assert_eq!(one::<String>(&format!("SELECT header_prefix FROM webhooks.endpoints WHERE id = '{id}'")), None);
    expect_err("INSERT INTO webhooks.tenants (id, slug) VALUES ('acme', 'Not A Slug')", "tenants_slug_check");
    run("INSERT INTO webhooks.tenants (id, slug) VALUES ('acme', 'acme-corp')");
    expect_err("INSERT INTO webhooks.tenants (id, slug) VALUES ('globex', 'acme-corp')", "is already the name of tenant \"acme\"");
}

/// v1a: an ed25519 pair per endpoint; admins read the public key, never the private one; the
/// key pair changes with a rotation; webhook_verify takes the public key.
#[pg_test]
fn v1a_endpoints_keep_their_private_key_from_admins() {
    err("SELECT 1");
    let id = one::<String>("SELECT id FROM webhooks.endpoint_create('https://h.example.com/in', signature => 'v1a')").unwrap();
    let public = one::<String>(&format!("SELECT public_key FROM webhooks.endpoints WHERE id = '{id}'")).unwrap();
    assert!(public.starts_with("whpk_"), "{public}");
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks_internal.signing_keys WHERE endpoint_id = '{id}' AND private_key LIKE 'whenc1:%' AND webhooks_internal._open(private_key) LIKE 'whsk_%'")), 1);
    expect_err(&format!("SELECT webhooks.endpoint_update('{id}', signature => 'v2')"), "signature \"v2\" is not known");
    expect_err(&format!("SELECT webhooks.endpoint_update('{id}', format => 'hmac-hex')"), "standard-webhooks format only");
    run("CREATE ROLE wh_keyadmin IN ROLE webhooks_admin");
    run("SET ROLE wh_keyadmin");
    expect_err("SELECT private_key FROM webhooks_internal.signing_keys", "permission denied");
    expect_err(&format!("UPDATE webhooks.endpoints SET public_key = 'whpk_x' WHERE id = '{id}'"), "permission denied");
    let rotated = one::<String>(&format!("SELECT webhooks.endpoint_rotate_secret('{id}')")).unwrap();
    run("RESET ROLE");
    assert!(rotated.starts_with("whpk_") && rotated != public, "{rotated}");
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks_internal.signing_keys WHERE endpoint_id = '{id}' AND previous_private_key IS NOT NULL")), 1);
    // back to v1: the pair goes
    run(&format!("SELECT webhooks.endpoint_update('{id}', signature => 'v1')"));
    assert_eq!(count("SELECT count(*) FROM webhooks_internal.signing_keys"), 0);
    assert_eq!(one::<String>(&format!("SELECT public_key FROM webhooks.endpoints WHERE id = '{id}'")), None);
    // an idempotent provisioning script's INSERT ... ON CONFLICT DO NOTHING keeps the keys
    run(&format!("SELECT webhooks.endpoint_update('{id}', signature => 'v1a')"));
    let key = one::<String>(&format!("SELECT private_key FROM webhooks_internal.signing_keys WHERE endpoint_id = '{id}'")).unwrap();
    run(&format!("INSERT INTO webhooks.endpoints (id, url, signature) VALUES ('{id}', 'https://h.example.com/in', 'v1a') ON CONFLICT (id) DO NOTHING"));
    assert_eq!(one::<String>(&format!("SELECT private_key FROM webhooks_internal.signing_keys WHERE endpoint_id = '{id}'")), Some(key));
    run(&format!("DELETE FROM webhooks.endpoints WHERE id = '{id}'"));
    assert_eq!(count("SELECT count(*) FROM webhooks_internal.signing_keys"), 0);
}

/// Filters on content: checked when written (a bad path, a non-predicate), evaluated at
/// publish in the same step as the types, single and set-based, direct and through fanouts.
#[pg_test]
fn filters_decide_which_events_an_endpoint_gets() {
    let verified = one::<String>(
        "SELECT id FROM webhooks.endpoint_create('https://a.example.com/h', '{user.*}', filter => '$.data.user.email_verified == true')",
    )
    .unwrap();
    let acme = one::<String>(
        "SELECT id FROM webhooks.endpoint_create('https://b.example.com/h', '{user.*}', '*', filter => '$.tenant_id == \"acme\"')",
    )
    .unwrap();
    let all = endpoint("https://c.example.com/h", "{user.*}", None);
    expect_err(&format!("SELECT webhooks.endpoint_update('{all}', filter => '$.data.user.')"), "is not a SQL/JSON path");
    expect_err(&format!("SELECT webhooks.endpoint_update('{all}', filter => '$.data.user')"), "must be a condition");
    expect_err(&format!("UPDATE webhooks.endpoints SET filter = '$.type' WHERE id = '{all}'"), "must be a condition");
    // a variable would raise at publish for every event that reaches it: refused
    expect_err(&format!("SELECT webhooks.endpoint_update('{all}', filter => '$.type == \"user.deleted\" && $x == 1')"), "has no variables");
    let got = |ep: &str| count(&format!("SELECT count(*) FROM webhooks.deliveries WHERE endpoint_id = '{ep}'"));
    run("SELECT webhooks.webhook_publish('user.updated', '{\"user\": {\"email_verified\": true}}')");
    run("SELECT webhooks.webhook_publish('user.updated', '{\"user\": {\"email_verified\": false}}')");
    run("SELECT webhooks.webhook_publish('user.updated', '{\"user\": {\"email_verified\": \"yes\"}}', 'acme')");
    assert_eq!((got(&verified), got(&acme), got(&all)), (1, 1, 2));
    // set-based, written directly (few) and through a fanout (many)
    run("SELECT webhooks.webhook_publish_many('user.updated', ARRAY['{\"user\": {\"email_verified\": true}}', '{\"user\": {}}']::jsonb[])");
    assert_eq!((got(&verified), got(&all)), (2, 4));
    run("SELECT webhooks.webhook_publish_many('user.updated', array_agg(jsonb_build_object('user', jsonb_build_object('email_verified', g % 2 = 0)) ORDER BY g), \
         array_fill('acme'::text, ARRAY[200])) FROM generate_series(1, 200) g");
    run("SELECT webhooks_internal._expand(100000)");
    assert_eq!((got(&verified), got(&acme), got(&all)), (2, 201, 4));
    // acme's filtered events by the second filter: half of the 200, through its own fanout
    run(&format!("SELECT webhooks.endpoint_update('{acme}', filter => '$.tenant_id == \"acme\" && $.data.user.email_verified == true')"));
    run("SELECT webhooks.webhook_publish_many('user.updated', array_agg(jsonb_build_object('user', jsonb_build_object('email_verified', g % 2 = 0)) ORDER BY g), \
         array_fill('acme'::text, ARRAY[200])) FROM generate_series(1, 200) g");
    run("SELECT webhooks_internal._expand(100000)");
    assert_eq!(got(&acme), 301);
    run(&format!("SELECT webhooks.endpoint_update('{acme}', filter => '')"));
    assert_eq!(one::<String>(&format!("SELECT filter::text FROM webhooks.endpoints WHERE id = '{acme}'")), None);
}

/// track_table's condition: checked by PostgreSQL when given, follows a renamed column, and
/// leaves out the rows it is not true for (OLD's columns are NULL for an INSERT).
#[pg_test]
fn a_tracked_tables_condition_picks_the_rows_that_publish() {
    endpoint("https://h.example.com/in", "{user.*}", None);
    run("CREATE TABLE people (id int PRIMARY KEY, email text, plan text)");
    expect_err("SELECT webhooks.track_table('people', 'user', condition => 'NEW.nope = 1')", "nope");
    expect_err("SELECT webhooks.track_table('people', 'user', condition => 'NEW.email')", "boolean");
    // text that closes the expression to run statements of its own as the owner
    run("CREATE ROLE wh_cond IN ROLE webhooks_publisher");
    for evil in [
        "true) EXECUTE FUNCTION webhooks_internal._condition_holder(); ALTER ROLE wh_cond SUPERUSER; CREATE TRIGGER zz AFTER UPDATE ON people FOR EACH ROW WHEN (true",
        "true); ALTER ROLE wh_cond SUPERUSER; SELECT (true",
        "true /* an unterminated comment would swallow what follows",
    ] {
        assert!(err(&format!("SELECT webhooks.track_table('people', 'user', condition => $c${evil}$c$)")).is_some(), "{evil}");
    }
    assert_eq!(one::<bool>("SELECT rolsuper FROM pg_roles WHERE rolname = 'wh_cond'"), Some(false));
    assert_eq!(count("SELECT count(*) FROM pg_trigger WHERE tgname = 'zz'"), 0);
    run("SELECT webhooks.track_table('people', 'user', condition => 'NEW.email IS DISTINCT FROM OLD.email')");
    run("INSERT INTO people VALUES (1, 'a@x.io', 'free'), (2, NULL, 'free')");
    run("UPDATE people SET plan = 'pro'");
    run("UPDATE people SET email = 'b@x.io' WHERE id = 1");
    run("ALTER TABLE people RENAME COLUMN email TO mail");
    run("UPDATE people SET mail = 'c@x.io' WHERE id = 2");
    run("UPDATE people SET plan = 'max' WHERE id = 2");
    let seen: Vec<String> = Spi::connect(|c| {
        c.select("SELECT type || ' ' || entity_key FROM webhooks.events ORDER BY id", None, &[])
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect()
    });
    assert_eq!(seen, ["user.created user:1", "user.updated user:1", "user.updated user:2"]);
    assert_eq!(
        one::<String>("SELECT condition FROM webhooks.tracked_tables").as_deref(),
        Some("(new.mail IS DISTINCT FROM old.mail)")
    );
    // a new track_table without a condition publishes every row again
    run("SELECT webhooks.track_table('people', 'user')");
    run("UPDATE people SET plan = 'free'");
    assert_eq!(count("SELECT count(*) FROM webhooks.events"), 5);
}

/// A tenant's name to hmac-hex receivers is its slug, or its id when it has none: no tenant may
/// go by another's (0.3.0 let a tenant's admin take another tenant's id as its slug).
#[pg_test]
fn a_tenant_cannot_take_another_tenants_name() {
    err("SELECT 1");
    run("CREATE ROLE wh_acme_admin IN ROLE webhooks_admin");
    run("SELECT webhooks.tenant_grant('wh_acme_admin', 'acme')");
    endpoint("https://g.example.com/in", "{*}", Some("globex"));
    run("SET ROLE wh_acme_admin");
    expect_err("INSERT INTO webhooks.tenants (id, slug) VALUES ('acme', 'globex')", "already the name of tenant \"globex\"");
    run("INSERT INTO webhooks.tenants (id, slug) VALUES ('acme', 'acme-inc')");
    expect_err("UPDATE webhooks.tenants SET slug = 'globex' WHERE id = 'acme'", "already the name");
    run("RESET ROLE");
    // and a tenant id that another tenant uses as its slug is not handed out
    expect_err("SELECT webhooks.tenant_grant('wh_acme_admin', 'acme-inc')", "is the slug of tenant \"acme\"");
    expect_err("SELECT webhooks.endpoint_create('https://x.example.com/in', '{*}', 'acme-inc')", "is the slug of tenant \"acme\"");
    // a platform admin is held to the same names
    expect_err("INSERT INTO webhooks.tenants (id, slug) VALUES ('globex', 'acme')", "already the name of tenant \"acme\"");
}

/// The notifications of channel "webhooks" name every tenant's operational events: a tenant's
/// roles may not listen (0.3.0 let any role).
#[pg_test]
fn only_platform_roles_listen_to_operational_events() {
    err("SELECT 1");
    run("CREATE ROLE wh_listener IN ROLE webhooks_admin; CREATE ROLE wh_platform IN ROLE webhooks_admin");
    run("SELECT webhooks.tenant_grant('wh_listener', 'acme'), webhooks.tenant_grant('wh_platform', '*')");
    run("SET ROLE wh_listener");
    expect_err("LISTEN webhooks", "platform's roles");
    run("LISTEN something_else");
    run("RESET ROLE; SET ROLE wh_platform");
    run("LISTEN webhooks");
    run("RESET ROLE");
    run("LISTEN webhooks");
    run("UNLISTEN *");
}

/// Idle endpoints count little in the size of the claim's look at the due rows: a busy
/// endpoint's backlog at the head is not walked a whole window deep because idle batched
/// endpoints could take thousands of rows (0.3.0 walked batch * 4 entries each claim).
#[pg_test]
fn idle_endpoints_do_not_widen_the_claims_walk_of_the_head() {
    let busy = endpoint("https://b.example.com/in", "{user.created}", None);
    run(&format!("UPDATE webhooks.endpoints SET max_in_flight = 1 WHERE id = '{busy}'"));
    for i in 0..20 {
        let idle = endpoint(&format!("https://i{i}.example.com/in"), "{password.updated}", None);
        run(&format!("SELECT webhooks.endpoint_update('{idle}', batch_max => 1000)"));
    }
    run("SELECT count(webhooks.webhook_publish('user.created', '{}')) FROM generate_series(1, 2000)");
    let claim = format!("SELECT count(request) FROM webhooks_internal._claim(500, '1 minute', false, 64, 4, '{{}}', 1, 0, ARRAY['{busy}'])");
    assert_eq!(count(&claim), 4, "the busy endpoint's four rounds of one");
    let fetched = || count("SELECT coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables WHERE relid = 'webhooks.deliveries'::regclass");
    let before = fetched();
    assert_eq!(count(&claim), 0, "nothing more of it while four are leased");
    let walked = fetched() - before;
    assert!(walked < 600, "the claim walked {walked} entries of the head");
}

/// A tenant's admin writes a filter; every publish of its tenant's events pays for it. So what
/// a filter may cost is bounded: constructs whose cost multiplies are refused when written (a
/// nested `.**` made one publish take over 30 s in 0.3.0), and a filter whose weight times an
/// event's size exceeds the budget is not evaluated on that event, which then goes to the
/// endpoint as if it matched (nothing is lost).
#[pg_test]
fn a_filter_costs_at_most_its_budget() {
    run("CREATE ROLE wh_fadm IN ROLE webhooks_admin");
    run("SELECT webhooks.tenant_grant('wh_fadm', 'acme')");
    run("SET ROLE wh_fadm");
    for (filter, why) in [
        ("exists($.** ? (exists(@.** ? (exists(@.** ? (@ == 1))))))", "any level"),
        ("exists($.data.a[*] ? (exists($.data.a[*] ? ($.data.a[*] == 1))))", "starts from the whole event again"),
        ("$.data.a[*] == $.data.b[*]", "compares two paths"),
        ("$.data.x like_regex \"(a*)*\\\\1\"", "back reference"),
        ("$.data.at.datetime() < \"2020-01-01\".datetime()", ".datetime() is not allowed"),
        // (lax mode yields a non-array once per subscript: 2^22 items from a 10-byte event)
        ("$[0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0][0,0] == 1", "subscript list"),
        ("exists($[0,0][0,0][0,0][0,0][0,0][0,0] ? (@ == 2))", "subscript list"),
        ("$.data.x.keyvalue().keyvalue().keyvalue().key == \"a\"", ".keyvalue()"),
    ] {
        expect_err(
            &format!("SELECT webhooks.endpoint_create('https://f.example.com/h', '{{user.*}}', filter => $f${filter}$f$)"),
            why,
        );
    }
    let wide = (0..17).map(|i| format!("$.data.k{i} == 1")).collect::<Vec<_>>().join(" || ");
    expect_err(&format!("SELECT webhooks.endpoint_create('https://f.example.com/h', '{{user.*}}', filter => $f${wide}$f$)"), "more than 16 paths");
    // the heaviest allowed: 16 paths
    let heavy = (0..16).map(|i| format!("$.data.k{i} == 1")).collect::<Vec<_>>().join(" || ");
    let ep = one::<String>(&format!(
        "SELECT id FROM webhooks.endpoint_create('https://f.example.com/h', '{{user.*}}', filter => $f${heavy}$f$)"
    ))
    .unwrap();
    run("RESET ROLE");
    assert_eq!(one::<i32>(&format!("SELECT filter_weight FROM webhooks.endpoints WHERE id = '{ep}'")), Some(16));
    let deliveries = || count(&format!("SELECT count(*) FROM webhooks.deliveries WHERE endpoint_id = '{ep}'"));
    // a small event the filter does not match: no delivery
    run("SELECT webhooks.webhook_publish('user.created', '{\"k3\": 2}', 'acme')");
    assert_eq!(deliveries(), 0);
    run("SELECT webhooks.webhook_publish('user.created', '{\"k3\": 1}', 'acme')");
    assert_eq!(deliveries(), 1);
    // an event whose size times the weight exceeds the budget: not evaluated, delivered
    run("SET webhooks.max_payload = 1048576");
    run("SELECT webhooks.webhook_publish('user.created', jsonb_build_object('k3', 2, 'pad', repeat('x', 300000)), 'acme')");
    assert_eq!(deliveries(), 2, "over budget: delivered as if it matched");
    // and the set form and the operational events ask the same
    run("SELECT webhooks.webhook_publish_many('user.created', ARRAY['{\"k1\": 1}', '{\"k1\": 0}']::jsonb[], ARRAY['acme', 'acme'])");
    assert_eq!(deliveries(), 3);
}

/// Secrets at rest: what an admin writes or the trigger makes is stored sealed (no plain secret
/// in any column a SELECT, a dump or a replica reads), opened only by endpoint_secret for a
/// caller who may see the endpoint; a sealed value must open to be written; the key file's keys
/// and what each seals are in webhooks.secret_keys; a rotation seals new secrets under the new
/// key and housekeeping's step reseals the old ones.
#[pg_test]
fn secrets_are_stored_sealed_and_opened_only_for_who_may_see_them() {
    err("SELECT 1");
    let (id, plain) = {
        let row = one::<String>("SELECT id || ' ' || secret FROM webhooks.endpoint_create('https://h.example.com/in', tenant_id => 'acme')").unwrap();
        let mut p = row.split(' ');
        (p.next().unwrap().to_string(), p.next().unwrap().to_string())
    };
    assert!(plain.starts_with("whsec_"), "endpoint_create returns the secret in the clear: {plain}");
    assert_eq!(one::<String>(&format!("SELECT webhooks.endpoint_secret('{id}')")), Some(plain.clone()));
    let stored = one::<String>(&format!("SELECT secret FROM webhooks.endpoints WHERE id = '{id}'")).unwrap();
    assert!(stored.starts_with("whenc1:") && !stored.contains(&plain[6..]), "{stored}");
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks.endpoints e WHERE strpos(e::text, '{}') > 0", &plain[6..])), 0);
    // a copied sealed value is accepted (it opens); a made-up one is refused by name
    run(&format!("UPDATE webhooks.endpoints SET previous_secret = secret, previous_secret_expires_at = now() + '1 hour' WHERE id = '{id}'"));
    let e = err(&format!("UPDATE webhooks.endpoints SET secret = 'whenc1:knope:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' WHERE id = '{id}'")).unwrap();
    assert!(e.contains("cannot open") && e.contains("knope") && e.contains("webhooks.key_file"), "{e}");
    // an admin writes a secret of its own choosing: stored sealed too
    run(&format!("UPDATE webhooks.endpoints SET secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' WHERE id = '{id}'"));
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks.endpoints WHERE id = '{id}' AND secret LIKE 'whenc1:%' AND secret NOT LIKE '%MfKQ9r8%'")), 1);
    // who may open: the endpoint's tenant's admin; not another tenant's, not a publisher, and no
    // one opens a value they bring (as a leaked dump's would be)
    run("CREATE ROLE wh_acme IN ROLE webhooks_admin");
    run("CREATE ROLE wh_other IN ROLE webhooks_admin");
    run("CREATE ROLE wh_pub IN ROLE webhooks_publisher");
    run("SELECT webhooks.tenant_grant('wh_acme', 'acme')");
    run("SELECT webhooks.tenant_grant('wh_other', 'other')");
    let other = one::<String>("SELECT id FROM webhooks.endpoint_create('https://o.example.com/in', tenant_id => 'acme')").unwrap();
    let other_sealed = one::<String>(&format!("SELECT secret FROM webhooks.endpoints WHERE id = '{other}'")).unwrap();
    run("SET ROLE wh_acme");
    assert_eq!(one::<String>(&format!("SELECT webhooks.endpoint_secret('{id}')")).as_deref(), Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    // a sealed value from elsewhere (another row, a dump) is refused: it would open as this one's
    let e = err(&format!("UPDATE webhooks.endpoints SET secret = '{other_sealed}' WHERE id = '{id}'")).unwrap();
    assert!(e.contains("may not be written") && e.contains("not this endpoint's"), "{e}");
    let e = err(&format!("UPDATE webhooks.endpoints SET previous_secret = '{other_sealed}', previous_secret_expires_at = now() + '1 hour' WHERE id = '{id}'")).unwrap();
    assert!(e.contains("may not be written"), "{e}");
    let e = err(&format!("INSERT INTO webhooks.endpoints (url, tenant_id, secret) VALUES ('https://p.example.com/in', 'acme', '{other_sealed}')")).unwrap();
    assert!(e.contains("may not be written"), "{e}");
    // its own row's (a rotation's move) is not
    run(&format!("UPDATE webhooks.endpoints SET previous_secret = secret, previous_secret_expires_at = now() + '1 hour' WHERE id = '{id}'"));
    expect_err(&format!("SELECT webhooks_internal._open('{stored}')"), "permission denied");
    run("RESET ROLE");
    run("SET ROLE wh_other");
    expect_err(&format!("SELECT webhooks.endpoint_secret('{id}')"), "not found");
    run("RESET ROLE");
    run("SET ROLE wh_pub");
    expect_err(&format!("SELECT webhooks.endpoint_secret('{id}')"), "permission denied");
    run("RESET ROLE");
    // the key file: one key seals; a rotation adds one that seals from then on
    let before = one::<String>("SELECT key_id FROM webhooks.secret_keys WHERE seals").unwrap();
    assert!(count("SELECT sealed_values FROM webhooks.secret_keys WHERE seals") >= 2);
    let fresh = one::<String>("SELECT webhooks.key_rotate()").unwrap();
    assert_ne!(fresh, before);
    assert_eq!(one::<String>("SELECT key_id FROM webhooks.secret_keys WHERE seals"), Some(fresh.clone()));
    let id2 = endpoint("https://h2.example.com/in", "{*}", None);
    assert_eq!(one::<String>(&format!("SELECT split_part(secret, ':', 2) FROM webhooks.endpoints WHERE id = '{id2}'")), Some(fresh.clone()));
    // resealing: every stored value ends under the new key, and still opens to the same secret
    while count("SELECT webhooks_internal._reseal_step(100)") > 0 {}
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks.endpoints WHERE split_part(secret, ':', 2) <> '{fresh}' OR split_part(previous_secret, ':', 2) <> '{fresh}'")), 0);
    assert_eq!(count(&format!("SELECT sealed_values FROM webhooks.secret_keys WHERE key_id = '{before}'")), 0);
    assert_eq!(one::<String>(&format!("SELECT webhooks.endpoint_secret('{id}')")).as_deref(), Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    // the worker's bookkeeping (a pause, a secret problem) is no update of the configuration
    // (request_bytes, generated, is not yet computed in NEW when the trigger compares)
    run("ALTER TABLE webhooks.endpoints DISABLE TRIGGER endpoints_before_write");
    run(&format!("UPDATE webhooks.endpoints SET updated_at = '2000-01-01' WHERE id = '{id}'"));
    run("ALTER TABLE webhooks.endpoints ENABLE TRIGGER endpoints_before_write");
    run(&format!("UPDATE webhooks.endpoints SET paused_until = now() + '10 seconds', secret_problem = 'key gone' WHERE id = '{id}'"));
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks.endpoints WHERE id = '{id}' AND updated_at = '2000-01-01'")), 1);
    // plain values (a 0.3.0 row, a restored plain dump) are resealed too
    run("ALTER TABLE webhooks.endpoints DISABLE TRIGGER endpoints_before_write");
    run(&format!("UPDATE webhooks.endpoints SET secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' WHERE id = '{id2}'"));
    run("ALTER TABLE webhooks.endpoints ENABLE TRIGGER endpoints_before_write");
    assert_eq!(count("SELECT sealed_values FROM webhooks.secret_keys WHERE key_id IS NULL"), 1);
    assert_eq!(count("SELECT webhooks_internal._reseal_step(100)"), 1);
    assert_eq!(count(&format!("SELECT count(*) FROM webhooks.endpoints WHERE id = '{id2}' AND secret LIKE 'whenc1:{fresh}:%'")), 1);
}
