//! The real programs the integration tests drive (clients, servers, checkers), installed from
//! Debian's registry when missing, so a fresh machine (and CI) runs the same tests as a dev box.
//!
//! One list names each program a test runs and the package that brings it; a test that needs
//! a program adds a line here. `cargo xtask test` installs what is missing before the host tests; the VM guests see the host's /usr, so they get them too.

use std::{path::Path, process::Command};

use anyhow::Result;

use crate::util::run_cmd;

/// `(program on PATH, Debian package that provides it)`.
pub const TOOLS: &[(&str, &str)] = &[
    // tests/tests/tcp_proxy.rs: tcp.latency measured with redis-benchmark against redis-server.
    ("redis-server", "redis-server"),
    ("redis-benchmark", "redis-tools"),
    ("redis-cli", "redis-tools"),
    // tests/tests/prometheus.rs: the server scenario probes and abort rules query.
    ("prometheus", "prometheus"),
    // tests/tests/prometheus.rs: a TLS server with a self-signed certificate for https probes.
    ("openssl", "openssl"),
    // tests/tests/report.rs: renders the HTML report headless.
    ("chromium", "chromium"),
    // tests/tests/deploy.rs: checks and unit-tests the shipped alert rules.
    ("promtool", "prometheus"),
    // tests/tests/clock.rs: clock drift measured in a Go program (time.Now); tests/tests/dns.rs:
    // Go's pure resolver (a test program built with go).
    ("go", "golang-go"),
    // tests/tests/scenario.rs: the certificate-expiry example's client.
    ("curl", "curl"),
    // tests/tests/dns.rs: the authoritative server (dnsmasq-base: the binary without the
    // system service) and dig.
    ("dnsmasq", "dnsmasq-base"),
    ("dig", "bind9-dnsutils"),
    // tests/tests/systemd.rs: boots /lib/systemd/systemd as a container's PID 1 to run the
    // shipped units (the package's program on PATH is systemctl).
    ("systemctl", "systemd"),
    // tests/tests/resource.rs: io.throttle's read rate and IOPS measured with fio in the VM
    // guests (which run the host's /usr).
    ("fio", "fio"),
];

/// Installs the packages of every program in [`TOOLS`] that is not on PATH.
pub fn ensure() -> Result<()> {
    install_missing(TOOLS)
}

/// Installs the packages of every program in `tools` that is not on PATH.
pub fn install_missing(tools: &[(&str, &'static str)]) -> Result<()> {
    let missing = missing_packages(tools);
    if missing.is_empty() {
        return Ok(());
    }
    println!("tools: installing {}", missing.join(" "));
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    run_cmd(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    run_cmd(&mut install)
}

/// The packages (each once, in list order) whose program is not on PATH.
fn missing_packages(tools: &[(&str, &'static str)]) -> Vec<&'static str> {
    let mut missing: Vec<&str> = Vec::new();
    for (program, package) in tools {
        if !on_path(program) && !missing.contains(package) {
            missing.push(package);
        }
    }
    missing
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_programs_need_nothing_and_missing_ones_name_their_package_once() {
        let tools = [
            ("sh", "dash"),
            ("chaosd-no-such-program", "pkg-a"),
            ("chaosd-no-such-other", "pkg-a"),
            ("chaosd-no-such-third", "pkg-b"),
        ];
        assert_eq!(missing_packages(&tools), vec!["pkg-a", "pkg-b"]);
    }
}
