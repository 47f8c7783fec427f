//! Targets beyond one named cgroup, checked from outside with real datagrams: a host-wide
//! partition (`--host`) cuts every cgroup off from the peer but a cgroup named like
//! `sshd.service` (policy.host_exclude) and leaves chaosd's own alone; a dry run names the
//! cgroups and processes an inject would touch and changes nothing; `--container` and `--pod`
//! find the cgroups container runtimes make (named as containerd names them under the
//! systemd driver, inside a test cgroup).
//!
//! Each test has its own peer, a loopback address 127.77.0.x nothing else on the host uses:
//! the tests of this file run at once, and the host-wide partition (on every cgroup, the other
//! tests' too) must cut off only its own peer.

use std::{net::SocketAddr, process::Command};

use chaosd::{
    api::{
        Direction, FaultSpec, InjectRequest, NetPartitionParams, ProcessPauseParams, Proto,
        TargetSelector,
    },
    client::ClientError,
};
use chaosd_integration::{
    Daemon, TestCgroup, UdpSink, block_on, loss_spec, net_filter, netns::KillOnDrop,
    spawn_in_cgroup, udp_from_cgroup_to,
};

/// The peer of the host-wide partition.
const HOST_WIDE_PEER: &str = "127.77.0.1";
const DRY_RUN_PEER: &str = "127.77.0.2";
const REFUSED_PEER: &str = "127.77.0.3";
const CONTAINER_PEER: &str = "127.77.0.4";
const CGNS_PEER: &str = "127.77.0.5";
const COUNT: u32 = 50;

struct Scene {
    peer: &'static str,
    base: TestCgroup,
    ssh: TestCgroup,
    app: TestCgroup,
    other: TestCgroup,
    sink: UdpSink,
    _sleepers: Vec<KillOnDrop>,
    app_sleeper: u32,
    ssh_sleeper: u32,
}

impl Scene {
    fn new(peer: &'static str) -> Scene {
        let base = TestCgroup::new("hostwide");
        let ssh = base.child("sshd.service");
        let app = base.child("app");
        let other = TestCgroup::new("hostwide-other");
        let sleepers: Vec<KillOnDrop> = [&app, &ssh]
            .map(|cg| {
                let mut sleep = Command::new("sleep");
                sleep.arg("600");
                KillOnDrop(spawn_in_cgroup(&mut sleep, cg.dir()).unwrap())
            })
            .into_iter()
            .collect();
        let (app_sleeper, ssh_sleeper) = (sleepers[0].0.id(), sleepers[1].0.id());
        let sink = UdpSink::bind(SocketAddr::new(peer.parse().unwrap(), 0)).unwrap();
        Scene {
            peer,
            base,
            ssh,
            app,
            other,
            sink,
            _sleepers: sleepers,
            app_sleeper,
            ssh_sleeper,
        }
    }

    /// Datagrams that reach the peer from each of app, other and ssh.
    fn reached(&self) -> [u32; 3] {
        [&self.app, &self.other, &self.ssh]
            .map(|cg| udp_from_cgroup_to(cg, &[&self.sink], COUNT)[0])
    }
}

fn partition(peer: &str, targets: Vec<TargetSelector>) -> InjectRequest {
    InjectRequest {
        fault: FaultSpec::NetPartition(NetPartitionParams {
            filter: net_filter(Some(&format!("{peer}/32")), None, Proto::Any),
        }),
        targets,
        duration: Some("2m".into()),
    }
}

#[test]
fn a_host_wide_partition_spares_sshd_service_and_reaches_every_other_cgroup() {
    let scene = Scene::new(HOST_WIDE_PEER);
    let daemon = Daemon::start();
    assert_eq!(
        scene.reached(),
        [COUNT; 3],
        "the peer is not reachable before"
    );

    let info = daemon
        .try_inject(&partition(scene.peer, vec![TargetSelector::Host]))
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    let targeted: Vec<&str> = info.targets.iter().map(|t| t.cgroup.as_str()).collect();
    for cg in [&scene.app, &scene.other] {
        assert!(
            targeted.contains(&cg.rel()),
            "{} not in {targeted:?}",
            cg.rel()
        );
    }
    assert!(
        !targeted
            .iter()
            .any(|t| t.starts_with(scene.ssh.rel()) || *t == scene.base.rel()),
        "sshd.service (or its parent, taken whole) is targeted: {targeted:?}"
    );
    let [app, other, ssh] = scene.reached();
    assert_eq!(
        (app, other),
        (0, 0),
        "the host-wide partition let datagrams through"
    );
    assert_eq!(
        ssh, COUNT,
        "sshd.service lost datagrams to a host-wide partition"
    );
    assert!(
        block_on(daemon.client().status()).is_ok(),
        "chaosd's own API stopped answering"
    );

    block_on(daemon.client().recover(&info.id)).unwrap();
    assert_eq!(scene.reached(), [COUNT; 3], "not reachable after recover");
}

#[test]
fn a_dry_run_names_cgroups_and_processes_and_changes_nothing() {
    let scene = Scene::new(DRY_RUN_PEER);
    let daemon = Daemon::start();
    let plan = block_on(
        daemon
            .client()
            .dry_run(&partition(scene.peer, vec![TargetSelector::Host])),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    assert_eq!(plan.kind, "net.partition");
    let app = plan
        .targets
        .iter()
        .find(|t| t.cgroup == scene.app.rel())
        .unwrap_or_else(|| panic!("app is not in the plan: {plan:?}"));
    let sleeper = app
        .processes
        .iter()
        .find(|p| p.pid == scene.app_sleeper)
        .unwrap_or_else(|| panic!("app's process is not listed: {app:?}"));
    assert_eq!(
        (sleeper.comm.as_str(), sleeper.cgroup.as_str()),
        ("sleep", scene.app.rel())
    );
    assert!(
        plan.excluded.iter().any(|e| e == scene.ssh.rel()),
        "{plan:?}"
    );
    let every_pid: Vec<u32> = plan
        .targets
        .iter()
        .flat_map(|t| t.processes.iter().map(|p| p.pid))
        .collect();
    assert!(
        !every_pid.contains(&scene.ssh_sleeper),
        "sshd.service's process is listed"
    );
    assert!(
        !every_pid.contains(&daemon.pid().as_raw().cast_unsigned()),
        "chaosd itself is listed"
    );
    // The base cgroup holds the excluded sshd.service: split, so its own processes (none)
    // are the only ones left out besides the excluded ones.
    assert!(!plan.targets.iter().any(|t| t.cgroup == scene.base.rel()));

    // Named targets too, and nothing changed: no fault, the peer reachable.
    let named = block_on(daemon.client().dry_run(&partition(
        scene.peer,
        vec![TargetSelector::Cgroup(scene.app.rel().into())],
    )))
    .unwrap();
    assert_eq!(named.targets.len(), 1);
    assert_eq!(named.targets[0].processes.len(), 1);
    assert!(block_on(daemon.client().list(true)).unwrap().is_empty());
    assert_eq!(
        scene.reached(),
        [COUNT; 3],
        "a dry run changed the datapath"
    );
    let text = daemon.chaosctl_ok(&[
        "inject",
        "net",
        "partition",
        "--host",
        "--dst",
        &format!("{}/32", scene.peer),
        "--duration",
        "1m",
        "--dry-run",
    ]);
    assert!(
        text.contains("nothing was changed") && text.contains(scene.app.rel()),
        "{text}"
    );
    assert!(block_on(daemon.client().list(true)).unwrap().is_empty());
}

#[test]
fn host_wide_targets_are_refused_where_they_make_no_sense() {
    let scene = Scene::new(REFUSED_PEER);
    let daemon = Daemon::start();
    let refused = |req: InjectRequest, says: &str| match daemon.try_inject(&req) {
        Err(ClientError::Api(msg, status)) => {
            assert_eq!(status.as_u16(), 400, "{msg}");
            assert!(msg.contains(says), "{msg:?} does not say {says:?}");
        }
        other => panic!("accepted: {other:?}"),
    };
    refused(
        partition(
            scene.peer,
            vec![
                TargetSelector::Host,
                TargetSelector::Cgroup(scene.app.rel().into()),
            ],
        ),
        "give it alone",
    );
    refused(
        InjectRequest {
            fault: FaultSpec::ProcessPause(ProcessPauseParams {}),
            targets: vec![TargetSelector::Host],
            duration: Some("1m".into()),
        },
        "process.pause cannot target the whole host",
    );
    assert!(block_on(daemon.client().list(true)).unwrap().is_empty());
    assert_eq!(scene.reached(), [COUNT; 3]);
}

#[test]
fn containers_and_pods_are_targeted_by_the_cgroups_their_runtime_names() {
    const ID: &str = "5e1f0c2a9b8d11112222333344445555666677778888999900001111aaaabbbb";
    const UID: &str = "7c0e2a52-1d43-4a8b-9f1e-0a6b2f3c4d5e";
    let base = TestCgroup::new("k8s");
    // Each level stays alive to the end (a dropped TestCgroup removes its tree).
    let kubepods = base.child("kubepods.slice");
    let besteffort = kubepods.child("kubepods-besteffort.slice");
    let pod = besteffort.child(&format!(
        "kubepods-besteffort-pod{}.slice",
        UID.replace('-', "_")
    ));
    let container = pod.child(&format!("cri-containerd-{ID}.scope"));
    let sink = UdpSink::bind(SocketAddr::new(CONTAINER_PEER.parse().unwrap(), 0)).unwrap();
    let daemon = Daemon::start();
    let lose_all = |target: TargetSelector| InjectRequest {
        fault: loss_spec(
            100.0,
            Direction::Egress,
            net_filter(Some(&format!("{CONTAINER_PEER}/32")), None, Proto::Any),
        ),
        targets: vec![target],
        duration: Some("1m".into()),
    };
    for (target, cgroup) in [
        (TargetSelector::Container(ID[..12].to_string()), &container),
        (TargetSelector::Pod(UID.to_string()), &pod),
    ] {
        let info = daemon
            .try_inject(&lose_all(target.clone()))
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        assert_eq!(info.targets[0].cgroup, cgroup.rel(), "{target}");
        assert_eq!(
            udp_from_cgroup_to(&container, &[&sink], COUNT),
            [0],
            "{target}: the container's datagrams got through"
        );
        block_on(daemon.client().recover(&info.id)).unwrap();
        assert_eq!(udp_from_cgroup_to(&container, &[&sink], COUNT), [COUNT]);
    }
    match daemon.try_inject(&lose_all(TargetSelector::Container("0123456789ab".into()))) {
        Err(ClientError::Api(msg, status)) => {
            assert_eq!(status.as_u16(), 400);
            assert!(msg.contains("cri-containerd-ID.scope"), "{msg}");
        }
        other => panic!("an unknown container was accepted: {other:?}"),
    }
}

/// chaosd started inside a private cgroup namespace (as container runtimes start it, rooted at
/// its own cgroup) with the host's PID namespace: it joins PID 1's cgroup namespace, so a
/// `--pid` target outside its own cgroup resolves to the host path and takes the fault.
#[test]
fn a_daemon_in_a_private_cgroup_namespace_resolves_targets_as_the_host_sees_them() {
    use std::os::unix::process::CommandExt as _;
    let home = TestCgroup::new("cgns-daemon");
    let target = TestCgroup::new("cgns-target");
    let mut sleep = Command::new("sleep");
    sleep.arg("600");
    let sleeper = KillOnDrop(spawn_in_cgroup(&mut sleep, target.dir()).unwrap());
    let procs = home.dir().join("cgroup.procs");
    let daemon = Daemon::start_customized("", |_, mut cmd| {
        // SAFETY: only a write to an open file and unshare run between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                std::fs::write(&procs, std::process::id().to_string())?;
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
                    .map_err(std::io::Error::from)
            });
        }
        cmd
    });
    let said = |what: &str| {
        chaosd_integration::wait_for(std::time::Duration::from_secs(5), || {
            daemon.log_text().contains(what).then_some(())
        })
        .is_some()
    };
    // This sandboxed dev host hides /proc/1/ns from root: nothing can enter PID 1's
    // namespace here. The VM suite (PID 1 reachable) runs the whole check.
    if std::fs::File::open("/proc/1/ns/cgroup").is_err() {
        chaosd_integration::skip!("PID 1's cgroup namespace is not reachable on this host");
    }
    assert!(
        said("left this container's cgroup namespace"),
        "{}",
        daemon.log_text()
    );
    let sink = UdpSink::bind(SocketAddr::new(CGNS_PEER.parse().unwrap(), 0)).unwrap();
    let info = daemon
        .try_inject(&InjectRequest {
            fault: loss_spec(
                100.0,
                Direction::Egress,
                net_filter(Some(&format!("{CGNS_PEER}/32")), None, Proto::Any),
            ),
            targets: vec![TargetSelector::Pid(sleeper.0.id())],
            duration: Some("1m".into()),
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    assert_eq!(info.targets[0].cgroup, target.rel());
    assert_eq!(udp_from_cgroup_to(&target, &[&sink], COUNT), [0]);
    // Its own cgroup is still its own: a target holding it is refused.
    let own = daemon.try_inject(&InjectRequest {
        fault: FaultSpec::ProcessPause(ProcessPauseParams {}),
        targets: vec![TargetSelector::Cgroup(home.rel().into())],
        duration: Some("1m".into()),
    });
    assert!(
        matches!(&own, Err(ClientError::Api(m, _)) if m.contains("contains chaosd itself")),
        "{own:?}"
    );
}
