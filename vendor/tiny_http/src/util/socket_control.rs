use std::io::{Error as IoError, ErrorKind, Read, Result as IoResult};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::connection::Connection;

/// What one connection's thread, its reading half and its requests share: the read deadline in
/// force (for the request head, then for the body) and the socket, to set its timeouts.
pub(crate) struct SocketControl {
    /// `None` where the socket cannot be reached (a TLS stream whose socket could not be
    /// duplicated): deadlines are then checked between reads only.
    socket: Option<Arc<Connection>>,
    read_deadline: Mutex<Option<Instant>>,
}

impl SocketControl {
    pub(crate) fn new(socket: Option<Arc<Connection>>) -> SocketControl {
        SocketControl {
            socket,
            read_deadline: Mutex::new(None),
        }
    }

    /// Reads on the connection fail with `TimedOut` once `deadline` has passed. `None` lifts
    /// the deadline (reads may then block for ever, as for an upgraded connection).
    pub(crate) fn set_read_deadline(&self, deadline: Option<Instant>) {
        *lock(&self.read_deadline) = deadline;
        if deadline.is_none() {
            if let Some(socket) = &self.socket {
                let _ = socket.set_read_timeout(None);
            }
        }
    }

    /// One read from `inner` (a stream over this socket) that returns by the deadline.
    pub(crate) fn read<R: Read + ?Sized>(&self, inner: &mut R, buf: &mut [u8]) -> IoResult<usize> {
        let deadline = *lock(&self.read_deadline);
        let deadline = match deadline {
            Some(d) => d,
            None => return inner.read(buf),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(deadline_passed());
        }
        if let Some(socket) = &self.socket {
            socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        }
        match inner.read(buf) {
            // A socket read timeout shows as `WouldBlock` on Unix.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(deadline_passed())
            }
            other => other,
        }
    }

    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> IoResult<()> {
        match &self.socket {
            Some(socket) => socket.set_write_timeout(timeout),
            None => Err(no_socket()),
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> IoResult<()> {
        match &self.socket {
            Some(socket) => socket.shutdown(how),
            None => Err(no_socket()),
        }
    }
}

fn deadline_passed() -> IoError {
    IoError::new(ErrorKind::TimedOut, "the client did not send in time")
}

fn no_socket() -> IoError {
    IoError::new(ErrorKind::Other, "the socket of this connection is not reachable")
}

/// A lock that a panic elsewhere does not make unusable: the data here stays consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fixed number of connections served at once. The accept loop takes a slot before it accepts,
/// so beyond the bound new connections wait in the listen backlog; a slot is given back when its
/// connection is done (when the `Slot` is dropped, even by a panic or a failed thread start).
pub(crate) struct ConnectionSlots {
    used: Mutex<usize>,
    /// Slots given to an accepted connection (the accept loop holds one while it waits).
    serving: AtomicUsize,
    freed: Condvar,
    max: usize,
}

pub(crate) struct Slot {
    slots: Arc<ConnectionSlots>,
    serving: bool,
}

impl ConnectionSlots {
    pub(crate) fn new(max: usize) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            used: Mutex::new(0),
            serving: AtomicUsize::new(0),
            freed: Condvar::new(),
            max: max.max(1),
        })
    }

    /// A free slot, waiting at most `patience` for one.
    pub(crate) fn take(self: &Arc<Self>, patience: Duration) -> Option<Slot> {
        let mut used = lock(&self.used);
        if *used >= self.max {
            used = self
                .freed
                .wait_timeout_while(used, patience, |u| *u >= self.max)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        if *used >= self.max {
            return None;
        }
        *used += 1;
        Some(Slot {
            slots: self.clone(),
            serving: false,
        })
    }

    /// Connections being served now.
    pub(crate) fn serving(&self) -> usize {
        self.serving.load(Ordering::SeqCst)
    }
}

impl Slot {
    /// Marks the slot as taken by an accepted connection.
    pub(crate) fn serve(&mut self) {
        if !self.serving {
            self.serving = true;
            self.slots.serving.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.serving {
            self.slots.serving.fetch_sub(1, Ordering::SeqCst);
        }
        *lock(&self.slots.used) -= 1;
        self.slots.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let slots = ConnectionSlots::new(2);
        let mut a = slots.take(Duration::ZERO).unwrap();
        let _b = slots.take(Duration::ZERO).unwrap();
        assert!(slots.take(Duration::from_millis(20)).is_none());
        a.serve();
        assert_eq!(slots.serving(), 1);
        drop(a);
        assert_eq!(slots.serving(), 0);
        assert!(slots.take(Duration::ZERO).is_some());
    }

    #[test]
    fn reads_fail_once_the_deadline_passed() {
        let control = SocketControl::new(None);
        control.set_read_deadline(Some(Instant::now()));
        let e = control.read(&mut &b"abc"[..], &mut [0u8; 3]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        control.set_read_deadline(None);
        assert_eq!(control.read(&mut &b"abc"[..], &mut [0u8; 3]).unwrap(), 3);
    }
}
