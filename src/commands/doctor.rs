//! `sandman doctor`: every check names what it found and, when it fails, the fix.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

use super::print_json;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::runtime::Docker;
use crate::store::Store;

#[derive(Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn pass(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        check,
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

pub async fn run(settings: &Settings, json: bool) -> Result<()> {
    let mut checks = Vec::new();
    checks.push(if unsafe { libc::geteuid() } == 0 {
        pass("privileges", "running as root")
    } else {
        fail(
            "privileges",
            "not root: workspaces cannot be given to session uids",
            "run sandman as root (sudo)",
        )
    });

    match Docker::connect().await {
        Err(e) => checks.push(fail(
            "docker",
            e.to_string(),
            "start the engine (systemctl start docker) or set DOCKER_HOST",
        )),
        Ok(docker) => {
            checks.push(pass(
                "docker",
                format!("engine {}", docker.version().await.unwrap_or_default()),
            ));
            checks.push(match docker.image_exists(&settings.image).await {
                Ok(true) => pass("image", format!("{} is present", settings.image)),
                Ok(false) => fail(
                    "image",
                    format!("{} is not on this host", settings.image),
                    "sandman image build (add --offline on hosts without a registry)",
                ),
                Err(e) => fail("image", e.to_string(), "check the Docker engine"),
            });
            checks.push(match docker.network_exists(&settings.network).await {
                Ok(true) => pass("network", format!("{} exists", settings.network)),
                Ok(false) => pass(
                    "network",
                    format!("{} will be created by the first session", settings.network),
                ),
                Err(e) => fail("network", e.to_string(), "check the Docker engine"),
            });
        }
    }

    checks.push(writable_dir(
        "workspace root",
        &settings.workspace_root,
        "create it (mkdir -p) as root or set workspace_root",
    ));
    checks.push(match Store::open(&settings.db) {
        Ok(_) => pass("database", format!("{} opens", settings.db.display())),
        Err(e) => fail(
            "database",
            e.to_string(),
            "make its directory writable or set --db",
        ),
    });

    let (start, end) = (settings.ssh_port_start, settings.ssh_port_end);
    let free = (start..=end)
        .filter(|p| TcpListener::bind(SocketAddr::new(settings.publish_address, *p)).is_ok())
        .count();
    let total = usize::from(end - start) + 1;
    checks.push(if free > 0 {
        pass(
            "ports",
            format!(
                "{free} of {total} ports in {start}-{end} free on {}",
                settings.publish_address
            ),
        )
    } else {
        fail(
            "ports",
            format!("none of the {total} ports in {start}-{end} is free"),
            "widen ssh_port_start/ssh_port_end or remove sessions",
        )
    });

    let all_ok = checks.iter().all(|c| c.ok);
    if json {
        print_json(&checks)?;
    } else {
        let mut table = Table::new();
        table
            .load_preset(UTF8_BORDERS_ONLY)
            .set_header(["", "CHECK", "DETAIL", "FIX"]);
        for c in &checks {
            table.add_row([
                if c.ok { "ok" } else { "FAIL" },
                c.check,
                &c.detail,
                c.fix.as_deref().unwrap_or(""),
            ]);
        }
        println!("{table}");
    }
    if all_ok {
        Ok(())
    } else {
        Err(Error::Unavailable(format!(
            "{} check(s) failed",
            checks.iter().filter(|c| !c.ok).count()
        )))
    }
}

fn writable_dir(check: &'static str, dir: &Path, fix: &str) -> Check {
    if !dir.exists() {
        // The first create makes it, if the nearest existing parent lets us.
        return match dir.ancestors().find(|a| a.exists()) {
            Some(parent) if parent.is_dir() && writable_dir(check, parent, fix).ok => pass(
                check,
                format!("{} will be created by the first session", dir.display()),
            ),
            _ => fail(
                check,
                format!("{} does not exist and cannot be created", dir.display()),
                fix,
            ),
        };
    }
    if !dir.is_dir() {
        return fail(check, format!("{} is not a directory", dir.display()), fix);
    }
    let probe = dir.join(format!(".sandman-doctor-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            pass(check, format!("{} is writable", dir.display()))
        }
        Err(e) => fail(
            check,
            format!("{} is not writable: {e}", dir.display()),
            fix,
        ),
    }
}
