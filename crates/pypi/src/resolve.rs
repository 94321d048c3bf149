//! Resolving PEP 508 requirements for one target with uv's resolver, as
//! pixi's `lock_file/resolve/pypi.rs` does: markers and tags from the conda
//! `python` record, `requires-python` `==<python version>.*`, conda-provided
//! projects pinned and answered by a provider with no dependencies, wheels
//! only.

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use envstore_core::pypi::{LockedWheel, normalize_name};
use futures::FutureExt;
use uv_cache::Cache;
use uv_configuration::{Constraints, Excludes, Overrides};
use uv_distribution::{ArchiveMetadata, DistributionDatabase, Metadata};
use uv_distribution_filename::SourceDistExtension;
use uv_distribution_types::{
    BuiltDist, Dist, File, FileLocation, HashComparison, IndexCapabilities, IndexUrl, Name,
    PrioritizedDist, RegistrySourceDist, Requirement, RequirementSource, RequiresPython,
    ResolvedDist, SourceDist, SourceDistCompatibility,
};
use uv_normalize::PackageName;
use uv_pep440::{Version, VersionSpecifier, VersionSpecifiers};
use uv_pypi_types::{Conflicts, HashAlgorithm, VerbatimParsedUrl};
use uv_resolver::{
    AllowedYanks, DefaultResolverProvider, ExcludeNewer, ExcludeNewerValue, FlatDistributions,
    FlatIndex, InMemoryIndex, Manifest, MetadataResponse, Options, Preferences, PythonRequirement,
    ResolveError, Resolver, ResolverEnvironment, ResolverProvider, VersionMap, VersionsResponse,
    WheelMetadataResult,
};
use uv_types::{BuildContext, EmptyInstalledPackages, HashStrategy};

use crate::build_context::WheelsOnlyContext;
use crate::client::IndexSettings;
use crate::target::PythonTarget;
use crate::{PypiError, error_chain, strip_ansi};

/// How many wheels (or metadata files) are downloaded at once.
const DOWNLOAD_CONCURRENCY: usize = 16;

/// Resolves PEP 508 requirement strings for one target. Wheels only: a
/// project with only a source distribution fails with
/// [`PypiError::SourceBuildRequired`]. Projects in `conda` (normalized name
/// → conda version, see [`crate::conda_provided`]) are pinned to
/// `==version`, never fetched, and left out of the result.
/// `requires-python` is `==<python version>.*`. Pre-releases are taken
/// when a requirement names one or nothing else fits: uv's default mode,
/// `if-necessary` (in uv 0.0.72 `IfNecessaryOrExplicit` is a deprecated
/// alias of it). Every returned wheel has a sha256.
///
/// uv's resolver futures are not `Send`: the resolution runs on a thread of
/// its own (a current-thread runtime), so this future can be spawned.
pub async fn resolve(
    requirements: &[String],
    target: &PythonTarget,
    conda: &BTreeMap<String, String>,
    settings: &IndexSettings,
) -> Result<Vec<LockedWheel>, PypiError> {
    let requirements = requirements.to_vec();
    let target = target.clone();
    let conda = conda.clone();
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(resolve_here(&requirements, &target, &conda, &settings))
    })
    .await
    .map_err(|error| PypiError::Resolve {
        message: format!("the resolution stopped: {error}"),
    })?
}

async fn resolve_here(
    requirement_texts: &[String],
    target: &PythonTarget,
    conda: &BTreeMap<String, String>,
    settings: &IndexSettings,
) -> Result<Vec<LockedWheel>, PypiError> {
    let markers = target.markers()?;
    let tags = target.tags()?;
    let mut requirements = Vec::with_capacity(requirement_texts.len());
    let mut named_wheels = BTreeMap::new();
    for text in requirement_texts {
        let (requirement, wheel_url) = parse_requirement(text)?;
        if let Some(url) = wheel_url {
            named_wheels.insert(requirement.name.clone(), url);
        }
        requirements.push(requirement);
    }
    let conda_pins = conda_pins(conda)?;

    // As pixi does: the conda python's own version, `==3.11.9.*`.
    let requires_python = VersionSpecifiers::from_str(&format!("=={}.*", target.python_version()))
        .map(RequiresPython::from_specifiers)
        .map_err(|error| PypiError::UnsupportedTarget {
            platform: target.platform().to_string(),
            reason: format!("python version {}: {error}", target.python_version()),
        })?;

    fs_err::create_dir_all(&settings.cache_dir)?;
    let cache = Cache::from_path(&settings.cache_dir)
        .init()
        .await
        .map_err(|error| PypiError::Resolve {
            message: format!("uv's cache: {}", error_chain(&error)),
        })?;
    let client = settings.registry_client(cache.clone())?;
    let locations = settings.index_locations()?;
    let context = WheelsOnlyContext::new(cache, locations.clone());
    let build_options = WheelsOnlyContext::build_options();
    let capabilities = IndexCapabilities::default();
    let flat_index = FlatIndex::default();
    let hasher = HashStrategy::None;
    let exclude_newer = settings
        .exclude_newer
        .map(|timestamp| ExcludeNewer::global(ExcludeNewerValue::from(timestamp)))
        .unwrap_or_default();
    let options = Options {
        exclude_newer: exclude_newer.clone(),
        build_options: build_options.clone(),
        ..Options::default()
    };
    let environment = ResolverEnvironment::specific(markers.clone().into());
    let constraints =
        Constraints::from_requirements(conda_pins.values().map(|pin| pin.requirement.clone()));
    let manifest = Manifest::new(
        requirements,
        constraints,
        Overrides::default(),
        Excludes::default(),
        Preferences::default(),
        None,
        Default::default(),
        uv_resolver::Exclusions::default(),
        Vec::new(),
    );
    let semaphore = Arc::new(tokio::sync::Semaphore::new(DOWNLOAD_CONCURRENCY));
    let fallback = DefaultResolverProvider::new(
        DistributionDatabase::new(&client, &context, semaphore.clone()),
        &flat_index,
        Some(&tags),
        &requires_python,
        AllowedYanks::from_manifest(&manifest, &environment, options.dependency_mode),
        &hasher,
        exclude_newer,
        &locations,
        &build_options,
        &capabilities,
    );
    let provider = CondaProvidedFirst {
        fallback,
        conda: &conda_pins,
        index: settings
            .index_url
            .as_str()
            .parse::<IndexUrl>()
            .map_err(|error| PypiError::IndexUnreachable {
                message: format!("'{}' is not an index URL: {error}", settings.index_url),
            })?,
    };
    let in_memory = InMemoryIndex::default();
    let resolver = Resolver::new_custom_io(
        manifest,
        options,
        &hasher,
        environment,
        &markers,
        Some(tags.clone()),
        &PythonRequirement::from_marker_environment(&markers, requires_python.clone()),
        Conflicts::default(),
        &in_memory,
        context.git(),
        &capabilities,
        &locations,
        provider,
        EmptyInstalledPackages,
    );
    let output = resolver.resolve().await.map_err(resolve_error)?;
    let resolution = uv_distribution_types::Resolution::from(output);

    let mut locked = Vec::new();
    for resolved in resolution.distributions() {
        if conda_pins.contains_key(resolved.name()) {
            continue;
        }
        let ResolvedDist::Installable { dist, .. } = resolved else {
            continue;
        };
        let built = match dist.as_ref() {
            Dist::Built(built @ BuiltDist::Registry(_)) => built,
            Dist::Source(_) => {
                return Err(PypiError::SourceBuildRequired {
                    package: resolved.name().to_string(),
                });
            }
            Dist::Built(_) => {
                return Err(PypiError::Resolve {
                    message: format!("'{}' did not come from an index", resolved.name()),
                });
            }
        };
        let BuiltDist::Registry(registry) = built else {
            continue;
        };
        let wheel = match named_wheels.get(resolved.name()) {
            Some(wanted) => named_wheel(registry, wanted, &tags, target)?,
            None => registry.best_wheel(),
        };
        let url = wheel
            .file
            .url
            .to_url()
            .map_err(|error| PypiError::Resolve {
                message: format!("the URL of '{}': {error}", wheel.filename),
            })?;
        let sha256 = wheel
            .file
            .hashes
            .iter()
            .find(|digest| digest.algorithm == HashAlgorithm::Sha256)
            .map(|digest| digest.digest.to_ascii_lowercase())
            .ok_or_else(|| PypiError::MissingHash {
                wheel: wheel.filename.to_string(),
            })?;
        let metadata = client
            .wheel_metadata(built, context.git(), &capabilities, None)
            .await
            .map_err(|error| PypiError::IndexUnreachable {
                message: format!(
                    "the metadata of '{}': {}",
                    wheel.filename,
                    error_chain(&error)
                ),
            })?;
        locked.push(LockedWheel {
            name: normalize_name(wheel.filename.name.as_ref()),
            version: wheel.filename.version.to_string(),
            url: url.to_string(),
            sha256,
            size: wheel.file.size,
            requires_dist: metadata
                .requires_dist
                .iter()
                .map(ToString::to_string)
                .collect(),
            requires_python: metadata
                .requires_python
                .map(|specifiers| specifiers.to_string()),
            index: wheel.index.without_credentials().to_string(),
        });
    }
    locked.sort();
    Ok(locked)
}

/// A requirement for uv's resolver, and the URL of the wheel it names when
/// it is `name @ https://…/name-1.0-….whl`. Such a requirement is resolved
/// as `name==1.0` from the indexes (the policy made sure the wheel is one
/// of their files), and [`named_wheel`] then takes that very file, so it is
/// locked with the index's sha256 like any other.
fn parse_requirement(text: &str) -> Result<(Requirement, Option<url::Url>), PypiError> {
    let invalid = |message: String| PypiError::InvalidRequirement {
        requirement: text.to_string(),
        message,
    };
    let mut parsed = uv_pep508::Requirement::<VerbatimParsedUrl>::from_str(text)
        .map_err(|error| invalid(strip_ansi(&error.to_string())))?;
    let Some(uv_pep508::VersionOrUrl::Url(verbatim)) = &parsed.version_or_url else {
        return Ok((Requirement::from(parsed), None));
    };
    let url = url::Url::from(verbatim.verbatim.to_url());
    let file = url.path().rsplit('/').next().unwrap_or_default().to_owned();
    let filename = uv_distribution_filename::WheelFilename::from_str(&file).map_err(|error| {
        invalid(format!(
            "a URL requirement must name a wheel (.whl); '{file}': {error}"
        ))
    })?;
    if filename.name != parsed.name {
        return Err(invalid(format!(
            "'{file}' is a wheel of '{}', not of '{}'",
            filename.name, parsed.name
        )));
    }
    parsed.version_or_url = Some(uv_pep508::VersionOrUrl::VersionSpecifier(
        VersionSpecifiers::from(VersionSpecifier::equals_version(filename.version.clone())),
    ));
    Ok((Requirement::from(parsed), Some(url)))
}

/// The wheel of `registry` at `wanted` (fragments such as `#sha256=` aside),
/// when it fits the target; an error naming the file otherwise.
fn named_wheel<'a>(
    registry: &'a uv_distribution_types::RegistryBuiltDist,
    wanted: &url::Url,
    tags: &uv_platform_tags::Tags,
    target: &PythonTarget,
) -> Result<&'a uv_distribution_types::RegistryBuiltWheel, PypiError> {
    let without_fragment = |url: &url::Url| {
        let mut url = url.clone();
        url.set_fragment(None);
        url
    };
    let wanted_plain = without_fragment(wanted);
    let found = registry.wheels.iter().find(|wheel| {
        wheel
            .file
            .url
            .to_url()
            .is_ok_and(|url| without_fragment(&url) == wanted_plain)
    });
    let problem = |reason: String| PypiError::NamedWheel {
        url: wanted_plain.to_string(),
        reason,
    };
    let wheel = found.ok_or_else(|| {
        problem(
            "the index does not list this file for the version it names (is it a file of the index, and not yanked or newer than exclude_newer?)".to_owned(),
        )
    })?;
    if !wheel.filename.is_compatible(tags) {
        return Err(problem(format!(
            "its tags do not fit {} with python {}",
            target.platform(),
            target.python_version()
        )));
    }
    if let Some(fragment) = wanted.fragment()
        && let Some(expected) = fragment.strip_prefix("sha256=")
        && !wheel.file.hashes.iter().any(|digest| {
            digest.algorithm == HashAlgorithm::Sha256
                && digest.digest.eq_ignore_ascii_case(expected)
        })
    {
        return Err(problem(format!(
            "the index gives another sha256 than the URL's #sha256={expected}"
        )));
    }
    Ok(wheel)
}

/// A conda-provided project: its pin (`name==version`) and its version.
struct CondaPin {
    requirement: Requirement,
    version: Version,
}

fn conda_pins(
    conda: &BTreeMap<String, String>,
) -> Result<BTreeMap<PackageName, CondaPin>, PypiError> {
    conda
        .iter()
        .map(|(name, version_text)| {
            let invalid = || PypiError::InvalidCondaVersion {
                package: name.clone(),
                version: version_text.clone(),
            };
            let name = PackageName::from_str(name).map_err(|_| invalid())?;
            let version = Version::from_str(version_text).map_err(|_| invalid())?;
            let requirement = Requirement {
                name: name.clone(),
                extras: Box::default(),
                groups: Box::default(),
                marker: uv_pep508::MarkerTree::TRUE,
                source: RequirementSource::Registry {
                    specifier: VersionSpecifiers::from(VersionSpecifier::equals_version(
                        version.clone(),
                    )),
                    index: None,
                    conflict: None,
                },
                origin: None,
            };
            Ok((
                name,
                CondaPin {
                    requirement,
                    version,
                },
            ))
        })
        .collect()
}

/// pixi's `CondaResolverProvider`: a conda-provided project has exactly one
/// version, the conda one, with no dependencies (conda installed them);
/// everything else is asked of the index.
struct CondaProvidedFirst<'a, Context: BuildContext> {
    fallback: DefaultResolverProvider<'a, Context>,
    conda: &'a BTreeMap<PackageName, CondaPin>,
    /// Named as the origin of the stand-in distribution; never fetched.
    index: IndexUrl,
}

impl<Context: BuildContext> ResolverProvider for CondaProvidedFirst<'_, Context> {
    fn get_package_versions<'io>(
        &'io self,
        package_name: &'io PackageName,
        index: Option<&'io uv_distribution_types::IndexMetadata>,
    ) -> impl Future<Output = uv_resolver::PackageVersionsResult> + 'io {
        let Some(pin) = self.conda.get(package_name) else {
            return self
                .fallback
                .get_package_versions(package_name, index)
                .left_future();
        };
        // A stand-in source distribution: it is never downloaded (its
        // metadata is answered below) and left out of the result.
        let filename = format!("{package_name}-{}.tar.gz", pin.version);
        let file = File {
            dist_info_metadata: false,
            filename: filename.as_str().into(),
            hashes: Vec::new().into(),
            requires_python: None,
            size: None,
            upload_time_utc_ms: None,
            url: FileLocation::RelativeUrl("conda://provided/".into(), filename.as_str().into()),
            yanked: None,
            zstd: None,
        };
        let source = RegistrySourceDist {
            name: package_name.clone(),
            version: pin.version.clone(),
            file: Box::new(file),
            ext: SourceDistExtension::TarGz,
            index: self.index.clone(),
            wheels: Vec::new(),
            size_is_authoritative: false,
        };
        let dist = PrioritizedDist::from_source(
            source,
            Vec::new(),
            SourceDistCompatibility::Compatible(HashComparison::Matched),
        );
        let versions = FlatDistributions::from(BTreeMap::from([(pin.version.clone(), dist)]));
        std::future::ready(Ok(VersionsResponse::Found(vec![VersionMap::from(
            versions,
        )])))
        .right_future()
    }

    fn get_or_build_wheel_metadata<'io>(
        &'io self,
        dist: &'io Dist,
    ) -> impl Future<Output = WheelMetadataResult> + 'io {
        if let Dist::Source(SourceDist::Registry(source)) = dist
            && let Some(pin) = self.conda.get(&source.name)
        {
            return std::future::ready(Ok(MetadataResponse::Found(ArchiveMetadata {
                metadata: Metadata {
                    name: source.name.clone(),
                    version: pin.version.clone(),
                    requires_dist: Box::default(),
                    requires_python: None,
                    provides_extra: Box::default(),
                    dependency_groups: Default::default(),
                    dynamic: false,
                },
                hashes: Vec::new().into(),
            })))
            .left_future();
        }
        self.fallback
            .get_or_build_wheel_metadata(dist)
            .boxed_local()
            .right_future()
    }

    fn get_installed_metadata<'io>(
        &'io self,
        dist: &'io uv_distribution_types::InstalledDist,
    ) -> impl Future<Output = WheelMetadataResult> + 'io {
        self.fallback.get_installed_metadata(dist)
    }

    fn with_reporter(self, reporter: Arc<dyn uv_distribution::Reporter>) -> Self {
        Self {
            fallback: self.fallback.with_reporter(reporter),
            ..self
        }
    }
}

/// uv's failure as something a user can act on.
fn resolve_error(error: ResolveError) -> PypiError {
    match error {
        ResolveError::NoSolution(no_solution) => {
            let hints: Vec<String> = uv_errors::Hint::hints(no_solution.as_ref())
                .into_iter()
                .map(|hint| strip_ansi(&hint))
                .collect();
            let report = strip_ansi(no_solution.report());
            if let Some(package) = hints
                .iter()
                .find_map(|hint| sdist_only_package(hint, "Wheels are required for `", "`"))
                .or_else(|| sdist_only_in_report(&report))
            {
                return PypiError::SourceBuildRequired { package };
            }
            let mut report = report;
            for hint in hints {
                report.push_str("\nhint: ");
                report.push_str(&hint);
            }
            PypiError::NoSolution { report }
        }
        other => {
            let message = error_chain(&other);
            if reached_no_index(&other) {
                PypiError::IndexUnreachable { message }
            } else {
                PypiError::Resolve { message }
            }
        }
    }
}

fn sdist_only_package(text: &str, before: &str, after: &str) -> Option<String> {
    let start = text.find(before)? + before.len();
    let length = text[start..].find(after)?;
    Some(normalize_name(&text[start..start + length]))
}

/// uv's report says `Because foo==1.0 has no usable wheels and ...` (or
/// `all versions of foo have no usable wheels`).
fn sdist_only_in_report(report: &str) -> Option<String> {
    for marker in [" has no usable wheels", " have no usable wheels"] {
        if let Some(end) = report.find(marker) {
            let before = &report[..end];
            let word = before
                .rsplit(|character: char| character.is_whitespace())
                .next()?;
            let name = word
                .split(|character: char| "=<>!~".contains(character))
                .next()?;
            if !name.is_empty() {
                return Some(normalize_name(name));
            }
        }
    }
    None
}

/// A failure to talk to an index (connection, TLS, timeout, HTTP status):
/// uv reports those as its client's errors (a project an index does not
/// have is no error but an empty answer).
fn reached_no_index(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.downcast_ref::<reqwest::Error>().is_some()
            || error.downcast_ref::<uv_client::Error>().is_some()
            || matches!(
                error.downcast_ref::<ResolveError>(),
                Some(ResolveError::Client(_))
            )
            || matches!(
                error.downcast_ref::<uv_distribution::Error>(),
                Some(uv_distribution::Error::Client(_))
            )
        {
            return true;
        }
        current = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdist_only_packages_are_named_from_uv_messages() {
        assert_eq!(
            sdist_only_package(
                "Wheels are required for `Only_Sdist` because building from source is disabled",
                "Wheels are required for `",
                "`"
            ),
            Some("only-sdist".to_string())
        );
        assert_eq!(
            sdist_only_in_report(
                "  × No solution found when resolving dependencies:\n  ╰─▶ Because only-sdist==1.0 has no usable wheels and you require only-sdist, we can conclude that your requirements are unsatisfiable."
            ),
            Some("only-sdist".to_string())
        );
        assert_eq!(sdist_only_in_report("Because nothing else matters"), None);
    }

    #[test]
    fn requirements_parse_and_wheel_urls_become_pins() {
        let (plain, url) =
            parse_requirement("requests[socks]>=2; python_version >= '3.8'").expect("parses");
        assert!(url.is_none());
        assert_eq!(plain.name.as_ref(), "requests");
        let (pinned, url) = parse_requirement(
            "pkg[fast] @ https://example.invalid/files/pkg-1.0-py3-none-any.whl ; sys_platform == 'linux'",
        )
        .expect("parses");
        assert_eq!(
            url.map(String::from).as_deref(),
            Some("https://example.invalid/files/pkg-1.0-py3-none-any.whl")
        );
        let text = pinned.to_string();
        assert!(text.starts_with("pkg[fast]==1.0"), "{text}");
        assert!(text.contains("sys_platform == 'linux'"), "{text}");
        assert!(matches!(
            parse_requirement("pkg @ https://example.invalid/other-1.0-py3-none-any.whl"),
            Err(PypiError::InvalidRequirement { .. })
        ));
        assert!(matches!(
            parse_requirement("pkg @ https://example.invalid/pkg-1.0.tar.gz"),
            Err(PypiError::InvalidRequirement { .. })
        ));
        assert!(matches!(
            parse_requirement("not a requirement ==="),
            Err(PypiError::InvalidRequirement { .. })
        ));
    }

    #[test]
    fn conda_versions_become_pins() {
        let pins = conda_pins(&BTreeMap::from([(
            "numpy".to_string(),
            "1.26.4".to_string(),
        )]))
        .expect("pins");
        let pin = pins
            .get(&PackageName::from_str("numpy").expect("a name"))
            .expect("numpy is pinned");
        assert_eq!(pin.requirement.to_string(), "numpy==1.26.4");
        assert!(matches!(
            conda_pins(&BTreeMap::from([(
                "x".to_string(),
                "not a version".to_string()
            )])),
            Err(PypiError::InvalidCondaVersion { .. })
        ));
    }
}
