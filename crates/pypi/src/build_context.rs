//! uv's `BuildContext` for a resolution that never builds: uv needs one to
//! fetch metadata, but with `NoBuild::All` its distribution database refuses
//! every source distribution before it asks for an interpreter or a build,
//! so every build method here is an error. (pixi builds a lazy conda prefix
//! with an interpreter instead; envstore does not build sdists yet.)

use std::future::Future;
use std::path::Path;

use uv_cache::Cache;
use uv_configuration::{BuildKind, BuildOptions, BuildOutput, NoBinary, NoBuild, NoSources};
use uv_distribution_filename::DistFilename;
use uv_distribution_types::{
    CachedDist, ConfigSettings, DependencyMetadata, ExtraBuildRequires, ExtraBuildVariables,
    IndexCapabilities, IndexLocations, IsBuildBackendError, PackageConfigSettings, Requirement,
    SourceDist,
};
use uv_git::GitResolver;
use uv_python::{Interpreter, PythonEnvironment};
use uv_types::{
    AnyErrorBuild, BuildArena, BuildContext, BuildIsolation, BuildStack, ResolvedRequirements,
    SourceBuildTrait,
};
use uv_workspace::WorkspaceCache;

/// What every build request of a wheels-only resolution gets.
#[derive(Debug, thiserror::Error)]
#[error("source builds are not supported yet")]
pub(crate) struct SourceBuildsUnsupported;

impl uv_errors::Hint for SourceBuildsUnsupported {}

impl IsBuildBackendError for SourceBuildsUnsupported {
    fn is_build_backend_error(&self) -> bool {
        false
    }
}

/// A source build that cannot exist: `setup_build` never returns one.
pub(crate) enum NoSourceBuild {}

impl SourceBuildTrait for NoSourceBuild {
    async fn metadata(&mut self) -> Result<Option<std::path::PathBuf>, AnyErrorBuild> {
        match *self {}
    }

    async fn wheel<'a>(&'a self, _wheel_dir: &'a Path) -> Result<String, AnyErrorBuild> {
        match *self {}
    }
}

/// Everything uv's distribution database asks its build context for, with
/// building turned off.
pub(crate) struct WheelsOnlyContext {
    cache: Cache,
    git: GitResolver,
    build_arena: BuildArena<NoSourceBuild>,
    capabilities: IndexCapabilities,
    dependency_metadata: DependencyMetadata,
    build_options: BuildOptions,
    config_settings: ConfigSettings,
    config_settings_package: PackageConfigSettings,
    sources: NoSources,
    locations: IndexLocations,
    workspace_cache: WorkspaceCache,
    extra_build_requires: ExtraBuildRequires,
    extra_build_variables: ExtraBuildVariables,
}

impl WheelsOnlyContext {
    pub(crate) fn new(cache: Cache, locations: IndexLocations) -> Self {
        Self {
            cache,
            git: GitResolver::default(),
            build_arena: BuildArena::default(),
            capabilities: IndexCapabilities::default(),
            dependency_metadata: DependencyMetadata::default(),
            build_options: Self::build_options(),
            config_settings: ConfigSettings::default(),
            config_settings_package: PackageConfigSettings::default(),
            sources: NoSources::default(),
            locations,
            workspace_cache: WorkspaceCache::default(),
            extra_build_requires: ExtraBuildRequires::default(),
            extra_build_variables: ExtraBuildVariables::default(),
        }
    }

    /// Wheels allowed, building refused for every package.
    pub(crate) fn build_options() -> BuildOptions {
        BuildOptions::new(NoBinary::None, NoBuild::All)
    }
}

// The build methods name their error type instead of the trait's `impl
// IsBuildBackendError`: it is always the same one.
#[allow(refining_impl_trait)]
impl BuildContext for WheelsOnlyContext {
    type SourceDistBuilder = NoSourceBuild;

    #[expect(
        clippy::manual_async_fn,
        reason = "the trait returns `impl Future + '_`"
    )]
    fn interpreter(&self) -> impl Future<Output = &Interpreter> + '_ {
        async {
            // uv asks for the interpreter only to build a source
            // distribution, and `NoBuild::All` refuses those first
            // (uv-distribution's `source/mod.rs`); there is no interpreter.
            unreachable!("a wheels-only resolution never needs an interpreter")
        }
    }

    fn cache(&self) -> &Cache {
        &self.cache
    }

    fn git(&self) -> &GitResolver {
        &self.git
    }

    fn build_arena(&self) -> &BuildArena<Self::SourceDistBuilder> {
        &self.build_arena
    }

    fn capabilities(&self) -> &IndexCapabilities {
        &self.capabilities
    }

    fn dependency_metadata(&self) -> &DependencyMetadata {
        &self.dependency_metadata
    }

    fn build_options(&self) -> &BuildOptions {
        &self.build_options
    }

    fn build_isolation(&self) -> BuildIsolation<'_> {
        BuildIsolation::Isolated
    }

    fn config_settings(&self) -> &ConfigSettings {
        &self.config_settings
    }

    fn config_settings_package(&self) -> &PackageConfigSettings {
        &self.config_settings_package
    }

    fn sources(&self) -> &NoSources {
        &self.sources
    }

    fn locations(&self) -> &IndexLocations {
        &self.locations
    }

    fn workspace_cache(&self) -> &WorkspaceCache {
        &self.workspace_cache
    }

    fn extra_build_requires(&self) -> &ExtraBuildRequires {
        &self.extra_build_requires
    }

    fn extra_build_variables(&self) -> &ExtraBuildVariables {
        &self.extra_build_variables
    }

    async fn resolve<'a>(
        &'a self,
        _requirements: &'a [Requirement],
        _build_stack: &'a BuildStack,
    ) -> Result<ResolvedRequirements, SourceBuildsUnsupported> {
        Err(SourceBuildsUnsupported)
    }

    async fn install<'a>(
        &'a self,
        _requirements: &'a ResolvedRequirements,
        _venv: &'a PythonEnvironment,
        _build_stack: &'a BuildStack,
    ) -> Result<Vec<CachedDist>, SourceBuildsUnsupported> {
        Err(SourceBuildsUnsupported)
    }

    async fn setup_build<'a>(
        &'a self,
        _source: &'a Path,
        _subdirectory: Option<&'a Path>,
        _install_path: &'a Path,
        _stop_discovery_at: Option<&'a Path>,
        _version_id: Option<&'a str>,
        _dist: Option<&'a SourceDist>,
        _sources: &'a NoSources,
        _build_kind: BuildKind,
        _build_output: BuildOutput,
        _build_stack: BuildStack,
    ) -> Result<NoSourceBuild, SourceBuildsUnsupported> {
        Err(SourceBuildsUnsupported)
    }

    async fn direct_build<'a>(
        &'a self,
        _source: &'a Path,
        _subdirectory: Option<&'a Path>,
        _output_dir: &'a Path,
        _sources: NoSources,
        _build_kind: BuildKind,
        _version_id: Option<&'a str>,
    ) -> Result<Option<DistFilename>, SourceBuildsUnsupported> {
        Err(SourceBuildsUnsupported)
    }
}
