//! Package search: which environments (the current builds the visitor may
//! see) hold a package, with its version and build per platform, over the
//! API's `GET /api/v1/packages`.

use axum::extract::{Query, State};
use maud::{Markup, html};
use serde::Deserialize;

use envstore_api_types::PackagesPage;

use crate::api::Api;
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::session::Visitor;

/// Matches per page.
const PAGE_SIZE: &str = "50";

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchQuery {
    name: Option<String>,
    /// A checkbox: present ("true") when names starting with it count.
    prefix: Option<String>,
    after: Option<String>,
}

pub(crate) async fn show(
    State(api): State<Api>,
    visitor: Visitor,
    Query(query): Query<SearchQuery>,
) -> Result<Markup, UiError> {
    let name = query
        .name
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty());
    let prefix = query
        .prefix
        .as_deref()
        .is_some_and(|value| !value.is_empty());
    let after = query.after.as_deref().filter(|after| !after.is_empty());
    let page: Option<PackagesPage> = match name {
        Some(name) => {
            let uri = links::with_query(
                "/api/v1/packages",
                &[
                    ("name", Some(name)),
                    ("prefix", prefix.then_some("true")),
                    ("limit", Some(PAGE_SIZE)),
                    ("after", after),
                ],
            );
            Some(api.get(&visitor, &uri).await?)
        }
        None => None,
    };
    let body = html! {
        form.search #package-search method="get" action="/ui/packages" role="search" {
            label for="package-name" { "Package name" }
            input #package-name type="search" name="name" value=[name] required;
            label {
                input #package-prefix type="checkbox" name="prefix" value="true" checked[prefix];
                " names starting with it"
            }
            button type="submit" { "Find the environments" }
        }
        p.hint { "Searches the current builds of the environments you may see." }
        @if let Some(page) = &page {
            @if page.packages.is_empty() {
                p #no-match { "No environment you may see holds " code { (page.name) } @if page.prefix { " (or a package starting with it)" } "." }
            } @else {
                table.package-matches {
                    caption.visually-hidden { "Environments holding " (page.name) }
                    thead {
                        tr {
                            th scope="col" { "Package" }
                            th scope="col" { "Version" }
                            th scope="col" { "Build" }
                            th scope="col" { "Platform" }
                            th scope="col" { "Environment" }
                            th scope="col" { "Current build" }
                        }
                    }
                    tbody {
                        @for found in &page.packages {
                            tr data-environment={ (found.namespace) "/" (found.environment) } data-platform=(found.platform) {
                                th scope="row" { (found.name) }
                                td { (found.version) }
                                td { code { (found.build) } }
                                td { (found.platform) }
                                td { a href=(links::environment(&found.namespace, &found.environment)) { (found.namespace) "/" (found.environment) } }
                                td { a href=(links::build(&found.build_id)) { code { (layout::short_id(&found.build_id)) } } }
                            }
                        }
                    }
                }
            }
            @if after.is_some() || page.next_after.is_some() {
                nav.pager aria-label="Pages" {
                    @if after.is_some() {
                        a href=(links::package_search(Some(&page.name), page.prefix)) { "First page" }
                    }
                    @if let Some(next) = &page.next_after {
                        a rel="next" href=(links::with_query("/ui/packages", &[("name", Some(&page.name)), ("prefix", page.prefix.then_some("true")), ("after", Some(next))])) { "More environments →" }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        "Package search",
        Chrome::visitor(&visitor, Section::Packages),
        &[],
        body,
    ))
}
