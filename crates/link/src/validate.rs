//! Checks of a package before anything of it is linked, and of a prefix
//! before it is marked complete: the package's metadata is the record that
//! was solved for, its paths stay inside the prefix, every member really is
//! what `paths.json` declares, and no link leads out of the package or the
//! prefix, however links are chained.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rattler_conda_types::PackageRecord;
use rattler_conda_types::package::{IndexJson, PackageFile, PathType, PathsJson};
use rattler_digest::{Sha256, Sha256Hash};

/// Symlinks followed at most while resolving one path, like the kernel.
const MAX_LINK_HOPS: usize = 40;

/// Mode bits no file in the cache or a prefix keeps: setuid, setgid,
/// sticky, and write access for anyone but the owner.
pub(crate) const DROPPED_MODE_BITS: u32 = 0o7022;

/// Why a package (or a prefix) was refused.
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
    #[error("its member '{path}' is a {found}, but paths.json declares it a {declared}")]
    WrongType {
        path: String,
        declared: &'static str,
        found: &'static str,
    },
    #[error("its entry '{path}' passes through the symlink '{link}'")]
    ThroughLink { path: String, link: String },
    #[error(
        "its member '{0}' is a special file (device, fifo or socket), which no package may ship"
    )]
    SpecialFile(String),
    #[error("its member '{path}' is a hard link to '{target}', which is not a file of the package")]
    BadHardLink { path: String, target: String },
    #[error("its member '{0}' appears twice")]
    Duplicate(String),
    #[error("'{0}' has the setuid or setgid bit, which no prefix may hold")]
    Setuid(String),
    #[error("it extracts to more than {limit} bytes, the limit of extracted bytes per package")]
    TooLarge { limit: u64 },
    #[error("it has more than {limit} members, the limit of files per package")]
    TooManyFiles { limit: u64 },
    #[error(
        "it expands more than {limit}:1 ({extracted} bytes from a {archive}-byte archive): \
         a decompression bomb, over the limit of the compression ratio"
    )]
    Bomb {
        limit: u64,
        extracted: u64,
        archive: u64,
    },
    #[error("its archive has {algorithm} {found}, but its record pins {expected} (hash mismatch)")]
    ArchiveChecksum {
        algorithm: &'static str,
        expected: String,
        found: String,
    },
    #[error("its archive is larger than {limit} bytes")]
    ArchiveTooLarge { limit: u64 },
    #[error("its archive could not be extracted: {0}")]
    Corrupt(String),
    #[error("{0}")]
    CrossPackage(String),
}

/// What a member of a package really is.
fn kind_name(kind: &std::fs::FileType) -> &'static str {
    if kind.is_symlink() {
        "symlink"
    } else if kind.is_dir() {
        "directory"
    } else if kind.is_file() {
        "file"
    } else {
        "special file"
    }
}

fn declared_name(path_type: PathType) -> &'static str {
    match path_type {
        PathType::HardLink => "file",
        PathType::SoftLink => "symlink",
        PathType::Directory => "directory",
    }
}

/// Validates the extracted package in `dir` against `record`, reading every
/// file back to check its sha256.
pub fn validate_package(dir: &Path, record: &PackageRecord) -> Result<(), Rejection> {
    validate_extracted(dir, record, &HashMap::new())
}

/// [`validate_package`] with the sha256 of the files extraction wrote,
/// computed as it wrote them: a file found there is not read again.
pub(crate) fn validate_extracted(
    dir: &Path,
    record: &PackageRecord,
    written: &HashMap<PathBuf, Sha256Hash>,
) -> Result<(), Rejection> {
    let index = IndexJson::from_package_directory(dir)
        .map_err(|error| Rejection::Unreadable(error.to_string()))?;
    let describe = |name: &str, version: &str, build: &str| format!("{name} {version} {build}");
    let expected = describe(
        record.name.as_normalized(),
        &record.version.to_string(),
        record.build.as_ref(),
    );
    let found = describe(
        index.name.as_normalized(),
        &index.version.to_string(),
        index.build.as_ref(),
    );
    if expected != found {
        return Err(Rejection::WrongPackage { expected, found });
    }
    let paths = PathsJson::from_package_directory_with_deprecated_fallback(dir)
        .map_err(|error| Rejection::Unreadable(error.to_string()))?;
    let declared_links: HashSet<&Path> = paths
        .paths
        .iter()
        .filter(|entry| entry.path_type == PathType::SoftLink)
        .map(|entry| entry.relative_path.as_path())
        .collect();
    // Folders already found to be no link, declared or on disk: most
    // entries share them, and nothing changes the tree while it is checked.
    let mut no_link: HashSet<&Path> = HashSet::new();
    for entry in &paths.paths {
        let relative = &entry.relative_path;
        let shown = relative.display().to_string();
        if !is_plain_relative(relative) {
            return Err(Rejection::EscapingPath(shown));
        }
        // No entry may be reached through a link, declared or not.
        for ancestor in relative
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
        {
            if no_link.contains(ancestor) {
                continue;
            }
            let is_link = declared_links.contains(ancestor)
                || fs_err::symlink_metadata(dir.join(ancestor))
                    .is_ok_and(|meta| meta.file_type().is_symlink());
            if is_link {
                return Err(Rejection::ThroughLink {
                    path: shown,
                    link: ancestor.display().to_string(),
                });
            }
            no_link.insert(ancestor);
        }
        let file = dir.join(relative);
        let meta = fs_err::symlink_metadata(&file)
            .map_err(|error| Rejection::Unreadable(format!("{shown}: {error}")))?;
        let kind = meta.file_type();
        let matches = match entry.path_type {
            PathType::HardLink => kind.is_file(),
            PathType::SoftLink => kind.is_symlink(),
            PathType::Directory => kind.is_dir(),
        };
        if !matches {
            return Err(Rejection::WrongType {
                path: shown,
                declared: declared_name(entry.path_type),
                found: kind_name(&kind),
            });
        }
        match entry.path_type {
            PathType::SoftLink => {
                let target = fs_err::read_link(&file)
                    .map_err(|error| Rejection::Unreadable(format!("{shown}: {error}")))?;
                if !link_stays_inside(relative, &target) || !resolves_inside(dir, relative) {
                    return Err(Rejection::EscapingLink {
                        path: shown,
                        target: target.display().to_string(),
                    });
                }
            }
            PathType::HardLink => {
                if let Some(expected) = entry.sha256 {
                    let actual = match written.get(relative.as_path()) {
                        Some(digest) => *digest,
                        None => rattler_digest::compute_file_digest::<Sha256>(&file)
                            .map_err(|error| Rejection::Unreadable(format!("{shown}: {error}")))?,
                    };
                    if actual != expected {
                        return Err(Rejection::WrongChecksum(shown));
                    }
                }
            }
            PathType::Directory => {}
        }
    }
    // Undeclared members too: no link out, nothing special.
    check_tree(dir, TreeKind::Package).map(|_| ())
}

/// What [`check_tree`] walks: a package in the cache, or a prefix, which
/// must also be usable by everyone who runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeKind {
    Package,
    Prefix,
}

/// Walks `root` without following links and refuses any symlink that does
/// not resolve inside it, any special file, and (in a prefix) any setuid or
/// setgid file; bits that make a file or folder writable for others are
/// dropped. In a prefix, every folder and file also becomes readable (and
/// every executable runnable) by everyone, whatever the umask it was made
/// under, and `conda-meta/` gets exactly 0755 / 0644. Returns how many
/// world- or group-writable entries it fixed.
pub(crate) fn check_tree(root: &Path, tree: TreeKind) -> Result<usize, Rejection> {
    let refuse_setuid = tree == TreeKind::Prefix;
    if tree == TreeKind::Prefix {
        widen(root, Path::new(""), true)?;
    }
    let mut fixed = 0;
    let mut pending = vec![root.to_owned()];
    while let Some(folder) = pending.pop() {
        let entries = fs_err::read_dir(&folder)
            .map_err(|error| Rejection::Unreadable(format!("{}: {error}", folder.display())))?;
        for entry in entries {
            let entry = entry
                .map_err(|error| Rejection::Unreadable(format!("{}: {error}", folder.display())))?;
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap_or(&path).to_owned();
            let shown = relative.display().to_string();
            let meta = fs_err::symlink_metadata(&path)
                .map_err(|error| Rejection::Unreadable(format!("{shown}: {error}")))?;
            let kind = meta.file_type();
            if kind.is_symlink() {
                if !resolves_inside(root, &relative) {
                    let target = fs_err::read_link(&path)
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    return Err(Rejection::EscapingLink {
                        path: shown,
                        target,
                    });
                }
                continue;
            }
            if kind.is_block_device()
                || kind.is_char_device()
                || kind.is_fifo()
                || kind.is_socket()
                || !(kind.is_file() || kind.is_dir())
            {
                return Err(Rejection::SpecialFile(shown));
            }
            let mode = meta.permissions().mode();
            if refuse_setuid && mode & 0o6000 != 0 {
                return Err(Rejection::Setuid(shown));
            }
            if mode & DROPPED_MODE_BITS != 0 {
                fs_err::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(mode & 0o777 & !DROPPED_MODE_BITS),
                )
                .map_err(|error| Rejection::Unreadable(format!("{shown}: {error}")))?;
                fixed += 1;
            }
            if tree == TreeKind::Prefix {
                widen(&path, &relative, kind.is_dir())?;
            }
            if kind.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok(fixed)
}

/// Makes one entry of a prefix (not a symlink) readable by everyone, a
/// folder or executable also searchable/runnable; only adds bits, except in
/// `conda-meta/`, whose modes are exact (conda tools read it as any user).
fn widen(path: &Path, relative: &Path, is_dir: bool) -> Result<(), Rejection> {
    let unreadable =
        |error: std::io::Error| Rejection::Unreadable(format!("{}: {error}", relative.display()));
    let mode = fs_err::metadata(path)
        .map_err(unreadable)?
        .permissions()
        .mode()
        & 0o7777;
    let in_meta =
        relative == Path::new("conda-meta") || relative.parent() == Some(Path::new("conda-meta"));
    let wanted = match (in_meta, is_dir) {
        (true, true) => crate::conda_meta::META_DIR_MODE,
        (true, false) => crate::conda_meta::META_FILE_MODE,
        (false, true) => mode | 0o755,
        (false, false) if mode & 0o111 != 0 => mode | 0o555,
        (false, false) => mode | 0o644,
    };
    if wanted != mode {
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(wanted))
            .map_err(unreadable)?;
    }
    Ok(())
}

/// Only normal components: no root, no `..`, no `.`.
pub(crate) fn is_plain_relative(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
}

/// Whether a link at `path` (relative to the prefix) to `target` resolves
/// inside the prefix, without looking at what exists on disk.
pub(crate) fn link_stays_inside(path: &Path, target: &Path) -> bool {
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

/// Whether `relative` under `root` stays inside `root` when resolved the way
/// the kernel does: following every symlink on the way (chains included),
/// `..` applied to where a link led. Parts that do not exist yet are taken
/// as they are written. An absolute link target counts as inside only when
/// it names a path under `root`.
pub(crate) fn resolves_inside(root: &Path, relative: &Path) -> bool {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut queue: VecDeque<OsString> = VecDeque::new();
    for component in relative.components() {
        match component {
            Component::Normal(name) => queue.push_back(name.to_owned()),
            Component::ParentDir => queue.push_back(OsString::from("..")),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    let mut hops = 0;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            if resolved.pop().is_none() {
                return false;
            }
            continue;
        }
        resolved.push(name);
        let here: PathBuf = resolved
            .iter()
            .fold(root.to_owned(), |path, part| path.join(part));
        let Ok(meta) = fs_err::symlink_metadata(&here) else {
            continue;
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        hops += 1;
        if hops > MAX_LINK_HOPS {
            return false;
        }
        let Ok(target) = fs_err::read_link(&here) else {
            return false;
        };
        resolved.pop();
        let target = if target.is_absolute() {
            match target.strip_prefix(root) {
                Ok(inside) => {
                    resolved.clear();
                    inside.to_owned()
                }
                Err(_) => return false,
            }
        } else {
            target
        };
        let mut parts = Vec::new();
        for component in target.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_owned()),
                Component::ParentDir => parts.push(OsString::from("..")),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return false,
            }
        }
        for part in parts.into_iter().rev() {
            queue.push_front(part);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_inside_the_prefix_are_fine() {
        assert!(link_stays_inside(
            Path::new("lib/libz.so"),
            Path::new("libz.so.1.3.1")
        ));
        assert!(link_stays_inside(
            Path::new("bin/python3"),
            Path::new("../lib/python")
        ));
        assert!(!link_stays_inside(
            Path::new("lib/evil"),
            Path::new("../../etc/passwd")
        ));
        assert!(!link_stays_inside(
            Path::new("evil"),
            Path::new("/etc/passwd")
        ));
        assert!(!link_stays_inside(
            Path::new("a/b"),
            Path::new("c/../../../x")
        ));
    }

    #[test]
    fn only_plain_relative_paths() {
        assert!(is_plain_relative(Path::new("lib/python3.11/site.py")));
        for path in ["/tmp/x", "../x", "a/../../x", "./x", ""] {
            assert!(!is_plain_relative(Path::new(path)), "{path}");
        }
    }

    #[test]
    fn chained_links_are_resolved_where_they_lead() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("prefix");
        fs_err::create_dir_all(root.join("lib/deep")).unwrap();
        // Each link alone looks harmless: `up` stays one level below the root.
        symlink("deep/..", root.join("lib/up")).unwrap();
        symlink("../lib/deep", root.join("lib/deep/back")).unwrap();
        assert!(resolves_inside(&root, Path::new("lib/up")));
        assert!(resolves_inside(&root, Path::new("lib/deep/back")));
        // `hop` sits at depth 1 and climbs two: lexically it would be caught,
        // but `deep/d` -> `..` -> `..` needs the physical walk.
        symlink("..", root.join("lib/deep/d")).unwrap();
        symlink("deep/d/../..", root.join("lib/hop")).unwrap();
        assert!(!resolves_inside(&root, Path::new("lib/hop")));
        symlink(dir.path(), root.join("abs")).unwrap();
        assert!(!resolves_inside(&root, Path::new("abs")));
        symlink(root.join("lib"), root.join("abs-inside")).unwrap();
        assert!(resolves_inside(&root, Path::new("abs-inside")));
        symlink("loop", root.join("loop")).unwrap();
        assert!(!resolves_inside(&root, Path::new("loop")));
    }

    #[test]
    fn a_tree_with_an_escaping_link_or_a_fifo_is_refused_and_writable_bits_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("prefix");
        fs_err::create_dir_all(root.join("share")).unwrap();
        fs_err::write(root.join("share/open"), "x").unwrap();
        fs_err::set_permissions(
            root.join("share/open"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        assert_eq!(check_tree(&root, TreeKind::Prefix).unwrap(), 1);
        let mode = fs_err::metadata(root.join("share/open"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        symlink("../../outside", root.join("share/out")).unwrap();
        assert!(matches!(
            check_tree(&root, TreeKind::Prefix),
            Err(Rejection::EscapingLink { .. })
        ));
        fs_err::remove_file(root.join("share/out")).unwrap();
        fs_err::write(root.join("share/suid"), "x").unwrap();
        fs_err::set_permissions(
            root.join("share/suid"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        assert!(matches!(
            check_tree(&root, TreeKind::Prefix),
            Err(Rejection::Setuid(_))
        ));
    }

    #[test]
    fn a_prefix_made_under_a_strict_umask_is_opened_to_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("prefix");
        fs_err::create_dir_all(root.join("conda-meta")).unwrap();
        fs_err::create_dir_all(root.join("bin")).unwrap();
        let set = |relative: &str, mode: u32| {
            fs_err::set_permissions(root.join(relative), std::fs::Permissions::from_mode(mode))
                .unwrap();
        };
        fs_err::write(root.join("bin/tool"), "#!/bin/sh\n").unwrap();
        fs_err::write(root.join("bin/data"), "x").unwrap();
        fs_err::write(root.join("conda-meta/pkg-1-0.json"), "{}").unwrap();
        set("bin/tool", 0o700);
        set("bin/data", 0o600);
        set("conda-meta/pkg-1-0.json", 0o664);
        set("conda-meta", 0o700);
        set("bin", 0o700);
        set("", 0o700);
        check_tree(&root, TreeKind::Prefix).unwrap();
        let mode = |relative: &str| {
            fs_err::metadata(root.join(relative))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode(""), 0o755);
        assert_eq!(mode("bin"), 0o755);
        assert_eq!(mode("bin/tool"), 0o755);
        assert_eq!(mode("bin/data"), 0o644);
        assert_eq!(mode("conda-meta"), 0o755);
        assert_eq!(mode("conda-meta/pkg-1-0.json"), 0o644);

        // A package in the cache is left as it was made.
        set("bin/data", 0o600);
        check_tree(&root, TreeKind::Package).unwrap();
        assert_eq!(mode("bin/data"), 0o600);
    }
}
