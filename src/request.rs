//! One request to send, as SQL hands it over. The claim (`_claim`) and a synchronous send's
//! preparation (`_sync_prepare`) both return the composite `webhooks_internal.request`
//! (sql/src/request.sql), expanded into columns: they are read here by name into one struct, whose
//! body is built for the attempt it is about to make.

use crate::envelope::{self, Event};
use crate::http::Format;
use pgrx::prelude::*;
use pgrx::spi::{SpiHeapTupleData, SpiTupleTable};
use std::collections::HashMap;

/// The composite's columns, as SQL names them (0.3.0's synchronous targets carried the same
/// names as JSON, which `_sync_send` still reads for a 0.3.0 schema).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Row {
    pub delivery_id: Option<i64>,
    pub attempts: Option<i32>,
    pub lease_us: Option<i64>,
    pub bytes: Option<i64>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub version: Option<String>,
    pub source: Option<String>,
    pub occurred_us: Option<i64>,
    pub tenant_id: Option<String>,
    pub actor: Option<String>,
    pub data: Option<String>,
    pub traceparent: Option<String>,
    pub endpoint_id: Option<String>,
    pub endpoint_tenant: Option<String>,
    pub url: Option<String>,
    pub secret: Option<String>,
    pub previous_secret: Option<String>,
    pub headers: Option<String>,
    pub batch_max: Option<i32>,
    pub max_in_flight: Option<i32>,
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<String>,
    pub format: Option<String>,
    pub header_prefix: Option<String>,
    pub signature: Option<String>,
    pub tenant_slug: Option<String>,
}

/// A request as the senders use it: the delivery's token and cost, its endpoint's parts, and
/// the body for this attempt.
#[derive(Debug)]
pub struct Request {
    pub delivery_id: i64,
    /// The claim's lease end in Unix microseconds: its token. An outcome is recorded only
    /// while the row still carries it, so a late answer never overwrites a newer claim.
    pub lease_us: i64,
    /// Attempts made before this one.
    pub attempts: i32,
    /// What it costs the worker's memory while claimed (as the claim counted it).
    pub bytes: i64,
    pub event_id: String,
    pub event_type: String,
    pub version: String,
    pub source: String,
    pub occurred_us: i64,
    pub tenant_id: Option<String>,
    pub traceparent: Option<String>,
    pub endpoint_id: String,
    /// The endpoint's tenant (its share of the senders is counted per tenant) and cap.
    pub endpoint_tenant: String,
    pub max_in_flight: usize,
    pub url: String,
    /// The secret, then the previous one during a rotation's grace period (v1a: private keys).
    pub secrets: Vec<String>,
    pub headers: Option<String>,
    pub batch_max: i32,
    pub client_cert: Option<(String, String)>,
    pub format: Format,
    /// The envelope as this attempt sends it (the hmac-hex body names its attempt).
    pub body: String,
}

impl From<Row> for Request {
    fn from(r: Row) -> Request {
        let format = Format::from_columns(
            r.format.as_deref().unwrap_or("standard-webhooks"),
            r.header_prefix.as_deref(),
            r.signature.as_deref(),
        );
        let attempts = r.attempts.unwrap_or(0);
        let endpoint_id = r.endpoint_id.unwrap_or_default();
        let event_id = r.event_id.unwrap_or_default();
        let event_type = r.event_type.unwrap_or_default();
        let version = r.version.unwrap_or_else(|| "1".into());
        let source = r.source.unwrap_or_default();
        let occurred_us = r.occurred_us.unwrap_or(0);
        let data = r.data.unwrap_or_else(|| "{}".into());
        let event = Event {
            id: &event_id,
            event_type: &event_type,
            version: &version,
            source: &source,
            occurred_at_us: occurred_us,
            tenant_id: r.tenant_id.as_deref(),
            actor_json: r.actor.as_deref(),
            data_json: &data,
        };
        let body = match format {
            Format::StandardWebhooks | Format::StandardWebhooksV1a => envelope::build(&event),
            Format::HmacHex { .. } => envelope::build_hmac_hex(
                &event,
                r.tenant_slug.as_deref(),
                attempts + 1,
                &endpoint_id,
            ),
        };
        Request {
            delivery_id: r.delivery_id.unwrap_or(0),
            lease_us: r.lease_us.unwrap_or(0),
            attempts,
            bytes: r.bytes.unwrap_or(1024),
            event_id,
            event_type,
            version,
            source,
            occurred_us,
            tenant_id: r.tenant_id,
            traceparent: r.traceparent,
            endpoint_id,
            endpoint_tenant: r.endpoint_tenant.unwrap_or_default(),
            max_in_flight: r.max_in_flight.unwrap_or(1).max(1) as usize,
            url: r.url.unwrap_or_default(),
            secrets: [r.secret, r.previous_secret]
                .into_iter()
                .flatten()
                .collect(),
            headers: r.headers,
            batch_max: r.batch_max.unwrap_or(1),
            client_cert: r.tls_client_cert.zip(r.tls_client_key),
            format,
            body,
        }
    }
}

/// A result's columns by name, looked up once per result.
pub struct Columns(HashMap<String, usize>);

impl Columns {
    pub fn of(table: &SpiTupleTable<'_>) -> Columns {
        let n = table.columns().unwrap_or(0);
        Columns(
            (1..=n)
                .filter_map(|i| table.column_name(i).ok().map(|name| (name, i)))
                .collect(),
        )
    }

    pub fn get<T: FromDatum + IntoDatum>(
        &self,
        row: &SpiHeapTupleData<'_>,
        name: &str,
    ) -> Option<T> {
        let i = *self.0.get(name)?;
        row.get::<T>(i).ok().flatten()
    }

    /// One row's request columns; `None` for a row that holds no request.
    pub fn row(&self, row: &SpiHeapTupleData<'_>) -> Option<Row> {
        let delivery_id = self.get::<i64>(row, "delivery_id")?;
        Some(Row {
            delivery_id: Some(delivery_id),
            attempts: self.get(row, "attempts"),
            lease_us: self.get(row, "lease_us"),
            bytes: self.get(row, "bytes"),
            event_id: self.get(row, "event_id"),
            event_type: self.get(row, "event_type"),
            version: self.get(row, "version"),
            source: self.get(row, "source"),
            occurred_us: self.get(row, "occurred_us"),
            tenant_id: self.get(row, "tenant_id"),
            actor: self.get(row, "actor"),
            data: self.get(row, "data"),
            traceparent: self.get(row, "traceparent"),
            endpoint_id: self.get(row, "endpoint_id"),
            endpoint_tenant: self.get(row, "endpoint_tenant"),
            url: self.get(row, "url"),
            secret: self.get(row, "secret"),
            previous_secret: self.get(row, "previous_secret"),
            headers: self.get(row, "headers"),
            batch_max: self.get(row, "batch_max"),
            max_in_flight: self.get(row, "max_in_flight"),
            tls_client_cert: self.get(row, "tls_client_cert"),
            tls_client_key: self.get(row, "tls_client_key"),
            format: self.get(row, "format"),
            header_prefix: self.get(row, "header_prefix"),
            signature: self.get(row, "signature"),
            tenant_slug: self.get(row, "tenant_slug"),
        })
    }
}
