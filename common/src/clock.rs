//! Wall-clock time as integer microseconds since the Unix epoch: the one unit stored and
//! compared everywhere (exact ordering, no float equality), converted only at the edges of
//! the system: to the float seconds the Mozilla API speaks, and to the RFC 3339 UTC
//! timestamps of `/api/v1` (`2023-07-18T15:00:00.123456Z`; a value read without a zone is
//! UTC, as Socrate does).

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Microseconds to float seconds, as rendered in JSON.
pub fn us_to_secs(us: i64) -> f64 {
    us as f64 / 1e6
}

/// Seconds from `origin_us` (a time stamped by another process, e.g. an envelope's origin)
/// to `now_us`, for a latency histogram: `None` when nothing was stamped (0), and never
/// negative when the two clocks disagree a little.
pub fn seconds_since(origin_us: i64, now_us: i64) -> Option<f64> {
    (origin_us > 0).then(|| us_to_secs(now_us.saturating_sub(origin_us).max(0)))
}

/// Float seconds (as a client sends them) to microseconds; `None` for NaN, infinities,
/// negatives and values past year 2262.
pub fn secs_to_us(secs: f64) -> Option<i64> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    let us = (secs * 1e6).round();
    (us < i64::MAX as f64).then_some(us as i64)
}

/// Microseconds as an RFC 3339 UTC timestamp (fractional seconds only when not zero).
pub fn rfc3339(us: i64) -> String {
    let nanos = i128::from(us) * 1_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// An RFC 3339 timestamp (any offset), or one without a zone read as UTC, to microseconds;
/// `None` if it is neither.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let text = text.trim();
    let parsed = time::OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339))
        .ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seconds_since_an_origin_is_none_unstamped_and_never_negative() {
        assert_eq!(seconds_since(0, 5_000_000), None);
        assert_eq!(seconds_since(1_000_000, 3_500_000), Some(2.5));
        assert_eq!(seconds_since(3_000_000, 2_000_000), Some(0.0));
    }

    #[test]
    fn rejects_non_finite_and_negative() {
        assert_eq!(secs_to_us(f64::NAN), None);
        assert_eq!(secs_to_us(f64::INFINITY), None);
        assert_eq!(secs_to_us(-1.0), None);
        assert_eq!(secs_to_us(1e300), None);
        assert_eq!(secs_to_us(1.5), Some(1_500_000));
    }

    #[test]
    fn rfc3339_in_and_out() {
        assert_eq!(rfc3339(1_689_692_400_000_000), "2023-07-18T15:00:00Z");
        assert_eq!(rfc3339(1_689_692_400_250_000), "2023-07-18T15:00:00.25Z");
        assert_eq!(
            parse_rfc3339("2023-07-18T15:00:00Z"),
            Some(1_689_692_400_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-07-18T15:00:00"),
            Some(1_689_692_400_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-07-18T17:00:00+02:00"),
            Some(1_689_692_400_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-07-18T15:00:00.5Z"),
            Some(1_689_692_400_500_000)
        );
        for bad in ["", "yesterday", "2023-13-01T00:00:00Z", "2023-07-18"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn rfc3339_round_trips(us in 0i64..4_102_444_800_000_000) {
            prop_assert_eq!(parse_rfc3339(&rfc3339(us)), Some(us));
        }

        /// A timestamp a client got from us and sends back maps to the same microsecond.
        #[test]
        fn rendered_seconds_round_trip(us in 0i64..4_102_444_800_000_000) {
            let text = serde_json::to_string(&us_to_secs(us)).unwrap();
            let secs: f64 = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(secs_to_us(secs), Some(us));
        }
    }
}
