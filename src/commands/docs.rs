//! Completions and man pages, generated from the clap definition.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{IoContext, Result};

pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    clap_complete::generate(shell, &mut Cli::command(), "sandman", &mut std::io::stdout());
    Ok(())
}

/// Writes `sandman.1` and `sandman-<sub>[-<subsub>].1` for every subcommand.
pub fn man(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = Cli::command();
    cmd.build();
    write_pages(&cmd, "sandman", dir)?;
    Ok(())
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &Path) -> Result<()> {
    let page = cmd.clone().name(name.to_string());
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out).io_context(|| format!("render the man page {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
