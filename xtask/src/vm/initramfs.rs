//! A minimal initramfs per kernel, cached as `target/vm/initramfs-<release>-v<N>.cpio`.
//!
//! Contents: static busybox, `/dev/console`, the kernel's 9p/virtio modules (decompressed on the
//! host, since busybox `insmod` may not read `.ko.xz`/`.ko.zst`) in dependency order, and
//! [`INIT`]: it mounts the host `/` read-only over 9p (tag `hostroot`), tmpfs on its `/run` and
//! `/tmp`, the work dir (tag `work`) at [`GUEST_WORK`], then each share listed in the work dir's
//! `shares.list` (the workspace root and target dir, see [`super::shares`]) read-only at its own
//! host path, so a checkout under `/tmp` is visible; then it `switch_root`s into the host root to
//! run `stage2.sh` from the work dir. Any failure writes [`STAGE1_FAILED`] to the exit port.
//! The archive is uncompressed `newc` cpio, which every Debian kernel accepts.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::install::Kernel;

/// Bump when the contents change so cached images are rebuilt.
const FORMAT: u32 = 3;

/// Where the guest sees the work dir (after `switch_root`).
pub const GUEST_WORK: &str = "/run/chaosd-vm";

/// Code the guest writes to the isa-debug-exit port when stage 1 fails.
pub const STAGE1_FAILED: u8 = 0x12;

/// Modules needed to reach the 9p shares; their dependencies are added from modules.dep.
const MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

/// Stage 1, `/init`.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() {
    echo "chaosd-vm stage 1: $*"
    printf '\022' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    poweroff -f
}
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
mount -t proc proc /proc || fail "mount /proc"
for m in $(cat /modules.order); do
    insmod "/modules/$m" || fail "insmod $m"
done
opts=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$opts,ro,cache=loose" hostroot /newroot || fail "mount hostroot"
mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "mount /run"
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp || fail "mount /tmp"
mkdir -p /newroot/run/chaosd-vm
mount -t 9p -o "$opts" work /newroot/run/chaosd-vm || fail "mount work"
[ -f /newroot/run/chaosd-vm/stage2.sh ] || fail "no stage2.sh in the work dir"
[ -f /newroot/run/chaosd-vm/shares.list ] || fail "no shares.list in the work dir"
# The workspace and target dirs at their host paths, over the tmpfs (one "<tag> <path>" a line).
while read -r tag dir; do
    [ -d "/newroot$dir" ] || mkdir -p "/newroot$dir" || fail "mkdir $dir"
    mount -t 9p -o "$opts,ro,cache=loose" "$tag" "/newroot$dir" || fail "mount $tag at $dir"
done < /newroot/run/chaosd-vm/shares.list
umount /proc
umount /dev
exec switch_root /newroot /bin/busybox sh /run/chaosd-vm/stage2.sh
fail "switch_root"
"#;

/// Returns the cached initramfs for `kernel`, building it first if missing.
pub fn ensure(vm_dir: &Path, kernel: &Kernel) -> Result<PathBuf> {
    let path = vm_dir.join(format!("initramfs-{}-v{FORMAT}.cpio", kernel.release));
    if path.exists() {
        return Ok(path);
    }
    fs::create_dir_all(vm_dir).with_context(|| format!("creating {}", vm_dir.display()))?;
    let modules_dir = Path::new("/lib/modules").join(&kernel.release);
    let order = module_load_order(&modules_dir)?;
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "newroot", "modules"] {
        cpio.dir(dir);
    }
    cpio.char_dev("dev/console", 5, 1);
    cpio.file("bin/busybox", 0o755, &read("/bin/busybox")?);
    cpio.file("init", 0o755, INIT.as_bytes());
    let mut names = String::new();
    for rel in &order {
        let ko = decompress(&modules_dir.join(rel))?;
        let name = format!("{}.ko", module_name(rel));
        cpio.file(&format!("modules/{name}"), 0o644, &ko);
        names.push_str(&name);
        names.push('\n');
    }
    cpio.file("modules.order", 0o644, names.as_bytes());
    let tmp = path.with_extension("cpio.tmp");
    fs::write(&tmp, cpio.finish()).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    println!(
        "vm-test: built {} ({} modules)",
        path.display(),
        order.len()
    );
    Ok(path)
}

fn read(path: &str) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {path}"))
}

/// `kernel/fs/9p/9p.ko.xz` → `9p`; `-` and `_` are the same in module names.
fn module_name(rel: &str) -> String {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    base.split(".ko").next().unwrap_or(base).replace('-', "_")
}

/// Paths (relative to the modules dir) of [`MODULES`] and their dependencies, dependencies
/// first. Modules built into the kernel (modules.builtin) are skipped.
fn module_load_order(modules_dir: &Path) -> Result<Vec<String>> {
    let dep_file = modules_dir.join("modules.dep");
    let text =
        fs::read_to_string(&dep_file).with_context(|| format!("reading {}", dep_file.display()))?;
    let deps = parse_modules_dep(&text);
    let builtin = fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: HashSet<String> = builtin.lines().map(module_name).collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for name in MODULES {
        if builtin.contains(*name) {
            continue;
        }
        let Some((path, _)) = deps.iter().find(|(p, _)| module_name(p) == *name) else {
            bail!(
                "module {name} is neither in {} nor built in",
                dep_file.display()
            );
        };
        visit(path, &deps, &mut seen, &mut order);
    }
    Ok(order)
}

fn parse_modules_dep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(module, deps)| {
            let deps = deps.split_whitespace().map(str::to_owned).collect();
            (module.to_owned(), deps)
        })
        .collect()
}

/// Depth-first post-order: every module after its dependencies.
fn visit(
    path: &str,
    deps: &BTreeMap<String, Vec<String>>,
    seen: &mut HashSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(path.to_owned()) {
        return;
    }
    for dep in deps.get(path).into_iter().flatten() {
        visit(dep, deps, seen, order);
    }
    order.push(path.to_owned());
}

/// A module's ELF bytes, decompressed with the matching CLI tool when needed.
fn decompress(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => return fs::read(path).with_context(|| format!("reading {}", path.display())),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} -dc {}", path.display()))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed: {}", path.display(), out.status);
    }
    Ok(out.stdout)
}

/// Writer for the cpio "newc" format (what the kernel unpacks into its rootfs).
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    next_ino: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | perm, (0, 0), data);
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, (major, minor), &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let size = u32::try_from(data.len()).expect("initramfs files are far below 4 GiB");
        let name_size = u32::try_from(name.len() + 1).expect("short names");
        let fields = [
            self.next_ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            size,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name_size,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_order_puts_dependencies_first() {
        let deps = parse_modules_dep(
            "kernel/fs/9p/9p.ko.xz: kernel/fs/netfs/netfs.ko.xz kernel/net/9p/9pnet.ko.xz\n\
             kernel/fs/netfs/netfs.ko.xz:\n\
             kernel/net/9p/9pnet.ko.xz:\n",
        );
        let (mut seen, mut order) = (HashSet::new(), Vec::new());
        visit("kernel/fs/9p/9p.ko.xz", &deps, &mut seen, &mut order);
        assert_eq!(order.last().unwrap(), "kernel/fs/9p/9p.ko.xz");
        assert_eq!(order.len(), 3);
        assert_eq!(
            module_name("kernel/net/9p/9pnet_virtio.ko.zst"),
            "9pnet_virtio"
        );
    }

    #[test]
    fn init_reads_the_share_list() {
        let list = format!("{GUEST_WORK}/{}", super::super::shares::SHARES_FILE);
        assert_eq!(INIT.matches(&list).count(), 2, "{INIT}");
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let mut c = Cpio::default();
        c.file("init", 0o755, b"abc");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
    }
}
