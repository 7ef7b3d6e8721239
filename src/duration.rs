//! Go-style durations (`15s`, `2m`, `1h30m`) as used in plan fields.
//!
//! Parsing follows Go's `time.ParseDuration` (what the API server's CEL `duration()` accepts),
//! including its limit of about 292 years, with checked arithmetic: hostile text is an error,
//! never a panic (kube's own parser multiplies floats and panics on overflow). Negative values
//! are refused, and the field's schema carries a pattern the API server enforces.

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

/// The longest duration Go can represent (`math.MaxInt64` nanoseconds, about 292 years); Go's
/// `time.ParseDuration` refuses anything longer, and so do we.
pub const MAX: Duration = Duration::from_nanos(i64::MAX as u64);

impl FromStr for GoDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match parse_go_duration(s.trim()) {
            Ok(d) => Ok(Self(d)),
            Err(GoDurationError::Negative) => Err(format!("{s:?} is negative; durations must be 0s or more")),
            Err(GoDurationError::Overflow) => {
                Err(format!("{s:?} is too long; durations are at most 2562047h (about 292 years)"))
            }
            Err(e) => Err(format!("{s:?} is not a duration ({e}); write it like 30s, 2m or 1h30m")),
        }
    }
}

/// Why text is not a Go duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GoDurationError {
    /// Nothing to parse.
    #[error("it is empty")]
    Empty,
    /// A number without a unit, or garbage where a number should be.
    #[error("a number followed by a unit (ns, us, ms, s, m, h) is expected")]
    Syntax,
    /// A unit Go does not know.
    #[error("unknown unit; use ns, us, ms, s, m or h")]
    Unit,
    /// Longer than Go can represent.
    #[error("longer than 2562047h")]
    Overflow,
    /// Below zero.
    #[error("negative")]
    Negative,
}

/// Parse a Go duration (`time.ParseDuration`'s grammar: an optional sign, then one or more
/// `<decimal><unit>` parts; `0` alone is allowed). Never panics: arithmetic is checked and a
/// duration longer than Go's limit ([`MAX`]) is an error, as in Go. Negative durations are
/// refused (no plan field or flag takes one); `-0s` is zero.
pub fn parse_go_duration(text: &str) -> Result<Duration, GoDurationError> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        Some(_) => (false, text),
        None => return Err(GoDurationError::Empty),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(GoDurationError::Syntax);
    }
    let limit = i64::MAX as u128;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = rest.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(GoDurationError::Syntax);
        }
        let unit_len = after.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{00b5}s" | "\u{03bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(GoDurationError::Syntax),
            _ => return Err(GoDurationError::Unit),
        };
        let mut whole: u128 = 0;
        for d in int_digits.bytes() {
            whole = whole
                .checked_mul(10)
                .and_then(|w| w.checked_add(u128::from(d - b'0')))
                .ok_or(GoDurationError::Overflow)?;
            if whole > limit {
                return Err(GoDurationError::Overflow);
            }
        }
        let mut part = whole.checked_mul(unit_nanos).ok_or(GoDurationError::Overflow)?;
        // Fractions are exact down to the nanosecond and truncated below it, as in Go; digits
        // past the 20th cannot change a nanosecond count within the limit.
        let (mut numerator, mut scale) = (0u128, 1u128);
        for d in frac_digits.bytes().take(20) {
            numerator = numerator * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        part = part.checked_add(numerator * unit_nanos / scale).ok_or(GoDurationError::Overflow)?;
        total = total.checked_add(part).ok_or(GoDurationError::Overflow)?;
        if total > limit {
            return Err(GoDurationError::Overflow);
        }
        rest = after;
    }
    if negative && total > 0 {
        return Err(GoDurationError::Negative);
    }
    Ok(Duration::from_nanos(total as u64))
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
        // Parsed inside the visitor, so that a YAML error points at the field itself (its path
        // and line), not at the mapping around it.
        struct Text;
        impl de::Visitor<'_> for Text {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Go duration such as 30s, 2m or 1h30m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
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
    fn refuses_what_go_refuses_without_panicking() {
        for (text, want) in [
            ("99999999999999999999s", "too long"),
            ("2562048h", "too long"),
            ("9223372036.854775808s", "too long"),
            ("", "not a duration"),
            ("s", "not a duration"),
            ("1", "not a duration"),
            (".s", "not a duration"),
            ("1d", "not a duration"),
            ("1.5.5s", "not a duration"),
            ("1e3s", "not a duration"),
        ] {
            let err = text.parse::<GoDuration>().unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        assert_eq!("2562047h".parse::<GoDuration>().unwrap().as_std(), Duration::from_secs(2562047 * 3600));
        assert_eq!("9223372036.854775807s".parse::<GoDuration>().unwrap().as_std(), MAX);
        assert_eq!("0".parse::<GoDuration>().unwrap().as_std(), Duration::ZERO);
        assert_eq!("-0s".parse::<GoDuration>().unwrap().as_std(), Duration::ZERO);
        assert_eq!("1.5h".parse::<GoDuration>().unwrap().as_std(), Duration::from_secs(5400));
        assert_eq!(".5s".parse::<GoDuration>().unwrap().as_std(), Duration::from_millis(500));
        assert_eq!("1us".parse::<GoDuration>().unwrap().as_std(), Duration::from_micros(1));
        assert_eq!("1.0000000001s".parse::<GoDuration>().unwrap().as_std(), Duration::from_secs(1));
    }

    #[test]
    fn prints_like_people_write() {
        assert_eq!(GoDuration::from_secs(90).to_string(), "1m30s");
        assert_eq!(GoDuration::from_secs(0).to_string(), "0s");
        assert_eq!(GoDuration::from_secs(7200).to_string(), "2h");
        assert_eq!(GoDuration::from(Duration::from_millis(250)).to_string(), "250ms");
    }
}
