//! `GET /metrics` in the OpenMetrics text format, encoded by prometheus-client: what is in use now
//! (read from the store at scrape time, so other processes' sessions count too) and what this
//! server has done.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use std::sync::Mutex;

use crate::sessions::{ReapReport, SessionUsage};
use crate::store::{SessionRow, State};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the create latency buckets, in seconds.
const CREATE_BUCKETS: [f64; 9] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabel {
    session: String,
    user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// What this server has done; the counters are shared with `registry`, which encodes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabel, Counter>,
    create_duration: Histogram,
    create_failures: Counter,
    reaper_runs: Counter,
    reaper_removed: Counter,
    reaper_errors: Counter,
    reaper_failed_actions: Counter,
    reaped_by_reason: Family<ReasonLabel, Counter>,
    /// Per-session use as of the last reaper pass.
    usage: Mutex<Vec<SessionUsage>>,
}

/// Gauges read at scrape time.
pub struct InUse<'a> {
    pub sessions: &'a [SessionRow],
    pub ports_total: u32,
    /// None when the GPU backend cannot be asked.
    pub gpu_slices_free: Option<usize>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<StatusLabel, Counter>::default();
        registry.register("sandman_http_requests", "HTTP requests answered, by status code", requests.clone());
        let reaped_by_reason = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "sandman_reaped",
            "Sessions and containers this server's reaper removed, by reason: expired, idle, failed, abandoned, \
             vanished, orphan",
            reaped_by_reason.clone(),
        );
        let create_duration = Histogram::new(CREATE_BUCKETS);
        registry.register_with_unit(
            "sandman_create_duration",
            "Time to create a session through the API, until its sshd answers",
            Unit::Seconds,
            create_duration.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        Metrics {
            create_failures: counter(
                &mut registry,
                "sandman_create_failures",
                "Session creates through the API that failed",
            ),
            reaper_runs: counter(&mut registry, "sandman_reaper_runs", "Reaper passes completed by this server"),
            reaper_removed: counter(
                &mut registry,
                "sandman_reaper_removed",
                "Sessions and containers removed by this server's reaper",
            ),
            reaper_errors: counter(&mut registry, "sandman_reaper_errors", "Reaper passes that failed"),
            reaper_failed_actions: counter(
                &mut registry,
                "sandman_reaper_failed_actions",
                "Removals and releases a reaper pass of this server could not do (the pass went on)",
            ),
            registry,
            reaped_by_reason,
            requests,
            create_duration,
            usage: Mutex::default(),
        }
    }
}

impl Metrics {
    pub fn request(&self, status: u16) {
        self.requests.get_or_create(&StatusLabel { status }).inc();
    }

    /// A create through the API: its duration if it succeeded.
    pub fn create(&self, took: Duration, ok: bool) {
        if ok {
            self.create_duration.observe(took.as_secs_f64());
        } else {
            self.create_failures.inc();
        }
    }

    /// The outcome of one reaper pass of this server.
    pub fn reaped(&self, result: Result<&ReapReport, ()>) {
        match result {
            Ok(r) if r.busy => {}
            Ok(r) => {
                self.reaper_runs.inc();
                self.reaper_removed.inc_by(r.total() as u64);
                self.reaper_failed_actions.inc_by(r.failed.len() as u64);
                for (reason, n) in [
                    ("expired", r.expired.len()),
                    ("idle", r.idle.len()),
                    ("failed", r.failed_sessions.len()),
                    ("abandoned", r.abandoned.len()),
                    ("vanished", r.vanished.len()),
                    ("orphan", r.orphans.len()),
                ] {
                    if n > 0 {
                        self.reaped_by_reason.get_or_create(&ReasonLabel { reason }).inc_by(n as u64);
                    }
                }
            }
            Err(()) => {
                self.reaper_errors.inc();
            }
        }
    }

    /// Keeps what the sessions use as of this pass, for `render`.
    pub fn observe_usage(&self, usage: Vec<SessionUsage>) {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = usage;
    }

    pub fn render(&self, now: &InUse) -> String {
        let mut current = Registry::default();
        let running = now.sessions.iter().filter(|s| s.state == State::Running).count();
        let sessions = Family::<StateLabel, Gauge>::default();
        sessions.get_or_create(&StateLabel { state: "running" }).set(running as i64);
        sessions.get_or_create(&StateLabel { state: "creating" }).set((now.sessions.len() - running) as i64);
        current.register("sandman_sessions", "Sessions in the store, by state", sessions);
        let slices = now.sessions.iter().filter(|s| s.gpu_uuid.is_some()).count();
        let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
            let g = Gauge::<i64>::default();
            g.set(value);
            registry.register(name, help, g);
        };
        gauge(
            &mut current,
            "sandman_gpu_slices_in_use",
            "GPU devices (MIG instances or whole GPUs) held by sessions",
            slices as i64,
        );
        if let Some(free) = now.gpu_slices_free {
            gauge(&mut current, "sandman_gpu_slices_free", "MIG instances no session holds", free as i64);
        }
        gauge(&mut current, "sandman_ssh_ports_in_use", "SSH ports held by sessions", now.sessions.len() as i64);
        gauge(&mut current, "sandman_ssh_ports_total", "Size of the SSH port range", i64::from(now.ports_total));
        let workspace_bytes = Family::<SessionLabel, Gauge>::default();
        let oom_kills = Family::<SessionLabel, Counter>::default();
        for u in self.usage.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let label = SessionLabel { session: u.id.clone(), user: u.user.clone() };
            if let Some(bytes) = u.workspace_bytes {
                workspace_bytes.get_or_create(&label).set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
            if let Some(kills) = u.oom_kills {
                oom_kills.get_or_create(&label).inc_by(kills);
            }
        }
        current.register_with_unit(
            "sandman_workspace",
            "Disk use of each running session's workspace, as of the last reaper pass",
            Unit::Bytes,
            workspace_bytes,
        );
        current.register(
            "sandman_session_oom_kills",
            "Processes the kernel's OOM killer killed inside each running session's container",
            oom_kills,
        );

        // Idle detection, per running session, as the last reap pass (any process's) recorded it;
        // an ended session's series are gone with its row.
        let at = chrono::Utc::now().timestamp();
        let ssh = Family::<SessionLabel, Gauge>::default();
        let cpu = Family::<SessionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let gpu = Family::<SessionLabel, Gauge>::default();
        let idle = Family::<SessionLabel, Gauge>::default();
        let expiry = Family::<SessionLabel, Gauge>::default();
        for s in now.sessions.iter().filter(|s| s.state == State::Running) {
            let label = SessionLabel { session: s.id.clone(), user: s.user.clone() };
            let a = &s.activity;
            if let Some(n) = a.ssh_connections {
                ssh.get_or_create(&label).set(i64::from(n));
            }
            if let Some(usec) = a.cpu_usage_usec {
                cpu.get_or_create(&label).set(usec as f64 / 1e6);
            }
            if let Some(n) = a.gpu_processes {
                gpu.get_or_create(&label).set(i64::from(n));
            }
            idle.get_or_create(&label).set((at - a.since(s.created_at)).max(0));
            expiry.get_or_create(&label).set((s.expires_at - at).max(0));
        }
        current.register(
            "sandman_session_ssh_connections",
            "Established SSH connections of each running session, at the last reaper pass",
            ssh,
        );
        current.register_with_unit(
            "sandman_session_cpu",
            "CPU time each running session's container has used, at the last reaper pass",
            Unit::Seconds,
            cpu,
        );
        current.register(
            "sandman_session_gpu_processes",
            "Compute processes on each running session's GPU device, at the last reaper pass",
            gpu,
        );
        current.register_with_unit(
            "sandman_session_idle",
            "Time since each running session's last activity (SSH, CPU or GPU), or since its creation",
            Unit::Seconds,
            idle,
        );
        current.register_with_unit(
            "sandman_session_expires_in",
            "Time until each running session's expiry",
            Unit::Seconds,
            expiry,
        );

        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &current)
            .and_then(|()| encode_registry(&mut out, &self.registry))
            .and_then(|()| encode_eof(&mut out));
        out
    }
}

/// How many of a pass's removals and releases failed.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.request(200);
        m.request(200);
        m.request(404);
        m.create(Duration::from_millis(700), true);
        m.create(Duration::from_secs(3), true);
        m.create(Duration::from_secs(1), false);
        m.reaped(Ok(&ReapReport { expired: vec!["a".into(), "b".into()], ..Default::default() }));
        m.reaped(Ok(&ReapReport { busy: true, ..Default::default() }));
        m.reaped(Err(()));
        let text = m.render(&InUse { sessions: &[], ports_total: 10001, gpu_slices_free: None });
        for line in [
            "sandman_sessions{state=\"running\"} 0",
            "sandman_ssh_ports_total 10001",
            "sandman_http_requests_total{status=\"200\"} 2",
            "sandman_http_requests_total{status=\"404\"} 1",
            "sandman_create_failures_total 1",
            "sandman_reaper_runs_total 1",
            "sandman_reaper_removed_total 2",
            "sandman_reaper_errors_total 1",
            "sandman_reaper_failed_actions_total 0",
            "sandman_create_duration_seconds_bucket{le=\"0.5\"} 0",
            "sandman_create_duration_seconds_bucket{le=\"1.0\"} 1",
            "sandman_create_duration_seconds_bucket{le=\"5.0\"} 2",
            "sandman_create_duration_seconds_bucket{le=\"+Inf\"} 2",
            "sandman_create_duration_seconds_count 2",
            "sandman_create_duration_seconds_sum 3.7",
            "# TYPE sandman_create_duration_seconds histogram",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("gpu_slices_free"));
        assert!(!text.contains("sandman_workspace_bytes{"), "nothing measured yet");
    }

    #[test]
    fn session_usage_is_rendered() {
        let m = Metrics::default();
        let usage = |kills: Option<u64>| SessionUsage {
            id: "s1".into(),
            user: "alice".into(),
            workspace_bytes: Some(4096),
            oom_kills: kills,
        };
        m.observe_usage(vec![usage(Some(0))]);
        m.observe_usage(vec![usage(Some(2))]);
        let text = m.render(&InUse { sessions: &[], ports_total: 1, gpu_slices_free: None });
        for line in [
            "sandman_workspace_bytes{session=\"s1\",user=\"alice\"} 4096",
            "sandman_session_oom_kills_total{session=\"s1\",user=\"alice\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        m.observe_usage(vec![usage(None)]);
        let text = m.render(&InUse { sessions: &[], ports_total: 1, gpu_slices_free: None });
        assert!(!text.contains("sandman_session_oom_kills_total{"), "unreadable counts are left out:\n{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn idle_detection_is_rendered_per_running_session_and_reaps_by_reason() {
        let m = Metrics::default();
        m.reaped(Ok(&ReapReport {
            expired: vec!["a".into()],
            idle: vec!["b".into(), "c".into()],
            orphans: vec!["x".into()],
            ..Default::default()
        }));
        let now = chrono::Utc::now().timestamp();
        let row = |id: &str, state: State| SessionRow {
            user: format!("u-{id}"),
            created_at: now - 600,
            expires_at: now + 3000,
            activity: crate::store::Activity {
                ssh_connections: Some(2),
                gpu_processes: Some(1),
                cpu_usage_usec: Some(1_500_000),
                last_activity_at: Some(now - 120),
                ..Default::default()
            },
            ..SessionRow::example(id, state)
        };
        let sessions = [row("s1", State::Running), row("s2", State::Failed)];
        let text = m.render(&InUse { sessions: &sessions, ports_total: 1, gpu_slices_free: None });
        for line in [
            "sandman_reaped_total{reason=\"idle\"} 2",
            "sandman_reaped_total{reason=\"expired\"} 1",
            "sandman_reaped_total{reason=\"orphan\"} 1",
            "sandman_session_ssh_connections{session=\"s1\",user=\"u-s1\"} 2",
            "sandman_session_gpu_processes{session=\"s1\",user=\"u-s1\"} 1",
            "sandman_session_cpu_seconds{session=\"s1\",user=\"u-s1\"} 1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        let value = |name: &str| -> i64 {
            let prefix = format!("{name}{{session=\"s1\",user=\"u-s1\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {name}")).parse().unwrap()
        };
        assert!((120..125).contains(&value("sandman_session_idle_seconds")), "{text}");
        assert!((2995..=3000).contains(&value("sandman_session_expires_in_seconds")), "{text}");
        assert!(!text.contains("session=\"s2\""), "only running sessions have series:\n{text}");
        assert!(!text.contains("reason=\"vanished\""), "{text}");
    }
}
