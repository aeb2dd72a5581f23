//! What a hostile or broken client can make the server do, over real loopback sockets.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{Limits, Response, Server};

/// A server answering every request `200 ok` (reading a body of up to 64 KiB first) on a
/// thread of its own.
fn serve(limits: Limits) -> (Arc<Server>, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Arc::new(Server::from_listener_with_limits(listener, None, limits).unwrap());
    let s = server.clone();
    thread::spawn(move || {
        while let Ok(mut rq) = s.recv() {
            let mut body = Vec::new();
            let answer = match rq.as_reader().take(65536).read_to_end(&mut body) {
                Ok(_) => Response::from_string(format!("ok {}", body.len())),
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    Response::from_string("body too slow").with_status_code(408)
                }
                Err(e) => Response::from_string(e.to_string()).with_status_code(400),
            };
            let _ = rq.respond(answer);
        }
    });
    (server, port)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Everything the server sends until it closes the connection.
fn answer(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    String::from_utf8_lossy(&all).into_owned()
}

fn fast() -> Limits {
    Limits::default()
        .with_idle_timeout(Duration::from_millis(500))
        .with_head_timeout(Duration::from_millis(500))
        .with_body_timeout(Duration::from_millis(500))
}

/// Waits until the server serves no connection (each one ended, its thread free).
fn all_closed(server: &Server) {
    let start = Instant::now();
    while server.num_connections() > 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "{} connections left", server.num_connections());
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn unsupported_versions_are_answered_505_and_closed() {
    let (server, port) = serve(fast());
    for i in 0..200 {
        let mut s = connect(port);
        let version = if i % 2 == 0 { "2.0" } else { "3.0" };
        s.write_all(format!("GET / HTTP/{}\r\nHost: x\r\n\r\n", version).as_bytes()).unwrap();
        // Half of the clients leave at once, as the attack that leaked sockets did.
        if i % 4 < 2 {
            let got = answer(&mut s);
            assert!(got.starts_with("HTTP/1.1 505 "), "{}", got);
            assert!(got.contains("Connection: close"), "{}", got);
        }
    }
    all_closed(&server);
    let mut s = connect(port);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert!(answer(&mut s).starts_with("HTTP/1.1 200 "));
}

#[test]
fn garbage_is_answered_400_and_closed() {
    let (server, port) = serve(fast());
    for raw in [&b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n"[..], b"GET /\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n", b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n"] {
        let mut s = connect(port);
        s.write_all(raw).unwrap();
        let got = answer(&mut s);
        assert!(got.starts_with("HTTP/1.1 400 "), "{:?}: {}", raw, got);
    }
    all_closed(&server);
}

#[test]
fn an_endless_header_line_is_cut_off_early() {
    let (server, port) = serve(Limits::default().with_max_head_bytes(4096));
    let mut s = connect(port);
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nX-Long: ").unwrap();
    let chunk = [b'a'; 64 * 1024];
    let mut sent = 0usize;
    let started = Instant::now();
    // 200 MB offered; the server stops reading after 4 KiB and closes.
    while sent < 200 << 20 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < 64 << 20, "{} bytes taken before the cut", sent);
    assert!(started.elapsed() < Duration::from_secs(10));
    all_closed(&server);

    // A head just over the limit, sent at once, gets its answer.
    let mut s = connect(port);
    s.write_all(format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(5000)).as_bytes())
        .unwrap();
    let got = answer(&mut s);
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 431 "), "{}", got);
}

#[test]
fn idle_and_slow_heads_are_closed_at_their_deadlines() {
    let (server, port) = serve(fast());
    // Nothing sent: closed without an answer.
    let mut idle = connect(port);
    // A head begun and sent a byte at a time, never finished: 408.
    let mut slow = connect(port);
    let started = Instant::now();
    // Still trickling when the deadline (500 ms from the first byte) passes.
    for b in b"GET / HTTP/1.1\r\nX: a" {
        slow.write_all(&[*b]).unwrap();
        thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(answer(&mut idle), "");
    let got = answer(&mut slow);
    assert!(got.starts_with("HTTP/1.1 408 "), "{}", got);
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
    all_closed(&server);
}

#[test]
fn bodies_have_a_deadline_small_or_large() {
    let (server, port) = serve(fast());
    // Small: read by the server itself, which answers 408.
    let mut small = connect(port);
    small.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{").unwrap();
    // Large: read by the application, whose reads fail with TimedOut.
    let mut large = connect(port);
    large.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{").unwrap();
    let started = Instant::now();
    let got = answer(&mut small);
    assert!(got.starts_with("HTTP/1.1 408 "), "{}", got);
    let got = answer(&mut large);
    assert!(got.starts_with("HTTP/1.1 408 "), "{}", got);
    assert!(got.ends_with("body too slow"), "{}", got);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    all_closed(&server);

    // A body that arrives in time is read whole.
    let mut s = connect(port);
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc").unwrap();
    assert!(answer(&mut s).ends_with("ok 3"));
}

#[test]
fn conflicting_content_lengths_are_refused() {
    let (_server, port) = serve(fast());
    let cases: [(&str, &str); 5] = [
        ("Content-Length: 3\r\nContent-Length: 4\r\n", "400"),
        ("Content-Length: 3, 4\r\n", "400"),
        ("Content-Length: +3\r\n", "400"),
        ("Content-Length: 3\r\nContent-Length: 3\r\n", "200"),
        ("Content-Length: 3, 3\r\n", "200"),
    ];
    for (headers, status) in cases.iter() {
        let mut s = connect(port);
        s.write_all(format!("POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\nabc", headers).as_bytes())
            .unwrap();
        let got = answer(&mut s);
        assert!(got.starts_with(&format!("HTTP/1.1 {} ", status)), "{}: {}", headers, got);
    }
}

#[test]
fn connections_beyond_the_bound_wait_in_the_backlog() {
    let (server, port) = serve(fast().with_max_connections(2).with_idle_timeout(Duration::from_secs(2)));
    let held: Vec<TcpStream> = (0..2).map(|_| connect(port)).collect();
    thread::sleep(Duration::from_millis(100));
    assert_eq!(server.num_connections(), 2);
    // Accepted by the kernel, but served only once a held connection ends.
    let mut waiting = connect(port);
    waiting.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    waiting.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 16];
    let e = waiting.read(&mut buf).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{:?}", e);
    drop(held);
    waiting.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(answer(&mut waiting).starts_with("HTTP/1.1 200 "));
    all_closed(&server);
}

#[test]
fn a_kept_alive_connection_serves_requests_in_turn() {
    let (server, port) = serve(fast());
    let mut s = connect(port);
    // Pipelined: answered one after the other, in order.
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let got = answer(&mut s);
    assert_eq!(got.matches("HTTP/1.1 200 ").count(), 2, "{}", got);
    assert!(got.find("ok 2").unwrap() < got.rfind("ok 0").unwrap(), "{}", got);
    all_closed(&server);
}

#[test]
fn a_burst_of_long_connections_is_served_at_once() {
    // Connections that stay open hold their thread; each new one must still get a thread of its
    // own at once, however fast they come.
    let (server, port) = serve(Limits::default().with_idle_timeout(Duration::from_secs(5)));
    thread::sleep(Duration::from_millis(100));
    let held: Vec<TcpStream> = (0..64).map(|_| connect(port)).collect();
    let started = Instant::now();
    let mut last = connect(port);
    last.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert!(answer(&mut last).starts_with("HTTP/1.1 200 "));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    drop(held);
    let _ = server;
}
