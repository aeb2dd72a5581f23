use super::print_json;
use crate::error::Result;
use crate::sessions::{ReapReport, Sessions};

pub async fn run(sessions: &Sessions, dry_run: bool, json: bool) -> Result<()> {
    let report = sessions.reap(dry_run).await?;
    if json {
        print_json(&report)?;
    } else {
        print_text(&report);
    }
    // The pass has finished; a failed action still makes the command fail, with its class.
    match report.failed.into_iter().next() {
        Some(first) => Err(first.error),
        None => Ok(()),
    }
}

fn print_text(report: &ReapReport) {
    if report.busy {
        eprintln!("another reap is running; nothing done");
        return;
    }
    let verb = if report.dry_run { "would remove" } else { "removed" };
    for (what, ids) in [
        ("expired session", &report.expired),
        ("idle session", &report.idle),
        ("abandoned create", &report.abandoned),
        ("session whose container vanished", &report.vanished),
        ("orphaned container", &report.orphans),
        ("unowned MIG instance", &report.gpu_instances),
    ] {
        for id in ids {
            println!("{verb} {what} {id}");
        }
    }
    for f in &report.failed_sessions {
        println!("{verb} failed session {} ({})", f.id, f.reason);
    }
    for k in &report.oom_kills {
        println!(
            "out of memory in session {} ({}): {} process(es) killed since the last pass; the session goes on",
            k.id, k.user, k.kills
        );
    }
    for f in &report.failed {
        eprintln!("could not reap {}: {}", f.id, f.error);
    }
    if report.total() == 0 && report.failed.is_empty() && report.oom_kills.is_empty() {
        eprintln!("nothing to reap");
    }
}
