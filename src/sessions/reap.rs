//! The reaper: a pure classification of what a pass should remove, and an executor that carries
//! on past a failed action so that one stuck container never stops every later removal.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use super::{Sessions, container_ref};
use crate::config::Settings;
use crate::engine::{self, ContainerActivity, ManagedContainer};
use crate::error::{Error, Result};
use crate::locks::{self, FileLock};
use crate::store::{ActivityUpdate, SessionRow, State};

/// One thing a reaper pass removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A running session past its expiry.
    Expire { id: String },
    /// A running session without activity for its idle timeout.
    Idle { id: String },
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
    /// Running sessions reaped for idleness: no SSH connection, CPU use or GPU process for their
    /// idle timeout.
    pub idle: Vec<String>,
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
            + self.idle.len()
            + self.abandoned.len()
            + self.vanished.len()
            + self.orphans.len()
            + self.failed_sessions.len()
            + self.gpu_instances.len()
    }
}

impl Action {
    /// Why the action ends its session or container: `expired`, `idle`, `abandoned`, `vanished`,
    /// `orphan` or `failed` (the names of the report's lists and of the metric's label).
    pub fn reason(&self) -> &'static str {
        match self {
            Action::Expire { .. } => "expired",
            Action::Idle { .. } => "idle",
            Action::Abandoned { .. } => "abandoned",
            Action::Vanished { .. } => "vanished",
            Action::Orphan { .. } => "orphan",
            Action::Failed { .. } => "failed",
        }
    }
}

/// The idle policy that applies to one session (see `Settings` for each part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// 0: never reaped for idleness.
    pub idle_timeout_minutes: u32,
    pub activity_bump_minutes: u32,
    pub cpu_active_percent: u32,
    pub protect_busy_gpu: bool,
    pub max_ttl_minutes: u32,
}

impl Policy {
    /// The host's settings, with the session's own idle timeout where it asked for one.
    pub fn of(settings: &Settings, row: &SessionRow) -> Policy {
        Policy {
            idle_timeout_minutes: row.activity.idle_timeout_minutes.unwrap_or(settings.idle_timeout_minutes),
            activity_bump_minutes: settings.activity_bump_minutes,
            cpu_active_percent: settings.cpu_active_percent,
            protect_busy_gpu: settings.protect_busy_gpu,
            max_ttl_minutes: settings.max_ttl_minutes,
        }
    }
}

/// What a pass measured of one running session; `None`: could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    pub ssh_connections: Option<u32>,
    pub cpu_usage_usec: Option<u64>,
    pub gpu_processes: Option<u32>,
}

impl Observed {
    pub fn new(container: ContainerActivity, gpu_processes: Option<u32>) -> Observed {
        Observed { ssh_connections: container.ssh_connections, cpu_usage_usec: container.cpu_usage_usec, gpu_processes }
    }
}

/// Why a session will end if nothing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its expiry (TTL, or the hard maximum when activity bumped it there).
    Expiry,
    /// Its idle timeout.
    Idle,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Expiry => "expiry",
            Ending::Idle => "idle",
        }
    }
}

/// What a pass concludes about one running session (see `judge`).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The signal seen this pass (`ssh`, `cpu`, `gpu`), if any.
    pub signal: Option<&'static str>,
    /// Its last activity after this pass (its creation if it never had any).
    pub last_active: i64,
    /// Its expiry after this pass (moved by activity, never earlier).
    pub expires_at: i64,
    /// When it is reaped for idleness if nothing happens; `None`: never (idle timeout off, or a
    /// GPU process protects it).
    pub idle_deadline: Option<i64>,
    /// Reap it now for idleness.
    pub idle: bool,
    /// What the pass records on its row.
    pub update: ActivityUpdate,
}

impl Verdict {
    /// When the session ends if nothing happens, and why: the earlier of expiry and idle reap.
    pub fn ending(&self) -> (i64, Ending) {
        match self.idle_deadline {
            Some(idle) if idle < self.expires_at => (idle, Ending::Idle),
            _ => (self.expires_at, Ending::Expiry),
        }
    }
}

/// The pure rule of idle detection for one running session, not yet expired, at `now`:
/// - activity is an established SSH connection, a CPU share since the last pass of at least
///   `cpu_active_percent` of one CPU, or (with `protect_busy_gpu`) a GPU compute process;
/// - activity moves the expiry to `now + activity_bump_minutes`, never earlier than it was and
///   never past `created_at + max_ttl_minutes`;
/// - a session whose last activity (else its creation) is `idle_timeout_minutes` old is idle,
///   unless a GPU process protects it or its SSH connections could not be read.
pub fn judge(row: &SessionRow, seen: &Observed, policy: &Policy, now: i64) -> Verdict {
    let a = &row.activity;
    let cpu_active = match (policy.cpu_active_percent, seen.cpu_usage_usec, a.cpu_usage_usec, a.cpu_sampled_at) {
        (percent, Some(used), Some(before), Some(then)) if percent > 0 && now > then && used >= before => {
            // used µs over elapsed s, as a percentage of one CPU: (used - before) / 1e6 / elapsed * 100
            (used - before) as f64 / ((now - then) as f64 * 1e4) >= f64::from(percent)
        }
        _ => false,
    };
    let gpu_busy = policy.protect_busy_gpu && seen.gpu_processes.is_some_and(|n| n > 0);
    let signal = if seen.ssh_connections.is_some_and(|n| n > 0) {
        Some("ssh")
    } else if cpu_active {
        Some("cpu")
    } else if gpu_busy {
        Some("gpu")
    } else {
        None
    };
    let last_active = if signal.is_some() { now } else { a.since(row.created_at) };
    let mut expires_at = row.expires_at;
    if signal.is_some() && policy.activity_bump_minutes > 0 {
        let hard_max = row.created_at + i64::from(policy.max_ttl_minutes) * 60;
        let bumped = (now + i64::from(policy.activity_bump_minutes) * 60).min(hard_max);
        expires_at = expires_at.max(bumped);
    }
    // Unknown is not idle: where the connections cannot be read (no access to the container's
    // /proc), nobody is reaped for idleness.
    let idle_deadline = (policy.idle_timeout_minutes > 0 && !gpu_busy && seen.ssh_connections.is_some())
        .then(|| last_active + i64::from(policy.idle_timeout_minutes) * 60);
    let idle = idle_deadline.is_some_and(|d| d <= now);
    Verdict {
        signal,
        last_active,
        expires_at,
        idle_deadline,
        idle,
        update: ActivityUpdate {
            last_activity_at: signal.map(|_| now),
            last_activity_signal: signal.map(str::to_string),
            cpu_usage_usec: seen.cpu_usage_usec,
            cpu_sampled_at: now,
            ssh_connections: seen.ssh_connections,
            gpu_processes: seen.gpu_processes,
            bumped_expiry: (expires_at > row.expires_at).then_some(expires_at),
        },
    }
}

/// Minutes before an ending at which users are warned.
pub const WARNINGS: [u32; 2] = [10, 1];

/// The warning a pass at `now` owes for an ending at `deadline` (10 or 1 minutes), given the
/// last one recorded: each is given once per deadline, by the first pass that finds the time left
/// at most that long; a pass that finds both due gives only the nearer one.
pub fn warning_due(warned_deadline: Option<i64>, warned_minutes: Option<u32>, deadline: i64, now: i64) -> Option<u32> {
    let left = deadline - now;
    if left <= 0 {
        return None;
    }
    let due = WARNINGS.into_iter().filter(|m| left <= i64::from(*m) * 60).min()?;
    let given = warned_deadline == Some(deadline) && warned_minutes.is_some_and(|m| m <= due);
    (!given).then_some(due)
}

/// The warning a pass owes a session it judged (`verdict`), with its ending: none while the
/// ending moves with the activity this pass saw (an idle deadline a full timeout away, an expiry
/// the activity bumped), so a session with a short timeout or bump is not warned every pass.
pub fn warning_for(row: &SessionRow, verdict: &Verdict, now: i64) -> Option<(i64, Ending, u32)> {
    let (deadline, ending) = verdict.ending();
    let moving = verdict.signal.is_some() && (ending == Ending::Idle || verdict.expires_at > row.expires_at);
    if moving {
        return None;
    }
    let a = &row.activity;
    warning_due(a.warned_deadline, a.warned_minutes, deadline, now).map(|m| (deadline, ending, m))
}

/// Whether `~/.sandman/expires_at` needs writing: never written, its deadline moved earlier, or
/// later by 5 minutes or more (so a session whose activity bumps it every pass is not written to
/// every pass; the file then errs on the early side).
pub fn notice_due(written: Option<i64>, deadline: i64) -> bool {
    written.is_none_or(|w| deadline < w || deadline - w >= 300)
}

/// The terminal message of a warning.
pub fn warning_text(ending: Ending, deadline: i64, now: i64, idle_timeout_minutes: u32) -> String {
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp(deadline, 0).unwrap_or_default().format("%H:%M UTC");
    let minutes = ((deadline - now) + 59) / 60;
    let when = if minutes <= 1 { "in 1 minute".to_string() } else { format!("in {minutes} minutes") };
    match ending {
        Ending::Expiry => format!(
            "sandman: this session expires at {at} ({when}) and its container is removed then (reason: expiry; \
             files in your home are kept). Ask for an extension (sandman session extend) if you need longer."
        ),
        Ending::Idle => format!(
            "sandman: this session ends at {at} ({when}) because it has been idle (reason: idle: no SSH connection, \
             CPU use or GPU process for {idle_timeout_minutes} minutes; files in your home are kept). Any activity keeps it."
        ),
    }
}

/// Run in the session's container as its user: writes the notice file (`$2`, if given) in the
/// home (`$3`), then the warning (`$1`, if given) to each terminal the user owns and to the
/// container's log (PID 1's standard output, which the user owns too).
const NOTIFY_SCRIPT: &str = r#"msg=$1 notice=$2 home=$3
if [ -n "$notice" ]; then
  mkdir -p "$home/.sandman" &&
    printf '%s\n' "$notice" > "$home/.sandman/.expires_at.new" &&
    mv -f "$home/.sandman/.expires_at.new" "$home/.sandman/expires_at" ||
    echo "expires_at not written" >&2
fi
if [ -n "$msg" ]; then
  for t in /dev/pts/[0-9]*; do
    if [ -O "$t" ] && [ -w "$t" ]; then timeout 2 sh -c 'printf "\n%s\n" "$1" > "$2"' sh "$msg" "$t"; fi
  done
  printf '%s\n' "$msg" > /proc/1/fd/1 || echo "log not written" >&2
fi
"#;

/// What `NOTIFY_SCRIPT` says when it could not write the notice file.
const NOTICE_FAILED: &str = "expires_at not written";

/// How long a pass waits for one session's notice.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The OOM kills in each running session's container since the count the previous pass
    /// recorded on its row (so that each kill is reported once, whichever reaper sees it first);
    /// records the counts now unless `dry_run`. Reads only the kernel's counters.
    pub(super) async fn new_oom_kills(&self, dry_run: bool) -> Result<Vec<OomKills>> {
        let engine = self.engine().await?;
        let mut new = Vec::new();
        for row in self.list()?.into_iter().filter(|r| r.state == State::Running) {
            let Some(id) = &row.container_id else { continue };
            let Some(count) = engine.oom_kills(id).await else { continue };
            let seen = row.activity.oom_kills_seen.unwrap_or(0);
            if count > seen {
                new.push(OomKills { id: row.id.clone(), user: row.user.clone(), kills: count - seen });
            }
            if !dry_run && row.activity.oom_kills_seen != Some(count) {
                self.store().record_oom_kills(&row.id, count)?;
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
        // Activity is read before the sshd probes, whose own connections would count as SSH use.
        let candidates = to_probe(&rows, &containers, now);
        let signals = self.read_signals(&candidates).await;
        let probes = candidates.iter().map(|row| async move {
            let answered = crate::ssh::wait_for_banner(self.session_address(row), SSHD_ANSWER_TIMEOUT).await;
            answered.is_err().then(|| row.id.clone())
        });
        let sshd_silent: HashSet<String> = futures_util::future::join_all(probes).await.into_iter().flatten().collect();
        let mut actions = classify(&rows, &containers, now, |id| self.creator_alive(id), &sshd_silent);
        // Idle detection, for the running sessions found healthy.
        let (healthy, signals): (Vec<&SessionRow>, Vec<Observed>) =
            candidates.iter().copied().zip(signals).filter(|(r, _)| !sshd_silent.contains(&r.id)).unzip();
        let verdicts = self.judge_all(&healthy, &signals, now, dry_run);
        for (row, verdict) in healthy.iter().zip(&verdicts) {
            if verdict.idle {
                actions.push(Action::Idle { id: row.id.clone() });
            }
        }

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
                Action::Idle { id } => report.idle.push(id.clone()),
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
                | Action::Idle { id }
                | Action::Abandoned { id }
                | Action::Vanished { id }
                | Action::Failed { id, .. }
                | Action::Orphan { container: id } => id,
            };
            match self.execute(&action, &rows, now, &mut still_in_use).await {
                Ok(true) => {
                    tracing::info!(reason = action.reason(), session = %id, "reaped");
                    record(&mut report);
                }
                Ok(false) => tracing::debug!(?action, "nothing to reap: the session changed meanwhile"),
                Err(error) => {
                    tracing::warn!(?action, %error, "reap action failed; the next pass tries again");
                    report.failed.push(ReapFailure { id: id.clone(), error });
                }
            }
        }
        if !dry_run {
            self.notify(&healthy, &verdicts, now).await;
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
        // OOM kills inside sessions since the previous pass, whichever reaper (CLI or serve)
        // ran it: the count seen is on each row.
        match self.new_oom_kills(dry_run).await {
            Ok(kills) => report.oom_kills = kills,
            Err(e) => tracing::debug!(error = %e, "OOM kills not read"),
        }
        for k in &report.oom_kills {
            tracing::warn!(
                session = %k.id,
                user = %k.user,
                kills = k.kills,
                "out of memory: the kernel killed processes inside the session (the session goes on)"
            );
        }
        drop(reap_lock);
        Ok(report)
    }

    /// Reads each session's activity signals, for all sessions at once.
    async fn read_signals(&self, rows: &[&SessionRow]) -> Vec<Observed> {
        let Ok(engine) = self.engine().await else {
            return vec![Observed::default(); rows.len()];
        };
        let started = std::time::Instant::now();
        let reads = rows.iter().map(|row| async move {
            let container = engine.activity(&container_ref(row), crate::ssh::CONTAINER_SSH_PORT).await;
            let gpu = match &row.gpu_uuid {
                Some(uuid) => self.gpu.compute_processes(uuid).unwrap_or_else(|e| {
                    tracing::debug!(session = %row.id, error = %e, "GPU processes not counted");
                    None
                }),
                None => None,
            };
            Observed::new(container, gpu)
        });
        let seen = futures_util::future::join_all(reads).await;
        tracing::debug!(sessions = rows.len(), took_ms = started.elapsed().as_millis() as u64, "activity read");
        seen
    }

    /// Judges each session on what was read and (unless dry) records it on its row.
    fn judge_all(&self, rows: &[&SessionRow], seen: &[Observed], now: i64, dry_run: bool) -> Vec<Verdict> {
        let mut verdicts = Vec::with_capacity(rows.len());
        for (row, seen) in rows.iter().zip(seen) {
            let verdict = judge(row, seen, &Policy::of(&self.settings, row), now);
            if !dry_run {
                if let Err(e) = self.store().record_activity(&row.id, &verdict.update) {
                    tracing::warn!(session = %row.id, error = %e, "activity not recorded");
                }
                if verdict.expires_at > row.expires_at {
                    tracing::debug!(session = %row.id, signal = verdict.signal, expires_at = verdict.expires_at, "activity moved the expiry");
                }
            }
            verdicts.push(verdict);
        }
        verdicts
    }

    /// Gives the warnings due and rewrites the expiry notices that moved, as each session's user
    /// inside its container. A failure is logged; the next pass tries again.
    async fn notify(&self, rows: &[&SessionRow], verdicts: &[Verdict], now: i64) {
        let Ok(engine) = self.engine().await else {
            return;
        };
        let jobs = rows.iter().zip(verdicts).filter(|(_, v)| !v.idle).filter_map(|(row, verdict)| {
            let (deadline, ending) = verdict.ending();
            let warning = warning_for(row, verdict, now).map(|(_, _, minutes)| minutes);
            let notice = notice_due(row.activity.notice_deadline, deadline);
            if warning.is_none() && !notice {
                return None;
            }
            let uid = match self.store().user(&row.user) {
                Ok(Some(u)) => u.uid,
                _ => return None,
            };
            let policy = Policy::of(&self.settings, row);
            let message = warning.map(|_| warning_text(ending, deadline, now, policy.idle_timeout_minutes));
            let notice_line = notice.then(|| format!("{deadline} {}", ending.as_str()));
            let command = vec![
                "sh".to_string(),
                "-c".to_string(),
                NOTIFY_SCRIPT.to_string(),
                "sh".to_string(),
                message.clone().unwrap_or_default(),
                notice_line.unwrap_or_default(),
                format!("/home/{}", row.user),
            ];
            Some(async move {
                let ran = engine.exec_as(&container_ref(row), uid, &command, NOTIFY_TIMEOUT).await;
                let out = match ran {
                    Ok(out) if out.exit_code == 0 => out,
                    Ok(out) => {
                        let output = out.output.trim();
                        tracing::warn!(session = %row.id, code = out.exit_code, output, "session not notified; the next pass tries again");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(session = %row.id, error = %e, "session not notified; the next pass tries again");
                        return;
                    }
                };
                // The script names what it could not write; a warning that reached the terminals
                // is given, even where the log or the file could not be written (a user's own doing).
                if !out.output.trim().is_empty() {
                    tracing::warn!(session = %row.id, output = %out.output.trim(), "session notice incomplete");
                }
                if let Some(minutes) = warning {
                    tracing::info!(session = %row.id, user = %row.user, reason = ending.as_str(), deadline, minutes, "session warned");
                    if let Err(e) = self.store().set_warned(&row.id, deadline, minutes) {
                        tracing::warn!(session = %row.id, error = %e, "warning not recorded");
                    }
                }
                if notice
                    && !out.output.contains(NOTICE_FAILED)
                    && let Err(e) = self.store().set_notice(&row.id, deadline)
                {
                    tracing::warn!(session = %row.id, error = %e, "expiry notice not recorded");
                }
            })
        });
        futures_util::future::join_all(jobs.collect::<Vec<_>>()).await;
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
            Action::Expire { id } | Action::Vanished { id } | Action::Idle { id } => {
                let row = row(id)?;
                // The row goes first, in one statement that checks it still qualifies, so an
                // extend committed after our listing wins. If removing the container then fails,
                // it is an orphan (labelled, with no row) that the next pass removes.
                let deleted = match action {
                    Action::Expire { .. } => self.store().delete_expired(id, now)?,
                    // Only if no activity was recorded since this pass judged it idle.
                    Action::Idle { .. } => self.store().delete_idle(id, row.activity.last_activity_at)?,
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
