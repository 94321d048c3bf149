//! Checks of a freshly extracted package before anything of it is linked:
//! its metadata is the record that was solved for, its paths stay inside the
//! prefix, and its files are the ones `paths.json` lists.

use std::path::{Component, Path};

use rattler_conda_types::package::{IndexJson, PackageFile, PathType, PathsJson};
use rattler_conda_types::PackageRecord;
use rattler_digest::Sha256;

/// Why a package was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("its metadata could not be read: {0}")]
    Unreadable(String),
    #[error("its index.json describes {found}, not the {expected} that was solved for")]
    WrongPackage { expected: String, found: String },
    #[error("it installs '{0}', which is not a plain relative path inside the prefix")]
    EscapingPath(String),
    #[error("its link '{path}' points at '{target}', outside the prefix")]
    EscapingLink { path: String, target: String },
    #[error("its file '{0}' does not have the sha256 paths.json gives it")]
    WrongChecksum(String),
}

/// Validates the extracted package in `dir` against `record`.
pub fn validate_package(dir: &Path, record: &PackageRecord) -> Result<(), Rejection> {
    let index = IndexJson::from_package_directory(dir).map_err(|error| Rejection::Unreadable(error.to_string()))?;
    let describe = |name: &str, version: &str, build: &str| format!("{name} {version} {build}");
    let expected = describe(
        record.name.as_normalized(),
        &record.version.to_string(),
        record.build.as_ref(),
    );
    let found = describe(index.name.as_normalized(), &index.version.to_string(), index.build.as_ref());
    if expected != found {
        return Err(Rejection::WrongPackage { expected, found });
    }
    let paths = PathsJson::from_package_directory_with_deprecated_fallback(dir)
        .map_err(|error| Rejection::Unreadable(error.to_string()))?;
    for entry in &paths.paths {
        let relative = &entry.relative_path;
        let shown = relative.display().to_string();
        if !is_plain_relative(relative) {
            return Err(Rejection::EscapingPath(shown));
        }
        let file = dir.join(relative);
        match entry.path_type {
            PathType::SoftLink => {
                let target = std::fs::read_link(&file).map_err(|error| Rejection::Unreadable(format!("{shown}: {error}")))?;
                if !link_stays_inside(relative, &target) {
                    return Err(Rejection::EscapingLink {
                        path: shown,
                        target: target.display().to_string(),
                    });
                }
            }
            PathType::HardLink => {
                if let Some(expected) = entry.sha256 {
                    let actual = rattler_digest::compute_file_digest::<Sha256>(&file)
                        .map_err(|error| Rejection::Unreadable(format!("{shown}: {error}")))?;
                    if actual != expected {
                        return Err(Rejection::WrongChecksum(shown));
                    }
                }
            }
            PathType::Directory => {}
        }
    }
    Ok(())
}

/// Only normal components: no root, no `..`, no `.`.
fn is_plain_relative(path: &Path) -> bool {
    !path.as_os_str().is_empty() && path.components().all(|component| matches!(component, Component::Normal(_)))
}

/// Whether a link at `path` (relative to the prefix) to `target` resolves
/// inside the prefix, without looking at what exists on disk.
fn link_stays_inside(path: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth = path.components().count().saturating_sub(1) as isize;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_inside_the_prefix_are_fine() {
        assert!(link_stays_inside(Path::new("lib/libz.so"), Path::new("libz.so.1.3.1")));
        assert!(link_stays_inside(Path::new("bin/python3"), Path::new("../lib/python")));
        assert!(!link_stays_inside(Path::new("lib/evil"), Path::new("../../etc/passwd")));
        assert!(!link_stays_inside(Path::new("evil"), Path::new("/etc/passwd")));
        assert!(!link_stays_inside(Path::new("a/b"), Path::new("c/../../../x")));
    }

    #[test]
    fn only_plain_relative_paths() {
        assert!(is_plain_relative(Path::new("lib/python3.11/site.py")));
        for path in ["/tmp/x", "../x", "a/../../x", "./x", ""] {
            assert!(!is_plain_relative(Path::new(path)), "{path}");
        }
    }
}
