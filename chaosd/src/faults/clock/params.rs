//! `clock.skew` parameters: the signed offset, the drift (or rate) and the clocks they apply to.

pub use crate::api::clock::{ClockName, ClockSkewParams};
use crate::error::RequestError;

/// Checks the parameters without touching anything.
pub fn validate(p: &ClockSkewParams) -> Result<(), RequestError> {
    if p.clocks.is_empty() {
        return Err(RequestError::BadFilter {
            field: "clocks",
            input: String::new(),
            reason: "name at least one clock, e.g. realtime,monotonic".into(),
        });
    }
    if p.drift.is_some() && p.rate.is_some() {
        return Err(RequestError::AtMostOneOf {
            kind: "clock.skew",
            a: "drift",
            b: "rate",
        });
    }
    if p.offset.is_none() && p.drift.is_none() && p.rate.is_none() {
        return Err(RequestError::BadParam {
            field: "offset",
            input: String::new(),
            reason: "give an offset, a drift or a rate (e.g. offset \"-2h\", drift \"+500ppm\")"
                .into(),
        });
    }
    if let Some(rate) = p.rate
        && (!(MIN_RATE..=MAX_RATE).contains(&rate) || rate == 1.0)
    {
        return Err(RequestError::BadParam {
            field: "rate",
            input: rate.to_string(),
            reason: format!(
                "give skewed seconds per true second from {MIN_RATE} to {MAX_RATE}, not 1 (e.g. 1.0005 runs 500ppm fast)"
            ),
        });
    }
    Ok(())
}

/// The rates a clock may run at: from half to double speed (never backwards, never stopped).
pub const MIN_RATE: f64 = 0.5;
pub const MAX_RATE: f64 = 2.0;

/// Bit `id` set for each clock, as the detour tests it.
pub fn clock_mask(clocks: &[ClockName]) -> u64 {
    clocks.iter().fold(0, |m, c| m | 1 << c.id())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            offset: Some("1s".parse().unwrap()),
            drift: None,
            rate: None,
            clocks: vec![],
        };
        assert!(validate(&empty).is_err());
    }

    #[test]
    fn drift_or_rate_alone_or_with_an_offset() {
        let p: ClockSkewParams = serde_json::from_str(r#"{"drift":"+500ppm"}"#).unwrap();
        assert!(validate(&p).is_ok());
        assert!((p.rate() - 1.0005).abs() < 1e-12);
        assert_eq!(p.offset_ns(), 0);
        let p: ClockSkewParams =
            serde_json::from_str(r#"{"offset":"+400d","rate":0.999}"#).unwrap();
        assert!(validate(&p).is_ok());
        assert_eq!(p.rate(), 0.999);
        for bad in [
            r#"{}"#,
            r#"{"drift":"+1ppm","rate":1.1}"#,
            r#"{"rate":1}"#,
            r#"{"rate":3}"#,
            r#"{"rate":0}"#,
        ] {
            let p: ClockSkewParams = serde_json::from_str(bad).unwrap();
            assert!(validate(&p).is_err(), "{bad}");
        }
    }
}
