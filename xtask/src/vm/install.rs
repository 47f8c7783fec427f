//! Installs qemu, static busybox and the Debian kernel images the VM suite boots, and finds the
//! kernels in /boot at run time (the ABI string changes with every security update).
//!
//! Everything is checked first, so a ready machine costs a few `stat`s and one `dpkg-query`.
//! qemu comes from bookworm-backports (the image ships backports' qemu-utils, which breaks
//! bookworm's qemu-system-common), the 6.12 kernel from bookworm-security, the 5.10 kernel from
//! bullseye-security (Debian 11; its Release files are signed by keys in the bookworm archive
//! keyring). Rather than editing the system's apt sources, apt runs with an extra source list
//! (backports, plus bullseye-security when 5.10 is wanted) and its own lists dir under
//! `target/vm/apt/`: the system's sources and lists stay untouched, and dpkg records the
//! installed packages as usual. A bullseye kernel's dependencies (kmod, linux-base,
//! initramfs-tools) resolve to bookworm's newer versions, so nothing is downgraded.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result};

use crate::util::{run_cmd, workspace_root};

/// Host tools the harness needs, with a file each package provides.
const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("busybox-static", "/bin/busybox"),
    // Debian's kernel modules are .ko.xz; the initramfs build decompresses them.
    ("xz-utils", "/usr/bin/xz"),
];

/// The extra apt sources, signed by archive keys the system already has: bookworm-backports,
/// and bullseye-security for the 5.10 kernel.
const BACKPORTS: &str = "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                         http://deb.debian.org/debian bookworm-backports main\n";
const BULLSEYE_SECURITY: &str = "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                                 http://deb.debian.org/debian-security bullseye-security main\n";

/// A bootable kernel: its series (`6.12`), release (`uname -r`) and image.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub series: String,
    pub release: String,
    pub image: PathBuf,
}

/// Installs whatever of qemu, busybox-static and the kernels of `series` is missing.
pub fn ensure_packages(series: &[&str]) -> Result<()> {
    let missing_tools: Vec<String> = TOOLS
        .iter()
        .filter(|(pkg, file)| !Path::new(file).exists() || !dpkg_installed(pkg))
        .map(|(pkg, _)| (*pkg).to_owned())
        .collect();
    let missing_kernels: Vec<&str> = series
        .iter()
        .copied()
        .filter(|s| find_kernel(s).is_err())
        .collect();
    if missing_tools.is_empty() && missing_kernels.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    println!("vm-test: installing {missing_tools:?} and kernels {missing_kernels:?}");
    let apt = Apt::new(missing_kernels.contains(&"5.10"))?;
    apt.update()?;
    if !missing_tools.is_empty() {
        // From backports: this image already has qemu-utils 10 from there, which Breaks the
        // bookworm qemu-system-common 7.2.
        apt.install(Some("bookworm-backports"), &missing_tools)?;
    }
    let kernels = missing_kernels
        .iter()
        .map(|s| match *s {
            // bookworm's own kernel: the metapackage follows its security updates.
            "6.1" => Ok("linux-image-amd64".to_owned()),
            // 6.12 is published for bookworm in bookworm-security (and backports); 5.10 (Debian
            // 11) in bullseye-security.
            other => apt.newest_kernel_package(other),
        })
        .collect::<Result<Vec<_>>>()?;
    if !kernels.is_empty() {
        apt.install(None, &kernels)?;
    }
    for s in series {
        find_kernel(s).with_context(|| format!("kernel {s} still missing after installing"))?;
    }
    println!("vm-test: installed in {:.1?}", started.elapsed());
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

/// apt-get with the system's sources plus bookworm-backports (and bullseye-security) and a
/// private lists dir.
struct Apt {
    options: Vec<String>,
}

impl Apt {
    fn new(bullseye: bool) -> Result<Self> {
        let dir = workspace_root().join("target/vm/apt");
        let lists = dir.join("lists");
        fs::create_dir_all(lists.join("partial"))
            .with_context(|| format!("creating {}", lists.display()))?;
        let source_list = dir.join("extra.list");
        let mut sources = BACKPORTS.to_owned();
        if bullseye {
            sources.push_str(BULLSEYE_SECURITY);
        }
        fs::write(&source_list, sources)
            .with_context(|| format!("writing {}", source_list.display()))?;
        let options = vec![
            format!("Dir::Etc::SourceList={}", source_list.display()),
            format!("Dir::State::Lists={}", lists.display()),
        ];
        Ok(Self { options })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("apt-get");
        for o in &self.options {
            cmd.args(["-o", o]);
        }
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            // Debian's kernel postinst hook skips building an initrd when INITRD=No.
            .env("INITRD", "No");
        cmd
    }

    fn update(&self) -> Result<()> {
        run_cmd(&mut self.command(&["update", "-q"]))
    }

    /// `apt-get install`, preferring `target_release` (`-t`) when given.
    fn install(&self, target_release: Option<&str>, packages: &[String]) -> Result<()> {
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        if let Some(release) = target_release {
            args.extend(["-t", release]);
        }
        args.extend(packages.iter().map(String::as_str));
        run_cmd(&mut self.command(&args))
    }

    /// The newest generic amd64 image package of a series, e.g. `linux-image-6.12.48+deb12-amd64`.
    fn newest_kernel_package(&self, series: &str) -> Result<String> {
        let mut cmd = Command::new("apt-cache");
        for o in &self.options {
            cmd.args(["-o", o]);
        }
        let prefix = format!("linux-image-{series}.");
        let out = cmd
            .args(["pkgnames", &prefix])
            .output()
            .context("running apt-cache pkgnames")?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|name| is_generic_amd64(name.trim_start_matches("linux-image-")))
            .max_by_key(|name| version_key(name))
            .map(str::to_owned)
            .with_context(|| format!("no {prefix}*-amd64 package in the apt sources"))
    }
}

/// A generic kernel flavour: not cloud (no 9p), rt, debug or unsigned.
fn is_generic_amd64(release: &str) -> bool {
    release.ends_with("-amd64")
        && !["cloud", "-rt-", "dbg", "unsigned"]
            .iter()
            .any(|x| release.contains(x))
}

/// Numeric parts of a kernel release, for ordering: `6.1.0-41-amd64` → [6, 1, 0, 41].
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The newest installed kernel of a series (`6.12`, `6.1` or `5.10`) that has its modules.
pub fn find_kernel(series: &str) -> Result<Kernel> {
    let entries = fs::read_dir("/boot").context("reading /boot")?;
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| f.strip_prefix("vmlinuz-").map(str::to_owned))
        .filter(|r| in_series(r, series) && is_generic_amd64(r))
        .filter(|r| {
            Path::new("/lib/modules")
                .join(r)
                .join("modules.dep")
                .exists()
        })
        .max_by_key(|r| version_key(r))
        .map(|release| Kernel {
            series: series.to_owned(),
            image: PathBuf::from(format!("/boot/vmlinuz-{release}")),
            release,
        })
        .with_context(|| format!("no /boot/vmlinuz-{series}.*-amd64 with modules installed"))
}

/// `6.1.0-41-amd64` is in 6.1; `6.12.48+deb12-amd64` is in 6.12 but not in 6.1.
fn in_series(release: &str, series: &str) -> bool {
    release
        .strip_prefix(series)
        .is_some_and(|rest| rest.starts_with(['.', '-', '+']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_and_flavours() {
        assert!(in_series("6.1.0-41-amd64", "6.1"));
        assert!(!in_series("6.12.48+deb12-amd64", "6.1"));
        assert!(in_series("6.12.48+deb12-amd64", "6.12"));
        assert!(is_generic_amd64("6.12.48+deb12-amd64"));
        assert!(!is_generic_amd64("6.12.48+deb12-cloud-amd64"));
        assert!(!is_generic_amd64("6.12.48+deb12-rt-amd64"));
        assert!(version_key("6.1.0-41-amd64") > version_key("6.1.0-9-amd64"));
        assert!(in_series("5.10.0-46-amd64", "5.10"));
        assert!(!in_series("5.10.0-46-amd64", "5.1"));
    }
}
