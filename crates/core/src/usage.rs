//! What each namespace uses, computed from facts the database reads, and
//! the quotas that bound it.
//!
//! - **Disk**: a prefix is measured once, when a node builds or materialises
//!   it, and recorded under its lock hash. A namespace's disk is the sum over
//!   the distinct prefixes its builds still hold (succeeded, neither deleted
//!   nor collected). A prefix held by several namespaces counts in full in
//!   each of them and is reported as shared; totals count it once.
//! - **Builds**: counts by status, and the running time (start to finish) of
//!   those that ran.
//! - **Downloads**: lockfile GETs are counted per namespace. By-hash
//!   artifact GETs name only a lock, which any number of namespaces may
//!   hold, so they are counted per lock and shown in every namespace holding
//!   it (once in totals), like shared prefixes.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::BuildStatus;

/// Limits on what a namespace may use; None: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Disk its prefixes may take; once reached, specs that need a new
    /// prefix are refused.
    #[serde(default)]
    pub max_disk_bytes: Option<i64>,
    /// Builds queued or running at once.
    #[serde(default)]
    pub max_concurrent_builds: Option<i64>,
}

impl Quota {
    /// This quota, with `default`'s limit wherever it sets none.
    pub fn or(self, default: Quota) -> Quota {
        Quota {
            max_disk_bytes: self.max_disk_bytes.or(default.max_disk_bytes),
            max_concurrent_builds: self.max_concurrent_builds.or(default.max_concurrent_builds),
        }
    }
}

/// Builds by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BuildCounts {
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl BuildCounts {
    fn add_status(&mut self, status: BuildStatus, builds: i64) {
        let slot = match status {
            BuildStatus::Queued => &mut self.queued,
            BuildStatus::Running => &mut self.running,
            BuildStatus::Succeeded => &mut self.succeeded,
            BuildStatus::Failed => &mut self.failed,
            BuildStatus::Cancelled => &mut self.cancelled,
        };
        *slot += builds;
    }

    fn add(&mut self, other: &BuildCounts) {
        self.queued += other.queued;
        self.running += other.running;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
    }
}

/// A prefix a namespace holds together with others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SharedPrefix {
    pub lock_hash: String,
    pub bytes: i64,
    /// How many other namespaces hold it. Only a count: the caller may not
    /// be allowed to know their names.
    pub other_namespaces: i64,
}

/// What one namespace uses, or several together. In a namespace's figures
/// a shared prefix or lock counts in full; in totals, once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageFigures {
    pub disk_bytes: i64,
    pub prefixes: i64,
    /// The part of `disk_bytes` in prefixes more than one namespace holds.
    pub shared_disk_bytes: i64,
    pub builds: BuildCounts,
    /// Running time of the builds, start to finish.
    pub build_millis: i64,
    pub lockfile_downloads: i64,
    /// By-hash downloads of the locks held.
    pub artifact_downloads: i64,
}

/// One namespace's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceUsage {
    pub namespace: String,
    #[serde(flatten)]
    pub figures: UsageFigures,
    pub shared: Vec<SharedPrefix>,
    /// Its own quota; the server's default applies where it sets none.
    pub quota: Quota,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// By name.
    pub namespaces: Vec<NamespaceUsage>,
    pub totals: UsageFigures,
}

/// A lock a namespace holds, with an amount (bytes, downloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    pub namespace: String,
    pub lock_hash: String,
    pub amount: i64,
}

/// Builds of one namespace in one status, and their running time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildGroup {
    pub namespace: String,
    pub status: BuildStatus,
    pub builds: i64,
    pub millis: i64,
}

/// A live namespace, as a usage report needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageNamespace {
    pub name: String,
    /// Whether anyone may read it.
    pub public_read: bool,
    /// Its own quota.
    pub quota: Quota,
}

/// What a usage report is computed from, as read from the database.
#[derive(Debug, Clone, Default)]
pub struct UsageFacts {
    /// Live namespaces, by name.
    pub namespaces: Vec<UsageNamespace>,
    /// Every measured prefix each namespace holds, with its size.
    pub prefixes: Vec<HeldLock>,
    pub builds: Vec<BuildGroup>,
    /// Lockfile downloads by namespace.
    pub lockfile_downloads: HashMap<String, i64>,
    /// Every lock each namespace holds a build of, with its downloads.
    pub lock_downloads: Vec<HeldLock>,
}

impl UsageFacts {
    /// The figures of the namespaces `include` accepts (given the name and
    /// whether it is public), and their totals. Sharer counts cover every
    /// namespace, included or not.
    pub fn report(&self, include: impl Fn(&str, bool) -> bool) -> UsageReport {
        let mut holders: HashMap<&str, i64> = HashMap::new();
        for held in &self.prefixes {
            *holders.entry(held.lock_hash.as_str()).or_default() += 1;
        }
        let prefixes = by_namespace(&self.prefixes);
        let lock_downloads = by_namespace(&self.lock_downloads);
        let mut builds: HashMap<&str, Vec<&BuildGroup>> = HashMap::new();
        for group in &self.builds {
            builds
                .entry(group.namespace.as_str())
                .or_default()
                .push(group);
        }
        let mut counted_prefixes: BTreeMap<&str, i64> = BTreeMap::new();
        let mut counted_locks: BTreeMap<&str, i64> = BTreeMap::new();
        let mut totals = UsageFigures::default();
        let mut namespaces = Vec::new();
        for namespace in &self.namespaces {
            let name = namespace.name.as_str();
            if !include(name, namespace.public_read) {
                continue;
            }
            let mut figures = UsageFigures {
                lockfile_downloads: self.lockfile_downloads.get(name).copied().unwrap_or(0),
                ..UsageFigures::default()
            };
            let mut shared = Vec::new();
            for held in prefixes.get(name).into_iter().flatten() {
                figures.disk_bytes += held.amount;
                figures.prefixes += 1;
                let sharers = holders.get(held.lock_hash.as_str()).copied().unwrap_or(1);
                if sharers > 1 {
                    figures.shared_disk_bytes += held.amount;
                    shared.push(SharedPrefix {
                        lock_hash: held.lock_hash.clone(),
                        bytes: held.amount,
                        other_namespaces: sharers - 1,
                    });
                }
                counted_prefixes.insert(&held.lock_hash, held.amount);
            }
            for group in builds.get(name).into_iter().flatten() {
                figures.builds.add_status(group.status, group.builds);
                figures.build_millis += group.millis;
            }
            for held in lock_downloads.get(name).into_iter().flatten() {
                figures.artifact_downloads += held.amount;
                counted_locks.insert(&held.lock_hash, held.amount);
            }
            totals.builds.add(&figures.builds);
            totals.build_millis += figures.build_millis;
            totals.lockfile_downloads += figures.lockfile_downloads;
            namespaces.push(NamespaceUsage {
                namespace: namespace.name.clone(),
                figures,
                shared,
                quota: namespace.quota,
            });
        }
        totals.disk_bytes = counted_prefixes.values().sum();
        totals.prefixes = i64::try_from(counted_prefixes.len()).unwrap_or(i64::MAX);
        totals.shared_disk_bytes = counted_prefixes
            .iter()
            .filter(|(lock, _)| holders.get(*lock).is_some_and(|sharers| *sharers > 1))
            .map(|(_, bytes)| bytes)
            .sum();
        totals.artifact_downloads = counted_locks.values().sum();
        UsageReport { namespaces, totals }
    }
}

fn by_namespace(held: &[HeldLock]) -> HashMap<&str, Vec<&HeldLock>> {
    let mut grouped: HashMap<&str, Vec<&HeldLock>> = HashMap::new();
    for lock in held {
        grouped
            .entry(lock.namespace.as_str())
            .or_default()
            .push(lock);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(name: &str, public_read: bool) -> UsageNamespace {
        UsageNamespace {
            name: name.to_owned(),
            public_read,
            quota: Quota::default(),
        }
    }

    fn held(namespace: &str, lock_hash: &str, amount: i64) -> HeldLock {
        HeldLock {
            namespace: namespace.to_owned(),
            lock_hash: lock_hash.to_owned(),
            amount,
        }
    }

    fn group(namespace: &str, status: BuildStatus, builds: i64, millis: i64) -> BuildGroup {
        BuildGroup {
            namespace: namespace.to_owned(),
            status,
            builds,
            millis,
        }
    }

    fn facts() -> UsageFacts {
        UsageFacts {
            namespaces: vec![namespace("alpha", false), namespace("beta", true)],
            prefixes: vec![
                held("alpha", "shared", 1_000),
                held("alpha", "own", 300),
                held("beta", "shared", 1_000),
            ],
            builds: vec![
                group("alpha", BuildStatus::Succeeded, 3, 3_000),
                group("alpha", BuildStatus::Failed, 1, 250),
                group("beta", BuildStatus::Succeeded, 2, 2_000),
            ],
            lockfile_downloads: HashMap::from([("alpha".to_owned(), 3)]),
            lock_downloads: vec![held("alpha", "shared", 2), held("beta", "shared", 2)],
        }
    }

    fn row<'a>(report: &'a UsageReport, name: &str) -> &'a NamespaceUsage {
        report
            .namespaces
            .iter()
            .find(|usage| usage.namespace == name)
            .unwrap()
    }

    #[test]
    fn a_shared_prefix_counts_in_full_in_each_holder_and_once_in_totals() {
        let report = facts().report(|_, _| true);
        let alpha = row(&report, "alpha");
        assert_eq!(
            (
                alpha.figures.disk_bytes,
                alpha.figures.prefixes,
                alpha.figures.shared_disk_bytes
            ),
            (1_300, 2, 1_000)
        );
        assert_eq!(
            alpha.shared,
            [SharedPrefix {
                lock_hash: "shared".to_owned(),
                bytes: 1_000,
                other_namespaces: 1
            }]
        );
        assert_eq!(
            alpha.figures.builds,
            BuildCounts {
                succeeded: 3,
                failed: 1,
                ..BuildCounts::default()
            }
        );
        assert_eq!(alpha.figures.build_millis, 3_250);
        let totals = &report.totals;
        assert_eq!(
            (totals.disk_bytes, totals.prefixes, totals.shared_disk_bytes),
            (1_300, 2, 1_000)
        );
        assert_eq!(totals.builds.succeeded, 5);
        assert_eq!(totals.build_millis, 5_250);
    }

    #[test]
    fn a_download_by_hash_shows_in_every_holder_and_once_in_totals() {
        let report = facts().report(|_, _| true);
        let downloads = |name| {
            let figures = &row(&report, name).figures;
            (figures.lockfile_downloads, figures.artifact_downloads)
        };
        assert_eq!(downloads("alpha"), (3, 2));
        assert_eq!(downloads("beta"), (0, 2));
        assert_eq!(
            (
                report.totals.lockfile_downloads,
                report.totals.artifact_downloads
            ),
            (3, 2)
        );
    }

    #[test]
    fn a_caller_who_sees_one_namespace_learns_it_shares_but_not_with_whom() {
        let report = facts().report(|_, public_read| public_read);
        assert_eq!(report.namespaces.len(), 1);
        assert_eq!(report.namespaces[0].namespace, "beta");
        assert_eq!(report.namespaces[0].shared[0].other_namespaces, 1);
        assert_eq!(
            (report.totals.disk_bytes, report.totals.build_millis),
            (1_000, 2_000),
            "totals are over what the caller sees"
        );
    }

    #[test]
    fn a_quota_takes_the_default_where_it_sets_no_limit() {
        let own = Quota {
            max_disk_bytes: Some(10),
            max_concurrent_builds: None,
        };
        let default = Quota {
            max_disk_bytes: Some(99),
            max_concurrent_builds: Some(2),
        };
        assert_eq!(
            own.or(default),
            Quota {
                max_disk_bytes: Some(10),
                max_concurrent_builds: Some(2)
            }
        );
    }
}
