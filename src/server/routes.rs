//! Routing and handlers. Each handler parses the request into the service's types, calls the
//! session service, and shapes the answer with `views`; rules live in the service.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Number;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::App;
use super::auth::CHALLENGE;
use super::errors::{ApiError, ErrorBody};
use super::exchange::{Body, Exchange, JSON, Reply};
use super::metrics::InUse;
use crate::error::{Error, ErrorKind, Result};
use crate::gpu::GpuRequest;
use crate::limits::LimitRequest;
use crate::sessions::CreateRequest;
use crate::validate;
use crate::views::{
    AvailableView, CreatedView, GpusView, MessageView, ProfilesView, RemovedAllView, SessionView, UserKeyView,
};

/// Every path and its methods: the router dispatches on exactly these, and the OpenAPI document
/// must describe exactly these (a test checks both ways). HEAD is answered wherever GET is,
/// OPTIONS everywhere.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/healthz", &["GET"]),
    ("/openapi.json", &["GET"]),
    ("/metrics", &["GET"]),
    ("/sessions", &["GET", "POST", "DELETE"]),
    ("/sessions/{id}", &["GET", "PATCH", "DELETE"]),
    ("/gpus", &["GET"]),
    ("/gpus/profiles", &["GET"]),
    ("/gpus/available", &["GET"]),
    ("/users/{user}/keys", &["GET", "POST"]),
    ("/users/{user}/keys/{fingerprint}", &["DELETE"]),
];

/// Paths anyone may read: the health check and the API's description.
pub const PUBLIC: &[&str] = &["/healthz", "/openapi.json"];

/// The route of `path` and the values of its `{…}` segments, in order (still percent-encoded).
fn route(path: &str) -> Option<(&'static str, Vec<&str>)> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    ROUTES.iter().find_map(|(pattern, _)| {
        let parts: Vec<&str> = pattern[1..].split('/').collect();
        if parts.len() != segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (part, segment) in parts.iter().zip(&segments) {
            if part.starts_with('{') {
                if segment.is_empty() {
                    return None;
                }
                params.push(*segment);
            } else if part != segment {
                return None;
            }
        }
        Some((*pattern, params))
    })
}

/// A path segment with its `%XX` escapes decoded (a fingerprint's `/` arrives as `%2F`).
fn percent_decode(field: &'static str, segment: &str) -> Result<String> {
    let bad = || Error::invalid(field, format!("{segment:?} is not a valid percent-encoded path segment"));
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The methods a path answers, for `Allow`: its routes' methods, HEAD with GET, and OPTIONS.
fn allow(methods: &[&str]) -> String {
    let mut all: Vec<&str> = methods.to_vec();
    if methods.contains(&"GET") {
        all.insert(1, "HEAD");
    }
    all.push("OPTIONS");
    all.join(", ")
}

/// Every method some route answers, for CORS preflights (`Access-Control-Allow-Methods`).
pub fn all_methods() -> String {
    let mut all: Vec<&str> = Vec::new();
    for m in ROUTES.iter().flat_map(|(_, methods)| methods.iter()).chain(&["HEAD", "OPTIONS"]) {
        if !all.contains(m) {
            all.push(m);
        }
    }
    all.join(", ")
}

/// What a handler gives back: the answer now, or work for the async runtime that answers later
/// (creates, removals and extends, which wait on the engine or the database's write lock).
pub enum Handled {
    Now(Reply),
    Later(BoxFuture<'static, Reply>),
}

impl From<Reply> for Handled {
    fn from(reply: Reply) -> Handled {
        Handled::Now(reply)
    }
}

pub fn dispatch(app: &Arc<App>, ex: &mut Exchange) -> Handled {
    let path = ex.path().to_string();
    let Some((pattern, params)) = route(&path) else {
        return ApiError::new(ErrorKind::NotFound, format!("no such path: {path}")).into_reply().into();
    };
    let params: Vec<String> = params.into_iter().map(str::to_string).collect();
    let methods = ROUTES.iter().find(|(p, _)| *p == pattern).map_or(&[][..], |r| r.1);
    let method = ex.method().to_string();
    if method == "OPTIONS" {
        // A CORS preflight or a plain question about the methods; neither needs a token.
        return Reply::empty().with_header("Allow", allow(methods)).into();
    }
    let as_get = if method == "HEAD" { "GET" } else { method.as_str() };
    if !methods.contains(&as_get) {
        let allowed = allow(methods);
        return ApiError::new(
            ErrorKind::MethodNotAllowed,
            format!("{method} is not allowed on {pattern}; use {allowed}"),
        )
        .with_header("Allow", allowed)
        .into_reply()
        .into();
    }
    if !PUBLIC.contains(&pattern)
        && let Err(why) = app.tokens.check(ex.header("Authorization"))
    {
        return ApiError::new(ErrorKind::Unauthorized, why)
            .with_header("WWW-Authenticate", CHALLENGE)
            .into_reply()
            .into();
    }
    let id = params.first().map_or("", String::as_str);
    let result = match (pattern, as_get) {
        ("/healthz", _) => Ok(Handled::Now(healthz(app))),
        ("/openapi.json", _) => Ok(Handled::Now(openapi(app))),
        ("/metrics", _) => metrics(app).map(Handled::Now),
        ("/sessions", "GET") => list(app).map(Handled::Now),
        ("/sessions", "POST") => create(app, ex),
        ("/sessions", "DELETE") => remove_all(app),
        ("/sessions/{id}", "GET") => get(app, id).map(Handled::Now),
        ("/sessions/{id}", "PATCH") => extend(app, ex, id),
        ("/sessions/{id}", "DELETE") => remove(app, id),
        ("/gpus", _) => gpus(app).map(Handled::Now),
        ("/gpus/profiles", _) => profiles(app).map(Handled::Now),
        ("/gpus/available", _) => available(app).map(Handled::Now),
        ("/users/{user}/keys", "GET") => {
            percent_decode("user", id).map_err(ApiError::from).and_then(|u| list_keys(app, &u)).map(Handled::Now)
        }
        ("/users/{user}/keys", "POST") => {
            percent_decode("user", id).map_err(ApiError::from).and_then(|u| add_key(app, ex, &u)).map(Handled::Now)
        }
        ("/users/{user}/keys/{fingerprint}", "DELETE") => {
            let fingerprint = params.get(1).map_or("", String::as_str);
            percent_decode("user", id)
                .and_then(|u| Ok((u, percent_decode("fingerprint", fingerprint)?)))
                .map_err(ApiError::from)
                .and_then(|(u, f)| remove_key(app, &u, &f))
                .map(Handled::Now)
        }
        _ => unreachable!("ROUTES and this match list the same methods"),
    };
    result.unwrap_or_else(|e| e.into_reply().into())
}

/// Descriptions of the error answers several operations share.
pub const NOT_FOUND: &str = "No session with this id.";
pub const CONFLICT: &str = "`conflict`: the user already has a session, or the session is still being created; \
`exhausted`: no SSH port or GPU slice is free.";

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "healthy")]
    status: &'static str,
    #[schema(example = "gpu-ssh-gateway-orchestrator")]
    service: &'static str,
    version: &'static str,
    /// none, sim or nvml.
    gpu_backend: &'static str,
}

#[utoipa::path(get, path = "/healthz", operation_id = "health", summary = "Liveness",
    responses((status = 200, description = "The server is up.", body = Health)))]
pub(super) fn healthz(app: &App) -> Reply {
    Reply::json(
        200,
        &Health {
            status: "healthy",
            service: "gpu-ssh-gateway-orchestrator",
            version: env!("CARGO_PKG_VERSION"),
            gpu_backend: app.sessions.gpu().name(),
        },
    )
}

#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1 document.", body = Object)))]
pub(super) fn openapi(app: &App) -> Reply {
    Reply::bytes(200, JSON, Body::Shared(app.openapi.clone()))
}

/// The session list, serialized once per change of the store (any process's change counts), so
/// that a large list costs one copy per answer rather than a query and a serialization.
#[utoipa::path(get, path = "/sessions", operation_id = "listSessions", summary = "Every session",
    responses((status = 200, description = "A JSON array, `[]` when there are none.", body = Vec<SessionView>)))]
pub(super) fn list(app: &App) -> Result<Reply, ApiError> {
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

#[utoipa::path(get, path = "/sessions/{id}", operation_id = "getSession", summary = "One session",
    params(("id" = String, Path, description = "The session's id (`id` in a session object, `session_id` in a create answer).")),
    responses(
        (status = 200, description = "The session.", body = SessionView),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
    ))]
pub(super) fn get(app: &App, id: &str) -> Result<Reply, ApiError> {
    let row = app.sessions.get(id)?;
    let mut view = SessionView::from(&row);
    view.workspace_usage_bytes = app.sessions.workspace_usage(&row);
    view.workspace_quota_bytes = app.sessions.workspace_quota(&row).and_then(|q| q.limit_bytes);
    Ok(Reply::json(200, &view))
}

#[utoipa::path(post, path = "/sessions", operation_id = "createSession",
    summary = "Start a session; answers once its sshd accepts connections",
    request_body = CreateSessionRequest,
    responses(
        (status = 201, description = "The session, with what is needed to log in.", body = CreatedView,
            links(
                ("GetSession" = (operation_id = "getSession", parameters(("id" = "$response.body#/session_id")))),
                ("ExtendSession" = (operation_id = "extendSession", parameters(("id" = "$response.body#/session_id")))),
                ("RemoveSession" = (operation_id = "removeSession", parameters(("id" = "$response.body#/session_id")))),
            )),
        (status = 409, description = CONFLICT, body = ErrorBody),
    ))]
pub(super) fn create(app: &Arc<App>, ex: &mut Exchange) -> Result<Handled, ApiError> {
    let body = ex.read_body()?;
    let request = create_request(&body, app.sessions.settings.max_ttl_minutes)?;
    app.later(&app.creates, "creates", move |app: Arc<App>| async move {
        let user = request.user.clone();
        let progress = move |step: &str| tracing::debug!(user = %user, "create: {step}");
        let started = Instant::now();
        let created = app.sessions.create(request, &progress, &CancellationToken::new()).await;
        app.metrics.create(started.elapsed(), created.is_ok());
        let created = created?;
        let key_path = format!("{}.key", created.ssh_user);
        // The key file is known only for the key this answer carries.
        let identity_file = created.private_key.is_some().then_some(key_path.as_str());
        Ok(Reply::json(201, &CreatedView::new(&created, &key_path, identity_file)))
    })
}

#[utoipa::path(patch, path = "/sessions/{id}", operation_id = "extendSession",
    summary = "Set the session to expire ttl_minutes from now",
    params(("id" = String, Path, description = "The session's id.")),
    request_body = ExtendSessionRequest,
    responses(
        (status = 200, description = "The session with its new expiry; `ttl_minutes` is the value asked for.", body = SessionView),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
    ))]
pub(super) fn extend(app: &Arc<App>, ex: &mut Exchange, id: &str) -> Result<Handled, ApiError> {
    let body = ex.read_body()?;
    let request: ExtendSessionRequest = decode(&body)?;
    let ttl = request.ttl_minutes.ok_or_else(|| Error::invalid("ttl_minutes", "is required"))?;
    let ttl = whole_minutes(&ttl, app.sessions.settings.max_ttl_minutes)?;
    let id = id.to_string();
    // A write that may wait for the database's lock.
    app.later(&app.changes, "changes", move |app: Arc<App>| async move {
        Ok(Reply::json(200, &SessionView::from(&app.sessions.extend(&id, ttl)?)))
    })
}

#[utoipa::path(delete, path = "/sessions/{id}", operation_id = "removeSession",
    summary = "Remove the session; its workspace is kept",
    params(("id" = String, Path, description = "The session's id.")),
    responses(
        (status = 200, description = "Removed.", body = MessageView),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 409, description = CONFLICT, body = ErrorBody),
    ))]
pub(super) fn remove(app: &Arc<App>, id: &str) -> Result<Handled, ApiError> {
    let id = id.to_string();
    app.later(&app.changes, "changes", move |app: Arc<App>| async move {
        let row = app.sessions.remove(&id).await?;
        Ok(Reply::json(
            200,
            &MessageView { message: format!("session {} removed; workspace {} kept", row.id, row.workspace) },
        ))
    })
}

#[utoipa::path(delete, path = "/sessions", operation_id = "removeAllSessions",
    summary = "Remove every session; workspaces are kept",
    responses(
        (status = 200, description = "What was removed.", body = RemovedAllView),
        (status = 409, description = CONFLICT, body = ErrorBody),
    ))]
pub(super) fn remove_all(app: &Arc<App>) -> Result<Handled, ApiError> {
    app.later(&app.changes, "changes", move |app: Arc<App>| async move {
        let removal = app.sessions.remove_all().await?;
        let removed: Vec<String> = removal.removed.iter().map(|r| r.id.clone()).collect();
        let listed = removed.len() + removal.already_gone.len() + removal.failed.len();
        if let Some((id, e)) = removal.failed.into_iter().next() {
            let mut e = ApiError::from(e);
            e.message = format!("removed {} of {listed} sessions; session {id}: {}", removed.len(), e.message);
            return Err(e);
        }
        Ok(Reply::json(
            200,
            &RemovedAllView { message: format!("removed {} sessions; workspaces kept", removed.len()), removed },
        ))
    })
}

#[utoipa::path(get, path = "/gpus", operation_id = "listGpus",
    summary = "GPUs and their MIG instances, with `allocated` for those sessions hold",
    responses(
        (status = 200, description = "GPUs.", body = GpusView),
    ))]
pub(super) fn gpus(app: &App) -> Result<Reply, ApiError> {
    Ok(Reply::json(200, &GpusView::new(app.sessions.gpus()?)))
}

#[utoipa::path(get, path = "/gpus/profiles", operation_id = "listGpuProfiles",
    summary = "MIG profiles of the GPU models present",
    responses(
        (status = 200, description = "Profiles.", body = ProfilesView),
    ))]
pub(super) fn profiles(app: &App) -> Result<Reply, ApiError> {
    Ok(Reply::json(200, &ProfilesView { profiles: app.sessions.gpu().profiles()? }))
}

#[utoipa::path(get, path = "/gpus/available", operation_id = "listAvailableInstances",
    summary = "MIG instances no session holds",
    responses(
        (status = 200, description = "Free instances.", body = AvailableView),
    ))]
pub(super) fn available(app: &App) -> Result<Reply, ApiError> {
    Ok(Reply::json(200, &AvailableView::new(app.sessions.available()?)))
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", summary = "Prometheus metrics",
    responses((status = 200, content_type = "application/openmetrics-text",
        description = "OpenMetrics text: sessions, GPU slices and ports in use, create latency, \
reaper runs, removals and failed actions, requests by status.", body = String)))]
pub(super) fn metrics(app: &App) -> Result<Reply, ApiError> {
    let sessions = app.sessions.list()?;
    let s = &app.sessions.settings;
    let text = app.metrics.render(&InUse {
        sessions: &sessions,
        ports_total: u32::from(s.ssh_port_end) - u32::from(s.ssh_port_start) + 1,
        gpu_slices_free: app.sessions.available().ok().map(|a| a.len()),
    });
    Ok(Reply::bytes(200, super::metrics::CONTENT_TYPE, Body::Owned(text.into_bytes())))
}

/// Descriptions of the error answers the key operations share.
pub const USER_KEY_PARAM: &str = "The user's login name.";
pub const NO_SUCH_KEY: &str = "The user has no key with this fingerprint.";
pub const BAD_USER: &str = "The user name is not a valid login name, or a path segment is wrongly percent-encoded.";

#[utoipa::path(get, path = "/users/{user}/keys", operation_id = "listUserKeys",
    summary = "The user's own public keys, which every session of theirs accepts",
    params(("user" = String, Path, description = USER_KEY_PARAM, pattern = "^[a-z_][a-z0-9_-]{0,31}$")),
    responses(
        (status = 200, description = "A JSON array, oldest first; `[]` when there are none.", body = Vec<UserKeyView>),
        (status = 400, description = BAD_USER, body = ErrorBody),
    ))]
pub(super) fn list_keys(app: &App, user: &str) -> Result<Reply, ApiError> {
    let keys: Vec<UserKeyView> = app.sessions.user_keys(user)?.iter().map(|k| UserKeyView::new(user, k)).collect();
    Ok(Reply::json(200, &keys))
}

#[utoipa::path(post, path = "/users/{user}/keys", operation_id = "addUserKey",
    summary = "Add a public key; the user's running session accepts it for new logins at once",
    params(("user" = String, Path, description = USER_KEY_PARAM, pattern = "^[a-z_][a-z0-9_-]{0,31}$")),
    request_body = AddKeyRequest,
    responses(
        (status = 201, description = "The key as stored.", body = UserKeyView),
        (status = 409, description = "The user already has this key.", body = ErrorBody),
    ))]
pub(super) fn add_key(app: &App, ex: &mut Exchange, user: &str) -> Result<Reply, ApiError> {
    let body = ex.read_body()?;
    let request: AddKeyRequest = decode(&body)?;
    let key = request.public_key.ok_or_else(|| Error::invalid("public_key", "is required"))?;
    let key = app.sessions.add_user_key(user, &key)?;
    Ok(Reply::json(201, &UserKeyView::new(user, &key)))
}

#[utoipa::path(delete, path = "/users/{user}/keys/{fingerprint}", operation_id = "removeUserKey",
    summary = "Revoke a key: new logins with it fail at once, in the running session too",
    params(
        ("user" = String, Path, description = USER_KEY_PARAM, pattern = "^[a-z_][a-z0-9_-]{0,31}$"),
        ("fingerprint" = String, Path, description = "The key's `SHA256:…` fingerprint, its `/` written `%2F`."),
    ),
    responses(
        (status = 200, description = "Revoked.", body = MessageView),
        (status = 400, description = BAD_USER, body = ErrorBody),
        (status = 404, description = NO_SUCH_KEY, body = ErrorBody),
    ))]
pub(super) fn remove_key(app: &App, user: &str, fingerprint: &str) -> Result<Reply, ApiError> {
    app.sessions.remove_user_key(user, fingerprint)?;
    Ok(Reply::json(200, &MessageView { message: format!("key {fingerprint} of {user} removed") }))
}

/// A key to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddKeyRequest {
    /// One OpenSSH public key line, as in a `.pub` file.
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... alice@laptop")]
    public_key: Option<String>,
}

/// A create. `""` and a `ttl_minutes` of 0 or less mean the default, as in the original API; the
/// values are checked by the session service, the shape here.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// Login name and workspace name; not a system account name (root, sshd, ...).
    #[serde(default)]
    #[schema(value_type = String, required = true, pattern = "^[a-z_][a-z0-9_-]{0,31}$")]
    user_id: Option<String>,
    /// Minutes until the session is reaped; absent, null, 0 or less: default_ttl_minutes (60),
    /// at most max_ttl_minutes (10080 by default).
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    ttl_minutes: Option<Number>,
    /// A MIG profile such as 3g.20gb, or 3g for that size on any model; exclusive with
    /// mig_instance_uuid. Absent, null or "": default_profile.
    #[serde(default)]
    mig_profile: Option<String>,
    /// One exact MIG instance or GPU; exclusive with mig_profile.
    #[serde(default)]
    mig_instance_uuid: Option<String>,
    /// Workspace image on this host; absent, null or "": the configured image (gpu-workspace).
    #[serde(default)]
    image: Option<String>,
    /// The user's own OpenSSH public key (one line); then no key pair is made and
    /// ssh_private_key is null. The key joins the user's keys (`/users/{user}/keys`), which
    /// later sessions accept too.
    #[serde(default)]
    ssh_public_key: Option<String>,
    /// Memory limit, swap included: bytes or a size such as "512m", "16g", "1.5g". Absent or
    /// null: [limits] memory, else a quarter of the host's RAM. Above max_memory: 400.
    #[serde(default)]
    #[schema(example = "16g")]
    memory: Option<String>,
    /// CPUs, fractions allowed. Absent or null: [limits] cpus, else half the host's CPUs.
    /// Above max_cpus: 400.
    #[serde(default)]
    #[schema(value_type = Option<f64>, example = 4)]
    cpus: Option<Number>,
    /// Size of /dev/shm, counted in the memory limit, written like memory. Absent or null:
    /// [limits] shm_size, else half the memory limit, at most 8g. Above max_shm_size: 400.
    #[serde(default)]
    #[schema(example = "8g")]
    shm_size: Option<String>,
    /// Size limit of the container's writable layer, written like memory. Absent or null:
    /// [limits] writable_layer, else none. Above max_writable_layer: 400. Where the engine's
    /// storage cannot enforce one (or on a swarm): 503.
    #[serde(default)]
    #[schema(example = "20g")]
    writable_layer: Option<String>,
    /// For a new user whose directory under the workspace root already exists and belongs to
    /// another uid: give it to this user. Without it such a create is refused (409).
    #[serde(default)]
    adopt_workspace: bool,
    /// Reap the session after this many minutes without activity (SSH connection, CPU use, GPU
    /// process). Absent or null: the host's idle_timeout_minutes (120 by default); at most that
    /// (or max_ttl_minutes where the host reaps no idle sessions). Out of range: 400.
    #[serde(default)]
    #[schema(value_type = Option<i64>, minimum = 1, example = 30)]
    idle_timeout_minutes: Option<Number>,
}

/// An extend.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendSessionRequest {
    /// The session expires this many minutes from now; at most max_ttl_minutes. The session's
    /// `ttl_minutes` becomes this value.
    #[serde(default)]
    #[schema(value_type = i64, required = true, minimum = 1)]
    ttl_minutes: Option<Number>,
}

/// A JSON body into `T`; a mistake is named by the field it is in, duplicate keys included.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    // A derived struct would also take a JSON array (its fields in order): refuse all but objects.
    if body.trim_ascii_start().first() != Some(&b'{') {
        let not_an_object = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body).err();
        return Err(
            not_an_object.map_or_else(|| Error::invalid("body", "expected a JSON object"), |e| refused("body", &e))
        );
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = match e.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => known_field(key),
            _ => "body",
        };
        refused(field, e.inner())
    })?;
    // Nothing but whitespace may follow the object.
    de.end().map_err(|e| refused("body", &e))?;
    Ok(value)
}

fn refused(field: &'static str, e: &serde_json::Error) -> Error {
    // serde_json appends where it stopped; the field's name says more to a client.
    let text = e.to_string();
    let message = text.rsplit_once(" at line ").map_or(text.as_str(), |(m, _)| m);
    if e.is_syntax() || e.is_eof() {
        return Error::invalid("body", format!("malformed JSON: {message}"));
    }
    Error::invalid(field, message.to_string())
}

/// The request bodies' field named `key` (errors name fields by `&'static str`), else "body".
fn known_field(key: &str) -> &'static str {
    const FIELDS: &[&str] = &[
        "user_id",
        "ttl_minutes",
        "mig_profile",
        "mig_instance_uuid",
        "image",
        "ssh_public_key",
        "memory",
        "cpus",
        "shm_size",
        "writable_layer",
        "adopt_workspace",
        "public_key",
        "idle_timeout_minutes",
    ];
    FIELDS.iter().find(|f| **f == key).copied().unwrap_or("body")
}

/// The create body, into the service's request.
fn create_request(body: &[u8], max_ttl: u32) -> Result<CreateRequest> {
    let b: CreateSessionRequest = decode(body)?;
    let user = b.user_id.ok_or_else(|| Error::invalid("user_id", "is required"))?;
    let given = |v: Option<String>| v.filter(|s| !s.is_empty());
    let gpu = GpuRequest::from_fields(b.mig_profile.as_deref(), b.mig_instance_uuid.as_deref())?;
    let ttl_minutes = match b.ttl_minutes {
        Some(n) => Some(whole_minutes(&n, max_ttl)?).filter(|t| *t > 0),
        None => None,
    };
    let limits = LimitRequest {
        memory: b.memory.as_deref().map(|m| validate::size("memory", m)).transpose()?,
        cpus: b
            .cpus
            .map(|n| n.as_f64().ok_or_else(|| Error::invalid("cpus", format!("{n} is not a number"))))
            .transpose()?,
        shm_size: b.shm_size.as_deref().map(|m| validate::size("shm_size", m)).transpose()?,
        writable_layer: b.writable_layer.as_deref().map(|m| validate::size("writable_layer", m)).transpose()?,
    };
    Ok(CreateRequest {
        user,
        ttl_minutes,
        image: given(b.image),
        gpu,
        public_key: b.ssh_public_key,
        limits,
        adopt_workspace: b.adopt_workspace,
        idle_timeout_minutes: b
            .idle_timeout_minutes
            .map(|n| {
                n.as_i64().ok_or_else(|| {
                    Error::invalid("idle_timeout_minutes", format!("{n} is not a whole number of minutes"))
                })
            })
            .transpose()?,
    })
}

/// A whole number of minutes (its range is the service's rule); fractions and numbers beyond
/// i64 get the same words as on the command line.
fn whole_minutes(n: &Number, max_ttl: u32) -> Result<i64> {
    if let Some(n) = n.as_i64() {
        return Ok(n);
    }
    let text = match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => u.to_string(),
        (None, Some(f)) if f.fract() == 0.0 => format!("{f:.0}"),
        _ => n.to_string(),
    };
    validate::ttl_text(&text, max_ttl).map(i64::from)
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
        assert_eq!((r.limits, r.adopt_workspace), (LimitRequest::default(), false));
        let r = create_request(
            br#"{"user_id":"a","memory":"16g","cpus":4,"shm_size":"1.5g","writable_layer":"20g","adopt_workspace":true}"#,
            100,
        )
        .unwrap();
        let want = LimitRequest {
            memory: Some(16 << 30),
            cpus: Some(4.0),
            shm_size: Some(3 << 29),
            writable_layer: Some(20 << 30),
        };
        assert_eq!((r.limits, r.adopt_workspace), (want, true));

        for (body, want) in [
            ("{", "invalid body: malformed JSON: EOF while parsing an object"),
            (r#"{"user_id":"a"} x"#, "invalid body: malformed JSON: trailing characters"),
            ("[]", "invalid body: invalid type: sequence, expected a map"),
            ("7", "invalid body: invalid type: integer `7`, expected a map"),
            ("", "invalid body: malformed JSON: EOF while parsing a value"),
            (r#"{"user_id":"a","shell":"zsh"}"#, "invalid body: unknown field `shell`, expected one of `user_id`"),
            (r#"{"user_id":"a","user_id":"b"}"#, "invalid body: duplicate field `user_id`"),
            (r#"{"user_id":"a","ttl_minutes":5,"ttl_minutes":6}"#, "invalid body: duplicate field `ttl_minutes`"),
            ("{}", "invalid user_id: is required"),
            (r#"{"user_id":null}"#, "invalid user_id: is required"),
            (r#"{"user_id":7}"#, "invalid user_id: invalid type: integer `7`, expected a string"),
            (
                r#"{"user_id":"a","ttl_minutes":"60"}"#,
                "invalid ttl_minutes: invalid type: string \"60\", expected a JSON number",
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
            (r#"{"user_id":"a","image":["x"]}"#, "invalid image: invalid type: sequence, expected a string"),
            (r#"{"user_id":"a","memory":"16q"}"#, "invalid memory: \"16q\" has an unknown unit 'q'"),
            (r#"{"user_id":"a","memory":16}"#, "invalid memory: invalid type: integer `16`, expected a string"),
            (r#"{"user_id":"a","shm_size":"0"}"#, "invalid shm_size: \"0\" is zero"),
            (r#"{"user_id":"a","writable_layer":"2x"}"#, "invalid writable_layer"),
            (r#"{"user_id":"a","cpus":"4"}"#, "invalid cpus: invalid type: string \"4\", expected a JSON number"),
            (r#"{"user_id":"a","adopt_workspace":"yes"}"#, "invalid adopt_workspace: invalid type: string"),
        ] {
            let e = err(body);
            assert!(e.starts_with(want), "{body}: {e}");
        }
    }

    /// The original API's clients send "" and 0 to mean "the default".
    #[test]
    fn empty_values_mean_the_default() {
        let r = create_request(
            br#"{"user_id":"a","ttl_minutes":0,"mig_profile":"","mig_instance_uuid":"","image":""}"#,
            100,
        )
        .unwrap();
        assert_eq!((r.ttl_minutes, r.gpu, r.image), (None, GpuRequest::Default, None));
        assert_eq!(create_request(br#"{"user_id":"a","ttl_minutes":-5}"#, 100).unwrap().ttl_minutes, None);
        let r = create_request(br#"{"user_id":"a","mig_profile":"","mig_instance_uuid":"MIG-1"}"#, 100).unwrap();
        assert_eq!(r.gpu, GpuRequest::Uuid("MIG-1".into()));
        let r = create_request(br#"{"user_id":"a","mig_profile":"1g","mig_instance_uuid":""}"#, 100).unwrap();
        assert_eq!(r.gpu, GpuRequest::Profile("1g".into()));
    }

    #[test]
    fn extend_bodies() {
        let ttl = |body: &str| -> Result<i64> {
            let r: ExtendSessionRequest = decode(body.as_bytes())?;
            let n = r.ttl_minutes.ok_or_else(|| Error::invalid("ttl_minutes", "is required"))?;
            whole_minutes(&n, 100)
        };
        assert_eq!(ttl(r#"{"ttl_minutes":30}"#).unwrap(), 30);
        for (body, want) in [
            ("{}", "invalid ttl_minutes: is required"),
            (r#"{"ttl_minutes":null}"#, "invalid ttl_minutes: is required"),
            (r#"{"ttl":5}"#, "invalid body: unknown field `ttl`"),
            (r#"{"ttl_minutes":5,"ttl_minutes":6}"#, "invalid body: duplicate field `ttl_minutes`"),
        ] {
            let e = ApiError::from(ttl(body).unwrap_err()).message;
            assert!(e.starts_with(want), "{body}: {e}");
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route("/sessions"), Some(("/sessions", vec![])));
        assert_eq!(route("/sessions/abc"), Some(("/sessions/{id}", vec!["abc"])));
        assert_eq!(route("/users/al/keys"), Some(("/users/{user}/keys", vec!["al"])));
        assert_eq!(
            route("/users/al/keys/SHA256:a%2Fb"),
            Some(("/users/{user}/keys/{fingerprint}", vec!["al", "SHA256:a%2Fb"]))
        );
        assert_eq!(percent_decode("fingerprint", "SHA256:a%2Fb+c").unwrap(), "SHA256:a/b+c");
        for bad in ["%", "%2", "%zz", "%ff"] {
            let e = percent_decode("fingerprint", bad).unwrap_err();
            assert!(e.to_string().contains("not a valid percent-encoded"), "{bad}: {e}");
        }
        for missing in [
            "/",
            "/sessions/",
            "/sessions/a/b",
            "/gpus/",
            "/nope",
            "//sessions",
            "/users/al",
            "/users//keys",
            "/users/a/keys/",
        ] {
            assert_eq!(route(missing), None, "{missing}");
        }
        assert_eq!(allow(&["GET", "POST", "DELETE"]), "GET, HEAD, POST, DELETE, OPTIONS");
        assert_eq!(allow(&["GET", "PATCH", "DELETE"]), "GET, HEAD, PATCH, DELETE, OPTIONS");
        assert_eq!(all_methods(), "GET, POST, DELETE, PATCH, HEAD, OPTIONS");
        assert_eq!(allow(&["DELETE"]), "DELETE, OPTIONS");
    }
}
