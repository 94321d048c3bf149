use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use envstore_core::ContentHash;
use envstore_core::pypi::LockedWheel;

use rattler_conda_lock as conda_lock;
use rattler_conda_types::{
    ExplicitEnvironmentEntry, ExplicitEnvironmentSpec, PackageName, PackageRecord, RepoDataRecord,
    Subdir, VersionWithSource,
};
use rattler_lock::{
    CondaPackageData, DEFAULT_ENVIRONMENT_NAME, LockFile, LockFileBuilder, PlatformData,
    PlatformName, PypiIndexes,
};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::solver::SolvedEnvironment;

mod pypi;

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
    #[error("PyPI package '{package}' cannot be written to a lockfile: {reason}")]
    Wheel { package: String, reason: String },
    #[error("the PyPI packages of platform '{platform}' cannot be exported: {reason}")]
    PypiPlatform { platform: String, reason: String },
}

/// [`LockedPackage::manager`] of a PyPI wheel.
pub const PYPI_MANAGER: &str = "pypi";

/// One package of a lock, as the API lists it: a conda package, or a
/// PyPI wheel (`manager: "pypi"`, no build string).
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
    /// `pypi` for a wheel; absent for a conda package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
}

/// The exact packages of an environment for each platform (conda records
/// and PyPI wheels), and the variables its activation sets. Its hash covers
/// the channels, each package's URL and checksum, the wheels and the
/// variables (each only when there are any): the same package set gives the
/// same `lock_hash`, whoever asked for it. Variables are part of it because
/// they are written into the prefix, and a prefix is addressed by the lock
/// hash.
#[derive(Debug, Clone)]
pub struct Lock {
    channels: Vec<Url>,
    platforms: BTreeMap<String, Arc<Vec<RepoDataRecord>>>,
    variables: BTreeMap<String, String>,
    /// Wheels per platform, by name; platforms without wheels are absent.
    pypi: BTreeMap<String, Arc<Vec<LockedWheel>>>,
    hash: ContentHash,
}

#[derive(Serialize)]
struct CanonicalLock<'a> {
    channels: Vec<&'a str>,
    platforms: BTreeMap<&'a str, Vec<(&'a str, String)>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    variables: &'a BTreeMap<String, String>,
    /// Each platform's wheels as sorted (URL, sha256) pairs; absent without
    /// wheels, so every conda-only lock keeps the hash it always had.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pypi: BTreeMap<&'a str, Vec<(&'a str, &'a str)>>,
}

impl Lock {
    pub fn new(solved: SolvedEnvironment) -> Self {
        Self::from_records(
            solved.channels,
            solved.platforms,
            BTreeMap::new(),
            BTreeMap::new(),
        )
    }

    /// The same packages, with activation variables.
    pub fn with_variables(self, variables: BTreeMap<String, String>) -> Self {
        Self::from_records(self.channels, self.platforms, variables, self.pypi)
    }

    /// The same conda packages and variables, with these PyPI wheels per
    /// platform instead of any it had. Each platform's wheels are kept
    /// sorted by name, URLs as `Url` spells them and sha256s in lower case,
    /// so the lock reads back from every format with the same hash.
    pub fn with_pypi(self, pypi: BTreeMap<String, Vec<LockedWheel>>) -> Self {
        let pypi = pypi
            .into_iter()
            .filter(|(_, wheels)| !wheels.is_empty())
            .map(|(platform, wheels)| {
                let mut wheels: Vec<LockedWheel> = wheels
                    .into_iter()
                    .map(|wheel| LockedWheel {
                        url: pypi::canonical_url(&wheel.url),
                        sha256: wheel.sha256.to_ascii_lowercase(),
                        ..wheel
                    })
                    .collect();
                wheels.sort();
                (platform, Arc::new(wheels))
            })
            .collect();
        Self::from_records(self.channels, self.platforms, self.variables, pypi)
    }

    fn from_records(
        channels: Vec<Url>,
        platforms: BTreeMap<String, Arc<Vec<RepoDataRecord>>>,
        variables: BTreeMap<String, String>,
        pypi: BTreeMap<String, Arc<Vec<LockedWheel>>>,
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
            pypi: pypi
                .iter()
                .map(|(platform, wheels)| {
                    let mut pairs: Vec<(&str, &str)> = wheels
                        .iter()
                        .map(|wheel| (wheel.url.as_str(), wheel.sha256.as_str()))
                        .collect();
                    pairs.sort();
                    (platform.as_str(), pairs)
                })
                .collect(),
        };
        let hash = ContentHash::of(&serde_json::to_vec(&canonical).unwrap_or_default());
        Self {
            channels,
            platforms,
            variables,
            pypi,
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
        let environment_index = environment
            .pypi_indexes()
            .and_then(|indexes| indexes.indexes.first());
        let mut pypi = BTreeMap::new();
        for (platform, packages) in environment.pypi_packages_by_platform() {
            let wheels = packages
                .map(|package| pypi::wheel_from_pixi(package, environment_index))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
            pypi.insert(platform.subdir().to_string(), wheels);
        }
        Self::with_wheels_on_conda_platforms(
            Self::from_records(channels, platforms, BTreeMap::new(), BTreeMap::new()),
            pypi,
        )
    }

    /// The lock with its wheels, when each platform with wheels locks conda
    /// packages too (the `python` they are installed into).
    fn with_wheels_on_conda_platforms(
        self,
        pypi: BTreeMap<String, Vec<LockedWheel>>,
    ) -> Result<Self, LockError> {
        for (platform, wheels) in &pypi {
            let has_conda = self
                .platforms
                .get(platform)
                .is_some_and(|records| !records.is_empty());
            if !wheels.is_empty() && !has_conda {
                return Err(LockError::Invalid(format!(
                    "platform '{platform}' has PyPI packages but no conda packages to install them into"
                )));
            }
        }
        Ok(self.with_pypi(pypi))
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
        let mut pypi: BTreeMap<String, Vec<LockedWheel>> = BTreeMap::new();
        for package in &file.package {
            let unlisted_platform = || {
                invalid(format!(
                    "package '{}' is for platform '{}', which metadata.platforms does not list",
                    package.name, package.platform
                ))
            };
            if !platforms.contains_key(&package.platform) {
                return Err(unlisted_platform());
            }
            match package.manager {
                conda_lock::Manager::Conda => {
                    let record = conda_lock_record(package).map_err(invalid)?;
                    platforms
                        .get_mut(&package.platform)
                        .ok_or_else(unlisted_platform)?
                        .push(record);
                }
                conda_lock::Manager::Pip => {
                    let wheel = pypi::wheel_from_conda_lock(package).map_err(invalid)?;
                    pypi.entry(package.platform.clone())
                        .or_default()
                        .push(wheel);
                }
            }
        }
        let platforms = platforms
            .into_iter()
            .map(|(platform, mut records)| {
                records.sort_by(|a, b| a.package_record.name.cmp(&b.package_record.name));
                (platform, Arc::new(records))
            })
            .collect();
        Self::with_wheels_on_conda_platforms(
            Self::from_records(channels, platforms, BTreeMap::new(), BTreeMap::new()),
            pypi,
        )
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

    /// The PyPI wheels of one platform, by name (empty when it has none).
    pub fn wheels(&self, platform: &str) -> &[LockedWheel] {
        self.pypi
            .get(platform)
            .map_or(&[], |wheels| wheels.as_slice())
    }

    /// Whether any platform has PyPI wheels.
    pub fn has_pypi(&self) -> bool {
        self.pypi.values().any(|wheels| !wheels.is_empty())
    }

    /// The distinct indexes the wheels were resolved from, in the order
    /// they first appear (platforms by name, wheels by name). Wheels read
    /// from a conda-lock file name no index.
    pub fn pypi_indexes(&self) -> Vec<String> {
        let mut indexes: Vec<String> = Vec::new();
        for wheel in self.pypi.values().flat_map(|wheels| wheels.iter()) {
            if !wheel.index.is_empty() && !indexes.contains(&wheel.index) {
                indexes.push(wheel.index.clone());
            }
        }
        indexes
    }

    /// The PyPI wheels per platform, as the API lists them.
    pub fn pypi_packages(&self) -> BTreeMap<String, Vec<LockedWheel>> {
        self.pypi
            .iter()
            .map(|(platform, wheels)| (platform.clone(), wheels.to_vec()))
            .collect()
    }

    /// The packages per platform, as the API lists them: the conda
    /// packages, then the PyPI wheels (`manager: "pypi"`).
    pub fn packages(&self) -> BTreeMap<String, Vec<LockedPackage>> {
        self.platforms
            .iter()
            .map(|(platform, records)| {
                let conda = records.iter().map(|record| LockedPackage {
                    name: record.package_record.name.as_normalized().to_owned(),
                    version: record.package_record.version.to_string(),
                    build: record.package_record.build.to_string(),
                    subdir: record.package_record.subdir.clone(),
                    url: record.url.to_string(),
                    sha256: record.package_record.sha256.map(hex::encode),
                    size: record.package_record.size,
                    manager: None,
                });
                let wheels = self.wheels(platform).iter().map(|wheel| LockedPackage {
                    name: wheel.name.clone(),
                    version: wheel.version.clone(),
                    build: String::new(),
                    subdir: platform.clone(),
                    url: wheel.url.clone(),
                    sha256: Some(wheel.sha256.clone()),
                    size: wheel.size,
                    manager: Some(PYPI_MANAGER.to_owned()),
                });
                (platform.clone(), conda.chain(wheels).collect())
            })
            .collect()
    }

    /// The lock as rattler's `pixi.lock`: conda packages, and `pypi:`
    /// entries (URL, sha256, `requires_dist`, `requires_python`) with the
    /// environment's indexes when there are wheels.
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
        for (platform, wheels) in &self.pypi {
            for wheel in wheels.iter() {
                builder
                    .add_pypi_package(
                        DEFAULT_ENVIRONMENT_NAME,
                        platform,
                        pypi::pixi_package(wheel)?,
                    )
                    .map_err(LockError::Pixi)?;
            }
        }
        if self.has_pypi() {
            // Each wheel's index parsed as a URL above.
            let indexes = self
                .pypi_indexes()
                .iter()
                .filter_map(|index| Url::parse(index).ok())
                .collect();
            builder.set_pypi_indexes(
                DEFAULT_ENVIRONMENT_NAME,
                PypiIndexes {
                    indexes,
                    find_links: Vec::new(),
                },
            );
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
    /// platform's content hash covers its packages (wheels only when it has
    /// some, so conda-only files stay as they were), so the file depends on
    /// the lock alone and its content-addressed key never changes meaning.
    /// Wheels are `manager: pip` entries rendered here, their dependencies
    /// evaluated for the platform: rattler_lock's exporter refuses any
    /// `requires_dist` with markers or extras.
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
            let wheels = self.wheels(platform);
            checksums.extend(wheels.iter().map(pypi::content_hash_line));
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
            if !wheels.is_empty() {
                let markers = pypi::marker_environment(platform, records)?;
                for wheel in wheels {
                    packages.push(pypi::conda_lock_pip_package(platform, wheel, &markers)?);
                }
            }
        }
        if let Some(platform) = self
            .pypi
            .keys()
            .find(|platform| !self.platforms.contains_key(*platform))
        {
            return Err(LockError::PypiPlatform {
                platform: platform.clone(),
                reason: "the lock has wheels but no conda packages for it".to_owned(),
            });
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
    /// sha256 so `conda create --file` verifies what it downloads. Wheels
    /// follow as conda-lock's `# pip <name> @ <url>#sha256=<hex>` lines:
    /// `conda-lock install` and micromamba install them, plain conda reads
    /// them as comments (and installs the conda packages alone).
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
        let mut text = spec.to_spec_string();
        for wheel in self.wheels(platform) {
            text.push_str(&pypi::explicit_line(wheel));
        }
        Ok(text)
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
                BTreeMap::new(),
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

#[cfg(test)]
mod tests;
