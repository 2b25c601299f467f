//! `webhooks`: a transactional outbox with a signed, retrying HTTP sender inside PostgreSQL.
//!
//! The pure logic lives in the `webhooks-core` crate (core/), re-exported here under its own
//! names. PostgreSQL-facing: guc (settings and their defaults), wake (waking workers, the
//! utility hook), api (SQL helpers), gate (entry points that act as the owner), request (the
//! request contract with SQL), keys (the key file) and secrets (sealing secrets at rest),
//! tracking (row events' columns), sync, handoff, launcher, worker/
//! (the delivery worker); http/ (the sender threads' client and pool). ARCHITECTURE.md maps it.

pub use webhooks_core::{
    answer, dispatch, envelope, filter, filter_path, headers, ids, lease, schedule, sealing,
    signing, state, target, tls,
};

pub mod http;

pub mod api;
pub mod gate;
pub mod guc;
pub mod handoff;
pub mod keys;
pub mod launcher;
pub mod request;
pub mod secrets;
pub mod sync;
pub mod tracking;
pub mod wake;
pub mod worker;

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

// The hand-written SQL (sql/src/), in the one order the install script is made in: each file
// requires the one before it, and the Rust functions its statements need made first. The
// upgrade scripts beside sql/src/ are generated from this script (scripts/upgrade-scripts.sh).
//   schema        every table, index and type of data (bootstrap: first of all)
//   states        the deliveries' state check (a Rust function, so after the tables)
//   tenancy       which roles act for which tenants
//   matching      which endpoints an event goes to: _subscribes, the content filters
//   request       the request contract between SQL and Rust (webhooks_internal.request)
//   publish       webhook_publish, webhook_publish_many, operational events
//   sync          webhook_send_sync
//   endpoints     the endpoints' API and checks
//   catalogue     event types
//   operations    retry, replay, recover, test, status
//   tracking      row events of tracked tables
//   claim, record what the worker runs on every wake-up
//   housekeeping  pruning and releases, in small steps
//   secrets       secrets at rest: opening for admins, holding what cannot be opened, resealing
//   observability views and metrics
//   cluster       Citus: configuration copied to every node, shards' row events, views across nodes
//   security      roles, grants and policies (finalize: last of all)
extension_sql_file!("../sql/src/schema.sql", name = "schema", bootstrap);

/// The schema of the helpers (`schema = "webhooks_internal"` on their `#[pg_extern]`): owner
/// only, so that `\df webhooks.*` lists the documented API alone.
#[pg_schema]
mod webhooks_internal {}
extension_sql_file!(
    "../sql/src/states.sql",
    name = "states",
    requires = ["schema", api::_delivery_state_ok]
);
extension_sql_file!(
    "../sql/src/tenancy.sql",
    name = "tenancy",
    requires = ["states", gate::_caller]
);
extension_sql_file!(
    "../sql/src/matching.sql",
    name = "matching",
    requires = [
        "tenancy",
        api::_matches,
        api::_filter_weight,
        api::_filter_affordable
    ]
);
extension_sql_file!(
    "../sql/src/request.sql",
    name = "request",
    requires = ["matching"]
);
extension_sql_file!(
    "../sql/src/publish.sql",
    name = "publish",
    requires = [
        "request",
        api::_source,
        api::_new_event_id,
        api::_new_event_ids,
        gate::tenant_scope,
        gate::current_tenant,
        wake::_wake_on_commit
    ]
);
extension_sql_file!(
    "../sql/src/sync.sql",
    name = "sync",
    requires = ["publish", gate::webhook_send_sync_result]
);
extension_sql_file!(
    "../sql/src/endpoints.sql",
    name = "endpoints",
    requires = [
        "sync",
        api::_check_client_cert,
        api::_check_header_prefix,
        secrets::_seal,
        secrets::_open,
        gate::endpoint_secret
    ]
);
extension_sql_file!(
    "../sql/src/catalogue.sql",
    name = "catalogue",
    requires = ["endpoints"]
);
extension_sql_file!(
    "../sql/src/operations.sql",
    name = "operations",
    requires = ["catalogue", api::_worker_state]
);
extension_sql_file!(
    "../sql/src/tracking.sql",
    name = "tracking",
    requires = [
        "operations",
        gate::webhook_publish_many,
        api::_check_condition,
        tracking::tracked_columns,
        tracking::_forget_row_shape
    ]
);
extension_sql_file!(
    "../sql/src/claim.sql",
    name = "claim",
    requires = ["tracking"]
);
extension_sql_file!(
    "../sql/src/record.sql",
    name = "record",
    requires = ["claim"]
);
extension_sql_file!(
    "../sql/src/housekeeping.sql",
    name = "housekeeping",
    requires = ["record"]
);
extension_sql_file!(
    "../sql/src/secrets.sql",
    name = "secrets",
    requires = [
        "housekeeping",
        secrets::_open,
        secrets::_reseal,
        secrets::_needs_reseal,
        secrets::_key_file
    ]
);
extension_sql_file!(
    "../sql/src/observability.sql",
    name = "observability",
    requires = ["secrets", gate::status]
);
extension_sql_file!(
    "../sql/src/cluster.sql",
    name = "cluster",
    requires = ["observability"]
);
extension_sql_file!("../sql/src/security.sql", name = "security", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::init();
    wake::init_backend();
    tracking::init_backend();
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        keys::ensure_at_start();
        wake::init_shmem();
        handoff::init_shmem();
        worker::register();
    } else {
        log!("webhooks is not in shared_preload_libraries: events are recorded but no worker delivers them (see webhooks.status())");
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    include!("tests.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // The worker serves another database than the tests': every test's transaction rolls
        // back, and a failed synchronous send's note would have the worker record it (commit
        // it) in the tests' database, where the next test counts rows.
        vec![
            "shared_preload_libraries = 'webhooks'",
            "webhooks.database = 'postgres'",
        ]
    }
}
