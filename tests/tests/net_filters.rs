//! Network fault filters, partition, connect errors and stacking, checked from outside.

use std::net::{SocketAddr, TcpListener};

use chaosd::api::{
    Direction, FaultSpec, NetConnectErrorParams, NetFilter, NetPartitionParams, Proto,
};
use chaosd_integration::{
    Daemon, TestCgroup, UdpSink, block_on, connect_errno, inject, loss_spec, net_filter,
    tcp_connect_from, udp_from_cgroup_to, udp_into_cgroup_from, unsupported_reason,
};

fn filter(dst: Option<&str>, port: Option<u16>, proto: Proto) -> NetFilter {
    net_filter(dst, port.map(|p| p.to_string()).as_deref(), proto)
}

fn sink(ip: &str) -> UdpSink {
    UdpSink::bind(format!("{ip}:0").parse().unwrap()).unwrap()
}

#[test]
fn loss_filters_by_port_peer_and_protocol() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("filters");
    let (a, b) = (sink("127.0.0.1"), sink("127.0.0.2"));

    let by_port = inject(
        &daemon,
        &cg,
        loss_spec(
            100.0,
            Direction::Egress,
            filter(None, Some(a.addr().port()), Proto::Any),
        ),
        "60s",
    );
    assert_eq!(
        udp_from_cgroup_to(&cg, &[&a, &b], 200),
        vec![0, 200],
        "--port must hit only that port"
    );
    block_on(daemon.client().recover(&by_port.id)).unwrap();

    let by_peer = inject(
        &daemon,
        &cg,
        loss_spec(
            100.0,
            Direction::Egress,
            filter(Some("127.0.0.2/32"), None, Proto::Any),
        ),
        "60s",
    );
    assert_eq!(
        udp_from_cgroup_to(&cg, &[&a, &b], 200),
        vec![200, 0],
        "--dst must hit only that peer"
    );
    block_on(daemon.client().recover(&by_peer.id)).unwrap();

    let tcp_only = inject(
        &daemon,
        &cg,
        loss_spec(100.0, Direction::Egress, filter(None, None, Proto::Tcp)),
        "60s",
    );
    assert_eq!(
        udp_from_cgroup_to(&cg, &[&a], 200),
        vec![200],
        "--proto tcp dropped UDP"
    );
    block_on(daemon.client().recover(&tcp_only.id)).unwrap();

    let v6_only = inject(
        &daemon,
        &cg,
        loss_spec(
            100.0,
            Direction::Egress,
            filter(Some("::1/128"), None, Proto::Any),
        ),
        "60s",
    );
    assert_eq!(
        udp_from_cgroup_to(&cg, &[&a], 200),
        vec![200],
        "an IPv6 prefix matched IPv4 traffic"
    );
    block_on(daemon.client().recover(&v6_only.id)).unwrap();
}

#[test]
fn partition_cuts_both_directions_to_one_peer_only() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("partition");
    let (near, far) = (sink("127.0.0.1"), sink("127.0.0.3"));
    let spec = FaultSpec::NetPartition(NetPartitionParams {
        filter: filter(Some("127.0.0.3/32"), None, Proto::Any),
    });
    let fault = inject(&daemon, &cg, spec, "60s");

    assert_eq!(
        udp_from_cgroup_to(&cg, &[&near, &far], 200),
        vec![200, 0],
        "egress to the cut peer passed"
    );
    let from_far: SocketAddr = "127.0.0.3:0".parse().unwrap();
    let from_near: SocketAddr = "127.0.0.1:0".parse().unwrap();
    assert_eq!(
        udp_into_cgroup_from(&cg, from_far, 200),
        0,
        "ingress from the cut peer passed"
    );
    assert_eq!(
        udp_into_cgroup_from(&cg, from_near, 200),
        200,
        "ingress from another peer was cut"
    );

    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(udp_from_cgroup_to(&cg, &[&far], 200), vec![200]);
}

/// A 60 s inject request of `spec` on `cg`.
fn request(spec: FaultSpec, cg: &TestCgroup) -> chaosd::api::InjectRequest {
    chaosd::api::InjectRequest {
        fault: spec,
        targets: vec![chaosd::api::TargetSelector::Cgroup(cg.rel().to_string())],
        duration: Some("60s".into()),
    }
}

#[test]
fn connect_error_fails_connects_from_the_target_only() {
    let daemon = Daemon::start();
    if let Some(reason) = unsupported_reason(&daemon, "net.connect_error") {
        chaosd_integration::skip!("net.connect_error is unsupported on this kernel: {reason}");
    }
    let target = TestCgroup::new("connect");
    let sibling = TestCgroup::new("connect-sibling");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let (addr, other_addr) = (listener.local_addr().unwrap(), other.local_addr().unwrap());

    let spec = |errno: &str| {
        FaultSpec::NetConnectError(NetConnectErrorParams {
            errno: errno.parse().unwrap(),
            percent: 100.0,
            filter: filter(None, Some(addr.port()), Proto::Tcp),
        })
    };
    let (name, errno) = connect_errno(&daemon, ("ETIMEDOUT", libc::ETIMEDOUT));
    if name == "EPERM" {
        // No bpf_set_retval: any other errno is refused, naming the missing helper.
        let req = request(spec("ETIMEDOUT"), &target);
        let err = daemon.try_inject(&req).unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(422), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("bpf_set_retval") && msg.contains("Fix:") && msg.contains("EPERM"),
            "{msg}"
        );
        assert!(block_on(daemon.client().list(true)).unwrap().is_empty());
    }
    let fault = inject(&daemon, &target, spec(name), "60s");
    assert_eq!(
        tcp_connect_from(&target, addr),
        Err(errno),
        "connect from the target did not fail as asked"
    );
    assert_eq!(
        tcp_connect_from(&sibling, addr),
        Ok(()),
        "a sibling cgroup's connect failed"
    );
    assert_eq!(
        tcp_connect_from(&target, other_addr),
        Ok(()),
        "a connect to another port failed"
    );
    let info = block_on(daemon.client().get(&fault.id)).unwrap();
    assert_eq!(
        (info.counters.seen, info.counters.affected),
        (1, 1),
        "counters: {:?}",
        info.counters
    );

    block_on(daemon.client().recover(&fault.id)).unwrap();
    assert_eq!(
        tcp_connect_from(&target, addr),
        Ok(()),
        "connects still fail after recover"
    );
}

#[test]
fn connect_error_fails_unconnected_udp_sends() {
    let daemon = Daemon::start();
    if let Some(reason) = unsupported_reason(&daemon, "net.connect_error") {
        chaosd_integration::skip!("net.connect_error is unsupported on this kernel: {reason}");
    }
    let cg = TestCgroup::new("sendmsg");
    let s = sink("127.0.0.1");
    let (errno, _) = connect_errno(&daemon, ("ENETUNREACH", libc::ENETUNREACH));
    let spec = FaultSpec::NetConnectError(NetConnectErrorParams {
        errno: errno.parse().unwrap(),
        percent: 100.0,
        filter: filter(None, None, Proto::Udp),
    });
    inject(&daemon, &cg, spec, "60s");
    // The sender exits on its first failed send, so nothing arrives.
    assert_eq!(udp_from_cgroup_to(&cg, &[&s], 50), vec![0]);
}

#[test]
fn faults_on_one_cgroup_stack() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("stack");
    let (a, b) = (sink("127.0.0.1"), sink("127.0.0.4"));
    inject(
        &daemon,
        &cg,
        loss_spec(30.0, Direction::Egress, NetFilter::default()),
        "60s",
    );
    inject(
        &daemon,
        &cg,
        loss_spec(30.0, Direction::Egress, NetFilter::default()),
        "60s",
    );
    let partition = FaultSpec::NetPartition(NetPartitionParams {
        filter: filter(Some("127.0.0.4"), None, Proto::Any),
    });
    inject(&daemon, &cg, partition, "60s");
    let got = udp_from_cgroup_to(&cg, &[&a, &b], 2_000);
    let share = 100.0 * f64::from(got[0]) / 2_000.0;
    // Two independent 30 % losses pass 0.7 × 0.7 = 49 %.
    assert!(
        (share - 49.0).abs() <= 5.0,
        "two stacked 30 % losses passed {share:.1} %, expected 49 ± 5"
    );
    assert_eq!(got[1], 0, "the stacked partition let packets through");
}

#[test]
fn bad_filters_are_refused_and_nothing_is_applied() {
    let daemon = Daemon::start();
    let cg = TestCgroup::new("badfilter");
    // Values that do not parse are refused as the body is decoded; the message names the field.
    let cases = [
        (
            r#"{"kind": "net.loss", "params": {"percent": 10, "filter": {"dst": "10.0.0.0/33"}}}"#,
            "dst",
        ),
        (
            r#"{"kind": "net.loss", "params": {"percent": 10, "filter": {"port": "70000"}}}"#,
            "port",
        ),
        (
            r#"{"kind": "net.partition", "params": {"filter": {}}}"#,
            "--dst is required",
        ),
        (
            r#"{"kind": "net.connect_error", "params": {"errno": "EBOGUS"}}"#,
            "errno",
        ),
    ];
    for (fault, needle) in cases {
        let (status, msg) = daemon.post_fault_text(fault, cg.rel(), "10s");
        assert_eq!(status, 400, "{msg}");
        assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
    }
    assert!(block_on(daemon.client().list(true)).unwrap().is_empty());
    assert!(
        !block_on(daemon.client().status())
            .unwrap()
            .net_programs_attached
    );
}
