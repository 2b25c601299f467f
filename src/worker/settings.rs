//! The settings one pass of the worker runs with, read at start and at each reload.

use crate::schedule::{self};
use crate::{guc, target};
use std::time::Duration;

#[derive(Clone, PartialEq)]
pub(super) struct Settings {
    pub(super) schedule: Vec<Duration>,
    pub(super) ttl: Duration,
    pub(super) timeout: Duration,
    /// webhooks.retry_jitter.
    pub(super) jitter: f64,
    pub(super) poll: Duration,
    pub(super) retention: Duration,
    pub(super) dead_retention: Duration,
    pub(super) disable_after: Duration,
    pub(super) concurrency: usize,
    /// webhooks.worker_memory, in bytes.
    pub(super) memory: i64,
    /// Workers serving this database: each holds an endpoint to its share of max_in_flight.
    pub(super) workers: usize,
    pub(super) batch_size: i64,
    pub(super) policy: target::Policy,
    pub(super) ca_file: String,
    pub(super) proxy: String,
}

impl Settings {
    pub(super) fn load() -> Settings {
        Settings {
            schedule: schedule::parse_schedule(&guc::string_value(&guc::RETRY_SCHEDULE))
                .unwrap_or_default(),
            jitter: guc::RETRY_JITTER.get(),
            ttl: guc::ttl(),
            timeout: guc::timeout(),
            poll: guc::poll_interval().max(Duration::from_millis(10)),
            retention: guc::retention(),
            dead_retention: guc::dead_retention(),
            disable_after: guc::disable_after(),
            concurrency: guc::CONCURRENCY.get().max(1) as usize,
            memory: i64::from(guc::WORKER_MEMORY.get().max(1)) * 1024,
            workers: guc::WORKERS.get().max(1) as usize,
            batch_size: guc::BATCH_SIZE.get().max(1) as i64,
            policy: guc::policy(),
            ca_file: crate::tls::file_stamp(&guc::string_value(&guc::TLS_CA_FILE)),
            proxy: guc::string_value(&guc::HTTP_PROXY),
        }
    }

    /// Whether the sender pool (its agent: timeout, guard, trust, proxy) must be rebuilt.
    pub(super) fn needs_new_pool(&self, old: &Settings) -> bool {
        self.concurrency != old.concurrency
            || self.timeout != old.timeout
            || self.policy.allow_private != old.policy.allow_private
            || self.ca_file != old.ca_file
            || self.proxy != old.proxy
    }
}
