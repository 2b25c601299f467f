//! Drives the benchmarks against a running cluster; every figure has a baseline measured in
//! the same run so the ratio, not the absolute number, is what carries between machines.

use postgres::{Client, NoTls};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod counting;
mod retention;

struct Args {
    pg: String,
    nginx: String,
    /// The same nginx location over TLS, and the log of its connections (one line each).
    nginx_tls: String,
    tls_log: String,
    pgbench: String,
    /// The cluster's data directory, for the restart the two-worker run needs.
    pgdata: String,
    work: String,
    commit: String,
    out: String,
    n: usize,
}

fn args() -> Args {
    let mut m = HashMap::new();
    let v: Vec<String> = std::env::args().collect();
    for p in v[1..].chunks(2) {
        if p.len() == 2 {
            m.insert(p[0].trim_start_matches("--").to_string(), p[1].clone());
        }
    }
    let get = |k: &str| {
        m.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("--{k} is required"))
    };
    Args {
        pg: get("pg"),
        nginx: get("nginx"),
        nginx_tls: get("nginx-tls"),
        tls_log: get("tls-log"),
        pgbench: get("pgbench"),
        pgdata: get("pgdata"),
        work: get("work"),
        commit: get("commit"),
        out: get("out"),
        n: std::env::var("BENCH_N")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100_000),
    }
}

/// TRUNCATE between rounds, tried again when it deadlocks with the worker (which reads the
/// outbox tables in its own order while a round drains): PostgreSQL picks one side to fail.
trait Reset {
    fn reset(&mut self, sql: &str) -> Result<(), postgres::Error>;
}

impl Reset for Client {
    fn reset(&mut self, sql: &str) -> Result<(), postgres::Error> {
        let mut tries = 0;
        loop {
            match self.batch_execute(sql) {
                Err(e)
                    if e.code() == Some(&postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
                        && tries < 5 =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                r => return r,
            }
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Transactions per second of `sql` from pgbench: 4 clients, 2 threads, `secs` seconds.
fn pgbench(a: &Args, name: &str, sql: &str, secs: u32) -> f64 {
    pgbench_db(a, name, sql, secs, None)
}

/// The transactions per second pgbench reported.
pub(crate) fn tps_of(output: &str) -> Option<f64> {
    output
        .lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|t| t.parse().ok())
}

/// pgbench against the bench's cluster (database `db`, or the one of --pg), with `opts`.
pub(crate) fn pgbench_command(a: &Args, opts: &[&str], db: Option<&str>) -> Command {
    let conn: HashMap<&str, &str> =
        a.pg.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
    let mut c = Command::new(&a.pgbench);
    c.args(opts).args([
        "-h",
        conn["host"],
        "-p",
        conn["port"],
        "-U",
        conn["user"],
        db.unwrap_or(conn["dbname"]),
    ]);
    c
}

fn pgbench_db(a: &Args, name: &str, sql: &str, secs: u32, db: Option<&str>) -> f64 {
    let file = format!("{}/{name}.sql", a.work);
    std::fs::write(&file, sql).unwrap();
    let out = pgbench_command(
        a,
        &[
            "-n",
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            "-f",
            &file,
        ],
        db,
    )
    .output()
    .expect("pgbench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    tps_of(&text).unwrap_or_else(|| {
        panic!(
            "pgbench {name} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn wait_drained(db: &mut Client) -> f64 {
    loop {
        let busy: bool = db
            .query_one("SELECT EXISTS (SELECT 1 FROM webhooks.deliveries WHERE status IN ('pending', 'in_flight') AND next_attempt_at IS DISTINCT FROM 'infinity' AND endpoint_id <> 'ep_dead') OR EXISTS (SELECT 1 FROM webhooks_internal.fanouts)", &[])
            .unwrap()
            .get(0);
        if !busy {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    db.query_one("SELECT extract(epoch FROM max(completed_at))::float8 FROM webhooks.deliveries WHERE status = 'succeeded'", &[])
        .unwrap()
        .get(0)
}

/// Waits until the worker has written the deliveries of every bulk publish (fanouts), so the
/// next timing does not share the cores with it.
fn settle(db: &mut Client) {
    while db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM webhooks_internal.fanouts)",
            &[],
        )
        .unwrap()
        .get::<_, bool>(0)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    db.batch_execute("CHECKPOINT").unwrap();
}

fn timed(db: &mut Client, sql: &str) -> f64 {
    settle(db);
    let t = Instant::now();
    db.batch_execute(sql).unwrap();
    t.elapsed().as_secs_f64()
}

/// Bursts of 50,000 rows against their untracked twins, with the endpoints subscribed now
/// (batched for an hour: nothing is sent meanwhile): one statement publishing 50,000 events
/// against a plain INSERT ... SELECT of the same payloads, INSERT ... SELECT and a one-column
/// UPDATE of a tracked users table against the same on an untracked one. Medians of 3.
fn bursts(db: &mut Client) -> Value {
    let n = 50_000;
    let mut runs: Vec<[f64; 6]> = Vec::new();
    for _ in 0..3 {
        db.reset("TRUNCATE plain_events, users, users_untracked; TRUNCATE webhooks.events, webhooks.deliveries, webhooks.attempts")
            .unwrap();
        let plain = timed(db, &format!("INSERT INTO plain_events (data) SELECT jsonb_build_object('id', g, 'email', 'a' || g || '@b.c') FROM generate_series(1, {n}) g"));
        let publish = timed(db, &format!("SELECT webhooks.webhook_publish_many('user.created', array_agg(jsonb_build_object('id', g, 'email', 'a' || g || '@b.c'))) FROM generate_series(1, {n}) g"));
        let ins = format!("INSERT INTO {{T}} (email, name, password_hash) SELECT 'a' || g || '@b.c', 'Anita Singh', 'argon2id' FROM generate_series(1, {n}) g");
        let untracked = timed(db, &ins.replace("{T}", "users_untracked"));
        let tracked = timed(db, &ins.replace("{T}", "users"));
        let untracked_upd = timed(db, "UPDATE users_untracked SET name = 'Anita S.'");
        let tracked_upd = timed(db, "UPDATE users SET name = 'Anita S.'");
        runs.push([
            plain,
            publish,
            untracked,
            tracked,
            untracked_upd,
            tracked_upd,
        ]);
    }
    let med = |i: usize| {
        let mut v: Vec<f64> = runs.iter().map(|r| r[i]).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    settle(db);
    json!({"plain_insert_s": med(0), "publish_many_s": med(1), "publish_ratio": med(1) / med(0),
           "untracked_insert_s": med(2), "tracked_insert_s": med(3), "insert_ratio": med(3) / med(2),
           "untracked_update_s": med(4), "tracked_update_s": med(5), "update_ratio": med(5) / med(4)})
}

/// Deliveries per second from one commit that makes `n` deliveries due to the last success.
fn throughput(db: &mut Client, endpoints: &[String], events: usize) -> (f64, usize) {
    db.reset("TRUNCATE webhooks.events, webhooks.deliveries, webhooks.attempts")
        .unwrap();
    for ep in endpoints {
        db.execute(
            "SELECT webhooks.endpoint_update($1, batch_window => '1 hour')",
            &[ep],
        )
        .unwrap();
    }
    // Published with a window so they are not yet due: the measured part is delivery alone.
    db.execute(
        "SELECT count(webhooks.webhook_publish('user.created', jsonb_build_object('id', g, 'email', 'user' || g || '@example.com', 'name', 'User Number ' || g))) FROM generate_series(1, $1::int) g",
        &[&(events as i32)],
    )
    .unwrap();
    let n: i64 = db
        .query_one("SELECT count(*) FROM webhooks.deliveries", &[])
        .unwrap()
        .get(0);
    let mut tx = db.transaction().unwrap();
    tx.execute(
        "UPDATE webhooks.deliveries SET next_attempt_at = now()",
        &[],
    )
    .unwrap();
    tx.execute("SELECT webhooks_internal._wake_on_commit()", &[])
        .unwrap();
    tx.commit().unwrap();
    let t0 = now_us() as f64 / 1e6;
    let last = wait_drained(db);
    let ok: i64 = db
        .query_one(
            "SELECT count(*) FROM webhooks.deliveries WHERE status = 'succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ok, n, "every delivery succeeded");
    (n as f64 / (last - t0), n as usize)
}

/// A receiver on 127.0.0.1 that reads each request and then answers 200 after `delay`, or
/// never (None: it holds the connection until the client gives up). Threads end with their
/// connection; the listener lives until the bench process ends.
fn stalling_receiver(delay: Option<Duration>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s);
                loop {
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.to_ascii_lowercase();
                        if let Some(v) = l.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    match delay {
                        None => {
                            // Silent: read until the client closes.
                            let mut sink = [0u8; 256];
                            while r.read(&mut sink).unwrap_or(0) > 0 {}
                            return;
                        }
                        Some(d) => {
                            std::thread::sleep(d);
                            if r.get_mut()
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    url
}

/// One endpoint's rate while others have backlogs too: every endpoint subscribed gets `events`
/// deliveries, all due at once; the time until all of `healthy`'s succeeded.
fn rate_beside_others(db: &mut Client, healthy: &str, events: usize) -> f64 {
    db.reset("TRUNCATE webhooks.events, webhooks.deliveries, webhooks.attempts")
        .unwrap();
    db.execute(
        "SELECT count(webhooks.webhook_publish('user.created', jsonb_build_object('id', g, 'email', 'user' || g || '@example.com'))) FROM generate_series(1, $1::int) g",
        &[&(events as i32)],
    )
    .unwrap();
    let mut tx = db.transaction().unwrap();
    tx.execute(
        "UPDATE webhooks.deliveries SET next_attempt_at = now()",
        &[],
    )
    .unwrap();
    tx.execute("SELECT webhooks_internal._wake_on_commit()", &[])
        .unwrap();
    tx.commit().unwrap();
    let t0 = now_us() as f64 / 1e6;
    loop {
        let done: i64 = db
            .query_one(
                "SELECT count(*) FROM webhooks.deliveries WHERE endpoint_id = $1 AND status = 'succeeded'",
                &[&healthy],
            )
            .unwrap()
            .get(0);
        if done as usize >= events {
            break;
        }
        if std::env::var("BENCH_TRACE").is_ok() {
            let st: Vec<(String, i64)> = db
                .query("SELECT status, count(*) FROM webhooks.deliveries WHERE endpoint_id = $1 GROUP BY 1", &[&healthy])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            println!("   {:.1}s {st:?}", now_us() as f64 / 1e6 - t0);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let last: f64 = db
        .query_one(
            "SELECT extract(epoch FROM max(completed_at))::float8 FROM webhooks.deliveries WHERE endpoint_id = $1",
            &[&healthy],
        )
        .unwrap()
        .get(0);
    events as f64 / (last - t0)
}

/// The same client library and concurrency as the worker, posting the same bodies, no database.
fn raw_loop(url: &str, n: usize, concurrency: usize) -> f64 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_idle_connections_per_host(concurrency)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let body = r#"{"id":"evt_01KAW2J4Q1S6ZJ3QK1H7V8X9YZ","type":"user.created","version":"1","source":"urn:webhooks","time":"2026-11-23T01:00:00.000000Z","tenant_id":null,"actor":null,"data":{"id":1,"name":"User Number 1","email":"user1@example.com"}}"#;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (agent, next, url) = (agent.clone(), Arc::clone(&next), url.to_string());
            std::thread::spawn(move || {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                    let mut r = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("webhook-id", "evt_x")
                        .header(
                            "webhook-signature",
                            "v1,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                        )
                        .send(body)
                        .expect("nginx answers");
                    let _ = r.body_mut().read_to_vec();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// A receiver that notes when each request's first byte arrived, by the event's `seq`.
fn latency_receiver() -> (String, Arc<Mutex<HashMap<i64, i64>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let s2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let seen = Arc::clone(&s2);
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    if r.fill_buf().map(|b| b.is_empty()).unwrap_or(true) {
                        return;
                    }
                    let first_byte = now_us();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    if let Some(seq) = v["data"]["seq"].as_i64() {
                        seen.lock().unwrap().insert(seq, first_byte);
                    }
                    w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    (url, seen)
}

/// Commit to the receiver's first byte at 10, 100 and 1,000 events/s, on an endpoint of its own
/// (`ep`, the main one, is disabled meanwhile).
fn latency_section(db: &mut Client, ep: &str) -> Value {
    println!("== latency");
    let (lat_url, seen) = latency_receiver();
    db.execute("SELECT webhooks.endpoint_disable($1)", &[&ep])
        .unwrap();
    let lat_ep: String = db
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{user.updated}')",
            &[&lat_url],
        )
        .unwrap()
        .get(0);
    let mut lat = serde_json::Map::new();
    let mut seq0 = 0i64;
    for (rate, secs) in [(10u32, 5u32), (100, 5), (1000, 3)] {
        let mut v = latency(db, &seen, rate, secs, seq0);
        seq0 += (rate * secs) as i64;
        let (p50, p99) = (percentile(&mut v, 0.5), percentile(&mut v, 0.99));
        let max = v.iter().cloned().fold(0.0, f64::max);
        lat.insert(
            rate.to_string(),
            json!({"p50_ms": p50, "p99_ms": p99, "max_ms": max, "samples": v.len()}),
        );
    }

    db.execute("SELECT webhooks.endpoint_delete($1)", &[&lat_ep])
        .unwrap();
    db.execute("SELECT webhooks.endpoint_enable($1)", &[&ep])
        .unwrap();

    Value::Object(lat)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Publishes at `rate` events/s for `secs` seconds; commit-to-first-byte latencies in ms.
fn latency(
    db: &mut Client,
    seen: &Arc<Mutex<HashMap<i64, i64>>>,
    rate: u32,
    secs: u32,
    seq0: i64,
) -> Vec<f64> {
    let n = (rate * secs) as i64;
    let mut sent = HashMap::new();
    let start = Instant::now();
    let stmt = db
        .prepare(
            "SELECT webhooks.webhook_publish('user.updated', jsonb_build_object('seq', $1::int8))",
        )
        .unwrap();
    for i in 0..n {
        let due = Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let t = now_us();
        db.execute(&stmt, &[&(seq0 + i)]).unwrap();
        sent.insert(seq0 + i, t);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < sent.len() + seq0 as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = seen.lock().unwrap();
    sent.iter()
        .filter_map(|(k, t)| seen.get(k).map(|a| (a - t) as f64 / 1000.0))
        .collect()
}

fn worker_memory(db: &mut Client) -> (f64, f64) {
    let pid: i32 = db
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
            &[],
        )
        .unwrap()
        .get(0);
    let kb = |file: &str, keys: &[&str]| -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .unwrap_or_default()
            .lines()
            .filter(|l| keys.iter().any(|k| l.starts_with(k)))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum()
    };
    (
        kb("smaps_rollup", &["Private_Clean:", "Private_Dirty:"]) / 1024.0,
        kb("status", &["VmHWM:"]) / 1024.0,
    )
}

fn claim_ms(db: &mut Client) -> f64 {
    // One endpoint takes the whole batch here: the claim's own cost, not max_in_flight.
    db.batch_execute("UPDATE webhooks.endpoints SET max_in_flight = 1000")
        .unwrap();
    let mut best = f64::MAX;
    for _ in 0..7 {
        let mut tx = db.transaction().unwrap();
        let t = Instant::now();
        let n: i64 = tx
            .query_one(
                "SELECT count(request) FROM webhooks_internal._claim(500, '1 minute', false)",
                &[],
            )
            .unwrap()
            .get(0);
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(n, 500);
        tx.rollback().unwrap();
    }
    best
}

fn main() {
    // BENCH_RAW_SWEEP=URL: the raw loop alone at several thread counts (to find the best one).
    if let Ok(url) = std::env::var("BENCH_RAW_SWEEP") {
        for c in [1, 2, 4, 8, 16, 32, 64] {
            println!("raw loop, {c} threads: {:.0}/s", raw_loop(&url, 40_000, c));
        }
        return;
    }
    let a = args();
    let mut db = Client::connect(&a.pg, NoTls).expect("connect");
    let mut r = serde_json::Map::new();
    db.batch_execute(
        "CREATE TABLE plain_events (id bigserial PRIMARY KEY, data jsonb NOT NULL);
         CREATE TABLE users (id bigserial PRIMARY KEY, email text, name text, password_hash text, created_at timestamptz DEFAULT now());
         CREATE TABLE users_untracked (LIKE users INCLUDING ALL);
         SELECT webhooks.track_table('users', 'user', '{password_hash}');",
    )
    .unwrap();
    let ep: String = db
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{user.*}')",
            &[&a.nginx],
        )
        .unwrap()
        .get(0);
    // Publishing cost is measured with deliveries written but not yet due, so the worker does
    // not compete for the two cores while pgbench runs.
    db.execute(
        "SELECT webhooks.endpoint_update($1, batch_window => '1 hour')",
        &[&ep],
    )
    .unwrap();

    // BENCH_RETENTION=30: the long run at 1,000 publishes/s alone, written to RETENTION.md
    // (and retention.json, which the next whole run's RESULTS.md summarises).
    if let Some(minutes) = std::env::var("BENCH_RETENTION")
        .ok()
        .and_then(|m| m.parse::<u32>().ok())
    {
        println!("== retention: 1,000 publishes/s for {minutes} minutes, retention 1 minute");
        let v = retention::run(&a, &mut db, &ep, minutes);
        let mut v = v.as_object().cloned().unwrap_or_default();
        v.insert("machine".into(), machine(&a));
        let v = Value::Object(v);
        std::fs::write(
            format!("{}/retention.json", a.out),
            serde_json::to_string_pretty(&v).unwrap(),
        )
        .unwrap();
        let md = retention::report(&v, &machine_line(&v["machine"]));
        print!("{md}");
        std::fs::write(format!("{}/RETENTION.md", a.out), md).unwrap();
        return;
    }

    // BENCH_WORKERS_ONLY=1: the one- and two-worker runs alone, printed (for trying a change
    // to how workers share the queue; RESULTS.md always comes from a whole run).
    if std::env::var("BENCH_WORKERS_ONLY").is_ok() {
        println!("{}", two_workers(&a, db, &ep));
        return;
    }

    // BENCH_DELIVERY_ONLY=1: throughput and fairness alone, printed, nothing written (for
    // trying a change to the worker quickly; RESULTS.md always comes from a whole run).
    let quick = std::env::var("BENCH_DELIVERY_ONLY").is_ok();
    // BENCH_LATENCY_ONLY=1: the latency runs alone, printed, nothing written (the same use).
    if std::env::var("BENCH_LATENCY_ONLY").is_ok() {
        let lat = latency_section(&mut db, &ep);
        println!("{}", serde_json::to_string_pretty(&lat).unwrap());
        return;
    }
    let payload = r#"'{"id": 42, "email": "anita@example.com", "name": "Anita Singh"}'"#;
    if !quick {
        println!("== publish");
        let plain = pgbench(
            &a,
            "plain",
            &format!("INSERT INTO plain_events (data) VALUES ({payload});"),
            10,
        );
        let publish = pgbench(
            &a,
            "publish",
            &format!("SELECT webhooks.webhook_publish('user.created', {payload});"),
            10,
        );
        // The single form called once per row of one statement (what a user without
        // webhook_publish_many writes), beside a plain INSERT ... SELECT.
        let bulk_plain = timed(&mut db, "INSERT INTO plain_events (data) SELECT jsonb_build_object('id', g, 'email', 'a@b.c') FROM generate_series(1, 50000) g");
        let bulk_publish = timed(&mut db, "SELECT count(webhooks.webhook_publish('user.created', jsonb_build_object('id', g, 'email', 'a@b.c'))) FROM generate_series(1, 50000) g");
        println!("== trigger");
        let ins = "INSERT INTO {T} (email, name, password_hash) VALUES ('anita@example.com', 'Anita Singh', 'argon2id$v=19$m=65536');";
        let untracked = pgbench(&a, "untracked", &ins.replace("{T}", "users_untracked"), 10);
        let tracked = pgbench(&a, "tracked", &ins.replace("{T}", "users"), 10);
        println!("   plain {plain:.0} tx/s, publish {publish:.0} tx/s; bulk {bulk_plain:.2}s vs {bulk_publish:.2}s; untracked {untracked:.0} vs tracked {tracked:.0}");
        r.insert("publish".into(), json!({"plain_tps": plain, "publish_tps": publish, "ratio": plain / publish,
        "bulk_plain_s": bulk_plain, "bulk_publish_s": bulk_publish, "bulk_ratio": bulk_publish / bulk_plain}));
        r.insert(
        "trigger".into(),
        json!({"untracked_tps": untracked, "tracked_tps": tracked, "ratio": untracked / tracked}),
    );
        println!("== bursts of 50,000 rows, 1 endpoint");
        let one = bursts(&mut db);
        db.batch_execute(&format!(
            "SELECT webhooks.endpoint_create('{}', '{{user.*}}') FROM generate_series(1, 9);
             UPDATE webhooks.endpoints SET batch_window = '1 hour'",
            a.nginx
        ))
        .unwrap();
        println!("== bursts of 50,000 rows, 10 endpoints");
        let ten = bursts(&mut db);
        println!("   1 endpoint: {one}\n   10 endpoints: {ten}");
        db.reset(&format!(
            "TRUNCATE webhooks.events, webhooks.deliveries, webhooks.attempts;
             DELETE FROM webhooks.endpoints WHERE id <> '{ep}'"
        ))
        .unwrap();
        r.insert(
            "bursts".into(),
            json!({"one_endpoint": one, "ten_endpoints": ten}),
        );
        // Matching cost: a publish for one tenant with 10 endpoints registered in all, then
        // with 1,000 in 100 tenants; one of them subscribed in the publishing tenant each time.
        println!("== publish with 10, then 1,000 endpoints registered");
        let tenant_pub =
            format!("SELECT webhooks.webhook_publish('user.created', {payload}, 't0');");
        db.batch_execute(&format!(
            "SELECT webhooks.endpoint_create('{u}', '{{user.*}}', 't0');
             SELECT webhooks.endpoint_create('{u}', '{{user.*}}', 't' || g) FROM generate_series(1, 8) g;
             UPDATE webhooks.endpoints SET batch_window = '1 hour'",
            u = a.nginx
        ))
        .unwrap();
        // The 990 others are taken out and put back between rounds (one pgbench after the
        // other drifts by more than the difference measured): medians of 3 rounds each.
        db.batch_execute(&format!(
            "SELECT webhooks.endpoint_create('{u}', '{{user.*}}', 't' || (g % 99 + 1)) FROM generate_series(1, 990) g;
             UPDATE webhooks.endpoints SET batch_window = '1 hour';
             CREATE TABLE bench_more AS SELECT * FROM webhooks.endpoints
              WHERE id IN (SELECT id FROM webhooks.endpoints WHERE tenant_id <> 't0' ORDER BY created_at DESC LIMIT 990)",
            u = a.nginx
        ))
        .unwrap();
        let (mut tps10, mut tps1000) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            db.batch_execute(
                "DELETE FROM webhooks.endpoints WHERE id IN (SELECT id FROM bench_more);
                 TRUNCATE webhooks.events, webhooks.deliveries",
            )
            .unwrap();
            // (as autovacuum would: the rounds' deletes leave the table's pages full of dead rows)
            db.batch_execute("VACUUM ANALYZE webhooks.endpoints")
                .unwrap();
            settle(&mut db);
            tps10.push(pgbench(&a, "publish_10_endpoints", &tenant_pub, 5));
            db.batch_execute(
                // (every column but the generated ones, which the table computes)
                "DO $$ DECLARE cols text; BEGIN
                    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols FROM pg_attribute
                    WHERE attrelid = 'webhooks.endpoints'::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
                    EXECUTE format('INSERT INTO webhooks.endpoints (%s) SELECT %s FROM bench_more', cols, cols);
                 END $$;
                 TRUNCATE webhooks.events, webhooks.deliveries",
            )
            .unwrap();
            db.batch_execute("VACUUM ANALYZE webhooks.endpoints")
                .unwrap();
            settle(&mut db);
            tps1000.push(pgbench(&a, "publish_1000_endpoints", &tenant_pub, 5));
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (with_10, with_1000) = (median(tps10), median(tps1000));
        db.batch_execute("DROP TABLE bench_more").unwrap();
        // Filters: ten endpoints of one tenant, each with a content filter (that matches), in
        // alternating rounds against the same ten without one.
        println!("== publish to 10 endpoints with and without content filters");
        db.reset(&format!(
            "TRUNCATE webhooks.events, webhooks.deliveries;
             DELETE FROM webhooks.endpoints WHERE tenant_id IS NOT NULL;
             SELECT webhooks.endpoint_create('{u}', '{{user.*}}', 'f0') FROM generate_series(1, 10);
             UPDATE webhooks.endpoints SET batch_window = '1 hour'",
            u = a.nginx
        ))
        .unwrap();
        let filtered_pub =
            format!("SELECT webhooks.webhook_publish('user.created', {payload}, 'f0');");
        let (mut plain_f, mut with_f) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            db.batch_execute(
                "UPDATE webhooks.endpoints SET filter = NULL WHERE tenant_id = 'f0';
                 TRUNCATE webhooks.events, webhooks.deliveries",
            )
            .unwrap();
            settle(&mut db);
            plain_f.push(pgbench(&a, "publish_10_unfiltered", &filtered_pub, 5));
            db.batch_execute(
                "UPDATE webhooks.endpoints SET filter = '$.data.email starts with \"anita\" && $.type == \"user.created\"'
                  WHERE tenant_id = 'f0';
                 TRUNCATE webhooks.events, webhooks.deliveries",
            )
            .unwrap();
            settle(&mut db);
            with_f.push(pgbench(&a, "publish_10_filtered", &filtered_pub, 5));
        }
        let (no_filter, filtered) = (median(plain_f), median(with_f));
        println!("   {no_filter:.0} tx/s without filters, {filtered:.0} tx/s with");
        r.insert(
            "filters".into(),
            json!({"publish_tps_unfiltered": no_filter, "publish_tps_filtered": filtered, "ratio": no_filter / filtered}),
        );
        println!("   {with_10:.0} tx/s with 10 endpoints, {with_1000:.0} tx/s with 1,000");
        r.insert(
            "endpoints".into(),
            json!({"publish_tps_10": with_10, "publish_tps_1000": with_1000, "ratio": with_10 / with_1000}),
        );
        db.reset(&format!(
            "TRUNCATE webhooks.events, webhooks.deliveries, webhooks.attempts;
             DELETE FROM webhooks.endpoints WHERE id <> '{ep}';
             TRUNCATE plain_events, users, users_untracked"
        ))
        .unwrap();
    }
    println!("== throughput ({} deliveries)", a.n);
    // The baseline is the best raw loop: on 2 cores ureq peaks at a few threads (more
    // connections than cores cost more in switching than they gain), so every count is tried.
    let (raw, raw_threads) = [2usize, 4, 8, 32]
        .iter()
        .map(|&c| (raw_loop(&a.nginx, a.n / 2, c), c))
        .fold((0.0, 0), |best, x| if x.0 > best.0 { x } else { best });
    let raw_32 = raw_loop(&a.nginx, a.n / 2, 32);
    let (one, n1) = throughput(&mut db, std::slice::from_ref(&ep), a.n);
    let mut ten = vec![ep.clone()];
    for _ in 0..9 {
        ten.push(
            db.query_one(
                "SELECT id FROM webhooks.endpoint_create($1, '{user.*}')",
                &[&a.nginx],
            )
            .unwrap()
            .get(0),
        );
    }
    let (tenr, n10) = throughput(&mut db, &ten, a.n / 10);
    // The same single-endpoint run over HTTPS (keep-alive): the rate against plain http measured
    // just before, and the handshakes nginx saw (one per TLS connection).
    let tls_ep: String = db
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{user.*}')",
            &[&a.nginx_tls],
        )
        .unwrap()
        .get(0);
    for e in &ten {
        db.execute("SELECT webhooks.endpoint_disable($1)", &[e])
            .unwrap();
    }
    let _ = std::fs::write(&a.tls_log, "");
    let (tls_rate, n_tls) = throughput(&mut db, std::slice::from_ref(&tls_ep), a.n);
    let handshakes = std::fs::read_to_string(&a.tls_log)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<std::collections::HashSet<_>>()
        .len();
    for e in &ten {
        db.execute("SELECT webhooks.endpoint_enable($1)", &[e])
            .unwrap();
    }
    db.execute("SELECT webhooks.endpoint_delete($1)", &[&tls_ep])
        .unwrap();
    println!("   https one endpoint {tls_rate:.0}/s ({handshakes} handshakes for {n_tls})");
    r.insert(
        "tls".into(),
        json!({"https_one_endpoint_per_s": tls_rate, "deliveries": n_tls,
        "ratio_to_http": tls_rate / one, "handshakes": handshakes,
        "handshakes_per_1000": handshakes as f64 * 1000.0 / n_tls as f64}),
    );
    let (mem_private, mem_peak) = worker_memory(&mut db);
    println!("   raw {raw:.0}/s, one endpoint {one:.0}/s, ten endpoints {tenr:.0}/s");
    r.insert("throughput".into(), json!({"raw_loop_per_s": raw, "raw_loop_threads": raw_threads,
        "raw_loop_32_threads_per_s": raw_32, "one_endpoint_per_s": one, "deliveries_one": n1,
        "ten_endpoints_per_s": tenr, "deliveries_ten": n10, "ratio_one_to_raw": one / raw, "ratio_ten_to_raw": tenr / raw}));
    for e in &ten[1..] {
        db.execute("SELECT webhooks.endpoint_delete($1)", &[e])
            .unwrap();
    }

    // Fairness: the healthy endpoint's rate alone, then beside 4 receivers that never answer
    // and 4 that answer after 5 s, every one of them with a backlog as large as its own.
    println!("== fairness");
    let fair_n = (a.n / 5).max(1000);
    db.execute(
        "SELECT webhooks.endpoint_update($1, batch_window => '0')",
        &[&ep],
    )
    .unwrap();
    // Medians of 3 rounds each: one round lasts 2-4 s, and on a shared 2-core machine a
    // single round moved between 47% and 95% of the other.
    let median3 = |db: &mut Client| {
        let mut v: Vec<f64> = (0..3)
            .map(|_| rate_beside_others(db, &ep, fair_n))
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        (v[1], v)
    };
    let (alone, alone_runs) = median3(&mut db);
    let mut others = Vec::new();
    for delay in [None, None, None, None, Some(5), Some(5), Some(5), Some(5)] {
        let url = stalling_receiver(delay.map(Duration::from_secs));
        others.push(
            db.query_one(
                "SELECT id FROM webhooks.endpoint_create($1, '{user.*}')",
                &[&url],
            )
            .unwrap()
            .get::<_, String>(0),
        );
    }
    let (beside, beside_runs) = median3(&mut db);
    for e in &others {
        db.execute("SELECT webhooks.endpoint_delete($1)", &[e])
            .unwrap();
    }
    println!("   healthy endpoint alone {alone:.0}/s, beside 8 stalling ones {beside:.0}/s");
    r.insert(
        "fairness".into(),
        json!({"alone_per_s": alone, "beside_stalling_per_s": beside,
        "alone_runs_per_s": alone_runs, "beside_runs_per_s": beside_runs,
        "deliveries": fair_n, "ratio": beside / alone}),
    );
    db.reset("TRUNCATE webhooks.events, webhooks.deliveries, webhooks.attempts")
        .unwrap();
    db.execute(
        "SELECT webhooks.endpoint_update($1, batch_window => '0')",
        &[&ep],
    )
    .unwrap();
    db.reset("TRUNCATE webhooks.events, webhooks.deliveries, webhooks.attempts")
        .unwrap();

    if quick {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Object(r)).unwrap()
        );
        return;
    }

    r.insert("latency".into(), latency_section(&mut db, &ep));

    println!("== webhook_send_sync, one session, warm");
    let (sync_https, sync_http) = (
        send_sync(&mut db, &a.nginx_tls, 500),
        send_sync(&mut db, &a.nginx, 500),
    );
    let select_1 = {
        let mut v = Vec::new();
        for _ in 0..500 {
            let t = Instant::now();
            db.batch_execute("SELECT 1").unwrap();
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        v
    };
    let mut sync = serde_json::Map::new();
    for (k, mut v) in [
        ("https", sync_https),
        ("http", sync_http),
        ("select_1", select_1),
    ] {
        sync.insert(
            k.into(),
            json!({"p50_ms": percentile(&mut v, 0.5), "p99_ms": percentile(&mut v, 0.99), "calls": v.len()}),
        );
    }
    println!("   {}", Value::Object(sync.clone()));
    r.insert("send_sync".into(), Value::Object(sync));

    println!("== backlog");
    let (mem_private2, mem_peak2) = worker_memory(&mut db);
    // Claims are measured in a database the worker does not serve, on committed due rows, each
    // claim rolled back: exactly the statement the worker runs, without the worker racing it.
    db.batch_execute("CREATE DATABASE backlog").unwrap();
    let mut bl = Client::connect(
        &format!("{} dbname=backlog", a.pg.replace("dbname=postgres", "")),
        NoTls,
    )
    .unwrap();
    bl.batch_execute("CREATE EXTENSION webhooks").unwrap();
    let hep: String = bl
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{user.*}')",
            &[&a.nginx],
        )
        .unwrap()
        .get(0);
    bl.batch_execute("SELECT count(webhooks.webhook_publish('user.created', jsonb_build_object('i', g))) FROM generate_series(1, 500) g").unwrap();
    // The dead endpoint exists (and subscribes) in both runs; only its backlog differs.
    bl.batch_execute("INSERT INTO webhooks.endpoints (id, url, event_types) VALUES ('ep_dead', 'http://127.0.0.1:9/down', '{password.updated}')").unwrap();
    let claim_empty = claim_ms(&mut bl);
    let pub_sql = format!("SELECT webhooks.webhook_publish('password.updated', {payload});");
    let publish_empty = pgbench_db(&a, "publish_bl", &pub_sql, 10, Some("backlog"));
    // A million deliveries for an endpoint that is down, all waiting for their next retry.
    bl.batch_execute(
        "INSERT INTO webhooks.events (id, type, source, data) SELECT 'evt_backlog_' || g, 'user.created', 'bench', '{}' FROM generate_series(1, 1000000) g;
         INSERT INTO webhooks.deliveries (event_id, endpoint_id, attempts, next_attempt_at)
             SELECT 'evt_backlog_' || g, 'ep_dead', 3, now() + interval '2 hours' + g * interval '1 millisecond' FROM generate_series(1, 1000000) g;",
    )
    .unwrap();
    bl.batch_execute("VACUUM ANALYZE webhooks.deliveries")
        .unwrap();
    bl.batch_execute("VACUUM ANALYZE webhooks.events").unwrap();
    let claim_backlog = claim_ms(&mut bl);
    let publish_backlog = pgbench_db(&a, "publish_bl", &pub_sql, 10, Some("backlog"));
    let _ = hep;
    r.insert("backlog".into(), json!({"claim_500_empty_ms": claim_empty, "claim_500_backlog_ms": claim_backlog,
        "publish_tps_empty": publish_empty, "publish_tps_backlog": publish_backlog,
        "publish_slowdown": publish_empty / publish_backlog - 1.0,
        "worker_private_mb": mem_private.max(mem_private2), "worker_peak_rss_mb": mem_peak.max(mem_peak2)}));

    drop(bl);
    println!("== two workers");
    // (it restarts the cluster: whatever goes wrong there must not lose the run's figures)
    let workers =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| two_workers(&a, db, &ep)))
            .unwrap_or_else(|e| {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                json!({"error": why})
            });
    r.insert("workers".into(), workers);

    r.insert("machine".into(), machine(&a));
    // The last retention run, when there is one (it takes half an hour: a run of its own).
    if let Some(ret) = std::fs::read_to_string(format!("{}/retention.json", a.out))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    {
        r.insert("retention".into(), ret);
    }
    let v = Value::Object(r);
    std::fs::write(
        format!("{}/results.json", a.out),
        serde_json::to_string_pretty(&v).unwrap(),
    )
    .unwrap();
    let md = report(&v);
    print!("{md}");
    std::fs::write(format!("{}/RESULTS.md", a.out), md).unwrap();
}

/// `webhook_send_sync` of an SMS code to one endpoint at `url`, called from one session after
/// 20 calls that warm its connection: milliseconds per call as the caller sees them.
fn send_sync(db: &mut Client, url: &str, calls: usize) -> Vec<f64> {
    let ep: String = db
        .query_one(
            "SELECT id FROM webhooks.endpoint_create($1, '{sms.created}')",
            &[&url],
        )
        .unwrap()
        .get(0);
    let stmt = db
        .prepare("SELECT webhooks.webhook_send_sync('sms.created', '{\"phone\": \"+15550100\", \"code\": \"123456\"}')")
        .unwrap();
    let mut v = Vec::new();
    for i in 0..20 + calls {
        let t = Instant::now();
        db.execute(&stmt, &[]).unwrap();
        if i >= 20 {
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    db.execute("SELECT webhooks.endpoint_delete($1)", &[&ep])
        .unwrap();
    v
}

fn worker_pids(db: &mut Client) -> Vec<i32> {
    db.query(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker' ORDER BY pid",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The single-endpoint run with one worker, then again after a restart with
/// `webhooks.workers = 2`, both to a receiver that notes which worker sent each request: each
/// worker's rate, and whether any delivery (its webhook-id) was sent twice.
fn two_workers(a: &Args, mut db: Client, main_ep: &str) -> Value {
    let rx = counting::Counting::start();
    db.execute("SELECT webhooks.endpoint_disable($1)", &[&main_ep])
        .unwrap();
    let eps: Vec<String> = db
        .query(
            "SELECT (webhooks.endpoint_create($1 || '/' || g, '{user.*}')).id FROM generate_series(1, 10) g",
            &[&rx.url],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let pg_ctl = std::path::Path::new(&a.pgbench).with_file_name("pg_ctl");
    let mut runs = Vec::new();
    for workers in [1usize, 2] {
        // Both runs start from a restart (the same cold caches), each worker with its own
        // webhooks.concurrency senders (two workers have twice as many).
        {
            db.batch_execute(&format!("ALTER SYSTEM SET webhooks.workers = {workers}"))
                .unwrap();
            drop(db);
            let log = format!(
                "{}/server.log",
                std::path::Path::new(&a.pgdata).parent().unwrap().display()
            );
            let ok = Command::new("sudo")
                .args(["-u", "postgres"])
                .arg(&pg_ctl)
                .args(["-D", &a.pgdata, "-l", &log, "restart", "-m", "fast", "-w"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "the cluster restarts with webhooks.workers = {workers}");
            db = Client::connect(&a.pg, NoTls).expect("connect after the restart");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let pids = loop {
            let p = worker_pids(&mut db);
            if p.len() >= workers || Instant::now() > deadline {
                break p;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(pids.len(), workers, "{workers} workers run");
        // One endpoint (held to its max_in_flight whatever the workers), then ten.
        for endpoints in [1usize, 10] {
            for e in &eps[1..] {
                let f = if endpoints == 1 {
                    "endpoint_disable"
                } else {
                    "endpoint_enable"
                };
                db.execute(&format!("SELECT webhooks.{f}($1)"), &[e])
                    .unwrap();
            }
            rx.reset(pids.clone());
            let (rate, n) = throughput(&mut db, &eps[..endpoints], a.n / endpoints);
            let t = rx.tally();
            let by: Vec<Value> = t
                .by_sender
                .iter()
                .map(|(pid, k)| json!({"pid": pid, "requests": k, "per_s": *k as f64 * rate / n as f64}))
                .collect();
            println!(
                "   {workers} worker(s), {endpoints} endpoint(s): {rate:.0}/s, {} requests for {n} deliveries, {} distinct ids, by worker {by:?}",
                t.requests, t.distinct
            );
            runs.push(
                json!({"workers": workers, "endpoints": endpoints, "per_s": rate, "deliveries": n,
                             "requests": t.requests, "distinct_ids": t.distinct,
                             "sent_twice": t.requests - t.distinct, "by_worker": by}),
            );
        }
    }
    db.batch_execute("ALTER SYSTEM RESET webhooks.workers")
        .unwrap();
    json!({"runs": runs})
}

fn machine(a: &Args) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let server: String = Client::connect(&a.pg, NoTls)
        .and_then(|mut db| db.query_one("SHOW server_version", &[]))
        .map(|row| row.get(0))
        .unwrap_or_else(|_| "?".into());
    json!({"cores": cores, "cpu": model, "commit": a.commit, "date": date, "postgresql": server})
}

fn machine_line(m: &Value) -> String {
    format!(
        "{} cores ({}), commit {}, {}, PostgreSQL {}",
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        m["commit"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?"),
        m["postgresql"].as_str().unwrap_or("?")
    )
}

fn report(v: &Value) -> String {
    let f = |p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let m = &v["machine"];
    let mut s = format!(
        "# Benchmark results\n\n{} cores ({}), commit {}, {}. PostgreSQL {}, nginx `return 200` on 127.0.0.1 as the\n\
         receiver, all on the same machine. Produced by `bench/run`; each figure is paired with a baseline\n\
         measured in the same run.\n\n",
        m["cores"], m["cpu"].as_str().unwrap_or("?"), m["commit"].as_str().unwrap_or("?"), m["date"].as_str().unwrap_or("?"),
        m["postgresql"].as_str().unwrap_or("15")
    );
    s += "| what | webhooks | baseline (same run) | ratio |\n|---|---|---|---|\n";
    s += &format!("| publish, pgbench 4 clients, 1 event/txn | {:.0} tx/s | plain INSERT of the same JSON: {:.0} tx/s | {:.2}x the cost |\n", f("/publish/publish_tps"), f("/publish/plain_tps"), f("/publish/ratio"));
    s += &format!("| publish, 50,000 webhook_publish calls in one statement | {:.2} s | plain INSERT ... SELECT: {:.2} s | {:.2}x the cost |\n", f("/publish/bulk_publish_s"), f("/publish/bulk_plain_s"), f("/publish/bulk_ratio"));
    for (k, label) in [
        ("one_endpoint", "1 endpoint"),
        ("ten_endpoints", "10 endpoints"),
    ] {
        let b = |x: &str| f(&format!("/bursts/{k}/{x}"));
        s += &format!("| one statement publishing 50,000 events (webhook_publish_many), {label} | {:.3} s | plain INSERT ... SELECT of the same payloads: {:.3} s | {:.2}x the cost |\n", b("publish_many_s"), b("plain_insert_s"), b("publish_ratio"));
        s += &format!("| INSERT ... SELECT of 50,000 rows into a tracked users table, {label} | {:.3} s | untracked table: {:.3} s | {:.2}x the cost |\n", b("tracked_insert_s"), b("untracked_insert_s"), b("insert_ratio"));
        s += &format!("| UPDATE of 50,000 tracked rows (one column), {label} | {:.3} s | untracked table: {:.3} s | {:.2}x the cost |\n", b("tracked_update_s"), b("untracked_update_s"), b("update_ratio"));
    }
    s += &format!("| publish for one tenant, 1,000 endpoints registered (100 tenants), pgbench 4 clients | {:.0} tx/s | 10 endpoints registered: {:.0} tx/s | {:.2}x the cost |\n", f("/endpoints/publish_tps_1000"), f("/endpoints/publish_tps_10"), f("/endpoints/ratio"));
    s += &format!("| publish to 10 endpoints, each with a content filter (jsonpath), pgbench 4 clients | {:.0} tx/s | the same 10 without filters: {:.0} tx/s | {:.2}x the cost |\n", f("/filters/publish_tps_filtered"), f("/filters/publish_tps_unfiltered"), f("/filters/ratio"));
    s += &format!("| INSERT into a tracked users table | {:.0} tx/s | untracked table: {:.0} tx/s | {:.2}x the cost |\n", f("/trigger/tracked_tps"), f("/trigger/untracked_tps"), f("/trigger/ratio"));
    s += &format!("| signed deliveries, 1 endpoint ({} deliveries) | {:.0} /s | best raw ureq loop ({} threads, no DB): {:.0} /s (32 threads: {:.0} /s) | {:.0}% of raw |\n", v["throughput"]["deliveries_one"], f("/throughput/one_endpoint_per_s"), v["throughput"]["raw_loop_threads"], f("/throughput/raw_loop_per_s"), f("/throughput/raw_loop_32_threads_per_s"), 100.0 * f("/throughput/ratio_one_to_raw"));
    s += &format!("| signed deliveries over HTTPS (keep-alive), 1 endpoint ({} deliveries) | {:.0} /s, {:.2} handshakes per 1,000 | same over plain http: {:.0} /s | {:.0}% of http |\n", v["tls"]["deliveries"], f("/tls/https_one_endpoint_per_s"), f("/tls/handshakes_per_1000"), f("/throughput/one_endpoint_per_s"), 100.0 * f("/tls/ratio_to_http"));
    s += &format!("| signed deliveries, 10 endpoints ({} deliveries) | {:.0} /s | raw loop: {:.0} /s | {:.0}% of raw |\n", v["throughput"]["deliveries_ten"], f("/throughput/ten_endpoints_per_s"), f("/throughput/raw_loop_per_s"), 100.0 * f("/throughput/ratio_ten_to_raw"));
    s += &format!("| one healthy endpoint ({} deliveries, medians of 3 rounds) beside 4 silent and 4 5-second receivers, all with backlogs | {:.0} /s | the same endpoint alone: {:.0} /s | {:.0}% of alone |\n", v["fairness"]["deliveries"], f("/fairness/beside_stalling_per_s"), f("/fairness/alone_per_s"), 100.0 * f("/fairness/ratio"));
    for rate in ["10", "100", "1000"] {
        s += &format!("| commit to receiver's first byte at {rate} events/s | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | | |\n",
            f(&format!("/latency/{rate}/p50_ms")), f(&format!("/latency/{rate}/p99_ms")), f(&format!("/latency/{rate}/max_ms")));
    }
    s += &format!("| claim 500 due deliveries, 1,000,000 waiting for a dead endpoint | {:.2} ms | empty queue: {:.2} ms | {:.2}x |\n", f("/backlog/claim_500_backlog_ms"), f("/backlog/claim_500_empty_ms"), f("/backlog/claim_500_backlog_ms") / f("/backlog/claim_500_empty_ms"));
    s += &format!(
        "| publish with that backlog | {:.0} tx/s | empty queue: {:.0} tx/s | {:+.0}% slower |\n",
        f("/backlog/publish_tps_backlog"),
        f("/backlog/publish_tps_empty"),
        100.0 * f("/backlog/publish_slowdown")
    );
    if v.get("send_sync").is_some() {
        s += &format!("| webhook_send_sync over HTTPS, one session, warm (500 calls) | p50 {:.2} ms, p99 {:.2} ms | same over plain http: p50 {:.2} ms; `SELECT 1` round trip: p50 {:.2} ms | |\n",
            f("/send_sync/https/p50_ms"), f("/send_sync/https/p99_ms"), f("/send_sync/http/p50_ms"), f("/send_sync/select_1/p50_ms"));
    }
    if let Some(runs) = v.pointer("/workers/runs").and_then(Value::as_array) {
        let run = |w: i64, e: i64| {
            runs.iter()
                .find(|r| r["workers"] == w && r["endpoints"] == e)
        };
        for e in [1, 10] {
            if let (Some(one), Some(two)) = (run(1, e), run(2, e)) {
                let rate = |r: &Value| r["per_s"].as_f64().unwrap_or(f64::NAN);
                let each: Vec<String> = two["by_worker"]
                    .as_array()
                    .map(|w| {
                        w.iter()
                            .map(|x| {
                                format!(
                                    "{:.0} (pid {})",
                                    x["per_s"].as_f64().unwrap_or(0.0),
                                    x["pid"]
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                s += &format!("| 2 workers (each with its 32 senders), {e} endpoint(s) ({} deliveries, a receiver that notes each request's webhook-id and which worker sent it; pid 0: not told) | {:.0} /s (by worker: {} /s); {} sent twice of {} requests | 1 worker, same receiver: {:.0} /s ({} sent twice) | {:.2}x |\n",
                    two["deliveries"], rate(two), each.join(" + "), two["sent_twice"], two["requests"], rate(one), one["sent_twice"], rate(two) / rate(one));
            }
        }
    }
    if let Some(samples) = v.pointer("/retention/samples").and_then(Value::as_array) {
        let at = |i: usize| samples.get(i).map(retention::total_mb).unwrap_or(f64::NAN);
        let n = samples.len().saturating_sub(1);
        s += &format!("| 1,000 publishes/s for {} minutes, retention 1 minute (RETENTION.md, commit {}) | outbox tables and indexes: {:.0} MB at minute {}, {:.0} MB at minute {}, {:.0} MB at the end | | |\n",
            v.pointer("/retention/minutes").unwrap_or(&Value::Null), v.pointer("/retention/machine/commit").and_then(Value::as_str).unwrap_or("?"),
            at(n / 3), n / 3, at(2 * n / 3), 2 * n / 3, at(n));
    }
    s += &format!("| worker memory | {:.1} MB private, {:.1} MB peak RSS (incl. shared buffers touched) | | |\n", f("/backlog/worker_private_mb"), f("/backlog/worker_peak_rss_mb"));
    s += "\n![throughput and latency](results.png)\n";
    s
}
