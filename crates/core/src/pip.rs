//! The `pip:` section of an environment.yml, as envstore installs it: PEP 508
//! requirements resolved to wheels from allowed indexes. What would need a
//! source build (editable installs, local paths, version-control URLs,
//! sdists) or reading other files (`-r`, `-c`) is refused with a reason a
//! person can act on, before anything is resolved.

use serde::{Deserialize, Serialize};
use std::str::FromStr;
use url::Url;

use crate::pypi::normalize_name;

/// The index a `pip:` section uses when it names none and the policy names
/// none either, as pip does.
pub const PYPI_INDEX: &str = "https://pypi.org/simple";

/// Where PyPI serves the files its simple index links to.
const PYPI_FILES: &str = "https://files.pythonhosted.org/";

/// Requirements one `pip:` section may list (the policy can lower it).
pub const MAX_PIP_REQUIREMENTS: usize = 500;

/// The longest single `pip:` line accepted.
const MAX_PIP_LINE: usize = 4096;

/// Why a `pip:` line is refused. Each is one problem of a spec; the spec
/// reports all of them at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipError {
    #[error(
        "pip requirement '{line}' needs a source build ({why}); source builds are not supported yet: use a released wheel (e.g. 'name==1.2.3') or a conda package"
    )]
    SourceBuild { line: String, why: &'static str },
    #[error(
        "pip line '{line}' reads another file ({option}); envstore does not read files beside the spec: list the requirements themselves in the 'pip:' section"
    )]
    ReadsFile { line: String, option: String },
    #[error(
        "pip option '{option}' is not supported; a 'pip:' section may hold PEP 508 requirements, --index-url and --extra-index-url"
    )]
    UnsupportedOption { option: String },
    #[error("pip requirement '{line}' is not a valid PEP 508 requirement: {reason}")]
    Invalid { line: String, reason: String },
    #[error("pip line '{line}' is {length} characters; at most {MAX_PIP_LINE} are accepted")]
    TooLong { line: String, length: usize },
    #[error("'{option}' needs a URL, e.g. '{option} https://pypi.org/simple'")]
    MissingUrl { option: String },
    #[error("'{url}' is not an index URL: {reason}")]
    BadIndexUrl { url: String, reason: String },
    #[error(
        "--index-url is given twice ('{first}' and '{second}'); a 'pip:' section has one primary index"
    )]
    TwoIndexUrls { first: String, second: String },
    #[error(
        "pip requirement '{line}' names the wheel '{file}', which is not a wheel of '{name}' (a wheel's file name is <name>-<version>-<tags>.whl)"
    )]
    WheelOfAnotherProject {
        line: String,
        name: String,
        file: String,
    },
    #[error("pip requirement '{line}' lists '{name}' again; name each package once")]
    Duplicate { line: String, name: String },
}

impl PipError {
    /// The slug of the problem `type` this is answered with.
    pub fn problem_type(&self) -> &'static str {
        match self {
            PipError::SourceBuild { .. } => "source-build-unsupported",
            PipError::ReadsFile { .. } | PipError::UnsupportedOption { .. } => "pip-unsupported",
            _ => "invalid-pip-requirement",
        }
    }

    /// The line of the spec this is about, as written, when it is about one.
    pub fn line_text(&self) -> Option<&str> {
        match self {
            PipError::SourceBuild { line, .. }
            | PipError::ReadsFile { line, .. }
            | PipError::Invalid { line, .. }
            | PipError::TooLong { line, .. }
            | PipError::WheelOfAnotherProject { line, .. }
            | PipError::Duplicate { line, .. } => Some(line),
            _ => None,
        }
    }
}

/// One requirement of a `pip:` section, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipRequirement {
    /// The PEP 503 normalized project name.
    pub name: String,
    /// The requirement in PEP 508's normal form (what is hashed and resolved).
    pub requirement: String,
    /// `name @ https://…/name-1.0-py3-none-any.whl`: the wheel, which must
    /// be a file of one of the section's indexes (the policy checks it).
    pub wheel_url: Option<Url>,
}

/// A `pip:` section as written, every line checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipSection {
    pub requirements: Vec<PipRequirement>,
    /// `--index-url` / `-i`: the primary index, replacing the default.
    pub index_url: Option<Url>,
    /// `--extra-index-url`, in order.
    pub extra_index_urls: Vec<Url>,
}

impl PipSection {
    /// Reads the lines of one or more `pip:` sections (their lines
    /// concatenated), reporting every bad line.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Self, Vec<PipError>> {
        let mut section = PipSection::default();
        let mut problems = Vec::new();
        for raw in lines {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() > MAX_PIP_LINE {
                problems.push(PipError::TooLong {
                    line: line.chars().take(80).collect::<String>() + "…",
                    length: line.len(),
                });
                continue;
            }
            match read_line(line) {
                Ok(PipLine::Requirement(requirement)) => {
                    if section
                        .requirements
                        .iter()
                        .any(|known| known.name == requirement.name)
                    {
                        problems.push(PipError::Duplicate {
                            line: line.to_owned(),
                            name: requirement.name,
                        });
                    } else {
                        section.requirements.push(requirement);
                    }
                }
                Ok(PipLine::IndexUrl(url)) => match &section.index_url {
                    Some(first) if first != &url => problems.push(PipError::TwoIndexUrls {
                        first: first.to_string(),
                        second: url.to_string(),
                    }),
                    _ => section.index_url = Some(url),
                },
                Ok(PipLine::ExtraIndexUrl(url)) => {
                    if !section.extra_index_urls.contains(&url) {
                        section.extra_index_urls.push(url);
                    }
                }
                Err(error) => problems.push(error),
            }
        }
        if problems.is_empty() {
            Ok(section)
        } else {
            Err(problems)
        }
    }

    /// The indexes resolution reads, the primary first: the section's own,
    /// or else `default_index`.
    pub fn indexes(&self, default_index: &Url) -> Vec<Url> {
        let mut indexes = vec![
            self.index_url
                .clone()
                .unwrap_or_else(|| default_index.clone()),
        ];
        for extra in &self.extra_index_urls {
            if !indexes.iter().any(|known| same_index(known, extra)) {
                indexes.push(extra.clone());
            }
        }
        indexes
    }
}

enum PipLine {
    Requirement(PipRequirement),
    IndexUrl(Url),
    ExtraIndexUrl(Url),
}

/// The URL schemes of version control systems, as pip spells them.
const VCS_PREFIXES: [&str; 4] = ["git+", "hg+", "svn+", "bzr+"];

/// File names of source distributions.
const SDIST_SUFFIXES: [&str; 6] = [".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip", ".tar"];

fn read_line(line: &str) -> Result<PipLine, PipError> {
    let source_build = |why| PipError::SourceBuild {
        line: line.to_owned(),
        why,
    };
    if line.starts_with('-') {
        let (option, value) = split_option(line);
        return match option {
            "-i" | "--index-url" => Ok(PipLine::IndexUrl(index_url(option, value)?)),
            "--extra-index-url" => Ok(PipLine::ExtraIndexUrl(index_url(option, value)?)),
            "-e" | "--editable" => Err(source_build("an editable install")),
            "-r" | "--requirement" | "-c" | "--constraint" => Err(PipError::ReadsFile {
                line: line.to_owned(),
                option: option.to_owned(),
            }),
            _ => Err(PipError::UnsupportedOption {
                option: option.to_owned(),
            }),
        };
    }
    let lower = line.to_ascii_lowercase();
    if VCS_PREFIXES.iter().any(|prefix| lower.starts_with(prefix)) {
        return Err(source_build("a version-control checkout"));
    }
    if is_local_path(line) {
        return Err(source_build("a local path"));
    }
    let parsed =
        pep508_rs::Requirement::<Url>::from_str(line).map_err(|error| PipError::Invalid {
            line: line.to_owned(),
            reason: error.message.to_string(),
        })?;
    if let Some(pep508_rs::VersionOrUrl::Url(url)) = &parsed.version_or_url {
        {
            let scheme = url.scheme();
            if VCS_PREFIXES
                .iter()
                .any(|prefix| scheme.starts_with(prefix.trim_end_matches('+')))
            {
                return Err(source_build("a version-control checkout"));
            }
            if scheme == "file" {
                return Err(source_build("a local path"));
            }
            if scheme != "https" && scheme != "http" {
                return Err(PipError::Invalid {
                    line: line.to_owned(),
                    reason: format!("'{scheme}' URLs are not read; use https"),
                });
            }
            let path = url.path().to_ascii_lowercase();
            if SDIST_SUFFIXES.iter().any(|suffix| path.ends_with(suffix)) {
                return Err(source_build("a source archive"));
            }
            if !path.ends_with(".whl") {
                return Err(PipError::Invalid {
                    line: line.to_owned(),
                    reason: "a direct URL must name a wheel (.whl)".to_owned(),
                });
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(PipError::Invalid {
                    line: line.to_owned(),
                    reason: "a URL in a spec must not carry credentials; the server holds them"
                        .to_owned(),
                });
            }
            let name = normalize_name(parsed.name.as_ref());
            let file = url.path().rsplit('/').next().unwrap_or_default();
            if wheel_project(file).is_none_or(|(project, _)| project != name) {
                return Err(PipError::WheelOfAnotherProject {
                    line: line.to_owned(),
                    name,
                    file: file.to_owned(),
                });
            }
            return Ok(PipLine::Requirement(PipRequirement {
                name,
                requirement: parsed.to_string(),
                wheel_url: Some(url.clone()),
            }));
        }
    }
    Ok(PipLine::Requirement(PipRequirement {
        name: normalize_name(parsed.name.as_ref()),
        requirement: parsed.to_string(),
        wheel_url: None,
    }))
}

/// The normalized project name and the version a wheel's file name
/// (`<name>-<version>(-<build>)?-<python>-<abi>-<platform>.whl`, PEP 427)
/// gives, or None when it is not one.
pub fn wheel_project(file: &str) -> Option<(String, String)> {
    let stem = file.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    if !(5..=6).contains(&parts.len()) || parts.iter().any(|part| part.is_empty()) {
        return None;
    }
    Some((normalize_name(parts[0]), parts[1].to_owned()))
}

/// `--opt value`, `--opt=value` and `-i value` alike.
fn split_option(line: &str) -> (&str, &str) {
    if let Some((option, value)) = line.split_once('=')
        && option.starts_with("--")
        && !option.contains(char::is_whitespace)
    {
        return (option, value.trim());
    }
    match line.split_once(char::is_whitespace) {
        Some((option, value)) => (option, value.trim()),
        None => (line, ""),
    }
}

fn index_url(option: &str, value: &str) -> Result<Url, PipError> {
    if value.is_empty() {
        return Err(PipError::MissingUrl {
            option: option.to_owned(),
        });
    }
    let bad = |reason: String| PipError::BadIndexUrl {
        url: value.to_owned(),
        reason,
    };
    let url = Url::parse(value).map_err(|error| bad(error.to_string()))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(bad("an index is reached over https (or http)".to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "a URL in a spec must not carry credentials; the server holds them".to_owned(),
        ));
    }
    Ok(url)
}

/// `.`, `./pkg`, `../pkg`, `/abs/pkg`, `~/pkg`, `C:\pkg`: pip installs these
/// from the local disk, which the builder does not share.
fn is_local_path(line: &str) -> bool {
    let first = line.split([' ', ';', '[']).next().unwrap_or_default();
    first == "."
        || first == ".."
        || first.starts_with("./")
        || first.starts_with("../")
        || first.starts_with('/')
        || first.starts_with('~')
        || first.starts_with(".\\")
        || first.as_bytes().get(1..3) == Some(b":\\")
        || first.to_ascii_lowercase().starts_with("file:")
}

/// Whether two index URLs name the same index (a trailing slash aside).
pub fn same_index(a: &Url, b: &Url) -> bool {
    a.as_str().trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

/// Whether `url` is a file of `index`: served from the index's own origin,
/// or, for PyPI, from the host PyPI serves its files from.
pub fn is_file_of_index(url: &Url, index: &Url) -> bool {
    let same_origin = url.origin() == index.origin();
    let pypi_file = same_index(index, &pypi_index()) && url.as_str().starts_with(PYPI_FILES);
    same_origin || pypi_file
}

/// [`PYPI_INDEX`] as a URL.
pub fn pypi_index() -> Url {
    #[allow(clippy::expect_used)]
    Url::parse(PYPI_INDEX).expect("PYPI_INDEX is a URL")
}

/// The PyPI part of a canonical spec: what is hashed, solved and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CanonicalPip {
    /// PEP 508 requirements in normal form, sorted.
    pub requirements: Vec<String>,
    /// The indexes, primary first.
    pub indexes: Vec<String>,
    /// Only releases uploaded before this instant (RFC 3339) are considered,
    /// so a resolution can be repeated later with the same outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_newer: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<PipSection, Vec<PipError>> {
        PipSection::parse(lines.iter().copied())
    }

    #[test]
    fn requirements_as_real_files_write_them() {
        let section = parse(&[
            "requests>=2.31",
            "Flask[async] ==3.0.*; python_version >= '3.9'",
            "mypkg>=2.1.0.dev0",
            "zope.interface",
            "--extra-index-url https://download.pytorch.org/whl/cpu",
            "-i https://pypi.org/simple",
            "# a comment",
        ])
        .unwrap();
        let names: Vec<&str> = section
            .requirements
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["requests", "flask", "mypkg", "zope-interface"]);
        assert_eq!(
            section.requirements[1].requirement,
            "flask[async]==3.0.* ; python_full_version >= '3.9'"
        );
        assert_eq!(
            section.index_url.as_ref().map(Url::as_str),
            Some("https://pypi.org/simple")
        );
        assert_eq!(section.extra_index_urls.len(), 1);
    }

    #[test]
    fn every_source_build_and_file_read_is_refused_with_its_reason() {
        let problems = parse(&[
            "-e .",
            "-e git+https://github.com/org/repo.git#egg=repo",
            "git+https://github.com/org/repo.git@main",
            "repo @ git+https://github.com/org/repo.git",
            "./local/pkg",
            "/opt/src/pkg",
            "pkg @ file:///opt/src/pkg",
            "pkg @ https://example.org/pkg-1.0.tar.gz",
            "-r requirements.txt",
            "--no-binary :all:",
            "numpy >=>1",
            "requests",
            "Requests==2.0",
            "wheelonly @ https://files.pythonhosted.org/packages/aa/other-1.0-py3-none-any.whl",
        ])
        .unwrap_err();
        let kinds: Vec<&str> = problems.iter().map(PipError::problem_type).collect();
        assert_eq!(
            kinds,
            [
                "source-build-unsupported",
                "source-build-unsupported",
                "source-build-unsupported",
                "source-build-unsupported",
                "source-build-unsupported",
                "source-build-unsupported",
                "source-build-unsupported",
                "source-build-unsupported",
                "pip-unsupported",
                "pip-unsupported",
                "invalid-pip-requirement",
                "invalid-pip-requirement",
                "invalid-pip-requirement",
            ],
            "{problems:#?}"
        );
        assert!(
            problems[0]
                .to_string()
                .contains("source builds are not supported yet")
        );
    }

    #[test]
    fn a_wheel_named_by_url_is_kept_with_its_url() {
        let section = parse(&[
            "Zope.Interface[test] @ https://files.pythonhosted.org/packages/aa/zope.interface-7.2-cp311-cp311-manylinux_2_17_x86_64.whl ; sys_platform == 'linux'",
        ])
        .unwrap();
        let requirement = &section.requirements[0];
        assert_eq!(requirement.name, "zope-interface");
        assert_eq!(
            requirement.wheel_url.as_ref().map(Url::as_str),
            Some(
                "https://files.pythonhosted.org/packages/aa/zope.interface-7.2-cp311-cp311-manylinux_2_17_x86_64.whl"
            )
        );
        assert!(
            requirement
                .requirement
                .starts_with("zope-interface[test] @ https://"),
            "{}",
            requirement.requirement
        );
        assert_eq!(
            wheel_project("zope.interface-7.2-cp311-cp311-manylinux_2_17_x86_64.whl"),
            Some(("zope-interface".to_owned(), "7.2".to_owned()))
        );
        assert_eq!(wheel_project("pkg-1.0.tar.gz"), None);
        assert_eq!(wheel_project("pkg-1.0-py3.whl"), None);
    }

    #[test]
    fn files_of_pypi_come_from_its_file_host() {
        let pypi = pypi_index();
        let file =
            Url::parse("https://files.pythonhosted.org/packages/x/y-1-py3-none-any.whl").unwrap();
        assert!(is_file_of_index(&file, &pypi));
        let elsewhere = Url::parse("https://evil.example/y-1-py3-none-any.whl").unwrap();
        assert!(!is_file_of_index(&elsewhere, &pypi));
        let mirror = Url::parse("http://127.0.0.1:8080/simple/").unwrap();
        let mirrored = Url::parse("http://127.0.0.1:8080/files/y-1-py3-none-any.whl").unwrap();
        assert!(is_file_of_index(&mirrored, &mirror));
    }
}
