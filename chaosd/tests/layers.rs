//! The top-level modules of `chaosd/src` are layers: each may use only the ones below it, so
//! there is no import cycle between them (docs/architecture.md). A `use crate::x` (or a
//! `crate::x::...` path) that reaches up a layer fails here with the file that does it.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// Bottom to top. `lib.rs` and the binaries (`bin/`) sit above all of them.
const LAYERS: &[&str] = &[
    "error", "api", "host", "config", "client", "faults", "engine", "scenario", "daemon",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code without `//` comments (doc links name modules without using them).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a file names through `crate::`: `crate::x::...` and the items of
/// `crate::{x, y::z, ...}` at the first level of the braces.
fn crate_uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => item_start = true,
                    c if depth == 1 && item_start && !c.is_whitespace() => {
                        out.insert(ident_at(&group[i..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
        } else {
            out.insert(ident_at(rest).to_string());
        }
    }
    out
}

#[test]
fn each_top_level_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "bin" {
            continue;
        }
        let Some(level) = LAYERS.iter().position(|l| *l == module) else {
            wrong.push(format!(
                "{}: top-level module {module} is in no layer",
                rel.display()
            ));
            continue;
        };
        seen.insert(module.clone());
        for used in crate_uses(&code(&fs::read_to_string(file).unwrap())) {
            if used == module || matches!(used.as_str(), "self" | "super") {
                continue;
            }
            match LAYERS.iter().position(|l| *l == used) {
                Some(u) if u < level => {}
                Some(_) => wrong.push(format!(
                    "{}: {module} uses crate::{used}, a layer above or beside it",
                    rel.display()
                )),
                None => wrong.push(format!("{}: crate::{used} is no layer", rel.display())),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
    assert_eq!(seen.len(), LAYERS.len(), "every layer exists: {seen:?}");
}

#[test]
fn the_parser_sees_grouped_and_plain_paths() {
    let uses = crate_uses(
        "use crate::{api::X, host::{cgroup, y}, faults};\nlet a = crate::engine::f();\nlet b = notcrate::daemon::g();",
    );
    let want: BTreeSet<String> = ["api", "host", "faults", "engine"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(uses, want);
}
