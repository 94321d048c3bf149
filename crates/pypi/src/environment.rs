//! The PyPI part of a solved environment: one resolution per platform, from
//! that platform's conda records and the target machines' virtual packages,
//! with the indexes and `exclude_newer` of the canonical spec. Used by the
//! worker (builds) and the API (`/solve`) alike, so both lock the same
//! wheels.

use std::collections::BTreeMap;
use std::str::FromStr;

use envstore_core::CanonicalSpec;
use envstore_core::pip::CanonicalPip;
use envstore_core::pypi::LockedWheel;
use envstore_solve::{SolvedEnvironment, virtual_packages_with};
use rattler_conda_types::{GenericVirtualPackage, RepoDataRecord, Subdir};
use url::Url;

use crate::{IndexSettings, PypiError, PythonTarget, conda_provided, resolve};

/// One platform of a solved environment, as a PyPI resolution needs it.
pub struct SolvedPlatform<'a> {
    pub platform: Subdir,
    pub records: &'a [RepoDataRecord],
    /// The target machines' virtual packages (declared system requirements
    /// or the platform's assumed ones): they decide the glibc / macOS
    /// baseline of the wheels.
    pub virtual_packages: Vec<GenericVirtualPackage>,
}

/// Why the PyPI part of an environment could not be resolved, and for
/// which platform.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error("resolving the PyPI packages for {platform} failed")]
    Platform {
        platform: String,
        #[source]
        source: PypiError,
    },
    #[error(
        "the environment has PyPI requirements but no 'python' for {platform}: PyPI packages are resolved for the environment's python"
    )]
    NoPython { platform: String },
    #[error("'{platform}' is not a platform")]
    UnknownPlatform { platform: String },
    #[error("'{value}' is not an index URL: {reason}")]
    IndexUrl { value: String, reason: String },
    #[error("exclude_newer '{value}' is not an RFC 3339 instant: {reason}")]
    ExcludeNewer { value: String, reason: String },
}

impl EnvironmentError {
    /// Whether another attempt may succeed (an index that did not answer).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Platform {
                source: PypiError::IndexUnreachable { .. },
                ..
            }
        )
    }
}

/// The index settings of `pip` over `base` (cache, trust roots, timeout):
/// its first index is the default one, the rest are extra indexes.
pub fn settings_for(
    pip: &CanonicalPip,
    base: &IndexSettings,
) -> Result<IndexSettings, EnvironmentError> {
    let parse = |value: &String| {
        Url::parse(value).map_err(|error| EnvironmentError::IndexUrl {
            value: value.clone(),
            reason: error.to_string(),
        })
    };
    let mut settings = base.clone();
    let mut indexes = pip.indexes.iter();
    if let Some(primary) = indexes.next() {
        settings.index_url = parse(primary)?;
    }
    settings.extra_index_urls = indexes.map(parse).collect::<Result<_, _>>()?;
    settings.exclude_newer = pip
        .exclude_newer
        .as_deref()
        .map(|value| {
            jiff::Timestamp::from_str(value).map_err(|error| EnvironmentError::ExcludeNewer {
                value: value.to_owned(),
                reason: error.to_string(),
            })
        })
        .transpose()?;
    Ok(settings)
}

/// Resolves `pip` for every platform, at once. Packages the conda solution
/// already provides are pinned to their conda versions and left out.
pub async fn resolve_environment(
    pip: &CanonicalPip,
    platforms: Vec<SolvedPlatform<'_>>,
    base: &IndexSettings,
) -> Result<BTreeMap<String, Vec<LockedWheel>>, EnvironmentError> {
    let settings = settings_for(pip, base)?;
    let resolutions = platforms.into_iter().map(|solved| {
        let settings = &settings;
        async move {
            let platform = solved.platform.to_string();
            let target =
                PythonTarget::from_conda(solved.platform, solved.records, &solved.virtual_packages)
                    .map_err(|source| EnvironmentError::Platform {
                        platform: platform.clone(),
                        source,
                    })?
                    .ok_or_else(|| EnvironmentError::NoPython {
                        platform: platform.clone(),
                    })?;
            let conda = conda_provided(solved.records);
            let wheels = resolve(&pip.requirements, &target, &conda, settings)
                .await
                .map_err(|source| EnvironmentError::Platform {
                    platform: platform.clone(),
                    source,
                })?;
            Ok::<_, EnvironmentError>((platform, wheels))
        }
    });
    futures::future::try_join_all(resolutions)
        .await
        .map(|resolved| resolved.into_iter().collect())
}

/// Resolves the `pip:` section of `spec` (if any) for every platform of its
/// conda solution `solved`, with the target machines' virtual packages the
/// spec declares (or the platform's assumed ones), never this machine's.
/// No `pip:` section: no wheels.
pub async fn resolve_solved(
    spec: &CanonicalSpec,
    solved: &SolvedEnvironment,
    base: &IndexSettings,
) -> Result<BTreeMap<String, Vec<LockedWheel>>, EnvironmentError> {
    let Some(pip) = &spec.pip else {
        return Ok(BTreeMap::new());
    };
    let mut platforms = Vec::with_capacity(solved.platforms.len());
    for (platform, records) in &solved.platforms {
        let subdir: Subdir = platform
            .parse()
            .map_err(|_| EnvironmentError::UnknownPlatform {
                platform: platform.clone(),
            })?;
        let requirements = spec
            .system_requirements
            .get(platform)
            .cloned()
            .unwrap_or_default();
        platforms.push(SolvedPlatform {
            platform: subdir,
            records: records.as_slice(),
            virtual_packages: virtual_packages_with(subdir, &requirements),
        });
    }
    resolve_environment(pip, platforms, base).await
}
