//! `sandman serve`: the HTTP API of docs/api.md on tiny_http, a thin layer over the same session
//! service the CLI uses, plus the reaper loop.
//!
//! Threads: tiny_http reads each connection's request headers on a thread of its own, at most
//! `MAX_CONNECTIONS` at once, so a client that stalls while sending headers never reaches us;
//! idleness, the head, the body and writes all have deadlines (`api_body_timeout_secs`), and the
//! head a size limit. `api_workers` threads take complete requests and answer the quick ones
//! (health, reads, metrics) themselves. Creates, removals and extends, which wait on the engine
//! or on the database's write lock, are handed to the async runtime (its blocking pool), at most
//! `api_max_concurrent_creates` creates and as many other changes at once (beyond, 503 with
//! `Retry-After`), so that however long they take the workers stay free. A request whose body is
//! still on the wire, and an answer the client does not take at once, are handed to a
//! short-lived thread of their own, so a slow client cannot hold a worker. The reaper is a task
//! on the async runtime.

pub mod auth;
pub mod cors;
mod errors;
mod exchange;
pub mod metrics;
mod openapi;
pub mod routes;

use std::borrow::Cow;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::sessions::Sessions;
use crate::store::Version;

use auth::Tokens;
use cors::Cors;
use errors::ApiError;
use exchange::{Exchange, Reply};
use metrics::Metrics;
use routes::Handled;

/// Requests whose body is still arriving, and answers a client is slow to take, get a thread
/// each; beyond this many at once, a worker does that work itself (still within the deadlines).
const MAX_EXTRA_THREADS: usize = 64;
/// Connections served at once, each with a thread of tiny_http; beyond this, new connections
/// wait in the listen backlog. Each deadline is `api_body_timeout_secs`, so an idle or stalled
/// client holds its place that long at most.
const MAX_CONNECTIONS: usize = 1024;
/// The request line and headers together; beyond this, 431 and the connection is closed.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Connections the kernel queues before they are accepted.
const LISTEN_BACKLOG: libc::c_int = 1024;
/// `accept` failing this long without a success (e.g. out of descriptors, longer than any
/// connection's deadlines) means serve can no longer take connections: it exits non-zero, so
/// that a supervisor restarts it.
const ACCEPT_FAILURE_LIMIT: Duration = Duration::from_secs(30);

/// What every handler shares.
pub struct App {
    pub sessions: Arc<Sessions>,
    runtime: tokio::runtime::Handle,
    tokens: Tokens,
    cors: Cors,
    metrics: Metrics,
    /// GET /openapi.json, made once.
    openapi: Arc<[u8]>,
    /// The serialized session list and the store version it was read at.
    list_cache: Mutex<Option<(Version, Arc<[u8]>)>>,
    extra_threads: AtomicUsize,
    /// Creates in progress; a create holds one slot while it runs.
    creates: Arc<Semaphore>,
    /// Removals and extends in progress, apart from creates, so that stuck creates never stop a
    /// removal.
    changes: Arc<Semaphore>,
    /// Answers being worked out on the async runtime, for a graceful stop.
    on_runtime: AtomicUsize,
    stopping: AtomicBool,
}

impl App {
    /// Answers one request: here, or on the async runtime for the slow ones (see `later`).
    fn handle(self: &Arc<App>, rq: tiny_http::Request) {
        let started = Instant::now();
        let mut ex = Exchange::new(rq, self.clone());
        match routes::dispatch(self, &mut ex) {
            Handled::Now(reply) => self.answer(ex, reply, started),
            Handled::Later(work) => {
                self.on_runtime.fetch_add(1, Ordering::SeqCst);
                let app = self.clone();
                // A thread of the runtime's blocking pool (one per slot, so bounded): the
                // service's blocking steps (file locks, the database's lock wait) then never
                // stall the runtime's own few threads, which other creates need to progress.
                self.runtime.spawn_blocking(move || {
                    let reply = std::panic::catch_unwind(AssertUnwindSafe(|| app.runtime.block_on(work)))
                        .unwrap_or_else(|_| {
                            tracing::error!("a request handler panicked; answered 500");
                            ApiError::from(Error::Internal(anyhow::anyhow!("the handler panicked"))).into_reply()
                        });
                    app.answer(ex, reply, started);
                    app.on_runtime.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    }

    /// Writes the answer and logs the request: method, path, status, duration (never bodies or
    /// headers).
    fn answer(&self, ex: Exchange, reply: Reply, started: Instant) {
        let (method, path) = (ex.method().to_string(), ex.path().to_string());
        let origin = ex.header("Origin").map(str::to_string);
        let cors = if method == "OPTIONS" && ex.header("Access-Control-Request-Method").is_some() {
            let requested = ex.header("Access-Control-Request-Headers").map(str::to_string);
            self.cors.preflight(origin.as_deref(), requested.as_deref())
        } else {
            self.cors.headers(origin.as_deref())
        };
        let status = ex.respond(reply, cors);
        self.metrics.request(status);
        tracing::info!(
            method = %escape_controls(&method),
            path = %escape_controls(&path),
            status,
            ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
            "request"
        );
    }

    /// The answer to a slow request, worked out by `work` on the async runtime while one of
    /// `slots` is free; when none is, 503 with `Retry-After` at once. The slot is held while `work`
    /// runs.
    fn later<F>(
        self: &Arc<App>,
        slots: &Arc<Semaphore>,
        what: &str,
        work: impl FnOnce(Arc<App>) -> F,
    ) -> Result<Handled, ApiError>
    where
        F: Future<Output = Result<Reply, ApiError>> + Send + 'static,
    {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let max = self.sessions.settings.api_max_concurrent_creates;
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                format!("{max} {what} are already in progress (api_max_concurrent_creates); try again in a moment"),
            ));
        };
        let work = work(self.clone());
        Ok(Handled::Later(Box::pin(async move {
            let reply = work.await.unwrap_or_else(ApiError::into_reply);
            drop(slot);
            reply
        })))
    }

    /// Runs `work` on a thread of its own if fewer than `MAX_EXTRA_THREADS` are busy, else here.
    fn on_own_thread(self: &Arc<App>, name: &str, work: impl FnOnce() + Send + 'static) {
        if !try_take(&self.extra_threads, MAX_EXTRA_THREADS) {
            return work();
        }
        let app = self.clone();
        let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
            if std::panic::catch_unwind(AssertUnwindSafe(work)).is_err() {
                tracing::error!("a request handler panicked; answered 500");
            }
            app.extra_threads.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            // The request went down with the closure: tiny_http answered it with 500.
            tracing::error!(error = %e, "cannot start a thread for a request");
            self.extra_threads.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Serves until SIGTERM or SIGINT, then lets requests in flight finish and the reaper stop.
/// `announce` is called once the port is open, with its address.
pub async fn serve(sessions: Arc<Sessions>, tokens: Tokens, announce: impl FnOnce(SocketAddr)) -> Result<()> {
    // Installed first, so that a signal from now on means a graceful stop.
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::Internal(e.into()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::Internal(e.into()))?;
    raise_open_files_limit();

    let s = &sessions.settings;
    let addr = SocketAddr::new(s.api_bind, s.api_port);
    let listener = TcpListener::bind(addr).map_err(|e| Error::Unavailable(format!("cannot listen on {addr}: {e}")))?;
    // The standard library listens with a backlog of 128: a burst of connections beyond it has
    // its handshakes dropped and retried a second later. A longer queue (the kernel caps it at
    // net.core.somaxconn) keeps a burst, and connections beyond MAX_CONNECTIONS, waiting instead.
    // SAFETY: listen(2) on the descriptor the listener owns; calling it again only resizes the queue.
    unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
    let addr = listener.local_addr().io_context(|| "read the listening address")?;
    let deadline = Duration::from_secs(s.api_body_timeout_secs);
    let limits = tiny_http::Limits::default()
        .with_max_head_bytes(MAX_HEAD_BYTES)
        .with_idle_timeout(deadline)
        .with_head_timeout(deadline)
        .with_body_timeout(deadline)
        .with_write_timeout(Some(deadline))
        .with_max_connections(MAX_CONNECTIONS)
        .with_accept_failure_limit(ACCEPT_FAILURE_LIMIT);
    let http = Arc::new(
        tiny_http::Server::from_listener_with_limits(listener, None, limits)
            .map_err(|e| Error::Unavailable(format!("cannot serve on {addr}: {e}")))?,
    );
    let workers = s.api_workers;
    let app = Arc::new(App {
        cors: Cors::new(&s.cors_origins, routes::all_methods()),
        sessions: sessions.clone(),
        runtime: tokio::runtime::Handle::current(),
        tokens,
        metrics: Metrics::default(),
        openapi: openapi::document(s.max_ttl_minutes, crate::sessions::max_idle_timeout(s)).into(),
        list_cache: Mutex::new(None),
        extra_threads: AtomicUsize::new(0),
        creates: Arc::new(Semaphore::new(s.api_max_concurrent_creates)),
        changes: Arc::new(Semaphore::new(s.api_max_concurrent_creates)),
        on_runtime: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
    });

    let (stop_reaper, stopped) = watch::channel(false);
    let reaper = tokio::spawn(reaper(app.clone(), stopped));
    // A worker that finds the server broken (tiny_http stops accepting when `accept` fails for
    // longer than its limit, or its accept thread dies) says so here; the process then exits
    // with an error so that a supervisor restarts it.
    let (fatal, mut fatal_rx) = mpsc::unbounded_channel::<String>();
    let threads: Vec<_> = (0..workers)
        .map(|i| {
            let (http, app, fatal) = (http.clone(), app.clone(), fatal.clone());
            std::thread::Builder::new()
                .name(format!("api-worker-{i}"))
                .spawn(move || worker(&http, &app, &fatal))
                .map_err(|e| Error::Internal(e.into()))
        })
        .collect::<Result<_>>()?;
    tracing::info!(%addr, workers, "serving the API");
    announce(addr);

    let outcome = tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
        Some(why) = fatal_rx.recv() => Err(why),
    };
    match &outcome {
        Ok(signal) => tracing::info!("{signal}: stopping after the requests in flight"),
        Err(why) => tracing::error!("{why}; stopping"),
    }
    app.stopping.store(true, Ordering::SeqCst);
    // Each unblock ends one worker's wait, after the requests already queued.
    for _ in 0..workers {
        http.unblock();
    }
    let _ = stop_reaper.send(true);
    let app_for_join = app.clone();
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
        // Bodies still arriving and answers still being written have their deadlines; creates
        // theirs (`ssh_ready_timeout_secs`).
        while app_for_join.extra_threads.load(Ordering::SeqCst) > 0
            || app_for_join.on_runtime.load(Ordering::SeqCst) > 0
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .map_err(|e| Error::Internal(e.into()))?;
    let _ = reaper.await;
    tracing::info!("stopped");
    outcome.map(|_| ()).map_err(Error::Unavailable)
}

fn worker(http: &tiny_http::Server, app: &Arc<App>, fatal: &mpsc::UnboundedSender<String>) {
    loop {
        let rq = match http.recv() {
            Ok(rq) => rq,
            Err(_) if app.stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                let _ = fatal.send(format!("the listener failed: {e}"));
                return;
            }
        };
        if exchange::body_on_wire(&rq) {
            let owned = app.clone();
            app.on_own_thread("api-body", move || guarded(&owned, rq));
        } else {
            guarded(app, rq);
        }
    }
}

/// A panic (a bug) costs one request, answered 500 by tiny_http, not the worker.
fn guarded(app: &Arc<App>, rq: tiny_http::Request) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| app.handle(rq))).is_err() {
        tracing::error!("a request handler panicked; answered 500");
        app.metrics.request(500);
    }
}

/// A client's text for the log: control characters (a terminal escape, a line break that would
/// forge a log line) are written as escapes such as `\u{1b}` and `\n`.
fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

fn try_take(count: &AtomicUsize, max: usize) -> bool {
    count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).is_ok()
}

/// One pass at start-up (reconciliation after a crash or reboot), then one every
/// `reap_interval_secs`. The service's lock makes it safe beside cron-driven `sandman reap`.
async fn reaper(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(app.sessions.settings.reap_interval_secs);
    loop {
        match app.sessions.reap(false).await {
            Ok(report) => {
                app.metrics.reaped(Ok(&report));
                if report.total() > 0 {
                    tracing::info!(
                        expired = report.expired.len(),
                        idle = report.idle.len(),
                        failed = report.failed_sessions.len(),
                        abandoned = report.abandoned.len(),
                        vanished = report.vanished.len(),
                        orphans = report.orphans.len(),
                        "reaped"
                    );
                }
            }
            Err(e) => {
                app.metrics.reaped(Err(()));
                tracing::warn!(error = %e, "reap failed; trying again in {}s", every.as_secs());
            }
        }
        observe_usage(&app).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Measures what the sessions use, for `/metrics` (the reap pass logs their OOM kills).
async fn observe_usage(app: &App) {
    match app.sessions.usage().await {
        Ok(usage) => app.metrics.observe_usage(usage),
        Err(e) => tracing::debug!(error = %e, "session usage not measured"),
    }
}

/// tiny_http stops accepting when `accept` keeps failing, e.g. when out of file descriptors:
/// use the hard limit rather than the usual soft 1024 (each connection holds one).
fn raise_open_files_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_for_the_log() {
        assert!(matches!(escape_controls("/sessions/abc"), Cow::Borrowed("/sessions/abc")));
        assert_eq!(escape_controls("/a\x1b[31mred\nINFO forged\r\x7f"), "/a\\u{1b}[31mred\\nINFO forged\\r\\u{7f}");
    }
}
