//! `GET /metrics` in the Prometheus text format: what is in use now (read from the store at
//! scrape time, so other processes' sessions count too) and what this server has done.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::sessions::ReapReport;
use crate::store::{SessionRow, State};

/// Upper bounds of the create latency buckets, in seconds.
const CREATE_BUCKETS: [f64; 9] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Default)]
pub struct Metrics(Mutex<Counters>);

#[derive(Default)]
struct Counters {
    requests: BTreeMap<u16, u64>,
    create_buckets: [u64; CREATE_BUCKETS.len()],
    create_count: u64,
    create_sum: f64,
    create_failures: u64,
    reaper_runs: u64,
    reaper_removed: u64,
    reaper_errors: u64,
}

/// Gauges read at scrape time.
pub struct InUse<'a> {
    pub sessions: &'a [SessionRow],
    pub ports_total: u32,
    /// None when the GPU backend cannot be asked.
    pub gpu_slices_free: Option<usize>,
}

impl Metrics {
    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request(&self, status: u16) {
        *self.counters().requests.entry(status).or_default() += 1;
    }

    /// A create through the API: its duration if it succeeded.
    pub fn create(&self, took: Duration, ok: bool) {
        let mut c = self.counters();
        if !ok {
            c.create_failures += 1;
            return;
        }
        let secs = took.as_secs_f64();
        for (i, bound) in CREATE_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                c.create_buckets[i] += 1;
            }
        }
        c.create_count += 1;
        c.create_sum += secs;
    }

    pub fn reaped(&self, result: Result<&ReapReport, ()>) {
        let mut c = self.counters();
        match result {
            Ok(r) if r.busy => {}
            Ok(r) => {
                c.reaper_runs += 1;
                c.reaper_removed += r.total() as u64;
            }
            Err(()) => c.reaper_errors += 1,
        }
    }

    pub fn render(&self, now: &InUse) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let running = now.sessions.iter().filter(|s| s.state == State::Running).count();
        let creating = now.sessions.len() - running;
        gauge(
            "sandman_sessions",
            "Sessions in the store, by state.",
            &[("{state=\"running\"}", running as f64), ("{state=\"creating\"}", creating as f64)],
        );
        let slices = now.sessions.iter().filter(|s| s.gpu_uuid.is_some()).count();
        gauge(
            "sandman_gpu_slices_in_use",
            "GPU devices (MIG instances or whole GPUs) held by sessions.",
            &[("", slices as f64)],
        );
        if let Some(free) = now.gpu_slices_free {
            gauge("sandman_gpu_slices_free", "MIG instances no session holds.", &[("", free as f64)]);
        }
        gauge("sandman_ssh_ports_in_use", "SSH ports held by sessions.", &[("", now.sessions.len() as f64)]);
        gauge("sandman_ssh_ports_total", "Size of the SSH port range.", &[("", f64::from(now.ports_total))]);

        let c = self.counters();
        let mut counter = |name: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let requests: Vec<(String, u64)> =
            c.requests.iter().map(|(status, n)| (format!("{{status=\"{status}\"}}"), *n)).collect();
        counter("sandman_http_requests_total", "HTTP requests answered, by status code.", &requests);
        counter(
            "sandman_create_failures_total",
            "Session creates through the API that failed.",
            &[(String::new(), c.create_failures)],
        );
        counter(
            "sandman_reaper_runs_total",
            "Reaper passes completed by this server.",
            &[(String::new(), c.reaper_runs)],
        );
        counter(
            "sandman_reaper_removed_total",
            "Sessions and containers removed by this server's reaper.",
            &[(String::new(), c.reaper_removed)],
        );
        counter("sandman_reaper_errors_total", "Reaper passes that failed.", &[(String::new(), c.reaper_errors)]);

        let name = "sandman_create_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to create a session through the API, until its sshd answers.\n# TYPE {name} histogram"
        );
        for (bound, n) in CREATE_BUCKETS.iter().zip(c.create_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", c.create_count);
        let _ = writeln!(out, "{name}_sum {}", c.create_sum);
        let _ = writeln!(out, "{name}_count {}", c.create_count);
        out
    }
}

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
            "sandman_create_duration_seconds_bucket{le=\"0.5\"} 0",
            "sandman_create_duration_seconds_bucket{le=\"1\"} 1",
            "sandman_create_duration_seconds_bucket{le=\"5\"} 2",
            "sandman_create_duration_seconds_bucket{le=\"+Inf\"} 2",
            "sandman_create_duration_seconds_count 2",
            "sandman_create_duration_seconds_sum 3.7",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("gpu_slices_free"));
        // Every sample belongs to a family declared with # TYPE.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "{l}");
        }
    }
}
