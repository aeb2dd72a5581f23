use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use super::{print_json, progress, relative};
use crate::cli::{CreateArgs, SessionCommand};
use crate::error::{Error, IoContext, Result};
use crate::gpu::GpuRequest;
use crate::limits::LimitRequest;
use crate::sessions::{CreateRequest, Sessions};
use crate::store::SessionRow;
use crate::views::{CreatedView, SessionView};
use crate::{ssh, validate};

pub async fn run(sessions: &Sessions, cmd: SessionCommand, quiet: bool) -> Result<()> {
    match cmd {
        SessionCommand::Create(args) => create(sessions, *args, quiet).await,
        SessionCommand::List { json } => {
            let rows = sessions.list()?;
            if json {
                print_json(&rows.iter().map(SessionView::from).collect::<Vec<_>>())
            } else {
                print_table(&rows);
                Ok(())
            }
        }
        SessionCommand::Show { id, json } => {
            let row = sessions.get(&id)?;
            let mut view = SessionView::from(&row);
            view.workspace_usage_bytes = sessions.workspace_usage(&row);
            view.workspace_quota_bytes = sessions.workspace_quota(&row).and_then(|q| q.limit_bytes);
            if json { print_json(&view) } else { print_details(&row, view, sessions.settings.idle_timeout_minutes) }
        }
        SessionCommand::Extend { id, ttl, json } => {
            let ttl = validate::ttl_text(&ttl, sessions.settings.max_ttl_minutes)?;
            let row = sessions.extend(&id, i64::from(ttl))?;
            if json {
                print_json(&SessionView::from(&row))
            } else {
                println!(
                    "session {} now expires {} ({})",
                    row.id,
                    crate::views::timestamp(row.expires_at),
                    relative(row.expires_at)
                );
                Ok(())
            }
        }
        SessionCommand::Rm { ids, all, yes, json } => remove(sessions, ids, all, yes, json).await,
        SessionCommand::SshConfig { id, user, identity_file, json } => {
            let row = match (&id, &user) {
                (Some(id), _) => sessions.get(id)?,
                (None, Some(user)) => sessions.get_by_user(user)?,
                (None, None) => return Err(Error::invalid("session", "give a session id or --user")),
            };
            let identity = identity_file.as_ref().map(|p| p.display().to_string());
            let config = ssh::ssh_config(&row.user, &sessions.ssh_host_for(&row.id), row.ssh_port, identity.as_deref());
            let known_hosts = ssh::alias_known_hosts_line(&row.user, &sessions.host_public_key(&row.user)?);
            if json {
                return print_json(&serde_json::json!({ "ssh_config": config, "ssh_config_known_hosts": known_hosts }));
            }
            print_ssh_config(&config, &known_hosts);
            Ok(())
        }
    }
}

/// The block as it goes into ~/.ssh/config, the known_hosts line as a comment after it, so
/// that the whole output can be appended to the config as it is.
fn print_ssh_config(config: &str, known_hosts: &str) {
    print!("{config}");
    println!("    # Add this line to ~/.ssh/known_hosts (valid whatever the port):");
    println!("    # {known_hosts}");
}

async fn create(sessions: &Sessions, args: CreateArgs, quiet: bool) -> Result<()> {
    let settings = &sessions.settings;
    let ttl = args.ttl.as_deref().map(|t| validate::ttl_text(t, settings.max_ttl_minutes)).transpose()?;
    let public_key = match &args.public_key {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Error::invalid("public key", format!("cannot read {}: {e}", path.display())))?,
        ),
        None => None,
    };
    // Refuse an existing key file before anything is made.
    if let Some(path) = &args.key_file
        && path.exists()
    {
        return Err(Error::invalid("key file", format!("{} already exists; choose another path", path.display())));
    }
    if !quiet {
        eprintln!("Creating a session for {}", args.user);
    }
    let request = CreateRequest {
        user: args.user.clone(),
        ttl_minutes: ttl.map(i64::from),
        image: args.image.clone(),
        gpu: GpuRequest::from_fields(args.profile.as_deref(), args.gpu.as_deref())?,
        public_key,
        limits: LimitRequest {
            memory: args.memory.as_deref().map(|m| validate::size("memory", m)).transpose()?,
            cpus: args.cpus,
            shm_size: args.shm_size.as_deref().map(|m| validate::size("shm_size", m)).transpose()?,
            writable_layer: args.writable_layer.as_deref().map(|m| validate::size("writable_layer", m)).transpose()?,
        },
        adopt_workspace: args.adopt_workspace,
        idle_timeout_minutes: args.idle_timeout,
    };
    let report = progress(quiet);
    // Ctrl-C asks the create to stop at its next step; it then removes what it made and
    // answers `Interrupted` (exit 130).
    let cancel = tokio_util::sync::CancellationToken::new();
    let on_ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: removing what the create made");
                cancel.cancel();
            }
        })
    };
    let created = sessions.create(request, &report, &cancel).await;
    on_ctrl_c.abort();
    let created = created?;

    let key_path = match (&args.key_file, &args.public_key) {
        (Some(p), _) => p.display().to_string(),
        (None, Some(p)) => p.display().to_string().trim_end_matches(".pub").to_string(),
        (None, None) => format!("{}.key", created.ssh_user),
    };
    if let (Some(path), Some(key)) = (&args.key_file, &created.private_key) {
        write_private_key(path, key)?;
    }
    let mut view = CreatedView::new(&created, &key_path, Some(&key_path));
    if args.key_file.is_some() {
        // Written to the file; not repeated on stdout.
        view.ssh_private_key = None;
    }
    if args.json {
        return print_json(&view);
    }
    let s = &created.session;
    println!("Session {} for {} is ready.", s.id, created.ssh_user);
    println!("  expires    {} ({})", view.expires_at, relative(s.expires_at));
    println!("  host key   {}", s.host_key_fingerprint);
    println!("  known_hosts line: {}", view.known_hosts);
    if let Some(key) = &view.ssh_private_key {
        println!("\nPrivate key (shown once, never stored): save it as {key_path} with mode 0600:\n");
        print!("{key}");
        println!("\nThen log in with:");
    } else {
        println!("\nLog in with:");
    }
    println!("  {}", view.ssh_command);
    println!("\nOr add this to ~/.ssh/config and log in with `ssh {}`:\n", ssh::host_alias(&created.ssh_user));
    print_ssh_config(&view.ssh_config, &view.ssh_config_known_hosts);
    Ok(())
}

fn write_private_key(path: &std::path::Path, key: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(key.as_bytes()))
        .io_context(|| format!("write the private key to {}", path.display()))?;
    Ok(())
}

async fn remove(sessions: &Sessions, ids: Vec<String>, all: bool, yes: bool, json: bool) -> Result<()> {
    let targets: Vec<SessionRow> = if all {
        sessions.list()?
    } else {
        // Every id must exist before anything is removed.
        ids.iter().map(|id| sessions.get(id)).collect::<Result<_>>()?
    };
    if targets.is_empty() {
        if json {
            return print_json(&serde_json::json!({"removed": []}));
        }
        eprintln!("no sessions to remove");
        return Ok(());
    }
    if !yes {
        let names: Vec<String> = targets.iter().map(|r| format!("{} ({})", r.id, r.user)).collect();
        let prompt = format!("Remove {} session(s): {}? Workspaces are kept", targets.len(), names.join(", "));
        if !std::io::stdin().is_terminal() {
            return Err(Error::invalid("confirmation", format!("{prompt}: not asked without a terminal; add --yes")));
        }
        let ok = dialoguer::Confirm::new()
            .with_prompt(prompt)
            .default(false)
            .interact()
            .map_err(|e| Error::Internal(e.into()))?;
        if !ok {
            return Err(Error::Conflict("nothing removed".into()));
        }
    }
    // Exactly the sessions confirmed above, under the core's one policy for removing several.
    let ids: Vec<String> = targets.into_iter().map(|r| r.id).collect();
    let removal = sessions.remove_sessions(&ids).await;
    for id in &removal.already_gone {
        eprintln!("session {id} was already gone");
    }
    for (id, e) in &removal.failed {
        eprintln!("error: session {id}: {e}");
    }
    if json {
        let removed: Vec<&str> = removal.removed.iter().map(|r| r.id.as_str()).collect();
        print_json(&serde_json::json!({ "removed": removed, "already_gone": removal.already_gone }))?;
    } else {
        for r in &removal.removed {
            println!("removed session {} ({}, port {}); workspace {} kept", r.id, r.user, r.ssh_port, r.workspace);
        }
    }
    removal.failed.into_iter().next().map_or(Ok(()), |(_, e)| Err(e))
}

fn print_table(rows: &[SessionRow]) {
    if rows.is_empty() {
        eprintln!("no sessions");
        return;
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(["ID", "USER", "PORT", "GPU", "STATE", "EXPIRES", "IDLE", "SSH/GPU", "IMAGE"]);
    for r in rows {
        table.add_row([
            r.id.clone(),
            r.user.clone(),
            r.ssh_port.to_string(),
            r.mig_profile.clone().or(r.gpu_uuid.clone()).unwrap_or_else(|| "-".into()),
            r.state.to_string(),
            relative(r.expires_at),
            idle_for(r),
            format!("{}/{}", count(r.activity.ssh_connections), count(r.activity.gpu_processes)),
            r.image.clone(),
        ]);
    }
    println!("{table}");
}

/// How long a session has been idle, and what it last did: `12m ssh`, `3h creation`.
fn idle_for(r: &SessionRow) -> String {
    let since = chrono::Utc::now().timestamp() - r.activity.since(r.created_at);
    let signal = r.activity.last_activity_signal.as_deref().unwrap_or("creation");
    let span = match since.max(0) {
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    };
    format!("{span} {signal}")
}

fn count(n: Option<u32>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

/// `host_idle`: the host's idle timeout, for a session without its own.
fn print_details(r: &SessionRow, v: SessionView, host_idle: u32) -> Result<()> {
    let host_idle = match host_idle {
        0 => "none (the host reaps no idle sessions)".to_string(),
        m => format!("{m} minutes (the host's)"),
    };
    let size = validate::format_size;
    let limits = match &v.limits {
        Some(l) => vec![
            ("memory", format!("{} (no swap beyond it)", size(l.memory_bytes))),
            ("cpus", l.cpus.to_string()),
            ("/dev/shm", size(l.shm_size_bytes)),
            ("pids", l.pids.to_string()),
            ("log", format!("{} x {} files", size(l.log_size_bytes), l.log_files)),
            (
                "layer limit",
                l.writable_layer_bytes
                    .map_or_else(|| "none".to_string(), |b| format!("{} (files written outside the home)", size(b))),
            ),
        ],
        None => vec![("limits", "not recorded (made by an older sandman)".to_string())],
    };
    let mut usage = v.workspace_usage_bytes.map_or_else(
        || "not measured (too large to walk quickly, or unreadable)".into(),
        |b| format!("{b} bytes ({})", human(b)),
    );
    if let Some(q) = v.workspace_quota_bytes {
        usage.push_str(&format!(" of a {} quota", human(q)));
    }
    for (k, val) in [
        ("id", v.id),
        ("user", v.user_id),
        ("state", v.state.to_string()),
        ("failure", v.failure.unwrap_or_else(|| "-".into())),
        ("ssh port", v.ssh_port.to_string()),
        ("container", v.container_id.unwrap_or_else(|| "-".into())),
        ("container ip", v.container_ip.unwrap_or_else(|| "-".into())),
        ("gpu", v.gpu_uuid.unwrap_or_else(|| "none".into())),
        ("mig profile", v.mig_profile.unwrap_or_else(|| "-".into())),
        ("image", v.metadata.image),
        ("workspace", v.metadata.workspace),
        ("workspace use", usage),
        ("host key", v.host_key_fingerprint),
        ("created", v.created_at),
        ("expires", format!("{} ({})", v.expires_at, relative(r.expires_at))),
        ("last active", format!("{} ({}, idle {}s)", v.last_activity_at, v.last_activity_signal, v.idle_seconds)),
        ("idle timeout", v.idle_timeout_minutes.map_or(host_idle, |m| format!("{m} minutes (the session's own)"))),
        ("ssh conns", count(v.ssh_connections)),
        ("gpu procs", count(v.gpu_processes)),
    ]
    .into_iter()
    .chain(limits)
    {
        println!("{k:<13} {val}");
    }
    Ok(())
}

/// Bytes for people: one decimal in the largest binary unit below them.
fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", units[unit]) }
}
