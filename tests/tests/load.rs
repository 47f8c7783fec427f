//! Load: 10,000 inject/recover cycles from 32 concurrent clients against one daemon, mixing
//! kinds that write kernel rule maps (net.loss, net.partition: cgroup_skb; net.connect_error:
//! sock_addr), freeze cgroups (process.pause) and start workers (stress.cpu), on parent and
//! child cgroups, plus bad requests. Every answer is a success or a 4xx with a message (no
//! 5xx, reset or hang) and every recovered fault leaves the list. Afterwards the daemon's
//! descriptors, children, journal, eBPF map entries and (within a tolerance) resident memory
//! are back at the baseline taken after a warm-up.

use std::{
    collections::BTreeMap,
    ops::Range,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chaosd::{
    api::{
        Direction, FaultSpec, FaultState, InjectRequest, NetConnectErrorParams, NetFilter,
        NetPartitionParams, ProcessPauseParams, Proto, StressCpuParams, TargetSelector,
    },
    client::{Client, ClientError},
};
use chaosd_integration::{
    Daemon, TestCgroup, block_on,
    footprint::{Footprint, map_entries},
    loss_spec, net_filter, wait_for,
};
use hyper::{Method, StatusCode};

const CLIENTS: usize = 32;
const CYCLES: usize = 10_000;
/// Enough for every kind on every target (programs loaded and attached at least once), the
/// ended-faults list full, and the runtime's threads and allocator arenas in use.
const WARM_UP: usize = 400;
/// Below CLIENTS on purpose: some injects meet the policy's cap and must be refused cleanly.
const MAX_CONCURRENT: usize = 24;
/// Far above any answer's latency on a loaded 2-core host: only a hang takes this long.
const ANSWER_LIMIT: Duration = Duration::from_secs(20);
/// Growth of the daemon's RSS allowed over the baseline. After the warm-up the registry's
/// ended list is full and its containers at their high-water marks; what may still grow is
/// glibc's per-thread arenas and the stacks of blocking-pool threads started under the
/// heavier load (a few MiB). A leak of a few hundred bytes per cycle would exceed it.
const RSS_TOLERANCE: u64 = 8 << 20;

fn partition(dst: &str) -> FaultSpec {
    FaultSpec::NetPartition(NetPartitionParams {
        filter: net_filter(Some(dst), None, Proto::Any),
    })
}

fn connect_error(errno: &str, percent: f64, filter: NetFilter) -> FaultSpec {
    FaultSpec::NetConnectError(NetConnectErrorParams {
        errno: errno.parse().unwrap(),
        percent,
        filter,
    })
}

/// The valid request of cycle `n`. The rotation's length (11) is prime to the number of
/// targets (8), so every kind meets every target.
fn valid_fault(n: usize) -> FaultSpec {
    match n % 11 {
        0 | 8 => loss_spec(30.0, Direction::Egress, NetFilter::default()),
        1 => loss_spec(
            50.0,
            Direction::Ingress,
            net_filter(Some("127.0.0.0/8"), None, Proto::Udp),
        ),
        2 => loss_spec(
            10.0,
            Direction::Both,
            net_filter(None, Some("5000-6000"), Proto::Tcp),
        ),
        3 => partition("10.99.0.0/16"),
        4 => partition("fd00:99::/64"),
        5 => connect_error(
            "ECONNREFUSED",
            100.0,
            net_filter(Some("10.98.0.1"), None, Proto::Any),
        ),
        6 => connect_error("111", 50.0, net_filter(None, Some("443"), Proto::Tcp)),
        7 | 9 => FaultSpec::ProcessPause(ProcessPauseParams {}),
        _ => FaultSpec::StressCpu(StressCpuParams {
            load: 1.0,
            workers: Some(1),
        }),
    }
}

fn on(fault: FaultSpec, target: &str) -> InjectRequest {
    InjectRequest {
        fault,
        targets: vec![TargetSelector::Cgroup(target.to_string())],
        duration: Some("60s".into()),
    }
}

/// The bad request sent alongside cycle `n` (every fifth cycle has one) and a word its
/// error must contain.
fn bad_request(n: usize, target: &str) -> (&'static str, Vec<u8>, &'static str) {
    let valid = || on(valid_fault(0), target);
    let (label, req, needle) = match (n / 5) % 4 {
        0 => {
            let mut r = valid();
            r.targets = vec![TargetSelector::Cgroup("/chaosd-load-no-such-cgroup".into())];
            ("unknown cgroup", r, "does not exist")
        }
        1 => (
            "bad CIDR",
            on(partition("10.0.0.300/33"), target),
            "expected a CIDR",
        ),
        2 => {
            let mut r = valid();
            r.duration = None;
            ("missing duration", r, "duration is required")
        }
        _ => {
            let body = br#"{"fault":{"kind":"net.loss","params":{"percent":"#.to_vec();
            return ("malformed JSON", body, "invalid request body");
        }
    };
    (label, serde_json::to_vec(&req).unwrap(), needle)
}

/// What each kind of request came to, and every answer that was not clean.
#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, usize>,
    unclean: Vec<String>,
}

impl Tally {
    fn count(&mut self, what: impl Into<String>) {
        *self.outcomes.entry(what.into()).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        self.unclean.extend(other.unclean);
    }

    fn total(&self, suffix: &str) -> usize {
        self.outcomes
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| v)
            .sum()
    }
}

/// An answer within [`ANSWER_LIMIT`], or a description of the hang.
async fn answer<T>(fut: impl Future<Output = Result<T, ClientError>>) -> Result<T, ClientError> {
    tokio::time::timeout(ANSWER_LIMIT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::Protocol(format!(
                "no answer within {ANSWER_LIMIT:?}"
            )))
        })
}

/// Why a valid inject may be refused: the policy's cap, a cgroup's full rule set, a cgroup
/// another pause already froze (or stress workers into a frozen one), a kind this kernel
/// lacks. Anything else is not clean.
fn clean_refusal(e: &ClientError) -> Option<&'static str> {
    let ClientError::Api(msg, status) = e else {
        return None;
    };
    match *status {
        StatusCode::CONFLICT if msg.contains("policy.max_concurrent_faults") => {
            Some("409 policy cap")
        }
        StatusCode::CONFLICT if msg.contains("would carry more than") => Some("409 rule set full"),
        StatusCode::BAD_REQUEST if msg.contains("already frozen") => Some("400 already frozen"),
        StatusCode::BAD_REQUEST if msg.contains("is frozen") => Some("400 target frozen"),
        StatusCode::UNPROCESSABLE_ENTITY => Some("422 unsupported"),
        _ => None,
    }
}

/// One inject; if it succeeds, its recover and a list that must no longer hold it.
async fn cycle(client: &Client, n: usize, target: &str, tally: &mut Tally) {
    let req = on(valid_fault(n), target);
    let kind = req.fault.kind();
    let info = match answer(client.inject(&req)).await {
        Ok(info) => info,
        Err(e) => {
            match clean_refusal(&e) {
                Some(why) => tally.count(format!("{kind}: {why}")),
                None => tally
                    .unclean
                    .push(format!("inject {kind} on {target}: {e:?}")),
            }
            return;
        }
    };
    match answer(client.recover(&info.id)).await {
        Ok(ended) if ended.state == FaultState::Recovered => {}
        other => {
            tally
                .unclean
                .push(format!("recover {kind} {}: {other:?}", info.id));
            return;
        }
    }
    match answer(client.list(false)).await {
        Ok(list) if list.iter().all(|f| f.id != info.id) => tally.count(format!("{kind}: ok")),
        Ok(_) => tally
            .unclean
            .push(format!("{kind} {} still listed after recover", info.id)),
        Err(e) => tally.unclean.push(format!("list: {e:?}")),
    }
}

async fn bad(client: &Client, n: usize, target: &str, tally: &mut Tally) {
    let (label, body, needle) = bad_request(n, target);
    let got = answer(client.raw(Method::POST, "/v1/faults", Some(body))).await;
    let message = |bytes: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(bytes).ok()?["error"]
            .as_str()
            .map(str::to_string)
    };
    match got {
        Ok((StatusCode::BAD_REQUEST, bytes))
            if message(&bytes).is_some_and(|m| m.contains(needle)) =>
        {
            tally.count(format!("bad request ({label}): 400"));
        }
        other => tally.unclean.push(format!(
            "bad request ({label}): {other:?}, expected a 400 mentioning {needle:?}"
        )),
    }
}

/// Runs cycles `range` from [`CLIENTS`] threads, each with its own client and connections;
/// returns the tally and how long it took.
fn run_cycles(daemon: &Daemon, targets: &[String], range: Range<usize>) -> (Tally, Duration) {
    let next = AtomicUsize::new(range.start);
    let total = Mutex::new(Tally::default());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let client = daemon.client();
                let mut tally = Tally::default();
                block_on(async {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= range.end {
                            break;
                        }
                        let target = &targets[n % targets.len()];
                        cycle(&client, n, target, &mut tally).await;
                        if n.is_multiple_of(5) {
                            bad(&client, n, target, &mut tally).await;
                        }
                    }
                });
                total.lock().unwrap().merge(tally);
            });
        }
    });
    (total.into_inner().unwrap(), started.elapsed())
}

/// The daemon's footprint once it is quiet: no fault, no child, descriptors steady (a
/// connection the last client closed may still be open for a moment).
fn quiet_footprint(daemon: &Daemon) -> Footprint {
    let pid = daemon.pid().as_raw() as u32;
    assert!(
        block_on(daemon.client().list(false)).unwrap().is_empty(),
        "faults are still active after every one was recovered"
    );
    let mut last = Footprint::of(pid);
    wait_for(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(200));
        let now = Footprint::of(pid);
        let steady = now.fds == last.fds && now.children == 0;
        last = now;
        steady.then_some(())
    })
    .unwrap_or_else(|| panic!("the daemon did not settle: {last}"));
    last
}

/// The largest entry count seen in each map while `f` runs, sampled every 50 ms.
fn peak_map_entries<T>(pid: u32, f: impl FnOnce() -> T) -> (T, BTreeMap<String, usize>) {
    let done = AtomicBool::new(false);
    let peak = Mutex::new(BTreeMap::<String, usize>::new());
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                for (name, n) in map_entries(pid) {
                    let mut p = peak.lock().unwrap();
                    let e = p.entry(name).or_default();
                    *e = (*e).max(n);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let out = f();
        done.store(true, Ordering::Relaxed);
        out
    });
    (out, peak.into_inner().unwrap())
}

fn print_tally(what: &str, tally: &Tally, took: Duration, cycles: usize) {
    eprintln!(
        "{what}: {cycles} cycles in {:.1} s ({:.0} cycles/s)",
        took.as_secs_f64(),
        cycles as f64 / took.as_secs_f64()
    );
    for (k, v) in &tally.outcomes {
        eprintln!("  {k}: {v}");
    }
}

#[test]
fn ten_thousand_cycles_from_32_clients_fail_cleanly_and_leave_no_trace() {
    let daemon = Daemon::start_with_config(&format!(
        "[policy]\nmax_concurrent_faults = {MAX_CONCURRENT}\n"
    ));
    let pid = daemon.pid().as_raw() as u32;
    let parents: Vec<TestCgroup> = (0..4)
        .map(|i| TestCgroup::new(&format!("load{i}")))
        .collect();
    let children: Vec<TestCgroup> = parents.iter().map(|p| p.child("worker")).collect();
    let targets: Vec<String> = parents
        .iter()
        .chain(&children)
        .map(|c| c.rel().to_string())
        .collect();

    let (warm, took) = run_cycles(&daemon, &targets, 0..WARM_UP);
    print_tally("warm-up", &warm, took, WARM_UP);
    assert!(
        warm.unclean.is_empty(),
        "unclean answers in the warm-up: {:#?}",
        warm.unclean
    );
    let before = quiet_footprint(&daemon);
    eprintln!("baseline: {before}");

    let ((tally, took), peak) = peak_map_entries(pid, || {
        run_cycles(&daemon, &targets, WARM_UP..WARM_UP + CYCLES)
    });
    print_tally("load", &tally, took, CYCLES);
    eprintln!("peak map entries during the load: {peak:?}");
    assert!(
        tally.unclean.is_empty(),
        "{} unclean answers, first ones: {:#?}\ndaemon log tail:\n{}",
        tally.unclean.len(),
        &tally.unclean[..tally.unclean.len().min(10)],
        tail(&daemon.log_text(), 40)
    );
    let handled: usize = tally.outcomes.values().sum();
    assert_eq!(handled, CYCLES + CYCLES / 5, "every request has an outcome");
    assert!(
        tally.total(": ok") >= CYCLES / 2,
        "fewer than half the cycles succeeded: {:?}",
        tally.outcomes
    );
    assert!(
        peak.get(chaosd_common::net::NET_RULES_MAP)
            .is_some_and(|n| *n > 0),
        "the rules map never showed an entry during the load, so its count proves nothing: {peak:?}"
    );

    let after = quiet_footprint(&daemon);
    eprintln!("after:    {after}");
    assert_eq!(
        after.fds, before.fds,
        "descriptors leaked: {before} → {after}"
    );
    assert_eq!(
        after.map_entries, before.map_entries,
        "map entries left behind"
    );
    assert!(
        after.rss_bytes <= before.rss_bytes + RSS_TOLERANCE,
        "RSS grew by {} KiB, more than {} KiB: {before} → {after}",
        (after.rss_bytes.saturating_sub(before.rss_bytes)) >> 10,
        RSS_TOLERANCE >> 10
    );
    let journal = std::fs::read_dir(daemon.state_dir().join("faults"))
        .unwrap()
        .count();
    assert_eq!(journal, 0, "journal entries left behind");
    for cg in parents.iter().chain(&children) {
        let freeze = std::fs::read_to_string(cg.dir().join("cgroup.freeze")).unwrap();
        assert_eq!(freeze.trim(), "0", "{} stayed frozen", cg.rel());
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
