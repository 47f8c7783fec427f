//! The HTML report of a real run, rendered by headless Chromium (Debian's `chromium`): the page
//! fetches nothing, and the screenshot shows the timeline with the fault window where the fault
//! was in force, and the probe's passed and failed checks.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use chaosd::scenario::{
    report::Report,
    wire::{RunRequest, Verdict},
};
use chaosd_integration::{
    Daemon, block_on, free_port, prometheus::which, skip, unsupported_reason,
};

fn scenario(port: u16) -> String {
    format!(
        r#"title = "test: html report"

[services.web]
http = "127.0.0.1:{port}"

[steady_state]
interval = "100ms"
timeout = "300ms"
baseline = "1s"
recovery_timeout = "5s"

[[steady_state.probe]]
name = "home"
http = "http://127.0.0.1:{port}/"

[[step]]
name = "outage"
kind = "net.loss"
params = {{ percent = 100, direction = "both" }}
target = "web"
duration = "2s"
"#
    )
}

fn run_to_report(daemon: &Daemon) -> Report {
    let client = daemon.client();
    let req = RunRequest {
        scenario: scenario(free_port()),
        source: Some("report.toml".into()),
    };
    let id = block_on(client.start_run(&req)).unwrap().id;
    let follow = client.follow_run(&id, 0, |_| {});
    block_on(async { tokio::time::timeout(Duration::from_secs(60), follow).await })
        .expect("the run did not end within 60 s")
        .unwrap();
    block_on(client.run_report(&id)).unwrap()
}

/// Headless Chromium's screenshot of `page`, killed if it takes over a minute.
fn screenshot(chromium: &Path, page: &Path, dir: &Path) -> PathBuf {
    let png = dir.join("shot.png");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1100,900",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish the screenshot within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(png.exists(), "chromium wrote no screenshot");
    png
}

/// Width, height and RGB pixels of a PNG.
fn pixels(png: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let px = buf[..info.buffer_size()]
        .chunks(step)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, px)
}

fn rgb(hex: &str) -> [u8; 3] {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

#[test]
fn the_html_report_of_a_real_run_renders_its_fault_window() {
    let Some(chromium) = which("chromium") else {
        skip!("chromium is not installed (apt-get install chromium; `cargo xtask test` does)");
    };
    let daemon = Daemon::start();
    if let Some(reason) = unsupported_reason(&daemon, "net.loss") {
        skip!("net.loss unsupported: {reason}");
    }
    let report = run_to_report(&daemon);
    assert_eq!(report.verdict, Verdict::Failed, "{}", report.markdown());
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let out = daemon.chaosctl_ok(&[
        "report",
        &report.id,
        "--html",
        "--output",
        page.to_str().unwrap(),
    ]);
    assert_eq!(out.trim(), page.display().to_string());
    let html = std::fs::read_to_string(&page).unwrap();
    for fetch in ["<script", "src=", "href=", "url(", "@import", "<link"] {
        assert!(
            !html.contains(fetch),
            "the page may fetch something: {fetch}"
        );
    }
    assert!(html.contains("<svg") && html.contains("time to recover (MTTR)"));

    let (width, height, px) = pixels(&screenshot(&chromium, &page, dir.path()));
    let white = px.iter().filter(|p| **p == [255, 255, 255]).count();
    assert!(
        white < px.len() * 97 / 100,
        "the screenshot is blank ({width}x{height}, {white} white pixels)"
    );
    // The fault window: a solid block whose width is the fault's share of the run.
    let fault = rgb(chaosd::scenario::html::FAULT_FILL);
    let columns: Vec<u32> = (0..width)
        .filter(|x| (0..height).any(|y| px[(y * width + x) as usize] == fault))
        .collect();
    assert!(!columns.is_empty(), "no fault window in the screenshot");
    let drawn = columns.len() as f64;
    let step = &report.steps[0];
    let in_force = (step.reverted_ms.unwrap() - step.injected_ms.unwrap()) as f64;
    let expected = 790.0 * in_force / report.duration_ms as f64;
    assert!(
        (drawn - expected).abs() < 12.0,
        "the fault window is {drawn} px wide, expected about {expected:.0}"
    );
    // The probe's failed checks are drawn, and its passes.
    for (name, colour) in [("failed", "#f28e2b"), ("passed", "#2a9d4b")] {
        assert!(
            px.iter().filter(|p| **p == rgb(colour)).count() > 20,
            "no {name} checks drawn"
        );
    }
}
