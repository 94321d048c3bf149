//! File locks on package cache entries, across processes.
//!
//! Several processes (workers, the API, `envstore gc`) share one package
//! cache. Each entry `<cache>/<name>-<version>-<build>` is guarded by an
//! advisory `flock` on `<cache>/<name>-<version>-<build>.lock`: rattler's own
//! metadata file beside the entry (older rattler releases locked that very
//! file per entry; 0.12 only reads and writes it, which a `flock` does not
//! disturb). Exclusive while the gate downloads, extracts, validates or
//! removes the entry, or while `envstore gc` removes it; shared while a build
//! checks it and links from it. The kernel drops the locks of a process that
//! dies, so a killed worker never leaves an entry locked.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a build waits for an entry another process holds before it
/// gives up (a build linking a large prefix holds its entries this long at
/// most).
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(30 * 60);
/// How often a waiting build tries the lock again.
pub(crate) const POLL_MIN: Duration = Duration::from_millis(20);
pub(crate) const POLL_MAX: Duration = Duration::from_millis(500);

/// Shared (reading, linking) or exclusive (writing, removing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A held lock on one cache entry; released when dropped.
#[derive(Debug)]
pub struct EntryLock {
    file: std::fs::File,
    path: PathBuf,
}

impl EntryLock {
    /// Records that the entry was just used: `envstore gc` removes the
    /// entries used longest ago first.
    pub fn touch(&self) {
        let _ = self.file.set_modified(SystemTime::now());
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file of the cache entry at `entry`: `<entry>.lock`.
pub fn lock_path(entry: &Path) -> PathBuf {
    let mut path = entry.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

/// Takes the lock of `entry` if no other holder conflicts; `None` when busy.
pub fn try_lock_entry(entry: &Path, mode: LockMode) -> std::io::Result<Option<EntryLock>> {
    use std::os::unix::fs::MetadataExt;
    let path = lock_path(entry);
    loop {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        let taken = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match taken {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(error)) => return Err(error),
        }
        // `envstore gc` removes the lock file of an entry it removed, while
        // holding it: a lock taken on that old file guards nothing.
        let held = file.metadata()?;
        match fs_err::metadata(&path) {
            Ok(current) if current.ino() == held.ino() && current.dev() == held.dev() => {
                return Ok(Some(EntryLock {
                    file: file.into_file(),
                    path,
                }));
            }
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        }
    }
}

/// Why an entry lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum EntryLockError {
    #[error("failed to lock the package cache entry '{}'", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the package cache entry '{}' stayed in use by another process for {} minutes; try the build again", path.display(), waited.as_secs() / 60)]
    Busy { path: PathBuf, waited: Duration },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("pkg-1.0-0");
        let first = try_lock_entry(&entry, LockMode::Shared).unwrap().unwrap();
        let second = try_lock_entry(&entry, LockMode::Shared).unwrap().unwrap();
        assert!(
            try_lock_entry(&entry, LockMode::Exclusive)
                .unwrap()
                .is_none()
        );
        drop((first, second));
        let exclusive = try_lock_entry(&entry, LockMode::Exclusive)
            .unwrap()
            .unwrap();
        assert!(try_lock_entry(&entry, LockMode::Shared).unwrap().is_none());
        assert_eq!(exclusive.path(), dir.path().join("pkg-1.0-0.lock"));
    }

    #[test]
    fn a_lock_on_a_removed_lock_file_is_not_taken_for_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("pkg-1.0-0");
        let gc = try_lock_entry(&entry, LockMode::Exclusive)
            .unwrap()
            .unwrap();
        fs_err::remove_file(lock_path(&entry)).unwrap();
        // A new lock file: the holder of the removed one does not block it,
        // and a lock on it is held for real.
        let build = try_lock_entry(&entry, LockMode::Shared).unwrap().unwrap();
        drop(gc);
        assert!(
            try_lock_entry(&entry, LockMode::Exclusive)
                .unwrap()
                .is_none()
        );
        drop(build);
    }
}
