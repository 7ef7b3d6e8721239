//! Go-style durations (`15s`, `2m`, `1h30m`) as used in plan fields.
//!
//! Parsing is kube's [`kube::core::Duration`] (the same grammar as Go's `time.ParseDuration`,
//! which is what the API server's CEL `duration()` accepts); this wrapper only refuses negative
//! values and gives the field a schema with a pattern the API server can enforce.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A non-negative Go duration, serialized as a string like `15s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(Duration);

impl GoDuration {
    /// A whole number of seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
    /// The duration as seconds.
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }
    /// The standard library duration.
    pub fn as_std(&self) -> Duration {
        self.0
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl FromStr for GoDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed: kube::core::Duration =
            s.trim().parse().map_err(|e| format!("{s:?} is not a duration ({e}); write it like 30s, 2m or 1h30m"))?;
        if parsed.is_negative() {
            return Err(format!("{s:?} is negative; durations must be 0s or more"));
        }
        Ok(Self(parsed.into()))
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole seconds print the way people write them (90s → 1m30s); fractions fall back to
        // kube's Go-compatible formatting.
        let d = self.0;
        if d.subsec_nanos() == 0 {
            let total = d.as_secs();
            let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
            let mut out = String::new();
            if h > 0 {
                out.push_str(&format!("{h}h"));
            }
            if m > 0 {
                out.push_str(&format!("{m}m"));
            }
            if s > 0 || out.is_empty() {
                out.push_str(&format!("{s}s"));
            }
            f.write_str(&out)
        } else {
            write!(f, "{}", kube::core::Duration::from(d))
        }
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl schemars::JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$",
            "maxLength": 32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!("15s".parse::<GoDuration>().unwrap().as_secs_f64(), 15.0);
        assert_eq!("1h30m".parse::<GoDuration>().unwrap().as_secs_f64(), 5400.0);
        assert_eq!("250ms".parse::<GoDuration>().unwrap().as_secs_f64(), 0.25);
    }

    #[test]
    fn rejects_garbage_and_negative() {
        let err = "5 minutes".parse::<GoDuration>().unwrap_err();
        assert!(err.contains("not a duration"), "{err}");
        let err = "-5s".parse::<GoDuration>().unwrap_err();
        assert!(err.contains("negative"), "{err}");
    }

    #[test]
    fn prints_like_people_write() {
        assert_eq!(GoDuration::from_secs(90).to_string(), "1m30s");
        assert_eq!(GoDuration::from_secs(0).to_string(), "0s");
        assert_eq!(GoDuration::from_secs(7200).to_string(), "2h");
        assert_eq!(GoDuration::from(Duration::from_millis(250)).to_string(), "250ms");
    }
}
