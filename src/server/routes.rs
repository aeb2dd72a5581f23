//! Routing and handlers. Each handler parses the request into the service's types, calls the
//! session service, and shapes the answer with `views`; rules live in the service.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};

use super::App;
use super::auth::CHALLENGE;
use super::errors::ApiError;
use super::exchange::{Body, Exchange, JSON, Reply};
use super::metrics::InUse;
use crate::error::{Error, Result};
use crate::gpu::GpuRequest;
use crate::sessions::{Cancel, CreateRequest};
use crate::validate;
use crate::views::{AvailableView, CreatedView, GpusView, ProfilesView, SessionView};

/// Every path and its methods. HEAD is answered wherever GET is, OPTIONS everywhere; the OpenAPI
/// document lists exactly these (a test checks both ways).
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/healthz", &["GET"]),
    ("/openapi.json", &["GET"]),
    ("/metrics", &["GET"]),
    ("/sessions", &["GET", "POST", "DELETE"]),
    ("/sessions/{id}", &["GET", "PATCH", "DELETE"]),
    ("/gpus", &["GET"]),
    ("/gpus/profiles", &["GET"]),
    ("/gpus/available", &["GET"]),
];

/// Paths anyone may read: the health check and the API's description.
const PUBLIC: &[&str] = &["/healthz", "/openapi.json"];

pub const OPENAPI: &str = include_str!("openapi.json");

/// The OpenAPI document as this server applies it: the static document plus the limits that
/// come from settings and the service's rules (the TTL bound, reserved user names), so that
/// clients and fuzzers see the rules the server enforces.
pub fn openapi_document(max_ttl_minutes: u32) -> Vec<u8> {
    let mut doc: Value = serde_json::from_str(OPENAPI).expect("the embedded document is JSON");
    let schemas = &mut doc["components"]["schemas"];
    for request in ["CreateSessionRequest", "ExtendSessionRequest"] {
        schemas[request]["properties"]["ttl_minutes"]["maximum"] = json!(max_ttl_minutes);
    }
    schemas["CreateSessionRequest"]["properties"]["user_id"]["not"] = json!({ "enum": validate::RESERVED_USERS });
    serde_json::to_vec_pretty(&doc).expect("a JSON value serializes")
}

/// The route of `path` and the `{id}` it carries, if any.
fn route(path: &str) -> Option<(&'static str, Option<&str>)> {
    if let Some(id) = path.strip_prefix("/sessions/") {
        return (!id.is_empty() && !id.contains('/')).then_some(("/sessions/{id}", Some(id)));
    }
    ROUTES.iter().find(|(pattern, _)| *pattern == path).map(|(pattern, _)| (*pattern, None))
}

fn allow(methods: &[&str]) -> String {
    let mut all: Vec<&str> = methods.to_vec();
    if methods.contains(&"GET") {
        all.insert(1, "HEAD");
    }
    all.push("OPTIONS");
    all.join(", ")
}

pub fn dispatch(app: &App, ex: &mut Exchange) -> Reply {
    let path = ex.path().to_string();
    let Some((pattern, id)) = route(&path) else {
        return ApiError::new(404, format!("no such path: {path}")).into_reply();
    };
    let id = id.map(str::to_string);
    let methods = ROUTES.iter().find(|(p, _)| *p == pattern).map_or(&[][..], |r| r.1);
    let method = ex.method().to_string();
    if method == "OPTIONS" {
        // A CORS preflight or a plain question about the methods; neither needs a token.
        return Reply::empty().with_header("Allow", allow(methods));
    }
    let as_get = if method == "HEAD" { "GET" } else { method.as_str() };
    if !methods.contains(&as_get) {
        let allowed = allow(methods);
        return ApiError::new(405, format!("{method} is not allowed on {pattern}; use {allowed}"))
            .with_header("Allow", allowed)
            .into_reply();
    }
    if !PUBLIC.contains(&pattern)
        && let Err(why) = app.tokens.check(ex.header("Authorization"))
    {
        return ApiError::new(401, why).with_header("WWW-Authenticate", CHALLENGE).into_reply();
    }
    let id = id.as_deref().unwrap_or_default();
    let result = match (pattern, as_get) {
        ("/healthz", _) => Ok(healthz(app)),
        ("/openapi.json", _) => Ok(Reply::bytes(200, JSON, Body::Shared(app.openapi.clone()))),
        ("/metrics", _) => metrics(app),
        ("/sessions", "GET") => list(app),
        ("/sessions", "POST") => create(app, ex),
        ("/sessions", "DELETE") => remove_all(app),
        ("/sessions/{id}", "GET") => {
            app.sessions.get(id).map(|row| Reply::json(200, &SessionView::from(&row))).map_err(ApiError::from)
        }
        ("/sessions/{id}", "PATCH") => extend(app, ex, id),
        ("/sessions/{id}", "DELETE") => remove(app, id),
        ("/gpus", _) => app.sessions.gpus().map(|gpus| Reply::json(200, &GpusView::new(gpus))).map_err(ApiError::from),
        ("/gpus/profiles", _) => app
            .sessions
            .gpu()
            .profiles()
            .map(|profiles| Reply::json(200, &ProfilesView { profiles }))
            .map_err(ApiError::from),
        ("/gpus/available", _) => {
            app.sessions.available().map(|free| Reply::json(200, &AvailableView::new(free))).map_err(ApiError::from)
        }
        _ => unreachable!("ROUTES and this match list the same methods"),
    };
    result.unwrap_or_else(ApiError::into_reply)
}

fn healthz(app: &App) -> Reply {
    Reply::json(
        200,
        &json!({
            "status": "healthy",
            "service": "gpu-ssh-gateway-orchestrator",
            "version": env!("CARGO_PKG_VERSION"),
            "gpu_backend": app.sessions.gpu().name(),
        }),
    )
}

/// The session list, serialized once per change of the store (any process's change counts), so
/// that a large list costs one copy per answer rather than a query and a serialization.
fn list(app: &App) -> Result<Reply, ApiError> {
    let version = app.sessions.list_version()?;
    let mut cache = app.list_cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((v, bytes)) = cache.as_ref()
        && *v == version
    {
        return Ok(Reply::bytes(200, JSON, Body::Shared(bytes.clone())));
    }
    // Read after the version: the rows are at least as new as the version they are kept under.
    let views: Vec<SessionView> = app.sessions.list()?.iter().map(SessionView::from).collect();
    let bytes: Arc<[u8]> = serde_json::to_vec(&views).map_err(|e| Error::Internal(e.into()))?.into();
    *cache = Some((version, bytes.clone()));
    Ok(Reply::bytes(200, JSON, Body::Shared(bytes)))
}

fn create(app: &App, ex: &mut Exchange) -> Result<Reply, ApiError> {
    let body = ex.read_body()?;
    let request = create_request(&body, app.sessions.settings.max_ttl_minutes)?;
    let user = request.user.clone();
    let progress = |step: &str| tracing::debug!(user = %user, "create: {step}");
    let started = Instant::now();
    let created = app.runtime.block_on(app.sessions.create(request, &progress, &Cancel::default()));
    app.metrics.create(started.elapsed(), created.is_ok());
    let created = created?;
    let key_path = format!("{}.key", created.ssh_user);
    Ok(Reply::json(201, &CreatedView::new(&created, &key_path)))
}

fn extend(app: &App, ex: &mut Exchange, id: &str) -> Result<Reply, ApiError> {
    let body = ex.read_body()?;
    let fields = object(&body, &["ttl_minutes"])?;
    let ttl = ttl_field(&fields, app.sessions.settings.max_ttl_minutes)?
        .ok_or_else(|| Error::invalid("ttl_minutes", "is required"))?;
    let row = app.sessions.extend(id, ttl)?;
    Ok(Reply::json(200, &SessionView::from(&row)))
}

fn remove(app: &App, id: &str) -> Result<Reply, ApiError> {
    let row = app.runtime.block_on(app.sessions.remove(id))?;
    Ok(Reply::json(200, &json!({ "message": format!("session {} removed; workspace {} kept", row.id, row.workspace) })))
}

fn remove_all(app: &App) -> Result<Reply, ApiError> {
    let rows = app.sessions.list()?;
    let mut removed = Vec::new();
    for row in &rows {
        match app.runtime.block_on(app.sessions.remove(&row.id)) {
            Ok(r) => removed.push(r.id),
            // Gone meanwhile (a reaper or another client): that is what was asked.
            Err(Error::NotFound(_)) => {}
            Err(e) => {
                let mut e = ApiError::from(e);
                e.message = format!(
                    "removed {} of {} sessions, then session {}: {}",
                    removed.len(),
                    rows.len(),
                    row.id,
                    e.message
                );
                return Err(e);
            }
        }
    }
    Ok(Reply::json(
        200,
        &json!({
            "message": format!("removed {} sessions; workspaces kept", removed.len()),
            "removed": removed,
        }),
    ))
}

fn metrics(app: &App) -> Result<Reply, ApiError> {
    let sessions = app.sessions.list()?;
    let s = &app.sessions.settings;
    let text = app.metrics.render(&InUse {
        sessions: &sessions,
        ports_total: u32::from(s.ssh_port_end) - u32::from(s.ssh_port_start) + 1,
        gpu_slices_free: app.sessions.available().ok().map(|a| a.len()),
    });
    Ok(Reply::bytes(200, "text/plain; version=0.0.4; charset=utf-8", Body::Owned(text.into_bytes())))
}

const CREATE_FIELDS: &[&str] =
    &["user_id", "ttl_minutes", "mig_profile", "mig_instance_uuid", "image", "ssh_public_key"];

/// The create body of docs/api.md, into the service's request. Only the shape is checked here;
/// the values are checked by the service.
fn create_request(body: &[u8], max_ttl: u32) -> Result<CreateRequest> {
    let fields = object(body, CREATE_FIELDS)?;
    let user = string_field(&fields, "user_id")?.ok_or_else(|| Error::invalid("user_id", "is required"))?;
    let gpu = GpuRequest::from_fields(
        string_field(&fields, "mig_profile")?.as_deref(),
        string_field(&fields, "mig_instance_uuid")?.as_deref(),
    )?;
    Ok(CreateRequest {
        user,
        ttl_minutes: ttl_field(&fields, max_ttl)?,
        image: string_field(&fields, "image")?,
        gpu,
        public_key: string_field(&fields, "ssh_public_key")?,
    })
}

/// A JSON object whose keys are all among `known`.
fn object(body: &[u8], known: &[&str]) -> Result<Map<String, Value>> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Error::invalid("body", format!("malformed JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(Error::invalid("body", format!("expected a JSON object, got {}", kind(&value))));
    };
    if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(Error::invalid("body", format!("unknown field {unknown:?}; the fields are {}", known.join(", "))));
    }
    Ok(fields)
}

/// A string field; absent and null are None.
fn string_field(fields: &Map<String, Value>, name: &'static str) -> Result<Option<String>> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::invalid(name, format!("expected a string, got {}", kind(other)))),
    }
}

/// `ttl_minutes`: a whole number (its range is the service's rule).
fn ttl_field(fields: &Map<String, Value>, max_ttl: u32) -> Result<Option<i64>> {
    match fields.get("ttl_minutes") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(n) = n.as_i64() {
                return Ok(Some(n));
            }
            // Fractions and numbers beyond i64 get the same words as on the command line.
            let text = match (n.as_u64(), n.as_f64()) {
                (Some(u), _) => u.to_string(),
                (None, Some(f)) if f.fract() == 0.0 => format!("{f:.0}"),
                _ => n.to_string(),
            };
            validate::ttl_text(&text, max_ttl).map(|t| Some(i64::from(t)))
        }
        Some(other) => {
            Err(Error::invalid("ttl_minutes", format!("expected a whole number of minutes, got {}", kind(other))))
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        create_request(body.as_bytes(), 100)
            .err()
            .map(|e| ApiError::from(e).message)
            .unwrap_or_else(|| panic!("{body} was accepted"))
    }

    #[test]
    fn create_bodies() {
        let r = create_request(br#"{"user_id":"alice","ttl_minutes":30,"mig_profile":"3g.20gb","image":null}"#, 100)
            .unwrap();
        assert_eq!(r.user, "alice");
        assert_eq!(r.ttl_minutes, Some(30));
        assert_eq!(r.gpu, GpuRequest::Profile("3g.20gb".into()));
        assert_eq!(r.image, None);
        let r = create_request(br#"{"user_id":"a","mig_instance_uuid":"MIG-1"}"#, 100).unwrap();
        assert_eq!(r.gpu, GpuRequest::Uuid("MIG-1".into()));
        let r = create_request(br#"{"user_id":"a","ttl_minutes":-5}"#, 100).unwrap();
        assert_eq!(r.ttl_minutes, Some(-5), "the range is the service's rule");

        for (body, want) in [
            ("{", "invalid body: malformed JSON"),
            ("[]", "invalid body: expected a JSON object, got an array"),
            (r#"{"user_id":"a","shell":"zsh"}"#, "invalid body: unknown field \"shell\""),
            ("{}", "invalid user_id: is required"),
            (r#"{"user_id":null}"#, "invalid user_id: is required"),
            (r#"{"user_id":7}"#, "invalid user_id: expected a string, got a number"),
            (
                r#"{"user_id":"a","ttl_minutes":"60"}"#,
                "invalid ttl_minutes: expected a whole number of minutes, got a string",
            ),
            (r#"{"user_id":"a","ttl_minutes":1.5}"#, "invalid ttl_minutes: \"1.5\" is not a whole number of minutes"),
            (
                r#"{"user_id":"a","ttl_minutes":18446744073709551615}"#,
                "invalid ttl_minutes: 18446744073709551615 is out of range; use 1 to 100 minutes",
            ),
            (
                r#"{"user_id":"a","ttl_minutes":1e20}"#,
                "invalid ttl_minutes: 100000000000000000000 is out of range; use 1 to 100 minutes",
            ),
            (
                r#"{"user_id":"a","mig_profile":"1g","mig_instance_uuid":"MIG-1"}"#,
                "invalid mig_profile: give mig_profile or mig_instance_uuid, not both",
            ),
            (r#"{"user_id":"a","image":["x"]}"#, "invalid image: expected a string, got an array"),
        ] {
            let e = err(body);
            assert!(e.starts_with(want), "{body}: {e}");
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route("/sessions"), Some(("/sessions", None)));
        assert_eq!(route("/sessions/abc"), Some(("/sessions/{id}", Some("abc"))));
        for missing in ["/", "/sessions/", "/sessions/a/b", "/gpus/", "/nope", "//sessions"] {
            assert_eq!(route(missing), None, "{missing}");
        }
        assert_eq!(allow(&["GET", "POST", "DELETE"]), "GET, HEAD, POST, DELETE, OPTIONS");
        assert_eq!(allow(&["GET", "PATCH", "DELETE"]), "GET, HEAD, PATCH, DELETE, OPTIONS");
    }

    #[test]
    fn the_served_document_carries_the_settings_and_rules() {
        let doc: Value = serde_json::from_slice(&openapi_document(90)).unwrap();
        let s = &doc["components"]["schemas"];
        assert_eq!(s["CreateSessionRequest"]["properties"]["ttl_minutes"]["maximum"], 90);
        assert_eq!(s["ExtendSessionRequest"]["properties"]["ttl_minutes"]["maximum"], 90);
        let reserved = &s["CreateSessionRequest"]["properties"]["user_id"]["not"]["enum"];
        assert!(reserved.as_array().unwrap().contains(&json!("root")));
    }

    /// The OpenAPI document describes exactly the routes the server has.
    #[test]
    fn openapi_document_lists_every_route_and_no_other() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let paths = doc["paths"].as_object().unwrap();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                if method != "parameters" {
                    documented.push((path.clone(), method.to_uppercase()));
                }
            }
        }
        let mut routed: Vec<(String, String)> =
            ROUTES.iter().flat_map(|(p, ms)| ms.iter().map(|m| (p.to_string(), m.to_string()))).collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
        for (pattern, _) in ROUTES {
            let item = &paths[*pattern];
            let public = PUBLIC.contains(pattern);
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let open = op.get("security") == Some(&json!([]));
                assert_eq!(open, public, "{method} {pattern}: security");
                assert_eq!(
                    op["responses"].get("401").is_some(),
                    !public,
                    "{method} {pattern}: 401 documented iff a token is needed"
                );
            }
        }
    }
}
