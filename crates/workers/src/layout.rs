//! Where a node keeps its prefixes, environment links and package cache.

use std::path::{Path, PathBuf};

/// Where prefixes and environment links live on this node.
#[derive(Debug, Clone)]
pub struct Layout {
    pub prefixes: PathBuf,
    pub environments: PathBuf,
    /// The shared package cache (rattler's layout), which `gc` cleans.
    pub package_cache: PathBuf,
    /// uv's index cache and the node's hash-checked wheels.
    pub pypi_cache: PathBuf,
}

impl Layout {
    pub fn under(data_dir: &Path) -> Self {
        Self {
            prefixes: data_dir.join("prefixes"),
            environments: data_dir.join("envs"),
            package_cache: data_dir.join("cache").join("pkgs"),
            pypi_cache: data_dir.join("cache").join("pypi"),
        }
    }

    pub fn environment_link(&self, namespace: &str, name: &str) -> PathBuf {
        self.environments.join(namespace).join(name)
    }

    /// A temporary file for packing a prefix, next to the prefixes so the
    /// upload reads it from the same disk (removed when dropped).
    pub(crate) fn pack_file(&self) -> std::io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".envstore-pack-")
            .suffix(".tar.zst")
            .tempfile_in(self.prefixes.as_path())
    }
}
