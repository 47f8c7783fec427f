//! Text as a scenario file (`chaosctl run FILE`, `POST /v1/runs`): parsed and validated as
//! the daemon does before a run starts.

#![no_main]

use std::time::Instant;

use chaosd::scenario::format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(scenario) = format::parse(text) else {
        return;
    };
    // The runner waits until `now + d` for each of these; a valid file keeps them in range.
    let now = Instant::now();
    let s = &scenario.steady_state;
    let probes = s.probes.iter().flat_map(|p| [p.interval, p.timeout]);
    let abort = [Some(scenario.abort.window), scenario.abort.max_duration];
    for d in [s.warmup, s.baseline, s.recovery_timeout, scenario.schedule_end()]
        .into_iter()
        .chain(probes)
        .chain(abort.into_iter().flatten())
    {
        assert!(now.checked_add(d).is_some(), "{d:?} overflows a deadline");
    }
});
