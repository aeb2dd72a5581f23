//! The CLI's thin adapters: parse what the person typed, call the service, print the answer.

mod docs;
mod doctor;
mod firewall;
mod gpu;
mod image;
mod node;
mod reap;
mod serve;
mod session;
mod user;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::{Overrides, Settings};
use crate::error::{Error, Result};
use crate::sessions::Sessions;

pub async fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    let quiet = g.quiet;
    match cli.command {
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(&dir),
        Command::Session(cmd) => session::run(&open(&cli.global)?, cmd, quiet).await,
        Command::User(cmd) => user::run(&open(&cli.global)?, cmd),
        Command::Gpu(cmd) => gpu::run(&open(&cli.global)?, cmd),
        Command::Reap { dry_run, json } => reap::run(&open(&cli.global)?, dry_run, json).await,
        Command::Serve(args) => {
            let flags =
                Overrides { api_port: args.port, api_bind: args.bind, api_token_file: args.token_file, ..overrides(g) };
            serve::run(service(load(g, &flags)?)?).await
        }
        Command::Image(cmd) => image::run(&settings(&cli.global)?, cmd, quiet).await,
        Command::Firewall(cmd) => firewall::run(&open(&cli.global)?, cmd).await,
        Command::Node(cmd) => node::run(&open(&cli.global)?, cmd).await,
        Command::Doctor { json, adopt_database } => doctor::run(&settings(&cli.global)?, json, adopt_database).await,
    }
}

pub(crate) fn settings(g: &GlobalArgs) -> Result<Settings> {
    load(g, &overrides(g))
}

fn overrides(g: &GlobalArgs) -> Overrides {
    Overrides {
        db: g.db.clone(),
        workspace_root: g.workspace_root.clone(),
        ssh_port_start: g.ssh_port_start,
        ssh_port_end: g.ssh_port_end,
        gpu_backend: g.gpu_backend.map(Into::into),
        gpu_sim_file: g.gpu_sim_file.clone(),
        idle_timeout_minutes: g.idle_timeout_minutes,
        activity_bump_minutes: g.activity_bump_minutes,
        cpu_active_percent: g.cpu_active_percent,
        protect_busy_gpu: g.protect_busy_gpu,
        engine: g.engine.map(Into::into),
        ..Default::default()
    }
}

fn load(g: &GlobalArgs, flags: &Overrides) -> Result<Settings> {
    Settings::load(g.config.as_deref(), flags).map_err(|e| Error::invalid("settings", format!("{e:#}")))
}

pub(crate) fn open(g: &GlobalArgs) -> Result<Sessions> {
    service(settings(g)?)
}

/// The session service with this host's GPU backend; the CLI and the server use the same one.
fn service(settings: Settings) -> Result<Sessions> {
    let gpu = crate::gpu::open(&settings)?;
    Sessions::open(settings, gpu)
}

/// Progress lines for a person, on stderr (stdout carries data only).
fn progress(quiet: bool) -> impl Fn(&str) + Sync {
    move |msg: &str| {
        if !quiet {
            eprintln!("  {msg}...");
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.into()))?;
    println!("{text}");
    Ok(())
}

/// "in 59m", "3m ago": how far `epoch` is from now, for tables.
fn relative(epoch: i64) -> String {
    let d = epoch - chrono::Utc::now().timestamp();
    let (n, past) = (d.unsigned_abs(), d < 0);
    let text = if n < 60 {
        format!("{n}s")
    } else if n < 3600 {
        format!("{}m", n / 60)
    } else if n < 86400 {
        format!("{}h{:02}m", n / 3600, n % 3600 / 60)
    } else {
        format!("{}d{}h", n / 86400, n % 86400 / 3600)
    };
    if past { format!("{text} ago") } else { format!("in {text}") }
}
