//! Wall-clock time as integer microseconds since the Unix epoch: the one unit stored and
//! compared everywhere (exact ordering, no float equality), converted to the float
//! seconds the Mozilla API speaks only at the edges of the system.

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

/// Float seconds (as a client sends them) to microseconds; `None` for NaN, infinities,
/// negatives and values past year 2262.
pub fn secs_to_us(secs: f64) -> Option<i64> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    let us = (secs * 1e6).round();
    (us < i64::MAX as f64).then_some(us as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_non_finite_and_negative() {
        assert_eq!(secs_to_us(f64::NAN), None);
        assert_eq!(secs_to_us(f64::INFINITY), None);
        assert_eq!(secs_to_us(-1.0), None);
        assert_eq!(secs_to_us(1e300), None);
        assert_eq!(secs_to_us(1.5), Some(1_500_000));
    }

    proptest! {
        /// A timestamp a client got from us and sends back maps to the same microsecond.
        #[test]
        fn rendered_seconds_round_trip(us in 0i64..4_102_444_800_000_000) {
            let text = serde_json::to_string(&us_to_secs(us)).unwrap();
            let secs: f64 = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(secs_to_us(secs), Some(us));
        }
    }
}
