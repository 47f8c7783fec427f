//! Schedules, end to end: a scenario on a seconds-granular cron expression (croner reads six
//! fields as seconds first, so the test waits seconds, not minutes) fires on time, again after
//! a daemon restart, and a due time while the daemon is down is recorded as missed, not run
//! late; a fault schedule refuses to overlap itself; bad expressions get a clear error.

use std::time::{Duration, SystemTime};

use chaosd::{
    api::{
        Direction, FaultSpec, InjectRequest,
        schedule::{Fire, FireOutcome, ScheduleInfo, ScheduleRequest},
    },
    client::Client,
    scenario::wire::RunState,
};
use chaosd_integration::{
    Daemon, TestCgroup, block_on, free_port, loss_request, skip, unsupported_reason, wait_for,
};

/// Every 5 s: a short scenario (about 2 s) fits between two due times.
const EVERY_5S: &str = "*/5 * * * * *";

fn short_scenario() -> String {
    let port = free_port();
    format!(
        r#"title = "test: scheduled"

[services.web]
http = "127.0.0.1:{port}"

[steady_state]
interval = "100ms"
baseline = "300ms"
recovery_timeout = "3s"
recovery_confirm = 1

[[steady_state.probe]]
name = "home"
http = "http://127.0.0.1:{port}/"

[[step]]
kind = "net.loss"
params = {{ percent = 1, direction = "both" }}
target = "web"
duration = "500ms"
"#
    )
}

fn time(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).unwrap_or_else(|e| panic!("{rfc3339:?}: {e}"))
}

/// How late a fire was handled after its due time.
fn lateness(f: &Fire) -> Duration {
    time(&f.at)
        .duration_since(time(&f.due_at))
        .unwrap_or_default()
}

fn fires(client: &Client, id: &str) -> Vec<Fire> {
    let mut fires = block_on(client.schedule(id)).unwrap().fires;
    fires.reverse(); // oldest first
    fires
}

/// Waits (bounded) until the schedule has `n` fires with `outcome`; returns them, oldest first.
fn wait_fires(client: &Client, id: &str, outcome: FireOutcome, n: usize) -> Vec<Fire> {
    wait_for(Duration::from_secs(20), || {
        let found: Vec<Fire> = fires(client, id)
            .into_iter()
            .filter(|f| f.outcome == outcome)
            .collect();
        (found.len() >= n).then_some(found)
    })
    .unwrap_or_else(|| panic!("no {n} {outcome} fires: {:#?}", fires(client, id)))
}

fn wait_run_finished(client: &Client, run: &str) {
    wait_for(Duration::from_secs(20), || {
        let info = block_on(client.run(run)).ok()?;
        (info.state == RunState::Finished).then_some(())
    })
    .unwrap_or_else(|| panic!("run {run} did not finish"));
}

fn sleep_until(t: SystemTime) {
    if let Ok(d) = t.duration_since(SystemTime::now()) {
        std::thread::sleep(d);
    }
}

#[test]
fn a_scenario_schedule_fires_on_time_survives_a_restart_and_records_a_missed_run() {
    let daemon = Daemon::start();
    if let Some(reason) = unsupported_reason(&daemon, "net.loss") {
        skip!("net.loss unsupported: {reason}");
    }
    let file = daemon.state_dir().join("scheduled.toml");
    std::fs::write(&file, short_scenario()).unwrap();
    let out = daemon.chaosctl_ok(&[
        "--json",
        "schedule",
        "add",
        "--cron",
        EVERY_5S,
        file.to_str().unwrap(),
    ]);
    let added: ScheduleInfo = serde_json::from_str(&out).unwrap();
    assert_eq!(added.what, "scenario");
    assert!(added.next_due.is_some(), "{added:?}");
    let id = added.id;

    // 1: on time, and the run has a report.
    let first = wait_fires(&daemon.client(), &id, FireOutcome::Started, 1).remove(0);
    assert!(lateness(&first) < Duration::from_millis(1500), "{first:?}");
    let run1 = first.started.clone().unwrap();
    wait_run_finished(&daemon.client(), &run1);
    assert!(block_on(daemon.client().run_report(&run1)).is_ok());

    // 2: after a restart (same state dir and database), the next due time fires on time.
    let restarted_at = SystemTime::now();
    let daemon = daemon.restart();
    let listed: Vec<ScheduleInfo> = block_on(daemon.client().schedules()).unwrap();
    assert_eq!(listed.len(), 1, "the schedule did not survive: {listed:?}");
    let started = wait_fires(&daemon.client(), &id, FireOutcome::Started, 2);
    let second = &started[1];
    assert!(time(&second.due_at) > restarted_at, "{second:?}");
    assert!(lateness(second) < Duration::from_millis(1500), "{second:?}");
    let run2 = second.started.clone().unwrap();
    assert_ne!(run1, run2);
    wait_run_finished(&daemon.client(), &run2);

    // 3: down over a due time (and past the grace): recorded as missed, not run late.
    let info = block_on(daemon.client().schedule(&id)).unwrap();
    let next = time(info.next_due.as_deref().unwrap());
    let mut daemon = daemon;
    daemon.kill9();
    sleep_until(next + Duration::from_secs(3));
    let daemon = daemon.restart();
    let missed = wait_fires(&daemon.client(), &id, FireOutcome::Missed, 1);
    assert!(
        missed.iter().any(|f| time(&f.due_at) == next),
        "the due time {next:?} is not recorded as missed: {missed:#?}"
    );
    assert!(missed[0].detail.contains("not started late"), "{missed:?}");
    assert!(
        fires(&daemon.client(), &id)
            .iter()
            .all(|f| f.outcome != FireOutcome::Started || time(&f.due_at) != next),
        "the missed due time was run late"
    );

    // Every fire is in the audit trail.
    let history = block_on(daemon.client().history(200)).unwrap();
    let audited = history
        .iter()
        .filter(|h| h.method == "SCHEDULE" && h.path == format!("/v1/schedules/{id}"))
        .count();
    assert!(audited >= 3, "{history:#?}");

    daemon.chaosctl_ok(&["schedule", "remove", &id]);
    assert!(block_on(daemon.client().schedules()).unwrap().is_empty());
}

#[test]
fn a_fault_schedule_refuses_to_overlap_itself_and_pauses() {
    let daemon = Daemon::start();
    if let Some(reason) = unsupported_reason(&daemon, "net.loss") {
        skip!("net.loss unsupported: {reason}");
    }
    let cg = TestCgroup::new("sched");
    let req: InjectRequest = loss_request(&cg, 1.0, Direction::Both, "8s");
    assert!(matches!(req.fault, FaultSpec::NetLoss(_)));
    let info = block_on(daemon.client().add_schedule(&ScheduleRequest {
        cron: "*/2 * * * * *".into(),
        scenario: None,
        fault: Some(req),
        source: None,
    }))
    .unwrap();
    assert_eq!(info.what, "fault");
    let refused = wait_fires(&daemon.client(), &info.id, FireOutcome::Refused, 1);
    assert!(refused[0].detail.contains("overlap refused"), "{refused:?}");
    let started = wait_fires(&daemon.client(), &info.id, FireOutcome::Started, 1);
    assert_eq!(started.len(), 1, "a second fault started: {started:?}");

    let paused = block_on(daemon.client().schedule_set(&info.id, "pause")).unwrap();
    assert!(paused.paused && paused.next_due.is_none());
    block_on(daemon.client().recover_all()).unwrap();
    let before = fires(&daemon.client(), &info.id).len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        fires(&daemon.client(), &info.id).len(),
        before,
        "a paused schedule fired"
    );
    block_on(daemon.client().remove_schedule(&info.id)).unwrap();
}

#[test]
fn bad_cron_expressions_and_files_get_clear_errors() {
    let daemon = Daemon::start();
    let file = daemon.state_dir().join("s.toml");
    std::fs::write(&file, short_scenario()).unwrap();
    for bad in ["0 25 * * *", "every night", "* * * *"] {
        let out = daemon
            .chaosctl()
            .args(["schedule", "add", "--cron", bad])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(
            err.contains(&format!("--cron {bad:?} is not a cron expression"))
                && err.contains("five fields"),
            "{bad:?}: {err}"
        );
    }
    let broken = daemon.state_dir().join("broken.toml");
    std::fs::write(&broken, "title = \"x\"\n").unwrap();
    let out = daemon
        .chaosctl()
        .args(["schedule", "add", "--cron", "0 2 * * *"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.toml:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(block_on(daemon.client().schedules()).unwrap().is_empty());
}
