//! The JSON envelope sent to receivers. `data` and `actor` arrive as JSON text straight from
//! jsonb output and are spliced in verbatim: the worker never parses payloads.

use serde_json::to_string as json_string;

pub struct Event<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub version: &'a str,
    pub source: &'a str,
    pub occurred_at_us: i64,
    pub tenant_id: Option<&'a str>,
    pub actor_json: Option<&'a str>,
    pub data_json: &'a str,
}

fn push_str(out: &mut String, s: &str) {
    // serde_json's string escaping cannot fail for &str.
    out.push_str(&json_string(s).unwrap_or_else(|_| "\"\"".into()));
}

pub fn build(e: &Event<'_>) -> String {
    let mut out = String::with_capacity(160 + e.data_json.len());
    out.push_str("{\"id\":");
    push_str(&mut out, e.id);
    out.push_str(",\"type\":");
    push_str(&mut out, e.event_type);
    out.push_str(",\"version\":");
    push_str(&mut out, e.version);
    out.push_str(",\"source\":");
    push_str(&mut out, e.source);
    out.push_str(",\"time\":\"");
    out.push_str(&rfc3339_utc(e.occurred_at_us));
    out.push_str("\",\"tenant_id\":");
    match e.tenant_id {
        Some(t) => push_str(&mut out, t),
        None => out.push_str("null"),
    }
    out.push_str(",\"actor\":");
    out.push_str(e.actor_json.unwrap_or("null"));
    out.push_str(",\"data\":");
    out.push_str(e.data_json);
    out.push('}');
    out
}

/// The hmac-hex format's body, the layout IntelliAuth-style receivers expect: `event_id`, `event_type`, `occurred_at`
/// (milliseconds), `tenant` (`id`, `slug`; null without a tenant), `actor`, `data`, and
/// `delivery` (`attempt`, `subscription_id`: the endpoint).
pub fn build_hmac_hex(
    e: &Event<'_>,
    tenant_slug: Option<&str>,
    attempt: i32,
    endpoint_id: &str,
) -> String {
    let mut out = String::with_capacity(200 + e.data_json.len());
    out.push_str("{\"event_id\":");
    push_str(&mut out, e.id);
    out.push_str(",\"event_type\":");
    push_str(&mut out, e.event_type);
    out.push_str(",\"occurred_at\":\"");
    let t = rfc3339_utc(e.occurred_at_us);
    // YYYY-MM-DDTHH:MM:SS.mmm + Z
    out.push_str(&t[..23]);
    out.push_str("Z\",\"tenant\":");
    match e.tenant_id {
        Some(id) => {
            out.push_str("{\"id\":");
            push_str(&mut out, id);
            out.push_str(",\"slug\":");
            push_str(&mut out, tenant_slug.unwrap_or(id));
            out.push('}');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"actor\":");
    out.push_str(e.actor_json.unwrap_or("null"));
    out.push_str(",\"data\":");
    out.push_str(e.data_json);
    out.push_str(",\"delivery\":{\"attempt\":");
    out.push_str(&attempt.to_string());
    out.push_str(",\"subscription_id\":");
    push_str(&mut out, endpoint_id);
    out.push_str("}}");
    out
}

/// A JSON array of envelopes, for batched endpoints.
/// The `webhook-id` of a batch: `msg_` and a digest of its event ids in order.
pub fn batch_id(event_ids: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for id in event_ids {
        h.update(id.as_bytes());
        h.update(b",");
    }
    format!("msg_{}", &hex::encode(h.finalize())[..32])
}

pub fn build_batch(bodies: &[String]) -> String {
    let mut out = String::with_capacity(bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, b) in bodies.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(b);
    }
    out.push(']');
    out
}

/// Microseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmmmmZ`.
pub fn rfc3339_utc(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_follow_contents() {
        assert_eq!(batch_id(&["evt_a", "evt_b"]), batch_id(&["evt_a", "evt_b"]));
        assert_ne!(batch_id(&["evt_a", "evt_b"]), batch_id(&["evt_a", "evt_c"]));
        assert_ne!(batch_id(&["evt_a", "evt_b"]), batch_id(&["evt_a"]));
        assert_ne!(batch_id(&["evt_ab"]), batch_id(&["evt_a", "b"]));
        assert!(batch_id(&["x"]).starts_with("msg_") && batch_id(&["x"]).len() == 36);
    }

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_utc(1_614_265_330_123_456),
            "2021-02-25T15:02:10.123456Z"
        );
        assert_eq!(
            rfc3339_utc(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn hmac_hex_bodies_carry_the_flat_layout_with_tenant_and_delivery() {
        let e = Event {
            id: "evt_1",
            event_type: "user.signed_up",
            version: "1",
            source: "",
            occurred_at_us: 1_779_004_800_123_456,
            tenant_id: Some("tnt_1"),
            actor_json: Some(r#"{"kind":"user","id":"usr_1"}"#),
            data_json: r#"{"user":{"id":"usr_1"}}"#,
        };
        let v: serde_json::Value =
            serde_json::from_str(&build_hmac_hex(&e, Some("banking"), 2, "ep_9")).unwrap();
        assert_eq!(v["event_id"], "evt_1");
        assert_eq!(v["event_type"], "user.signed_up");
        assert_eq!(v["occurred_at"], "2026-05-17T08:00:00.123Z");
        assert_eq!(
            v["tenant"],
            serde_json::json!({"id": "tnt_1", "slug": "banking"})
        );
        assert_eq!(v["actor"]["id"], "usr_1");
        assert_eq!(v["data"]["user"]["id"], "usr_1");
        assert_eq!(
            v["delivery"],
            serde_json::json!({"attempt": 2, "subscription_id": "ep_9"})
        );
        let none = Event {
            tenant_id: None,
            ..e
        };
        let v: serde_json::Value =
            serde_json::from_str(&build_hmac_hex(&none, None, 1, "ep_9")).unwrap();
        assert_eq!(v["tenant"], serde_json::Value::Null);
    }

    #[test]
    fn envelope_is_valid_json_with_all_fields() {
        let body = build(&Event {
            id: "evt_1",
            event_type: "user.created",
            version: "1",
            source: "https://id.example.com",
            occurred_at_us: 0,
            tenant_id: Some("t\"1"),
            actor_json: None,
            data_json: r#"{"email": "a@b.c"}"#,
        });
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], "evt_1");
        assert_eq!(v["type"], "user.created");
        assert_eq!(v["tenant_id"], "t\"1");
        assert_eq!(v["actor"], serde_json::Value::Null);
        assert_eq!(v["data"]["email"], "a@b.c");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000000Z");
        let arr: serde_json::Value =
            serde_json::from_str(&build_batch(&[body.clone(), body])).unwrap();
        assert_eq!(arr.as_array().unwrap().len(), 2);
    }
}
