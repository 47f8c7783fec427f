//! The departure times `net.delay` and `net.bandwidth` write, and the kernel-side guards every
//! rule passes (deadline, daemon heartbeat), checked on any kernel with BPF_PROG_TEST_RUN: the
//! real egress program runs on a crafted packet and the verdict and `skb->tstamp` it leaves
//! are read back. (Whether sch_fq then holds the packet until that time is the
//! VM suite's `net_delay` tests; this host has no sch_fq.)
//!
//! A test-run packet belongs to the caller's cgroup, so this test process moves itself into a
//! test cgroup that carries the rules, and back out at the end.

use std::{
    fs,
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
    sync::Mutex,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
    programs::CgroupSkb,
};
use chaosd::{
    api::{NetBandwidthParams, NetDelayParams, NetFilter},
    faults::kernel::monotonic_ns,
    faults::net::{bandwidth, delay},
};
use chaosd_common::{
    heartbeat::{HEARTBEAT_MAP, HEARTBEAT_STALE_NS},
    net::{NET_LEVELS_MAP, NET_RULES_MAP, NetRule, NetRuleSet},
};
use chaosd_integration::{TestCgroup, require_root};

const MS: u64 = 1_000_000;
/// `struct __sk_buff`: size and the offset of `tstamp` (include/uapi/linux/bpf.h).
const SK_BUFF_SIZE: usize = 192;
const SK_BUFF_TSTAMP: usize = 152;
/// cgroup_skb egress verdicts.
const PASS: u32 = 1;
const DROP_CN: u32 = 2;

/// One process-wide cgroup membership: tests in this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// The egress program loaded from chaosd's object, the rules map, and this process moved
/// into a test cgroup (moved back on drop, before the cgroup goes). The bench plays the
/// daemon's heartbeat: before each run it writes a beat `heartbeat_age` old (None: no beat).
struct Bench {
    ebpf: Ebpf,
    heartbeat: Array<MapData, u64>,
    heartbeat_age: Option<u64>,
    cgroup: TestCgroup,
    home: PathBuf,
}

impl Bench {
    fn new() -> Bench {
        require_root();
        let mut ebpf = chaosd::faults::kernel::load_object().expect("loading chaosd's eBPF object");
        let heartbeat = Array::try_from(ebpf.take_map(HEARTBEAT_MAP).unwrap()).unwrap();
        let prog: &mut CgroupSkb = ebpf
            .program_mut("chaosd_net_egress")
            .unwrap()
            .try_into()
            .unwrap();
        prog.load()
            .expect("the verifier accepts the egress program");
        let mount = chaosd::host::cgroup::cgroup2_mount().unwrap();
        let home = mount.join(
            chaosd::host::cgroup::cgroup_of_pid(std::process::id())
                .unwrap()
                .trim_start_matches('/'),
        );
        let cgroup = TestCgroup::new("departure");
        fs::write(cgroup.dir().join("cgroup.procs"), "0").unwrap();
        Bench {
            ebpf,
            heartbeat,
            heartbeat_age: Some(0),
            cgroup,
            home,
        }
    }

    /// Sets the rules, each with a deadline a minute ahead unless it has its own.
    fn set_rules(&mut self, rules: &[NetRule]) {
        let mut set = NetRuleSet::default();
        for (i, r) in rules.iter().enumerate() {
            let deadline_ns = match r.deadline_ns {
                0 => monotonic_ns() + 60_000 * MS,
                own => own,
            };
            set.rules[i] = NetRule {
                counter_slot: 100 + i as u32,
                deadline_ns,
                ..*r
            };
        }
        let mut map: HashMap<_, u64, NetRuleSet> =
            HashMap::try_from(self.ebpf.map_mut(NET_RULES_MAP).unwrap()).unwrap();
        map.insert(self.cgroup.id(), set, 0).unwrap();
        // The programs look up only the levels the daemon lists: the test cgroup's.
        let mount = chaosd::host::cgroup::cgroup2_mount().unwrap();
        let level = self
            .cgroup
            .dir()
            .strip_prefix(&mount)
            .unwrap()
            .components()
            .count();
        let mut levels: Array<_, u32> =
            Array::try_from(self.ebpf.map_mut(NET_LEVELS_MAP).unwrap()).unwrap();
        levels.set(0, 1 << level, 0).unwrap();
    }

    /// Runs the egress program on a UDP/IPv4 packet of `ip_len` bytes from local port
    /// `sport`; returns the verdict, the departure time it set (0: none) and the
    /// CLOCK_MONOTONIC window the run happened in.
    fn send(&mut self, ip_len: usize, sport: u16) -> Sent {
        let prog: &CgroupSkb = self
            .ebpf
            .program("chaosd_net_egress")
            .unwrap()
            .try_into()
            .unwrap();
        let fd = prog.fd().unwrap().as_fd().as_raw_fd();
        let packet = udp4_packet(ip_len, sport);
        let beat = self
            .heartbeat_age
            .map_or(0, |age| monotonic_ns().saturating_sub(age));
        self.heartbeat.set(0, beat, 0).unwrap();
        let ctx_in = [0u8; SK_BUFF_SIZE];
        let mut ctx_out = [0u8; SK_BUFF_SIZE];
        let mut attr = TestRunAttr {
            prog_fd: fd as u32,
            data_size_in: packet.len() as u32,
            data_in: packet.as_ptr() as u64,
            ctx_size_in: SK_BUFF_SIZE as u32,
            ctx_in: ctx_in.as_ptr() as u64,
            ctx_size_out: SK_BUFF_SIZE as u32,
            ctx_out: ctx_out.as_mut_ptr() as u64,
            ..TestRunAttr::default()
        };
        let before = monotonic_ns();
        // SAFETY: attr points at buffers that outlive the call, sizes as given.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestRunAttr,
                std::mem::size_of::<TestRunAttr>(),
            )
        };
        let after = monotonic_ns();
        assert_eq!(
            rc,
            0,
            "BPF_PROG_TEST_RUN: {}",
            std::io::Error::last_os_error()
        );
        let tstamp = u64::from_ne_bytes(
            ctx_out[SK_BUFF_TSTAMP..SK_BUFF_TSTAMP + 8]
                .try_into()
                .unwrap(),
        );
        Sent {
            verdict: attr.retval,
            tstamp,
            before,
            after,
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = fs::write(self.home.join("cgroup.procs"), "0");
    }
}

struct Sent {
    verdict: u32,
    tstamp: u64,
    before: u64,
    after: u64,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Ethernet + IPv4 + UDP from 10.0.0.1:`sport` to 10.0.0.2:9000, `ip_len` bytes from the IP
/// header on (the test run strips the Ethernet header for cgroup programs).
fn udp4_packet(ip_len: usize, sport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 14 + ip_len];
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut p[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    ip[20..22].copy_from_slice(&sport.to_be_bytes());
    ip[22..24].copy_from_slice(&9000u16.to_be_bytes());
    ip[24..26].copy_from_slice(&((ip_len - 20) as u16).to_be_bytes());
    p
}

fn delay_rule(delay: &str, jitter: Option<&str>) -> NetRule {
    delay::rule(&NetDelayParams {
        delay: delay.parse().unwrap(),
        jitter: jitter.map(|v| v.parse().unwrap()),
        filter: NetFilter::default(),
        netns: None,
    })
    .unwrap()
}

fn bandwidth_rule(rate: &str, burst: &str) -> NetRule {
    bandwidth::rule(&NetBandwidthParams {
        rate: rate.parse().unwrap(),
        burst: Some(burst.parse().unwrap()),
        filter: NetFilter::default(),
        netns: None,
    })
    .unwrap()
}

#[test]
fn delay_sets_the_departure_time_exactly_delay_later() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut bench = Bench::new();
    bench.set_rules(&[delay_rule("100ms", None)]);
    for _ in 0..20 {
        let s = bench.send(100, 4000);
        assert_eq!(s.verdict, PASS);
        assert!(
            s.tstamp >= s.before + 100 * MS && s.tstamp <= s.after + 100 * MS,
            "departure {} not 100 ms after the run window [{}, {}]",
            s.tstamp,
            s.before,
            s.after
        );
    }
    // Packets of a cgroup without rules keep no departure time.
    bench.set_rules(&[]);
    assert_eq!(bench.send(100, 4000).tstamp, 0);
}

#[test]
fn jitter_spreads_departures_within_bounds_and_keeps_each_flow_in_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut bench = Bench::new();
    bench.set_rules(&[delay_rule("50ms", Some("20ms"))]);
    // One packet per flow: nothing holds a packet back, so each departure is delay ± jitter.
    let mut offsets = Vec::new();
    for port in 0..200 {
        let s = bench.send(100, 5000 + port);
        assert!(
            s.tstamp >= s.before + 30 * MS,
            "departure before delay - jitter"
        );
        assert!(
            s.tstamp <= s.after + 70 * MS,
            "departure after delay + jitter"
        );
        offsets.push(s.tstamp - s.before);
    }
    let (min, max) = (
        *offsets.iter().min().unwrap(),
        *offsets.iter().max().unwrap(),
    );
    eprintln!(
        "measured: 200 flows depart at +{} .. +{} ms",
        min / MS,
        max / MS
    );
    assert!(
        max - min > 20 * MS,
        "jitter ± 20 ms spread departures by only {} ms",
        (max - min) / MS
    );
    // Many packets of one flow: never one before the previous one (no reordering), and
    // never later than the latest delay + jitter allows.
    let mut last = 0;
    for _ in 0..200 {
        let s = bench.send(100, 4001);
        assert!(
            s.tstamp >= s.before + 30 * MS,
            "departure before delay - jitter"
        );
        assert!(
            s.tstamp <= (s.after + 70 * MS).max(last),
            "departure after delay + jitter and after the flow's previous packet"
        );
        assert!(
            s.tstamp >= last,
            "a flow was reordered: {} < {last}",
            s.tstamp
        );
        last = s.tstamp;
    }
}

/// The token bucket the egress program keeps for one bandwidth fault, as far as a test can
/// know it. The program reads the clock somewhere inside each run's window
/// `[before, after]` and a packet leaves at `max(now, clock)`, so what it must do depends on
/// when the run happened: a packet that comes after the fault's clock (the fault was idle
/// for its share, e.g. because the test was descheduled under emulation) rightly leaves at
/// once and the clock restarts from it. The model follows that: the clock is known exactly
/// after a held packet and within the run window after one that left at once, and every
/// departure is checked against it.
struct Bucket {
    rate: u64,
    burst_ns: u64,
    /// Bounds on the fault's clock (its next free departure time); None while no packet
    /// has gone through the fault yet.
    clock: Option<(u64, u64)>,
}

impl Bucket {
    fn new(rule: &NetRule) -> Bucket {
        Bucket {
            rate: rule.rate_bytes_per_sec,
            burst_ns: rule.burst_bytes * 1_000_000_000 / rule.rate_bytes_per_sec,
            clock: None,
        }
    }

    /// One packet's line time at the rate (the program's own integer arithmetic).
    fn share(&self, len: u64) -> u64 {
        len * 1_000_000_000 / self.rate
    }

    /// Checks the departure the program gave a `len`-byte packet (sent as `s`) and moves the
    /// clock on; returns whether the packet was held.
    fn check(&mut self, len: u64, s: &Sent) -> bool {
        assert_eq!(s.verdict, PASS, "a bandwidth fault never drops");
        let share = self.share(len);
        if s.tstamp != 0 {
            // Held: the clock was ahead of the run, so the packet leaves exactly at it.
            let Some((lo, hi)) = self.clock else {
                panic!(
                    "the first packet of an idle fault was held until {}",
                    s.tstamp
                );
            };
            assert!(
                s.tstamp > s.before,
                "held until {}, before its run [{}, {}]",
                s.tstamp,
                s.before,
                s.after
            );
            assert!(
                lo <= s.tstamp && s.tstamp <= hi,
                "held until {} while the fault's clock was in [{lo}, {hi}]",
                s.tstamp
            );
            self.clock = Some((s.tstamp + share, s.tstamp + share));
            true
        } else {
            // Left at once: the clock was not ahead of the program's `now` ...
            let (lo, hi) = self.clock.unwrap_or((0, 0));
            assert!(
                lo <= s.after,
                "left at once although the fault's clock ({lo} at the earliest) was past its \
                 run [{}, {}]",
                s.before,
                s.after
            );
            // ... and restarts from `max(clock, now - burst)`, which is at most `now`.
            let start_lo = lo.max(s.before.saturating_sub(self.burst_ns));
            let start_hi = hi.max(s.after.saturating_sub(self.burst_ns)).min(s.after);
            self.clock = Some((start_lo + share, start_hi + share));
            false
        }
    }
}

#[test]
fn bandwidth_spaces_departures_by_the_bytes_share_of_the_rate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut bench = Bench::new();
    // 100 kbit/s = 12,500 bytes/s: a 1,250-byte packet takes 100 ms, far longer than a
    // test run takes even under emulation; no burst.
    let rule = bandwidth_rule("100kbit", "0");
    bench.set_rules(&[rule]);
    let mut bucket = Bucket::new(&rule);
    let sent: Vec<Sent> = (0..10).map(|_| bench.send(1250, 4003)).collect();
    let departures: Vec<u64> = sent.iter().map(|s| s.tstamp).collect();
    // The first packet of an idle fault leaves at once (no departure time set), and each
    // next one is held until 100 ms after the one before (exactly), unless it came later
    // than that: then it leaves at once and the spacing restarts from it.
    let held: Vec<bool> = sent.iter().map(|s| bucket.check(1250, s)).collect();
    assert!(!held[0], "departures {departures:?}");
    // Back-to-back sends are what pacing is for: most of them must have been held.
    let n_held = held.iter().filter(|h| **h).count();
    assert!(
        n_held >= 5,
        "only {n_held} of 10 packets held (sends slower than 100 ms each?): departures \
         {departures:?}"
    );
    drop(bench);
    // With a burst of 5,000 bytes, an idle fault sends the packet at hand and four more
    // (5,000 bytes) at once; the sixth waits, as long as the six came within one packet's
    // share (100 ms). The model checks each of them either way.
    let mut bench = Bench::new();
    let rule = bandwidth_rule("100kbit", "5000");
    bench.set_rules(&[rule]);
    let mut bucket = Bucket::new(&rule);
    let sent: Vec<Sent> = (0..6).map(|_| bench.send(1250, 4004)).collect();
    let held: Vec<bool> = sent.iter().map(|s| bucket.check(1250, s)).collect();
    let span = sent[5].after - sent[0].before;
    if span < bucket.share(1250) {
        assert_eq!(
            held,
            [false, false, false, false, false, true],
            "burst of 5000 bytes"
        );
    } else {
        eprintln!(
            "the six sends took {} ms: the burst size was checked only against the model",
            span / MS
        );
    }
}

#[test]
fn loss_and_delay_on_one_cgroup_compose() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut bench = Bench::new();
    let loss = NetRule {
        kind: chaosd_common::net::NetKind::Drop.code(),
        direction: chaosd_common::net::DIR_EGRESS,
        probability_ppm: 500_000,
        ..NetRule::default()
    };
    bench.set_rules(&[loss, delay_rule("30ms", None)]);
    let sent: Vec<Sent> = (0..400).map(|_| bench.send(100, 4005)).collect();
    let dropped = sent.iter().filter(|s| s.verdict == DROP_CN).count();
    eprintln!("measured: {dropped}/400 dropped at 50 %");
    assert!(
        (120..=280).contains(&dropped),
        "{dropped}/400 dropped at 50 %"
    );
    for s in sent.iter().filter(|s| s.verdict == PASS) {
        assert!(s.tstamp >= s.before + 30 * MS && s.tstamp <= s.after + 30 * MS);
    }
}

fn drop_all() -> NetRule {
    NetRule {
        kind: chaosd_common::net::NetKind::Drop.code(),
        direction: chaosd_common::net::DIR_EGRESS,
        probability_ppm: chaosd_common::net::PPM_ONE,
        ..NetRule::default()
    }
}

#[test]
fn rules_count_only_while_the_daemon_heartbeat_is_fresh() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut bench = Bench::new();
    bench.set_rules(&[drop_all()]);
    assert_eq!(bench.send(100, 4006).verdict, DROP_CN, "fresh beat");
    bench.heartbeat_age = Some(HEARTBEAT_STALE_NS / 2);
    assert_eq!(bench.send(100, 4006).verdict, DROP_CN, "beat half stale");
    bench.heartbeat_age = Some(HEARTBEAT_STALE_NS + 50 * MS);
    assert_eq!(
        bench.send(100, 4006).verdict,
        PASS,
        "stale beat: dead daemon"
    );
    bench.heartbeat_age = None;
    assert_eq!(bench.send(100, 4006).verdict, PASS, "no beat ever");
}

#[test]
fn rules_past_their_deadline_do_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut bench = Bench::new();
    let expired = NetRule {
        deadline_ns: monotonic_ns() - 1,
        ..drop_all()
    };
    bench.set_rules(&[expired]);
    assert_eq!(bench.send(100, 4007).verdict, PASS);
    bench.set_rules(&[drop_all()]);
    assert_eq!(bench.send(100, 4007).verdict, DROP_CN);
}
