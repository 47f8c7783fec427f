//! `clock.skew` parameters: the signed offset and the clocks it applies to.

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
            offset: "1s".parse().unwrap(),
            clocks: vec![],
        };
        assert!(validate(&empty).is_err());
    }
}
