//! One request and its answer: reading the body within a limit and a deadline, and writing the
//! answer with the headers every answer carries.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tiny_http::{Request, StatusCode};

use super::App;
use super::errors::ApiError;
use crate::error::ErrorKind as Kind;

/// tiny_http reads bodies up to this size itself, before handing the request over (a detail of
/// tiny_http 0.12's `new_request`); longer or chunked bodies are still on the wire.
const BUFFERED_BY_TINY_HTTP: usize = 1024;
/// Answers larger than this may not fit the socket buffers, so a client that does not read them
/// could block the writer: their connection gets a write timeout (see `respond`).
const LARGE_ANSWER: usize = 64 * 1024;
/// How long a worker waits on a client that does not take an answer before handing it over.
const HAND_OVER_AFTER: Duration = Duration::from_millis(100);
/// However slowly a client reads, writing one answer stops after this long.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);
/// At most this much of an abandoned body is read and dropped (what the socket holds is less).
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

pub struct Exchange {
    rq: Request,
    app: Arc<App>,
    /// Whether all of the body has been read (or there was none on the wire).
    body_done: bool,
    /// Whether reading the body began (a `100 Continue` went out, if one was expected).
    body_started: bool,
}

impl Exchange {
    pub fn new(rq: Request, app: Arc<App>) -> Exchange {
        let body_done = !body_on_wire(&rq);
        Exchange { rq, app, body_done, body_started: false }
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

    /// The whole body, at most `api_max_body_bytes` (413 beyond), arriving within
    /// `api_body_timeout_secs` of the end of the head (408 after): tiny_http holds reads to that
    /// deadline and fails them with `TimedOut` once it has passed.
    pub fn read_body(&mut self) -> Result<Vec<u8>, ApiError> {
        let s = &self.app.sessions.settings;
        let (limit, timeout) = (s.api_max_body_bytes, Duration::from_secs(s.api_body_timeout_secs));
        let too_large = || {
            ApiError::new(Kind::PayloadTooLarge, format!("the request body is larger than the limit of {limit} bytes"))
        };
        // Checked before anything is read: a client announcing too much gets no `100 Continue`.
        if self.rq.body_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        self.body_started = true;
        let mut body = Vec::with_capacity(self.rq.body_length().unwrap_or(0).min(limit));
        let mut buf = [0u8; 8192];
        loop {
            match self.rq.as_reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) if body.len() + n > limit => return Err(too_large()),
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(timed_out(timeout));
                }
                Err(e) => {
                    return Err(ApiError::new(Kind::InvalidInput, format!("cannot read the request body: {e}")));
                }
            }
        }
        self.body_done = true;
        Ok(body)
    }

    /// Sends the answer with the CORS and caching headers; returns its status.
    ///
    /// The answer is written here rather than by tiny_http's `Response`, which copies bodies to
    /// the socket 8 KiB at a time: a large list goes out in one write when the client keeps up.
    /// When it does not (a write comes back short or blocked after `HAND_OVER_AFTER`), the rest
    /// is handed to a thread of its own, so a slow reader never holds a worker for longer.
    pub fn respond(mut self, reply: Reply, origin_headers: Vec<(&'static str, String)>) -> u16 {
        let status = reply.status;
        if !self.body_done {
            self.abandon_body();
        }
        // Only an answer that may not fit the socket buffers can make a write wait.
        let bounded = reply.is_large() && self.rq.set_write_timeout(Some(HAND_OVER_AFTER)).is_ok();
        let head = head(status, &reply, &origin_headers).into_bytes();
        let body = if self.rq.method() == &tiny_http::Method::Head { Body::Owned(Vec::new()) } else { reply.body };
        let mut out = Outgoing { head, body, sent: 0, until: Instant::now() + ANSWER_DEADLINE };
        let app = self.app.clone();
        let mut w = self.rq.into_writer();
        match out.write(&mut w, None) {
            Ok(true) => {}
            Ok(false) if bounded => {
                let patience = Duration::from_secs(app.sessions.settings.api_body_timeout_secs);
                app.on_own_thread("api-write", move || {
                    if let Err(e) = out.write(&mut w, Some(patience)) {
                        tracing::debug!(error = %e, "a slow client did not take the answer");
                    }
                });
            }
            // A small answer fits the socket buffers, so this is rare; the connection's write
            // timeout (`api_body_timeout_secs`) still bounds each wait.
            Ok(false) => {
                let patience = Duration::from_secs(app.sessions.settings.api_body_timeout_secs);
                let _ = out.write(&mut w, Some(patience));
            }
            Err(e) => tracing::debug!(error = %e, "the client did not take the answer"),
        }
        status
    }
}

/// An answer being written: the head, then the body, from where the last write stopped.
struct Outgoing {
    head: Vec<u8>,
    body: Body,
    sent: usize,
    until: Instant,
}

impl Outgoing {
    fn rest(&self) -> &[u8] {
        match self.sent.checked_sub(self.head.len()) {
            None => &self.head[self.sent..],
            Some(into_body) => &self.body.as_ref()[into_body..],
        }
    }

    /// Writes what is left and flushes. `patience` None: stops (`Ok(false)`) at the first write
    /// that comes back short or blocked. `Some(limit)`: goes on while the client takes
    /// something at least every `limit`, until `ANSWER_DEADLINE`.
    fn write(&mut self, w: &mut dyn Write, patience: Option<Duration>) -> std::io::Result<bool> {
        let mut stalled: Option<Instant> = None;
        loop {
            let rest = self.rest();
            let left = rest.len();
            let result = if left == 0 { w.flush().map(|()| 0) } else { w.write(rest) };
            match result {
                Ok(_) if left == 0 => return Ok(true),
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    stalled = None;
                    if n < left && patience.is_none() {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    let Some(limit) = patience else {
                        return Ok(false);
                    };
                    if stalled.get_or_insert_with(Instant::now).elapsed() > limit {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            if Instant::now() > self.until {
                return Err(std::io::Error::new(ErrorKind::TimedOut, "the answer was not taken in time"));
            }
        }
    }
}

/// Status line and headers. Header values that could end the header early (control characters,
/// e.g. in a reflected Origin) are left out.
fn head(status: u16, reply: &Reply, origin_headers: &[(&'static str, String)]) -> String {
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nServer: sandman\r\nDate: {}\r\n",
        StatusCode(status).default_reason_phrase(),
        chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT")
    );
    // 204 carries neither a body nor its length.
    if status != 204 {
        h.push_str(&format!(
            "Content-Length: {}\r\nContent-Type: {}\r\n",
            reply.body.as_ref().len(),
            reply.content_type
        ));
    }
    // Answers hold private keys and live state: never cache them. The CORS headers depend on
    // the request's Origin.
    h.push_str("Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nVary: Origin\r\n");
    for (name, value) in origin_headers.iter().chain(&reply.headers) {
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            tracing::debug!(header = name, "a header value with control characters left out");
            continue;
        }
        h.push_str(&format!("{name}: {value}\r\n"));
    }
    h.push_str("\r\n");
    h
}

impl Exchange {
    /// For a body we will not read (refused, too large, too slow): the connection is closed
    /// after the answer, and what of the body already arrived is read and dropped, so that it
    /// is not taken for a next request. After the shutdown these reads never wait.
    fn abandon_body(&mut self) {
        if let Err(e) = self.rq.close_read() {
            // Then tiny_http drains the body on drop, within the body deadline.
            tracing::debug!(error = %e, "cannot close the reading side of a connection");
            return;
        }
        // A client waiting for `100 Continue` has sent nothing; reading would invite the body.
        if self.body_started || self.header("Expect").is_none() {
            let _ = std::io::copy(&mut self.rq.as_reader().take(DRAIN_LIMIT), &mut std::io::sink());
        }
    }
}

fn timed_out(timeout: Duration) -> ApiError {
    ApiError::new(Kind::Timeout, format!("the request body did not arrive within {} seconds", timeout.as_secs()))
}

fn header<'r>(rq: &'r Request, name: &'static str) -> Option<&'r str> {
    rq.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str())
}

/// Whether part of the body must still come from the client (tiny_http has not buffered it).
pub fn body_on_wire(rq: &Request) -> bool {
    let chunked = header(rq, "Transfer-Encoding").is_some();
    let expects_continue = header(rq, "Expect").is_some();
    let len = rq.body_length().unwrap_or(0);
    chunked || (len > 0 && (len > BUFFERED_BY_TINY_HTTP || expects_continue))
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
                let body = format!(
                    r#"{{"error":"internal error; the server log has the details","code":"{}"}}"#,
                    Kind::Internal.code()
                );
                Reply::bytes(Kind::Internal.http_status(), JSON, Body::Owned(body.into_bytes()))
            }
        }
    }

    pub fn bytes(status: u16, content_type: &'static str, body: Body) -> Reply {
        Reply { status, content_type, body, headers: Vec::new() }
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
