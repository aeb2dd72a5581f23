//! The OpenAPI document, generated from the handlers' annotations and the request and answer
//! types, so that it cannot drift from the code. What every operation shares is added from the
//! route table: security, 401 and 503 for the routes that need a token, 400/408/413 for those that
//! read a body. The limits that come from settings and the service's rules (the TTL bound,
//! reserved user names) are filled in when the server starts.

use serde_json::{Value, json};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use super::auth::CHALLENGE;
use super::errors::ErrorBody;
use super::routes::{self, PUBLIC};
use crate::error::ErrorKind;
use crate::validate;

/// The document's introduction; the error codes are filled in from the table in `error.rs`.
const DESCRIPTION: &str = "HTTP API of `sandman serve`: per-user hardened SSH containers with a GPU slice. \
Every operation but GET /healthz and GET /openapi.json needs `Authorization: Bearer <token>` (tokens: the \
server's token file). Every path also answers HEAD where it answers GET, and OPTIONS (CORS preflight, no \
token needed); other methods get 405 with an Allow header. Unknown paths get 404. Errors are \
`{\"error\": \"<message>\", \"code\": \"<code>\"}`; the codes, with their statuses:";

fn description() -> String {
    let codes: Vec<String> = ErrorKind::ALL.iter().map(|k| format!("{} ({})", k.code(), k.http_status())).collect();
    format!("{DESCRIPTION} {}.", codes.join(", "))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "sandman"),
    paths(
        routes::healthz,
        routes::openapi,
        routes::metrics,
        routes::list,
        routes::create,
        routes::remove_all,
        routes::get,
        routes::extend,
        routes::remove,
        routes::gpus,
        routes::profiles,
        routes::available,
        routes::list_keys,
        routes::add_key,
        routes::remove_key,
    ),
    modifiers(&Shared),
    security(("bearerAuth" = [])),
)]
struct ApiDoc;

/// What the route table says about every operation.
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut Document) {
        doc.info.description = Some(description());
        let components = doc.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some("A token from the server's token file (api_token_file).".into());
        components.add_security_scheme("bearerAuth", SecurityScheme::Http(bearer));

        for (path, item) in doc.paths.paths.iter_mut() {
            let public = PUBLIC.contains(&path.as_str());
            let ops = [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete, &mut item.put];
            for op in ops.into_iter().flatten() {
                // The generator tags operations with the module they are written in.
                op.tags = None;
                if public {
                    op.security = Some(Vec::new());
                } else {
                    let unauthorized = error_response("No token, a wrong token, or another scheme than Bearer.")
                        .header(
                            "WWW-Authenticate",
                            HeaderBuilder::new()
                                .schema(ObjectBuilder::new().schema_type(Type::String))
                                .description(Some(CHALLENGE))
                                .build(),
                        );
                    add(op, 401, unauthorized);
                    let unavailable = "Docker, the workspace image, NVML or the state store cannot be used right \
                                       now (its write lock held elsewhere, a full disk), or every create slot \
                                       (api_max_concurrent_creates) is taken.";
                    let retry = HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::Integer))
                        .description(Some("Seconds to wait before trying again."))
                        .build();
                    add(op, 503, error_response(unavailable).header("Retry-After", retry));
                }
                if let Some(body) = op.request_body.as_mut() {
                    body.required = Some(utoipa::openapi::Required::True);
                    let invalid = "Bad input: malformed JSON, a wrong type, an unknown or repeated field, or a \
                                   value the rules refuse; the message names the field.";
                    add(op, 400, error_response(invalid));
                    add(op, 408, error_response("The request body did not arrive within api_body_timeout_secs."));
                    add(op, 413, error_response("The request body is larger than api_max_body_bytes."));
                }
            }
        }
    }
}

fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(RefOr::Ref(Ref::from_schema_name(ErrorBody::name())))))
}

fn add(op: &mut Operation, status: u16, response: ResponseBuilder) {
    op.responses.responses.entry(status.to_string()).or_insert_with(|| RefOr::T(response.build()));
}

/// The document as this server applies it: the generated one plus the limits that come from
/// settings and the service's rules, so that clients and fuzzers see the rules it enforces.
pub fn document(max_ttl_minutes: u32, max_idle_timeout_minutes: u32) -> Vec<u8> {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    let schemas = &mut doc["components"]["schemas"];
    for request in ["CreateSessionRequest", "ExtendSessionRequest"] {
        schemas[request]["properties"]["ttl_minutes"]["maximum"] = json!(max_ttl_minutes);
    }
    schemas["CreateSessionRequest"]["properties"]["idle_timeout_minutes"]["maximum"] = json!(max_idle_timeout_minutes);
    schemas["CreateSessionRequest"]["properties"]["user_id"]["not"] = json!({ "enum": validate::RESERVED_USERS });
    spell_links_in_camel_case(&mut doc);
    serde_json::to_vec_pretty(&doc).expect("a JSON value serializes")
}

/// utoipa 5 writes a Link object's `operationId` and `operationRef` as `operation_id` and
/// `operation_ref`, which clients (schemathesis' stateful tests among them) do not recognise.
fn spell_links_in_camel_case(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    let operations = paths.values_mut().filter_map(Value::as_object_mut).flat_map(|item| item.values_mut());
    let responses = operations.filter_map(|op| op["responses"].as_object_mut()).flat_map(|r| r.values_mut());
    let links =
        responses.filter_map(|r| r.get_mut("links").and_then(Value::as_object_mut)).flat_map(|l| l.values_mut());
    for link in links.filter_map(Value::as_object_mut) {
        for (snake, camel) in [("operation_id", "operationId"), ("operation_ref", "operationRef")] {
            if let Some(v) = link.remove(snake) {
                link.insert(camel.into(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::routes::ROUTES;

    /// Every (path, method) the document describes.
    fn operations(doc: &Value) -> Vec<(String, String)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                if method != "parameters" {
                    ops.push((path.clone(), method.to_uppercase()));
                }
            }
        }
        ops.sort();
        ops
    }

    fn doc() -> Value {
        serde_json::from_slice(&document(90, 45)).unwrap()
    }

    #[test]
    fn limits_are_in_the_document() {
        let doc: serde_json::Value = serde_json::from_slice(&document(60, 60)).unwrap();
        let s = &doc["components"]["schemas"];
        for field in ["memory", "cpus", "shm_size", "writable_layer", "adopt_workspace"] {
            assert!(
                s["CreateSessionRequest"]["properties"][field].is_object(),
                "{field}: {}",
                s["CreateSessionRequest"]
            );
        }
        for field in
            ["memory_bytes", "cpus", "shm_size_bytes", "pids", "log_size_bytes", "log_files", "writable_layer_bytes"]
        {
            assert!(s["SessionLimits"]["properties"][field].is_object(), "{field}: {}", s["SessionLimits"]);
        }
        assert!(s["Session"]["properties"]["limits"].is_object(), "{}", s["Session"]);
        assert!(s["Session"]["properties"]["workspace_usage_bytes"].is_object(), "{}", s["Session"]);
    }

    #[test]
    fn the_document_carries_the_settings_and_rules() {
        let doc = doc();
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let s = &doc["components"]["schemas"];
        assert_eq!(s["CreateSessionRequest"]["properties"]["ttl_minutes"]["maximum"], 90);
        assert_eq!(s["ExtendSessionRequest"]["properties"]["ttl_minutes"]["maximum"], 90);
        assert_eq!(s["ExtendSessionRequest"]["properties"]["ttl_minutes"]["minimum"], 1);
        let idle = &s["CreateSessionRequest"]["properties"]["idle_timeout_minutes"];
        assert_eq!((&idle["minimum"], &idle["maximum"]), (&json!(1), &json!(45)), "{idle}");
        let session = &s["Session"];
        for field in ["last_activity_at", "last_activity_signal", "idle_seconds", "ssh_connections", "gpu_processes"] {
            assert!(session["properties"][field].is_object(), "{field} in {session}");
        }
        assert_eq!(session["properties"]["last_activity_signal"]["enum"], json!(["ssh", "cpu", "gpu", "creation"]));
        let user = &s["CreateSessionRequest"]["properties"]["user_id"];
        assert!(user["not"]["enum"].as_array().unwrap().contains(&json!("root")));
        assert_eq!(user["pattern"], "^[a-z_][a-z0-9_-]{0,31}$");
        assert_eq!(s["CreateSessionRequest"]["required"], json!(["user_id"]));
        assert_eq!(s["CreateSessionRequest"]["additionalProperties"], false);
        assert_eq!(s["ExtendSessionRequest"]["required"], json!(["ttl_minutes"]));
        assert_eq!(doc["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
        let codes = &s["Error"]["properties"]["code"]["enum"];
        for code in ["invalid_input", "not_found", "conflict", "exhausted", "unavailable", "internal"] {
            assert!(codes.as_array().unwrap().contains(&json!(code)), "{code} in {codes}");
        }
        assert_eq!(s["Error"]["required"], json!(["error", "code"]));
        let created = &s["CreatedSession"];
        for field in ["ssh_config", "ssh_config_known_hosts", "ssh_command"] {
            assert!(created["required"].as_array().unwrap().contains(&json!(field)), "{field}");
        }
        assert!(created["properties"]["ssh_config"]["description"].as_str().unwrap().contains("HostKeyAlias"));
        assert_eq!(s["AddKeyRequest"]["required"], json!(["public_key"]));
        let user_param = &doc["paths"]["/users/{user}/keys"]["get"]["parameters"][0];
        assert_eq!((&user_param["name"], &user_param["schema"]["pattern"]), (&json!("user"), &user["pattern"]));
        assert_eq!(s["UserKey"]["required"], json!(["user_id", "fingerprint", "public_key", "added_at"]));
    }

    /// The document describes exactly the routes the router accepts, with a token exactly where
    /// the router asks for one.
    #[test]
    fn the_document_lists_every_route_and_no_other() {
        let doc = doc();
        let mut routed: Vec<(String, String)> =
            ROUTES.iter().flat_map(|(p, ms)| ms.iter().map(|m| (p.to_string(), m.to_string()))).collect();
        routed.sort();
        assert_eq!(operations(&doc), routed);
        for (path, method) in operations(&doc) {
            let op = &doc["paths"][&path][method.to_lowercase()];
            let public = PUBLIC.contains(&path.as_str());
            assert_eq!(op.get("security") == Some(&json!([])), public, "{method} {path}: security");
            assert_eq!(op["responses"].get("401").is_some(), !public, "{method} {path}: 401 iff a token is needed");
            assert_eq!(op["responses"].get("503").is_some(), !public, "{method} {path}: 503");
            let has_body = op.get("requestBody").is_some();
            for status in ["408", "413"] {
                assert_eq!(op["responses"].get(status).is_some(), has_body, "{method} {path}: {status}");
            }
            // A body can be invalid, and so can a path parameter that names a user.
            let bad_input = has_body || path.contains("{user}");
            assert_eq!(op["responses"].get("400").is_some(), bad_input, "{method} {path}: 400");
            for (status, response) in op["responses"].as_object().unwrap() {
                if !status.starts_with('2') {
                    let schema = &response["content"]["application/json"]["schema"];
                    assert_eq!(schema["$ref"], "#/components/schemas/Error", "{method} {path} {status}");
                }
            }
        }
        let links = &doc["paths"]["/sessions"]["post"]["responses"]["201"]["links"];
        for link in ["GetSession", "ExtendSession", "RemoveSession"] {
            assert_eq!(links[link]["parameters"]["id"], "$response.body#/session_id", "{link}");
            assert!(links[link]["operationId"].is_string(), "{link}: {}", links[link]);
            assert!(links[link].get("operation_id").is_none());
        }
    }
}
