//! The audit record: one JSON object per decision with stable field names, for Envoy's access log
//! (through filter state) and/or Envoy's log. It never holds the token, only a short hash of it
//! (enough to correlate requests carrying the same token, useless to replay it).
//!
//! Fields: `time` (RFC 3339, UTC, ms), `request_id`, `route`, `mode`, `decision`, `reason`, `provider`,
//! `issuer`, `subject`, `tenant`, `token_hash`, `method`, `path` (no query string), `latency_us`.
//! Identity fields come only from a verified token; they are `null` otherwise.

pub use crate::codes::Decision;
use crate::rules::path_without_query;

/// Longer values are cut (request data must not make records unbounded).
const MAX_FIELD: usize = 256;

/// First 8 bytes of SHA-256 of the token, as 16 hex digits.
pub fn token_hash(token: &[u8]) -> String {
    short_hash(&crate::tokencache::digest(token))
}

/// First 8 bytes of an already computed SHA-256, as 16 hex digits.
pub fn short_hash(digest: &crate::tokencache::TokenHash) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from milliseconds since the Unix epoch (no clock read here).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Everything a record is made of; the filter fills it, `to_json` writes it.
#[derive(Debug, Default)]
pub struct Record<'a> {
    pub time_ms: u64,
    pub request_id: Option<&'a [u8]>,
    pub route: &'a str,
    pub mode: &'a str,
    pub decision: Decision,
    pub reason: &'a str,
    pub provider: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub token_hash: Option<&'a str>,
    /// The binding the request proved (`bearer`, `dpop`, `mtls`, `dpop+mtls`), for a verified token.
    pub binding: Option<&'a str>,
    pub method: &'a [u8],
    pub path: &'a [u8],
    pub latency_us: u64,
}

/// The serialised form: field order is alphabetical, values already cut to size. Written with
/// `serde_json::to_string` on a struct (no intermediate `Value` map: this runs on every request).
#[derive(serde::Serialize)]
struct Out<'a> {
    binding: Option<&'a str>,
    decision: &'a str,
    issuer: Option<String>,
    latency_us: u64,
    method: String,
    mode: &'a str,
    path: String,
    provider: Option<String>,
    reason: &'a str,
    request_id: Option<String>,
    route: &'a str,
    subject: Option<String>,
    tenant: Option<String>,
    time: String,
    token_hash: Option<&'a str>,
}

fn cut(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() <= MAX_FIELD {
        s.into_owned()
    } else {
        s.chars().take(MAX_FIELD).collect()
    }
}

impl Record<'_> {
    pub fn to_json(&self) -> String {
        let out = Out {
            binding: self.binding,
            decision: self.decision.code(),
            issuer: self.issuer.map(|s| cut(s.as_bytes())),
            latency_us: self.latency_us,
            method: cut(self.method),
            mode: self.mode,
            path: cut(path_without_query(self.path)),
            provider: self.provider.map(|s| cut(s.as_bytes())),
            reason: self.reason,
            request_id: self.request_id.map(cut),
            route: self.route,
            subject: self.subject.map(|s| cut(s.as_bytes())),
            tenant: self.tenant.map(|s| cut(s.as_bytes())),
            time: rfc3339(self.time_ms),
            token_hash: self.token_hash,
        };
        serde_json::to_string(&out).unwrap_or_default()
    }
}

/// Whether to write a record: denials and would-denials always; allows at `allow_sample_rate`,
/// decided from `roll` (uniform in 0..=u32::MAX, e.g. from the clock's nanoseconds).
pub fn should_write(decision: Decision, allow_sample_rate: f64, roll: u32) -> bool {
    match decision {
        Decision::Deny | Decision::WouldDeny => true,
        Decision::Allow | Decision::WouldAllow => {
            f64::from(roll) < allow_sample_rate * f64::from(u32::MAX) || allow_sample_rate >= 1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn time_is_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_359_081_000), "2026-11-22T14:51:21.000Z");
    }

    #[test]
    fn record_has_stable_fields_and_no_query() {
        let r = Record {
            time_ms: 0,
            request_id: Some(b"abc"),
            route: "api",
            mode: "enforce",
            decision: Decision::Deny,
            reason: "expired",
            token_hash: Some("00112233aabbccdd"),
            method: b"GET",
            path: b"/a/b?access_token=secret",
            latency_us: 42,
            ..Record::default()
        };
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "binding",
                "decision",
                "issuer",
                "latency_us",
                "method",
                "mode",
                "path",
                "provider",
                "reason",
                "request_id",
                "route",
                "subject",
                "tenant",
                "time",
                "token_hash"
            ]
        );
        assert_eq!(v["path"], "/a/b");
        assert_eq!(v["subject"], Value::Null);
        assert!(!r.to_json().contains("secret"));
    }

    #[test]
    fn hash_is_short_and_stable() {
        assert_eq!(token_hash(b"abc"), "ba7816bf8f01cfea");
        assert_eq!(token_hash(b"abc").len(), 16);
    }

    #[test]
    fn sampling_keeps_every_denial() {
        assert!(should_write(Decision::Deny, 0.0, u32::MAX));
        assert!(should_write(Decision::WouldDeny, 0.0, 0));
        assert!(!should_write(Decision::Allow, 0.0, 0));
        assert!(!should_write(Decision::WouldAllow, 0.0, 0));
        assert!(should_write(Decision::Allow, 1.0, u32::MAX));
        assert!(should_write(Decision::Allow, 0.5, 1));
        assert!(!should_write(Decision::Allow, 0.5, u32::MAX - 1));
    }
}
