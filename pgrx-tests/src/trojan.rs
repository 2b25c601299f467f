//! A hostile role's trojans (src/trojans.sql): operators, functions, aggregates and types that
//! shadow pg_catalog's and report when they run as anyone but their author.

use crate::cluster::Cluster;

/// Plants the trojans in the database `db` is connected to, as `author` (who must be able to
/// create a schema there).
pub fn plant(db: &mut postgres::Client, author: &str) {
    db.batch_execute(&include_str!("trojans.sql").replace("@AUTHOR@", author))
        .expect("the trojans are planted");
}

/// The search_path that puts them first.
pub const PATH: &str = "trojan, pg_catalog, public";

/// What fired as someone else: rows that committed, and warnings of any that ran (a rollback
/// takes the rows, not the log line).
pub fn fired(c: &Cluster, db: &mut postgres::Client) -> Vec<String> {
    // (read with pg_catalog's operators only, whatever the session's path)
    let mut out: Vec<String> = db
        .query("SELECT by_role, what FROM trojan.fired", &[])
        .unwrap()
        .iter()
        .map(|r| format!("{}: {}", r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    out.extend(
        c.log()
            .lines()
            .filter(|l| l.contains("TROJAN FIRED"))
            .map(str::to_string),
    );
    out
}

pub fn is_superuser(db: &mut postgres::Client, role: &str) -> bool {
    db.query_one(
        "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) $1",
        &[&role],
    )
    .unwrap()
    .get(0)
}
