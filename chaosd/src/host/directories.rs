//! Every path chaosd uses by default, matching the systemd unit's directories.

/// RuntimeDirectory=chaosd: the API socket.
pub const SOCKET: &str = "/run/chaosd/chaosd.sock";
/// RuntimeDirectory=chaosd: the journal of active faults (gone at reboot, like the faults).
pub const STATE_DIR: &str = "/run/chaosd";
/// StateDirectory=chaosd: the audit trail (`chaosctl history`), which outlives reboots.
pub const HISTORY_DB: &str = "/var/lib/chaosd/history.sqlite";
/// ConfigurationDirectory=chaosd.
pub const CONFIG: &str = "/etc/chaosd/chaosd.toml";
