//! An environment: its current build with the lockfiles to download, its
//! packages, the spec it was submitted with and how to use it (path, kernel,
//! activation, lockfile commands for CI), and its history of builds, from
//! which an older build can be made current again (rollback) or compared
//! with another. Actions show only to roles that may take them.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Redirect;
use maud::{Markup, html};
use serde::Deserialize;

use envstore_api_types::{
    BuildHistoryEntry, BuildStatus, BuildView, BuildsPage, CurrentBuild, CurrentBuildSet,
    EnvironmentDeleted, Role,
};

use crate::api::Api;
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::pages::downloads;
use crate::roles;
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
    headers: HeaderMap,
) -> Result<Markup, UiError> {
    let list = &query.list;
    let builds_path = format!("{}/builds", links::api::environment(&namespace, &name));
    let page: BuildsPage = api.get(&visitor, &list.api_path(&builds_path)).await?;
    let current: Option<BuildView> = match &page.current_build_id {
        Some(id) => Some(api.get(&visitor, &links::api::build(id)).await?),
        None => None,
    };
    let spec = match &current {
        Some(build) => submitted_spec(&api, &visitor, build).await?,
        None => None,
    };
    let here = links::environment(&namespace, &name);
    let notice = match query.notice.as_deref() {
        Some("current") => current
            .as_ref()
            .map(|build| format!("Build {} is now current.", layout::short_id(&build.id))),
        _ => None,
    };
    let session = visitor.session();
    let may_submit = roles::may(session, &namespace, Role::Developer);
    let may_delete = roles::may(session, &namespace, Role::Admin);
    let usage = Usage {
        namespace: &namespace,
        name: &name,
        prefix: api
            .app()
            .environments_root
            .join(&namespace)
            .join(&name)
            .display()
            .to_string(),
        kernel: envstore_api::kernel_id(&namespace, &name),
        server: server_url(&headers),
    };
    let body = html! {
        @if let Some(notice) = &notice { (layout::notice(notice)) }
        @if may_submit {
            p.actions {
                a.button #edit-spec href=(links::with_query(&links::submit(&namespace), &[("name", Some(&name))])) { "Edit the spec and submit" }
            }
        }
        section aria-labelledby="current-heading" {
            h2 #current-heading { "Current build" }
            @match &current {
                Some(build) => (current_build(&namespace, &name, build)),
                None => p { "No build has succeeded yet." },
            }
        }
        @if let Some(build) = &current {
            (packages(build))
            section #spec aria-labelledby="spec-heading" {
                h2 #spec-heading { "Spec" }
                @match &spec {
                    Some(text) => {
                        p.hint { "The environment.yml the current build was submitted with." }
                        pre.spec { (text) }
                    }
                    None => p { "The current build has no spec: it was installed from a lockfile." },
                }
            }
            (how_to_use(&usage, build))
        }
        section aria-labelledby="history-heading" {
            h2 #history-heading { "Builds" }
            (layout::search(&here, "Search builds by id, status or submitter", list.q()))
            @if page.builds.is_empty() {
                p { @if list.q().is_some() { "No build matches this search." } @else { "No build yet." } }
            } @else {
                (history(session.filter(|_| may_submit), &namespace, &name, &page.builds, page.current_build_id.as_deref()))
                (compare_form(&page.builds, page.current_build_id.as_deref()))
            }
            (layout::pager(&here, list.q(), list.after(), page.next_after.as_deref(), "Older builds"))
        }
        @if let (true, Some(session)) = (may_delete, session) {
            section #danger aria-labelledby="delete-heading" {
                h2 #delete-heading { "Delete the environment" }
                p.hint { "It is hidden at once and its builds stop; garbage collection removes its prefixes and logs later. Locks stay available to other namespaces that built them." }
                form #delete-form.stacked method="post" action={ (here) "/delete" } {
                    (layout::csrf_field(session))
                    label for="confirm" { "Type the environment's name to confirm" }
                    input #confirm type="text" name="confirm" required autocomplete="off";
                    button.danger type="submit" { "Delete " (namespace) "/" (name) }
                }
            }
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

/// The spec text the build was submitted with (its canonical form for a
/// build older than kept texts); None for a build from a lockfile.
async fn submitted_spec(
    api: &Api,
    visitor: &Visitor,
    build: &BuildView,
) -> Result<Option<String>, UiError> {
    match api
        .get_text(visitor, &links::api::build_spec(&build.id))
        .await
    {
        Ok(text) => Ok(Some(text)),
        Err(UiError::Problem(problem)) if problem.status == StatusCode::NOT_FOUND.as_u16() => {
            Ok(build
                .spec
                .as_ref()
                .filter(|spec| spec.from_lock.is_none())
                .map(|spec| spec.to_environment_yaml(&build.environment)))
        }
        Err(error) => Err(error),
    }
}

/// This server's URL as the browser reached it (through a proxy, as the
/// proxy says), for the commands to copy.
fn server_url(headers: &HeaderMap) -> String {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let host = text("x-forwarded-host")
        .or_else(|| text("host"))
        .unwrap_or("localhost:8080");
    let scheme = if crate::session::served_over_https(headers) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
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

/// The packages of the current build per platform: the first few of each,
/// and a link to the whole searchable list.
fn packages(build: &BuildView) -> Markup {
    /// Packages shown per platform before the link to the rest.
    const SHOWN: usize = 12;
    html! {
        section #packages aria-labelledby="packages-heading" {
            h2 #packages-heading { "Packages" }
            @match &build.packages {
                None => p { "The current build has no lock yet." },
                Some(platforms) => {
                    @for (platform, packages) in platforms {
                        h3 { (platform) " " span.count { "(" (packages.len()) " packages)" } }
                        table.packages data-platform=(platform) {
                            thead { tr { th scope="col" { "Name" } th scope="col" { "Version" } th scope="col" { "Build" } } }
                            tbody {
                                @for package in packages.iter().take(SHOWN) {
                                    tr { th scope="row" { (package.name) } td { (package.version) } td { code { (package.build) } } }
                                }
                            }
                        }
                        @if packages.len() > SHOWN {
                            p.hint { "and " (packages.len() - SHOWN) " more." }
                        }
                    }
                    p { a #all-packages href=(links::packages(&build.id)) { "All the packages, with their channels" } }
                }
            }
        }
    }
}

/// What the usage section needs to know of the environment.
struct Usage<'a> {
    namespace: &'a str,
    name: &'a str,
    /// Its path on the server (a link to the current build's prefix).
    prefix: String,
    /// Its Jupyter kernel's name (`envstore kernels sync` makes it).
    kernel: String,
    /// This server's URL, for the commands.
    server: String,
}

/// How to use the environment: its path, its kernel, how to activate it,
/// and how CI fetches its lockfiles.
fn how_to_use(usage: &Usage<'_>, build: &BuildView) -> Markup {
    let api_lockfile = format!(
        "{}{}/lockfile",
        usage.server,
        links::api::environment(usage.namespace, usage.name)
    );
    let platforms: Vec<String> = build
        .packages
        .as_ref()
        .map(|platforms| platforms.keys().cloned().collect())
        .unwrap_or_default();
    let has_kernel = build.packages.as_ref().is_some_and(|platforms| {
        platforms
            .values()
            .flatten()
            .any(|package| package.name == envstore_api::KERNEL_PACKAGE)
    });
    let curl = |query: &str, file: &str| {
        format!(
            "curl -fsSL -H \"Authorization: Bearer $ENVSTORE_TOKEN\" \\\n  \"{api_lockfile}?{query}\" -o {file}"
        )
    };
    let mut commands = vec![
        curl("format=conda-lock", "conda-lock.yml"),
        curl("format=pixi", "pixi.lock"),
    ];
    for platform in &platforms {
        commands.push(curl(
            &format!("format=explicit&platform={platform}"),
            &format!("explicit-{platform}.txt"),
        ));
    }
    let environment = format!("{}/{}", usage.namespace, usage.name);
    html! {
        section #usage aria-labelledby="usage-heading" {
            h2 #usage-heading { "How to use it" }
            dl.facts {
                dt { "Path on the server" } dd { code #prefix-path { (usage.prefix) } }
                dt { "Jupyter kernel" }
                dd {
                    code #kernel-name { (usage.kernel) }
                    @if !has_kernel { " " span.hint { "(only once the environment has ipykernel)" } }
                }
            }
            h3 { "Activate it" }
            pre #activate { "conda activate " (usage.prefix) "\nmicromamba activate -p " (usage.prefix) }
            h3 { "Lockfiles for CI" }
            p.hint { "With a token in " code { "ENVSTORE_TOKEN" } " (the current build's lock; each build's lockfiles never change):" }
            pre #ci-commands {
                "envstore lock " (environment) " --server " (usage.server) " --format conda-lock > conda-lock.yml\n"
                @for command in &commands { (command) "\n" }
            }
            p.hint { "Then " code { "conda-lock install -n NAME conda-lock.yml" } ", " code { "pixi install --frozen" } " beside pixi.lock, or " code { "micromamba create -n NAME -f explicit-PLATFORM.txt" } "." }
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

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

/// Deletes the environment (namespace admins): the API's `DELETE`, once
/// its name was typed to confirm.
pub(crate) async fn delete(
    State(api): State<Api>,
    session: Session,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<DeleteForm>,
) -> Result<Redirect, UiError> {
    session.check_form(&headers, &form.csrf)?;
    if form.confirm.trim() != name {
        return Err(UiError::BadRequest(format!(
            "type the environment's name '{name}' to confirm its deletion"
        )));
    }
    let _: EnvironmentDeleted = api
        .send(
            &session,
            Method::DELETE,
            &links::api::environment(&namespace, &name),
            "application/json",
            String::new(),
        )
        .await?;
    Ok(Redirect::to(&links::with_query(
        &links::namespace(&namespace),
        &[("notice", Some("deleted"))],
    )))
}
