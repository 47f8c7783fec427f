//! Builds chaosd-ebpf for bpfel-unknown-none with the nightly toolchain and bpf-linker
//! (`cargo xtask setup` installs both); the ELF lands in OUT_DIR and is embedded by the daemon.

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=CARGO_CFG_FUZZING");
    // cargo-fuzz builds with `--cfg fuzzing`. The fuzz targets check requests and scenarios and
    // never load programs, so they get an empty placeholder instead of the nightly eBPF build,
    // which took 5 of the fuzz build's 13 minutes on CI's machine.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("chaosd-ebpf");
        std::fs::write(&out, [])?;
        return Ok(());
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../chaosd-ebpf");
    println!("cargo:rerun-if-changed=../chaosd-common/src");
    let package = aya_build::Package {
        name: "chaosd-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly).map_err(|e| {
        anyhow::anyhow!(
            "building chaosd's eBPF programs failed: {e:#}\n\
             hint: run `cargo xtask setup` (nightly rust-src and bpf-linker) first"
        )
    })
}
