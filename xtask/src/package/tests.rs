//! The install plan against chaosd/Cargo.toml's deb assets, and a staged install with stand-in
//! binaries (no release build).

use std::{collections::BTreeSet, os::unix::fs::PermissionsExt as _};

use super::*;

/// chaosd/Cargo.toml's `[package.metadata.deb]`.
fn deb_metadata() -> toml::Value {
    let path = util::workspace_root().join("chaosd/Cargo.toml");
    let manifest: toml::Table = toml::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    manifest["package"]["metadata"]["deb"].clone()
}

/// An item as cargo-deb spells it: sources relative to chaosd/ (`target/release/` stands for
/// the real target dir), destinations relative to /, modes in octal.
fn as_deb_asset(item: &Item) -> [String; 3] {
    let source = match item.source {
        Source::Built(name) => format!("target/release/{name}"),
        Source::Generated(rel) => format!("target/release/dist/{rel}"),
        Source::Repo(rel) => format!("../{rel}"),
    };
    let dest = item.dest_dir.strip_prefix("/").unwrap().display();
    [source, format!("{dest}/"), format!("{:o}", item.mode)]
}

#[test]
fn deb_assets_are_the_install_plan_for_debian() {
    let deb = deb_metadata();
    let assets: BTreeSet<[String; 3]> = deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            std::array::from_fn(|i| a[i].as_str().unwrap().to_string())
        })
        .collect();
    let planned: BTreeSet<_> = plan(&Layout::debian()).iter().map(as_deb_asset).collect();
    assert_eq!(assets, planned);
    let conf_files: Vec<_> = deb["conf-files"].as_array().unwrap().iter().collect();
    assert_eq!(conf_files, [&toml::Value::from("/etc/chaosd/chaosd.toml")]);
}

#[test]
fn repository_sources_and_maintainer_scripts_exist() {
    let root = util::workspace_root();
    for item in plan(&Layout::debian()) {
        if let Source::Repo(rel) = item.source {
            assert!(root.join(rel).is_file(), "{rel} is missing");
        }
    }
    let scripts = deb_metadata()["maintainer-scripts"]
        .as_str()
        .unwrap()
        .to_string();
    for script in ["postinst", "prerm", "postrm"] {
        let path = root.join("chaosd").join(&scripts).join(script);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{} is not executable", path.display());
    }
}

#[test]
fn units_run_the_binaries_of_the_prefix() {
    let unit = fs::read_to_string(util::workspace_root().join("systemd/chaosd.service")).unwrap();
    let moved = with_bin_dir(&unit, Path::new("/opt/chaosd/bin")).unwrap();
    assert!(
        moved.contains("\nExecStart=/opt/chaosd/bin/chaosd\n"),
        "{moved}"
    );
    assert!(
        moved.contains("\nExecStopPost=/opt/chaosd/bin/chaosd --cleanup\n"),
        "{moved}"
    );
    assert_eq!(moved.lines().count(), unit.lines().count());
    let socket = fs::read_to_string(util::workspace_root().join("systemd/chaosd.socket")).unwrap();
    assert_eq!(with_bin_dir(&socket, Path::new("/x")).unwrap(), socket);
    assert!(with_bin_dir("[Service]\nExecStart=/bin/true\n", Path::new("/x")).is_err());
}

/// A stand-in for a built binary: answers `completions SHELL` and `__man --out-dir DIR` the
/// way chaosctl and chaosd do (their own tests check the real output).
fn fake_binary(dir: &Path, name: &str, page: &str) {
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\n\
         completions) echo \"# $2 completions for {name}\" ;;\n\
         __man) mkdir -p \"$3\" && echo '.TH {name}' > \"$3/{page}\" ;;\n\
         *) exit 2 ;;\nesac\n"
    );
    let path = dir.join(name);
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every regular file under `root`: its path relative to root and its mode.
fn staged_files(root: &Path) -> BTreeSet<(String, u32)> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                found.insert((rel, meta.permissions().mode() & 0o7777));
            }
        }
    }
    found
}

#[test]
fn install_stages_exactly_the_planned_files_and_keeps_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = tmp.path().join("release");
    fs::create_dir_all(&bin_dir).unwrap();
    fake_binary(&bin_dir, "chaosctl", "chaosctl.1");
    fake_binary(&bin_dir, "chaosd", "chaosd.8");
    let sources = Sources {
        generated: bin_dir.join("dist"),
        bin_dir,
        repo: util::workspace_root(),
    };
    let layout = Layout::under(Path::new("/usr"));
    generate(&sources, &layout.bin_dir()).unwrap();
    let root = tmp.path().join("root");
    install(&plan(&layout), &sources, &root).unwrap();

    let expected: BTreeSet<(String, u32)> = [
        ("usr/bin/chaosd", 0o755),
        ("usr/bin/chaosctl", 0o755),
        ("usr/lib/systemd/system/chaosd.service", 0o644),
        ("usr/lib/systemd/system/chaosd.socket", 0o644),
        ("usr/lib/sysusers.d/chaosd.conf", 0o644),
        ("usr/lib/tmpfiles.d/chaosd.conf", 0o644),
        ("usr/share/bash-completion/completions/chaosctl", 0o644),
        ("usr/share/zsh/site-functions/_chaosctl", 0o644),
        ("usr/share/fish/vendor_completions.d/chaosctl.fish", 0o644),
        ("usr/share/man/man1/chaosctl.1.gz", 0o644),
        ("usr/share/man/man8/chaosd.8.gz", 0o644),
        ("etc/chaosd/chaosd.toml", 0o644),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_string(), m))
    .collect();
    assert_eq!(staged_files(&root), expected);

    let read = |rel: &str| fs::read_to_string(root.join(rel)).unwrap();
    let unit = read("usr/lib/systemd/system/chaosd.service");
    assert!(unit.contains("\nExecStart=/usr/bin/chaosd\n"), "{unit}");
    let zsh = read("usr/share/zsh/site-functions/_chaosctl");
    assert_eq!(zsh, "# zsh completions for chaosctl\n");
    let page = fs::read(root.join("usr/share/man/man8/chaosd.8.gz")).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&page[..]), &mut text).unwrap();
    assert_eq!(text, ".TH chaosd\n");
    let shipped = fs::read_to_string(util::workspace_root().join(CONFIG)).unwrap();
    assert_eq!(read("etc/chaosd/chaosd.toml"), shipped);

    // A second install replaces everything but the admin's config.
    let config = root.join("etc/chaosd/chaosd.toml");
    fs::write(&config, "[faults]\nmax_duration = \"10m\"\n").unwrap();
    let done = install(&plan(&layout), &sources, &root).unwrap();
    let kept: Vec<_> = done
        .iter()
        .filter_map(|d| match d {
            Installed::Kept(p) => Some(p.clone()),
            Installed::Written(_) => None,
        })
        .collect();
    assert_eq!(kept, [config]);
    assert_eq!(
        read("etc/chaosd/chaosd.toml"),
        "[faults]\nmax_duration = \"10m\"\n"
    );
    assert_eq!(staged_files(&root), expected);
}
