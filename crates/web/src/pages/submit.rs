//! Submitting an `environment.yml`: a new environment, or an edit of an
//! existing one's spec (prefilled with what its current build was submitted
//! with, as the user wrote it).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use envstore_api_types::{BuildQueued, BuildView, BuildsPage, Problem};

use crate::api::Api;
use crate::error::{ProblemExt, UiError, problem_of};
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::session::Session;

/// What a new environment starts from.
const TEMPLATE: &str = "channels:\n  - CHANNEL\ndependencies:\n  - python\n";

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SubmitQuery {
    name: Option<String>,
}

pub(crate) async fn form(
    State(api): State<Api>,
    session: Session,
    Path(namespace): Path<String>,
    Query(query): Query<SubmitQuery>,
) -> Result<Markup, UiError> {
    let name = query
        .name
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty());
    let spec = match name {
        Some(name) => current_spec(&api, &session, &namespace, name).await?,
        None => None,
    };
    let spec = spec.unwrap_or_else(|| new_spec(&api));
    Ok(render(
        &session,
        &namespace,
        name.unwrap_or_default(),
        &spec,
        None,
    ))
}

/// The environment.yml of the environment's current build (or, before one
/// succeeded, its latest) as its submitter wrote it, comments and all; for
/// a build without a kept text (made before texts were kept, or from a
/// lockfile), its canonical form: channel URLs, normalised specs.
async fn current_spec(
    api: &Api,
    session: &Session,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, UiError> {
    let path = format!(
        "{}/builds?limit=1",
        links::api::environment(namespace, name)
    );
    let page: BuildsPage = match api.get(session, &path).await {
        Ok(page) => page,
        Err(UiError::Problem(problem)) if problem.status == StatusCode::NOT_FOUND.as_u16() => {
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    let Some(id) = page
        .current_build_id
        .or_else(|| page.builds.first().map(|build| build.id.clone()))
    else {
        return Ok(None);
    };
    match api.get_text(session, &links::api::build_spec(&id)).await {
        Ok(text) => return Ok(Some(text)),
        Err(UiError::Problem(problem)) if problem.status == StatusCode::NOT_FOUND.as_u16() => {}
        Err(error) => return Err(error),
    }
    let build: BuildView = api.get(session, &links::api::build(&id)).await?;
    Ok(build.spec.map(|spec| spec.to_environment_yaml(name)))
}

/// A starting point naming the server's first allowed channel.
fn new_spec(api: &Api) -> String {
    let channel = api
        .allowlist()
        .channels()
        .first()
        .map(|channel| channel.name.as_str())
        .unwrap_or("CHANNEL");
    TEMPLATE.replace("CHANNEL", channel)
}

fn render(
    session: &Session,
    namespace: &str,
    name: &str,
    spec: &str,
    problem: Option<&Problem>,
) -> Markup {
    let body = html! {
        @if let Some(problem) = problem { (problem.render()) }
        form.stacked method="post" action=(links::submit(namespace)) {
            (layout::csrf_field(session))
            label for="name" { "Environment name" }
            p.hint #name-hint { "Letters, digits, '.', '_' and '-'. Submitting to an existing name adds a build to it." }
            input #name type="text" name="name" value=(name) required aria-describedby="name-hint" autocomplete="off";
            label for="spec" { "environment.yml" }
            p.hint #spec-hint {
                "Channels by name or URL, dependencies as conda match specs (" code { "python=3.11" } " is fuzzy, "
                code { "python 3.11" } " exact), optional " code { "platforms" } " and " code { "variables" } "."
            }
            textarea #spec name="spec" rows="18" spellcheck="false" required aria-describedby="spec-hint" { (spec) }
            button type="submit" { "Submit the build" }
        }
    };
    let trail = [
        ("Namespaces".to_owned(), links::namespaces()),
        (namespace.to_owned(), links::namespace(namespace)),
    ];
    let title = if name.is_empty() {
        "New environment".to_owned()
    } else {
        format!("Submit {namespace}/{name}")
    };
    layout::page(
        &title,
        Chrome::new(session, Section::Namespaces),
        &trail,
        body,
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct SubmitForm {
    #[serde(default)]
    csrf: String,
    name: String,
    spec: String,
}

/// The API's `PUT …/environments/{name}` with the spec as YAML: on success
/// the build's page, else the form again with the API's problem and the
/// text as it was typed.
pub(crate) async fn submit(
    State(api): State<Api>,
    session: Session,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    Form(form): Form<SubmitForm>,
) -> Result<Response, UiError> {
    session.check_form(&headers, &form.csrf)?;
    let name = form.name.trim();
    if name.is_empty() {
        let problem = problem_of(
            StatusCode::UNPROCESSABLE_ENTITY,
            "give the environment a name".to_owned(),
        );
        return Ok((
            problem.status_code(),
            render(&session, &namespace, name, &form.spec, Some(&problem)),
        )
            .into_response());
    }
    let path = links::api::environment(&namespace, name);
    let submitted: Result<BuildQueued, UiError> = api
        .send(
            &session,
            Method::PUT,
            &path,
            "application/yaml",
            form.spec.clone(),
        )
        .await;
    match submitted {
        Ok(submitted) => {
            let notice = submitted.joined.then_some("joined");
            Ok(Redirect::to(&links::with_query(
                &links::build(&submitted.build_id),
                &[("notice", notice)],
            ))
            .into_response())
        }
        Err(UiError::Problem(problem)) => Ok((
            problem.status_code(),
            render(
                &session,
                &namespace,
                name,
                &form.spec,
                Some(problem.as_ref()),
            ),
        )
            .into_response()),
        Err(other) => Err(other),
    }
}
