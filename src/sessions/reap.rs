//! The reaper: a pure classification of what a pass should remove, and an executor that carries
//! on past a failed action so that one stuck container never stops every later removal.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use super::{Sessions, container_ref};
use crate::engine::{self, ManagedContainer};
use crate::error::{Error, Result};
use crate::locks::{self, FileLock};
use crate::store::{SessionRow, State};

/// One thing a reaper pass removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A running session past its expiry.
    Expire { id: String },
    /// A row left in `creating` by a process that died.
    Abandoned { id: String },
    /// A running session whose container disappeared.
    Vanished { id: String },
    /// A sandman container with no row (by container id).
    Orphan { container: String },
    /// A running session whose container stopped or is paused, or whose sshd does not answer
    /// (or a failed session whose cleanup did not finish): marked failed, its container removed
    /// and its slice released.
    Failed { id: String, reason: String },
}

/// How long a reaper pass waits for a running session's sshd to send its banner. Generous, so
/// that a busy host does not fail a healthy session.
pub const SSHD_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What one reaper pass did (or, dry, would do), by session id.
#[derive(Debug, Default, Serialize)]
pub struct ReapReport {
    pub dry_run: bool,
    /// Another reaper held the reap lock; this pass did nothing.
    pub busy: bool,
    pub expired: Vec<String>,
    /// Rows left in `creating` by a process that died.
    pub abandoned: Vec<String>,
    /// Rows whose container disappeared.
    pub vanished: Vec<String>,
    /// sandman containers with no row (container ids).
    pub orphans: Vec<String>,
    /// Running sessions found broken: marked failed and their container removed.
    pub failed_sessions: Vec<FailedSession>,
    /// MIG instances sandman created that no session holds (destroyed).
    pub gpu_instances: Vec<String>,
    /// Actions that failed; the rest of the pass went on. The next pass tries again.
    pub failed: Vec<ReapFailure>,
    /// Running sessions whose container had OOM kills since the previous `sandman reap`
    /// (filled by the CLI; serve counts them in `/metrics`).
    pub oom_kills: Vec<OomKills>,
}

/// Processes the kernel's OOM killer killed in one running session's container since the
/// previous pass (since the container started, for a session seen for the first time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OomKills {
    pub id: String,
    pub user: String,
    pub kills: u64,
}

impl ReapReport {
    pub fn total(&self) -> usize {
        self.expired.len()
            + self.abandoned.len()
            + self.vanished.len()
            + self.orphans.len()
            + self.failed_sessions.len()
            + self.gpu_instances.len()
    }
}

/// A session a pass found broken, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedSession {
    pub id: String,
    pub reason: String,
}

/// An action of a pass that failed: a session id, a container id for an orphan, or
/// `gpu-instances` for the release of unowned MIG instances.
#[derive(Debug, Serialize)]
pub struct ReapFailure {
    pub id: String,
    #[serde(serialize_with = "as_message")]
    pub error: Error,
}

/// The id `ReapFailure` names when destroying unowned MIG instances failed.
pub const GPU_INSTANCES: &str = "gpu-instances";

fn as_message<S: serde::Serializer>(error: &Error, out: S) -> std::result::Result<S::Ok, S::Error> {
    out.collect_str(error)
}

/// The running sessions whose sshd a pass must probe: not expired, with a running container.
pub fn to_probe<'r>(rows: &'r [SessionRow], containers: &[ManagedContainer], now: i64) -> Vec<&'r SessionRow> {
    let running: HashSet<&str> =
        containers.iter().filter(|c| c.state == engine::RUNNING).filter_map(|c| c.session_id.as_deref()).collect();
    rows.iter().filter(|r| r.state == State::Running && r.expires_at > now && running.contains(r.id.as_str())).collect()
}

/// What a pass should remove, given the rows, the labelled containers (listed before the rows),
/// the time, whether the process creating a session still runs, and the sessions whose sshd
/// did not answer. Nothing here has effects.
pub fn classify(
    rows: &[SessionRow],
    containers: &[ManagedContainer],
    now: i64,
    creator_alive: impl Fn(&str) -> bool,
    sshd_silent: &HashSet<String>,
) -> Vec<Action> {
    let by_session: HashMap<&str, &ManagedContainer> =
        containers.iter().filter_map(|c| c.session_id.as_deref().map(|id| (id, c))).collect();
    let mut actions = Vec::new();
    for row in rows {
        let id = row.id.clone();
        match row.state {
            State::Running if row.expires_at <= now => actions.push(Action::Expire { id }),
            State::Running => match by_session.get(row.id.as_str()) {
                None => actions.push(Action::Vanished { id }),
                Some(c) if c.state != engine::RUNNING => {
                    let state = if c.state.is_empty() { "in an unknown state" } else { c.state.as_str() };
                    actions.push(Action::Failed { id, reason: format!("its container is {state}") });
                }
                Some(_) if sshd_silent.contains(&row.id) => actions.push(Action::Failed {
                    id,
                    reason: format!(
                        "its sshd did not answer on port {} within {}s",
                        row.ssh_port,
                        SSHD_ANSWER_TIMEOUT.as_secs()
                    ),
                }),
                Some(_) => {}
            },
            State::Creating if !creator_alive(&row.id) => actions.push(Action::Abandoned { id }),
            State::Creating => {}
            // Its cleanup did not finish: try again.
            State::Failed if row.container_id.is_some() => {
                actions.push(Action::Failed { id, reason: row.failure.clone().unwrap_or_default() })
            }
            State::Failed if row.expires_at <= now => actions.push(Action::Expire { id }),
            State::Failed => {}
        }
    }
    // A row is always written before its container, and the containers were listed first: a
    // container whose row is missing here really has none.
    let known: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    for c in containers {
        if c.session_id.as_deref().is_none_or(|id| !known.contains(id)) {
            actions.push(Action::Orphan { container: c.id.clone() });
        }
    }
    actions
}

impl Sessions {
    /// The OOM kills in each running session's container since the counts the previous call
    /// recorded in `oom-kills.json` beside the database (the CLI's reaper runs as a new process
    /// each time); records the counts now unless `dry_run`. Reads only the kernel's counters.
    pub async fn new_oom_kills(&self, dry_run: bool) -> Result<Vec<OomKills>> {
        let path = self.settings.state_dir().join("oom-kills.json");
        let before: HashMap<String, u64> =
            std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let engine = self.engine().await?;
        let mut now = HashMap::new();
        let mut new = Vec::new();
        for row in self.list()?.into_iter().filter(|r| r.state == State::Running) {
            let Some(id) = &row.container_id else { continue };
            let Some(count) = engine.oom_kills(id).await else { continue };
            let seen = before.get(&row.id).copied().unwrap_or(0);
            if count > seen {
                new.push(OomKills { id: row.id.clone(), user: row.user.clone(), kills: count - seen });
            }
            now.insert(row.id, count);
        }
        if !dry_run && now != before {
            let tmp = path.with_extension("json.tmp");
            let written = serde_json::to_vec(&now)
                .map_err(std::io::Error::other)
                .and_then(|b| std::fs::write(&tmp, b))
                .and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                tracing::debug!(path = %path.display(), error = %e, "OOM kill counts not recorded");
            }
        }
        Ok(new)
    }

    /// One reaper pass: expired sessions, creates whose process died, rows whose container
    /// vanished, and labelled containers with no row. Safe beside other reapers, creates and
    /// extends. A failed action is logged and listed in `failed`; the pass goes on.
    pub async fn reap(&self, dry_run: bool) -> Result<ReapReport> {
        let mut report = ReapReport { dry_run, ..Default::default() };
        let state_dir = self.settings.state_dir();
        let Some(reap_lock) = FileLock::try_acquire(&locks::dir(&state_dir).join("reap.lock"))? else {
            report.busy = true;
            return Ok(report);
        };
        if let Err(e) = self.check_identity().await {
            drop(reap_lock);
            return Err(e);
        }
        let engine = self.engine().await?;
        let containers = engine.list_managed(&self.instance).await?;
        let rows = self.list()?;
        let now = chrono::Utc::now().timestamp();
        let probes = to_probe(&rows, &containers, now).into_iter().map(|row| async move {
            let answered = crate::ssh::wait_for_banner(self.ssh_address(row.ssh_port), SSHD_ANSWER_TIMEOUT).await;
            answered.is_err().then(|| row.id.clone())
        });
        let sshd_silent: HashSet<String> = futures_util::future::join_all(probes).await.into_iter().flatten().collect();
        let mut actions = classify(&rows, &containers, now, |id| self.creator_alive(id), &sshd_silent);

        // A create may have marked its session running between the two listings, with a container
        // the first one missed: look again before taking such a session for vanished.
        if actions.iter().any(|a| matches!(a, Action::Vanished { .. })) {
            let now_listed = engine.list_managed(&self.instance).await?;
            let present: HashSet<&str> = now_listed.iter().filter_map(|c| c.session_id.as_deref()).collect();
            actions.retain(|a| !matches!(a, Action::Vanished { id } if present.contains(id.as_str())));
        }

        let rows: HashMap<&str, &SessionRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
        // Slices whose container may still run although their row is gone: not unowned yet.
        let mut still_in_use = HashSet::new();
        for action in actions {
            let record = |report: &mut ReapReport| match &action {
                Action::Expire { id } => report.expired.push(id.clone()),
                Action::Abandoned { id } => report.abandoned.push(id.clone()),
                Action::Vanished { id } => report.vanished.push(id.clone()),
                Action::Orphan { container } => report.orphans.push(container.clone()),
                Action::Failed { id, reason } => {
                    report.failed_sessions.push(FailedSession { id: id.clone(), reason: reason.clone() })
                }
            };
            if dry_run {
                record(&mut report);
                continue;
            }
            let id = match &action {
                Action::Expire { id }
                | Action::Abandoned { id }
                | Action::Vanished { id }
                | Action::Failed { id, .. }
                | Action::Orphan { container: id } => id,
            };
            match self.execute(&action, &rows, now, &mut still_in_use).await {
                Ok(true) => {
                    tracing::info!(?action, "reaped");
                    record(&mut report);
                }
                Ok(false) => tracing::debug!(?action, "nothing to reap: the session changed meanwhile"),
                Err(error) => {
                    tracing::warn!(?action, %error, "reap action failed; the next pass tries again");
                    report.failed.push(ReapFailure { id: id.clone(), error });
                }
            }
        }
        // Instances sandman created for sessions that no longer exist (a crash between creating
        // the instance and writing the row, or a failed release).
        // Done inside the store's reservation lock, so an instance a create has just made for a
        // row it has not yet committed is never taken for unowned.
        if !dry_run {
            let reconciled = self.store().with_gpu_ledger(|ledger| {
                let owned = ledger.held()?.union(&still_in_use).cloned().collect();
                self.gpu.reconcile(&owned, ledger)
            });
            match reconciled {
                Ok(destroyed) => report.gpu_instances = destroyed,
                Err(error) => {
                    tracing::warn!(%error, "releasing unowned MIG instances failed; the next pass tries again");
                    report.failed.push(ReapFailure { id: GPU_INSTANCES.into(), error });
                }
            }
            // Rules that a host firewall reload (or anyone) removed or changed come back within a
            // pass, where the network exists. One `iptables -S` when they are right.
            if let Err(error) = self.firewall_apply(false).await {
                tracing::warn!(%error, "the session network's firewall rules could not be checked; the next pass tries again");
            }
        }
        drop(reap_lock);
        Ok(report)
    }

    /// Whether the process creating session `id` still holds its lock (when in doubt: yes).
    fn creator_alive(&self, id: &str) -> bool {
        match FileLock::try_acquire(&locks::session_lock_path(&self.settings.state_dir(), id)) {
            Ok(lock) => lock.is_none(),
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "cannot tell whether its create still runs");
                true
            }
        }
    }

    /// Carries out one action; false when there was nothing left to do.
    async fn execute(
        &self,
        action: &Action,
        rows: &HashMap<&str, &SessionRow>,
        now: i64,
        still_in_use: &mut HashSet<String>,
    ) -> Result<bool> {
        let engine = self.engine().await?;
        let row = |id: &str| rows.get(id).copied().ok_or_else(|| Error::Internal(anyhow::anyhow!("no row {id}")));
        match action {
            Action::Expire { id } | Action::Vanished { id } => {
                let row = row(id)?;
                // The row goes first, in one statement that checks it still qualifies, so an
                // extend committed after our listing wins. If removing the container then fails,
                // it is an orphan (labelled, with no row) that the next pass removes.
                let deleted = match action {
                    Action::Expire { .. } => self.store().delete_expired(id, now)?,
                    _ => self.store().delete_running(id)?,
                };
                if !deleted {
                    return Ok(false);
                }
                if let Err(e) = engine.remove(&container_ref(row)).await {
                    // Its slice stays with the container until that is gone.
                    still_in_use.extend(row.gpu_uuid.clone());
                    return Err(e);
                }
                if let Some(uuid) = &row.gpu_uuid {
                    // A failed release leaves an unowned instance, which the end of a pass destroys.
                    self.store().with_gpu_ledger(|ledger| self.gpu.release(uuid, ledger))?;
                }
                Ok(true)
            }
            Action::Abandoned { id } => {
                let path = locks::session_lock_path(&self.settings.state_dir(), id);
                let Some(lock) = FileLock::try_acquire(&path)? else {
                    return Ok(false);
                };
                // The creator may have finished between our listing and the lock: look again.
                let current = self.store().session(id)?.filter(|r| r.state == State::Creating);
                let result = match current {
                    Some(current) => self.teardown(&current).await.map(|()| true),
                    None => Ok(false),
                };
                lock.release_and_remove();
                result
            }
            Action::Orphan { container } => engine.remove(container).await.map(|()| true),
            Action::Failed { id, reason } => {
                let row = row(id)?;
                // Failed first, so list, show and the API say why while the removal runs, and
                // still say so if it fails (the next pass retries it).
                if !self.store().mark_failed(id, reason)? {
                    return Ok(false);
                }
                tracing::warn!(session = %id, user = %row.user, %reason, "session failed; removing its container");
                if let Err(e) = engine.remove(&container_ref(row)).await {
                    still_in_use.extend(row.gpu_uuid.clone());
                    return Err(e);
                }
                self.store().finish_failed(id)?;
                if let Some(uuid) = &row.gpu_uuid {
                    self.store().with_gpu_ledger(|ledger| self.gpu.release(uuid, ledger))?;
                }
                Ok(true)
            }
        }
    }
}
