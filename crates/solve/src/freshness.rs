//! When may an earlier read of a channel's repodata still be trusted?
//!
//! A `file://` channel is checked on every solve by the size, modification
//! time and inode of its `repodata.json` files: a `stat` costs microseconds,
//! and a rewritten channel is seen at once. A remote channel is trusted for a
//! time-to-live and then revalidated by the gateway (a conditional request),
//! as conda does with `local_repodata_ttl`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rattler_conda_types::Subdir;
use url::Url;

/// What a read of one channel's repodata depended on. Two equal revisions mean
/// the repodata has not changed in between.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Revision {
    /// The files of a local channel, for the subdirs that were asked for.
    Local(Vec<Option<FileStamp>>),
    /// A remote channel: bumped each time its time-to-live runs out.
    Remote(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileStamp {
    len: u64,
    modified_ns: u128,
    inode: u64,
}

impl FileStamp {
    fn of(path: &std::path::Path) -> Option<Self> {
        let metadata = fs_err::metadata(path).ok()?;
        let modified_ns = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_nanos());
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            len: metadata.len(),
            modified_ns,
            inode,
        })
    }
}

struct Seen {
    revision: Revision,
    checked_at: Instant,
}

/// The revision of every channel as last seen, per (channel, subdirs).
pub(crate) struct Freshness {
    remote_ttl: Duration,
    seen: Mutex<HashMap<(Url, Vec<Subdir>), Seen>>,
}

/// The outcome of checking one channel.
pub(crate) struct Checked {
    pub revision: Revision,
    /// The channel changed (or its time-to-live ran out) since it was last
    /// read: whatever the gateway holds in memory for it is stale.
    pub stale: bool,
}

impl Freshness {
    pub fn new(remote_ttl: Duration) -> Self {
        Self {
            remote_ttl,
            seen: Mutex::default(),
        }
    }

    pub fn check(&self, channel: &Url, subdirs: &[Subdir]) -> Checked {
        let now = Instant::now();
        let key = (channel.clone(), subdirs.to_vec());
        let local = local_revision(channel, subdirs);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match (seen.get_mut(&key), local) {
            (Some(previous), Some(revision)) => {
                let stale = previous.revision != revision;
                previous.revision = revision.clone();
                previous.checked_at = now;
                Checked { revision, stale }
            }
            (Some(previous), None) => {
                if now.duration_since(previous.checked_at) < self.remote_ttl {
                    return Checked {
                        revision: previous.revision.clone(),
                        stale: false,
                    };
                }
                let generation = match previous.revision {
                    Revision::Remote(generation) => generation + 1,
                    Revision::Local(_) => 0,
                };
                previous.revision = Revision::Remote(generation);
                previous.checked_at = now;
                Checked {
                    revision: previous.revision.clone(),
                    stale: true,
                }
            }
            (None, local) => {
                let revision = local.unwrap_or(Revision::Remote(0));
                seen.insert(
                    key,
                    Seen {
                        revision: revision.clone(),
                        checked_at: now,
                    },
                );
                // Never read before by this solver: an in-memory copy can
                // only have come from another solver sharing the gateway.
                Checked {
                    revision,
                    stale: true,
                }
            }
        }
    }
}

fn local_revision(channel: &Url, subdirs: &[Subdir]) -> Option<Revision> {
    if channel.scheme() != "file" {
        return None;
    }
    let root = channel.to_file_path().ok()?;
    Some(Revision::Local(
        subdirs
            .iter()
            .map(|subdir| FileStamp::of(&root.join(subdir.as_str()).join("repodata.json")))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_local_channel_is_stale_and_an_untouched_one_is_not() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let noarch = dir.path().join("noarch");
        fs_err::create_dir_all(&noarch).expect("a subdir");
        fs_err::write(noarch.join("repodata.json"), "{}").expect("repodata");
        let url = Url::from_directory_path(dir.path()).expect("a file URL");
        let freshness = Freshness::new(Duration::from_secs(3600));
        let subdirs = [Subdir::NoArch];

        let first = freshness.check(&url, &subdirs);
        let again = freshness.check(&url, &subdirs);
        assert!(!again.stale);
        assert_eq!(first.revision, again.revision);

        fs_err::write(noarch.join("repodata.json"), "{\"packages\":{}}").expect("rewritten");
        let rewritten = freshness.check(&url, &subdirs);
        assert!(rewritten.stale);
        assert_ne!(rewritten.revision, again.revision);
    }

    #[test]
    fn a_remote_channel_is_trusted_for_its_time_to_live_only() {
        let url = Url::parse("https://conda.example/channel/").expect("a URL");
        let subdirs = [Subdir::Linux64, Subdir::NoArch];

        let trusting = Freshness::new(Duration::from_secs(3600));
        let first = trusting.check(&url, &subdirs);
        let again = trusting.check(&url, &subdirs);
        assert!(!again.stale);
        assert_eq!(first.revision, again.revision);

        let distrusting = Freshness::new(Duration::ZERO);
        let first = distrusting.check(&url, &subdirs);
        let again = distrusting.check(&url, &subdirs);
        assert!(again.stale);
        assert_ne!(first.revision, again.revision);
    }
}
