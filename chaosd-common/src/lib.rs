//! `#[repr(C)]` types shared by chaosd's eBPF programs (`chaosd-ebpf`) and its daemon.
//!
//! One module per fault kind. Every type here is plain data with explicit padding and a
//! compile-time size check, because both sides read the same bytes from BPF maps.
//! The `user` feature adds `aya::Pod` impls for the daemon side, and [`btf`]: the reader of
//! the kernel's BTF that gives the I/O programs their struct offsets (here so it is built
//! optimised even in debug builds: the daemon parses several MB of BTF at every start).
// no_std for the eBPF side; the daemon's side (`user`) also gets the BTF reader, which needs std.
#![cfg_attr(not(feature = "user"), no_std)]

#[cfg(feature = "user")]
pub mod btf;

pub mod ancestry;
pub mod clock;
pub mod counters;
pub mod heartbeat;
pub mod io;
pub mod names;
pub mod net;
pub mod proxy;
