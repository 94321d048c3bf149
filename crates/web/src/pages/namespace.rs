//! The environments of a namespace; its members, visibility and policy are
//! on its settings page (`settings`).

use axum::extract::{Path, Query, State};
use maud::{Markup, html};

use envstore_api_types::{EnvironmentsPage, Role};
use serde::Deserialize;

use crate::api::Api;
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::pages::ListQuery;
use crate::roles;
use crate::session::Visitor;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct NamespaceQuery {
    #[serde(flatten)]
    list: ListQuery,
    /// What was just done here, to confirm it.
    notice: Option<String>,
}

pub(crate) async fn show(
    State(api): State<Api>,
    visitor: Visitor,
    Path(namespace): Path<String>,
    Query(NamespaceQuery {
        list: query,
        notice,
    }): Query<NamespaceQuery>,
) -> Result<Markup, UiError> {
    let path = format!("{}/environments", links::api::namespace(&namespace));
    let page: EnvironmentsPage = api.get(&visitor, &query.api_path(&path)).await?;
    let here = links::namespace(&namespace);
    let body = html! {
        @if notice.as_deref() == Some("deleted") {
            (layout::notice("The environment was deleted."))
        }
        p.actions {
            @if roles::may(visitor.session(), &namespace, Role::Developer) {
                a.button #new-environment href=(links::submit(&namespace)) { "New environment" } " "
            }
            a #settings-link href=(links::settings(&namespace)) { "Members, visibility and policy" }
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
