//! A build: its status and phases, its log (followed live while it runs,
//! with the download's progress, until the page shows its final state),
//! its lockfiles and a link to its packages.

use axum::Form;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use envstore_api_types::{BuildCancelled, BuildStatus, BuildView, PhaseView, Role};

use crate::api::{self, Api};
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::pages::downloads;
use crate::roles;
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
    let may_cancel = live && roles::may(visitor.session(), &build.namespace, Role::Developer);
    // The parts with an id are what the page's script fetches again while
    // the build runs and once it ends, so the page shows its final state
    // without a reload.
    let body = html! {
        @if let Some(notice) = notice { (layout::notice(notice)) }
        (facts(&build))
        div #build-actions {
            @if let (true, Some(session)) = (may_cancel, visitor.session()) {
                form #cancel-form.inline method="post" action={ (links::build(&build.id)) "/cancel" } {
                    (layout::csrf_field(session))
                    button type="submit" { "Cancel the build" }
                }
            }
        }
        div #build-waiting {
            @if let Some(waiting) = &build.waiting {
                p.notice role="status" { "Waiting: " (waiting) }
            }
        }
        div #build-error {
            @if let Some(error) = &build.error {
                section aria-labelledby="error-heading" {
                    h2 #error-heading { "Error" }
                    pre.error-text { (error) }
                }
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
        (phases(&build))
        div #build-files {
            @if let Some(lock_hash) = &build.lock_hash {
                section aria-labelledby="files-heading" {
                    h2 #files-heading { "Lockfiles" }
                    (downloads::build_links(lock_hash, &build.links))
                    p { a href=(links::packages(&build.id)) { "The packages of this build" } }
                }
            }
        }
        section aria-labelledby="log-heading" {
            h2 #log-heading { "Log" }
            @if live {
                p #log-notice.hint {
                    "The log and the phases follow the build as it runs, to its end."
                }
                noscript {
                    p { "Following the log live needs JavaScript. " a href={ (links::build(&build.id)) "/log" } { "Read the log so far" } "." }
                }
                (progress_box())
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

/// How far a phase got: finished, still running, or the one the build
/// failed or was cancelled in (its last).
fn phase_state(phase: &PhaseView, last: bool, status: BuildStatus) -> &'static str {
    match status {
        BuildStatus::Failed if last => "failed",
        BuildStatus::Cancelled if last => "cancelled",
        _ if phase.finished_at.is_some() || phase.duration_ms.is_some() => "finished",
        BuildStatus::Queued | BuildStatus::Running => "running",
        BuildStatus::Failed | BuildStatus::Cancelled | BuildStatus::Succeeded => "finished",
    }
}

/// The build's facts: where it belongs, its state and phase, its times.
fn facts(build: &BuildView) -> Markup {
    let current_phase = build.phases.last();
    html! {
        dl #build-facts.facts data-status=(build.status) {
            dt { "Environment" }
            dd { a href=(links::environment(&build.namespace, &build.environment)) { (build.namespace) "/" (build.environment) } }
            dt { "Status" }
            dd #build-status role="status" aria-live="polite" { (layout::status(build.status)) }
            dt { "Phase" }
            dd #build-phase {
                @if let Some(phase) = current_phase {
                    (phase.phase)
                    @let state = phase_state(phase, true, build.status);
                    @if state != "running" { " — " (state) }
                    @if let Some(detail) = &phase.detail { " (" (detail) ")" }
                } @else if build.status.is_final() { "none: the build ended before its first phase" }
                @else { "not started" }
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
    }
}

/// The phases as far as they got, each with its state.
fn phases(build: &BuildView) -> Markup {
    html! {
        section #phases aria-labelledby="phases-heading" data-phases=(build.phases.len()) {
            h2 #phases-heading { "Phases" }
            @if build.phases.is_empty() {
                @if build.status.is_final() {
                    p { "The build " (build.status) " before any phase started." }
                } @else {
                    p { "No phase has started yet." }
                }
            } @else {
                table {
                    thead { tr { th scope="col" { "Phase" } th scope="col" { "Started" } th scope="col" { "Took" } th scope="col" { "Detail" } } }
                    tbody {
                        @for (index, phase) in build.phases.iter().enumerate() {
                            @let state = phase_state(phase, index + 1 == build.phases.len(), build.status);
                            tr data-phase=(phase.phase) data-state=(state) {
                                th scope="row" { (phase.phase) }
                                td { (layout::time(phase.started_at)) }
                                td {
                                    @match (phase.duration_ms, state) {
                                        (Some(ms), "finished") => (layout::duration(ms)),
                                        (Some(ms), stopped) => { (layout::duration(ms)) ", " strong { (stopped) } }
                                        (None, "running") => "running",
                                        (None, "finished") => "—",
                                        (None, stopped) => strong { (stopped) },
                                    }
                                }
                                td { (phase.detail.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Where the script shows the download's progress: bytes (in human units)
/// and packages, cached and downloaded, from the stream's `progress`
/// events; hidden until the first one.
fn progress_box() -> Markup {
    html! {
        div #download-progress.progress hidden {
            label for="download-bar" { "Downloading packages" }
            progress #download-bar max="1" value="0" {}
            p #download-text.hint {}
            p #link-text.hint {}
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(finished: bool) -> PhaseView {
        PhaseView {
            phase: envstore_api_types::BuildPhase::Solving,
            started_at: 1,
            finished_at: finished.then_some(2),
            duration_ms: finished.then_some(1),
            detail: None,
        }
    }

    #[test]
    fn phases_end_with_their_build() {
        assert_eq!(
            phase_state(&phase(false), true, BuildStatus::Running),
            "running"
        );
        assert_eq!(
            phase_state(&phase(true), false, BuildStatus::Running),
            "finished"
        );
        assert_eq!(
            phase_state(&phase(false), true, BuildStatus::Failed),
            "failed"
        );
        assert_eq!(
            phase_state(&phase(true), true, BuildStatus::Failed),
            "failed"
        );
        assert_eq!(
            phase_state(&phase(true), false, BuildStatus::Failed),
            "finished"
        );
        assert_eq!(
            phase_state(&phase(false), true, BuildStatus::Cancelled),
            "cancelled"
        );
        assert_eq!(
            phase_state(&phase(false), true, BuildStatus::Succeeded),
            "finished"
        );
    }

    #[test]
    fn a_finished_build_shows_no_running_phase() {
        let build: BuildView = serde_json::from_value(serde_json::json!({
            "id": "b1", "namespace": "team", "environment": "env", "status": "failed",
            "spec_hash": "s", "lock_hash": null, "reused": { "lock": false, "prefix": false },
            "phases": [{ "phase": "solving", "started_at": 1, "finished_at": null, "duration_ms": null, "detail": null }],
            "error": "unsolvable", "created_at": 1, "started_at": 1, "finished_at": 2,
            "links": {}
        }))
        .expect("a build view");
        let html = phases(&build).into_string();
        assert!(html.contains("data-state=\"failed\""), "{html}");
        assert!(!html.contains("running"), "{html}");
        let facts = facts(&build).into_string();
        assert!(facts.contains("solving — failed"), "{facts}");
    }
}
