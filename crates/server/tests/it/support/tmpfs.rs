//! A small tmpfs, to fill a data folder for real ("No space left on
//! device") and give the space back without restarting anything.
//! Mounting needs root or CAP_SYS_ADMIN: without it the test fails and
//! says so, rather than passing without having tried.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a temporary folder; unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` (rounded up to pages by the kernel).
    pub fn mount(bytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0755"),
                "tmpfs",
            ],
            dir.path(),
        );
        Self { dir, mounted: true }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A folder to give a process as its data folder (the mount point itself
    /// is the temporary folder, removed on drop).
    pub fn subdir(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        fs_err::create_dir_all(&path).expect("a folder on the tmpfs");
        path
    }

    /// Grows (or shrinks) the tmpfs to `bytes`, keeping what it holds.
    pub fn resize(&self, bytes: u64) {
        mount(&["-o", &format!("remount,size={bytes}")], self.path());
    }

    /// Free bytes, as `statvfs` (through `df`) sees them.
    pub fn available(&self) -> u64 {
        let output = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(self.path())
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .nth(1)
            .and_then(|line| line.trim().parse().ok())
            .expect("df prints the free bytes")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            // Lazy: a process of a failed test may still hold a file there.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .output();
        }
    }
}

fn mount(args: &[&str], target: &Path) {
    let output = Command::new("mount")
        .args(args)
        .arg(target)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "`mount` does not run ({error}); this test needs mount(8), root or CAP_SYS_ADMIN"
            )
        });
    assert!(
        output.status.success(),
        "mount {} {} failed: {}this test mounts a small tmpfs to fill a disk for real, and needs root or \
         CAP_SYS_ADMIN (in a container: --cap-add SYS_ADMIN or --privileged)",
        args.join(" "),
        target.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
