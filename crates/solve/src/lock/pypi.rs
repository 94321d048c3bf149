//! The PyPI part of a lock in each file format: wheels to and from
//! rattler_lock's pixi.lock entries, conda-lock v1 `manager: pip` entries
//! (rendered here: rattler_lock's exporter refuses any `requires_dist` with
//! markers or extras) and `@EXPLICIT`'s `# pip` lines.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

use envstore_core::pypi::{LockedWheel, normalize_name};
use pep440_rs::{Version, VersionSpecifiers};
use pep508_rs::{
    MarkerEnvironment, MarkerEnvironmentBuilder, PackageName, Requirement, VersionOrUrl,
};
use rattler_conda_lock as conda_lock;
use rattler_conda_types::{RepoDataRecord, Subdir};
use rattler_lock::{PackageHashes, PypiDistributionData, PypiPackageData, UrlOrPath, Verbatim};
use url::Url;

use super::LockError;

fn wheel_error(wheel: &LockedWheel, reason: impl Display) -> LockError {
    LockError::Wheel {
        package: wheel.name.clone(),
        reason: reason.to_string(),
    }
}

/// A URL as `Url` spells it, so it reads back from any format unchanged
/// (the lock hash covers it); text that is no URL is kept as given and
/// refused when a format needs a URL.
pub(super) fn canonical_url(url: &str) -> String {
    Url::parse(url).map_or_else(|_| url.to_owned(), String::from)
}

/// The wheel as a pixi.lock `pypi:` entry.
pub(super) fn pixi_package(wheel: &LockedWheel) -> Result<PypiPackageData, LockError> {
    let name = PackageName::from_str(&wheel.name).map_err(|error| wheel_error(wheel, error))?;
    let version = Version::from_str(&wheel.version)
        .map_err(|error| wheel_error(wheel, format!("version '{}': {error}", wheel.version)))?;
    let url = Url::parse(&wheel.url)
        .map_err(|error| wheel_error(wheel, format!("URL '{}': {error}", wheel.url)))?;
    let index_url = match wheel.index.as_str() {
        "" => None,
        index => Some(
            Url::parse(index)
                .map_err(|error| wheel_error(wheel, format!("index '{index}': {error}")))?,
        ),
    };
    let sha256 = rattler_digest::parse_digest_from_hex::<rattler_digest::Sha256>(&wheel.sha256)
        .ok_or_else(|| wheel_error(wheel, format!("sha256 '{}' is not hex", wheel.sha256)))?;
    let requires_dist = wheel
        .requires_dist
        .iter()
        .map(|requirement| {
            Requirement::from_str(requirement).map_err(|error| {
                wheel_error(wheel, format!("requirement '{requirement}': {error}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let requires_python = wheel
        .requires_python
        .as_deref()
        .map(|specifiers| {
            VersionSpecifiers::from_str(specifiers).map_err(|error| {
                wheel_error(wheel, format!("requires-python '{specifiers}': {error}"))
            })
        })
        .transpose()?;
    Ok(PypiPackageData::Distribution(Box::new(
        PypiDistributionData {
            name,
            version,
            location: Verbatim::new(UrlOrPath::Url(url)),
            index_url,
            hash: Some(PackageHashes::Sha256(sha256)),
            requires_dist,
            requires_python,
        },
    )))
}

/// A pixi.lock `pypi:` entry as a locked wheel. Only wheels with a URL and
/// a sha256 can be installed again exactly; paths, git sources and sdists
/// are refused with the reason. An entry without its own index gets the
/// environment's first.
pub(super) fn wheel_from_pixi(
    package: &PypiPackageData,
    environment_index: Option<&Url>,
) -> Result<LockedWheel, String> {
    let name = package.name().to_string();
    let distribution = match package {
        PypiPackageData::Source(source) => {
            return Err(format!(
                "PyPI package '{name}' is a source tree ({}): envstore installs wheels only",
                source.location.inner().as_str()
            ));
        }
        PypiPackageData::Distribution(distribution) => distribution,
    };
    let url = match distribution.location.inner() {
        UrlOrPath::Path(path) => {
            return Err(format!(
                "PyPI package '{name}' is a local path ({path}): a lock must name a URL to download it from"
            ));
        }
        UrlOrPath::Url(url) => url,
    };
    let sha256 = distribution
        .hash
        .as_ref()
        .and_then(PackageHashes::sha256)
        .map(hex::encode);
    let wheel = checked_wheel(&name, url.as_str(), sha256)?;
    Ok(LockedWheel {
        version: distribution.version.to_string(),
        requires_dist: distribution
            .requires_dist
            .iter()
            .map(ToString::to_string)
            .collect(),
        requires_python: distribution
            .requires_python
            .as_ref()
            .map(ToString::to_string),
        index: distribution
            .index_url
            .as_ref()
            .or(environment_index)
            .map(Url::to_string)
            .unwrap_or_default(),
        ..wheel
    })
}

/// The name, URL and sha256 of a wheel from a submitted lockfile, or why it
/// cannot be installed again exactly.
fn checked_wheel(name: &str, url: &str, sha256: Option<String>) -> Result<LockedWheel, String> {
    let parsed = Url::parse(url)
        .map_err(|error| format!("PyPI package '{name}' has no valid URL ('{url}'): {error}"))?;
    if parsed.scheme() == "git" || parsed.scheme().starts_with("git+") {
        return Err(format!(
            "PyPI package '{name}' is a git source ({url}): envstore installs wheels only"
        ));
    }
    if !matches!(parsed.scheme(), "http" | "https" | "file") {
        return Err(format!(
            "PyPI package '{name}' has a URL envstore cannot download ({url})"
        ));
    }
    let file_name = parsed
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or_default();
    if !file_name.ends_with(".whl") {
        return Err(format!(
            "PyPI package '{name}' is a source distribution ({url}): envstore installs wheels only"
        ));
    }
    let sha256 = sha256
        .filter(|hex| !hex.is_empty())
        .ok_or_else(|| {
            format!("PyPI package '{name}' has no sha256: a lock must pin each wheel's bytes")
        })?
        .to_ascii_lowercase();
    if rattler_digest::parse_digest_from_hex::<rattler_digest::Sha256>(&sha256).is_none() {
        return Err(format!(
            "the sha256 of PyPI package '{name}' is not a hex sha256"
        ));
    }
    Ok(LockedWheel {
        name: normalize_name(name),
        version: String::new(),
        url: parsed.to_string(),
        sha256,
        size: None,
        requires_dist: Vec::new(),
        requires_python: None,
        index: String::new(),
    })
}

/// The environment markers of one platform as pixi derives them: the OS
/// and machine from the subdir, the versions from the conda `python`
/// record, CPython as the implementation.
pub(super) fn marker_environment(
    platform: &str,
    records: &[RepoDataRecord],
) -> Result<MarkerEnvironment, LockError> {
    let failed = |reason: String| LockError::PypiPlatform {
        platform: platform.to_owned(),
        reason,
    };
    let subdir = Subdir::from_str(platform)
        .map_err(|error| failed(format!("not a conda platform: {error}")))?;
    let markers = envstore_core::pypi::platform_markers(subdir).ok_or_else(|| {
        failed("PyPI markers are known for Linux, macOS and Windows only".to_owned())
    })?;
    let python = records
        .iter()
        .find(|record| record.package_record.name.as_normalized() == "python")
        .ok_or_else(|| failed("it locks no conda 'python' to evaluate markers for".to_owned()))?;
    let full_version = python.package_record.version.as_str();
    let python_version = python
        .package_record
        .version
        .version()
        .as_major_minor()
        .map(|(major, minor)| format!("{major}.{minor}"))
        .ok_or_else(|| {
            failed(format!(
                "python version '{full_version}' has no major.minor"
            ))
        })?;
    MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
        implementation_name: "cpython",
        implementation_version: &full_version,
        os_name: markers.os_name,
        platform_machine: markers.platform_machine,
        platform_python_implementation: "CPython",
        platform_release: "",
        platform_system: markers.platform_system,
        platform_version: "",
        python_full_version: &full_version,
        python_version: &python_version,
        sys_platform: markers.sys_platform,
    })
    .map_err(|error| failed(format!("python version '{full_version}': {error}")))
}

/// A wheel as a conda-lock v1 `manager: pip` entry for one platform. Its
/// dependencies are the `requires_dist` entries whose markers hold on that
/// platform (extras are never requested), each as name → PEP 440
/// specifier (`*` for none), as conda-lock writes them.
pub(super) fn conda_lock_pip_package(
    platform: &str,
    wheel: &LockedWheel,
    markers: &MarkerEnvironment,
) -> Result<conda_lock::Package, LockError> {
    let mut dependencies: BTreeMap<String, String> = BTreeMap::new();
    for requirement in &wheel.requires_dist {
        let parsed = Requirement::<pep508_rs::VerbatimUrl>::from_str(requirement)
            .map_err(|error| wheel_error(wheel, format!("requirement '{requirement}': {error}")))?;
        if !parsed.marker.evaluate(markers, &[]) {
            continue;
        }
        let constraint = match &parsed.version_or_url {
            Some(VersionOrUrl::VersionSpecifier(specifiers)) if !specifiers.is_empty() => {
                specifiers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }
            _ => "*".to_owned(),
        };
        // The same name twice (under different markers): both must hold.
        dependencies
            .entry(parsed.name.to_string())
            .and_modify(|existing| match (existing.as_str(), constraint.as_str()) {
                (_, "*") => {}
                ("*", _) => *existing = constraint.clone(),
                _ => *existing = format!("{existing},{constraint}"),
            })
            .or_insert_with(|| constraint.clone());
    }
    Ok(conda_lock::Package {
        name: wheel.name.clone(),
        version: wheel.version.clone(),
        manager: conda_lock::Manager::Pip,
        platform: platform.to_owned(),
        dependencies,
        url: wheel.url.clone(),
        hash: conda_lock::Hashes {
            md5: None,
            sha256: Some(wheel.sha256.clone()),
        },
        source: None,
        build: None,
        category: "main".to_owned(),
        optional: false,
    })
}

/// A conda-lock `manager: pip` entry as a locked wheel. conda-lock keeps
/// only the dependencies that hold on the entry's platform, not the
/// wheel's `requires_dist` with its markers, so `requires_dist` stays
/// empty (as do `requires_python` and `index`, which conda-lock does not
/// record). Nothing is lost for the lock's identity: its hash covers each
/// wheel's URL and sha256 alone.
pub(super) fn wheel_from_conda_lock(package: &conda_lock::Package) -> Result<LockedWheel, String> {
    if let Some(source) = &package.source {
        return Err(format!(
            "PyPI package '{}' is a direct source ({}): envstore installs wheels only",
            package.name, source.url
        ));
    }
    let wheel = checked_wheel(&package.name, &package.url, package.hash.sha256.clone())?;
    Ok(LockedWheel {
        version: package.version.clone(),
        ..wheel
    })
}

/// conda-lock's `@EXPLICIT` line for a wheel: a comment to conda, a pip
/// install to `conda-lock install` and micromamba.
pub(super) fn explicit_line(wheel: &LockedWheel) -> String {
    format!(
        "# pip {} @ {}#sha256={}\n",
        wheel.name, wheel.url, wheel.sha256
    )
}

/// What conda-lock's `content_hash` of a platform covers for a wheel.
pub(super) fn content_hash_line(wheel: &LockedWheel) -> String {
    format!("pip {} sha256:{}", wheel.url, wheel.sha256)
}
