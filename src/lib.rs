//! `webhooks`: a transactional outbox with a signed, retrying HTTP sender inside PostgreSQL.
//!
//! The pure logic lives in the `webhooks-core` crate (core/), re-exported here under its own
//! names. PostgreSQL-facing: guc (settings), wake (waking workers, the utility hook), api (SQL
//! helpers), gate (entry points that act as the owner), tracking (row events' columns), sync,
//! handoff, launcher, worker; http (the sender threads' client and pool).

pub use webhooks_core::{
    dispatch, envelope, filter, filter_path, headers, ids, lease, schedule, signing, state, target,
    tls,
};

pub mod http;

pub mod api;
pub mod gate;
pub mod guc;
pub mod handoff;
pub mod launcher;
pub mod sync;
pub mod tracking;
pub mod wake;
pub mod worker;

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);

/// The schema of the helpers (`schema = "webhooks_internal"` on their `#[pg_extern]`): owner
/// only, so that `\df webhooks.*` lists the documented API alone.
#[pg_schema]
mod webhooks_internal {}
// The deliveries' state check calls a function of ours, made after the tables.
extension_sql_file!(
    "../sql/states.sql",
    name = "states",
    requires = ["schema", api::_delivery_state_ok]
);
extension_sql_file!(
    "../sql/tenancy.sql",
    name = "tenancy",
    requires = ["schema", gate::_caller]
);
// The SQL API, one file per concern; the publish path is sql/publish.sql.
extension_sql_file!(
    "../sql/publish.sql",
    name = "publish",
    requires = [
        "tenancy",
        api::_matches,
        api::_new_event_id,
        api::_new_event_ids,
        gate::tenant_scope,
        gate::current_tenant,
        wake::_wake_on_commit
    ]
);
extension_sql_file!(
    "../sql/sync.sql",
    name = "sync",
    requires = ["publish", gate::webhook_send_sync_result]
);
extension_sql_file!(
    "../sql/endpoints.sql",
    name = "endpoints",
    requires = [
        "publish",
        api::_check_client_cert,
        api::_check_header_prefix,
        api::_filter_weight,
        api::_filter_affordable
    ]
);
extension_sql_file!(
    "../sql/catalogue.sql",
    name = "catalogue",
    requires = ["publish"]
);
extension_sql_file!(
    "../sql/operations.sql",
    name = "operations",
    requires = ["endpoints", api::_worker_state]
);
extension_sql_file!("../sql/views.sql", name = "views", requires = ["endpoints"]);
extension_sql_file!(
    "../sql/tracking.sql",
    name = "tracking",
    requires = [
        "publish",
        "catalogue",
        gate::webhook_publish_many,
        api::_check_condition,
        tracking::tracked_columns,
        tracking::_forget_row_shape
    ]
);
extension_sql_file!(
    "../sql/worker.sql",
    name = "worker",
    requires = ["endpoints", "operations"]
);
extension_sql_file!(
    "../sql/housekeeping.sql",
    name = "housekeeping",
    requires = ["worker"]
);
extension_sql_file!(
    "../sql/metrics.sql",
    name = "metrics",
    requires = ["operations", "views", gate::status]
);
extension_sql_file!("../sql/security.sql", name = "security", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::init();
    wake::init_backend();
    tracking::init_backend();
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
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
