//! Idempotent toolchain bootstrap for building chaosd's eBPF programs.
//!
//! What it ensures, each checked first so a ready machine takes well under a second:
//! - the nightly toolchain and its `rust-src` component (for `-Z build-std=core`);
//! - `bpf-linker` 0.13 linked against the nightly's own libLLVM (see the shared toolchain notes),
//!   rebuilt when the nightly's libLLVM changes underneath it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{cargo_bin_dir, run_cmd};

const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    ensure_nightly()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    Ok(())
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args([format!("+{NIGHTLY}").as_str(), "--print", "sysroot"])
        .output()
        .context("running rustc +nightly")?;
    if !out.status.success() {
        bail!(
            "rustc +nightly failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn ensure_nightly() -> Result<()> {
    if nightly_sysroot().is_ok() {
        return Ok(());
    }
    eprintln!("setup: installing the nightly toolchain");
    run_cmd(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))
}

fn ensure_rust_src() -> Result<()> {
    let core = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the nightly toolchain");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// The nightly's own libLLVM shared object (the real file, not the linker-script alias).
fn nightly_libllvm() -> Result<PathBuf> {
    let lib = nightly_sysroot()?.join("lib");
    let found = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        });
    found.with_context(|| format!("no libLLVM.so.* in {}", lib.display()))
}

fn llvm_prefix() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/chaosd/llvm"))
}

fn bpf_linker_ok(libllvm: &Path) -> bool {
    let linker = cargo_bin_dir().join("bpf-linker");
    let version_ok = Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        });
    // The binary's rpath points at our symlink; it must still name the current nightly's libLLVM.
    let link_ok = llvm_prefix()
        .ok()
        .and_then(|p| fs::read_link(p.join("lib/libLLVM.so")).ok())
        .is_some_and(|target| target == libllvm);
    version_ok && link_ok
}

fn ensure_bpf_linker() -> Result<()> {
    let libllvm = nightly_libllvm()?;
    if bpf_linker_ok(&libllvm) {
        return Ok(());
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {} (about 3 minutes)",
        libllvm.display()
    );
    let prefix = llvm_prefix()?;
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let file_name = libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    for link in [lib.join("libLLVM.so"), lib.join(file_name)] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), libllvm.display()))?;
    }
    run_cmd(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "--force",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"]),
    )
}
