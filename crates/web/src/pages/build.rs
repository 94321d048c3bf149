//! A build: its status and phases, its log (followed live while it runs),
//! its lockfiles and a link to its packages.

use axum::Form;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use envstore_api_types::{BuildCancelled, BuildView};

use crate::api::{self, Api};
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::pages::downloads;
use crate::session::{Session, Visitor};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct BuildQuery {
    notice: Option<String>,
}

pub(crate) async fn show(
    State(api): State<Api>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(query): Query<BuildQuery>,
) -> Result<Markup, UiError> {
    let build: BuildView = api.get(&visitor, &links::api::build(&id)).await?;
    let live = !build.status.is_final();
    // A running build's log arrives through the event stream, from its
    // first line; a finished one is shown whole.
    let log = if live {
        String::new()
    } else {
        log(&api, &visitor, &build.id).await?
    };
    let notice = match query.notice.as_deref() {
        Some("joined") => Some(
            "The same spec was already being built for this environment: you joined that build.",
        ),
        Some("cancelling") => Some("The build is being cancelled."),
        _ => None,
    };
    let current_phase = build.phases.last();
    let body = html! {
        @if let Some(notice) = notice { (layout::notice(notice)) }
        dl.facts {
            dt { "Environment" }
            dd { a href=(links::environment(&build.namespace, &build.environment)) { (build.namespace) "/" (build.environment) } }
            dt { "Status" }
            dd #build-status role="status" aria-live="polite" { (layout::status(build.status)) }
            dt { "Phase" }
            dd #build-phase {
                @if let Some(phase) = current_phase {
                    (phase.phase) @if let Some(detail) = &phase.detail { " (" (detail) ")" }
                } @else { "not started" }
            }
            dt { "Submitted" } dd { (layout::time(build.created_at)) }
            @if let Some(started) = build.started_at { dt { "Started" } dd { (layout::time(started)) } }
            @if let Some(finished) = build.finished_at { dt { "Finished" } dd { (layout::time(finished)) } }
            @if let Some(lock_hash) = &build.lock_hash {
                dt { "Lock hash" } dd { code { (lock_hash) } }
                dt { "Reused" }
                dd {
                    @match (build.reused.lock, build.reused.prefix) {
                        (_, true) => "the lock and its installed prefix: nothing was downloaded or linked",
                        (true, false) => "the lock (the prefix was installed anew)",
                        (false, false) => "nothing: a new lock, installed anew",
                    }
                }
            }
            dt { "Build id" } dd { code { (build.id) } }
        }
        @if let (false, Some(session)) = (build.status.is_final(), visitor.session()) {
            form #cancel-form.inline method="post" action={ (links::build(&build.id)) "/cancel" } {
                (layout::csrf_field(session))
                button type="submit" { "Cancel the build" }
            }
        }
        @if let Some(error) = &build.error {
            section aria-labelledby="error-heading" {
                h2 #error-heading { "Error" }
                pre.error-text { (error) }
            }
        }
        @if let Some(spec) = &build.spec {
            section aria-labelledby="spec-heading" {
                h2 #spec-heading { "Spec" }
                @if let Some(lock) = &spec.from_lock {
                    p { "Installed from the lock " code { (lock) } " as it is, without solving." }
                }
                pre.spec { (spec.to_environment_yaml(&build.environment)) }
            }
        }
        section aria-labelledby="phases-heading" {
            h2 #phases-heading { "Phases" }
            @if build.phases.is_empty() {
                p { "No phase has started yet." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Phase" } th scope="col" { "Started" } th scope="col" { "Took" } th scope="col" { "Detail" } } }
                    tbody {
                        @for phase in &build.phases {
                            tr {
                                th scope="row" { (phase.phase) }
                                td { (layout::time(phase.started_at)) }
                                td { @match phase.duration_ms { Some(ms) => (layout::duration(ms)), None => "running" } }
                                td { (phase.detail.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(lock_hash) = &build.lock_hash {
            section aria-labelledby="files-heading" {
                h2 #files-heading { "Lockfiles" }
                (downloads::build_links(lock_hash, &build.links))
                p { a href=(links::packages(&build.id)) { "The packages of this build" } }
            }
        }
        section aria-labelledby="log-heading" {
            h2 #log-heading { "Log" }
            @if live {
                p #log-notice.hint {
                    "The log follows the build as it runs. "
                    a href=(links::build(&build.id)) { "Reload the page" } " to see the build's result once it ends."
                }
                noscript {
                    p { "Following the log live needs JavaScript. " a href={ (links::build(&build.id)) "/log" } { "Read the log so far" } "." }
                }
            }
            pre #log tabindex="0" aria-label="Build log" data-events=[live.then(|| format!("{}/events", links::build(&build.id)))] { (log) }
            p { a href={ (links::build(&build.id)) "/log" } { "The log as plain text" } }
        }
    };
    let trail = [
        ("Namespaces".to_owned(), links::namespaces()),
        (build.namespace.clone(), links::namespace(&build.namespace)),
        (
            format!("{}/{}", build.namespace, build.environment),
            links::environment(&build.namespace, &build.environment),
        ),
    ];
    let title = format!("Build {}", layout::short_id(&build.id));
    Ok(layout::page(
        &title,
        Chrome::visitor(&visitor, Section::Namespaces),
        &trail,
        body,
    ))
}

/// The build's log as the API serves it (published, or live so far).
async fn log(api: &Api, visitor: &Visitor, id: &str) -> Result<String, UiError> {
    let uri = format!("{}/log", links::api::build(id));
    let response = api
        .call(visitor, Method::GET, &uri, &[], Body::empty())
        .await?;
    if !response.status().is_success() {
        return Err(api::problem(response).await);
    }
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|error| {
            UiError::Unexpected(format!("the log of build {id} could not be read: {error}"))
        })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The log as plain text, for reading without JavaScript.
pub(crate) async fn log_text(
    State(api): State<Api>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let text = log(&api, &visitor, &id).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// The API's event stream of the build's log (`line`, `status`, `end`),
/// relayed to the page's EventSource. Any failure is a 204, which tells
/// EventSource to stop retrying.
pub(crate) async fn events(
    State(api): State<Api>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Response {
    let uri = format!("{}/log", links::api::build(&id));
    match api
        .call(
            &visitor,
            Method::GET,
            &uri,
            &[(header::ACCEPT, "text/event-stream")],
            Body::empty(),
        )
        .await
    {
        Ok(response) if response.status().is_success() => {
            let mut relayed = Response::new(response.into_body());
            let headers = relayed.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-cache"),
            );
            relayed
        }
        // Nobody signed in, and the build is not public: sign in.
        Err(error @ UiError::SignIn { .. }) => error.into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CancelForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn cancel(
    State(api): State<Api>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CancelForm>,
) -> Result<Redirect, UiError> {
    session.check_form(&headers, &form.csrf)?;
    let uri = format!("{}/cancel", links::api::build(&id));
    let _: BuildCancelled = api
        .send(
            &session,
            Method::POST,
            &uri,
            "application/json",
            String::new(),
        )
        .await?;
    Ok(Redirect::to(&links::with_query(
        &links::build(&id),
        &[("notice", Some("cancelling"))],
    )))
}
