//! What every prefix the suite builds must be, checked when a test server
//! stops: no file anyone may write, and no symlink that leads out of it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Panics naming every entry of a prefix under `data_dir/prefixes` that is
/// world-writable or a symlink resolving outside its prefix.
pub fn check_prefixes(data_dir: &Path) {
    let Ok(prefixes) = fs_err::read_dir(data_dir.join("prefixes")) else {
        return;
    };
    let mut problems = Vec::new();
    for prefix in prefixes.flatten() {
        let root = prefix.path();
        if !prefix.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let canonical_root = fs_err::canonicalize(&root).unwrap_or_else(|_| root.clone());
        let mut pending = vec![root.clone()];
        while let Some(folder) = pending.pop() {
            for entry in fs_err::read_dir(&folder).into_iter().flatten().flatten() {
                let path = entry.path();
                let Ok(meta) = fs_err::symlink_metadata(&path) else {
                    continue;
                };
                if meta.file_type().is_symlink() {
                    if !link_resolves_inside(&path, &canonical_root) {
                        problems.push(format!("{} leads out of its prefix", path.display()));
                    }
                    continue;
                }
                if meta.permissions().mode() & 0o002 != 0 {
                    problems.push(format!("{} is world-writable", path.display()));
                }
                if meta.is_dir() {
                    pending.push(path);
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "unsafe prefixes:\n{}",
        problems.join("\n")
    );
}

/// Where the link leads if it exists, or (dangling) where its target says.
fn link_resolves_inside(link: &Path, root: &Path) -> bool {
    if let Ok(resolved) = fs_err::canonicalize(link) {
        return resolved.starts_with(root);
    }
    let Ok(target) = fs_err::read_link(link) else {
        return false;
    };
    let parent = link
        .parent()
        .map(|p| fs_err::canonicalize(p).unwrap_or_else(|_| p.to_owned()));
    let mut resolved = PathBuf::new();
    for component in parent.unwrap_or_default().join(target).components() {
        match component {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::CurDir => {}
            other => resolved.push(other),
        }
    }
    resolved.starts_with(root)
}
