//! Namespaces: creating, listing, visibility, deleting.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/namespaces`: a namespace to create (server admins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNamespace {
    /// The namespace's name, e.g. `team-ml`.
    pub name: String,
    /// Whether anyone, without a token, may read it.
    #[serde(default)]
    pub public_read: bool,
}

/// A namespace just created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamespaceCreated {
    pub name: String,
    pub public_read: bool,
    /// Where it lives in the API.
    pub url: String,
}

/// One namespace of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamespaceSummary {
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub public_read: bool,
}

/// A page of the namespaces the caller may see, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamespacesPage {
    pub namespaces: Vec<NamespaceSummary>,
    /// The `?after=` of the next page; null on the last.
    pub next_after: Option<String>,
}

/// A namespace, its visibility and its environments' names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamespaceView {
    pub name: String,
    pub public_read: bool,
    pub environments: Vec<String>,
}

/// `PUT …/visibility`: whether anonymous readers may see the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Visibility {
    pub public_read: bool,
}

/// A namespace's visibility, as set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VisibilitySet {
    pub name: String,
    pub public_read: bool,
}

/// A namespace deleted: hidden at once, cleaned by garbage collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamespaceDeleted {
    pub namespace: String,
    pub deleted: bool,
    /// Environments hidden with it.
    pub environments: u64,
    /// Builds hidden with it.
    pub builds: u64,
    /// Queued builds cancelled and running builds asked to stop.
    pub stopped_builds: u64,
    /// What garbage collection removes later.
    pub cleanup: String,
}
