//! `sandman serve` end to end: the real binary on a real port, the real Docker engine, real ssh
//! logins; every endpoint and status of docs/api.md, auth, CORS, slow clients, the reaper loop,
//! graceful stop, the OpenAPI document, and load beside the CLI and cron-style reaps.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Env, Session, stderr, stdout};
use crate::http::{Serve, exchange, request, schema_errors, token_file};

/// The spec's examples, copied from docs/api.md ("sandman may add fields; it never removes the
/// spec's fields"). `metadata.ssh_password` is left out on purpose: sessions are key-only.
fn spec_created() -> Value {
    json!({
      "session_id": "abc-123-def-456",
      "container_id": "container_789",
      "ssh_user": "user123",
      "ssh_host": "localhost",
      "ssh_port": 10001,
      "ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\n...",
      "gpu_uuid": "MIG-GPU-3e9c9c52/3/0",
      "created_at": "2025-01-17T08:00:00Z",
      "expires_at": "2025-01-17T09:00:00Z"
    })
}

fn spec_session() -> Value {
    json!({
      "id": "abc-123-def-456",
      "user_id": "user123",
      "container_id": "container_789",
      "container_ip": "172.20.0.10",
      "ssh_port": 10001,
      "gpu_uuid": "MIG-GPU-3e9c9c52/3/0",
      "mig_profile": "3g.20gb",
      "ttl_minutes": 60,
      "created_at": "2025-01-17T08:00:00Z",
      "expires_at": "2025-01-17T09:00:00Z",
      "metadata": {
        "image": "gpu-workspace",
        "workspace": "/srv/workspaces/user123",
        "ssh_port": "10001"
      }
    })
}

fn spec_gpus() -> Value {
    json!({"gpus":[{"uuid":"GPU-…","name":"NVIDIA A100-SXM4-80GB","memory_total":85899345920u64,
      "memory_free":85899345920u64,"memory_used":0,"utilization":0,"temperature":35,
      "power_usage":65.2,"power_limit":400,"mig_enabled":true,
      "mig_instances":[{"uuid":"MIG-…","profile":"3g.20gb","memory":21474836480u64,"allocated":false}]}],
     "count":1})
}

fn spec_profiles() -> Value {
    json!({"profiles":[{"name":"1g.5gb","compute_slices":1,"memory_slices":1,"memory_size":5368709120u64,"description":"1/7 GPU, 5GB Memory"}]})
}

fn spec_available() -> Value {
    json!({"available_instances":[{"uuid":"MIG-…","profile":"1g.10gb","memory":10737418240u64,"compute_slices":1,"memory_slices":2,"parent_gpu":"GPU-…","allocated":false}],"count":2})
}

/// Every field of the spec's example is in `got` with the same JSON type (string, number,
/// boolean, array, object); `nullable` fields may be null instead (no GPU on this host). Extra
/// fields are allowed. Whole numbers versus fractions are the OpenAPI test's business.
fn assert_spec_shape(spec: &Value, got: &Value, nullable: &[&str], at: &str) {
    match (spec, got) {
        (Value::Object(s), Value::Object(g)) => {
            for (k, sv) in s {
                let path = format!("{at}.{k}");
                let gv = g.get(k).unwrap_or_else(|| panic!("{path} is missing from {got}"));
                if gv.is_null() && nullable.contains(&k.as_str()) {
                    continue;
                }
                assert_spec_shape(sv, gv, nullable, &path);
            }
        }
        (Value::Array(s), Value::Array(g)) => {
            if let (Some(sv), Some(gv)) = (s.first(), g.first()) {
                assert_spec_shape(sv, gv, nullable, &format!("{at}[0]"));
            }
        }
        (s, g) => assert_eq!(std::mem::discriminant(s), std::mem::discriminant(g), "{at}: spec has {s}, got {g}"),
    }
}

/// A private key from a create answer, saved for ssh (mode 0600).
pub(crate) fn session_from(env: &Env, answer: &Value) -> Session {
    let key = env.path(&format!("{}.key", answer["ssh_user"].as_str().unwrap()));
    std::fs::write(&key, answer["ssh_private_key"].as_str().unwrap()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    Session { json: answer.clone(), key }
}

fn assert_no_secrets(log: &str, token: &str) {
    assert!(!log.contains("PRIVATE KEY"), "a private key in the log:\n{log}");
    assert!(!log.contains(token), "the token in the log:\n{log}");
}

#[test]
fn every_endpoint_with_its_statuses_and_the_spec_shapes() {
    let env = Env::new("api-endpoints");
    let serve = Serve::start(&env);

    // Health: no token needed.
    let health = request(serve.port, "GET", "/healthz", &[], None);
    assert_eq!(health.status, 200);
    let h = health.json();
    assert_eq!((h["status"].as_str(), h["service"].as_str()), (Some("healthy"), Some("gpu-ssh-gateway-orchestrator")));
    assert_eq!(health.header("Content-Type"), Some("application/json"));

    // Authentication refusals: none, wrong token, wrong scheme, empty.
    let wrong = format!("Bearer {}x", serve.token);
    let basic = format!("Basic {}", serve.token);
    for (auth, want) in [
        (None, "missing Authorization header"),
        (Some(wrong.as_str()), "invalid bearer token"),
        (Some(basic.as_str()), "scheme must be Bearer"),
        (Some("Bearer "), "invalid bearer token"),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        for (method, path) in [("GET", "/sessions"), ("GET", "/metrics"), ("DELETE", "/sessions"), ("GET", "/gpus")] {
            let r = request(serve.port, method, path, &headers, None);
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}");
            assert_eq!(r.header("WWW-Authenticate"), Some("Bearer realm=\"sandman\""));
            assert!(r.error().contains(want), "{}", r.error());
            assert_eq!(r.code(), "unauthorized");
        }
    }
    let r = request(serve.port, "POST", "/sessions", &[], Some(br#"{"user_id":"nobodyelse"}"#));
    assert_eq!(r.status, 401);

    // An empty list is an empty JSON array.
    let r = serve.get("/sessions");
    assert_eq!((r.status, r.json()), (200, json!([])));

    // Create; the answer has every field of the spec; the key logs in.
    let r = serve.call("POST", "/sessions", Some(&json!({"user_id": "user123", "ttl_minutes": 30})));
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    assert_spec_shape(&spec_created(), &created, &["gpu_uuid"], "created");
    assert_eq!(created["ssh_user"], "user123");
    assert_eq!(created["ssh_host"], "127.0.0.1");
    assert!(created["ssh_private_key"].as_str().unwrap().starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let port = created["ssh_port"].as_u64().unwrap() as u16;
    assert!((env.ports.0..=env.ports.1).contains(&port));
    assert_eq!(created["ssh_command"], format!("ssh -i user123.key -o IdentitiesOnly=yes -p {port} user123@127.0.0.1"));
    let block = created["ssh_config"].as_str().unwrap();
    assert!(
        block.contains(&format!("\n    Port {port}\n")) && block.contains("\n    IdentityFile user123.key\n"),
        "{block}"
    );
    assert!(created["ssh_config_known_hosts"].as_str().unwrap().starts_with("sandman-user123 ssh-ed25519 "));
    let s = session_from(&env, &created);
    let out = env.ssh(&s, "whoami");
    assert_eq!(stdout(&out), "user123\n", "{}", stderr(&out));
    let id = created["session_id"].as_str().unwrap().to_string();

    // One session per user.
    let r = serve.call("POST", "/sessions", Some(&json!({"user_id": "user123"})));
    assert_eq!(r.status, 409);
    assert!(r.error().starts_with("session for user user123 already exists"), "{}", r.error());
    assert_eq!(r.code(), "conflict");

    // The list, and the spec's own jq one-liner on it.
    let r = serve.get("/sessions");
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_spec_shape(&spec_session(), &list[0], &["gpu_uuid", "mig_profile"], "session");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["ttl_minutes"], 30);
    assert_eq!(list[0]["metadata"]["ssh_port"], port.to_string());
    assert!(list[0]["metadata"].get("ssh_password").is_none(), "no passwords");
    let mut jq = Command::new("jq")
        .arg(".[] | select(.user_id==\"user123\")")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("jq is installed");
    jq.stdin.take().unwrap().write_all(&r.body).unwrap();
    let out = jq.wait_with_output().unwrap();
    assert!(out.status.success());
    let picked: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(picked["id"], id.as_str());

    // One session; unknown ids.
    let r = serve.get(&format!("/sessions/{id}"));
    assert_eq!(r.status, 200);
    let mut one = r.json();
    // Measured for one session only: the list leaves it out.
    let usage = one.as_object_mut().unwrap().remove("workspace_usage_bytes");
    assert!(usage.is_some_and(|u| u.as_u64().is_some_and(|b| b > 0)), "{}", r.text());
    assert_eq!(one, list[0]);
    for method in ["GET", "DELETE"] {
        let r = serve.call(method, "/sessions/no-such-id", None);
        assert_eq!(r.status, 404, "{method}");
        assert_eq!(r.error(), "session no-such-id not found");
        assert_eq!(r.code(), "not_found");
    }

    // Extend, within max_ttl_minutes.
    let before = chrono::Utc::now().timestamp();
    let r = serve.call("PATCH", &format!("/sessions/{id}"), Some(&json!({"ttl_minutes": 120})));
    assert_eq!(r.status, 200, "{}", r.text());
    let expires = chrono::DateTime::parse_from_rfc3339(r.json()["expires_at"].as_str().unwrap()).unwrap().timestamp();
    assert!((before + 7200..=before + 7202).contains(&expires), "expires {expires}");
    assert_eq!(r.json()["ttl_minutes"], 120, "the TTL asked for");
    for (body, status, want) in [
        (json!({"ttl_minutes": 0}), 400, "invalid ttl_minutes: 0 is out of range; use 1 to 10080 minutes"),
        (json!({"ttl_minutes": 10081}), 400, "invalid ttl_minutes: 10081 is out of range"),
        (json!({"ttl_minutes": "60"}), 400, "invalid ttl_minutes: invalid type: string \"60\", expected a JSON number"),
        (json!({"ttl": 5}), 400, "invalid body: unknown field `ttl`"),
        (json!({}), 400, "invalid ttl_minutes: is required"),
    ] {
        let r = serve.call("PATCH", &format!("/sessions/{id}"), Some(&body));
        assert_eq!(r.status, status, "{body}");
        assert!(r.error().starts_with(want), "{body}: {}", r.error());
        assert_eq!(r.code(), "invalid_input");
    }
    let r = serve.send("PATCH", &format!("/sessions/{id}"), br#"{"ttl_minutes":5,"ttl_minutes":6}"#);
    assert_eq!((r.status, r.error()), (400, "invalid body: duplicate field `ttl_minutes`".to_string()));
    let r = serve.call("PATCH", "/sessions/no-such-id", Some(&json!({"ttl_minutes": 5})));
    assert_eq!(r.status, 404);

    // The user's own public key: no private key comes back, and that key logs in.
    let own = env.path("own");
    let keygen = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&own).output().unwrap();
    assert!(keygen.status.success());
    let public = std::fs::read_to_string(format!("{}.pub", own.display())).unwrap();
    // Empty values and a TTL of 0 mean the defaults, as in the original API.
    let defaults = json!({"user_id": "pat", "ssh_public_key": public, "ttl_minutes": 0,
        "mig_profile": "", "mig_instance_uuid": "", "image": ""});
    let r = serve.call("POST", "/sessions", Some(&defaults));
    assert_eq!(r.status, 201, "{}", r.text());
    let answer = r.json();
    let pat = serve.get(&format!("/sessions/{}", answer["session_id"].as_str().unwrap())).json();
    assert_eq!((pat["ttl_minutes"].as_u64(), pat["metadata"]["image"].as_str()), (Some(60), Some("gpu-workspace")));
    assert!(answer["ssh_private_key"].is_null());
    assert_spec_shape(&spec_created(), &answer, &["gpu_uuid", "ssh_private_key"], "created");
    let out = env.ssh(&Session { json: answer, key: own }, "whoami");
    assert_eq!(stdout(&out), "pat\n", "{}", stderr(&out));

    // GPU endpoints on a host without GPUs: the spec's shapes, empty.
    for (path, want) in [
        ("/gpus", json!({"gpus": [], "count": 0})),
        ("/gpus/profiles", json!({"profiles": []})),
        ("/gpus/available", json!({"available_instances": [], "count": 0})),
    ] {
        let r = serve.get(path);
        assert_eq!((r.status, r.json()), (200, want), "{path}");
    }

    // Bad input: 400 naming the field, nothing made.
    let cases: &[(&[u8], &str)] = &[
        (b"{", "invalid body: malformed JSON"),
        (b"[1]", "invalid body: invalid type: sequence, expected a map"),
        (br#"{"user_id":"bo","shell":"zsh"}"#, "invalid body: unknown field `shell`"),
        (br#"{"user_id":"bo","user_id":"al"}"#, "invalid body: duplicate field `user_id`"),
        (br#"{"ttl_minutes":5}"#, "invalid user_id: is required"),
        (br#"{"user_id":5}"#, "invalid user_id: invalid type: integer `5`, expected a string"),
        (br#"{"user_id":"bo","ttl_minutes":"5"}"#, "invalid ttl_minutes: invalid type: string"),
        (br#"{"user_id":"bo","ttl_minutes":2.5}"#, "invalid ttl_minutes: \"2.5\" is not a whole number of minutes"),
        (br#"{"user_id":"bo","ttl_minutes":10081}"#, "invalid ttl_minutes: 10081 is out of range"),
        (br#"{"user_id":"Root"}"#, "invalid user_id: \"Root\" must start with a lowercase letter a-z or '_'"),
        (br#"{"user_id":"root"}"#, "invalid user_id: \"root\" is a reserved system account name"),
        (br#"{"user_id":"../x"}"#, "invalid user_id: \"../x\" must start with a lowercase letter"),
        (br#"{"user_id":"bo","image":"no-such-image"}"#, "invalid image: \"no-such-image\" is not on this host"),
        (br#"{"user_id":"bo","image":"a b"}"#, "invalid image: \"a b\" is not a valid image reference"),
        (br#"{"user_id":"bo","ssh_public_key":"not a key"}"#, "invalid ssh_public_key: not an OpenSSH public key"),
        (br#"{"user_id":"bo","mig_profile":"3g.20gb"}"#, "invalid mig_profile: \"3g.20gb\" asks for a GPU"),
        (br#"{"user_id":"bo","mig_instance_uuid":"MIG-1"}"#, "invalid mig_instance_uuid: \"MIG-1\" asks for a GPU"),
        (
            br#"{"user_id":"bo","mig_profile":"3g.20gb","mig_instance_uuid":"MIG-1"}"#,
            "invalid mig_profile: give mig_profile or mig_instance_uuid, not both",
        ),
    ];
    for (body, want) in cases {
        let r = serve.send("POST", "/sessions", body);
        assert_eq!(r.status, 400, "{}: {}", String::from_utf8_lossy(body), r.text());
        assert!(r.error().starts_with(want), "{}: {}", String::from_utf8_lossy(body), r.error());
        assert_eq!(r.code(), "invalid_input");
    }

    // Unknown paths, wrong methods.
    for path in ["/", "/session", "/sessions/", "/sessions/a/b", "/gpus/x"] {
        let r = serve.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.error(), format!("no such path: {path}"));
        assert_eq!(r.code(), "not_found");
    }
    for (method, path, allow) in [
        ("PUT", "/sessions", "GET, HEAD, POST, DELETE, OPTIONS"),
        ("POST", "/sessions/x", "GET, HEAD, PATCH, DELETE, OPTIONS"),
        ("DELETE", "/healthz", "GET, HEAD, OPTIONS"),
        ("PATCH", "/gpus", "GET, HEAD, OPTIONS"),
    ] {
        let r = serve.call(method, path, None);
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("Allow"), Some(allow));
        assert_eq!(r.code(), "method_not_allowed");
    }

    // Bodies over the limit: announced (checked before reading) and chunked (capped while reading).
    let auth = format!("Authorization: Bearer {}", serve.token);
    let r = exchange(
        serve.port,
        format!("POST /sessions HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 100000\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.error(), "the request body is larger than the limit of 65536 bytes");
    assert_eq!(r.code(), "payload_too_large");
    let big = format!("{{\"user_id\":\"{}\"}}", "a".repeat(70_000));
    let mut chunked =
        format!("POST /sessions HTTP/1.1\r\nHost: x\r\n{auth}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    for part in big.as_bytes().chunks(8000) {
        chunked.extend(format!("{:x}\r\n", part.len()).bytes());
        chunked.extend(part);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let r = exchange(serve.port, &chunked);
    assert_eq!(r.status, 413);

    // HEAD: the headers of GET, no body.
    let r = serve.call("HEAD", "/sessions", None);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("Content-Length").map(|l| l.parse::<usize>().unwrap() > 2), Some(true));

    // Metrics reflect what happened.
    let r = serve.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("application/openmetrics-text; version=1.0.0"));
    let m = r.text();
    for line in [
        "sandman_sessions{state=\"running\"} 2",
        "sandman_ssh_ports_in_use 2",
        "sandman_gpu_slices_in_use 0",
        "sandman_create_duration_seconds_count 2",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?}:\n{m}");
    }
    assert!(m.contains("sandman_http_requests_total{status=\"401\"}"));
    let runs: u64 = m.lines().find_map(|l| l.strip_prefix("sandman_reaper_runs_total ")).unwrap().parse().unwrap();
    assert!(runs >= 1, "the start-up reap ran:\n{m}");

    // The OpenAPI document needs no token.
    let r = request(serve.port, "GET", "/openapi.json", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["openapi"], "3.1.0");

    // Remove one, then all.
    let r = serve.call("DELETE", &format!("/sessions/{id}"), None);
    assert_eq!(r.status, 200);
    assert!(r.json()["message"].as_str().unwrap().contains(&id));
    assert_eq!(serve.call("DELETE", &format!("/sessions/{id}"), None).status, 404);
    let r = serve.call("DELETE", "/sessions", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["removed"].as_array().unwrap().len(), 1);
    assert!(r.json()["message"].is_string());
    assert_eq!(serve.get("/sessions").json(), json!([]));
    assert!(env.containers().is_empty());
    assert!(env.workspace_root().join("user123").is_dir(), "workspaces are kept");

    let token = serve.token.clone();
    let log = serve.stop();
    assert_no_secrets(&log, &token);
    assert!(
        log.lines().any(|l| l.contains("method=POST path=/sessions status=201")),
        "one log line per request:\n{log}"
    );
}

#[test]
fn gpu_endpoints_answer_in_the_spec_shapes_and_a_profile_create_gets_its_slice() {
    // A real server on simulated GPUs: the shapes of docs/api.md, filled with real devices.
    let env = Env::new("api-gpus");
    let sim = env.path("gpus.toml");
    std::fs::write(
        &sim,
        "[[gpu]]\nmodel = \"NVIDIA A100-SXM4-40GB\"\nmig = true\ninstances = [\"3g.20gb\", \"1g.10gb\"]\n",
    )
    .unwrap();
    let (tokens, _) = token_file(&env);
    let sim_path = sim.display().to_string();
    let serve =
        Serve::start_with(&env, &tokens, &[("SANDMAN_GPU_BACKEND", "sim"), ("SANDMAN_GPU_SIM_FILE", &sim_path)]);
    let gpus = serve.get("/gpus");
    assert_eq!(gpus.status, 200);
    assert_spec_shape(&spec_gpus(), &gpus.json(), &["power_usage", "power_limit"], "gpus");
    assert_eq!(gpus.json()["count"], 1);
    let profiles = serve.get("/gpus/profiles");
    assert_spec_shape(&spec_profiles(), &profiles.json(), &[], "profiles");
    let listed = profiles.json();
    let names: Vec<&str> = listed["profiles"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in ["1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let free = serve.get("/gpus/available");
    assert_spec_shape(&spec_available(), &free.json(), &[], "available");
    assert_eq!(free.json()["count"], 2);

    let created = serve.call("POST", "/sessions", Some(&json!({"user_id": "gpuuser", "mig_profile": "1g.10gb"})));
    assert_eq!(created.status, 201, "{}", created.text());
    let uuid = created.json()["gpu_uuid"].as_str().unwrap().to_string();
    assert!(uuid.starts_with("MIG-"));
    let free = serve.get("/gpus/available").json();
    assert_eq!(free["count"], 1);
    assert!(free["available_instances"].as_array().unwrap().iter().all(|m| m["uuid"] != uuid.as_str()));
    let both = serve.call(
        "POST",
        "/sessions",
        Some(&json!({"user_id": "other", "mig_profile": "3g", "mig_instance_uuid": uuid})),
    );
    assert_eq!(both.status, 400, "{}", both.text());
    let taken = serve.call("POST", "/sessions", Some(&json!({"user_id": "other", "mig_instance_uuid": uuid})));
    assert_eq!(taken.status, 409, "{}", taken.text());
    assert!(env.sessions().len() == 1 && env.containers().len() == 1, "nothing half-made");
    serve.stop();
}

#[test]
fn cors_preflight_and_credentialed_requests_as_a_browser_sends_them() {
    let env = Env::new("api-cors");
    let serve = Serve::start(&env);
    let origin = "http://app.example:3000";

    // The preflight a browser sends before a credentialed POST with a JSON body: no token.
    let r = request(
        serve.port,
        "OPTIONS",
        "/sessions",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization,content-type"),
        ],
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(origin));
    assert_eq!(r.header("Access-Control-Allow-Credentials"), Some("true"));
    let methods = r.header("Access-Control-Allow-Methods").unwrap();
    // Exactly the methods some route answers.
    assert_eq!(methods, "GET, POST, DELETE, PATCH, HEAD, OPTIONS");
    assert_eq!(r.header("Access-Control-Allow-Headers"), Some("authorization,content-type"));
    assert_eq!(r.header("Access-Control-Max-Age"), Some("86400"));
    assert_eq!(r.header("Vary"), Some("Origin"));
    assert!(r.body.is_empty());

    // The credentialed request itself, and an error the page can read.
    let auth = format!("Bearer {}", serve.token);
    let r = request(serve.port, "GET", "/sessions", &[("Origin", origin), ("Authorization", &auth)], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(origin));
    assert_eq!(r.header("Access-Control-Allow-Credentials"), Some("true"));
    assert_eq!(r.header("Access-Control-Expose-Headers"), Some("Allow, WWW-Authenticate, Retry-After"));
    assert_eq!(r.header("Vary"), Some("Origin"));
    let r = request(serve.port, "GET", "/sessions", &[("Origin", origin)], None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(origin));
    // No Origin (curl, scripts): no CORS headers.
    let r = serve.get("/sessions");
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
    serve.stop();

    // Narrowed to one origin: the others get no CORS headers at all.
    let (tokens, _) = token_file(&env);
    let narrow = Serve::start_with(&env, &tokens, &[("SANDMAN_CORS_ORIGINS", "https://good.example")]);
    let preflight = |o: &str| {
        request(
            narrow.port,
            "OPTIONS",
            "/sessions/abc",
            &[("Origin", o), ("Access-Control-Request-Method", "DELETE")],
            None,
        )
    };
    let good = preflight("https://good.example");
    assert_eq!(good.status, 204);
    assert_eq!(good.header("Access-Control-Allow-Origin"), Some("https://good.example"));
    let evil = preflight("https://evil.example");
    assert_eq!(evil.status, 204);
    for h in ["Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Allow-Methods"] {
        assert_eq!(evil.header(h), None, "{h}");
    }
    let auth = format!("Bearer {}", narrow.token);
    let r =
        request(narrow.port, "GET", "/sessions", &[("Origin", "https://evil.example"), ("Authorization", &auth)], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
    narrow.stop();
}

#[test]
fn the_token_file_is_made_once_private_and_the_token_never_logged() {
    let env = Env::new("api-token-file");
    let path = env.path("etc/sandman/api-tokens");
    let serve = Serve::start_with(&env, &path, &[]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = serve.token.clone();
    assert_eq!(token.len(), 64, "256 bits in hex");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(serve.get("/sessions").status, 200);
    assert_eq!(serve.call("DELETE", "/sessions", None).status, 200);
    let log = serve.stop();
    assert_eq!(log.matches(&token).count(), 1, "shown once, when made:\n{log}");
    assert!(log.contains(&path.display().to_string()));

    // Started again: the same token, never printed.
    let serve = Serve::start_with(&env, &path, &[]);
    assert_eq!(serve.token, token);
    assert_eq!(serve.get("/sessions").status, 200);
    let log = serve.stop();
    assert!(!log.contains(&token), "{log}");
    assert!(log.contains(&path.display().to_string()), "{log}");

    // A token file others can read is refused.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run(&["serve", "--port", "0", "--bind", "127.0.0.1", "--token-file", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

#[test]
fn stalled_clients_cannot_hold_the_workers() {
    let env = Env::new("api-stalls");
    let (tokens, token) = token_file(&env);
    // Two workers, a two-second body deadline; more stalled clients than workers of each kind.
    let serve =
        Serve::start_with(&env, &tokens, &[("SANDMAN_API_WORKERS", "2"), ("SANDMAN_API_BODY_TIMEOUT_SECS", "2")]);
    let open = |raw: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", serve.port)).unwrap();
        s.write_all(raw).unwrap();
        s
    };
    let auth = format!("Authorization: Bearer {token}\r\n");
    let mut held = Vec::new();
    for _ in 0..4 {
        // Headers begun, never finished.
        held.push(open(b"POST /sessions HTTP/1.1\r\nHost: x\r\nAuthoriz"));
        // Headers complete, a small body announced and never sent.
        held.push(open(format!("POST /sessions HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n").as_bytes()));
    }
    // Headers complete, a larger body begun and never finished: these wait on our side.
    let slow_bodies: Vec<TcpStream> = (0..4)
        .map(|_| {
            open(
                format!("POST /sessions HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 5000\r\n\r\n{{\"user_id\":")
                    .as_bytes(),
            )
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(300));

    // Everyone else is still answered, at once.
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(request(serve.port, "GET", "/healthz", &[], None).status, 200);
        assert_eq!(serve.get("/sessions").status, 200);
        assert_eq!(serve.send("POST", "/sessions", b"{").status, 400);
        assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    }
    // A huge body announced without a token: refused at once, and the server survives it.
    let mut huge = open(b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000000\r\n\r\n");
    huge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = crate::http::read_answer(&mut huge);
    assert_eq!(r.status, 401);

    // The slow bodies get 408 once their deadline passes, and their connections close.
    for mut s in slow_bodies {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = crate::http::read_answer(&mut s);
        assert_eq!(r.status, 408, "{}", r.text());
        assert_eq!(r.error(), "the request body did not arrive within 2 seconds");
        assert_eq!(r.code(), "timeout");
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(6), "{waited:?}");
    assert_eq!(serve.get("/sessions").status, 200);
    let log = serve.stop();
    assert_no_secrets(&log, &token);
    drop(held);
}

#[test]
fn sigterm_lets_a_create_in_flight_finish_then_exits_zero() {
    let env = Env::new("api-sigterm");
    let serve = Serve::start(&env);
    let (port, auth) = (serve.port, format!("Bearer {}", serve.token));
    let create = std::thread::spawn(move || {
        request(port, "POST", "/sessions", &[("Authorization", &auth)], Some(br#"{"user_id":"late"}"#))
    });
    // The create is under way (it takes most of a second) when the signal comes.
    let start = Instant::now();
    while env.containers().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "the create never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, log) = serve.terminate();
    let r = create.join().unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(log.contains("SIGTERM: stopping after the requests in flight"), "{log}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "the port is closed");
    let sessions = env.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["state"], "running");

    // SIGINT (Ctrl-C) stops it the same way.
    let serve = Serve::start(&env);
    serve.signal(libc::SIGINT);
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn the_reaper_loop_reconciles_at_start_and_reaps_expired_sessions() {
    let env = Env::new("api-reaper");
    // A database, then a container labelled with it that has no row: what a crash leaves.
    env.ok(&["session", "list"]);
    let instance = env.instance_id().unwrap();
    let orphan = Command::new("docker")
        .args(["create", "--label", &format!("sandman.instance={instance}")])
        .args(["--label", "sandman.session=gone", "gpu-workspace", "true"])
        .output()
        .unwrap();
    assert!(orphan.status.success(), "{}", stderr(&orphan));

    // The start-up pass removes it; the next pass is an hour away.
    let (tokens, _) = token_file(&env);
    let serve = Serve::start_with(&env, &tokens, &[("SANDMAN_REAP_INTERVAL_SECS", "3600")]);
    let start = Instant::now();
    while !env.containers().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "the orphan was not reaped at start-up");
        std::thread::sleep(Duration::from_millis(100));
    }
    serve.stop();

    // Every second: an expired session goes, a live one stays.
    let serve = Serve::start_with(&env, &tokens, &[("SANDMAN_REAP_INTERVAL_SECS", "1")]);
    let doomed = serve.call("POST", "/sessions", Some(&json!({"user_id": "eve"})));
    let alive = serve.call("POST", "/sessions", Some(&json!({"user_id": "al"})));
    assert_eq!((doomed.status, alive.status), (201, 201));
    let doomed_id = doomed.json()["session_id"].as_str().unwrap().to_string();
    env.sql(&format!("UPDATE sessions SET expires_at = strftime('%s','now') - 1 WHERE id = '{doomed_id}'"));
    let start = Instant::now();
    while serve.get(&format!("/sessions/{doomed_id}")).status != 404 {
        assert!(start.elapsed() < Duration::from_secs(20), "the expired session was not reaped");
        std::thread::sleep(Duration::from_millis(200));
    }
    let list = serve.get("/sessions").json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["user_id"], "al");
    // The row goes first (so that a concurrent extend wins), the container right after it.
    let start = Instant::now();
    while env.containers().len() != 1 {
        assert!(start.elapsed() < Duration::from_secs(20), "the expired session's container stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The pass counts its removals once it has finished (after its warnings and notices).
    let removed = |m: &str| -> u64 {
        m.lines().find_map(|l| l.strip_prefix("sandman_reaper_removed_total ")).unwrap().parse().unwrap()
    };
    let start = Instant::now();
    loop {
        let m = serve.get("/metrics").text();
        if removed(&m) >= 1 {
            assert!(m.contains("sandman_reaped_total{reason=\"expired\"} 1"), "{m}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the removal was not counted: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    serve.stop();
}

#[test]
fn the_openapi_document_matches_the_server() {
    let env = Env::new("api-openapi");
    let serve = Serve::start(&env);
    let doc = request(serve.port, "GET", "/openapi.json", &[], None).json();
    let created = serve.call("POST", "/sessions", Some(&json!({"user_id": "oa"})));
    assert_eq!(created.status, 201);
    let id = created.json()["session_id"].as_str().unwrap().to_string();

    // Errors have the documented error shape and status.
    let error_schema = json!({"$ref": "#/components/schemas/Error"});
    for (method, path, body, status) in [
        ("GET", "/sessions/nope".to_string(), None, 404),
        ("PATCH", "/sessions/nope".to_string(), Some(json!({"ttl_minutes": 5})), 404),
        ("POST", "/sessions".to_string(), Some(json!({"user_id": 1})), 400),
        ("POST", "/sessions".to_string(), Some(json!({"user_id": "oa"})), 409),
    ] {
        let r = serve.call(method, &path, body.as_ref());
        assert_eq!(r.status, status, "{method} {path}");
        let template = if path.starts_with("/sessions/") { "/sessions/{id}" } else { "/sessions" };
        let op = &doc["paths"][template][method.to_lowercase()];
        assert!(op["responses"][status.to_string()].is_object(), "{method} {template} {status}");
        assert!(schema_errors(&doc, &error_schema, &r.json()).is_empty());
    }

    // Each documented operation, called as documented: a documented status, and a body of the
    // documented shape. DELETEs last, since they remove the session.
    let mut ops: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method != "parameters" {
                ops.push((method.to_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    ops.sort_by_key(|(m, p, _)| (m == "DELETE", p.len() < 10, m.clone(), p.clone()));
    // A key to add and then revoke, by its fingerprint (its '/' and '+' escaped in the path).
    let key = env.path("oa-key");
    let keygen = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output().unwrap();
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let public_key = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
    let listed = Command::new("ssh-keygen").arg("-lf").arg(format!("{}.pub", key.display())).output().unwrap();
    let fingerprint = stdout(&listed).split_whitespace().nth(1).unwrap().replace('/', "%2F").replace('+', "%2B");
    let valid_body = |method: &str, path: &str| match (method, path) {
        ("POST", "/sessions") => Some(json!({"user_id": "oa2", "ttl_minutes": 5})),
        ("POST", "/users/{user}/keys") => Some(json!({"public_key": public_key})),
        ("PATCH", _) => Some(json!({"ttl_minutes": 90})),
        _ => None,
    };
    for (method, path, op) in &ops {
        let concrete = path.replace("{id}", &id).replace("{user}", "oa").replace("{fingerprint}", &fingerprint);
        let r = serve.call(method, &concrete, valid_body(method, path).as_ref());
        let documented = &op["responses"][r.status.to_string()];
        assert!(documented.is_object(), "{method} {path}: status {} is not documented: {}", r.status, r.text());
        assert!((200..300).contains(&r.status), "{method} {path}: {} {}", r.status, r.text());
        let content_type = r.header("Content-Type").unwrap().split(';').next().unwrap().to_string();
        let schema = &documented["content"][&content_type]["schema"];
        assert!(schema.is_object(), "{method} {path}: {content_type} is not documented");
        if content_type == "application/json" {
            let errors = schema_errors(&doc, schema, &r.json());
            assert!(errors.is_empty(), "{method} {path}: {errors:?}");
        }
        // Without a token: 401 where the document says a token is needed, and only there.
        let anonymous = request(serve.port, method, &concrete, &[], None);
        let needs_token = op.get("security") != Some(&json!([]));
        assert_eq!(anonymous.status == 401, needs_token, "{method} {path}");
        if needs_token {
            assert!(op["responses"]["401"].is_object(), "{method} {path}: 401 undocumented");
        }
    }

    // Methods the document does not list for a path: 405 with Allow.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["GET", "POST", "PATCH", "DELETE", "PUT"] {
            if item.get(method.to_lowercase()).is_none() {
                let r = serve.call(method, &path.replace("{id}", "x"), None);
                assert_eq!(r.status, 405, "{method} {path}");
                assert!(r.header("Allow").is_some());
            }
        }
    }
    serve.stop();
}

#[test]
fn api_and_cli_creates_beside_cron_reaps_never_double_allocate() {
    let env = Env::new("api-mixed-load");
    // Room for all five API creates at once: this test is about allocation, not the bound.
    let serve = Serve::start_with(
        &env,
        &token_file(&env).0,
        &[("SANDMAN_API_WORKERS", "4"), ("SANDMAN_API_MAX_CONCURRENT_CREATES", "8")],
    );
    let (port, auth) = (serve.port, format!("Bearer {}", serve.token));
    let call = move |method: &str, path: &str, body: Option<Value>| {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        request(port, method, path, &[("Authorization", auth.as_str())], bytes.as_deref())
    };
    let statuses = std::sync::Mutex::new(Vec::<(String, u16)>::new());
    let record = |what: String, status: u16| statuses.lock().unwrap().push((what, status));

    std::thread::scope(|scope| {
        // API: create then delete, two clients, three users each.
        for c in 0..2 {
            let (call, record) = (&call, &record);
            scope.spawn(move || {
                for i in 0..3 {
                    let user = format!("api{c}x{i}");
                    let r = call("POST", "/sessions", Some(json!({ "user_id": user })));
                    record(format!("create {user}"), r.status);
                    if r.status == 201 {
                        let id = r.json()["session_id"].as_str().unwrap().to_string();
                        let r = call("DELETE", &format!("/sessions/{id}"), None);
                        record(format!("delete {user}"), r.status);
                    }
                }
            });
        }
        // API: three creates racing for one user.
        for _ in 0..3 {
            let (call, record) = (&call, &record);
            scope.spawn(move || {
                let r = call("POST", "/sessions", Some(json!({"user_id": "dup"})));
                record("create dup".into(), r.status);
            });
        }
        // API readers: every snapshot has distinct users and ports.
        {
            let (call, record) = (&call, &record);
            scope.spawn(move || {
                for _ in 0..40 {
                    let r = call("GET", "/sessions", None);
                    record("list".into(), r.status);
                    let list = r.json();
                    let rows = list.as_array().unwrap();
                    let users: HashSet<_> = rows.iter().map(|s| s["user_id"].to_string()).collect();
                    let ports: HashSet<_> = rows.iter().map(|s| s["ssh_port"].as_u64()).collect();
                    assert_eq!((users.len(), ports.len()), (rows.len(), rows.len()), "{list}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        // CLI creates, as an admin at a terminal would run them.
        for i in 0..3 {
            let env = &env;
            scope.spawn(move || {
                let out = env.run(&["session", "create", "--user", &format!("cli{i}"), "--json", "--quiet"]);
                assert!(out.status.success(), "cli create: {}", stderr(&out));
            });
        }
        // Cron-style reaps, overlapping each other and the server's own reaper.
        for _ in 0..2 {
            let env = &env;
            scope.spawn(move || {
                for _ in 0..10 {
                    let out = env.run(&["reap", "--quiet"]);
                    assert!(out.status.success(), "reap: {}", stderr(&out));
                }
            });
        }
    });

    let statuses = statuses.into_inner().unwrap();
    for (what, status) in &statuses {
        let fine: &[u16] = if what == "create dup" {
            &[201, 409]
        } else if what.starts_with("create") {
            &[201]
        } else {
            &[200]
        };
        assert!(fine.contains(status), "{what}: {status}");
    }
    let dup_wins = statuses.iter().filter(|(w, s)| w == "create dup" && *s == 201).count();
    assert_eq!(dup_wins, 1, "one session per user");

    // What is left: dup and the CLI's three, on distinct ports, each with exactly its container.
    let list = serve.get("/sessions").json();
    let rows = list.as_array().unwrap();
    let mut users: Vec<&str> = rows.iter().map(|s| s["user_id"].as_str().unwrap()).collect();
    users.sort();
    assert_eq!(users, ["cli0", "cli1", "cli2", "dup"]);
    let ports: HashSet<u64> = rows.iter().map(|s| s["ssh_port"].as_u64().unwrap()).collect();
    assert_eq!(ports.len(), 4);
    assert_eq!(env.containers().len(), 4, "no orphan containers");

    assert_eq!(serve.call("DELETE", "/sessions", None).status, 200);
    assert!(env.containers().is_empty());
    serve.stop();
}

#[test]
fn a_client_that_does_not_read_a_large_answer_does_not_block_others() {
    let env = Env::new("api-slow-reader");
    let (tokens, token) = token_file(&env);
    let serve =
        Serve::start_with(&env, &tokens, &[("SANDMAN_API_WORKERS", "1"), ("SANDMAN_API_BODY_TIMEOUT_SECS", "2")]);
    // Enough stored sessions for a list of several megabytes (rows only, no containers).
    let mut sql = String::from("BEGIN;");
    for i in 0..6000 {
        sql.push_str(&format!(
            "INSERT INTO users (name, uid, host_key, created_at) VALUES ('u{i}', {}, 'k', 0);
             INSERT INTO sessions (id, user_name, state, ssh_port, image, ttl_minutes, created_at,
               expires_at, workspace, host_key_fingerprint)
             VALUES ('{i:08}-0000-0000-0000-000000000000', 'u{i}', 'running', {}, 'gpu-workspace', 60,
               strftime('%s','now'), strftime('%s','now') + 3600, '/srv/workspaces/u{i}', 'SHA256:{}');",
            30000 + i,
            40000 + i,
            "x".repeat(400)
        ));
    }
    sql.push_str("COMMIT;");
    env.sql(&sql);
    let size = serve.get("/sessions").body.len();
    assert!(size > 4_000_000, "list of {size} bytes");

    // Three clients ask for the list and never read it; the only worker hands each answer to a
    // writer thread and goes on answering at once.
    let mut stuck = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", serve.port)).unwrap();
        s.write_all(format!("GET /sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes())
            .unwrap();
        stuck.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(request(serve.port, "GET", "/healthz", &[], None).status, 200);
        assert_eq!(serve.send("PATCH", "/sessions/none", b"{}").status, 400);
        assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    }
    // The writers give up after the write timeout; stopping does not wait for the clients.
    drop(stuck);
    env.sql("DELETE FROM sessions; DELETE FROM users;");
    serve.stop();
}

/// The slowest of `n` answers to `path`, each of which must succeed.
fn slowest(serve: &crate::http::Serve, path: &str, n: usize) -> Duration {
    let mut worst = Duration::ZERO;
    for _ in 0..n {
        let started = Instant::now();
        let r = if path == "/healthz" { request(serve.port, "GET", path, &[], None) } else { serve.get(path) };
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        worst = worst.max(started.elapsed());
    }
    worst
}

#[test]
fn hanging_creates_hold_no_worker_and_creates_beyond_the_bound_get_503() {
    let env = Env::new("api-hanging-creates");
    let image = crate::crash::hanging_image();
    let (tokens, token) = token_file(&env);
    // Two workers, three create slots: under the old dispatch three hanging creates held every
    // worker, and /healthz waited for them.
    let serve = Serve::start_with(
        &env,
        &tokens,
        &[
            ("SANDMAN_API_WORKERS", "2"),
            ("SANDMAN_API_MAX_CONCURRENT_CREATES", "3"),
            ("SANDMAN_SSH_READY_TIMEOUT_SECS", "15"),
        ],
    );
    let creates: Vec<_> = ["hang1", "hang2", "hang3"]
        .into_iter()
        .map(|user| {
            let (port, auth, image) = (serve.port, format!("Bearer {token}"), image.clone());
            std::thread::spawn(move || {
                let body = serde_json::to_vec(&json!({"user_id": user, "image": image})).unwrap();
                request(port, "POST", "/sessions", &[("Authorization", auth.as_str())], Some(&body))
            })
        })
        .collect();
    let start = Instant::now();
    while env.containers().len() < 3 {
        assert!(start.elapsed() < Duration::from_secs(30), "the creates never made their containers");
        std::thread::sleep(Duration::from_millis(50));
    }

    let beyond = serve.call("POST", "/sessions", Some(&json!({"user_id": "hang4", "image": image})));
    assert_eq!(beyond.status, 503, "{}", beyond.text());
    assert_eq!(beyond.code(), "unavailable");
    assert_eq!(beyond.header("Retry-After"), Some("5"));
    assert!(beyond.error().contains("3 creates are already in progress"), "{}", beyond.error());

    let health = slowest(&serve, "/healthz", 20);
    let list = slowest(&serve, "/sessions", 20);
    let metrics = slowest(&serve, "/metrics", 5);
    eprintln!("while 3 creates hang: slowest /healthz {health:?}, GET /sessions {list:?}, /metrics {metrics:?}");
    assert!(start.elapsed() < Duration::from_secs(14), "measured after the creates gave up");
    for (path, worst) in [("/healthz", health), ("/sessions", list), ("/metrics", metrics)] {
        assert!(worst < Duration::from_millis(50), "{path} took {worst:?} while creates hang");
    }
    let listed = serve.get("/sessions").json();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");

    for create in creates {
        let r = create.join().unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.error().contains("sshd did not answer"), "{}", r.error());
    }
    assert!(env.containers().is_empty(), "failed creates leave no container");
    assert_eq!(serve.get("/sessions").json(), json!([]));
    serve.stop();
}

#[test]
fn a_write_behind_another_process_lock_gets_503_and_reads_do_not_wait() {
    let env = Env::new("api-write-lock");
    let serve = Serve::start(&env);
    let s = serve.call("POST", "/sessions", Some(&json!({"user_id": "locked"})));
    assert_eq!(s.status, 201, "{}", s.text());
    let id = s.json()["session_id"].as_str().unwrap().to_string();

    let other = rusqlite::Connection::open(env.db()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE; UPDATE meta SET value = value WHERE key = 'instance_id';").unwrap();
    let started = Instant::now();
    let patch = {
        let (port, auth, id) = (serve.port, format!("Bearer {}", serve.token), id.clone());
        std::thread::spawn(move || {
            let r = request(
                port,
                "PATCH",
                &format!("/sessions/{id}"),
                &[("Authorization", auth.as_str())],
                Some(br#"{"ttl_minutes":30}"#),
            );
            (r, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let read_started = Instant::now();
    let got = serve.get(&format!("/sessions/{id}"));
    let list = serve.get("/sessions");
    let read = read_started.elapsed();
    assert_eq!((got.status, list.status), (200, 200));
    assert!(read < Duration::from_millis(100), "reads waited {read:?} behind the held write lock");

    let (r, answered) = patch.join().unwrap();
    let waited = answered - started;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("Retry-After"), Some("5"));
    assert!(r.error().contains("another process holds its write lock"), "{}", r.error());
    assert!(r.error().contains(&env.db().display().to_string()), "{}", r.error());
    assert!((Duration::from_secs(4)..Duration::from_secs(10)).contains(&waited), "answered after {waited:?}");
    // The CLI's exit status for the same.
    let out = env.run(&["session", "extend", &id, "--ttl", "30"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    drop(other);

    let r = serve.call("PATCH", &format!("/sessions/{id}"), Some(&json!({"ttl_minutes": 30})));
    assert_eq!(r.status, 200, "once the lock is free: {}", r.text());
    assert_eq!(serve.call("DELETE", &format!("/sessions/{id}"), None).status, 200);
    serve.stop();
}
