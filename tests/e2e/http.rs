//! `sandman serve` as a child process, a small HTTP/1.1 client over `TcpStream` (raw enough to
//! send what browsers, broken clients and attackers send), and a checker for the OpenAPI
//! document's schemas.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Env, rand_suffix};

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// The `error` of an error answer.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error message in {}", self.text())).to_string()
    }

    /// The `code` of an error answer (the kind of error, stable for programs).
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_else(|| panic!("no error code in {}", self.text())).to_string()
    }
}

/// One request on a fresh connection (`Connection: close`), the answer read to the end.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.unwrap_or_default());
    exchange(port, &raw)
}

/// Sends raw bytes, reads the answer until the server closes.
pub fn exchange(port: u16, raw: &[u8]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to sandman serve");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(raw).unwrap();
    read_answer(&mut s)
}

pub fn read_answer(s: &mut TcpStream) -> Resp {
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read the answer");
    parse(&all)
}

pub fn parse(all: &[u8]) -> Resp {
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {:?}", String::from_utf8_lossy(all)));
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    let mut body = all[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    } else if let Some((_, len)) = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        body.truncate(len.parse().unwrap());
    }
    Resp { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

/// Whether something on `port` answers GET /healthz with 200 (never panics: the port may
/// belong to someone else).
pub fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answer = Vec::new();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .and_then(|()| s.read_to_end(&mut answer))
        .is_ok()
        && answer.starts_with(b"HTTP/1.1 200 ")
}

/// A running `sandman serve` with this environment's settings.
pub struct Serve {
    child: Option<Child>,
    pub port: u16,
    pub token: String,
    pub log: PathBuf,
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A token file holding one known token (mode 0600), for servers started by the tests.
pub fn token_file(env: &Env) -> (PathBuf, String) {
    let path = env.path("api-tokens");
    let token = format!("test-token-{}{}", rand_suffix(), rand_suffix());
    if !path.exists() {
        std::fs::write(&path, format!("# test\n{token}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let token = text.lines().find(|l| !l.starts_with('#')).unwrap().to_string();
    (path, token)
}

impl Serve {
    pub fn start(env: &Env) -> Serve {
        let (path, _) = token_file(env);
        Serve::start_with(env, &path, &[])
    }

    /// Starts the real binary on a free port and waits until /healthz answers. Another test may
    /// take the port between the check and the bind: then it starts again on another one.
    pub fn start_with(env: &Env, token_file: &Path, extra_env: &[(&str, &str)]) -> Serve {
        for attempt in 1.. {
            let port = free_port();
            let log = env.path(&format!("serve-{port}.log"));
            let mut child = env
                .cmd()
                .args(["serve", "--port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--token-file")
                .arg(token_file)
                .envs(extra_env.iter().copied())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let start = Instant::now();
            while !healthy(port) {
                if let Some(status) = child.try_wait().unwrap() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.contains("cannot listen") && attempt < 3 {
                        break;
                    }
                    panic!("sandman serve exited ({status}) before answering:\n{text}");
                }
                assert!(start.elapsed() < Duration::from_secs(30), "sandman serve did not answer /healthz within 30 s");
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().unwrap().is_some() {
                continue;
            }
            let token = std::fs::read_to_string(token_file)
                .ok()
                .and_then(|t| {
                    t.lines().map(|l| l.split('#').next().unwrap().trim().to_string()).find(|l| !l.is_empty())
                })
                .unwrap_or_default();
            return Serve { child: Some(child), port, token, log };
        }
        unreachable!()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// An authorized request; `body` is sent as JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let auth = self.auth();
        let mut headers = vec![("Authorization", auth.as_str())];
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        if bytes.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        request(self.port, method, path, &headers, bytes.as_deref())
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None)
    }

    /// An authorized request with a raw body.
    pub fn send(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        let auth = self.auth();
        request(
            self.port,
            method,
            path,
            &[("Authorization", auth.as_str()), ("Content-Type", "application/json")],
            Some(body),
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: a plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// SIGTERM, then waits for the exit; returns the exit status and the log.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(90) {
                let _ = child.kill();
                panic!("sandman serve did not stop within 90 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.log_text())
    }

    /// SIGTERM and insists on exit status 0; returns the log.
    pub fn stop(self) -> String {
        let (status, log) = self.terminate();
        assert!(status.success(), "sandman serve exited with {status}:\n{log}");
        log
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Checks `value` against an OpenAPI 3.1 schema (the subset the document uses: $ref, type or a
/// list of types, oneOf, properties, required, additionalProperties, items, enum); returns the
/// mismatches.
pub fn schema_errors(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(doc, schema, value, "$", &mut errors);
    errors
}

fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        return check(doc, &doc["components"]["schemas"][name], v, at, errors);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let fits = options.iter().filter(|o| schema_errors(doc, o, v).is_empty()).count();
        if fits != 1 {
            errors.push(format!("{at}: {v} fits {fits} of the oneOf schemas"));
        }
        return;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return check_fields(doc, schema, v, at, errors),
    };
    let fits = |t: &str| match t {
        "null" => v.is_null(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        other => panic!("type {other} not handled"),
    };
    if !types.iter().any(|t| fits(t)) {
        errors.push(format!("{at}: expected {}, got {v}", schema["type"]));
        return;
    }
    check_fields(doc, schema, v, at, errors);
}

fn check_fields(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if v.is_null() {
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        errors.push(format!("{at}: {v} is not one of {allowed:?}"));
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(r.as_str().unwrap()) {
                errors.push(format!("{at}: missing required {r}"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, child) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, child, &format!("{at}.{k}"), errors),
                None if schema["additionalProperties"] == Value::Bool(false) => {
                    errors.push(format!("{at}: {k} is not in the document"))
                }
                None => {}
            }
        }
    }
    if let Some(items) = v.as_array() {
        for (i, item) in items.iter().enumerate() {
            check(doc, &schema["items"], item, &format!("{at}[{i}]"), errors);
        }
    }
}
