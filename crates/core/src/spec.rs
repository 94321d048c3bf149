//! Environment specs as users write them (conda's `environment.yml`, or the
//! same as JSON) and their canonical form, whose sha256 is the `spec_hash`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use rattler_conda_types::{Channel, MatchSpec, ParseStrictness, Subdir};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::channels::{ChannelAllowlist, ChannelError, DEFAULT_CHANNEL_ALIAS};
use crate::hash::ContentHash;
use crate::pip::{CanonicalPip, MAX_PIP_REQUIREMENTS, PipError, PipSection, pypi_index};
use url::Url;

/// Largest spec body accepted; a real environment.yml is a few kilobytes.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;
/// Upper bound on dependencies, before any namespace policy applies.
pub const MAX_DEPENDENCIES: usize = 2_000;
/// Upper bound on channels in one spec.
pub const MAX_CHANNELS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    Yaml,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("the spec is {size} bytes; at most {MAX_SPEC_BYTES} are accepted")]
    TooLarge { size: usize },
    #[error("the spec is not valid {format} at line {line}, column {column}: {message}")]
    Syntax {
        format: &'static str,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the spec is not valid {format}: {message}")]
    Structure {
        format: &'static str,
        message: String,
    },
    #[error("dependency '{dependency}' is not a valid conda match spec: {reason}")]
    InvalidDependency { dependency: String, reason: String },
    #[error("dependency '{dependency}' names channel '{channel}': {source}")]
    DependencyChannel {
        dependency: String,
        channel: String,
        #[source]
        source: ChannelError,
    },
    #[error(
        "dependency '{dependency}' names URL '{url}', which is not a package of the spec's channels: {defect}"
    )]
    DependencyUrl {
        dependency: String,
        url: String,
        defect: crate::channels::UrlDefect,
    },
    #[error("{error}")]
    Pip {
        #[source]
        error: PipError,
        /// The 1-based line of the spec it is on, when found.
        line: Option<usize>,
    },
    #[error(
        "the spec has a 'pip:' section but no 'python' among its conda dependencies: PyPI packages are resolved for the environment's python, so add one, e.g. 'python=3.11' (conda-lock refuses this too)"
    )]
    PipNeedsPython,
    #[error("the 'pip:' sections list {count} requirements; at most {max} are accepted")]
    TooManyPipRequirements { count: usize, max: usize },
    #[error(
        "exclude_newer '{value}' is not a date (2025-06-30) or an RFC 3339 instant in UTC (2025-06-30T12:00:00Z)"
    )]
    InvalidExcludeNewer { value: String },
    #[error("the spec has no dependencies")]
    NoDependencies,
    #[error("the spec has {count} dependencies; at most {MAX_DEPENDENCIES} are accepted")]
    TooManyDependencies { count: usize },
    #[error("the spec has {count} channels; at most {MAX_CHANNELS} are accepted")]
    TooManyChannels { count: usize },
    #[error("variable '{name}' {reason}")]
    InvalidVariable { name: String, reason: &'static str },
    #[error("'{0}' is not a known conda platform (e.g. linux-64, osx-arm64, win-64)")]
    UnknownPlatform(String),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("system requirement '{key}' {reason}")]
    InvalidSystemRequirement { key: String, reason: String },
    /// More than one problem, in the order found; never nested, never empty.
    #[error("the spec has {} problems (each is listed under 'errors'): {}", .0.len(), summary(.0))]
    Many(Vec<SpecError>),
}

/// The first few problems of many, so a summary stays readable.
fn summary(problems: &[SpecError]) -> String {
    const SHOWN: usize = 3;
    let mut text = problems
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > SHOWN {
        text.push_str(&format!("; and {} more", problems.len() - SHOWN));
    }
    text
}

impl SpecError {
    /// `Ok` when nothing was found, the problem itself when there is one,
    /// and [`SpecError::Many`] (flattened) when there are more.
    pub fn collect(problems: Vec<SpecError>) -> Result<(), SpecError> {
        let mut flat: Vec<SpecError> = Vec::with_capacity(problems.len());
        for problem in problems {
            match problem {
                SpecError::Many(inner) => flat.extend(inner),
                single => flat.push(single),
            }
        }
        match flat.len() {
            0 => Ok(()),
            1 => Err(flat.remove(0)),
            _ => Err(SpecError::Many(flat)),
        }
    }

    /// The slug of the problem `type` this error is answered with
    /// (`/problems/<slug>`). Several problems share one slug when they are
    /// all of one kind, and are `invalid-spec` otherwise.
    pub fn problem_type(&self) -> &'static str {
        match self {
            SpecError::Syntax { .. } | SpecError::Structure { .. } => "malformed-spec",
            SpecError::InvalidDependency { .. } => "invalid-dependency",
            SpecError::Channel(_)
            | SpecError::DependencyChannel { .. }
            | SpecError::DependencyUrl { .. } => "channel-not-allowed",
            SpecError::TooLarge { .. } => "too-large",
            SpecError::Pip { error, .. } => error.problem_type(),
            SpecError::PipNeedsPython => "pip-needs-python",
            SpecError::TooManyPipRequirements { .. } | SpecError::InvalidExcludeNewer { .. } => {
                "invalid-spec"
            }
            SpecError::Many(problems) => {
                let mut slugs = problems.iter().map(SpecError::problem_type);
                match slugs.next() {
                    Some(first) if slugs.all(|slug| slug == first) => first,
                    _ => "invalid-spec",
                }
            }
            SpecError::NoDependencies
            | SpecError::TooManyDependencies { .. }
            | SpecError::TooManyChannels { .. }
            | SpecError::InvalidVariable { .. }
            | SpecError::InvalidSystemRequirement { .. }
            | SpecError::UnknownPlatform(_) => "invalid-spec",
        }
    }

    /// Every single problem this error stands for.
    pub fn problems(&self) -> Vec<&SpecError> {
        match self {
            SpecError::Many(inner) => inner.iter().collect(),
            single => vec![single],
        }
    }
}

thread_local! {
    /// Bytes of text the spec being parsed may still produce. YAML aliases
    /// repeat a node without repeating its text, so a body far below
    /// [`MAX_SPEC_BYTES`] can name one long string a hundred thousand times
    /// and make the parser copy gigabytes before any count is checked.
    /// [`EnvironmentSpec::parse`] resets this to `MAX_SPEC_BYTES` and every
    /// string is charged before it is copied: what parses is never more than
    /// a body at the size limit could spell out without aliases.
    static TEXT_BUDGET: Cell<usize> = const { Cell::new(MAX_SPEC_BYTES) };
}

/// Charges one string of `len` bytes (plus one, so that empty strings count
/// too) against [`TEXT_BUDGET`]. Spelt out, every string takes at least that
/// many bytes of the body, so only aliases can run the budget out.
fn charge_text<E: de::Error>(len: usize) -> Result<(), E> {
    TEXT_BUDGET.with(|budget| match budget.get().checked_sub(len.saturating_add(1)) {
        Some(rest) => {
            budget.set(rest);
            Ok(())
        }
        None => {
            budget.set(0);
            Err(E::custom(format!(
                "with its aliases expanded the spec holds more than {MAX_SPEC_BYTES} bytes of text"
            )))
        }
    })
}

/// A string of the spec, charged against [`TEXT_BUDGET`] before it is copied.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                charge_text(value.len())?;
                Ok(Text(value.to_owned()))
            }
        }
        deserializer.deserialize_string(TextVisitor)
    }
}

/// One entry of `dependencies:`: a match spec string, or a `pip:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RawDependency {
    Conda(String),
    /// The lines of a `pip:` section.
    Pip(Vec<Text>),
}

impl<'de> Deserialize<'de> for RawDependency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DependencyVisitor;
        impl<'de> Visitor<'de> for DependencyVisitor {
            type Value = RawDependency;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a dependency string like 'numpy >=1.26' or a 'pip:' list")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                charge_text(value.len())?;
                Ok(RawDependency::Conda(value.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut lines = Vec::new();
                while let Some(Text(key)) = map.next_key::<Text>()? {
                    if key != "pip" {
                        return Err(de::Error::custom(format!(
                            "unexpected key '{key}' in dependencies (only 'pip' is known)"
                        )));
                    }
                    lines.extend(map.next_value::<Option<Vec<Text>>>()?.unwrap_or_default());
                }
                Ok(RawDependency::Pip(lines))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::invalid_type(de::Unexpected::Seq, &self))
            }
        }
        deserializer.deserialize_any(DependencyVisitor)
    }
}

/// A scalar of `variables:`; YAML lets people write numbers and booleans.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RawScalar {
    Text(String),
    Integer(i64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for RawScalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Written out rather than `#[serde(untagged)]`, which would first copy
        // the whole value, aliases expanded, into a buffer of its own.
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = RawScalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an integer or a boolean")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                charge_text(value.len())?;
                Ok(RawScalar::Text(value.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                Ok(RawScalar::Integer(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                i64::try_from(value)
                    .map(RawScalar::Integer)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(value), &self))
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
                Ok(RawScalar::Bool(value))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

impl RawScalar {
    fn into_string(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Integer(number) => number.to_string(),
            Self::Bool(flag) => flag.to_string(),
        }
    }
}

/// The top-level keys envstore reads; `prefix:` (written by `conda env
/// export`) is read and ignored, because the server decides where prefixes
/// live.
const KNOWN_KEYS: [&str; 8] = [
    "name",
    "exclude_newer",
    "channels",
    "dependencies",
    "platforms",
    "variables",
    "prefix",
    "system_requirements",
];

#[derive(Debug, Default)]
struct RawSpec {
    name: Option<Text>,
    channels: Vec<Text>,
    dependencies: Vec<RawDependency>,
    platforms: Vec<Text>,
    variables: BTreeMap<Text, RawScalar>,
    system_requirements: BTreeMap<Text, RawRequirement>,
    exclude_newer: Option<Text>,
    /// Top-level keys conda ignores (`description:`, `version:`, …), kept by
    /// name; their values are skipped without being copied.
    ignored_keys: Vec<String>,
}

impl<'de> Deserialize<'de> for RawSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Written out rather than derived: conda ignores keys it does not
        // know (with a warning), and `#[serde(flatten)]` would copy their
        // values, aliases expanded, before the text budget could see them.
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = RawSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping with 'channels' and 'dependencies'")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut raw = RawSpec::default();
                let mut seen = std::collections::BTreeSet::new();
                while let Some(Text(key)) = map.next_key::<Text>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format!("duplicate key '{key}'")));
                    }
                    match key.as_str() {
                        "name" => raw.name = map.next_value()?,
                        "channels" => {
                            raw.channels =
                                map.next_value::<Option<Vec<Text>>>()?.unwrap_or_default()
                        }
                        "dependencies" => {
                            raw.dependencies = map
                                .next_value::<Option<Vec<RawDependency>>>()?
                                .unwrap_or_default()
                        }
                        "platforms" => {
                            raw.platforms =
                                map.next_value::<Option<Vec<Text>>>()?.unwrap_or_default()
                        }
                        "variables" => {
                            raw.variables = map
                                .next_value::<Option<BTreeMap<Text, RawScalar>>>()?
                                .unwrap_or_default()
                        }
                        "exclude_newer" => raw.exclude_newer = map.next_value()?,
                        "system_requirements" => {
                            raw.system_requirements = map
                                .next_value::<Option<BTreeMap<Text, RawRequirement>>>()?
                                .unwrap_or_default()
                        }
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                            if !KNOWN_KEYS.contains(&key.as_str()) {
                                raw.ignored_keys.push(key);
                            }
                        }
                    }
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_map(SpecVisitor)
    }
}

/// A parsed, validated spec as the user wrote it.
#[derive(Debug, Clone)]
pub struct EnvironmentSpec {
    pub name: Option<String>,
    /// As written, `nodefaults` included: envstore never adds `defaults`, so
    /// `nodefaults` changes nothing and is left out of the canonical form.
    pub channels: Vec<String>,
    pub dependencies: Vec<MatchSpec>,
    pub platforms: Vec<Subdir>,
    pub variables: BTreeMap<String, String>,
    /// Top-level keys conda ignores (`description:`, …), by name. They do not
    /// change the environment, so they are not part of the canonical form.
    pub ignored_keys: Vec<String>,
    /// What envstore changed from what was written, as conda would (dropped
    /// pip-style extras, ignored keys), for the build log.
    pub notes: Vec<String>,
    /// `system_requirements:` for every platform it applies to, by pixi's
    /// key (`cuda`, `libc`, …): the target machines' virtual packages.
    pub system_requirements: SystemRequirements,
    /// `system_requirements:` entries written under a platform name; they
    /// win over [`Self::system_requirements`] for that platform.
    pub platform_system_requirements: BTreeMap<String, SystemRequirements>,
    /// The policy's per-platform defaults (see `Policy::apply`); what the
    /// spec declares wins over them.
    pub default_system_requirements: BTreeMap<String, SystemRequirements>,
    /// The `pip:` sections (all of them, in order), when there are any.
    pub pip: Option<PipSection>,
    /// The index a `pip:` section without `--index-url` uses: the policy's
    /// first allowed index (see `Policy::apply`), or else PyPI.
    pub default_pip_index: Option<Url>,
    /// `exclude_newer:` (an envstore key; conda ignores it): PyPI releases
    /// uploaded after this instant are not considered, so a resolution can
    /// be repeated. RFC 3339, in UTC.
    pub exclude_newer: Option<String>,
}

/// The channel name conda reads as "do not add `defaults`"; envstore never
/// adds them, so it is accepted and has no effect.
pub const NODEFAULTS: &str = "nodefaults";

impl EnvironmentSpec {
    pub fn parse(body: &[u8], format: SpecFormat) -> Result<Self, SpecError> {
        if body.len() > MAX_SPEC_BYTES {
            return Err(SpecError::TooLarge { size: body.len() });
        }
        TEXT_BUDGET.with(|budget| budget.set(MAX_SPEC_BYTES));
        let raw: RawSpec = match format {
            SpecFormat::Yaml => serde_yaml::from_slice(body).map_err(yaml_error)?,
            SpecFormat::Json => serde_json::from_slice(body).map_err(json_error)?,
        };
        let text = String::from_utf8_lossy(body);
        Self::from_raw(raw, &text)
    }

    /// Checks every part of the spec and reports every problem found, not
    /// only the first: a user fixes them all in one round.
    fn from_raw(raw: RawSpec, body: &str) -> Result<Self, SpecError> {
        let mut problems = Vec::new();
        if raw.channels.len() > MAX_CHANNELS {
            problems.push(SpecError::TooManyChannels {
                count: raw.channels.len(),
            });
        }
        if raw.dependencies.len() > MAX_DEPENDENCIES {
            return Err(SpecError::TooManyDependencies {
                count: raw.dependencies.len(),
            });
        }
        let mut notes = Vec::new();
        let mut dependencies = Vec::with_capacity(raw.dependencies.len());
        let mut pip_lines: Option<Vec<String>> = None;
        for dependency in raw.dependencies {
            match dependency {
                RawDependency::Pip(lines) => pip_lines
                    .get_or_insert_with(Vec::new)
                    .extend(lines.into_iter().map(|Text(line)| line)),
                RawDependency::Conda(text) => match parse_dependency_as_conda(&text) {
                    Ok((spec, note)) => {
                        dependencies.push(spec);
                        notes.extend(note);
                    }
                    Err(error) => problems.push(error),
                },
            }
        }
        let mut platforms = Vec::with_capacity(raw.platforms.len());
        for Text(platform) in &raw.platforms {
            match platform.parse::<Subdir>() {
                Ok(subdir) if subdir != Subdir::NoArch => platforms.push(subdir),
                _ => problems.push(SpecError::UnknownPlatform(
                    platform.escape_debug().to_string(),
                )),
            }
        }
        let (system_requirements, platform_system_requirements) =
            match read_system_requirements(raw.system_requirements) {
                Ok(read) => read,
                Err(error) => {
                    problems.push(error);
                    Default::default()
                }
            };
        let mut variables = BTreeMap::new();
        for (Text(key), value) in raw.variables {
            match check_variable(key, value.into_string()) {
                Ok((key, value)) => {
                    variables.insert(key, value);
                }
                Err(error) => problems.push(error),
            }
        }
        let pip = pip_lines.and_then(|lines| {
            let count = lines.len();
            if count > MAX_PIP_REQUIREMENTS {
                problems.push(SpecError::TooManyPipRequirements {
                    count,
                    max: MAX_PIP_REQUIREMENTS,
                });
                return None;
            }
            match PipSection::parse(lines.iter().map(String::as_str)) {
                Ok(section) if section.requirements.is_empty() => None,
                Ok(section) => Some(section),
                Err(errors) => {
                    problems.extend(errors.into_iter().map(|error| {
                        let line = error
                            .line_text()
                            .and_then(|text| line_of_list_item(body, text));
                        SpecError::Pip { error, line }
                    }));
                    None
                }
            }
        });
        let exclude_newer = match raw.exclude_newer {
            Some(Text(value)) => match normalize_instant(&value) {
                Some(instant) => Some(instant),
                None => {
                    problems.push(SpecError::InvalidExcludeNewer {
                        value: value.escape_debug().to_string(),
                    });
                    None
                }
            },
            None => None,
        };
        SpecError::collect(problems)?;
        if !raw.ignored_keys.is_empty() {
            let keys: Vec<String> = raw
                .ignored_keys
                .iter()
                .map(|key| format!("'{}'", key.escape_debug()))
                .collect();
            notes.push(format!(
                "top-level keys {} do not change the environment and were ignored, as conda ignores them",
                keys.join(", ")
            ));
        }
        Ok(Self {
            name: raw.name.map(|Text(name)| name),
            channels: raw
                .channels
                .into_iter()
                .map(|Text(channel)| channel)
                .collect(),
            dependencies,
            platforms,
            variables,
            ignored_keys: raw.ignored_keys,
            notes,
            system_requirements,
            platform_system_requirements,
            default_system_requirements: BTreeMap::new(),
            pip,
            default_pip_index: None,
            exclude_newer,
        })
    }

    /// The canonical form: channels resolved through the allowlist, match
    /// specs normalised and sorted, platforms explicit. Two specs that mean the
    /// same environment give the same canonical form and so the same hash.
    pub fn canonicalize(
        &self,
        allowlist: &ChannelAllowlist,
        default_platform: Subdir,
    ) -> Result<CanonicalSpec, SpecError> {
        let mut problems = Vec::new();
        let mut channels: Vec<String> = Vec::new();
        let written: Vec<&str> = self
            .channels
            .iter()
            .map(String::as_str)
            .filter(|channel| channel.trim() != NODEFAULTS)
            .collect();
        let requested: Vec<&str> = if written.is_empty() {
            allowlist.default_channels()
        } else {
            written
        };
        if requested.is_empty() {
            problems.push(SpecError::Channel(ChannelError::NoChannels));
        }
        for channel in requested {
            match allowlist.resolve(channel) {
                Ok(named) => {
                    let url = named.url.to_string();
                    if !channels.contains(&url) {
                        channels.push(url);
                    }
                }
                Err(error) => problems.push(SpecError::Channel(error)),
            }
        }
        // Checked here rather than when parsing, so a policy's default
        // packages can fill an empty list first.
        if self.dependencies.is_empty() {
            problems.push(SpecError::NoDependencies);
        }
        let mut platforms: Vec<String> = if self.platforms.is_empty() {
            vec![default_platform.to_string()]
        } else {
            self.platforms.iter().map(ToString::to_string).collect()
        };
        platforms.sort();
        platforms.dedup();
        let resolved: Vec<url::Url> = channels
            .iter()
            .filter_map(|url| url::Url::parse(url).ok())
            .collect();
        let mut solvable = Vec::with_capacity(self.dependencies.len());
        for dependency in &self.dependencies {
            match check_dependency(dependency, allowlist, &resolved, &channels, &platforms) {
                Ok(checked) => solvable.push(checked),
                Err(error) => problems.push(error),
            }
        }
        let system_requirements = match self.system_requirements_for(&platforms) {
            Ok(requirements) => requirements,
            Err(error) => {
                problems.push(error);
                BTreeMap::new()
            }
        };
        let pip = self.pip.as_ref().map(|section| {
            let has_python = self.dependencies.iter().any(|dependency| {
                matches!(&dependency.name, rattler_conda_types::PackageNameMatcher::Exact(name) if name.as_normalized() == "python")
            });
            if !has_python {
                problems.push(SpecError::PipNeedsPython);
            }
            let default_index = self.default_pip_index.clone().unwrap_or_else(pypi_index);
            let mut requirements: Vec<String> = section
                .requirements
                .iter()
                .map(|requirement| requirement.requirement.clone())
                .collect();
            requirements.sort();
            CanonicalPip {
                requirements,
                indexes: section
                    .indexes(&default_index)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                exclude_newer: self.exclude_newer.clone(),
            }
        });
        SpecError::collect(problems)?;
        let mut dependencies: Vec<String> = solvable.iter().map(ToString::to_string).collect();
        dependencies.sort();
        dependencies.dedup();
        let canonical = CanonicalSpec {
            channels,
            dependencies,
            platforms,
            variables: self.variables.clone(),
            system_requirements,
            pip,
            from_lock: None,
        };
        // Aliases and resolved channel URLs can make the canonical form
        // larger than the body was; what is accepted must export (under any
        // valid name) to a spec that is accepted again.
        let exported = canonical.to_environment_yaml(LONGEST_NAME).len();
        if exported > MAX_SPEC_BYTES {
            return Err(SpecError::TooLarge { size: exported });
        }
        Ok(canonical)
    }
}

/// The longest environment name, for sizing exports.
const LONGEST_NAME: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// A dependency's own channel (`conda-forge::numpy`) must resolve through the
/// allow-list to one of the spec's channels, and a `url=` must be a package
/// file of one of them. Returns the spec as it is solved: a channel written
/// by name or public URL becomes the URL of the channel that serves it.
fn check_dependency(
    dependency: &MatchSpec,
    allowlist: &ChannelAllowlist,
    resolved: &[url::Url],
    channels: &[String],
    platforms: &[String],
) -> Result<MatchSpec, SpecError> {
    let mut checked = dependency.clone();
    if let Some(channel) = &dependency.channel {
        let url = channel.base_url.url().to_string();
        // rattler reads a name as a URL under conda's default alias; the
        // allow-list maps that URL back to the name, or to a configured alias.
        let named = allowlist
            .resolve(&url)
            .or_else(|error| match &channel.name {
                Some(name) if url == format!("{DEFAULT_CHANNEL_ALIAS}{name}/") => {
                    allowlist.resolve(name)
                }
                _ => Err(error),
            })
            .map_err(|source| SpecError::DependencyChannel {
                dependency: dependency.to_string(),
                channel: url.clone(),
                source,
            })?;
        // Allowed on the server is not enough: the spec's channels
        // are what the namespace's policy allows.
        if !resolved.contains(&named.url) {
            return Err(SpecError::DependencyChannel {
                dependency: dependency.to_string(),
                channel: url.clone(),
                source: ChannelError::NotAllowed {
                    channel: named.name.clone(),
                    allowed: channels.join(", "),
                },
            });
        }
        // Left as written when it already is the channel's URL, so specs
        // accepted before names were resolved keep their hash.
        if named.url.as_str() != url {
            checked.channel = Some(std::sync::Arc::new(Channel::from_url(named.url.clone())));
        }
    }
    // A `url=` spec makes the gateway fetch that URL directly: it must
    // be a package file of one of the spec's channels, for one of its
    // platforms, compared after decoding (see `locate_in`).
    if let Some(url) = &dependency.url {
        let checked_url = crate::channels::locate_in(resolved, url)
            .and_then(|path| path.check_package(platforms));
        if let Err(defect) = checked_url {
            return Err(SpecError::DependencyUrl {
                dependency: dependency.to_string(),
                url: crate::channels::public_url(url).to_string(),
                defect,
            });
        }
    }
    Ok(checked)
}

/// The 1-based line where a list item with `text` is written (`- text`,
/// quoted or not, or an item of a flow list), so a refusal can point at it.
/// The first such line; `None` when it cannot be found (e.g. in JSON
/// written on one line, where every item is on line 1 anyway).
fn line_of_list_item(body: &str, text: &str) -> Option<usize> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    body.lines()
        .position(|line| {
            let item = line.trim_start().trim_start_matches('-').trim();
            let unquoted = item.trim_matches(|c| c == '"' || c == '\'' || c == ',');
            unquoted == text || (line.contains(text) && !line.trim_start().starts_with('#'))
        })
        .map(|index| index + 1)
}

/// `exclude_newer:` as an RFC 3339 instant in UTC: a date means its
/// midnight (UTC), as uv reads it. Only the shapes `YYYY-MM-DD` and
/// `YYYY-MM-DDTHH:MM:SS(.fff)Z` are accepted, with plausible fields.
fn normalize_instant(value: &str) -> Option<String> {
    let value = value.trim();
    let (date, time) = match value.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (value, None),
    };
    let fields: Vec<&str> = date.split('-').collect();
    let number = |text: &str, digits: usize, range: std::ops::RangeInclusive<u32>| {
        (text.len() == digits && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u32>().ok())
            .flatten()
            .filter(|n| range.contains(n))
    };
    let [year, month, day] = fields.as_slice() else {
        return None;
    };
    number(year, 4, 1970..=9999)?;
    number(month, 2, 1..=12)?;
    number(day, 2, 1..=31)?;
    let time = match time {
        None => "00:00:00".to_owned(),
        Some(time) => {
            let time = time
                .strip_suffix('Z')
                .or_else(|| time.strip_suffix("+00:00"))?;
            let (whole, fraction) = match time.split_once('.') {
                Some((whole, fraction)) => (whole, Some(fraction)),
                None => (time, None),
            };
            let parts: Vec<&str> = whole.split(':').collect();
            let [hours, minutes, seconds] = parts.as_slice() else {
                return None;
            };
            number(hours, 2, 0..=23)?;
            number(minutes, 2, 0..=59)?;
            number(seconds, 2, 0..=60)?;
            if let Some(fraction) = fraction
                && (fraction.is_empty()
                    || fraction.len() > 9
                    || !fraction.bytes().all(|b| b.is_ascii_digit()))
            {
                return None;
            }
            match fraction {
                Some(fraction) => format!("{whole}.{fraction}"),
                None => whole.to_owned(),
            }
        }
    };
    Some(format!("{date}T{time}Z"))
}

/// Reads a dependency as conda does before it is a match spec: `name=<2`
/// is the operator `<` (conda drops the `=`), and pip-style extras
/// (`dask[complete]`) are dropped, which the returned note says.
fn parse_dependency_as_conda(text: &str) -> Result<(MatchSpec, Option<String>), SpecError> {
    let (channel, rest) = match text.rsplit_once("::") {
        Some((channel, rest)) => (Some(channel), rest),
        None => (None, text),
    };
    let rest = rest.trim_start();
    let name_end = rest
        .find(|character: char| !(character.is_ascii_alphanumeric() || "-_.".contains(character)))
        .unwrap_or(rest.len());
    let (name, mut tail) = rest.split_at(name_end);
    let mut note = None;
    if let Some(extras) = tail.strip_prefix('[')
        && let Some((inside, after)) = extras.split_once(']')
    {
        {
            let is_extras = !inside.is_empty()
                && inside.split(',').all(|extra| {
                    let extra = extra.trim();
                    !extra.is_empty()
                        && extra
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                });
            if !name.is_empty() && is_extras {
                note = Some(format!(
                    "dependency '{}': the extras [{inside}] were dropped, as conda does (extras are a pip feature)",
                    text.escape_debug()
                ));
                tail = after;
            }
        }
    }
    let tail = match tail.strip_prefix('=') {
        Some(operator) if operator.starts_with(['<', '>', '!', '~']) => operator,
        _ => tail,
    };
    let rewritten = match channel {
        Some(channel) => format!("{channel}::{name}{tail}"),
        None => format!("{name}{tail}"),
    };
    let spec = if rewritten == text {
        parse_dependency(text)?
    } else {
        parse_dependency(&rewritten).map_err(|error| match error {
            SpecError::InvalidDependency { reason, .. } => SpecError::InvalidDependency {
                dependency: text.escape_debug().to_string(),
                reason,
            },
            other => other,
        })?
    };
    Ok((spec, note))
}

fn parse_dependency(text: &str) -> Result<MatchSpec, SpecError> {
    let invalid = |reason: String| SpecError::InvalidDependency {
        dependency: text.escape_debug().to_string(),
        reason,
    };
    // The default options accept exact package names only: no globs or
    // regexes, which would let one line pull in arbitrary packages.
    let spec = MatchSpec::from_str(text, ParseStrictness::Lenient)
        .map_err(|error| invalid(error.to_string()))?;
    // The canonical form keeps the spec as rattler writes it, and the solver
    // reads that text back: what was checked here must be what gets solved.
    // rattler cannot write every spec it reads (a build string holding both
    // quote characters and a `]`, e.g. `p=2="]'`, comes out under an
    // `unrepresentable-build` key that no parser accepts), so refuse a spec
    // whose written form does not read back as the same spec.
    let written = spec.to_string();
    match MatchSpec::from_str(&written, ParseStrictness::Lenient) {
        Ok(read_back) if read_back == spec => Ok(spec),
        _ => Err(invalid(format!(
            "it cannot be written back as a match spec that means the same (it comes out as '{}')",
            written.escape_debug()
        ))),
    }
}

/// A variable is written into shell scripts run on activation: its name must
/// be an identifier every shell accepts, and its value free of control
/// characters (a newline or NUL could end the quoting it is written in).
fn check_variable(name: String, value: String) -> Result<(String, String), SpecError> {
    let invalid = |name: &str, reason| SpecError::InvalidVariable {
        name: name.escape_debug().to_string(),
        reason,
    };
    let mut characters = name.chars();
    let identifier = characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|rest| rest.is_ascii_alphanumeric() || rest == '_');
    if !identifier {
        return Err(invalid(
            &name,
            "is not a valid name: use letters, digits and '_', not starting with a digit",
        ));
    }
    if name.starts_with("CONDA_") || name == "PATH" {
        return Err(invalid(
            &name,
            "is managed by conda activation and cannot be set by an environment",
        ));
    }
    if value
        .chars()
        .any(|character| character.is_control() && character != '\t')
    {
        return Err(invalid(
            &name,
            "has a control character (such as a newline) in its value",
        ));
    }
    Ok((name, value))
}

fn yaml_error(error: serde_yaml::Error) -> SpecError {
    let message = error.to_string();
    match error.location() {
        Some(location) => SpecError::Syntax {
            format: "YAML",
            line: location.line(),
            column: location.column(),
            message: strip_location(&message),
        },
        None => SpecError::Structure {
            format: "YAML",
            message,
        },
    }
}

/// Adds to `dropped` the path of every non-empty field of `stored` that
/// `known` (the same value read and written again) lacks, looking into the
/// objects and lists both have.
fn dropped_fields(
    stored: &serde_json::Value,
    known: &serde_json::Value,
    path: &str,
    dropped: &mut Vec<String>,
) {
    use serde_json::Value;
    match (stored, known) {
        (Value::Object(stored), Value::Object(known)) => {
            for (key, value) in stored {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known.get(key) {
                    Some(known) => dropped_fields(value, known, &here, dropped),
                    None if asks_for_nothing(value) => {}
                    None => dropped.push(here),
                }
            }
        }
        (Value::Array(stored), Value::Array(known)) => {
            for (index, (stored, known)) in stored.iter().zip(known).enumerate() {
                dropped_fields(stored, known, &format!("{path}[{index}]"), dropped);
            }
        }
        _ => {}
    }
}

/// Whether a field's value is one serde leaves out or defaults.
fn asks_for_nothing(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        Value::Bool(true) | Value::Number(_) => false,
    }
}

fn json_error(error: serde_json::Error) -> SpecError {
    SpecError::Syntax {
        format: "JSON",
        line: error.line(),
        column: error.column(),
        message: strip_location(&error.to_string()),
    }
}

/// Both serde_yaml and serde_json append " at line L column C"; the location
/// is reported in its own fields.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// A target machine's virtual packages, by pixi's `[system-requirements]`
/// key (`cuda`, `libc`, `linux`, `macos`, `archspec`), each with its version
/// (for `archspec`, the microarchitecture).
pub type SystemRequirements = BTreeMap<String, String>;

/// One kind of system requirement: pixi's key, the other spellings people
/// write (conda's virtual package names among them), the virtual package it
/// sets, and the platforms that have it.
struct RequirementKind {
    key: &'static str,
    aliases: &'static [&'static str],
    virtual_package: &'static str,
    platforms: &'static [&'static str],
}

/// Every key `system_requirements:` knows; `platforms` are prefixes of the
/// platform names the virtual package exists on (empty: every platform).
const REQUIREMENT_KINDS: [RequirementKind; 5] = [
    RequirementKind {
        key: "cuda",
        aliases: &["__cuda"],
        virtual_package: "__cuda",
        platforms: &["linux-", "win-"],
    },
    RequirementKind {
        key: "libc",
        aliases: &["glibc", "__glibc"],
        virtual_package: "__glibc",
        platforms: &["linux-"],
    },
    RequirementKind {
        key: "linux",
        aliases: &["__linux"],
        virtual_package: "__linux",
        platforms: &["linux-"],
    },
    RequirementKind {
        key: "macos",
        aliases: &["osx", "__osx"],
        virtual_package: "__osx",
        platforms: &["osx-"],
    },
    RequirementKind {
        key: "archspec",
        aliases: &["__archspec"],
        virtual_package: "__archspec",
        platforms: &[],
    },
];

fn requirement_kind(key: &str) -> Option<&'static RequirementKind> {
    let key = key.trim().to_ascii_lowercase();
    REQUIREMENT_KINDS
        .iter()
        .find(|kind| kind.key == key || kind.aliases.contains(&key.as_str()))
}

/// The virtual package a system requirement key sets (`cuda` -> `__cuda`).
pub fn system_requirement_virtual_package(key: &str) -> Option<&'static str> {
    requirement_kind(key).map(|kind| kind.virtual_package)
}

/// Whether a system requirement key means something on `platform` (CUDA
/// exists on Linux and Windows, glibc on Linux, macOS on osx-*).
pub fn system_requirement_applies(key: &str, platform: &str) -> bool {
    requirement_kind(key).is_some_and(|kind| {
        platform != "noarch"
            && (kind.platforms.is_empty()
                || kind
                    .platforms
                    .iter()
                    .any(|prefix| platform.starts_with(prefix)))
    })
}

/// A value under `system_requirements:` as written: a version, a number
/// (YAML reads `12.4` as one), or a mapping (a platform's own entries, or
/// pixi's `libc: {family: glibc, version: "2.28"}`).
#[derive(Debug)]
enum RawRequirement {
    Value(String),
    Number,
    Table(BTreeMap<Text, RawRequirement>),
}

impl<'de> Deserialize<'de> for RawRequirement {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RequirementVisitor;
        impl<'de> Visitor<'de> for RequirementVisitor {
            type Value = RawRequirement;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a version like '12.4' or a mapping of requirements")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                charge_text(value.len())?;
                Ok(RawRequirement::Value(value.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                Ok(RawRequirement::Value(value.to_string()))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                Ok(RawRequirement::Value(value.to_string()))
            }
            fn visit_f64<E: de::Error>(self, _value: f64) -> Result<Self::Value, E> {
                Ok(RawRequirement::Number)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut table = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<Text, RawRequirement>()? {
                    table.insert(key, value);
                }
                Ok(RawRequirement::Table(table))
            }
        }
        deserializer.deserialize_any(RequirementVisitor)
    }
}

fn invalid_requirement(key: &str, reason: impl Into<String>) -> SpecError {
    SpecError::InvalidSystemRequirement {
        key: key.escape_debug().to_string(),
        reason: reason.into(),
    }
}

/// Checks one requirement and returns it as the canonical form holds it:
/// pixi's key and the version as rattler writes it.
pub fn check_system_requirement(key: &str, value: &str) -> Result<(String, String), SpecError> {
    let kind = requirement_kind(key).ok_or_else(|| {
        invalid_requirement(
            key,
            "is not known: use cuda, libc, linux, macos or archspec (pixi's names), or a platform name with those under it",
        )
    })?;
    let value = value.trim();
    if kind.key == "archspec" {
        let valid = !value.is_empty()
            && value.len() <= 64
            && value
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || character == '_');
        if !valid {
            return Err(invalid_requirement(
                key,
                format!(
                    "'{}' is not a microarchitecture name (such as x86_64_v3 or zen4)",
                    value.escape_debug()
                ),
            ));
        }
        return Ok((kind.key.to_owned(), value.to_owned()));
    }
    let version = value
        .starts_with(|character: char| character.is_ascii_digit())
        .then(|| value.parse::<rattler_conda_types::Version>().ok())
        .flatten()
        .ok_or_else(|| {
            invalid_requirement(
                key,
                format!(
                    "'{}' is not a version: write the version the target machines have, such as '12.4' (no operators)",
                    value.escape_debug()
                ),
            )
        })?;
    Ok((kind.key.to_owned(), version.to_string()))
}

/// One `key: value` of `system_requirements:`.
fn read_requirement(key: &str, value: RawRequirement) -> Result<(String, String), SpecError> {
    let text = match value {
        RawRequirement::Value(text) => text,
        RawRequirement::Number => {
            return Err(invalid_requirement(
                key,
                "is a YAML number: write the version in quotes (e.g. '12.4'), or 12.10 would be read as 12.1",
            ));
        }
        // pixi's `libc = { family = "glibc", version = "2.28" }`.
        RawRequirement::Table(mut table)
            if requirement_kind(key).is_some_and(|kind| kind.key == "libc") =>
        {
            let family = table.remove(&Text("family".to_owned()));
            if let Some(family) = family
                && !matches!(&family, RawRequirement::Value(name) if name.trim() == "glibc")
            {
                return Err(invalid_requirement(
                    key,
                    "family must be glibc, the only C library conda has a virtual package for",
                ));
            }
            let version = table.remove(&Text("version".to_owned()));
            if let Some(Text(extra)) = table.keys().next() {
                return Err(invalid_requirement(
                    key,
                    format!(
                        "has unknown key '{}' (only family and version)",
                        extra.escape_debug()
                    ),
                ));
            }
            match version {
                Some(RawRequirement::Table(_)) | None => {
                    return Err(invalid_requirement(key, "needs a version"));
                }
                Some(version) => return read_requirement(key, version),
            }
        }
        RawRequirement::Table(_) => {
            return Err(invalid_requirement(key, "must be a version, not a mapping"));
        }
    };
    check_system_requirement(key, &text)
}

/// Reads `system_requirements:`: entries for every platform, and entries
/// under a platform name (which must apply to that platform). Every
/// problem is reported.
#[allow(clippy::type_complexity)]
fn read_system_requirements(
    raw: BTreeMap<Text, RawRequirement>,
) -> Result<(SystemRequirements, BTreeMap<String, SystemRequirements>), SpecError> {
    let mut problems = Vec::new();
    let mut everywhere = SystemRequirements::new();
    let mut per_platform: BTreeMap<String, SystemRequirements> = BTreeMap::new();
    for (Text(key), value) in raw {
        let platform = key
            .parse::<Subdir>()
            .ok()
            .filter(|subdir| *subdir != Subdir::NoArch);
        match (platform, value) {
            (Some(subdir), RawRequirement::Table(table)) => {
                let platform = subdir.to_string();
                for (Text(inner), value) in table {
                    match read_requirement(&inner, value) {
                        Ok((key, _)) if !system_requirement_applies(&key, &platform) => problems
                            .push(invalid_requirement(
                                &inner,
                                format!("does not exist on {platform}"),
                            )),
                        Ok((key, version)) => {
                            if per_platform
                                .entry(platform.clone())
                                .or_default()
                                .insert(key, version)
                                .is_some()
                            {
                                problems.push(invalid_requirement(
                                    &inner,
                                    format!("is given twice for {platform}"),
                                ));
                            }
                        }
                        Err(error) => problems.push(error),
                    }
                }
            }
            (_, value) => match read_requirement(&key, value) {
                Ok((key, version)) => {
                    if everywhere.insert(key.clone(), version).is_some() {
                        problems.push(invalid_requirement(
                            &key,
                            "is given twice (under two spellings)",
                        ));
                    }
                }
                Err(error) => problems.push(error),
            },
        }
    }
    SpecError::collect(problems)?;
    Ok((everywhere, per_platform))
}

impl EnvironmentSpec {
    /// Each platform's system requirements: the policy's defaults, then what
    /// the spec declares for every platform it applies to, then what it
    /// declares under the platform's name. Platforms with none are left out;
    /// entries under a platform that is not solved for (`?platforms=` can
    /// narrow the spec's) are unused.
    fn system_requirements_for(
        &self,
        platforms: &[String],
    ) -> Result<BTreeMap<String, SystemRequirements>, SpecError> {
        let mut problems = Vec::new();
        for key in self.system_requirements.keys() {
            if !platforms
                .iter()
                .any(|platform| system_requirement_applies(key, platform))
            {
                problems.push(invalid_requirement(
                    key,
                    format!(
                        "does not exist on any of the spec's platforms ({})",
                        platforms.join(", ")
                    ),
                ));
            }
        }
        SpecError::collect(problems)?;
        let mut all = BTreeMap::new();
        for platform in platforms {
            let requirements: SystemRequirements = self
                .default_system_requirements
                .get(platform)
                .into_iter()
                .chain(std::iter::once(&self.system_requirements))
                .chain(self.platform_system_requirements.get(platform))
                .flatten()
                .filter(|(key, _)| system_requirement_applies(key, platform))
                .map(|(key, version)| (key.clone(), version.clone()))
                .collect();
            if !requirements.is_empty() {
                all.insert(platform.clone(), requirements);
            }
        }
        Ok(all)
    }
}

/// What identifies an environment's content. The name is not part of it: the
/// same spec in another namespace is the same environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CanonicalSpec {
    pub channels: Vec<String>,
    pub dependencies: Vec<String>,
    pub platforms: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// The target machines' virtual packages per platform (declared, or the
    /// policy's defaults), by pixi's key. Left out when empty, so every spec
    /// without them keeps the hash it had before they existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub system_requirements: BTreeMap<String, SystemRequirements>,
    /// The PyPI requirements and their indexes. Left out when there are
    /// none, so every conda-only spec keeps its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pip: Option<CanonicalPip>,
    /// Set when the environment comes from a lock rather than a solve: a
    /// lockfile submitted as is, or the lock of an older build rebuilt after
    /// its prefix was collected. The worker installs that lock and solves
    /// nothing; `dependencies` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(value_type = Option<String>))]
    pub from_lock: Option<ContentHash>,
}

impl CanonicalSpec {
    /// The fields of a stored canonical spec (`text`, as some release of
    /// envstore wrote it) that this release does not know, by path
    /// (`pip.find_links`); empty ones (null, false, "", [], {}) are left
    /// out, as they ask for nothing. A worker builds a spec only when there
    /// are none: it would otherwise build the spec without them, under a
    /// hash that claims them. Found by what reading the spec and writing it
    /// again drops, so whatever this release reads counts as known.
    pub fn fields_unknown_here(text: &str) -> Result<Vec<String>, serde_json::Error> {
        let stored: serde_json::Value = serde_json::from_str(text)?;
        let known = serde_json::to_value(serde_json::from_value::<Self>(stored.clone())?)?;
        let mut unknown = Vec::new();
        dropped_fields(&stored, &known, "", &mut unknown);
        Ok(unknown)
    }

    /// The spec of an environment installed from `lock` as it is.
    pub fn from_lock(
        lock: ContentHash,
        channels: Vec<String>,
        platforms: Vec<String>,
        variables: BTreeMap<String, String>,
    ) -> Self {
        Self {
            channels,
            dependencies: Vec::new(),
            platforms,
            variables,
            system_requirements: BTreeMap::new(),
            pip: None,
            from_lock: Some(lock),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn hash(&self) -> ContentHash {
        ContentHash::of(self.to_json().as_bytes())
    }

    pub fn match_specs(&self) -> Result<Vec<MatchSpec>, SpecError> {
        self.dependencies
            .iter()
            .map(|text| parse_dependency(text))
            .collect()
    }

    pub fn subdirs(&self) -> Result<Vec<Subdir>, SpecError> {
        self.platforms
            .iter()
            .map(|platform| {
                platform
                    .parse()
                    .map_err(|_| SpecError::UnknownPlatform(platform.clone()))
            })
            .collect()
    }

    /// The spec as an `environment.yml`, for history and re-submission.
    pub fn to_environment_yaml(&self, name: &str) -> String {
        /// A conda dependency, or the `pip:` section (conda's shape).
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Dependency<'a> {
            Conda(&'a str),
            Pip { pip: Vec<String> },
        }
        #[derive(Serialize)]
        struct Export<'a> {
            name: &'a str,
            channels: &'a [String],
            dependencies: Vec<Dependency<'a>>,
            platforms: &'a [String],
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            variables: &'a BTreeMap<String, String>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            system_requirements: &'a BTreeMap<String, SystemRequirements>,
            #[serde(skip_serializing_if = "Option::is_none")]
            exclude_newer: Option<&'a str>,
        }
        let mut dependencies: Vec<Dependency> = self
            .dependencies
            .iter()
            .map(|dependency| Dependency::Conda(dependency))
            .collect();
        if let Some(pip) = &self.pip {
            let mut lines = Vec::new();
            for (position, index) in pip.indexes.iter().enumerate() {
                let is_pypi = url::Url::parse(index)
                    .is_ok_and(|url| crate::pip::same_index(&url, &pypi_index()));
                match position {
                    0 if is_pypi => {}
                    0 => lines.push(format!("--index-url {index}")),
                    _ => lines.push(format!("--extra-index-url {index}")),
                }
            }
            lines.extend(pip.requirements.iter().cloned());
            dependencies.push(Dependency::Pip { pip: lines });
        }
        serde_yaml::to_string(&Export {
            name,
            channels: &self.channels,
            dependencies,
            platforms: &self.platforms,
            variables: &self.variables,
            system_requirements: &self.system_requirements,
            exclude_newer: self
                .pip
                .as_ref()
                .and_then(|pip| pip.exclude_newer.as_deref()),
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::NamedChannel;

    fn allowlist() -> ChannelAllowlist {
        ChannelAllowlist::new(vec![
            NamedChannel::parse("demo=http://127.0.0.1:9/demo").unwrap(),
            NamedChannel::parse("extra=file:///srv/extra").unwrap(),
        ])
    }

    fn yaml(text: &str) -> Result<EnvironmentSpec, SpecError> {
        EnvironmentSpec::parse(text.as_bytes(), SpecFormat::Yaml)
    }

    #[test]
    fn equivalent_specs_hash_the_same() {
        let a =
            yaml("name: a\nchannels: [demo]\ndependencies:\n  - numpy >=1.26\n  - python 3.11\n")
                .unwrap();
        let b = yaml("name: b\nchannels: [http://127.0.0.1:9/demo/]\ndependencies: [\"python 3.11\", \"numpy>=1.26\", \"numpy >=1.26\"]\nplatforms: [linux-64]\n").unwrap();
        let a = a.canonicalize(&allowlist(), Subdir::Linux64).unwrap();
        let b = b.canonicalize(&allowlist(), Subdir::Linux64).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.channels, ["http://127.0.0.1:9/demo/"]);
        // conda's `python 3.11` is an exact version; `python=3.11` is the fuzzy one.
        assert_eq!(a.dependencies, ["numpy >=1.26", "python ==3.11"]);
    }

    #[test]
    fn a_worker_finds_the_fields_a_newer_release_wrote_into_a_spec() {
        let spec = yaml("channels: [demo]\ndependencies: [python]\nvariables: {A: b}\n")
            .unwrap()
            .canonicalize(&allowlist(), Subdir::Linux64)
            .unwrap();
        let written = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            CanonicalSpec::fields_unknown_here(&written).unwrap(),
            Vec::<String>::new(),
            "everything this release writes it knows"
        );
        let mut newer: serde_json::Value = serde_json::from_str(&written).unwrap();
        newer["gpu"] = serde_json::json!({"cuda": "12.4"});
        newer["pip"] = serde_json::json!({
            "requirements": ["rich"], "indexes": ["https://pypi.org/simple/"],
            "find_links": ["https://example.org/wheels/"], "no_build": true
        });
        // Empty fields ask for nothing, known or not.
        newer["mirrors"] = serde_json::json!([]);
        newer["strict"] = serde_json::json!(false);
        newer["variables"]["A"] = serde_json::json!("b");
        assert_eq!(
            CanonicalSpec::fields_unknown_here(&newer.to_string()).unwrap(),
            ["gpu", "pip.find_links", "pip.no_build"]
        );
        assert!(CanonicalSpec::fields_unknown_here("{\"channels\": 1}").is_err());
    }

    #[test]
    fn json_is_accepted_too() {
        let spec = EnvironmentSpec::parse(
            br#"{"channels": ["demo"], "dependencies": ["python"], "platforms": ["osx-arm64", "linux-64"]}"#,
            SpecFormat::Json,
        )
        .unwrap();
        let canonical = spec.canonicalize(&allowlist(), Subdir::Win64).unwrap();
        assert_eq!(canonical.platforms, ["linux-64", "osx-arm64"]);
    }

    #[test]
    fn channel_order_is_kept_because_it_is_priority() {
        let spec = yaml("channels: [extra, demo]\ndependencies: [python]\n").unwrap();
        let canonical = spec.canonicalize(&allowlist(), Subdir::Linux64).unwrap();
        assert_eq!(
            canonical.channels,
            ["file:///srv/extra/", "http://127.0.0.1:9/demo/"]
        );
    }

    #[test]
    fn malformed_yaml_reports_line_and_column() {
        let error = yaml("channels: [demo]\ndependencies:\n  - python\n - numpy: [\n").unwrap_err();
        match error {
            SpecError::Syntax { line, column, .. } => {
                assert_eq!(line, 4);
                assert!(column >= 1);
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn invalid_match_spec_names_the_dependency() {
        let error = yaml("dependencies: [python, 'numpy >=>1']\n").unwrap_err();
        assert!(
            matches!(&error, SpecError::InvalidDependency { dependency, .. } if dependency == "numpy >=>1"),
            "{error:?}"
        );
    }

    #[test]
    fn pip_sections_are_read_hashed_and_exported() {
        let text = "channels: [demo]\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n    - requests>=2.31\n    - --extra-index-url http://127.0.0.1:9/simple/\n    - Flask[async]\nexclude_newer: 2025-06-30\n";
        let spec = yaml(text).unwrap();
        let canonical = spec.canonicalize(&allowlist(), Subdir::Linux64).unwrap();
        let pip = canonical.pip.clone().unwrap();
        assert_eq!(pip.requirements, ["flask[async]", "requests>=2.31"]);
        assert_eq!(
            pip.indexes,
            ["https://pypi.org/simple", "http://127.0.0.1:9/simple/"]
        );
        assert_eq!(pip.exclude_newer.as_deref(), Some("2025-06-30T00:00:00Z"));
        // The export is accepted again and means the same environment.
        let exported = canonical.to_environment_yaml("again");
        let again = yaml(&exported)
            .unwrap()
            .canonicalize(&allowlist(), Subdir::Linux64)
            .unwrap();
        assert_eq!(again.hash(), canonical.hash(), "{exported}");
        // Conda-only specs keep the hash they had before pip existed.
        let conda_only = yaml("channels: [demo]\ndependencies: [python]\n")
            .unwrap()
            .canonicalize(&allowlist(), Subdir::Linux64)
            .unwrap();
        assert!(!conda_only.to_json().contains("pip"));
    }

    #[test]
    fn pip_without_python_and_bad_lines_are_all_reported_with_their_lines() {
        let text = "channels: [demo]\ndependencies:\n  - numpy\n  - pip:\n    - -e .\n    - git+https://github.com/org/repo.git\n    - ok-package\n";
        let error = yaml(text).unwrap_err();
        let lines: Vec<Option<usize>> = error
            .problems()
            .iter()
            .map(|problem| match problem {
                SpecError::Pip { line, .. } => *line,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lines, [Some(5), Some(6)]);
        assert_eq!(error.problem_type(), "source-build-unsupported");
        let no_python = yaml("channels: [demo]\ndependencies: [numpy, {pip: [requests]}]\n")
            .unwrap()
            .canonicalize(&allowlist(), Subdir::Linux64)
            .unwrap_err();
        assert_eq!(no_python, SpecError::PipNeedsPython);
        for bad in ["2025-13-01", "yesterday", "2025-06-30T12:00:00+02:00"] {
            assert!(
                matches!(
                    yaml(&format!("dependencies: [python]\nexclude_newer: '{bad}'\n")),
                    Err(SpecError::InvalidExcludeNewer { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_what_cannot_be_built() {
        assert!(matches!(
            yaml("dependencies: [python, {pip: ['-e .']}]\n"),
            Err(SpecError::Pip { line: Some(1), .. })
        ));
        let empty = yaml("name: x\n").unwrap();
        assert!(matches!(
            empty.canonicalize(&allowlist(), Subdir::Linux64),
            Err(SpecError::NoDependencies)
        ));
        assert!(matches!(
            yaml("dependencies: [python]\nplatforms: [amiga-68k]\n"),
            Err(SpecError::UnknownPlatform(_))
        ));
        assert!(matches!(
            yaml("dependencies: ['^py.*$']\n"),
            Err(SpecError::InvalidDependency { .. })
        ));
        // conda ignores keys it does not know, and so does envstore; a
        // misspelt `dependencies:` still leaves nothing to build.
        let misspelt = yaml("dependancies: [x]\n").unwrap();
        assert_eq!(misspelt.ignored_keys, ["dependancies"]);
        assert!(matches!(
            misspelt.canonicalize(&allowlist(), Subdir::Linux64),
            Err(SpecError::NoDependencies)
        ));
        let big = format!("dependencies: [{}]\n", "a,".repeat(MAX_SPEC_BYTES));
        assert!(matches!(yaml(&big), Err(SpecError::TooLarge { .. })));
    }

    #[test]
    fn channels_must_be_allowed() {
        let spec = yaml("channels: [conda-forge]\ndependencies: [python]\n").unwrap();
        let error = spec
            .canonicalize(&allowlist(), Subdir::Linux64)
            .unwrap_err();
        assert!(matches!(
            error,
            SpecError::Channel(ChannelError::NotAllowed { .. })
        ));
        let spec =
            yaml("channels: [demo]\ndependencies: ['https://evil.example/ch::python']\n").unwrap();
        let error = spec
            .canonicalize(&allowlist(), Subdir::Linux64)
            .unwrap_err();
        assert!(
            matches!(error, SpecError::DependencyChannel { .. }),
            "{error:?}"
        );
        // A direct URL outside the spec's channels would be fetched as is;
        // so would one that climbs out of the channel once decoded.
        for url in [
            "http://169.254.169.254/latest/x-1-0.conda",
            "file:///etc/x-1-0.conda",
            "file:///srv/extra/noarch/python-1-0.conda",
            "http://127.0.0.1:9/demo/linux-64%2F..%2F..%2Fsecret/python-1-0.conda",
            "http://127.0.0.1:9/demo/%2e%2e/x/noarch/python-1-0.conda",
            "http://127.0.0.1:9/demo/noarch/..%2F..%2Fpython-1-0.conda",
            "http://127.0.0.1:9/demo-sibling/noarch/python-1-0.conda",
            "http://127.0.0.1:9/demo/osx-arm64/python-1-0.conda",
            "http://127.0.0.1:9/demo/noarch/deeper/python-1-0.conda",
            "http://127.0.0.1:9/demo/noarch/repodata.json",
        ] {
            let spec = yaml(&format!(
                "channels: [demo]\ndependencies: ['python[url={url}]']\n"
            ))
            .unwrap();
            let error = spec
                .canonicalize(&allowlist(), Subdir::Linux64)
                .unwrap_err();
            assert!(
                matches!(&error, SpecError::DependencyUrl { dependency, .. } if dependency.contains("python")),
                "{url}: {error:?}"
            );
        }
        // `channel::package` must name one of the spec's channels, not only
        // one the server allows.
        let spec = yaml("channels: [demo]\ndependencies: ['file:///srv/extra::python']\n").unwrap();
        let error = spec
            .canonicalize(&allowlist(), Subdir::Linux64)
            .unwrap_err();
        assert!(
            matches!(error, SpecError::DependencyChannel { .. }),
            "{error:?}"
        );
        let inside = "http://127.0.0.1:9/demo/noarch/python-1-0.conda";
        let spec = yaml(&format!(
            "channels: [demo]\ndependencies: ['python[url={inside}]']\n"
        ))
        .unwrap();
        assert!(spec.canonicalize(&allowlist(), Subdir::Linux64).is_ok());
    }

    #[test]
    fn aliases_cannot_multiply_the_spec_beyond_the_size_limit() {
        // Each body is about 100 KB; its aliases make it hundreds of KB, or
        // (the dependencies one) gigabytes if every copy were made.
        let long = "x".repeat(100_000);
        let bombs = [
            format!("dependencies: [python]\nvariables: {{A: &v {long}, B: *v, C: *v}}\n"),
            format!("channels: [&c {long}, *c, *c]\ndependencies: [python]\n"),
            format!("dependencies: [python]\nplatforms: [&p {long}, *p, *p]\n"),
            format!("name: &n {long}\nchannels: [*n, *n]\ndependencies: [python]\n"),
            format!("dependencies: [&d {long}, {}*d]\n", "*d, ".repeat(30_000)),
        ];
        for bomb in &bombs {
            assert!(bomb.len() < MAX_SPEC_BYTES);
            match yaml(bomb) {
                Err(SpecError::Syntax { message, .. } | SpecError::Structure { message, .. }) => {
                    assert!(message.contains("aliases expanded"), "{message}");
                }
                other => panic!("expected the aliases to be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn aliases_within_the_limit_and_large_plain_specs_still_parse() {
        let spec = yaml(
            "channels: &c [demo]\ndependencies:\n  - &py python >=3.10\n  - *py\nvariables:\n  MODE: &m fast\n  ALSO: *m\n  N: 4\n  ON: true\n",
        )
        .unwrap();
        assert_eq!(spec.variables["ALSO"], "fast");
        assert_eq!(spec.variables["ON"], "true");
        // Every string is charged one byte more than its length, yet nothing
        // written out in full under the size limit runs out of budget.
        let mut body = String::from("dependencies: [python]\nvariables: {");
        let mut index = 0;
        while body.len() < MAX_SPEC_BYTES - 20 {
            body.push_str(&format!("V{index:x}: '',"));
            index += 1;
        }
        body.push_str("}\n");
        assert!(body.len() <= MAX_SPEC_BYTES);
        assert_eq!(yaml(&body).unwrap().variables.len(), index);
        let json = format!(
            "{{\"dependencies\": [\"python\"], \"variables\": {{{}\"last\": 1}}}}",
            (0..20_000)
                .map(|i| format!("\"V{i}\":\"\","))
                .collect::<String>()
        );
        assert!(json.len() <= MAX_SPEC_BYTES);
        assert_eq!(
            EnvironmentSpec::parse(json.as_bytes(), SpecFormat::Json)
                .unwrap()
                .variables
                .len(),
            20_001
        );
        let error = yaml("dependencies: [python]\nvariables: {A: 1.5}\n").unwrap_err();
        assert!(matches!(error, SpecError::Syntax { .. }), "{error:?}");
    }

    #[test]
    fn dependencies_that_cannot_be_written_back_are_refused() {
        // Found by fuzz/: rattler reads the build string `"]'` but writes the
        // spec as `p ==2[unrepresentable-build="\"]'"]`, which it cannot
        // read, so the canonical spec would fail at solve time.
        for text in [r#"p=2"]'"#, r#"p 2 "]'"#] {
            let body = format!(
                "dependencies:\n  - {}\n",
                serde_json::to_string(text).unwrap()
            );
            let error = yaml(&body).unwrap_err();
            assert!(
                matches!(&error, SpecError::InvalidDependency { reason, .. } if reason.contains("cannot be written back")),
                "{text}: {error:?}"
            );
        }
        // Build strings with one kind of quote or a bracket are written back fine.
        let spec = yaml("dependencies: ['p 2 a\"b', 'q 2 a]b', \"r 2 a'b\"]\n").unwrap();
        let canonical = spec.canonicalize(&allowlist(), Subdir::Linux64).unwrap();
        assert_eq!(canonical.match_specs().unwrap(), spec.dependencies);
    }

    #[test]
    fn what_is_accepted_exports_to_a_spec_that_is_accepted_again() {
        // Found by the fuzzer: aliases within the text budget whose export
        // was one byte over the size limit.
        let mut body = format!(
            "dependencies: [python]\nvariables:\n  A: &v {}\n",
            "x".repeat(17_458)
        );
        for index in 0..14 {
            body.push_str(&format!("  K{index}: *v\n"));
        }
        let spec = yaml(&body).unwrap();
        match spec.canonicalize(&allowlist(), Subdir::Linux64) {
            Ok(canonical) => {
                let exported = canonical.to_environment_yaml(LONGEST_NAME);
                let again = EnvironmentSpec::parse(exported.as_bytes(), SpecFormat::Yaml).unwrap();
                assert_eq!(
                    again.canonicalize(&allowlist(), Subdir::Linux64).unwrap(),
                    canonical
                );
            }
            Err(error) => assert!(matches!(error, SpecError::TooLarge { .. }), "{error:?}"),
        }
        assert_eq!(LONGEST_NAME.len(), 64);
        assert!(LONGEST_NAME.parse::<crate::EnvironmentName>().is_ok());
    }

    #[test]
    fn conda_env_export_files_are_accepted() {
        let exported = "name: base\nchannels: [demo]\ndependencies: [python=3.11]\nprefix: /opt/conda/envs/base\n";
        let spec = yaml(exported).unwrap();
        assert!(spec.canonicalize(&allowlist(), Subdir::Linux64).is_ok());
    }

    #[test]
    fn variables_are_kept() {
        let spec = yaml("dependencies: [python]\nvariables:\n  OMP_NUM_THREADS: 4\n  MODE: fast\n")
            .unwrap();
        let canonical = spec.canonicalize(&allowlist(), Subdir::Linux64).unwrap();
        assert_eq!(canonical.variables["OMP_NUM_THREADS"], "4");
        assert!(
            canonical
                .to_environment_yaml("x")
                .contains("OMP_NUM_THREADS")
        );
    }

    #[test]
    fn variables_that_activation_scripts_cannot_carry_are_refused() {
        for (body, expected) in [
            ("{'1ST': x}", "is not a valid name"),
            ("{'A B': x}", "is not a valid name"),
            ("{'A;rm': x}", "is not a valid name"),
            ("{'': x}", "is not a valid name"),
            ("{PATH: /tmp}", "managed by conda"),
            ("{CONDA_PREFIX: /tmp}", "managed by conda"),
            ("{A: \"line\\nbreak\"}", "control character"),
        ] {
            let error = yaml(&format!("dependencies: [python]\nvariables: {body}\n")).unwrap_err();
            assert!(
                matches!(error, SpecError::InvalidVariable { .. }),
                "{body}: {error:?}"
            );
            assert!(error.to_string().contains(expected), "{body}: {error}");
        }
        let spec =
            yaml("dependencies: [python]\nvariables: {_A1: \"tab\\there $HOME 'q'\"}\n").unwrap();
        assert_eq!(spec.variables["_A1"], "tab\there $HOME 'q'");
    }

    #[test]
    fn system_requirements_are_read_with_pixi_names_and_kept_per_platform() {
        let spec = yaml(
            "dependencies: [python]\nplatforms: [linux-64, osx-arm64, win-64]\nsystem_requirements:\n  cuda: '12.4'\n  glibc: '2.28'\n  osx: 13\n  linux-64: {archspec: x86_64_v3}\n",
        )
        .unwrap();
        assert_eq!(spec.system_requirements["libc"], "2.28");
        assert_eq!(spec.system_requirements["macos"], "13");
        let canonical = spec.canonicalize(&allowlist(), Subdir::Linux64).unwrap();
        let pairs = |items: &[(&str, &str)]| -> SystemRequirements {
            items
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect()
        };
        assert_eq!(
            canonical.system_requirements["linux-64"],
            pairs(&[
                ("archspec", "x86_64_v3"),
                ("cuda", "12.4"),
                ("libc", "2.28")
            ])
        );
        assert_eq!(
            canonical.system_requirements["osx-arm64"],
            pairs(&[("macos", "13")])
        );
        assert_eq!(
            canonical.system_requirements["win-64"],
            pairs(&[("cuda", "12.4")])
        );
        // The export reads back to the same canonical spec.
        let exported = canonical.to_environment_yaml("gpu");
        let again = EnvironmentSpec::parse(exported.as_bytes(), SpecFormat::Yaml).unwrap();
        assert_eq!(
            again.canonicalize(&allowlist(), Subdir::Linux64).unwrap(),
            canonical
        );
        // pixi's libc table spelling means the same as the plain version.
        let table = yaml(
            "dependencies: [python]\nsystem_requirements: {cuda: '12.4', libc: {family: glibc, version: '2.28'}, archspec: x86_64_v3}\n",
        )
        .unwrap()
        .canonicalize(&allowlist(), Subdir::Linux64)
        .unwrap();
        assert_eq!(table.system_requirements, {
            let mut only_linux = canonical.system_requirements.clone();
            only_linux.retain(|platform, _| platform == "linux-64");
            only_linux
        });
    }

    #[test]
    fn specs_without_system_requirements_keep_their_hash() {
        let body = "channels: [demo]\ndependencies: [python]\n";
        let plain = yaml(body)
            .unwrap()
            .canonicalize(&allowlist(), Subdir::Linux64)
            .unwrap();
        assert!(!plain.to_json().contains("system_requirements"));
        assert_eq!(
            plain.to_json(),
            r#"{"channels":["http://127.0.0.1:9/demo/"],"dependencies":["python"],"platforms":["linux-64"]}"#
        );
        // Declared for no platform the spec targets... refused, see below;
        // declared, they change the environment and so the hash.
        let gpu = yaml(&format!("{body}system_requirements: {{cuda: '12'}}\n"))
            .unwrap()
            .canonicalize(&allowlist(), Subdir::Linux64)
            .unwrap();
        assert_ne!(gpu.hash(), plain.hash());
        let empty = yaml(&format!("{body}system_requirements: {{}}\n"))
            .unwrap()
            .canonicalize(&allowlist(), Subdir::Linux64)
            .unwrap();
        assert_eq!(empty.hash(), plain.hash());
    }

    #[test]
    fn system_requirements_are_checked_and_every_problem_reported() {
        for (body, expected) in [
            ("{cuda: '>=12'}", "is not a version"),
            ("{cuda: 12.4}", "write the version in quotes"),
            ("{gpu: '1'}", "is not known"),
            ("{archspec: 'x86 64'}", "not a microarchitecture"),
            (
                "{libc: {family: musl, version: '1.2'}}",
                "family must be glibc",
            ),
            ("{cuda: {major: 12}}", "must be a version"),
            ("{glibc: '2.17', libc: '2.28'}", "given twice"),
            ("{linux-64: {macos: '13'}}", "does not exist on linux-64"),
        ] {
            let error = yaml(&format!(
                "dependencies: [python]\nsystem_requirements: {body}\n"
            ))
            .unwrap_err();
            assert!(error.to_string().contains(expected), "{body}: {error}");
            assert_eq!(error.problem_type(), "invalid-spec");
        }
        // Known only once the platforms are: nothing to apply to.
        let error = yaml("dependencies: [python]\nsystem_requirements: {macos: '13'}\n")
            .unwrap()
            .canonicalize(&allowlist(), Subdir::Linux64)
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("does not exist on any of the spec's platforms"),
            "{error}"
        );
        let error = yaml("dependencies: ['numpy >=>1']\nsystem_requirements: {cuda: x, libc: y}\n")
            .unwrap_err();
        assert_eq!(error.problems().len(), 3, "{error}");
    }

    #[test]
    fn entries_under_a_platform_not_solved_for_are_unused() {
        let spec = yaml(
            "dependencies: [python]\nplatforms: [linux-64, osx-arm64]\nsystem_requirements: {osx-arm64: {macos: '13'}}\n",
        )
        .unwrap();
        let mut linux_only = spec.clone();
        linux_only.platforms = vec![Subdir::Linux64];
        let canonical = linux_only
            .canonicalize(&allowlist(), Subdir::Linux64)
            .unwrap();
        assert!(canonical.system_requirements.is_empty());
        assert!(!canonical.to_json().contains("system_requirements"));
    }

    #[test]
    fn system_requirement_keys_map_to_virtual_packages_on_their_platforms() {
        assert_eq!(system_requirement_virtual_package("cuda"), Some("__cuda"));
        assert_eq!(system_requirement_virtual_package("libc"), Some("__glibc"));
        assert_eq!(system_requirement_virtual_package("macos"), Some("__osx"));
        assert!(system_requirement_applies("cuda", "win-64"));
        assert!(!system_requirement_applies("cuda", "osx-arm64"));
        assert!(!system_requirement_applies("libc", "win-64"));
        assert!(system_requirement_applies("archspec", "osx-arm64"));
        assert!(!system_requirement_applies("archspec", "noarch"));
    }
}
