//! Paging of the listings that grow without bound (namespaces,
//! environments, builds): a cursor, a page size and a search term.

use serde::Deserialize;

/// `?limit=&after=&q=` of the listings that grow without bound: at most
/// `limit` entries after the cursor `after` (a previous page's
/// `next_after`), narrowed to those containing `q`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
    q: Option<String>,
}

impl ListQuery {
    /// Entries per page unless `?limit=` says otherwise, and the most it may say.
    const DEFAULT_LIMIT: usize = 100;
    const MAX_LIMIT: usize = 1000;

    pub(crate) fn limit(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT)
    }

    /// The cursor; empty: from the start.
    pub(crate) fn after(&self) -> &str {
        self.after.as_deref().unwrap_or_default()
    }

    pub(crate) fn search(&self) -> Option<&str> {
        self.q
            .as_deref()
            .map(str::trim)
            .filter(|search| !search.is_empty())
    }
}
