//! Across majors: a database dumped from a PostgreSQL 15 cluster and restored with 17's
//! pg_restore into a PostgreSQL 17 cluster (a major upgrade the way users do it) keeps its
//! endpoints, keys and tracked tables and delivers the work that waited. scripts/test.sh runs
//! it once both majors have the extension installed.

#[test]
fn a_database_dumped_on_15_and_restored_into_17_delivers_its_waiting_work() {
    webhooks_e2e::restore::dump_and_restore(15, 17);
}
