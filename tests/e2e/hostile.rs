//! `sandman serve` against hostile clients, unauthenticated, on loopback: unsupported protocol
//! versions, idle sockets, stalled small bodies, an endless header line and slowloris, all at
//! once. Meanwhile `/healthz` must stay fast; afterwards the process must be back to its size
//! (memory, threads, descriptors) and still create sessions. The figures printed at the end are
//! those recorded in bench/results.md ("hostile clients").

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::Env;
use crate::http::{Serve, exchange, request, token_file};

/// Request lines of an unsupported version (half `HTTP/2.0`, half `HTTP/3.0`).
const VERSION_LINES: usize = 1000;
/// Connections that send nothing, held this long by the client.
const IDLE_SOCKETS: usize = 500;
const IDLE_HOLD: Duration = Duration::from_secs(30);
/// Requests announcing a small body (read by tiny_http itself) that never comes.
const SMALL_BODY_STALLS: usize = 100;
/// One header line without CRLF, streamed until the server cuts it off.
const LONG_LINE_BYTES: usize = 200 << 20;
/// Connections sending their head one byte every `SLOWLORIS_EVERY`.
const SLOWLORIS: usize = 50;
const SLOWLORIS_EVERY: Duration = Duration::from_millis(500);
const SLOWLORIS_FOR: Duration = Duration::from_secs(16);
/// serve's deadlines (`api_body_timeout_secs`, its default).
const DEADLINE: Duration = Duration::from_secs(10);
/// The default `api_workers`, and how many other threads serve may keep when idle: main, 2
/// async workers, the accept thread, 4 kept by tiny_http's pool, and a margin for the async
/// runtime's blocking threads.
const API_WORKERS: usize = 8;
const OTHER_THREADS: usize = 16;

#[test]
fn hostile_clients_cannot_take_the_api_down() {
    // The client side holds every attacking socket at once.
    raise_open_files_limit(IDLE_SOCKETS + SMALL_BODY_STALLS + SLOWLORIS + 256);
    let env = Env::new("hostile");
    let (tokens, token) = token_file(&env);
    let serve = Serve::start_with(&env, &tokens, &[("SANDMAN_GPU_BACKEND", "none")]);
    let (pid, port) = (serve.pid(), serve.port);
    assert_eq!(serve.get("/sessions").status, 200);
    thread::sleep(Duration::from_millis(300));
    let (fds_before, threads_before, rss_before) = (open_fds(pid), threads(pid), rss_kib(pid));

    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let r = request(port, "GET", "/healthz", &[], None);
                latencies.push(t.elapsed());
                assert_eq!(r.status, 200, "{}", r.text());
                thread::sleep(Duration::from_millis(20));
            }
            latencies
        })
    };

    let started = Instant::now();
    let attacks: Vec<thread::JoinHandle<String>> = vec![
        thread::spawn(move || unsupported_versions(port)),
        thread::spawn(move || idle_sockets(port)),
        thread::spawn(move || small_body_stalls(port)),
        thread::spawn(move || endless_header_line(port)),
        thread::spawn(move || slowloris(port)),
    ];
    let mut findings: Vec<String> = attacks.into_iter().map(|a| a.join().expect("an attack's checks failed")).collect();
    let attack_time = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut latencies = prober.join().expect("/healthz failed during the attacks");
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
    let (p50, p99, max) = (pct(0.50), pct(0.99), latencies[latencies.len() - 1]);
    let rss_peak = hwm_kib(pid);

    // Afterwards: descriptors back within 15 s, threads down to the workers and a fixed few.
    let after = Instant::now();
    let mut fds = open_fds(pid);
    while fds > fds_before && after.elapsed() < Duration::from_secs(15) {
        thread::sleep(Duration::from_millis(100));
        fds = open_fds(pid);
    }
    let fds_back_in = after.elapsed();
    let mut thread_count = threads(pid);
    while thread_count > API_WORKERS + OTHER_THREADS && after.elapsed() < Duration::from_secs(15) {
        thread::sleep(Duration::from_millis(100));
        thread_count = threads(pid);
    }
    let rss = rss_kib(pid);

    findings.push(format!(
        "/healthz during the attacks: {} requests, p50 {}, p99 {}, max {}",
        latencies.len(),
        ms(p50),
        ms(p99),
        ms(max)
    ));
    findings.push(format!(
        "serve before: {fds_before} descriptors, {threads_before} threads, {} MiB resident",
        mib(rss_before)
    ));
    findings.push(format!(
        "serve after: {fds} descriptors ({} after the attacks), {thread_count} threads, {} MiB resident (peak {} MiB)",
        ms(fds_back_in),
        mib(rss),
        mib(rss_peak)
    ));
    findings.push(format!("attacks took {:.1} s in all", attack_time.as_secs_f64()));
    eprintln!("hostile clients:\n- {}", findings.join("\n- "));

    assert!(p99 <= Duration::from_millis(100), "/healthz p99 {p99:?} > 100 ms");
    assert!(fds <= fds_before, "{fds} descriptors open after 15 s, {fds_before} before");
    assert!(rss <= 64 * 1024, "{} MiB resident after the attacks", mib(rss));
    assert!(
        thread_count <= API_WORKERS + OTHER_THREADS,
        "{thread_count} threads after the attacks (api_workers {API_WORKERS} + {OTHER_THREADS})"
    );

    // Request hygiene: control characters reach the log escaped, conflicting lengths are refused.
    let r = exchange(port, b"GET /\x1b[31mred\x1b[0m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = exchange(
        port,
        format!(
            "POST /sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\
             Content-Length: 2\r\nContent-Length: 20\r\n\r\n{{}}"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 400);

    // And an authenticated create still works.
    let created = serve.call("POST", "/sessions", Some(&json!({"user_id": "hostile"})));
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["session_id"].as_str().unwrap().to_string();
    assert_eq!(serve.call("DELETE", &format!("/sessions/{id}"), None).status, 200);

    let log = serve.stop();
    assert!(log.contains(r"/\u{1b}[31mred\u{1b}[0m"), "the path is logged escaped:\n{log}");
    assert!(!log.contains('\x1b'), "a raw escape character reached the log");
}

/// Each client sends a request line of HTTP/2.0 or 3.0; every other pair leaves at once, as the
/// attack that once leaked a socket and a thread each did; the rest must read 505.
fn unsupported_versions(port: u16) -> String {
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            thread::spawn(move || {
                let mut answered = 0;
                for i in (w..VERSION_LINES).step_by(4) {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    let version = if i % 2 == 0 { "2.0" } else { "3.0" };
                    s.write_all(format!("GET / HTTP/{version}\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
                    if i % 4 < 2 {
                        continue;
                    }
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut all = Vec::new();
                    let _ = s.read_to_end(&mut all);
                    let text = String::from_utf8_lossy(&all);
                    assert!(text.starts_with("HTTP/1.1 505 "), "HTTP/{version}: {text:?}");
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let answered: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    format!(
        "{VERSION_LINES} HTTP/2.0 and HTTP/3.0 request lines: {answered} read 505 (and the connection closed), \
         the others left at once; {:.1} s",
        started.elapsed().as_secs_f64()
    )
}

/// Connections that never send a byte, held by the client for `IDLE_HOLD`: serve must have closed
/// every one of them at its idle limit.
fn idle_sockets(port: u16) -> String {
    let mut sockets: Vec<TcpStream> =
        (0..IDLE_SOCKETS).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    thread::sleep(IDLE_HOLD);
    let mut closed = 0;
    for s in &mut sockets {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        match s.read(&mut [0u8; 64]) {
            Ok(0) => closed += 1,
            Ok(_) => panic!("an idle connection got an answer"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => closed += 1,
            Err(e) => panic!("an idle connection is still open after {IDLE_HOLD:?}: {e}"),
        }
    }
    format!("{IDLE_SOCKETS} idle sockets held {} s: {closed} closed by serve, without an answer", IDLE_HOLD.as_secs())
}

/// Requests whose small body never comes: 408 once the body deadline passes.
fn small_body_stalls(port: u16) -> String {
    let started = Instant::now();
    let mut sockets: Vec<TcpStream> = (0..SMALL_BODY_STALLS)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(
                b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            )
            .unwrap();
            s
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for s in &mut sockets {
        s.set_read_timeout(Some(DEADLINE + Duration::from_secs(10))).unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 408 "), "a stalled small body got {text:?}");
        slowest = started.elapsed();
    }
    assert!(slowest < DEADLINE + Duration::from_secs(5), "the last 408 came after {slowest:?}");
    format!("{SMALL_BODY_STALLS} small-body stalls: all answered 408 and closed, the last after {}", ms(slowest))
}

/// One header line of up to 200 MB without CRLF: serve must stop taking it after its head limit.
fn endless_header_line(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: ").unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let (started, mut sent) = (Instant::now(), 0usize);
    let end = loop {
        if sent >= LONG_LINE_BYTES {
            break None;
        }
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) => break Some(e),
        }
    };
    let e = end.unwrap_or_else(|| panic!("serve took all {LONG_LINE_BYTES} bytes of one header line"));
    assert!(
        matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
        "the line was not cut off but: {e}"
    );
    // What the kernel buffers on loopback, not what serve read: it reads 16 KiB at most.
    assert!(sent < 32 << 20, "{sent} bytes sent before the cut");
    format!(
        "one header line without CRLF (200 MB offered): cut off after {} KiB sent (socket buffers included), in {}",
        sent / 1024,
        ms(started.elapsed())
    )
}

/// Heads sent one byte every half second: each must be cut off (408) at the head deadline.
fn slowloris(port: u16) -> String {
    let head = b"GET /sessions HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut sockets: Vec<(TcpStream, Option<Instant>)> =
        (0..SLOWLORIS).map(|_| (TcpStream::connect(("127.0.0.1", port)).unwrap(), None)).collect();
    let started = Instant::now();
    let mut at = 0;
    while started.elapsed() < SLOWLORIS_FOR {
        for (s, cut) in sockets.iter_mut().filter(|(_, cut)| cut.is_none()) {
            if s.write_all(&head[at % head.len()..at % head.len() + 1]).is_err() {
                *cut = Some(Instant::now());
            }
        }
        at += 1;
        thread::sleep(SLOWLORIS_EVERY);
    }
    let mut answered = 0;
    for (s, _) in &mut sockets {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut all = Vec::new();
        match s.read_to_end(&mut all) {
            Ok(_) if all.is_empty() => {}
            Ok(_) => {
                let text = String::from_utf8_lossy(&all);
                assert!(text.starts_with("HTTP/1.1 408 "), "slowloris got {text:?}");
                answered += 1;
            }
            // The 408 may be lost to the reset our later bytes caused.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a slowloris connection is still open after {SLOWLORIS_FOR:?}: {e}"),
        }
    }
    format!(
        "{SLOWLORIS} slowloris heads (a byte every {} ms for {} s): all cut off at the {} s head deadline, {answered} read 408",
        SLOWLORIS_EVERY.as_millis(),
        SLOWLORIS_FOR.as_secs(),
        DEADLINE.as_secs()
    )
}

/// With no descriptor left for a new connection, `accept` fails until serve gives up and exits
/// non-zero (what `Restart=on-failure` needs), instead of living on without answering.
#[test]
fn serve_exits_non_zero_once_it_can_no_longer_accept() {
    let env = Env::new("hostile-accept");
    let (tokens, _) = token_file(&env);
    // The reaper's pass at start opens descriptors for a moment; no other pass comes meanwhile.
    let serve =
        Serve::start_with(&env, &tokens, &[("SANDMAN_GPU_BACKEND", "none"), ("SANDMAN_REAP_INTERVAL_SECS", "3600")]);
    let pid = serve.pid();
    let fd_numbers = || -> std::collections::HashSet<usize> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
            .collect()
    };
    // Once serve is quiet (the same descriptors for a second), none is closed by itself, so the
    // lowest free number becomes the limit: no new descriptor can be made.
    let mut open = fd_numbers();
    let quiet = Instant::now();
    loop {
        thread::sleep(Duration::from_secs(1));
        let now = fd_numbers();
        if now == open {
            break;
        }
        assert!(quiet.elapsed() < Duration::from_secs(30), "serve's descriptors keep changing");
        open = now;
    }
    let lowest_free = (0..).find(|n| !open.contains(n)).unwrap() as libc::rlim_t;
    let lim = libc::rlimit { rlim_cur: lowest_free, rlim_max: lowest_free };
    // SAFETY: prlimit(2) on our own child, with a local struct.
    assert_eq!(unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) }, 0);
    let started = Instant::now();
    // Queued by the kernel; serve cannot take it.
    let _waiting = TcpStream::connect(("127.0.0.1", serve.port)).unwrap();
    while !exited(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve still runs 60 s after accept began to fail:\n{}",
            serve.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let waited = started.elapsed();
    let (status, log) = serve.terminate();
    assert!(!status.success(), "serve exited with {status}:\n{log}");
    assert!(log.contains("the listener failed"), "{log}");
    assert!(waited >= Duration::from_secs(25), "gave up after {waited:?}: shorter failures must be retried");
}

/// Whether our child `pid` has ended (a zombie until it is waited for).
fn exited(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.is_empty() || status.lines().any(|l| l.starts_with("State:") && l.contains('Z'))
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn status_field(pid: i32, name: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {status}"));
    line[name.len()..].trim().trim_end_matches(" kB").trim().parse().unwrap()
}

fn threads(pid: i32) -> usize {
    status_field(pid, "Threads:")
}

fn rss_kib(pid: i32) -> usize {
    status_field(pid, "VmRSS:")
}

fn hwm_kib(pid: i32) -> usize {
    status_field(pid, "VmHWM:")
}

fn mib(kib: usize) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Raises this process's soft limit on open files to at least `need` (up to the hard limit).
fn raise_open_files_limit(need: usize) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if (lim.rlim_cur as usize) < need {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur as usize >= need,
        "this test holds {need} sockets but may open only {} files: raise `ulimit -n`",
        lim.rlim_cur
    );
}
