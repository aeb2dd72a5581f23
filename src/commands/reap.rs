use super::print_json;
use crate::error::Result;
use crate::sessions::Sessions;

pub async fn run(sessions: &Sessions, dry_run: bool, json: bool) -> Result<()> {
    let report = sessions.reap(dry_run).await?;
    if json {
        return print_json(&report);
    }
    if report.busy {
        eprintln!("another reap is running; nothing done");
        return Ok(());
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for (what, ids) in [
        ("expired session", &report.expired),
        ("abandoned create", &report.abandoned),
        ("session whose container vanished", &report.vanished),
        ("orphaned container", &report.orphans),
        ("unowned MIG instance", &report.gpu_instances),
    ] {
        for id in ids {
            println!("{verb} {what} {id}");
        }
    }
    if report.total() == 0 {
        eprintln!("nothing to reap");
    }
    Ok(())
}
