//! One request and its answer: reading the body within a limit and a deadline, and writing the
//! answer with the headers every answer carries.

use std::io::{Cursor, ErrorKind, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tiny_http::{Header, Request, Response, StatusCode};

use super::App;
use super::conn::Conn;
use super::errors::ApiError;

/// tiny_http reads bodies up to this size itself, before handing the request over (a detail of
/// tiny_http 0.12's `new_request`); longer or chunked bodies are still on the wire.
const BUFFERED_BY_TINY_HTTP: usize = 1024;
/// Answers larger than this may not fit the socket buffers, so a client that does not read them
/// could block the writer: they are written on a thread of their own, with a write timeout.
pub const LARGE_ANSWER: usize = 64 * 1024;
/// However slowly a client reads, writing one answer stops after this long.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);
/// At most this much of an abandoned body is read and dropped (what the socket holds is less).
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

pub struct Exchange {
    rq: Request,
    app: Arc<App>,
    /// The connection's socket, looked up on first need (`None` inside: not found).
    conn: Option<Option<Conn>>,
    /// Whether all of the body has been read (or there was none on the wire).
    body_done: bool,
    /// Whether reading the body began (a `100 Continue` went out, if one was expected).
    body_started: bool,
}

impl Exchange {
    pub fn new(rq: Request, app: Arc<App>) -> Exchange {
        let body_done = !body_on_wire(&rq);
        Exchange {
            rq,
            app,
            conn: None,
            body_done,
            body_started: false,
        }
    }

    pub fn method(&self) -> &str {
        self.rq.method().as_str()
    }

    /// The path without the query string.
    pub fn path(&self) -> &str {
        let url = self.rq.url();
        url.split_once('?').map_or(url, |(p, _)| p)
    }

    pub fn header(&self, name: &'static str) -> Option<&str> {
        header(&self.rq, name)
    }

    fn conn(&mut self) -> Option<&Conn> {
        if self.conn.is_none() {
            let found = self
                .rq
                .remote_addr()
                .and_then(|peer| Conn::find(*peer, self.app.port));
            if found.is_none() {
                tracing::warn!("cannot find the socket of a request; no timeouts for it");
            }
            self.conn = Some(found);
        }
        self.conn.as_ref().and_then(Option::as_ref)
    }

    /// The whole body, at most `api_max_body_bytes` (413 beyond), arriving within
    /// `api_body_timeout_secs` (408 after).
    pub fn read_body(&mut self) -> Result<Vec<u8>, ApiError> {
        let s = &self.app.sessions.settings;
        let (limit, timeout) = (
            s.api_max_body_bytes,
            Duration::from_secs(s.api_body_timeout_secs),
        );
        let too_large = || {
            ApiError::new(
                413,
                format!("the request body is larger than the limit of {limit} bytes"),
            )
        };
        // Checked before anything is read: a client announcing too much gets no `100 Continue`.
        if self.rq.body_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let on_wire = !self.body_done;
        self.body_started = true;
        let deadline = Instant::now() + timeout;
        let mut body = Vec::with_capacity(self.rq.body_length().unwrap_or(0).min(limit));
        let mut buf = [0u8; 8192];
        loop {
            if on_wire && let Some(conn) = self.conn() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out(timeout));
                }
                conn.set_read_timeout(left);
            }
            match self.rq.as_reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) if body.len() + n > limit => return Err(too_large()),
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(timed_out(timeout));
                }
                Err(e) => {
                    return Err(ApiError::new(
                        400,
                        format!("cannot read the request body: {e}"),
                    ));
                }
            }
        }
        self.body_done = true;
        if on_wire && let Some(conn) = self.conn() {
            // From now on the timeout is the connection's idle limit.
            conn.set_read_timeout(timeout);
        }
        Ok(body)
    }

    /// Sends the answer with the CORS and caching headers; returns its status.
    pub fn respond(mut self, reply: Reply, origin_headers: Vec<(&'static str, String)>) -> u16 {
        let status = reply.status;
        if !self.body_done {
            self.abandon_body();
        }
        let timeout = Duration::from_secs(self.app.sessions.settings.api_body_timeout_secs);
        if reply.is_large()
            && let Some(conn) = self.conn()
        {
            conn.set_write_timeout(timeout);
        }
        let mut headers = vec![
            header_of("Content-Type", reply.content_type),
            // Answers hold private keys and live state: never cache them.
            header_of("Cache-Control", "no-store"),
            header_of("X-Content-Type-Options", "nosniff"),
            // The CORS headers depend on the request's Origin.
            header_of("Vary", "Origin"),
        ];
        for (name, value) in origin_headers.iter().chain(&reply.headers) {
            headers.push(header_of(name, value));
        }
        let len = reply.body.as_ref().len();
        let body = Deadline {
            inner: Cursor::new(reply.body),
            until: Instant::now() + ANSWER_DEADLINE,
        };
        let response = Response::new(StatusCode(status), headers, body, Some(len), None)
            // Content-Length rather than chunks: one write for the whole answer, simpler clients.
            .with_chunked_threshold(usize::MAX);
        if let Err(e) = self.rq.respond(response) {
            tracing::debug!(error = %e, "the client did not take the answer");
        }
        status
    }
}

impl Exchange {
    /// For a body we will not read (refused, too large, too slow): the connection is closed
    /// after the answer, and what of the body already arrived is read and dropped, so that it
    /// is not taken for a next request. After the shutdown these reads never wait.
    fn abandon_body(&mut self) {
        match self.conn() {
            Some(conn) => conn.shutdown_read(),
            // Without the socket there is nothing better: tiny_http drains the body on drop.
            None => return,
        }
        // A client waiting for `100 Continue` has sent nothing; reading would invite the body.
        if self.body_started || self.header("Expect").is_none() {
            let _ = std::io::copy(
                &mut self.rq.as_reader().take(DRAIN_LIMIT),
                &mut std::io::sink(),
            );
        }
    }
}

/// A reader that fails once its deadline has passed: tiny_http copies the answer to the socket
/// piece by piece from it, so a client reading a little now and then cannot keep a thread forever.
struct Deadline<R> {
    inner: R,
    until: Instant,
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.until {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "the client did not take the answer in time",
            ));
        }
        self.inner.read(buf)
    }
}

fn timed_out(timeout: Duration) -> ApiError {
    ApiError::new(
        408,
        format!(
            "the request body did not arrive within {} seconds",
            timeout.as_secs()
        ),
    )
}

pub fn header<'r>(rq: &'r Request, name: &'static str) -> Option<&'r str> {
    rq.headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// Whether part of the body must still come from the client (tiny_http has not buffered it).
pub fn body_on_wire(rq: &Request) -> bool {
    let chunked = header(rq, "Transfer-Encoding").is_some();
    let expects_continue = header(rq, "Expect").is_some();
    let len = rq.body_length().unwrap_or(0);
    chunked || (len > 0 && (len > BUFFERED_BY_TINY_HTTP || expects_continue))
}

fn header_of(name: &str, value: &str) -> Header {
    // Values are ours or were ASCII in the request; a stray byte becomes '?', never a panic.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap_or_else(|()| {
        let clean: String = value
            .chars()
            .map(|c| if c.is_ascii() { c } else { '?' })
            .collect();
        Header::from_bytes(name.as_bytes(), clean.into_bytes()).expect("ASCII header")
    })
}

/// An answer before it is written.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
    pub headers: Vec<(&'static str, String)>,
}

pub enum Body {
    Owned(Vec<u8>),
    /// Cached bytes shared between answers (the session list).
    Shared(Arc<[u8]>),
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        match self {
            Body::Owned(v) => v,
            Body::Shared(a) => a,
        }
    }
}

pub const JSON: &str = "application/json";

impl Reply {
    pub fn is_large(&self) -> bool {
        self.body.as_ref().len() > LARGE_ANSWER
    }

    pub fn json(status: u16, value: &impl serde::Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(bytes) => Reply::bytes(status, JSON, Body::Owned(bytes)),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize an answer");
                Reply::bytes(
                    500,
                    JSON,
                    Body::Owned(
                        br#"{"error":"internal error; the server log has the details"}"#.to_vec(),
                    ),
                )
            }
        }
    }

    pub fn bytes(status: u16, content_type: &'static str, body: Body) -> Reply {
        Reply {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    /// 204 with no body.
    pub fn empty() -> Reply {
        Reply::bytes(204, "text/plain", Body::Owned(Vec::new()))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}
