//! A submitted lock checked against its channels before anything is kept
//! under its hash.
//!
//! A lock's hash covers each package's URL and checksum only, so a lockfile
//! may keep real URLs and checksums and claim other versions, builds or
//! dependencies: stored under that hash, it would be what every namespace
//! building the same packages is served. Each record is therefore looked up
//! by its URL in the channel's own repodata, every field the lockfile gives
//! must match, and the lock kept is made of the channel's records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rattler_conda_types::{Channel, MatchSpec, RepoDataRecord, Subdir};

use crate::{EnvironmentSolver, Lock, SolvedEnvironment};

/// How long checking one lock against its channels may take, repodata
/// downloads included.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a submitted lock is not what its channels say.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "package '{package}' ({platform}): its {field} is {locked} in the lockfile but {channel} in the channel; \
         export the lock again from the channel"
    )]
    Mismatch {
        package: String,
        platform: String,
        field: &'static str,
        locked: String,
        channel: String,
    },
    #[error(
        "package '{package}' ({platform}): {url} is not a package in the repodata of the lock's channels"
    )]
    NotInChannel {
        package: String,
        platform: String,
        url: String,
    },
    #[error("platform '{0}' of the lock is not a conda platform")]
    Platform(String),
    #[error("the repodata of the lock's channels could not be read for {platform}: {reason}")]
    Repodata { platform: String, reason: String },
    #[error("checking the lock against its channels took more than {} s", .0.as_secs())]
    Timeout(Duration),
}

impl VerifyError {
    /// The package at fault, when one is.
    pub fn package(&self) -> Option<&str> {
        match self {
            Self::Mismatch { package, .. } | Self::NotInChannel { package, .. } => Some(package),
            _ => None,
        }
    }
}

impl EnvironmentSolver {
    /// `lock` made of its channels' own records, found by URL, once every
    /// field its lockfile gives agrees with them (see the module doc).
    /// Queries only the lock's package names, for its platforms and
    /// `noarch`, within [`VERIFY_TIMEOUT`].
    pub async fn verify_lock(&self, lock: &Lock) -> Result<Lock, VerifyError> {
        tokio::time::timeout(VERIFY_TIMEOUT, self.verify_unlimited(lock))
            .await
            .map_err(|_| VerifyError::Timeout(VERIFY_TIMEOUT))?
    }

    async fn verify_unlimited(&self, lock: &Lock) -> Result<Lock, VerifyError> {
        let sources: Vec<Channel> = lock
            .channels()
            .iter()
            .cloned()
            .map(Channel::from_url)
            .collect();
        let mut platforms = BTreeMap::new();
        for platform in lock.platforms() {
            let subdir: Subdir = platform
                .parse()
                .map_err(|_| VerifyError::Platform(platform.to_owned()))?;
            let records = lock.records(platform).unwrap_or_default();
            let names: BTreeSet<_> = records
                .iter()
                .map(|record| record.package_record.name.clone())
                .collect();
            let repodata = self
                .gateway
                .query(
                    sources.clone(),
                    [subdir, Subdir::NoArch],
                    names.into_iter().map(MatchSpec::from),
                )
                .recursive(false)
                .execute()
                .await
                .map_err(|error| VerifyError::Repodata {
                    platform: platform.to_owned(),
                    reason: error.to_string(),
                })?;
            let by_url: HashMap<&str, &RepoDataRecord> = repodata
                .iter()
                .flat_map(|data| data.iter())
                .map(|record| (record.url.as_str(), record))
                .collect();
            let mut verified = Vec::with_capacity(records.len());
            for record in records {
                let channel =
                    by_url
                        .get(record.url.as_str())
                        .ok_or_else(|| VerifyError::NotInChannel {
                            package: record.package_record.name.as_normalized().to_owned(),
                            platform: platform.to_owned(),
                            url: envstore_core::public_url(&record.url).to_string(),
                        })?;
                compare(platform, record, channel)?;
                verified.push((*channel).clone());
            }
            platforms.insert(platform.to_owned(), Arc::new(verified));
        }
        let solved = SolvedEnvironment {
            channels: lock.channels().to_vec(),
            platforms,
            cached_platforms: 0,
        };
        // Wheels are checked against the allowed PyPI indexes by policy
        // (`Policy::check_lock`); their bytes by sha256 when installed.
        Ok(Lock::new(solved)
            .with_variables(lock.variables().clone())
            .with_pypi(lock.pypi_packages()))
    }
}

/// Every field the lockfile gives must be the channel's. Fields a format
/// leaves out (conda-lock has no sizes or constraints) are not compared:
/// the channel's are kept.
fn compare(
    platform: &str,
    locked: &RepoDataRecord,
    channel: &RepoDataRecord,
) -> Result<(), VerifyError> {
    let (ours, theirs) = (&locked.package_record, &channel.package_record);
    let package = ours.name.as_normalized().to_owned();
    let mismatch = |field: &'static str, locked: String, channel: String| VerifyError::Mismatch {
        package: package.clone(),
        platform: platform.to_owned(),
        field,
        locked,
        channel,
    };
    let sorted = |items: &[String]| {
        let mut items = items.to_vec();
        items.sort();
        items
    };
    let mut checks: Vec<(&'static str, String, String)> = vec![
        (
            "name",
            ours.name.as_normalized().to_owned(),
            theirs.name.as_normalized().to_owned(),
        ),
        (
            "version",
            ours.version.to_string(),
            theirs.version.to_string(),
        ),
        ("build", ours.build.to_string(), theirs.build.to_string()),
        (
            "dependencies",
            sorted(&ours.depends).join(", "),
            sorted(&theirs.depends).join(", "),
        ),
    ];
    if ours.sha256.is_some() {
        checks.push((
            "sha256",
            hex_of(ours.sha256.as_ref()),
            hex_of(theirs.sha256.as_ref()),
        ));
    }
    if ours.md5.is_some() {
        checks.push((
            "md5",
            hex_of(ours.md5.as_ref()),
            hex_of(theirs.md5.as_ref()),
        ));
    }
    if ours.size.is_some() {
        checks.push((
            "size",
            format!("{:?}", ours.size),
            format!("{:?}", theirs.size),
        ));
    }
    if !ours.constrains.is_empty() {
        checks.push((
            "constraints",
            sorted(&ours.constrains).join(", "),
            sorted(&theirs.constrains).join(", "),
        ));
    }
    // pixi.lock carries the build number; conda-lock does not (it reads 0).
    if ours.build_number != 0 {
        checks.push((
            "build number",
            ours.build_number.to_string(),
            theirs.build_number.to_string(),
        ));
    }
    for (field, locked, channel) in checks {
        if locked != channel {
            return Err(mismatch(field, locked, channel));
        }
    }
    Ok(())
}

fn hex_of<T: AsRef<[u8]>>(digest: Option<&T>) -> String {
    digest.map_or_else(|| "none".to_owned(), hex::encode)
}
