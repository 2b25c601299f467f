//! A long run at a steady 1,000 publishes/s with `webhooks.retention = '1min'`: the sizes of
//! the outbox tables and their indexes, sampled every minute, show whether pruning keeps pace
//! with delivery (they level off) or falls behind (they grow for as long as the run lasts).

use crate::Args;
use postgres::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TABLES: [&str; 3] = ["events", "deliveries", "attempts"];

fn sample(db: &mut Client, at: f64) -> Value {
    let mut s = serde_json::Map::new();
    s.insert("minute".into(), json!(at / 60.0));
    for t in TABLES {
        let row = db
            .query_one(
                &format!(
                    "SELECT pg_table_size('webhooks.{t}')::float8, pg_indexes_size('webhooks.{t}')::float8,
                            coalesce(n_live_tup, 0)::int8, coalesce(n_dead_tup, 0)::int8,
                            coalesce(n_tup_ins, 0)::int8, coalesce(n_tup_del, 0)::int8,
                            coalesce(autovacuum_count, 0)::int8
                     FROM pg_stat_user_tables WHERE relid = 'webhooks.{t}'::regclass"
                ),
                &[],
            )
            .expect("sizes of the outbox tables");
        s.insert(
            t.into(),
            json!({"table_mb": row.get::<_, f64>(0) / 1048576.0, "indexes_mb": row.get::<_, f64>(1) / 1048576.0,
                   "live": row.get::<_, i64>(2), "dead": row.get::<_, i64>(3),
                   "inserted": row.get::<_, i64>(4), "deleted": row.get::<_, i64>(5),
                   "autovacuums": row.get::<_, i64>(6)}),
        );
    }
    let (waiting, succeeded): (i64, i64) = db
        .query_one(
            "SELECT count(*) FILTER (WHERE status IN ('pending', 'in_flight')), count(*) FILTER (WHERE status = 'succeeded')
             FROM webhooks.deliveries",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .expect("deliveries by status");
    s.insert("waiting".into(), json!(waiting));
    s.insert("succeeded_kept".into(), json!(succeeded));
    Value::Object(s)
}

pub fn total_mb(s: &Value) -> f64 {
    TABLES
        .iter()
        .map(|t| {
            s[t]["table_mb"].as_f64().unwrap_or(0.0) + s[t]["indexes_mb"].as_f64().unwrap_or(0.0)
        })
        .sum()
}

/// Publishes at 1,000/s (pgbench --rate, 4 clients) for `minutes` to `ep`, sampling every
/// minute; the worker delivers and prunes as it would in production.
pub fn run(a: &Args, db: &mut Client, ep: &str, minutes: u32) -> Value {
    // (one statement per call: ALTER SYSTEM refuses the implicit transaction of a batch)
    for sql in [
        "ALTER SYSTEM SET webhooks.retention = '1min'",
        "SELECT pg_reload_conf()",
        "TRUNCATE webhooks.events, webhooks.deliveries, webhooks.attempts",
    ] {
        db.batch_execute(sql).expect("retention set to a minute");
    }
    db.execute(
        "SELECT webhooks.endpoint_update($1, batch_window => '0')",
        &[&ep],
    )
    .expect("the endpoint sends at once");
    let file = format!("{}/retention.sql", a.work);
    std::fs::write(
        &file,
        "SELECT webhooks.webhook_publish('user.created', jsonb_build_object('id', random(), 'email', 'anita@example.com', 'name', 'Anita Singh'));",
    )
    .expect("pgbench script written");
    let secs = (minutes * 60).to_string();
    let child = crate::pgbench_command(
        a,
        &[
            "-n", "-c", "4", "-j", "2", "-R", "1000", "-T", &secs, "-f", &file,
        ],
        None,
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("pgbench runs");
    let t0 = Instant::now();
    let mut samples = vec![sample(db, 0.0)];
    for m in 1..=minutes {
        let due = Duration::from_secs(60 * m as u64);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        let s = sample(db, t0.elapsed().as_secs_f64());
        println!(
            "   minute {m}: {:.1} MB in the outbox tables and their indexes, {} waiting",
            total_mb(&s),
            s["waiting"]
        );
        samples.push(s);
    }
    let out = child.wait_with_output().expect("pgbench ends");
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = crate::tps_of(&text).unwrap_or(f64::NAN);
    for sql in [
        "ALTER SYSTEM RESET webhooks.retention",
        "SELECT pg_reload_conf()",
    ] {
        db.batch_execute(sql).expect("retention reset");
    }
    json!({"minutes": minutes, "publish_tps": tps, "samples": samples})
}

/// bench/RETENTION.md: the sizes minute by minute.
pub fn report(v: &Value, machine: &str) -> String {
    let mut s = format!(
        "# Retention run\n\n{machine}. Produced by `BENCH_RETENTION={m} bash bench/run`: pgbench publishes\n\
         1,000 events/s (4 clients, `--rate 1000`, achieved {tps:.0}/s) for {m} minutes to one nginx\n\
         endpoint with `webhooks.retention = '1min'`; the worker delivers and prunes as in production,\n\
         autovacuum at its defaults. Sizes are tables plus their indexes (TOAST included), in MB.\n\n\
         | minute | events | deliveries | attempts | all | deliveries waiting | succeeded kept | rows inserted / deleted (deliveries) |\n\
         |---|---|---|---|---|---|---|---|\n",
        m = v["minutes"],
        tps = v["publish_tps"].as_f64().unwrap_or(f64::NAN),
    );
    let mb = |x: &Value, t: &str| {
        x[t]["table_mb"].as_f64().unwrap_or(0.0) + x[t]["indexes_mb"].as_f64().unwrap_or(0.0)
    };
    if let Some(samples) = v["samples"].as_array() {
        for x in samples {
            s += &format!(
                "| {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} / {} |\n",
                x["minute"].as_f64().unwrap_or(0.0),
                mb(x, "events"),
                mb(x, "deliveries"),
                mb(x, "attempts"),
                total_mb(x),
                x["waiting"],
                x["succeeded_kept"],
                x["deliveries"]["inserted"],
                x["deliveries"]["deleted"],
            );
        }
    }
    s
}
