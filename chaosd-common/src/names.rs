//! Every program and map name the daemon looks up in chaosd's eBPF object, in one place.
//!
//! The eBPF side defines each program as a function and each map as a static of the same name;
//! a test of the daemon (`kernel::tests`) opens the built object and checks that every name
//! here is in it, in a section of the expected program type, so the two sides cannot drift.

/// cgroup_skb egress: loss, partition, delay, bandwidth.
pub const NET_EGRESS: &str = "chaosd_net_egress";
/// cgroup_skb ingress: loss, partition.
pub const NET_INGRESS: &str = "chaosd_net_ingress";
/// cgroup sock_addr connect4/connect6/sendmsg4/sendmsg6: connect errors.
pub const CONNECT4: &str = "chaosd_connect4";
pub const CONNECT6: &str = "chaosd_connect6";
pub const SENDMSG4: &str = "chaosd_sendmsg4";
pub const SENDMSG6: &str = "chaosd_sendmsg6";
/// The same four hooks for kernels without `bpf_set_retval` (before 5.19): a rejected connect
/// or send fails with EPERM, the only errno those kernels give.
pub const CONNECT4_EPERM: &str = "chaosd_connect4_eperm";
pub const CONNECT6_EPERM: &str = "chaosd_connect6_eperm";
pub const SENDMSG4_EPERM: &str = "chaosd_sendmsg4_eperm";
pub const SENDMSG6_EPERM: &str = "chaosd_sendmsg6_eperm";
/// The transparent proxy (`tcp.*`): cgroup connect4 redirects, sock_ops records the client's
/// local port, getpeername4 answers with the original destination.
pub const PROXY_CONNECT4: &str = "chaosd_proxy_connect4";
pub const PROXY_SOCK_OPS: &str = "chaosd_proxy_sock_ops";
pub const PROXY_GETPEERNAME4: &str = "chaosd_proxy_getpeername4";
pub const PROXY_CONNECT6: &str = "chaosd_proxy_connect6";
pub const PROXY_GETPEERNAME6: &str = "chaosd_proxy_getpeername6";
/// DNS faults (`dns.*`), on top of the proxy's programs: sendmsg4/6 redirect unconnected UDP
/// queries to chaosd's resolver, recvmsg4/6 show its replies as from the original server.
pub const DNS_SENDMSG4: &str = "chaosd_dns_sendmsg4";
pub const DNS_SENDMSG6: &str = "chaosd_dns_sendmsg6";
pub const DNS_RECVMSG4: &str = "chaosd_dns_recvmsg4";
pub const DNS_RECVMSG6: &str = "chaosd_dns_recvmsg6";
/// TC egress classifier: corrupt, duplicate.
pub const TC_EGRESS: &str = "chaosd_tc_egress";
/// tp_btf/sched_process_exec: clock skew of processes exec'd later.
pub const CLOCK_EXEC: &str = "chaosd_clock_exec";
/// BPF LSM programs of io.errno, one per hook.
pub const IO_FILE_OPEN: &str = "chaosd_io_file_open";
pub const IO_FILE_PERMISSION: &str = "chaosd_io_file_permission";
pub const IO_INODE_CREATE: &str = "chaosd_io_inode_create";
pub const IO_INODE_UNLINK: &str = "chaosd_io_inode_unlink";
pub const IO_INODE_RENAME: &str = "chaosd_io_inode_rename";
pub const IO_INODE_MKDIR: &str = "chaosd_io_inode_mkdir";
pub const IO_INODE_RMDIR: &str = "chaosd_io_inode_rmdir";
pub const IO_PATH_TRUNCATE: &str = "chaosd_io_path_truncate";
pub const IO_FILE_TRUNCATE: &str = "chaosd_io_file_truncate";

/// Every program with the ELF section prefix of its type.
pub const PROGRAMS: &[(&str, &str)] = &[
    (NET_EGRESS, "cgroup_skb/egress"),
    (NET_INGRESS, "cgroup_skb/ingress"),
    (CONNECT4, "cgroup/connect4"),
    (CONNECT6, "cgroup/connect6"),
    (SENDMSG4, "cgroup/sendmsg4"),
    (SENDMSG6, "cgroup/sendmsg6"),
    (CONNECT4_EPERM, "cgroup/connect4"),
    (CONNECT6_EPERM, "cgroup/connect6"),
    (SENDMSG4_EPERM, "cgroup/sendmsg4"),
    (SENDMSG6_EPERM, "cgroup/sendmsg6"),
    (PROXY_CONNECT4, "cgroup/connect4"),
    (PROXY_SOCK_OPS, "sockops"),
    (PROXY_GETPEERNAME4, "cgroup/getpeername4"),
    (PROXY_CONNECT6, "cgroup/connect6"),
    (PROXY_GETPEERNAME6, "cgroup/getpeername6"),
    (DNS_SENDMSG4, "cgroup/sendmsg4"),
    (DNS_SENDMSG6, "cgroup/sendmsg6"),
    (DNS_RECVMSG4, "cgroup/recvmsg4"),
    (DNS_RECVMSG6, "cgroup/recvmsg6"),
    (TC_EGRESS, "classifier"),
    (CLOCK_EXEC, "tp_btf"),
    (IO_FILE_OPEN, "lsm"),
    (IO_FILE_PERMISSION, "lsm"),
    (IO_INODE_CREATE, "lsm"),
    (IO_INODE_UNLINK, "lsm"),
    (IO_INODE_RENAME, "lsm"),
    (IO_INODE_MKDIR, "lsm"),
    (IO_INODE_RMDIR, "lsm"),
    (IO_PATH_TRUNCATE, "lsm"),
    (IO_FILE_TRUNCATE, "lsm"),
];

/// Every map the daemon takes from the object.
pub const MAPS: &[&str] = &[
    crate::counters::FAULT_COUNTERS_MAP,
    crate::heartbeat::HEARTBEAT_MAP,
    crate::net::NET_RULES_MAP,
    crate::net::NET_PACING_MAP,
    crate::net::NET_LEVELS_MAP,
    crate::proxy::PROXY_ORIGINS_MAP,
    crate::proxy::PROXY_PEERS_MAP,
    crate::io::IO_RULES_MAP,
    crate::io::IO_OP_COUNTERS_MAP,
    crate::clock::CLOCK_TARGETS_MAP,
    crate::clock::CLOCK_EXEC_EVENTS_MAP,
];
