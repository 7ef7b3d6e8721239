//! The one conversion between Kubernetes times and the engine's seconds: the engine counts
//! Unix seconds as `f64` (fractions matter for sub-second intervals in tests); status and events
//! carry `metav1.Time`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Unix seconds (millisecond precision) of a timestamp.
pub fn unix_secs(t: jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// The timestamp of Unix seconds; None when out of range or not finite.
pub fn from_unix_secs(secs: f64) -> Option<jiff::Timestamp> {
    if !secs.is_finite() {
        return None;
    }
    jiff::Timestamp::from_millisecond((secs * 1000.0).round() as i64).ok()
}

/// Unix seconds as a `metav1.Time`.
pub fn to_time(secs: f64) -> Option<Time> {
    from_unix_secs(secs).map(Time)
}

/// A `metav1.Time` as Unix seconds.
pub fn time_secs(t: &Time) -> f64 {
    unix_secs(t.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_trip_through_time_at_millisecond_precision() {
        for secs in [0.0, 1.5, 1_764_230_400.125, 1_764_230_400.0] {
            assert_eq!(time_secs(&to_time(secs).unwrap()), secs);
        }
        assert_eq!(to_time(f64::NAN), None);
        assert_eq!(to_time(1e300), None);
    }
}
