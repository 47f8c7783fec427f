//! Shell completions and man pages, generated from the clap definitions in args.rs so they
//! never drift from the real command line. `cargo xtask install` and `cargo xtask deb` call
//! these through the built binary (`chaosctl completions SHELL`, `chaosctl __man`).

use std::{io::Write, path::Path};

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::Cli;

fn command() -> clap::Command {
    Cli::command().bin_name("chaosctl")
}

/// Writes the completion script for `shell`; hidden (internal) subcommands are left out.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> Result<()> {
    // Rendered in memory first: clap_complete panics on a failed write (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut without_internal(command()),
        "chaosctl",
        &mut script,
    );
    out.write_all(&script)
        .context("writing the completion script")
}

/// The command without its hidden `__...` subcommands, which clap_complete would offer.
fn without_internal(cmd: clap::Command) -> clap::Command {
    let visible: Vec<_> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let args: Vec<_> = cmd.get_arguments().cloned().collect();
    clap::Command::new("chaosctl")
        .bin_name("chaosctl")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .args(args)
        .subcommands(visible)
}

/// Writes chaosctl.1 and one page per visible subcommand (chaosctl-inject-net-loss.1, ...).
pub fn man_pages(out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    clap_mangen::generate_to(command(), out_dir)
        .with_context(|| format!("writing man pages into {}", out_dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn completions_cover_nested_subcommands_but_not_internal_ones() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out).unwrap();
            let script = String::from_utf8(out).unwrap();
            for word in ["inject", "partition", "--duration", "completions"] {
                assert!(script.contains(word), "{shell}: no {word}");
            }
            assert!(
                !script.contains("__udp-send"),
                "{shell}: lists an internal command"
            );
        }
    }

    #[test]
    fn man_pages_document_every_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        man_pages(dir.path()).unwrap();
        let page = |name: &str| std::fs::read_to_string(dir.path().join(name));
        let top = page("chaosctl.1").unwrap();
        assert!(top.contains(".TH chaosctl 1"), "{top}");
        assert!(top.contains("inject"), "{top}");
        let loss = page("chaosctl-inject-net-loss.1").unwrap();
        assert!(loss.contains("percent"), "{loss}");
        assert!(
            page("chaosctl-__udp-send.1").is_err(),
            "internal command has a page"
        );
    }
}
