use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use crate::common::{HTTPVersion, Header, Method};
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::util::SocketControl;
use crate::{Limits, Request};

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // the read deadlines and socket options of this connection
    control: Arc<SocketControl>,

    limits: Limits,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    /// No request began before the idle limit, or the client closed the connection: it is
    /// closed without an answer.
    Idle,
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// The request line and headers together are longer than `Limits::max_head_bytes`.
    HeadTooLarge,
    /// A well-formed request line of an HTTP version other than 0.9, 1.0 or 1.1.
    UnsupportedVersion,
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    ReadIoError(IoError),
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub(crate) fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        control: Arc<SocketControl>,
        limits: Limits,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            control,
            limits,
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads one byte of the request head.
    fn read_byte(&mut self) -> IoResult<Option<u8>> {
        let mut byte = [0u8];
        loop {
            match self.next_header_source.read(&mut byte) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(byte[0])),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the rest of a line of the request head (after `first`, if given) up to `CRLF`,
    /// taking its bytes from `budget`.
    fn read_line(&mut self, first: Option<u8>, budget: &mut usize) -> Result<AsciiString, ReadError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;
        let mut next = first;

        loop {
            let byte = match next.take() {
                Some(b) => b,
                None => match self.read_byte() {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        return Err(ReadError::ReadIoError(IoError::new(
                            ErrorKind::ConnectionAborted,
                            "Unexpected EOF",
                        )))
                    }
                    Err(e) => return Err(ReadError::ReadIoError(e)),
                },
            };
            // sandman patch: the head is bounded, so a line without end cannot grow memory.
            if *budget == 0 {
                return Err(ReadError::HeadTooLarge);
            }
            *budget -= 1;

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                return AsciiString::from_ascii(buf).map_err(|_| ReadError::WrongRequestLine);
            }

            prev_byte_was_cr = byte == b'\r';

            buf.push(byte);
        }
    }

    /// Reads a request line and its headers: the first byte within the idle limit, the rest
    /// within the head deadline, all of it within the size limit.
    fn read_head(&mut self) -> Result<(Method, String, HTTPVersion, Vec<Header>), ReadError> {
        // The previous request's body is done with: the deadlines set from here on are ours.
        self.next_header_source
            .wait_turn()
            .map_err(|_| ReadError::Idle)?;
        self.control
            .set_read_deadline(Some(Instant::now() + self.limits.idle_timeout));
        let first = match self.read_byte() {
            Ok(Some(b)) => b,
            Ok(None) => return Err(ReadError::Idle),
            Err(e) if e.kind() == ErrorKind::TimedOut => return Err(ReadError::Idle),
            Err(e) => return Err(ReadError::ReadIoError(e)),
        };
        self.control
            .set_read_deadline(Some(Instant::now() + self.limits.head_timeout));
        let mut budget = self.limits.max_head_bytes;

        let line = self.read_line(Some(first), &mut budget)?;
        let (method, path, version) = parse_request_line(line.as_str().trim())?;
        // Answered before the headers are read: nothing of such a request can be served.
        if version > (1, 1) {
            return Err(ReadError::UnsupportedVersion);
        }

        let mut headers = Vec::new();
        loop {
            let line = self.read_line(None, &mut budget)?;
            if line.is_empty() {
                break;
            }
            headers.push(match FromStr::from_str(line.as_str().trim()) {
                Ok(h) => h,
                _ => return Err(ReadError::WrongHeader(version)),
            });
        }
        // The body, small or large, read here or by the application, has its own deadline.
        self.control
            .set_read_deadline(Some(Instant::now() + self.limits.body_timeout));
        Ok((method, path, version, headers))
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        let (method, path, version, headers) = self.read_head()?;

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            *self.remote_addr.as_ref().unwrap(),
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version.clone())
                }
                request::RequestCreationError::BadRequest => ReadError::WrongHeader(version.clone()),
            }
        })?;

        // return the request
        Ok(request.with_control(self.control.clone()))
    }

    /// Answers `status` with an empty body and `Connection: close`; the caller then ends the
    /// connection, since where a next request would start is unknown.
    fn refuse(&mut self, status: u16) {
        let mut writer = self.sink.next().unwrap();
        let head = format!(
            "HTTP/1.1 {} {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            status,
            crate::StatusCode(status).default_reason_phrase()
        );
        if writer.write_all(head.as_bytes()).is_ok() {
            let _ = writer.flush();
        }
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        let rq = match self.read() {
            Ok(rq) => rq,
            Err(ReadError::Idle) => return None,
            Err(ReadError::WrongRequestLine) => {
                self.refuse(400);
                return None;
            }
            Err(ReadError::WrongHeader(_)) => {
                self.refuse(400);
                return None;
            }
            Err(ReadError::HeadTooLarge) => {
                self.refuse(431);
                return None;
            }
            // sandman patch: answered and closed. The release answered 505 on a second writer
            // while the request still held the first, so the thread waited on itself for ever
            // and the socket stayed in CLOSE-WAIT.
            Err(ReadError::UnsupportedVersion) => {
                self.refuse(505);
                return None;
            }
            Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                // request timeout: the head or a small body did not arrive in time
                self.refuse(408);
                return None;
            }
            Err(ReadError::ExpectationFailed(_)) => {
                self.refuse(417);
                return None; // TODO: should be recoverable, but needs handling in case of body
            }
            Err(ReadError::ReadIoError(_)) => return None,
        };

        // updating the status of the connection
        let connection_header = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv("Connection"))
            .map(|h| h.value.as_str());

        let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

        match lowercase {
            Some(ref val) if val.contains("close") => self.no_more_requests = true,
            Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
            Some(ref val)
                if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
            {
                self.no_more_requests = true
            }
            None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
            _ => (),
        };

        // returning the request
        Some(rq)
    }
}

/// Parses a "HTTP/1.1" string: `HTTP/` and a digit, a dot and a digit.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    match version.as_bytes() {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Ok(HTTPVersion(major - b'0', minor - b'0'))
        }
        _ => Err(ReadError::WrongRequestLine),
    }
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
