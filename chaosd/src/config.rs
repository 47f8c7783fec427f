//! The daemon's configuration file (`/etc/chaosd/chaosd.toml`); every field is optional.
//!
//! ```toml
//! [daemon]
//! socket = "/run/chaosd/chaosd.sock"
//! state_dir = "/run/chaosd"
//! group = "chaosd"          # members may use the socket; root always may
//! # metrics_listen = "127.0.0.1:9464"  # also serve GET /metrics over TCP (loopback only)
//! # history_db = "/var/lib/chaosd/history.sqlite"  # the audit trail (see DaemonConfig)
//! guardian = true           # a process that reverts what outlives chaosd when it dies
//!
//! [faults]
//! max_duration = "1h"       # no fault lives longer
//! # default_duration = "1m" # used when a request names none; unset: a duration is required
//!
//! [policy]
//! protected_cgroups = ["/init.scope"]  # never targeted, nor anything above or below them
//! refuse_slices = false     # true: refuse targets that are whole slices (NAME.slice)
//! max_concurrent_faults = 64
//!
//! [remote]                  # Chaos Mesh's PhysicalMachineChaos and remote chaosctl/Chaos Toolkit
//! # listen = "0.0.0.0:31768"  # off by default
//! # cert = "/etc/chaosd/tls/server.crt"   # PEM: this host's certificate (chain)
//! # key = "/etc/chaosd/tls/server.key"    # PEM: its private key
//! # client_ca = "/etc/chaosd/tls/ca.crt"  # PEM: the CA whose client certificates are served
//! max_duration = "1h"       # an attack nobody recovers ends after this
//! ```

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::{api::units::parse_size, host::directories};

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub faults: FaultsConfig,
    /// Stress and disk faults: the disk free-space floor.
    pub stress: StressConfig,
    /// The blast radius: which cgroups may never be targeted, how many faults at once.
    pub policy: PolicyConfig,
    /// The optional TCP listener (mutual TLS) for Chaos Mesh and remote clients.
    pub remote: RemoteConfig,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Group whose members may use the socket (mode 0660); without it, root only (0600).
    pub group: String,
    /// A loopback address to also serve `GET /metrics` on; off by default (the socket serves
    /// it always). Other addresses are refused: the endpoint has no authentication.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The audit database. Unset: /var/lib/chaosd/history.sqlite with the default state_dir,
    /// else history.sqlite in state_dir (so a daemon run elsewhere leaves /var/lib alone).
    pub history_db: Option<PathBuf>,
    /// Start a guardian process that reverts what outlives chaosd (frozen cgroups, skewed
    /// clocks, leases) the moment it dies, and ends faults on time while it is stalled
    /// (`chaosd::daemon::guardian`). Off: only the next start or `chaosd --cleanup` reverts them.
    pub guardian: bool,
}

impl DaemonConfig {
    pub fn history_db(&self) -> PathBuf {
        match &self.history_db {
            Some(p) => p.clone(),
            None if self.state_dir == std::path::Path::new(directories::STATE_DIR) => {
                directories::HISTORY_DB.into()
            }
            None => default_history_db(&self.state_dir),
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: directories::SOCKET.into(),
            state_dir: directories::STATE_DIR.into(),
            group: "chaosd".into(),
            metrics_listen: None,
            history_db: None,
            guardian: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsConfig {
    /// Upper bound on any fault's duration: one hour, so a forgotten fault cannot last a day.
    #[serde(with = "humantime_serde_opt")]
    pub max_duration: Option<Duration>,
    /// Used when a request has no duration. Unset by default: every request must name one.
    #[serde(with = "humantime_serde_opt")]
    pub default_duration: Option<Duration>,
    /// Longest an inject may take to apply (loading programs included) before it is rolled
    /// back and refused: one minute, which a first program load under emulation stays within.
    #[serde(with = "humantime_serde_opt")]
    pub apply_timeout: Option<Duration>,
}

impl Default for FaultsConfig {
    fn default() -> Self {
        FaultsConfig {
            max_duration: Some(Duration::from_secs(3600)),
            default_duration: None,
            apply_timeout: Some(DEFAULT_APPLY_TIMEOUT),
        }
    }
}

const DEFAULT_APPLY_TIMEOUT: Duration = Duration::from_secs(60);

impl FaultsConfig {
    pub fn max_duration(&self) -> Duration {
        self.max_duration.unwrap_or(Duration::from_secs(3600))
    }

    pub fn apply_timeout(&self) -> Duration {
        self.apply_timeout.unwrap_or(DEFAULT_APPLY_TIMEOUT)
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Cgroups (paths under the cgroup2 mount) that no fault may target, nor a cgroup inside or
    /// above them. Default: init.scope, where systemd (PID 1) lives. The cgroup2 root, chaosd's
    /// own cgroup and PID 1's cgroup are refused whatever this says.
    pub protected_cgroups: Vec<String>,
    /// Refuse targets that are whole slices (a path ending in `.slice`): one fault there hits
    /// every service in it. Off by default.
    pub refuse_slices: bool,
    /// At most this many faults active at once; more are refused until some end.
    pub max_concurrent_faults: usize,
    /// What a host-wide target (`--host`) leaves out besides the protected cgroups: unit
    /// names (the last path component, e.g. "sshd.service") or cgroup paths ("/a/b"). Default:
    /// the SSH daemon, so an operator's session (its sockets belong to sshd.service) survives
    /// a host-wide partition.
    pub host_exclude: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            protected_cgroups: vec!["/init.scope".into()],
            refuse_slices: false,
            max_concurrent_faults: 64,
            host_exclude: vec!["sshd.service".into(), "ssh.service".into()],
        }
    }
}

impl Config {
    /// Parses a config file's text; errors carry the line and column.
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }
}

/// Durations as humantime strings ("30s", "1h").
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// The `[stress]` section of the daemon's config.
///
/// ```toml
/// [stress]
/// disk_floor_percent = 5.0   # disk.fill never leaves less than this share of the filesystem free
/// disk_floor = "1GiB"        # ... nor less than this; the larger of the two is the floor
/// allow_below_floor = false  # true: a request with allow_below_floor may cross the floor
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StressConfig {
    /// Share of the filesystem (0-100) that disk faults always leave free: 5 %.
    pub disk_floor_percent: f64,
    /// Bytes that disk faults always leave free: 1 GiB.
    #[serde(deserialize_with = "size_from_str")]
    pub disk_floor: u64,
    /// Whether a request's `allow_below_floor` is honoured. Off: the floor always holds.
    pub allow_below_floor: bool,
}

impl Default for StressConfig {
    fn default() -> Self {
        StressConfig {
            disk_floor_percent: 5.0,
            disk_floor: 1 << 30,
            allow_below_floor: false,
        }
    }
}

impl StressConfig {
    /// Bytes to keep free on a filesystem of `total` bytes: the larger of the two floors.
    pub fn floor_bytes(&self, total: u64) -> u64 {
        let pct = (total as f64 * self.disk_floor_percent.clamp(0.0, 100.0) / 100.0) as u64;
        pct.max(self.disk_floor)
    }
}

fn size_from_str<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SizeOrNumber {
        N(u64),
        S(String),
    }
    match SizeOrNumber::deserialize(d)? {
        SizeOrNumber::N(n) => Ok(n),
        SizeOrNumber::S(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// The `[remote]` section: a TCP listener speaking Chaos Mesh's PhysicalMachineChaos routes
/// (`/api/attack/...`) and chaosd's own `/v1` fault routes, behind mutual TLS
/// (`chaosd::daemon::remote`). Off unless `listen` is set.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteConfig {
    /// Address to listen on, e.g. "0.0.0.0:31768". Unset: no listener.
    pub listen: Option<std::net::SocketAddr>,
    /// PEM file with this host's certificate, then any intermediates.
    pub cert: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// PEM file with the CA certificate(s) that client certificates must chain to; a client
    /// without such a certificate is refused during the TLS handshake.
    pub client_ca: Option<PathBuf>,
    /// How long an attack lives when nobody recovers it: Chaos Mesh ends an attack with a
    /// DELETE and sends no duration, so this bounds an attack whose DELETE never comes (the
    /// controller gone, the experiment deleted while the host was unreachable). One hour; at
    /// most `faults.max_duration`.
    #[serde(with = "humantime_serde_opt")]
    pub max_duration: Option<Duration>,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            listen: None,
            cert: None,
            key: None,
            client_ca: None,
            max_duration: Some(DEFAULT_REMOTE_MAX_DURATION),
        }
    }
}

const DEFAULT_REMOTE_MAX_DURATION: Duration = Duration::from_secs(3600);

/// How the remote listener is to be served, once its section is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteListen {
    pub addr: std::net::SocketAddr,
    /// None: plain HTTP (loopback only, no TLS file named).
    pub tls: Option<RemoteTls>,
    /// The deadline of an attack that no recover call ends.
    pub max_duration: Duration,
}

/// The PEM files of the remote listener's mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// Why the `[remote]` section cannot be served; each says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RemoteConfigError {
    #[error(
        "remote.listen = \"{addr}\" is not a loopback address, so it needs mutual TLS: set \
         remote.cert, remote.key and remote.client_ca (PEM files; docs/chaos-mesh.md shows how \
         to make them); plain HTTP is served on 127.0.0.0/8 or [::1] only"
    )]
    PlainNotLoopback { addr: std::net::SocketAddr },
    #[error(
        "remote.{missing} is not set, but remote.{given} is: mutual TLS needs remote.cert, \
         remote.key and remote.client_ca together (or none of them, on a loopback address only)"
    )]
    Incomplete {
        missing: &'static str,
        given: &'static str,
    },
    #[error(
        "remote.max_duration ({remote}) is above faults.max_duration ({faults}): lower it, or \
         raise faults.max_duration"
    )]
    AboveMax { remote: String, faults: String },
    #[error("remote.max_duration must be above zero")]
    Zero,
}

impl RemoteConfig {
    pub fn max_duration(&self) -> Duration {
        self.max_duration.unwrap_or(DEFAULT_REMOTE_MAX_DURATION)
    }

    /// What to serve, if anything: mutual TLS with all three files, plain HTTP only on a
    /// loopback address with none of them; anything else is refused with what to fix.
    pub fn check(&self, faults: &FaultsConfig) -> Result<Option<RemoteListen>, RemoteConfigError> {
        let Some(addr) = self.listen else {
            return Ok(None);
        };
        let max_duration = self.max_duration();
        if max_duration.is_zero() {
            return Err(RemoteConfigError::Zero);
        }
        if max_duration > faults.max_duration() {
            let h = |d| humantime::format_duration(d).to_string();
            return Err(RemoteConfigError::AboveMax {
                remote: h(max_duration),
                faults: h(faults.max_duration()),
            });
        }
        let files = [
            ("cert", &self.cert),
            ("key", &self.key),
            ("client_ca", &self.client_ca),
        ];
        let given = files.iter().find(|(_, f)| f.is_some()).map(|(n, _)| *n);
        let missing = files.iter().find(|(_, f)| f.is_none()).map(|(n, _)| *n);
        let tls = match (given, missing) {
            (None, _) if addr.ip().is_loopback() => None,
            (None, _) => return Err(RemoteConfigError::PlainNotLoopback { addr }),
            (Some(given), Some(missing)) => {
                return Err(RemoteConfigError::Incomplete { missing, given });
            }
            (Some(_), None) => Some(RemoteTls {
                cert: self.cert.clone().unwrap_or_default(),
                key: self.key.clone().unwrap_or_default(),
                client_ca: self.client_ca.clone().unwrap_or_default(),
            }),
        };
        Ok(Some(RemoteListen {
            addr,
            tls,
            max_duration,
        }))
    }
}

/// The audit database's path when the config names none: `history.sqlite` in the state dir.
pub fn default_history_db(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("history.sqlite")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.faults.max_duration(), Duration::from_secs(3600));
        let c = Config::from_toml("[faults]\nmax_duration = \"10m\"\ndefault_duration = \"30s\"\n")
            .unwrap();
        assert_eq!(c.faults.max_duration(), Duration::from_secs(600));
        assert_eq!(c.faults.default_duration, Some(Duration::from_secs(30)));
    }

    #[test]
    fn metrics_listen_parses_as_an_address() {
        let c = Config::from_toml("[daemon]\nmetrics_listen = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(
            c.daemon.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert!(Config::from_toml("[daemon]\nmetrics_listen = \"localhost\"\n").is_err());
    }

    #[test]
    fn remote_is_off_by_default_and_needs_tls_off_loopback() {
        let faults = FaultsConfig::default();
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.remote.check(&faults), Ok(None));
        assert_eq!(c.remote.max_duration(), Duration::from_secs(3600));

        let plain = Config::from_toml("[remote]\nlisten = \"127.0.0.1:31768\"\n").unwrap();
        let served = plain.remote.check(&faults).unwrap().unwrap();
        assert_eq!(served.tls, None);

        let open = Config::from_toml("[remote]\nlisten = \"0.0.0.0:31768\"\n").unwrap();
        let e = open.remote.check(&faults).unwrap_err().to_string();
        assert!(
            e.contains("not a loopback address") && e.contains("remote.cert"),
            "{e}"
        );

        let half = Config::from_toml(
            "[remote]\nlisten = \"127.0.0.1:31768\"\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
        )
        .unwrap();
        let e = half.remote.check(&faults).unwrap_err().to_string();
        assert!(e.contains("remote.client_ca is not set"), "{e}");

        let full = Config::from_toml(
            "[remote]\nlisten = \"0.0.0.0:1\"\ncert = \"/c\"\nkey = \"/k\"\nclient_ca = \"/ca\"\n\
             max_duration = \"10m\"\n",
        )
        .unwrap();
        let served = full.remote.check(&faults).unwrap().unwrap();
        assert_eq!(served.max_duration, Duration::from_secs(600));
        assert_eq!(served.tls.unwrap().client_ca, PathBuf::from("/ca"));

        let long = Config::from_toml("[remote]\nlisten = \"127.0.0.1:1\"\nmax_duration = \"2h\"\n")
            .unwrap();
        let e = long.remote.check(&faults).unwrap_err().to_string();
        assert!(e.contains("above faults.max_duration"), "{e}");
    }

    #[test]
    fn errors_name_the_place() {
        let e = Config::from_toml("[faults]\nmax_duration = \"ten\"\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(Config::from_toml("[daemon]\nsockett = \"/x\"\n").is_err());
    }
}
