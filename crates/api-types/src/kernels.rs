//! Jupyter kernels: the environments a student may pick.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One kernel, as `envstore kernels sync` turns it into a kernelspec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Kernel {
    /// The kernelspec's directory name: `envstore-<namespace>-<name>-<hash>`.
    pub id: String,
    pub display_name: String,
    pub namespace: String,
    pub environment: String,
    pub build_id: String,
    pub lock_hash: String,
    /// The environment's path on the server.
    pub prefix: String,
    pub language: String,
    /// The environment's `variables:` the server policy allows: a kernel is
    /// started without activation, so its kernelspec sets them.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A page of the kernels the caller may see, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KernelsPage {
    pub kernels: Vec<Kernel>,
    /// The `?after=` (`namespace/name`) of the next page; null on the last.
    pub next_after: Option<String>,
}
