//! The daemon's heartbeat: the kernel side of the dead-man switch.
//!
//! Every program that applies rules first checks that the daemon refreshed the heartbeat
//! recently. Links the daemon owns go when it dies, but a netlink TC filter (kernels before
//! 6.6) or a program some other tool pinned outlives it; with a stale heartbeat those ignore
//! every rule, so no fault outlives a dead or frozen daemon by more than [`HEARTBEAT_STALE_NS`].

/// Name of the one-entry `Array<u64>` holding the CLOCK_MONOTONIC ns of the latest beat.
pub const HEARTBEAT_MAP: &str = "CHAOSD_HEARTBEAT";

/// How often the daemon beats.
pub const HEARTBEAT_INTERVAL_NS: u64 = 100_000_000;

/// How old a beat may get before the programs stop applying rules: ten missed beats, so a
/// briefly starved daemon does not pause faults, and still under the second the crash tests
/// allow for faults to end.
pub const HEARTBEAT_STALE_NS: u64 = 1_000_000_000;

/// Whether a beat at `beat_ns` still counts at `now_ns` (both CLOCK_MONOTONIC).
#[inline(always)]
pub fn is_fresh(beat_ns: u64, now_ns: u64) -> bool {
    beat_ns != 0 && now_ns.saturating_sub(beat_ns) <= HEARTBEAT_STALE_NS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_beat_yet_and_old_beats_are_stale() {
        assert!(!is_fresh(0, 5));
        assert!(is_fresh(10, 10 + HEARTBEAT_STALE_NS));
        assert!(!is_fresh(10, 11 + HEARTBEAT_STALE_NS));
        // A beat written after the program read the clock is fresh.
        assert!(is_fresh(20, 10));
    }
}
