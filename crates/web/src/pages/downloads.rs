//! Lockfile downloads: the environment's current lock in each format, and a
//! build's immutable lock artifacts. The browser cannot send the bearer
//! token, so these relay the API's answers under the session.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use maud::{Markup, html};

use crate::api::{self, Api};
use crate::error::UiError;
use crate::links;
use crate::session::Visitor;

/// Links to the current lock of `namespace/name` in every format: conda-lock,
/// pixi, and `@EXPLICIT` for each platform.
pub(crate) fn current_links(namespace: &str, name: &str, platforms: &[String]) -> Markup {
    let base = format!("{}/lockfile", links::environment(namespace, name));
    html! {
        ul.downloads {
            li { a href=(links::with_query(&base, &[("format", Some("conda-lock"))])) data-format="conda-lock" download="conda-lock.yml" { "conda-lock.yml" } " (conda-lock v1)" }
            li { a href=(links::with_query(&base, &[("format", Some("pixi"))])) data-format="pixi" download="pixi.lock" { "pixi.lock" } " (pixi)" }
            @for platform in platforms {
                li {
                    a href=(links::with_query(&base, &[("format", Some("explicit")), ("platform", Some(platform))]))
                        data-format="explicit" data-platform=(platform) download={ "explicit-" (platform) ".txt" } {
                        "explicit-" (platform) ".txt"
                    }
                    " (" code { "@EXPLICIT" } " for " (platform) ")"
                }
            }
        }
    }
}

/// Links to a build's lock artifacts, as its `links` name them.
pub(crate) fn build_links(lock_hash: &str, artifacts: &BTreeMap<String, String>) -> Markup {
    let files: Vec<&String> = artifacts
        .keys()
        .filter(|name| !matches!(name.as_str(), "self" | "log"))
        .collect();
    html! {
        ul.downloads {
            @for file in files {
                li {
                    a href=(links::lock_artifact(lock_hash, file)) data-format=(format_of(file)) download=(file) { (file) }
                }
            }
        }
    }
}

/// The `?format=` name of a lock artifact's file.
fn format_of(file: &str) -> &'static str {
    match file {
        "conda-lock.yml" => "conda-lock",
        "pixi.lock" => "pixi",
        _ => "explicit",
    }
}

/// `GET …/lockfile?format=&platform=` of the API, under the session.
pub(crate) async fn current_lockfile(
    State(api): State<Api>,
    visitor: Visitor,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, UiError> {
    let mut uri = format!("{}/lockfile", links::api::environment(&namespace, &name));
    if let Some(query) = query {
        uri = format!("{uri}?{query}");
    }
    relay(&api, &visitor, &uri).await
}

/// `GET /api/v1/locks/{hash}/{file}` of the API, under the session.
pub(crate) async fn lock_artifact(
    State(api): State<Api>,
    visitor: Visitor,
    Path((lock_hash, file)): Path<(String, String)>,
) -> Result<Response, UiError> {
    let uri = format!(
        "/api/v1/locks/{}/{}",
        links::segment(&lock_hash),
        links::segment(&file)
    );
    relay(&api, &visitor, &uri).await
}

/// The API's answer as it is (body, type, ETag), or its problem as a page.
async fn relay(api: &Api, visitor: &Visitor, uri: &str) -> Result<Response, UiError> {
    let response = api
        .call(visitor, Method::GET, uri, &[], Body::empty())
        .await?;
    if !response.status().is_success() {
        return Err(api::problem(response).await);
    }
    let (parts, body) = response.into_parts();
    let mut relayed = Response::new(body);
    for name in [header::CONTENT_TYPE, header::ETAG] {
        if let Some(value) = parts.headers.get(&name) {
            relayed.headers_mut().insert(name, value.clone());
        }
    }
    relayed.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(relayed)
}
