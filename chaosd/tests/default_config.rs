//! The shipped default config (packaging/chaosd.toml, installed as /etc/chaosd/chaosd.toml)
//! goes through chaosd's real parser: it must load as is, every commented key must be a real
//! key with the built-in default, and every key chaosd knows must be listed.

use std::{collections::BTreeSet, time::Duration};

use chaosd::config::Config;

const SHIPPED: &str = include_str!("../../packaging/chaosd.toml");

/// `# key = value` lines of the file: the keys it documents.
fn is_commented_key(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("# ") else {
        return false;
    };
    rest.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

/// The file with every documented key switched on.
fn uncommented() -> String {
    SHIPPED
        .lines()
        .map(|l| if is_commented_key(l) { &l[2..] } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

/// (table, key) of every documented key.
fn documented_keys() -> BTreeSet<(String, String)> {
    let mut table = String::new();
    let mut keys = BTreeSet::new();
    for line in SHIPPED.lines() {
        if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = t.to_string();
        } else if is_commented_key(line) {
            let key = line[2..].split_once(" = ").unwrap().0;
            keys.insert((table.clone(), key.to_string()));
        }
    }
    keys
}

/// (table, key) of every field of `Config`, read from its derived pretty Debug output: tables
/// are the fields at depth 1, keys those at depth 2. A new config field shows up here without
/// anyone listing it.
fn known_keys() -> BTreeSet<(String, String)> {
    let debug = format!("{:#?}", Config::default());
    let mut table = String::new();
    let mut keys = BTreeSet::new();
    for line in debug.lines() {
        let depth = (line.len() - line.trim_start().len()) / 4;
        let Some((name, _)) = line.trim_start().split_once(": ") else {
            continue;
        };
        match depth {
            1 => table = name.to_string(),
            2 => {
                keys.insert((table.clone(), name.to_string()));
            }
            _ => {}
        }
    }
    keys
}

#[test]
fn the_shipped_file_loads_as_the_defaults() {
    assert_eq!(Config::from_toml(SHIPPED).unwrap(), Config::default());
}

#[test]
fn every_documented_key_is_real_and_shows_its_default() {
    let text = uncommented();
    let parsed = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // Keys unset by default are documented with an example value.
    let mut expected = Config::default();
    expected.daemon.metrics_listen = Some("127.0.0.1:9464".parse().unwrap());
    expected.daemon.history_db = Some(chaosd::host::directories::HISTORY_DB.into());
    expected.faults.default_duration = Some(Duration::from_secs(60));
    expected.remote.listen = Some("0.0.0.0:31768".parse().unwrap());
    expected.remote.cert = Some("/etc/chaosd/tls/server.crt".into());
    expected.remote.key = Some("/etc/chaosd/tls/server.key".into());
    expected.remote.client_ca = Some("/etc/chaosd/tls/ca.crt".into());
    assert_eq!(parsed, expected);
}

#[test]
fn every_key_chaosd_knows_is_documented() {
    let known = known_keys();
    assert!(
        known.len() >= 10,
        "reading Config's Debug output failed: {known:?}"
    );
    assert_eq!(documented_keys(), known);
}

#[test]
fn a_misspelled_key_is_refused() {
    let text = uncommented().replace("refuse_slices", "refuse_slice");
    let e = Config::from_toml(&text).unwrap_err();
    assert!(e.to_string().contains("refuse_slice"), "{e}");
}
