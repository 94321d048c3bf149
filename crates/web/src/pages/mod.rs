//! One module per page (or small family of pages).

pub(crate) mod admin;
pub(crate) mod build;
pub(crate) mod diff;
pub(crate) mod downloads;
pub(crate) mod environment;
pub(crate) mod namespace;
pub(crate) mod namespaces;
pub(crate) mod oidc;
pub(crate) mod packages;
pub(crate) mod search;
pub(crate) mod settings;
pub(crate) mod sign_in;
pub(crate) mod submit;
pub(crate) mod usage;

use serde::Deserialize;

use crate::links;

/// `?q=&after=` of a listing page: the search and the cursor, passed on to
/// the API's paged listing.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    q: Option<String>,
    after: Option<String>,
}

impl ListQuery {
    /// Rows per page: a laptop screen's worth.
    const PAGE_SIZE: &str = "25";

    pub(crate) fn q(&self) -> Option<&str> {
        self.q.as_deref().map(str::trim).filter(|q| !q.is_empty())
    }

    pub(crate) fn after(&self) -> Option<&str> {
        self.after.as_deref().filter(|after| !after.is_empty())
    }

    /// The API listing at `path` for this page.
    pub(crate) fn api_path(&self, path: &str) -> String {
        links::with_query(
            path,
            &[
                ("limit", Some(Self::PAGE_SIZE)),
                ("after", self.after()),
                ("q", self.q()),
            ],
        )
    }
}
