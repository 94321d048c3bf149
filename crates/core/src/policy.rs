//! What a namespace allows: channels, platforms, packages that must, may by
//! default or always be in a spec, and limits. The server's policy is the
//! default; a namespace's policy can only tighten it.

use rattler_conda_types::{MatchSpec, PackageName, ParseStrictness, Subdir};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use url::Url;

use crate::channels::{ChannelAllowlist, NamedChannel};
use crate::spec::{
    CanonicalSpec, EnvironmentSpec, NODEFAULTS, SystemRequirements, check_system_requirement,
    system_requirement_applies,
};

/// Whether two channel URLs name the same channel (a trailing slash aside).
fn same_channel(a: &Url, b: &Url) -> bool {
    a.as_str().trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Policy {
    /// Channel names (from the server's allowlist) specs may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_channels: Option<Vec<String>>,
    /// Platforms specs may lock for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_platforms: Option<Vec<String>>,
    /// Package names every spec must list (e.g. `ipykernel`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_packages: Vec<String>,
    /// Match specs used when a spec lists no dependencies at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_packages: Vec<String>,
    /// Match specs added to every spec that does not list the package.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_packages: Vec<String>,
    /// Environments a namespace may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_environments: Option<u64>,
    /// Dependencies one spec may list (after defaults and inclusions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dependencies: Option<usize>,
    /// Variables that steer loaders and interpreters (`LD_*`, `PYTHONPATH`,
    /// …, see `variables.rs`) specs may set, by exact name; none by default.
    /// Only the server's list grants: a namespace's can only narrow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_variables: Option<Vec<String>>,
    /// Channel names a spec without `channels:` is solved from. Unset, such
    /// a spec gets every allowed channel (`allowed_channels`, or else every
    /// channel of the server), as before this setting existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_channels: Vec<String>,
    /// conda's `channel_alias` (default `https://conda.anaconda.org`): a
    /// channel URL under it names the allowed channel of that name. Read
    /// from the server's policy only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_alias: Option<String>,
    /// conda's `custom_channels`: channel name to the base URL conda reaches
    /// it under; a spec naming that URL gets the allowed channel of that
    /// name. Read from the server's policy only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_channels: BTreeMap<String, String>,
    /// Per platform, the virtual packages of the machines environments are
    /// built for (`{"linux-64": {"cuda": "12.4", "libc": "2.28"}}`, pixi's
    /// keys), where a spec declares none of its own; a namespace's entries
    /// win over the server's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub system_requirements: BTreeMap<String, SystemRequirements>,
    /// PyPI simple indexes `pip:` sections may use, by URL; the first is
    /// the index of a section that names none. Unset: PyPI alone
    /// (`https://pypi.org/simple`). Empty: no `pip:` sections. A
    /// namespace's list can only narrow the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_pypi_indexes: Option<Vec<String>>,
    /// PyPI requirements one spec may list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pip_requirements: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy rule '{rule}': {message}")]
    Violated { rule: &'static str, message: String },
    /// More than one rule broken, in the order checked; each is a
    /// [`PolicyError::Violated`], never nested, never empty.
    #[error("{} policy rules are broken: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Violations(Vec<PolicyError>),
    #[error("the policy is not valid: {0}")]
    Invalid(String),
}

fn violated(rule: &'static str, message: String) -> PolicyError {
    PolicyError::Violated { rule, message }
}

impl PolicyError {
    /// `Ok` when nothing was broken, the violation when there is one, and
    /// [`PolicyError::Violations`] when there are more: a user fixes every
    /// rule in one round.
    pub fn collect(mut violations: Vec<PolicyError>) -> Result<(), PolicyError> {
        match violations.len() {
            0 => Ok(()),
            1 => Err(violations.remove(0)),
            _ => Err(PolicyError::Violations(violations)),
        }
    }

    /// Every single violation this error stands for.
    pub fn violations(&self) -> Vec<&PolicyError> {
        match self {
            PolicyError::Violations(inner) => inner.iter().collect(),
            single => vec![single],
        }
    }

    /// The rule broken, for a single violation.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            PolicyError::Violated { rule, .. } => Some(rule),
            _ => None,
        }
    }
}

fn parse_spec(text: &str) -> Result<MatchSpec, PolicyError> {
    MatchSpec::from_str(text, ParseStrictness::Lenient)
        .map_err(|error| PolicyError::Invalid(format!("'{text}' is not a match spec: {error}")))
}

fn spec_name(spec: &MatchSpec) -> Option<String> {
    match &spec.name {
        rattler_conda_types::PackageNameMatcher::Exact(name) => {
            Some(name.as_normalized().to_owned())
        }
        _ => None,
    }
}

impl Policy {
    /// The PyPI indexes `pip:` sections may use, the default first (see
    /// [`Policy::allowed_pypi_indexes`]); entries that are not URLs are left
    /// out (`validate` refuses them when the policy is set).
    pub fn pypi_indexes(&self) -> Vec<Url> {
        match &self.allowed_pypi_indexes {
            None => vec![crate::pip::pypi_index()],
            Some(urls) => urls.iter().filter_map(|url| Url::parse(url).ok()).collect(),
        }
    }

    /// Checks a spec's `pip:` sections: their indexes must be allowed, and their number within the limit. Sets the
    /// section's default index.
    fn check_pip(&self, spec: &mut EnvironmentSpec, violations: &mut Vec<PolicyError>) {
        let Some(section) = &spec.pip else {
            return;
        };
        let allowed = self.pypi_indexes();
        let allowed_text = || {
            allowed
                .iter()
                .map(Url::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(default_index) = allowed.first() else {
            violations.push(violated(
                "allowed_pypi_indexes",
                "PyPI packages are not allowed here: remove the 'pip:' section or ask an admin to allow a PyPI index".to_owned(),
            ));
            return;
        };
        let indexes = section.indexes(default_index);
        for index in &indexes {
            if !allowed
                .iter()
                .any(|known| crate::pip::same_index(known, index))
            {
                violations.push(violated(
                    "allowed_pypi_indexes",
                    format!(
                        "PyPI index '{index}' is not allowed here; allowed: {}",
                        allowed_text()
                    ),
                ));
            }
        }
        // A wheel named by URL is taken from the section's indexes, like
        // any other: it must be one of their files.
        for requirement in &section.requirements {
            let Some(url) = &requirement.wheel_url else {
                continue;
            };
            if !indexes
                .iter()
                .any(|index| crate::pip::is_file_of_index(url, index))
            {
                let used: Vec<&str> = indexes.iter().map(Url::as_str).collect();
                violations.push(violated(
                    "allowed_pypi_indexes",
                    format!(
                        "the wheel '{url}' is not a file of the PyPI indexes this spec uses ({}); name a wheel of one of them, or the package by name and version",
                        used.join(", ")
                    ),
                ));
            }
        }
        if let Some(max) = self.max_pip_requirements
            && section.requirements.len() > max
        {
            violations.push(violated(
                "max_pip_requirements",
                format!(
                    "the 'pip:' sections list {} requirements; at most {max} are allowed here",
                    section.requirements.len()
                ),
            ));
        }
        spec.default_pip_index = Some(default_index.clone());
    }

    /// The server's allow-list with this (server) policy's channel settings:
    /// default channels, conda's channel alias and custom channels.
    pub fn configure_channels(
        &self,
        allowlist: ChannelAllowlist,
    ) -> Result<ChannelAllowlist, PolicyError> {
        let parse = |url: &str| {
            Url::parse(url)
                .map_err(|error| PolicyError::Invalid(format!("'{url}' is not a URL: {error}")))
        };
        let mut allowlist = allowlist.with_default_channels(self.default_channels.clone());
        if let Some(alias) = &self.channel_alias {
            allowlist = allowlist.with_channel_alias(parse(alias)?);
        }
        let custom = self
            .custom_channels
            .iter()
            .map(|(name, base)| Ok((name.clone(), parse(base)?)))
            .collect::<Result<Vec<_>, PolicyError>>()?;
        Ok(allowlist.with_custom_channels(custom))
    }

    /// Checks that every entry means something, so a typo is refused when
    /// the policy is set rather than when a user submits.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for spec in self.default_packages.iter().chain(&self.included_packages) {
            parse_spec(spec)?;
        }
        for name in &self.required_packages {
            PackageName::try_from(name.as_str()).map_err(|error| {
                PolicyError::Invalid(format!("'{name}' is not a package name: {error}"))
            })?;
        }
        for index in self.allowed_pypi_indexes.iter().flatten() {
            let url = Url::parse(index).map_err(|error| {
                PolicyError::Invalid(format!("PyPI index '{index}' is not a URL: {error}"))
            })?;
            if url.scheme() != "https" && url.scheme() != "http" {
                return Err(PolicyError::Invalid(format!(
                    "PyPI index '{index}' is not reached over http(s)"
                )));
            }
        }
        for url in self
            .channel_alias
            .iter()
            .chain(self.custom_channels.values())
        {
            url::Url::parse(url)
                .map_err(|error| PolicyError::Invalid(format!("'{url}' is not a URL: {error}")))?;
        }
        self.checked_system_requirements()?;
        for platform in self.allowed_platforms.iter().flatten() {
            platform.parse::<Subdir>().map_err(|_| {
                PolicyError::Invalid(format!("'{platform}' is not a conda platform"))
            })?;
        }
        Ok(())
    }

    /// This policy narrowed by a namespace's: allow-lists intersect, limits
    /// take the smaller value, package lists add up.
    pub fn tightened_by(&self, namespace: &Policy) -> Policy {
        fn intersect(
            server: &Option<Vec<String>>,
            namespace: &Option<Vec<String>>,
        ) -> Option<Vec<String>> {
            match (server, namespace) {
                (Some(server), Some(namespace)) => Some(
                    namespace
                        .iter()
                        .filter(|item| server.contains(item))
                        .cloned()
                        .collect(),
                ),
                (Some(list), None) | (None, Some(list)) => Some(list.clone()),
                (None, None) => None,
            }
        }
        fn smaller<T: Ord + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        fn union(a: &[String], b: &[String]) -> Vec<String> {
            let mut all = a.to_vec();
            all.extend(b.iter().filter(|item| !a.contains(item)).cloned());
            all
        }
        Policy {
            allowed_channels: intersect(&self.allowed_channels, &namespace.allowed_channels),
            allowed_platforms: intersect(&self.allowed_platforms, &namespace.allowed_platforms),
            required_packages: union(&self.required_packages, &namespace.required_packages),
            default_packages: if namespace.default_packages.is_empty() {
                self.default_packages.clone()
            } else {
                namespace.default_packages.clone()
            },
            included_packages: union(&self.included_packages, &namespace.included_packages),
            max_environments: smaller(self.max_environments, namespace.max_environments),
            max_dependencies: smaller(self.max_dependencies, namespace.max_dependencies),
            allowed_variables: self.allowed_variables.as_ref().map(|server| {
                match &namespace.allowed_variables {
                    Some(names) => server
                        .iter()
                        .filter(|name| names.contains(name))
                        .cloned()
                        .collect(),
                    None => server.clone(),
                }
            }),
            default_channels: if namespace.default_channels.is_empty() {
                self.default_channels.clone()
            } else {
                namespace.default_channels.clone()
            },
            channel_alias: self.channel_alias.clone(),
            custom_channels: self.custom_channels.clone(),
            allowed_pypi_indexes: match &namespace.allowed_pypi_indexes {
                None => self.allowed_pypi_indexes.clone(),
                Some(names) => Some(
                    self.pypi_indexes()
                        .iter()
                        .filter(|server| {
                            names.iter().any(|name| {
                                Url::parse(name)
                                    .is_ok_and(|url| crate::pip::same_index(&url, server))
                            })
                        })
                        .map(ToString::to_string)
                        .collect(),
                ),
            },
            max_pip_requirements: smaller(
                self.max_pip_requirements,
                namespace.max_pip_requirements,
            ),
            system_requirements: {
                let mut merged = self.system_requirements.clone();
                for (platform, requirements) in &namespace.system_requirements {
                    merged
                        .entry(platform.clone())
                        .or_default()
                        .extend(requirements.clone());
                }
                merged
            },
        }
    }

    /// The per-platform system requirements in canonical form (platform and
    /// key names normalised), each checked to exist on its platform.
    fn checked_system_requirements(
        &self,
    ) -> Result<BTreeMap<String, SystemRequirements>, PolicyError> {
        let mut checked = BTreeMap::new();
        for (platform, requirements) in &self.system_requirements {
            let subdir = platform
                .parse::<Subdir>()
                .ok()
                .filter(|subdir| *subdir != Subdir::NoArch)
                .ok_or_else(|| {
                    PolicyError::Invalid(format!(
                        "system_requirements: '{platform}' is not a conda platform"
                    ))
                })?;
            let platform = subdir.to_string();
            let mut normalised = SystemRequirements::new();
            for (key, value) in requirements {
                let (key, version) = check_system_requirement(key, value).map_err(|error| {
                    PolicyError::Invalid(format!("system_requirements of {platform}: {error}"))
                })?;
                if !system_requirement_applies(&key, &platform) {
                    return Err(PolicyError::Invalid(format!(
                        "system_requirements of {platform}: '{key}' does not exist on {platform}"
                    )));
                }
                normalised.insert(key, version);
            }
            checked.insert(platform, normalised);
        }
        Ok(checked)
    }

    /// Applies the policy to a spec before it is canonicalised: default and
    /// included packages are added, required ones and the channel allow-list
    /// are checked.
    pub fn apply(&self, mut spec: EnvironmentSpec) -> Result<EnvironmentSpec, PolicyError> {
        let names_channels = spec
            .channels
            .iter()
            .any(|channel| channel.trim() != NODEFAULTS);
        if !names_channels && !self.default_channels.is_empty() {
            // `nodefaults` is kept as written; it never names a channel.
            spec.channels.extend(self.default_channels.iter().cloned());
        }
        spec.default_system_requirements = self.checked_system_requirements()?;
        if spec.dependencies.is_empty() {
            for text in &self.default_packages {
                spec.dependencies.push(parse_spec(text)?);
            }
        }
        for text in &self.included_packages {
            let included = parse_spec(text)?;
            let name = spec_name(&included);
            if !spec
                .dependencies
                .iter()
                .any(|dependency| spec_name(dependency) == name)
            {
                spec.dependencies.push(included);
            }
        }
        let mut violations = Vec::new();
        let allowed_variables = self.allowed_variables.as_deref().unwrap_or_default();
        for name in spec
            .variables
            .keys()
            .filter(|name| !crate::variables::is_allowed(name, allowed_variables))
        {
            violations.push(violated(
                "allowed_variables",
                format!(
                    "variable '{name}' steers how programs load code, so it would run in the processes of \
                     everyone who activates the environment; the server policy must name it in allowed_variables"
                ),
            ));
        }
        let names: Vec<Option<String>> = spec.dependencies.iter().map(spec_name).collect();
        for required in &self.required_packages {
            if !names
                .iter()
                .any(|name| name.as_deref() == Some(required.as_str()))
            {
                violations.push(violated(
                    "required_packages",
                    format!("every environment in this namespace must list '{required}'"),
                ));
            }
        }
        if let Some(max) = self.max_dependencies
            && spec.dependencies.len() > max
        {
            violations.push(violated(
                "max_dependencies",
                format!(
                    "the spec lists {} dependencies; at most {max} are allowed here",
                    spec.dependencies.len()
                ),
            ));
        }
        if let Some(allowed) = &self.allowed_channels {
            if !spec
                .channels
                .iter()
                .any(|channel| channel.trim() != NODEFAULTS)
            {
                spec.channels.extend(allowed.iter().cloned());
            }
            for channel in &spec.channels {
                if channel.trim() != NODEFAULTS && !allowed.contains(channel) {
                    violations.push(violated(
                        "allowed_channels",
                        format!(
                            "channel '{channel}' is not allowed here; allowed: {}",
                            allowed.join(", ")
                        ),
                    ));
                }
            }
        }
        self.check_pip(&mut spec, &mut violations);
        PolicyError::collect(violations)?;
        Ok(spec)
    }

    /// Checks a lock submitted as is, which no solve will pass through: its
    /// channels and every package URL must be allowed (by the server and by
    /// this policy), its platforms allowed, and each platform must hold the
    /// required and included packages (a lock cannot have them added).
    /// `packages` gives each platform's (package name, URL) pairs.
    pub fn check_lock(
        &self,
        allowlist: &ChannelAllowlist,
        channels: &[Url],
        packages: &BTreeMap<String, Vec<(String, Url)>>,
    ) -> Result<(), PolicyError> {
        let allowed: Vec<&NamedChannel> = match &self.allowed_channels {
            Some(names) => allowlist
                .channels()
                .iter()
                .filter(|channel| names.contains(&channel.name))
                .collect(),
            None => allowlist.channels().iter().collect(),
        };
        let allowed_names = || {
            allowed
                .iter()
                .map(|channel| channel.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for channel in channels {
            if !allowed
                .iter()
                .any(|named| same_channel(&named.url, channel))
            {
                return Err(violated(
                    "allowed_channels",
                    format!(
                        "the lock's channel '{channel}' is not allowed here; allowed: {}",
                        allowed_names()
                    ),
                ));
            }
        }
        self.check_platforms(packages.keys())?;
        let mut must_hold: Vec<String> = self.required_packages.clone();
        for text in &self.included_packages {
            if let Some(name) = spec_name(&parse_spec(text)?) {
                must_hold.push(name);
            }
        }
        for (platform, locked) in packages {
            for (name, url) in locked {
                // Compared after decoding and normalisation, and only as
                // `<channel>/<platform or noarch>/<archive>`: no `%2F`, `..`,
                // other subdir or sibling path of an allowed channel.
                let checked =
                    crate::channels::locate_in(allowed.iter().map(|named| &named.url), url)
                        .and_then(|path| path.check_package(std::slice::from_ref(platform)));
                if let Err(defect) = checked {
                    return Err(violated(
                        "allowed_channels",
                        format!(
                            "package '{name}' ({platform}) comes from '{}', which is not a package of the allowed channels ({}): {defect}",
                            crate::channels::public_url(url),
                            allowed_names()
                        ),
                    ));
                }
            }
            for required in &must_hold {
                if !locked.iter().any(|(name, _)| name == required) {
                    return Err(violated(
                        "required_packages",
                        format!(
                            "every environment in this namespace must hold '{required}'; the lock has none for {platform}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks the PyPI packages of a lock submitted as is: each wheel must be
    /// a file of an allowed PyPI index (see [`Policy::allowed_pypi_indexes`])
    /// and their number within `max_pip_requirements` per platform.
    /// `wheels` gives each platform's (name, URL) pairs.
    pub fn check_lock_wheels(
        &self,
        wheels: &BTreeMap<String, Vec<(String, Url)>>,
    ) -> Result<(), PolicyError> {
        let allowed = self.pypi_indexes();
        let mut violations = Vec::new();
        for (platform, locked) in wheels {
            if let Some(max) = self.max_pip_requirements
                && locked.len() > max
            {
                violations.push(violated(
                    "max_pip_requirements",
                    format!(
                        "the lock has {} PyPI packages for {platform}; at most {max} are allowed here",
                        locked.len()
                    ),
                ));
            }
            for (name, url) in locked {
                if !allowed
                    .iter()
                    .any(|index| crate::pip::is_file_of_index(url, index))
                {
                    violations.push(violated(
                        "allowed_pypi_indexes",
                        format!(
                            "PyPI package '{name}' ({platform}) comes from '{}', which is not a file of an allowed PyPI index ({})",
                            crate::channels::public_url(url),
                            allowed.iter().map(Url::as_str).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        PolicyError::collect(violations)
    }

    /// Checks what is only known once the spec is canonical: its platforms.
    pub fn check_canonical(&self, spec: &CanonicalSpec) -> Result<(), PolicyError> {
        self.check_platforms(&spec.platforms)
    }

    fn check_platforms<'a>(
        &self,
        platforms: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), PolicyError> {
        if let Some(allowed) = &self.allowed_platforms {
            for platform in platforms {
                if !allowed.contains(platform) {
                    return Err(violated(
                        "allowed_platforms",
                        format!(
                            "platform '{platform}' is not allowed here; allowed: {}",
                            allowed.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecFormat;

    #[test]
    fn pip_indexes_and_wheel_urls_must_be_allowed() {
        let spec = |text: &str| EnvironmentSpec::parse(text.as_bytes(), SpecFormat::Yaml).unwrap();
        let open = Policy::default();
        let applied = open
            .apply(spec("dependencies: [python, {pip: [requests]}]\n"))
            .unwrap();
        assert_eq!(
            applied.default_pip_index.as_ref().map(Url::as_str),
            Some("https://pypi.org/simple")
        );
        let refused = open
            .apply(spec(
                "dependencies: [python, {pip: ['--extra-index-url https://evil.example/simple', '--index-url https://elsewhere.example/simple', requests]}]\n",
            ))
            .unwrap_err();
        assert_eq!(refused.violations().len(), 2, "{refused}");
        let server = Policy {
            allowed_pypi_indexes: Some(vec![
                "http://127.0.0.1:9/simple/".into(),
                "https://pypi.org/simple".into(),
            ]),
            ..Policy::default()
        };
        let applied = server
            .apply(spec("dependencies: [python, {pip: [requests]}]\n"))
            .unwrap();
        assert_eq!(
            applied.default_pip_index.as_ref().map(Url::as_str),
            Some("http://127.0.0.1:9/simple/")
        );
        // A namespace narrows: PyPI only, then nothing at all.
        let narrowed = server.tightened_by(&Policy {
            allowed_pypi_indexes: Some(vec!["https://pypi.org/simple/".into()]),
            ..Policy::default()
        });
        assert_eq!(
            narrowed.pypi_indexes(),
            [Url::parse("https://pypi.org/simple").unwrap()]
        );
        let closed = server.tightened_by(&Policy {
            allowed_pypi_indexes: Some(vec![]),
            max_pip_requirements: Some(0),
            ..Policy::default()
        });
        let refused = closed
            .apply(spec("dependencies: [python, {pip: [requests]}]\n"))
            .unwrap_err();
        assert_eq!(refused.rule(), Some("allowed_pypi_indexes"), "{refused}");
        assert!(
            open.apply(spec("dependencies: [python]\n"))
                .unwrap()
                .default_pip_index
                .is_none()
        );

        // A wheel by URL: a file of the section's indexes, or refused.
        open.apply(spec(
            "dependencies: [python, {pip: ['tool @ https://files.pythonhosted.org/packages/aa/tool-1.0-py3-none-any.whl']}]\n",
        ))
        .unwrap();
        server
            .apply(spec(
                "dependencies: [python, {pip: ['tool @ http://127.0.0.1:9/files/tool-1.0-py3-none-any.whl']}]\n",
            ))
            .unwrap();
        let refused = open
            .apply(spec(
                "dependencies: [python, {pip: ['tool @ https://evil.example/tool-1.0-py3-none-any.whl']}]\n",
            ))
            .unwrap_err();
        assert_eq!(refused.rule(), Some("allowed_pypi_indexes"), "{refused}");
        assert!(
            refused
                .to_string()
                .contains("https://evil.example/tool-1.0-py3-none-any.whl"),
            "{refused}"
        );
    }

    #[test]
    fn every_broken_rule_is_reported_at_once() {
        let spec = EnvironmentSpec::parse(
            b"channels: [elsewhere]\ndependencies: [python, numpy, scipy]\nvariables: {LD_PRELOAD: /x.so}\n",
            SpecFormat::Yaml,
        )
        .unwrap();
        let policy = Policy {
            allowed_channels: Some(vec!["conda-forge".into()]),
            required_packages: vec!["ipykernel".into()],
            max_dependencies: Some(2),
            ..Policy::default()
        };
        let refused = policy.apply(spec).unwrap_err();
        let rules: Vec<_> = refused
            .violations()
            .iter()
            .map(|violation| violation.rule())
            .collect();
        assert_eq!(
            rules,
            [
                Some("allowed_variables"),
                Some("required_packages"),
                Some("max_dependencies"),
                Some("allowed_channels")
            ],
            "{refused}"
        );
        assert!(refused.to_string().starts_with("4 policy rules are broken"));
    }

    #[test]
    fn steering_variables_need_the_server_policy_and_a_namespace_cannot_grant_them() {
        let spec = |variables: &str| {
            EnvironmentSpec::parse(
                format!("dependencies: [python]\nvariables: {variables}\n").as_bytes(),
                SpecFormat::Yaml,
            )
            .unwrap()
        };
        let open = Policy::default();
        let refused = open.apply(spec("{LD_PRELOAD: /tmp/x.so}")).unwrap_err();
        assert!(
            matches!(
                refused,
                PolicyError::Violated {
                    rule: "allowed_variables",
                    ..
                }
            ),
            "{refused}"
        );
        assert!(
            open.apply(spec("{PYTHONSTARTUP: /tmp/x.py, MODE: fast}"))
                .is_err()
        );
        assert!(open.apply(spec("{MODE: fast}")).is_ok());

        let namespace = Policy {
            allowed_variables: Some(vec!["LD_PRELOAD".into()]),
            ..Policy::default()
        };
        assert!(
            open.tightened_by(&namespace)
                .apply(spec("{LD_PRELOAD: /tmp/x.so}"))
                .is_err(),
            "namespaces only narrow"
        );
        let server = Policy {
            allowed_variables: Some(vec!["LD_LIBRARY_PATH".into(), "PYTHONPATH".into()]),
            ..Policy::default()
        };
        assert!(server.apply(spec("{LD_LIBRARY_PATH: /opt/lib}")).is_ok());
        assert!(server.apply(spec("{LD_PRELOAD: /tmp/x.so}")).is_err());
        let narrowed = server.tightened_by(&Policy {
            allowed_variables: Some(vec!["PYTHONPATH".into()]),
            ..Policy::default()
        });
        assert!(narrowed.apply(spec("{LD_LIBRARY_PATH: /opt/lib}")).is_err());
        assert!(narrowed.apply(spec("{PYTHONPATH: /opt/py}")).is_ok());
    }

    fn spec(yaml: &str) -> EnvironmentSpec {
        EnvironmentSpec::parse(yaml.as_bytes(), SpecFormat::Yaml).unwrap()
    }

    fn names(spec: &EnvironmentSpec) -> Vec<String> {
        spec.dependencies.iter().filter_map(spec_name).collect()
    }

    #[test]
    fn included_packages_are_added_unless_listed() {
        let policy = Policy {
            included_packages: vec!["ipykernel".into(), "python >=3.10".into()],
            ..Policy::default()
        };
        let applied = policy
            .apply(spec("dependencies: [python 3.11.*, numpy]\n"))
            .unwrap();
        assert_eq!(names(&applied), ["python", "numpy", "ipykernel"]);
        assert_eq!(
            applied.dependencies[0].to_string(),
            "python 3.11.*",
            "the listed python wins"
        );
    }

    #[test]
    fn each_rule_names_itself() {
        let required = Policy {
            required_packages: vec!["ipykernel".into()],
            ..Policy::default()
        };
        let error = required
            .apply(spec("dependencies: [python]\n"))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("policy rule 'required_packages'"),
            "{error}"
        );

        let small = Policy {
            max_dependencies: Some(1),
            ..Policy::default()
        };
        let error = small
            .apply(spec("dependencies: [python, numpy]\n"))
            .unwrap_err();
        assert!(error.to_string().contains("'max_dependencies'"), "{error}");

        let channels = Policy {
            allowed_channels: Some(vec!["demo".into()]),
            ..Policy::default()
        };
        let error = channels
            .apply(spec("channels: [extra]\ndependencies: [python]\n"))
            .unwrap_err();
        assert!(error.to_string().contains("'allowed_channels'"), "{error}");
        let applied = channels.apply(spec("dependencies: [python]\n")).unwrap();
        assert_eq!(applied.channels, ["demo"]);
    }

    #[test]
    fn a_namespace_can_only_tighten_the_server() {
        let server = Policy {
            allowed_channels: Some(vec!["demo".into(), "extra".into()]),
            max_environments: Some(50),
            required_packages: vec!["ipykernel".into()],
            ..Policy::default()
        };
        let namespace = Policy {
            allowed_channels: Some(vec!["extra".into(), "elsewhere".into()]),
            max_environments: Some(500),
            required_packages: vec!["pip".into()],
            ..Policy::default()
        };
        let merged = server.tightened_by(&namespace);
        assert_eq!(merged.allowed_channels, Some(vec!["extra".into()]));
        assert_eq!(merged.max_environments, Some(50));
        assert_eq!(merged.required_packages, ["ipykernel", "pip"]);
    }

    #[test]
    fn invalid_policies_are_refused() {
        for policy in [
            Policy {
                included_packages: vec!["numpy >=<1".into()],
                ..Policy::default()
            },
            Policy {
                required_packages: vec!["Not A Name".into()],
                ..Policy::default()
            },
            Policy {
                allowed_platforms: Some(vec!["amiga-68k".into()]),
                ..Policy::default()
            },
        ] {
            assert!(
                matches!(policy.validate(), Err(PolicyError::Invalid(_))),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn a_submitted_lock_must_keep_to_the_channels_platforms_and_required_packages() {
        let allowlist = ChannelAllowlist::new(vec![
            NamedChannel::parse("demo=https://conda.example/demo").unwrap(),
            NamedChannel::parse("extra=https://conda.example/extra").unwrap(),
        ]);
        let url = |text: &str| Url::parse(text).unwrap();
        let demo = url("https://conda.example/demo/");
        let packages =
            |platform: &str, entries: &[(&str, &str)]| -> BTreeMap<String, Vec<(String, Url)>> {
                [(
                    platform.to_owned(),
                    entries
                        .iter()
                        .map(|(name, at)| ((*name).to_owned(), url(at)))
                        .collect(),
                )]
                .into()
            };
        let python = (
            "python",
            "https://conda.example/demo/linux-64/python-3.11.0-0.conda",
        );
        let kernel = (
            "ipykernel",
            "https://conda.example/demo/noarch/ipykernel-6.0-0.conda",
        );
        let open = Policy::default();
        assert!(
            open.check_lock(
                &allowlist,
                std::slice::from_ref(&demo),
                &packages("linux-64", &[python, kernel])
            )
            .is_ok()
        );

        let outside = ("evil", "https://elsewhere.example/linux-64/evil-1-0.conda");
        let refused = |policy: &Policy, channels: &[Url], packages| match policy
            .check_lock(&allowlist, channels, &packages)
        {
            Err(PolicyError::Violated { rule, .. }) => rule,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(
                &open,
                std::slice::from_ref(&demo),
                packages("linux-64", &[python, outside])
            ),
            "allowed_channels"
        );
        assert_eq!(
            refused(
                &open,
                &[url("https://elsewhere.example/")],
                packages("linux-64", &[python])
            ),
            "allowed_channels"
        );
        let only_extra = Policy {
            allowed_channels: Some(vec!["extra".into()]),
            ..Policy::default()
        };
        assert_eq!(
            refused(
                &only_extra,
                std::slice::from_ref(&demo),
                packages("linux-64", &[python])
            ),
            "allowed_channels"
        );
        let linux_only = Policy {
            allowed_platforms: Some(vec!["linux-64".into()]),
            ..Policy::default()
        };
        assert_eq!(
            refused(
                &linux_only,
                std::slice::from_ref(&demo),
                packages("osx-arm64", &[python])
            ),
            "allowed_platforms"
        );
        let kernels = Policy {
            included_packages: vec!["ipykernel >=6".into()],
            ..Policy::default()
        };
        assert_eq!(
            refused(
                &kernels,
                std::slice::from_ref(&demo),
                packages("linux-64", &[python])
            ),
            "required_packages"
        );
        assert!(
            kernels
                .check_lock(
                    &allowlist,
                    std::slice::from_ref(&demo),
                    &packages("linux-64", &[python, kernel])
                )
                .is_ok()
        );
        for hostile in [
            "https://conda.example/demo/linux-64%2F..%2F..%2Fsecret/python-3.11.0-0.conda",
            "https://conda.example/demo/%2e%2e/secret/linux-64/python-3.11.0-0.conda",
            "https://conda.example/demo/osx-arm64/python-3.11.0-0.conda",
            "https://conda.example/demo-sibling/linux-64/python-3.11.0-0.conda",
            "https://conda.example/demo/linux-64/deeper/python-3.11.0-0.conda",
            "https://user:pw@conda.example/demo/linux-64/python-3.11.0-0.conda",
        ] {
            assert_eq!(
                refused(
                    &open,
                    std::slice::from_ref(&demo),
                    packages("linux-64", &[("python", hostile)])
                ),
                "allowed_channels",
                "{hostile}"
            );
        }
    }

    #[test]
    fn default_channels_fill_a_spec_without_channels_and_nodefaults_passes() {
        let policy = Policy {
            allowed_channels: Some(vec!["demo".to_owned(), "extra".to_owned()]),
            default_channels: vec!["demo".to_owned()],
            ..Policy::default()
        };
        let filled = policy
            .apply(spec("channels: [nodefaults]\ndependencies: [python]\n"))
            .unwrap();
        assert_eq!(filled.channels, ["nodefaults", "demo"]);
        let named = policy
            .apply(spec(
                "channels: [extra, nodefaults]\ndependencies: [python]\n",
            ))
            .unwrap();
        assert_eq!(named.channels, ["extra", "nodefaults"]);
        let server = Policy {
            channel_alias: Some("not a url".to_owned()),
            ..Policy::default()
        };
        assert!(server.validate().is_err());
        let server = Policy {
            default_channels: vec!["demo".to_owned()],
            channel_alias: Some("https://conda.internal.example/".to_owned()),
            ..Policy::default()
        };
        let allowlist = server
            .configure_channels(ChannelAllowlist::new(vec![
                NamedChannel::parse("demo=http://127.0.0.1:9/demo").unwrap(),
                NamedChannel::parse("extra=file:///srv/extra").unwrap(),
            ]))
            .unwrap();
        assert_eq!(allowlist.default_channels(), ["demo"]);
        assert_eq!(
            allowlist
                .resolve("https://conda.internal.example/extra")
                .unwrap()
                .name,
            "extra"
        );
    }

    #[test]
    fn system_requirement_defaults_apply_per_platform_and_a_spec_overrides_them() {
        let allowlist = ChannelAllowlist::new(vec![
            NamedChannel::parse("demo=http://127.0.0.1:9/demo").unwrap(),
        ]);
        let requirements = |items: &[(&str, &str)]| -> SystemRequirements {
            items
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect()
        };
        let server = Policy {
            system_requirements: [
                (
                    "linux-64".to_owned(),
                    requirements(&[("glibc", "2.28"), ("cuda", "12.0")]),
                ),
                ("osx-arm64".to_owned(), requirements(&[("osx", "13")])),
            ]
            .into(),
            ..Policy::default()
        };
        server.validate().unwrap();
        let canonical = server
            .apply(spec(
                "channels: [demo]\ndependencies: [python]\nplatforms: [linux-64, osx-arm64]\nsystem_requirements: {cuda: '12.4'}\n",
            ))
            .unwrap()
            .canonicalize(&allowlist, Subdir::Linux64)
            .unwrap();
        assert_eq!(
            canonical.system_requirements["linux-64"],
            requirements(&[("cuda", "12.4"), ("libc", "2.28")])
        );
        assert_eq!(
            canonical.system_requirements["osx-arm64"],
            requirements(&[("macos", "13")])
        );
        // A namespace's defaults win over the server's, key by key.
        let narrowed = server.tightened_by(&Policy {
            system_requirements: [("linux-64".to_owned(), requirements(&[("cuda", "11.8")]))]
                .into(),
            ..Policy::default()
        });
        let canonical = narrowed
            .apply(spec("channels: [demo]\ndependencies: [python]\n"))
            .unwrap()
            .canonicalize(&allowlist, Subdir::Linux64)
            .unwrap();
        assert_eq!(
            canonical.system_requirements["linux-64"],
            requirements(&[("cuda", "11.8"), ("libc", "2.28")])
        );
        for (platform, key, value) in [
            ("amiga-68k", "cuda", "12"),
            ("osx-arm64", "cuda", "12"),
            ("linux-64", "cuda", "twelve"),
            ("linux-64", "gpu", "1"),
        ] {
            let policy = Policy {
                system_requirements: [(platform.to_owned(), requirements(&[(key, value)]))].into(),
                ..Policy::default()
            };
            assert!(
                matches!(policy.validate(), Err(PolicyError::Invalid(_))),
                "{platform} {key} {value}"
            );
        }
    }
}
