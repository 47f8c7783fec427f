//! Host directories shared into the guest at their own absolute paths.
//!
//! The guest sees the host `/` read-only over 9p, but stage 1 mounts tmpfs over `/run` and
//! `/tmp`, and stage 2 mounts devtmpfs, proc and sysfs, so a checkout or a `CARGO_TARGET_DIR`
//! under those would be invisible. The workspace root and the target dir (and, for the harness
//! self-test, the manifest's) are therefore each shared by a 9p mount of their own, mounted
//! read-only at the same path after the tmpfs mounts: the test executables, the daemon binaries
//! next to them and the package dirs the tests run from are where the host has them.
//!
//! What still cannot work is refused before anything is built ([`Shares::detect`]): a path under
//! `/proc`, `/sys` or `/dev` (stage 2 mounts over them), the guest's work dir, or a path stage 1
//! cannot name (not UTF-8, a newline, trailing whitespace).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::initramfs::GUEST_WORK;

/// Name of the share list in the work dir: one `<mount tag> <absolute path>` line per share.
/// It has a dot, so no test binary's report dir (a cargo target name) can be called that.
pub const SHARES_FILE: &str = "shares.list";

/// Host paths the guest mounts over, so a share there would be hidden again (or hide them).
const UNSHAREABLE: &[&str] = &["/proc", "/sys", "/dev"];

/// Paths the guest hides behind its own tmpfs: what a share must cover.
const HIDDEN: &[&str] = &["/tmp", "/run"];

/// One host directory and its 9p mount tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub path: PathBuf,
}

/// The directories shared with every boot of one run.
#[derive(Debug, Clone, Default)]
pub struct Shares(Vec<Share>);

impl Shares {
    /// The workspace root and target dir of xtask's workspace and of `manifest` (harness
    /// self-test), canonical and without nesting; fails when one of them cannot be shared.
    pub fn detect(workspace_root: &Path, manifest: Option<&Path>) -> Result<Self> {
        let mut dirs = Vec::new();
        for manifest in [Some(workspace_root.join("Cargo.toml").as_path()), manifest]
            .into_iter()
            .flatten()
        {
            let (root, target) = cargo_dirs(manifest)?;
            dirs.extend([root, target]);
        }
        Self::from_dirs(dirs)
    }

    fn from_dirs(dirs: Vec<PathBuf>) -> Result<Self> {
        let mut dirs = dirs
            .into_iter()
            .map(|d| canonical_even_if_missing(&d))
            .collect::<Result<Vec<_>>>()?;
        for d in &dirs {
            check_shareable(d)?;
        }
        dirs.sort();
        dirs.dedup();
        // Sorted, a dir comes before everything inside it; keep only the outermost.
        let mut outer: Vec<PathBuf> = Vec::new();
        for d in dirs {
            if !outer.iter().any(|o| d.starts_with(o)) {
                outer.push(d);
            }
        }
        Ok(Self(
            outer
                .into_iter()
                .enumerate()
                .map(|(i, path)| Share {
                    tag: format!("share{i}"),
                    path,
                })
                .collect(),
        ))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Share> {
        self.0.iter()
    }

    /// The share list stage 1 reads from the work dir.
    pub fn list_file(&self) -> String {
        let mut out = String::new();
        for s in &self.0 {
            let _ = writeln!(out, "{} {}", s.tag, s.path.display());
        }
        out
    }

    /// Fails when the guest would not see `path` (a test executable, its package dir): hidden
    /// by the guest's tmpfs and not inside a share.
    pub fn check_visible(&self, path: &Path) -> Result<()> {
        if self.0.iter().any(|s| path.starts_with(&s.path)) {
            return Ok(());
        }
        if let Some(h) = HIDDEN
            .iter()
            .chain(UNSHAREABLE)
            .find(|h| path.starts_with(h))
        {
            bail!(
                "{} is under {h}, which the VM guest mounts over, and outside the shared \
                 workspace and target dirs ({}); move it elsewhere",
                path.display(),
                self.0
                    .iter()
                    .map(|s| s.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(())
    }
}

/// `cargo metadata`'s workspace root and target dir for `manifest` (no build, no network).
fn cargo_dirs(manifest: &Path) -> Result<(PathBuf, PathBuf)> {
    let out = Command::new("cargo")
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata --manifest-path {} failed: {}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let field = |name: &str| {
        meta[name]
            .as_str()
            .map(PathBuf::from)
            .with_context(|| format!("cargo metadata has no {name}"))
    };
    Ok((field("workspace_root")?, field("target_directory")?))
}

/// `dir` without symlinks; a target dir that does not exist yet (nothing built) is its nearest
/// existing ancestor's canonical path plus the rest.
fn canonical_even_if_missing(dir: &Path) -> Result<PathBuf> {
    let mut existing = dir;
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            return Ok(rest.iter().rev().fold(canonical, |p, c| p.join(c)));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => bail!("cannot resolve {}", dir.display()),
        }
    }
}

/// Refuses what stage 1 cannot mount at the same path in the guest.
fn check_shareable(dir: &Path) -> Result<()> {
    let Some(text) = dir.to_str() else {
        bail!(
            "{} is not valid UTF-8: the VM guest cannot mount it; use a plain path",
            dir.display()
        );
    };
    if text.contains('\n') || text.ends_with(char::is_whitespace) {
        bail!("{text:?} has a newline or trailing whitespace: the VM guest cannot mount it");
    }
    if dir == Path::new("/") {
        bail!("the workspace or target dir is /: share a directory below it");
    }
    if let Some(p) = UNSHAREABLE.iter().find(|p| dir.starts_with(p)) {
        bail!(
            "{text} is under {p}, which the VM guest mounts its own {p} over: move the \
             checkout or CARGO_TARGET_DIR elsewhere (/tmp works)"
        );
    }
    let work = Path::new(GUEST_WORK);
    if dir.starts_with(work) || work.starts_with(dir) {
        bail!("{text} overlaps the VM guest's work dir {GUEST_WORK}: move it elsewhere");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_dirs_share_once_and_bad_places_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("clone");
        let target = root.join("target");
        let other = tmp.path().join("tgt");
        for d in [&target, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        let shares = Shares::from_dirs(vec![
            target.clone(),
            root.clone(),
            other.clone(),
            root.clone(),
        ])
        .unwrap();
        let paths: Vec<_> = shares.iter().map(|s| s.path.clone()).collect();
        let (root, other) = (root.canonicalize().unwrap(), other.canonicalize().unwrap());
        assert_eq!(paths, vec![root.clone(), other.clone()]);
        assert_eq!(
            shares.list_file(),
            format!("share0 {}\nshare1 {}\n", root.display(), other.display())
        );
        shares.check_visible(&root.join("target/debug/x")).unwrap();
        shares.check_visible(Path::new("/usr/bin/true")).unwrap();
        assert!(shares.check_visible(Path::new("/tmp/elsewhere/x")).is_err());
        assert!(check_shareable(Path::new("/dev/shm/clone")).is_err());
        assert!(check_shareable(Path::new("/run/chaosd-vm/x")).is_err());
        assert!(check_shareable(Path::new("/run")).is_err());
        assert!(check_shareable(Path::new("/tmp/a b")).is_ok());
        assert!(check_shareable(Path::new("/tmp/a\nb")).is_err());
        let missing = tmp.path().join("not/yet");
        assert_eq!(
            canonical_even_if_missing(&missing).unwrap(),
            tmp.path().canonicalize().unwrap().join("not/yet")
        );
        assert!(!missing.exists());
    }
}
