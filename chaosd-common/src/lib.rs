//! `#[repr(C)]` types shared by chaosd's eBPF programs (`chaosd-ebpf`) and its daemon.
//!
//! One module per fault kind. Every type here is plain data with explicit padding and a
//! compile-time size check, because both sides read the same bytes from BPF maps.
//! The `user` feature adds `aya::Pod` impls for the daemon side.
#![no_std]

pub mod clock;
pub mod counters;
pub mod heartbeat;
pub mod io;
pub mod net;
