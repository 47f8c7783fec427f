//! `clock.skew` parameters: the signed offset and the clocks it applies to.

use std::time::Duration;

pub use crate::api::clock::{ClockName, ClockSkewParams};
use crate::error::RequestError;

/// Largest accepted offset: a century keeps every skewed time_t far from overflow.
const MAX_OFFSET: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The offset in nanoseconds: an optional sign, then a duration ("2h30m", "90s", "1500ms").
pub fn parse_offset(input: &str) -> Result<i64, RequestError> {
    let bad = |reason: String| RequestError::BadFilter {
        field: "offset",
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = humantime::parse_duration(rest.trim())
        .map_err(|e| bad(format!("{e} (examples: -2h30m, +90s, 45m)")))?;
    if magnitude.is_zero() {
        return Err(bad("a zero offset skews nothing".into()));
    }
    if magnitude > MAX_OFFSET {
        return Err(bad("it must be at most 100 years either way".into()));
    }
    let ns = magnitude.as_nanos() as i64;
    Ok(if negative { -ns } else { ns })
}

/// Checks the parameters without touching anything.
pub fn validate(p: &ClockSkewParams) -> Result<(), RequestError> {
    parse_offset(&p.offset)?;
    if p.clocks.is_empty() {
        return Err(RequestError::BadFilter {
            field: "clocks",
            input: String::new(),
            reason: "name at least one clock, e.g. realtime,monotonic".into(),
        });
    }
    Ok(())
}

/// Bit `id` set for each clock, as the detour tests it.
pub fn clock_mask(clocks: &[ClockName]) -> u64 {
    clocks.iter().fold(0, |m, c| m | 1 << c.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_signed_durations() {
        assert_eq!(parse_offset("-2h30m").unwrap(), -9_000_000_000_000);
        assert_eq!(parse_offset("+90s").unwrap(), 90_000_000_000);
        assert_eq!(parse_offset("45m").unwrap(), 2_700_000_000_000);
        assert_eq!(parse_offset(" -1500ms ").unwrap(), -1_500_000_000);
        for bad in ["", "-", "soon", "0s", "-0s", "200years", "--1s"] {
            assert!(parse_offset(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn clocks_default_to_realtime_and_map_to_ids() {
        let p: ClockSkewParams = serde_json::from_str(r#"{"offset":"-1h"}"#).unwrap();
        assert_eq!(p.clocks, vec![ClockName::Realtime]);
        let p: ClockSkewParams =
            serde_json::from_str(r#"{"offset":"1h","clocks":["monotonic_coarse","tai"]}"#).unwrap();
        assert_eq!(clock_mask(&p.clocks), 1 << 6 | 1 << 11);
        for c in p.clocks {
            let wire = serde_json::to_value(c).unwrap();
            assert_eq!(wire.as_str(), Some(c.name()));
        }
        assert!(
            serde_json::from_str::<ClockSkewParams>(r#"{"offset":"1h","clocks":["cpu"]}"#).is_err()
        );
        let empty = ClockSkewParams {
            offset: "1s".into(),
            clocks: vec![],
        };
        assert!(validate(&empty).is_err());
    }
}
