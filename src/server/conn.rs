//! The TCP socket under a tiny_http request. tiny_http neither exposes it nor has timeouts, so
//! for the few requests that need one (a body still on the wire, a large answer) we find the
//! descriptor by its addresses in /proc/self/fd, then set socket timeouts or close its read side.
//!
//! The descriptor stays valid while the `tiny_http::Request` lives: the request holds both halves
//! of its connection open. A `Conn` therefore never outlives the request it was found for.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

/// Remembers where each connection's socket was found: a keep-alive client's later requests
/// then cost two system calls instead of a scan of every descriptor.
#[derive(Default)]
pub struct Sockets(Mutex<HashMap<SocketAddr, RawFd>>);

/// Beyond this many remembered connections the memory is cleared (entries are only hints).
const REMEMBERED: usize = 4096;

impl Sockets {
    pub fn find(&self, peer: SocketAddr, local_port: u16) -> Option<Conn> {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A remembered descriptor may since have been closed and reused: it is taken only if it
        // still has this connection's addresses, which no other live socket can have.
        if let Some(&fd) = known.get(&peer) {
            let conn = Conn { fd };
            if conn.is(peer, local_port) {
                return Some(conn);
            }
        }
        let conn = Conn::find(peer, local_port)?;
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(peer, conn.fd);
        Some(conn)
    }
}

pub struct Conn {
    fd: RawFd,
}

impl Conn {
    /// The connection from `peer` to our port `local_port`; None where /proc is not mounted.
    pub fn find(peer: SocketAddr, local_port: u16) -> Option<Conn> {
        for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let conn = Conn { fd };
            if conn.is(peer, local_port) {
                return Some(conn);
            }
        }
        None
    }

    /// Whether this descriptor is the connection from `peer` to our `local_port`. Non-sockets
    /// and Unix sockets fail here; a descriptor closed and reused meanwhile does not match.
    fn is(&self, peer: SocketAddr, local_port: u16) -> bool {
        let s = self.stream();
        s.peer_addr().is_ok_and(|a| a == peer) && s.local_addr().is_ok_and(|a| a.port() == local_port)
    }

    /// A borrowed view; `ManuallyDrop` keeps it from closing a descriptor tiny_http owns.
    fn stream(&self) -> ManuallyDrop<TcpStream> {
        // SAFETY: the descriptor is open (see the module comment) and is never closed here.
        ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(self.fd) })
    }

    /// Each read waits at most `timeout` (then fails with `WouldBlock`). tiny_http's own reads of
    /// the next request's headers see it too: it is also the connection's idle limit.
    pub fn set_read_timeout(&self, timeout: Duration) {
        let _ = self.stream().set_read_timeout(Some(timeout.max(Duration::from_millis(1))));
    }

    /// A client that stops reading an answer cannot hold the thread writing it for longer.
    pub fn set_write_timeout(&self, timeout: Duration) {
        let _ = self.stream().set_write_timeout(Some(timeout));
    }

    /// Ends the request stream: reads return what has already arrived, then end of stream instead
    /// of waiting. So the rest of a body we do not read is not waited for (tiny_http drains it
    /// when the request is dropped), and the connection closes after the answer instead of
    /// reading the rest of the body as the next request.
    pub fn shutdown_read(&self) {
        let _ = self.stream().shutdown(Shutdown::Read);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn finds_the_accepted_socket_and_bounds_its_reads() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut server_side, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());

        let conn = Conn::find(peer, port).expect("found by its addresses");
        assert!(Conn::find(peer, port + 1).is_none(), "the local port must match");

        conn.set_read_timeout(Duration::from_millis(50));
        let mut buf = [0u8; 4];
        let e = server_side.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);

        conn.shutdown_read();
        assert_eq!(server_side.read(&mut buf).unwrap(), 0, "reads end at once after shutdown");
        server_side.write_all(b"ok").unwrap();
        let mut answer = [0u8; 2];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"ok", "the write side still works");
    }
}
