//! The namespaces the signed-in person may see; the public ones for
//! everyone else.

use axum::extract::{Query, State};
use maud::{Markup, html};

use envstore_api_types::NamespacesPage;

use crate::api::Api;
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::pages::ListQuery;
use crate::session::Visitor;

pub(crate) async fn show(
    State(api): State<Api>,
    visitor: Visitor,
    Query(query): Query<ListQuery>,
) -> Result<Markup, UiError> {
    let page: NamespacesPage = api
        .get(&visitor, &query.api_path("/api/v1/namespaces"))
        .await?;
    // Nobody signed in and nothing public to see: signing in is the way on.
    if visitor.session().is_none()
        && page.namespaces.is_empty()
        && query.q().is_none()
        && query.after().is_none()
    {
        return Err(UiError::SignIn {
            next: visitor.next(),
        });
    }
    let here = links::namespaces();
    let body = html! {
        (layout::search(&here, "Search namespaces by name", query.q()))
        @if page.namespaces.is_empty() {
            p { @if query.q().is_some() { "No namespace matches this search." } @else { "There is no namespace you may see yet." } }
        } @else {
            table {
                caption.visually-hidden { "Namespaces" }
                thead { tr { th scope="col" { "Namespace" } th scope="col" { "Readable by" } th scope="col" { "Created" } } }
                tbody {
                    @for namespace in &page.namespaces {
                        tr {
                            th scope="row" { a href=(links::namespace(&namespace.name)) { (namespace.name) } }
                            td { @if namespace.public_read { "anyone (public)" } @else { "members" } }
                            td { (layout::time(namespace.created_at)) }
                        }
                    }
                }
            }
        }
        (layout::pager(&here, query.q(), query.after(), page.next_after.as_deref(), "More namespaces"))
    };
    Ok(layout::page(
        "Namespaces",
        Chrome::visitor(&visitor, Section::Namespaces),
        &[],
        body,
    ))
}
