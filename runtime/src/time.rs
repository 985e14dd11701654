//! Timestamps: RFC 3339 with nanoseconds (Docker's `RFC3339Nano`), UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as Unix nanoseconds.
pub fn now_nanos() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Formats Unix nanoseconds as `YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ`.
pub fn format_nanos(nanos: i128) -> String {
    let secs = nanos.div_euclid(1_000_000_000) as i64;
    let frac = nanos.rem_euclid(1_000_000_000);
    let base = images::time::format_rfc3339(secs);
    let stem = base.strip_suffix('Z').unwrap_or(&base);
    format!("{stem}.{frac:09}Z")
}

/// Now, formatted.
pub fn now() -> String {
    format_nanos(now_nanos())
}

/// Parses an RFC 3339 timestamp to Unix seconds (fractions dropped).
pub fn parse_secs(s: &str) -> Option<i64> {
    images::time::parse_rfc3339(s)
}

/// Seconds since `s` (0 if unparsable or in the future).
pub fn secs_since(s: &str) -> i64 {
    let now = now_nanos().div_euclid(1_000_000_000) as i64;
    parse_secs(s).map_or(0, |t| (now - t).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_round_trip() {
        let s = format_nanos(1_700_000_000_123_456_789);
        assert_eq!(s, "2023-11-14T22:13:20.123456789Z");
        assert_eq!(parse_secs(&s), Some(1_700_000_000));
        assert_eq!(format_nanos(5), "1970-01-01T00:00:00.000000005Z");
        assert!(secs_since(&now()) <= 1);
    }
}
