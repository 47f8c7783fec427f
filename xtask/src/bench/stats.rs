//! Order statistics: every figure the bench reports is a median, a percentile or a ratio.

use serde_json::{Value, json};

/// The `p`-th percentile (0..=100, nearest rank) of `samples`; NaN when empty.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50.0)
}

/// Rounds for the report (3 significant decimals are plenty for these figures).
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Lowest and highest of `v`.
pub fn min_max(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// `[min, max]` over the rounds.
pub fn spread(v: &[f64]) -> Value {
    let (lo, hi) = min_max(v);
    json!([round3(lo), round3(hi)])
}

/// `a[i] / b[i]`, round by round.
pub fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

/// Reads per-round ratios: a spread covering 1 is no measurable difference.
pub fn verdict(ratios: &[f64], above: &str, below: &str) -> String {
    let (lo, hi) = min_max(ratios);
    if lo <= 1.0 && hi >= 1.0 {
        "no measurable difference (the ratio's spread over rounds covers 1)".into()
    } else if lo > 1.0 {
        format!(
            "{above} in every round (median ratio {:.3})",
            median(ratios)
        )
    } else {
        format!(
            "{below} in every round (median ratio {:.3})",
            median(ratios)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median(&s), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(median(&[]).is_nan());
    }
}
