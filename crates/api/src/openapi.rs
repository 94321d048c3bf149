//! The OpenAPI document of the API, generated from the handlers: each one
//! carries its `#[utoipa::path]` (method, path, parameters, bodies,
//! responses, who may call it), and the route table registers handlers
//! through it, so a route cannot be served without being documented.

use std::sync::OnceLock;

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi, Server};

/// An error answer (RFC 9457), as every route gives it.
pub use envstore_api_types::Problem;

/// The document's parts that no handler carries: what the API is, how to
/// authenticate, the error schema.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "envstore",
        description = "Conda environments built, locked and served per namespace: submit specs, follow builds, fetch lockfiles.",
    ),
    components(schemas(
        Problem,
        envstore_api_types::ProgressEvent,
        envstore_api_types::ProgressRecord,
        envstore_api_types::PhaseState
    )),
    modifiers(&BearerTokens),
    tags(
        (name = "namespaces", description = "Namespaces and who may see them"),
        (name = "environments", description = "Environments: submit, history, roll back, delete"),
        (name = "builds", description = "Builds: status, phases, logs, cancellation"),
        (name = "lockfiles", description = "Lockfiles of environments and locks, and solving without a build"),
        (name = "kernels", description = "Environments as Jupyter kernels"),
        (name = "packages", description = "Which environments hold a package"),
        (name = "access", description = "Members, tokens, role bindings, the audit log"),
        (name = "policy", description = "What a namespace allows"),
        (name = "usage", description = "Disk, build time and downloads per namespace, and quotas"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub(crate) struct ApiDocument;

struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        openapi.servers = Some(vec![Server::new("/")]);
    }
}

static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();

/// The whole document: [`ApiDocument`] merged with every route's operation.
pub fn document() -> &'static OpenApi {
    DOCUMENT.get_or_init(|| crate::routes::table().document)
}

/// The shape of an OpenAPI 3.1 document, for the schema of
/// `GET /api/v1/openapi.json` (the server sends [`document`] itself).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OpenApiDocument {
    /// The OpenAPI version, `3.1.0`.
    openapi: String,
    /// Title, description and version of the API.
    #[schema(value_type = Object)]
    info: serde_json::Value,
    /// Every route: its methods, parameters, bodies and answers.
    #[schema(value_type = Object)]
    paths: serde_json::Value,
    /// The schemas of the bodies and the security schemes.
    #[schema(value_type = Object)]
    components: serde_json::Value,
}

/// This document, as JSON.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = OpenApiDocument)),
    security((), ("bearer" = []))
)]
pub async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

/// `{namespace}` in a route's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct NamespacePath {
    /// The namespace.
    namespace: String,
}

/// `{namespace}/…/{name}` in a route's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct EnvironmentPath {
    /// The namespace.
    namespace: String,
    /// The environment's name.
    name: String,
}

/// `{id}` in a build's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct BuildPath {
    /// The build's id.
    id: String,
}

/// A page of a listing that can grow.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageQuery {
    /// Only entries containing this: names; for builds, their id, status or
    /// submitter.
    q: Option<String>,
    /// Entries per page.
    limit: Option<u32>,
    /// The previous page's `next_after`.
    after: Option<String>,
}

/// A body of bytes that is not text (a packed prefix).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct Binary(Vec<u8>);

/// The refusals of a route that needs a signed-in caller.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum SignedIn {
    /// No token, or one that is unknown, expired or revoked.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The caller's role does not allow this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
}

/// The refusals of a route within a namespace (or on one of its builds).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum InNamespace {
    /// No token, or one that is unknown, expired or revoked.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The caller's role in the namespace does not allow this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such namespace, environment or build, or the caller may not see it.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
}

/// The bodies of `document` (an OpenAPI document as JSON) that have no real
/// schema, one line each (`PUT /api/v1/… request application/json: …`).
/// A JSON body needs a schema that is a `$ref` to a component (or a typed
/// inline one) resolving to something typed: not `{}`, not an object
/// without properties. Any other content type (lockfile text, logs, event
/// streams, metrics) needs a string schema. A typed client can be generated
/// from a document for which this is empty.
pub fn untyped_bodies(document: &serde_json::Value) -> Vec<String> {
    const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];
    let schemas = &document["components"]["schemas"];
    let mut untyped = Vec::new();
    let Some(paths) = document["paths"].as_object() else {
        return vec!["the document has no paths".to_owned()];
    };
    for (path, item) in paths {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let operation_name = format!("{} {path}", method.to_uppercase());
            let mut bodies = Vec::new();
            if let Some(request) = operation.get("requestBody") {
                bodies.push(("request".to_owned(), request));
            }
            if let Some(responses) = operation["responses"].as_object() {
                for (status, response) in responses {
                    bodies.push((format!("response {status}"), response));
                }
            }
            for (which, body) in bodies {
                let Some(content) = body.get("content").and_then(|content| content.as_object())
                else {
                    continue;
                };
                for (content_type, media) in content {
                    let at = format!("{operation_name} {which} {content_type}");
                    if let Err(why) = typed_body(content_type, media.get("schema"), schemas) {
                        untyped.push(format!("{at}: {why}"));
                    }
                }
            }
        }
    }
    untyped
}

/// Whether a body of `content_type` with `schema` is described: why not when it is not.
fn typed_body(
    content_type: &str,
    schema: Option<&serde_json::Value>,
    schemas: &serde_json::Value,
) -> Result<(), String> {
    let schema = schema.ok_or("no schema")?;
    let json = content_type == "application/json" || content_type.ends_with("+json");
    if !json {
        let resolved = resolve(schema, schemas, 0)?;
        return match resolved["type"].as_str() {
            Some("string") => Ok(()),
            _ => Err(format!(
                "a {content_type} body needs a string schema, not {schema}"
            )),
        };
    }
    typed_schema(schema, schemas, 0)
}

/// `schema` with its `$ref` (if any) followed into `components.schemas`.
fn resolve<'a>(
    schema: &'a serde_json::Value,
    schemas: &'a serde_json::Value,
    depth: usize,
) -> Result<&'a serde_json::Value, String> {
    match schema.get("$ref").and_then(|reference| reference.as_str()) {
        None => Ok(schema),
        Some(_) if depth > 16 => Err("a $ref cycle".to_owned()),
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .ok_or_else(|| format!("$ref {reference} is not a component schema"))?;
            let target = schemas
                .get(name)
                .ok_or_else(|| format!("$ref {reference} names no component"))?;
            resolve(target, schemas, depth + 1)
        }
    }
}

/// Whether a JSON schema says what the value is: a `$ref` to a typed
/// component, a scalar or array type, an object with properties (or typed
/// additional properties), or a composition of typed schemas.
fn typed_schema(
    schema: &serde_json::Value,
    schemas: &serde_json::Value,
    depth: usize,
) -> Result<(), String> {
    if depth > 16 {
        return Ok(());
    }
    let schema = resolve(schema, schemas, 0)?;
    for composition in ["allOf", "oneOf", "anyOf"] {
        if let Some(parts) = schema[composition].as_array() {
            if parts.is_empty() {
                return Err(format!("an empty {composition}"));
            }
            return parts
                .iter()
                .try_for_each(|part| typed_schema(part, schemas, depth + 1));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        serde_json::Value::String(kind) => vec![kind.as_str()],
        serde_json::Value::Array(kinds) => kinds.iter().filter_map(|kind| kind.as_str()).collect(),
        _ => Vec::new(),
    };
    if types.is_empty() {
        if schema.get("enum").is_some() || schema.get("const").is_some() {
            return Ok(());
        }
        return Err(format!("an untyped schema {schema}"));
    }
    if types.contains(&"object") {
        let has_properties = schema["properties"]
            .as_object()
            .is_some_and(|properties| !properties.is_empty());
        let typed_map = schema
            .get("additionalProperties")
            .is_some_and(|additional| {
                additional.is_object() && typed_schema(additional, schemas, depth + 1).is_ok()
            });
        if !has_properties && !typed_map {
            return Err(format!("an object without properties {schema}"));
        }
    }
    if types.contains(&"array") {
        let items = schema.get("items").ok_or("an array without items")?;
        typed_schema(items, schemas, depth + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_body_of_the_document_has_a_schema() {
        let document = serde_json::to_value(document()).expect("the document as JSON");
        let untyped = untyped_bodies(&document);
        assert!(
            untyped.is_empty(),
            "{} bodies have no real schema:\n{}",
            untyped.len(),
            untyped.join("\n")
        );
    }

    /// What every untyped body of the API looked like before the wire types.
    #[utoipa::path(
        put,
        path = "/untyped",
        request_body(content = serde_json::Value, content_type = "application/json"),
        responses((status = 200, description = "Anything.", body = serde_json::Value))
    )]
    #[allow(dead_code)]
    async fn untyped() {}

    #[derive(utoipa::OpenApi)]
    #[openapi(paths(untyped))]
    struct Untyped;

    #[test]
    fn a_json_value_body_is_untyped() {
        use utoipa::OpenApi as _;
        let document = serde_json::to_value(Untyped::openapi()).expect("the document as JSON");
        let untyped = untyped_bodies(&document);
        assert_eq!(untyped.len(), 2, "{untyped:#?}");
    }

    #[test]
    fn the_check_catches_untyped_and_mistyped_bodies() {
        let document = serde_json::json!({
            "paths": { "/x": {
                "put": {
                    "requestBody": { "content": { "application/json": { "schema": {} } } },
                    "responses": {
                        "200": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Typed" } } } },
                        "201": { "content": { "application/json": { "schema": { "type": "object" } } } },
                        "202": { "content": { "text/plain": { "schema": { "$ref": "#/components/schemas/Typed" } } } },
                        "203": { "content": { "application/yaml": { "schema": { "type": "string" } } } },
                        "204": { "description": "nothing" },
                        "400": { "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Missing" } } } }
                    }
                }
            } },
            "components": { "schemas": {
                "Typed": { "type": "object", "properties": { "a": { "type": "string" } } }
            } }
        });
        let untyped = untyped_bodies(&document);
        assert_eq!(untyped.len(), 4, "{untyped:#?}");
        for expected in [
            "PUT /x request application/json",
            "PUT /x response 201 application/json",
            "PUT /x response 202 text/plain",
            "PUT /x response 400 application/problem+json",
        ] {
            assert!(
                untyped.iter().any(|line| line.starts_with(expected)),
                "{expected} in {untyped:#?}"
            );
        }
    }
}
