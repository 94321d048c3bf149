use std::collections::BTreeMap;
use std::sync::Arc;

use envstore_core::ContentHash;
use rattler_conda_types::{ExplicitEnvironmentEntry, ExplicitEnvironmentSpec, PackageRecord, RepoDataRecord, Subdir};
use rattler_conda_lock as conda_lock;
use rattler_lock::{CondaPackageData, DEFAULT_ENVIRONMENT_NAME, LockFile, LockFileBuilder, PlatformData, PlatformName};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::solver::SolvedEnvironment;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("failed to build the pixi lock")]
    Pixi(#[source] rattler_lock::ParseCondaLockError),
    #[error("failed to render the pixi lock")]
    Render(#[source] std::io::Error),
    #[error("failed to convert the lock to conda-lock v1")]
    CondaLock(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the lock has no platform '{0}'")]
    UnknownPlatform(String),
}

/// One package of a lock, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub build: String,
    pub subdir: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// The exact packages of an environment for each platform. Its hash covers
/// the channels and each package's URL and checksum, nothing else: the same
/// package set gives the same `lock_hash`, whoever asked for it.
#[derive(Debug, Clone)]
pub struct Lock {
    channels: Vec<Url>,
    platforms: BTreeMap<String, Arc<Vec<RepoDataRecord>>>,
    hash: ContentHash,
}

#[derive(Serialize)]
struct CanonicalLock<'a> {
    channels: Vec<&'a str>,
    platforms: BTreeMap<&'a str, Vec<(&'a str, String)>>,
}

impl Lock {
    pub fn new(solved: SolvedEnvironment) -> Self {
        let canonical = CanonicalLock {
            channels: solved.channels.iter().map(Url::as_str).collect(),
            platforms: solved
                .platforms
                .iter()
                .map(|(platform, records)| {
                    let mut packages: Vec<(&str, String)> = records
                        .iter()
                        .map(|record| (record.url.as_str(), checksum(record)))
                        .collect();
                    packages.sort();
                    (platform.as_str(), packages)
                })
                .collect(),
        };
        let hash = ContentHash::of(&serde_json::to_vec(&canonical).unwrap_or_default());
        Self {
            channels: solved.channels,
            platforms: solved.platforms,
            hash,
        }
    }

    pub fn hash(&self) -> ContentHash {
        self.hash
    }

    pub fn platforms(&self) -> impl Iterator<Item = &str> {
        self.platforms.keys().map(String::as_str)
    }

    /// Records of one platform, by package name.
    pub fn records(&self, platform: &str) -> Option<&[RepoDataRecord]> {
        self.platforms.get(platform).map(|records| records.as_slice())
    }

    pub fn packages(&self) -> BTreeMap<String, Vec<LockedPackage>> {
        self.platforms
            .iter()
            .map(|(platform, records)| {
                let packages = records
                    .iter()
                    .map(|record| LockedPackage {
                        name: record.package_record.name.as_normalized().to_owned(),
                        version: record.package_record.version.to_string(),
                        build: record.package_record.build.to_string(),
                        subdir: record.package_record.subdir.clone(),
                        url: record.url.to_string(),
                        sha256: record.package_record.sha256.map(hex::encode),
                        size: record.package_record.size,
                    })
                    .collect();
                (platform.clone(), packages)
            })
            .collect()
    }

    /// The lock as rattler's `pixi.lock`.
    pub fn to_pixi_lock(&self) -> Result<LockFile, LockError> {
        let platforms = self
            .platforms
            .keys()
            .filter_map(|platform| platform.parse::<Subdir>().ok())
            .map(|subdir| PlatformData {
                name: PlatformName::from(&subdir),
                subdir,
                virtual_packages: Vec::new(),
            })
            .collect();
        let mut builder = LockFileBuilder::new()
            .with_platforms(platforms)
            .map_err(LockError::Pixi)?
            .with_channels(
                DEFAULT_ENVIRONMENT_NAME,
                self.channels.iter().map(|url| url.to_string()),
            );
        for (platform, records) in &self.platforms {
            for record in records.iter() {
                builder
                    .add_conda_package(
                        DEFAULT_ENVIRONMENT_NAME,
                        platform,
                        CondaPackageData::from(record.clone()),
                    )
                    .map_err(LockError::Pixi)?;
            }
        }
        Ok(builder.finish())
    }

    pub fn render_pixi_lock(&self) -> Result<String, LockError> {
        self.to_pixi_lock()?.render_to_string().map_err(LockError::Render)
    }

    /// The lock as a conda-lock v1 `conda-lock.yml` (CEP 37), built from the
    /// records directly so `file://` channels can be exported too. Each
    /// platform's content hash covers its packages, so the file depends on
    /// the lock alone and its content-addressed key never changes meaning.
    pub fn render_conda_lock(&self) -> Result<String, LockError> {
        let mut metadata = conda_lock::Metadata {
            channels: self
                .channels
                .iter()
                .map(|url| conda_lock::Channel {
                    url: url.to_string(),
                    used_env_vars: Vec::new(),
                })
                .collect(),
            platforms: self.platforms.keys().cloned().collect(),
            sources: vec!["environment.yml".to_owned()],
            ..conda_lock::Metadata::default()
        };
        let mut packages = Vec::new();
        for (platform, records) in &self.platforms {
            let mut checksums: Vec<String> = records.iter().map(|r| format!("{} {}", r.url, checksum(r))).collect();
            checksums.sort();
            metadata.content_hash.insert(
                platform.clone(),
                ContentHash::of(checksums.join("\n").as_bytes()).to_hex(),
            );
            packages.extend(records.iter().map(|record| conda_lock_package(platform, record)));
        }
        conda_lock::LockFile {
            metadata,
            package: packages,
        }
        .to_yaml()
        .map_err(|error| LockError::CondaLock(Box::new(error)))
    }

    /// An `@EXPLICIT` list for one platform in install order (dependencies
    /// first, as conda installs the list top to bottom), each URL carrying its
    /// sha256 so `conda create --file` verifies what it downloads.
    pub fn render_explicit(&self, platform: &str) -> Result<String, LockError> {
        let records = PackageRecord::sort_topologically(
            self.records(platform)
                .ok_or_else(|| LockError::UnknownPlatform(platform.to_owned()))?
                .to_vec(),
        );
        let spec = ExplicitEnvironmentSpec {
            platform: platform.parse().ok(),
            packages: records
                .iter()
                .map(|record| {
                    let mut url = record.url.clone();
                    if let Some(sha256) = record.package_record.sha256 {
                        url.set_fragment(Some(&hex::encode(sha256)));
                    }
                    ExplicitEnvironmentEntry { url }
                })
                .collect(),
        };
        Ok(spec.to_spec_string())
    }
}

fn conda_lock_package(platform: &str, record: &RepoDataRecord) -> conda_lock::Package {
    let package = &record.package_record;
    let dependencies = package
        .depends
        .iter()
        .map(|depend| match depend.split_once(' ') {
            Some((name, constraint)) => (name.to_owned(), constraint.trim().to_owned()),
            None => (depend.clone(), "*".to_owned()),
        })
        .collect();
    conda_lock::Package {
        name: package.name.as_source().to_owned(),
        version: package.version.to_string(),
        manager: conda_lock::Manager::Conda,
        platform: platform.to_owned(),
        dependencies,
        url: record.url.to_string(),
        hash: conda_lock::Hashes {
            md5: package.md5.map(hex::encode),
            sha256: package.sha256.map(hex::encode),
        },
        source: None,
        build: Some(package.build.to_string()),
        category: "main".to_owned(),
        optional: false,
    }
}

/// What identifies an archive's bytes; old repodata has only md5.
fn checksum(record: &RepoDataRecord) -> String {
    match (record.package_record.sha256, record.package_record.md5) {
        (Some(sha256), _) => format!("sha256:{}", hex::encode(sha256)),
        (None, Some(md5)) => format!("md5:{}", hex::encode(md5)),
        (None, None) => String::new(),
    }
}
