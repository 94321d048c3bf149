use std::path::Path;

/// Points `link` at `target` atomically: a temporary link beside it renamed
/// over it, so readers see the old prefix or the new one, never neither.
pub fn point_environment(link: &Path, target: &Path) -> std::io::Result<()> {
    let parent = link
        .parent()
        .ok_or_else(|| std::io::Error::other("an environment link needs a parent folder"))?;
    fs_err::create_dir_all(parent)?;
    let file_name = link
        .file_name()
        .ok_or_else(|| std::io::Error::other("an environment link needs a name"))?;
    // Unique per process and call: two threads pointing the same link never
    // share a temporary name.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let temporary = parent.join(format!(
        ".{}.{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    match fs_err::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    std::os::unix::fs::symlink(target, &temporary)?;
    fs_err::rename(&temporary, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_the_link_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a");
        let second = dir.path().join("b");
        fs_err::create_dir(&first).unwrap();
        fs_err::create_dir(&second).unwrap();
        let link = dir.path().join("envs/team/env");
        point_environment(&link, &first).unwrap();
        assert_eq!(fs_err::read_link(&link).unwrap(), first);
        point_environment(&link, &second).unwrap();
        assert_eq!(fs_err::read_link(&link).unwrap(), second);
        let leftovers: Vec<_> = fs_err::read_dir(link.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
