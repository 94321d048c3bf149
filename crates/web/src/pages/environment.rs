//! An environment: its current build with the lockfiles to download, and
//! its history of builds, from which an older build can be made current
//! again (rollback) or compared with another.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Redirect;
use maud::{Markup, html};
use serde::Deserialize;

use envstore_api_types::{
    BuildHistoryEntry, BuildStatus, BuildView, BuildsPage, CurrentBuild, CurrentBuildSet,
};

use crate::api::Api;
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::pages::downloads;
use crate::session::{Session, Visitor};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct EnvironmentQuery {
    #[serde(flatten)]
    list: crate::pages::ListQuery,
    /// What was just done here, to confirm it.
    notice: Option<String>,
}

pub(crate) async fn show(
    State(api): State<Api>,
    visitor: Visitor,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<EnvironmentQuery>,
) -> Result<Markup, UiError> {
    let list = &query.list;
    let builds_path = format!("{}/builds", links::api::environment(&namespace, &name));
    let page: BuildsPage = api.get(&visitor, &list.api_path(&builds_path)).await?;
    let current: Option<BuildView> = match &page.current_build_id {
        Some(id) => Some(api.get(&visitor, &links::api::build(id)).await?),
        None => None,
    };
    let here = links::environment(&namespace, &name);
    let notice = match query.notice.as_deref() {
        Some("current") => current
            .as_ref()
            .map(|build| format!("Build {} is now current.", layout::short_id(&build.id))),
        _ => None,
    };
    let body = html! {
        @if let Some(notice) = &notice { (layout::notice(notice)) }
        @if visitor.session().is_some() {
            p.actions {
                a.button href=(links::with_query(&links::submit(&namespace), &[("name", Some(&name))])) { "Edit the spec and submit" }
            }
        }
        section aria-labelledby="current-heading" {
            h2 #current-heading { "Current build" }
            @match &current {
                Some(build) => (current_build(&namespace, &name, build)),
                None => p { "No build has succeeded yet." },
            }
        }
        section aria-labelledby="history-heading" {
            h2 #history-heading { "Builds" }
            (layout::search(&here, "Search builds by id, status or submitter", list.q()))
            @if page.builds.is_empty() {
                p { @if list.q().is_some() { "No build matches this search." } @else { "No build yet." } }
            } @else {
                (history(visitor.session(), &namespace, &name, &page.builds, page.current_build_id.as_deref()))
                (compare_form(&page.builds, page.current_build_id.as_deref()))
            }
            (layout::pager(&here, list.q(), list.after(), page.next_after.as_deref(), "Older builds"))
        }
    };
    let trail = [
        ("Namespaces".to_owned(), links::namespaces()),
        (namespace.clone(), links::namespace(&namespace)),
    ];
    let title = format!("{namespace}/{name}");
    Ok(layout::page(
        &title,
        Chrome::visitor(&visitor, Section::Namespaces),
        &trail,
        body,
    ))
}

fn current_build(namespace: &str, name: &str, build: &BuildView) -> Markup {
    let platforms = build
        .spec
        .as_ref()
        .map(|spec| spec.platforms.clone())
        .unwrap_or_default();
    html! {
        dl.facts {
            dt { "Build" } dd { a href=(links::build(&build.id)) { code { (build.id) } } }
            dt { "Status" } dd { (layout::status(build.status)) }
            @if let Some(finished) = build.finished_at { dt { "Finished" } dd { (layout::time(finished)) } }
            @if let Some(lock_hash) = &build.lock_hash { dt { "Lock hash" } dd { code { (lock_hash) } } }
        }
        @if build.lock_hash.is_some() {
            h3 { "Lockfiles of the current build" }
            (downloads::current_links(namespace, name, &platforms))
        }
    }
}

fn history(
    session: Option<&Session>,
    namespace: &str,
    name: &str,
    builds: &[BuildHistoryEntry],
    current: Option<&str>,
) -> Markup {
    let rollback = links::environment(namespace, name) + "/current";
    html! {
        table.history {
            caption.visually-hidden { "Builds of " (namespace) "/" (name) ", newest first" }
            thead {
                tr {
                    th scope="col" { "Build" }
                    th scope="col" { "Status" }
                    th scope="col" { "Submitted by" }
                    th scope="col" { "Submitted" }
                    th scope="col" { "Phases" }
                    th scope="col" { "Actions" }
                }
            }
            tbody {
                @for build in builds {
                    tr data-build=(build.id) {
                        th scope="row" {
                            a href=(links::build(&build.id)) { code { (layout::short_id(&build.id)) } }
                            @if build.current { " " strong.current-marker { "(current)" } }
                        }
                        td { (layout::status(build.status)) }
                        td { (build.submitted_by.as_deref().unwrap_or("unknown")) }
                        td { (layout::time(build.created_at)) }
                        td { (phases(build)) }
                        td.row-actions {
                            @if build.status == BuildStatus::Succeeded && !build.current {
                                @if let Some(session) = session {
                                    form.inline method="post" action=(rollback) {
                                        (layout::csrf_field(session))
                                        input type="hidden" name="build_id" value=(build.id);
                                        button type="submit" aria-label={ "Make build " (layout::short_id(&build.id)) " current" } { "Make current" }
                                    }
                                }
                                @if let Some(current) = current {
                                    a href=(links::diff(&build.id, current)) { "Compare with current" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn phases(build: &BuildHistoryEntry) -> Markup {
    html! {
        @if build.phases.is_empty() {
            "—"
        } @else {
            ul.phases {
                @for phase in &build.phases {
                    li {
                        (phase.phase) " "
                        @match phase.duration_ms { Some(ms) => (layout::duration(ms)), None => "running" }
                    }
                }
            }
        }
    }
}

/// Two builds of this page to compare, preselected to the previous
/// succeeded build and the current one.
fn compare_form(builds: &[BuildHistoryEntry], current: Option<&str>) -> Markup {
    let comparable: Vec<&BuildHistoryEntry> = builds
        .iter()
        .filter(|build| build.status == BuildStatus::Succeeded)
        .collect();
    if comparable.len() < 2 {
        return html! {};
    }
    let to = current.unwrap_or(&comparable[0].id);
    let from = comparable
        .iter()
        .find(|build| build.id != to)
        .map(|build| build.id.as_str())
        .unwrap_or_default();
    let option = |build: &BuildHistoryEntry, selected: &str| {
        html! {
            option value=(build.id) selected[build.id == selected] {
                (layout::short_id(&build.id)) " · " (build.submitted_by.as_deref().unwrap_or("unknown"))
                @if build.current { " (current)" }
            }
        }
    };
    html! {
        form.compare method="get" action="/ui/diff" {
            h3 { "Compare two builds" }
            label for="diff-from" { "From build" }
            select #diff-from name="from" { @for build in &comparable { (option(build, from)) } }
            label for="diff-to" { "To build" }
            select #diff-to name="to" { @for build in &comparable { (option(build, to)) } }
            button type="submit" { "Show the package changes" }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct MakeCurrentForm {
    #[serde(default)]
    csrf: String,
    build_id: String,
}

/// Rollback (or forward): the API's `PUT …/current`. When the build's
/// prefix was collected the API queues its rebuild; its page is shown.
pub(crate) async fn make_current(
    State(api): State<Api>,
    session: Session,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<MakeCurrentForm>,
) -> Result<Redirect, UiError> {
    session.check_form(&headers, &form.csrf)?;
    let body = serde_json::to_string(&CurrentBuild {
        build_id: form.build_id,
    })
    .map_err(|error| UiError::Unexpected(format!("the rollback could not be sent: {error}")))?;
    let path = format!("{}/current", links::api::environment(&namespace, &name));
    let made: CurrentBuildSet = api
        .send(&session, Method::PUT, &path, "application/json", body)
        .await?;
    Ok(match made.rebuild {
        Some(rebuild) => Redirect::to(&links::build(&rebuild.build_id)),
        None => Redirect::to(&links::with_query(
            &links::environment(&namespace, &name),
            &[("notice", Some("current"))],
        )),
    })
}
