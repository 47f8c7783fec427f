//! Builds chaosd-ebpf for bpfel-unknown-none with the nightly toolchain and bpf-linker
//! (`cargo xtask setup` installs both); the ELF lands in OUT_DIR and is embedded by the daemon.

fn main() -> anyhow::Result<()> {
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
