//! Across majors: a database dumped from a PostgreSQL 15 cluster and restored with 17's
//! pg_restore into a PostgreSQL 17 cluster (a major upgrade the way users do it) keeps its
//! endpoints, keys and tracked tables and delivers the work that waited. scripts/test.sh runs
//! it once both majors have the extension installed (WEBHOOKS_CROSS_MAJORS names them).

#[test]
fn a_database_dumped_on_one_major_and_restored_into_a_newer_one_delivers_its_waiting_work() {
    let majors: Vec<u32> = std::env::var("WEBHOOKS_CROSS_MAJORS")
        .unwrap_or_else(|_| "15 17".into())
        .split_whitespace()
        .map(|m| m.parse().expect("WEBHOOKS_CROSS_MAJORS holds majors, e.g. '15 17'"))
        .collect();
    assert!(
        majors.len() == 2 && majors[0] < majors[1],
        "WEBHOOKS_CROSS_MAJORS names an older and a newer major"
    );
    webhooks_e2e::restore::dump_and_restore(majors[0], majors[1]);
}
