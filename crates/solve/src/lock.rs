use std::collections::BTreeMap;
use std::sync::Arc;

use envstore_core::ContentHash;
use std::str::FromStr;

use rattler_conda_lock as conda_lock;
use rattler_conda_types::{
    ExplicitEnvironmentEntry, ExplicitEnvironmentSpec, PackageName, PackageRecord, RepoDataRecord,
    Subdir, VersionWithSource,
};
use rattler_lock::{
    CondaPackageData, DEFAULT_ENVIRONMENT_NAME, LockFile, LockFileBuilder, PlatformData,
    PlatformName,
};
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
    #[error("the lockfile is neither a pixi.lock nor a conda-lock.yml (v1): {0}")]
    UnknownFormat(String),
    #[error("the lockfile is not valid: {0}")]
    Invalid(String),
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

/// The exact packages of an environment for each platform, and the
/// variables its activation sets. Its hash covers the channels, each
/// package's URL and checksum, and the variables (only when there are any):
/// the same package set gives the same `lock_hash`, whoever asked for it.
/// Variables are part of it because they are written into the prefix, and a
/// prefix is addressed by the lock hash.
#[derive(Debug, Clone)]
pub struct Lock {
    channels: Vec<Url>,
    platforms: BTreeMap<String, Arc<Vec<RepoDataRecord>>>,
    variables: BTreeMap<String, String>,
    hash: ContentHash,
}

#[derive(Serialize)]
struct CanonicalLock<'a> {
    channels: Vec<&'a str>,
    platforms: BTreeMap<&'a str, Vec<(&'a str, String)>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    variables: &'a BTreeMap<String, String>,
}

impl Lock {
    pub fn new(solved: SolvedEnvironment) -> Self {
        Self::from_records(solved.channels, solved.platforms, BTreeMap::new())
    }

    /// The same packages, with activation variables.
    pub fn with_variables(self, variables: BTreeMap<String, String>) -> Self {
        Self::from_records(self.channels, self.platforms, variables)
    }

    fn from_records(
        channels: Vec<Url>,
        platforms: BTreeMap<String, Arc<Vec<RepoDataRecord>>>,
        variables: BTreeMap<String, String>,
    ) -> Self {
        let canonical = CanonicalLock {
            channels: channels.iter().map(Url::as_str).collect(),
            platforms: platforms
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
            variables: &variables,
        };
        let hash = ContentHash::of(&serde_json::to_vec(&canonical).unwrap_or_default());
        Self {
            channels,
            platforms,
            variables,
            hash,
        }
    }

    /// Reads a lockfile a client submitted: rattler's `pixi.lock` (its
    /// default environment) or conda-lock v1's `conda-lock.yml`. The lock
    /// gets the same hash as the one its file was written from, so a lock
    /// exported by envstore and submitted again names the same prefix.
    pub fn parse_lockfile(text: &str) -> Result<Self, LockError> {
        let document: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|error| LockError::UnknownFormat(error.to_string()))?;
        let has = |key: &str| document.get(key).is_some();
        let lock = if has("environments") {
            Self::parse_pixi_lock(text)?
        } else if has("metadata") && has("package") {
            Self::parse_conda_lock(text)?
        } else {
            return Err(LockError::UnknownFormat(
                "expected the keys 'version' and 'environments' (pixi.lock) or 'metadata' and 'package' (conda-lock.yml)"
                    .to_owned(),
            ));
        };
        if lock.platforms.is_empty() || lock.platforms.values().all(|records| records.is_empty()) {
            return Err(LockError::Invalid("it locks no conda packages".to_owned()));
        }
        Ok(lock)
    }

    fn parse_pixi_lock(text: &str) -> Result<Self, LockError> {
        let invalid = |message: String| LockError::Invalid(message);
        let file = LockFile::from_str_with_base_directory(text, None)
            .map_err(|error| invalid(error.to_string()))?;
        let environment = file.default_environment().ok_or_else(|| {
            invalid(format!(
                "it has no '{DEFAULT_ENVIRONMENT_NAME}' environment"
            ))
        })?;
        let channels = environment
            .channels()
            .iter()
            .map(|channel| {
                Url::parse(&channel.url).map_err(|error| {
                    invalid(format!("channel '{}' is not a URL: {error}", channel.url))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut platforms = BTreeMap::new();
        for (platform, mut records) in environment
            .conda_repodata_records_by_platform()
            .map_err(|error| invalid(error.to_string()))?
        {
            records.sort_by(|a, b| a.package_record.name.cmp(&b.package_record.name));
            platforms.insert(platform.subdir().to_string(), Arc::new(records));
        }
        Ok(Self::from_records(channels, platforms, BTreeMap::new()))
    }

    fn parse_conda_lock(text: &str) -> Result<Self, LockError> {
        let invalid = |message: String| LockError::Invalid(message);
        let file: conda_lock::LockFile = text
            .parse()
            .map_err(|error: conda_lock::Error| invalid(error.to_string()))?;
        let channels = file
            .metadata
            .channels
            .iter()
            .map(|channel| {
                Url::parse(&channel.url).map_err(|error| {
                    invalid(format!("channel '{}' is not a URL: {error}", channel.url))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut platforms: BTreeMap<String, Vec<RepoDataRecord>> = file
            .metadata
            .platforms
            .iter()
            .map(|platform| (platform.clone(), Vec::new()))
            .collect();
        for package in &file.package {
            if package.manager != conda_lock::Manager::Conda {
                return Err(invalid(format!(
                    "package '{}' is managed by pip: envstore builds conda environments only",
                    package.name
                )));
            }
            let record = conda_lock_record(package).map_err(invalid)?;
            platforms
                .get_mut(&package.platform)
                .ok_or_else(|| {
                    invalid(format!(
                        "package '{}' is for platform '{}', which metadata.platforms does not list",
                        package.name, package.platform
                    ))
                })?
                .push(record);
        }
        let platforms = platforms
            .into_iter()
            .map(|(platform, mut records)| {
                records.sort_by(|a, b| a.package_record.name.cmp(&b.package_record.name));
                (platform, Arc::new(records))
            })
            .collect();
        Ok(Self::from_records(channels, platforms, BTreeMap::new()))
    }

    pub fn hash(&self) -> ContentHash {
        self.hash
    }

    /// The same lock, addressed for one namespace alone when it has
    /// variables. Otherwise another namespace could submit the same packages
    /// with a guessed value and learn from `reused` (or from how fast its
    /// build ends) whether the guess was right. Locks without variables
    /// stay shared by every namespace.
    pub fn for_namespace(mut self, namespace: &str) -> Self {
        if !self.variables.is_empty() {
            let salted = format!(
                "envstore lock for namespace\n{namespace}\n{}",
                self.hash.to_hex()
            );
            self.hash = ContentHash::of(salted.as_bytes());
        }
        self
    }

    pub fn channels(&self) -> &[Url] {
        &self.channels
    }

    /// What activating the environment sets.
    pub fn variables(&self) -> &BTreeMap<String, String> {
        &self.variables
    }

    pub fn platforms(&self) -> impl Iterator<Item = &str> {
        self.platforms.keys().map(String::as_str)
    }

    /// Records of one platform, by package name.
    pub fn records(&self, platform: &str) -> Option<&[RepoDataRecord]> {
        self.platforms
            .get(platform)
            .map(|records| records.as_slice())
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
        self.to_pixi_lock()?
            .render_to_string()
            .map_err(LockError::Render)
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
            let mut checksums: Vec<String> = records
                .iter()
                .map(|r| format!("{} {}", r.url, checksum(r)))
                .collect();
            checksums.sort();
            metadata.content_hash.insert(
                platform.clone(),
                ContentHash::of(checksums.join("\n").as_bytes()).to_hex(),
            );
            packages.extend(
                records
                    .iter()
                    .map(|record| conda_lock_package(platform, record)),
            );
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

/// A conda-lock package as a repodata record: the fields conda-lock keeps
/// (name, version, build, dependencies, checksums, URL); the installer reads
/// the rest from the archive itself.
fn conda_lock_record(package: &conda_lock::Package) -> Result<RepoDataRecord, String> {
    let name = PackageName::try_from(package.name.as_str())
        .map_err(|error| format!("package name '{}': {error}", package.name))?;
    let version = VersionWithSource::from_str(&package.version).map_err(|error| {
        format!(
            "version '{}' of '{}': {error}",
            package.version, package.name
        )
    })?;
    let url =
        Url::parse(&package.url).map_err(|error| format!("URL of '{}': {error}", package.name))?;
    let file_name = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .filter(|file| !file.is_empty())
        .ok_or_else(|| format!("the URL of '{}' names no file", package.name))?
        .to_owned();
    let build = package
        .build
        .clone()
        .or_else(|| {
            let stem = file_name
                .strip_suffix(".conda")
                .or_else(|| file_name.strip_suffix(".tar.bz2"))?;
            stem.rsplit('-').next().map(str::to_owned)
        })
        .ok_or_else(|| format!("package '{}' has no build string", package.name))?;
    let sha256 = package
        .hash
        .sha256
        .as_deref()
        .map(|hex| {
            rattler_digest::parse_digest_from_hex::<rattler_digest::Sha256>(hex)
                .ok_or_else(|| format!("sha256 of '{}' is not hex", package.name))
        })
        .transpose()?;
    let md5 = package
        .hash
        .md5
        .as_deref()
        .map(|hex| {
            rattler_digest::parse_digest_from_hex::<rattler_digest::Md5>(hex)
                .ok_or_else(|| format!("md5 of '{}' is not hex", package.name))
        })
        .transpose()?;
    if sha256.is_none() && md5.is_none() {
        return Err(format!(
            "package '{}' has no checksum: a lock must pin each archive's bytes",
            package.name
        ));
    }
    let build = build
        .parse()
        .map_err(|error| format!("build string '{build}' of '{}': {error}", package.name))?;
    let mut record = PackageRecord::new(name, version, build);
    record.depends = package
        .dependencies
        .iter()
        .map(|(dependency, constraint)| match constraint.as_str() {
            "*" | "" => dependency.clone(),
            constraint => format!("{dependency} {constraint}"),
        })
        .collect();
    record.sha256 = sha256;
    record.md5 = md5;
    // The subdir is the URL's folder: `noarch` packages sit in every
    // platform's list but come from the channel's noarch folder.
    record.subdir = url
        .path_segments()
        .and_then(|segments| segments.rev().nth(1))
        .map(str::to_owned)
        .unwrap_or_else(|| package.platform.clone());
    let channel = url
        .as_str()
        .strip_suffix(&format!("{}/{file_name}", record.subdir))
        .map(str::to_owned);
    Ok(RepoDataRecord {
        package_record: record,
        identifier: file_name
            .parse()
            .map_err(|error| format!("file name '{file_name}': {error}"))?,
        url,
        channel,
    })
}

/// What identifies an archive's bytes; old repodata has only md5.
fn checksum(record: &RepoDataRecord) -> String {
    match (record.package_record.sha256, record.package_record.md5) {
        (Some(sha256), _) => format!("sha256:{}", hex::encode(sha256)),
        (None, Some(md5)) => format!("md5:{}", hex::encode(md5)),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod namespace_tests {
    use super::*;

    #[test]
    fn a_lock_with_variables_is_never_shared_across_namespaces() {
        let lock = |variables: &[(&str, &str)]| {
            Lock::from_records(
                Vec::new(),
                BTreeMap::new(),
                variables
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                    .collect(),
            )
        };
        let secret = [("TOKEN_URL", "https://internal.example/abc")];
        let mine = lock(&secret).for_namespace("team-a");
        let guessed = lock(&secret).for_namespace("team-b");
        assert_ne!(
            mine.hash(),
            guessed.hash(),
            "a right guess from another namespace matches nothing"
        );
        assert_eq!(
            mine.hash(),
            lock(&secret).for_namespace("team-a").hash(),
            "stable within a namespace"
        );
        assert_eq!(
            mine.variables(),
            guessed.variables(),
            "the variables themselves are unchanged"
        );
        assert_eq!(
            lock(&[]).for_namespace("team-a").hash(),
            lock(&[]).for_namespace("team-b").hash()
        );
        assert_eq!(
            lock(&[]).for_namespace("team-a").hash(),
            lock(&[]).hash(),
            "no variables: shared by all"
        );
    }
}
