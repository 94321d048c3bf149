//! The environments of a namespace.

use axum::extract::{Path, Query, State};
use maud::{Markup, html};

use envstore_api_types::EnvironmentsPage;

use crate::api::Api;
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::pages::ListQuery;
use crate::session::Visitor;

pub(crate) async fn show(
    State(api): State<Api>,
    visitor: Visitor,
    Path(namespace): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Markup, UiError> {
    let path = format!("{}/environments", links::api::namespace(&namespace));
    let page: EnvironmentsPage = api.get(&visitor, &query.api_path(&path)).await?;
    let here = links::namespace(&namespace);
    let body = html! {
        @if visitor.session().is_some() {
            p.actions { a.button href=(links::submit(&namespace)) { "New environment" } }
        }
        (layout::search(&here, "Search environments by name", query.q()))
        @if page.environments.is_empty() {
            p { @if query.q().is_some() { "No environment matches this search." } @else { "This namespace has no environment yet." } }
        } @else {
            table {
                caption.visually-hidden { "Environments of " (namespace) }
                thead {
                    tr {
                        th scope="col" { "Environment" }
                        th scope="col" { "Current build" }
                        th scope="col" { "Latest build" }
                        th scope="col" { "Latest submitted" }
                    }
                }
                tbody {
                    @for environment in &page.environments {
                        tr {
                            th scope="row" { a href=(links::environment(&namespace, &environment.name)) { (environment.name) } }
                            td {
                                @match (&environment.current_build_id, environment.current_status) {
                                    (Some(id), Some(status)) => a href=(links::build(id)) { (layout::status(status)) },
                                    _ => "none yet",
                                }
                            }
                            td {
                                @match (&environment.latest_build_id, environment.latest_status) {
                                    (Some(id), Some(status)) => a href=(links::build(id)) { (layout::status(status)) },
                                    _ => "none",
                                }
                            }
                            td { (layout::time(environment.latest_created_at.unwrap_or(environment.created_at))) }
                        }
                    }
                }
            }
        }
        (layout::pager(&here, query.q(), query.after(), page.next_after.as_deref(), "More environments"))
    };
    let trail = [("Namespaces".to_owned(), links::namespaces())];
    Ok(layout::page(
        &namespace,
        Chrome::visitor(&visitor, Section::Namespaces),
        &trail,
        body,
    ))
}
