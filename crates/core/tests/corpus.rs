//! The acceptance corpus (`tests/corpus/` at the repository root): every
//! `accepted/*.yml` parses and canonicalises under an allow-list like a
//! real deployment's, and every `refused/*.yml` is refused with the problem
//! type (and count, and `pip:` lines) its header documents:
//!
//! ```yaml
//! # expect: pip-unsupported
//! # problems: 1
//! # lines: 12
//! ```

use std::path::{Path, PathBuf};

use envstore_core::{ChannelAllowlist, EnvironmentSpec, NamedChannel, SpecError, SpecFormat};
use rattler_conda_types::Subdir;
use url::Url;

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/corpus")
        .join(kind);
    let mut files: Vec<PathBuf> = fs_err::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .collect();
    files.sort();
    files
}

/// conda-forge, bioconda, pytorch and nvidia through mirrors, no `defaults`;
/// specs without `channels:` get conda-forge.
fn allowlist() -> ChannelAllowlist {
    ChannelAllowlist::new(
        [
            "conda-forge=https://mirror.example/conda-forge",
            "bioconda=https://mirror.example/bioconda",
            "pytorch=https://mirror.example/pytorch",
            "nvidia=https://mirror.example/nvidia",
            "conda-forge/label/rc=https://mirror.example/conda-forge-rc",
            "internal=https://mirror.example/internal",
        ]
        .into_iter()
        .map(|text| NamedChannel::parse(text).expect("a channel"))
        .collect(),
    )
    .with_default_channels(vec!["conda-forge".to_owned()])
    .with_custom_channels(vec![(
        "internal".to_owned(),
        Url::parse("https://conda.corp.example/").expect("a URL"),
    )])
}

fn check(body: &[u8]) -> Result<envstore_core::CanonicalSpec, SpecError> {
    EnvironmentSpec::parse(body, SpecFormat::Yaml)?.canonicalize(&allowlist(), Subdir::Linux64)
}

fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .take_while(|line| line.starts_with('#'))
        .find_map(|line| line.strip_prefix(&format!("# {key}:")))
        .map(str::trim)
}

#[test]
fn the_corpus_is_large_enough() {
    let accepted = corpus("accepted").len();
    let refused = corpus("refused").len();
    assert!(accepted + refused >= 60, "{accepted} + {refused}");
    assert!(refused >= 15, "{refused}");
}

#[test]
fn every_accepted_file_is_accepted() {
    let mut failures = Vec::new();
    for path in corpus("accepted") {
        let body = fs_err::read(&path).expect("readable");
        match check(&body) {
            Ok(canonical) => {
                assert!(!canonical.dependencies.is_empty(), "{}", path.display());
                for channel in &canonical.channels {
                    assert!(
                        channel.starts_with("https://mirror.example/"),
                        "{}: {channel}",
                        path.display()
                    );
                }
            }
            Err(error) => failures.push(format!("{}: {error}", path.display())),
        }
    }
    assert!(failures.is_empty(), "refused:\n{}", failures.join("\n"));
}

#[test]
fn every_refused_file_is_refused_for_its_documented_reason() {
    let mut failures = Vec::new();
    for path in corpus("refused") {
        let text = fs_err::read_to_string(&path).expect("readable");
        let expected = header(&text, "expect")
            .unwrap_or_else(|| panic!("{} has no '# expect:' header", path.display()));
        match check(text.as_bytes()) {
            Ok(_) => failures.push(format!("{}: accepted", path.display())),
            Err(error) => {
                if error.problem_type() != expected {
                    failures.push(format!(
                        "{}: expected {expected}, got {} ({error})",
                        path.display(),
                        error.problem_type()
                    ));
                }
                if let Some(count) = header(&text, "problems") {
                    let found = error.problems().len().to_string();
                    if found != count {
                        failures.push(format!(
                            "{}: expected {count} problems, got {found}: {error}",
                            path.display()
                        ));
                    }
                }
                if let Some(lines) = header(&text, "lines") {
                    let found: Vec<String> = error
                        .problems()
                        .into_iter()
                        .filter_map(|problem| match problem {
                            SpecError::Pip { line, .. } => line.map(|l| l.to_string()),
                            _ => None,
                        })
                        .collect();
                    if found.join(", ") != lines {
                        failures.push(format!(
                            "{}: expected pip lines {lines}, got {found:?}",
                            path.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pip_refusals_say_what_to_do() {
    let error =
        check(b"dependencies:\n  - python\n  - pip:\n    - -e .\n    - -r requirements.txt\n")
            .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("source builds are not supported yet"),
        "{message}"
    );
    assert!(
        message.contains("list the requirements themselves"),
        "{message}"
    );
}

#[test]
fn extras_are_dropped_with_a_note() {
    let body = fs_err::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/corpus/accepted/extras-with-version.yml"),
    )
    .expect("readable");
    let spec = EnvironmentSpec::parse(&body, SpecFormat::Yaml).expect("accepted");
    assert_eq!(spec.notes.len(), 2, "{:?}", spec.notes);
    assert!(spec.notes[0].contains("[complete]"), "{:?}", spec.notes);
    let canonical = spec
        .canonicalize(&allowlist(), Subdir::Linux64)
        .expect("accepted");
    assert!(
        canonical.dependencies.contains(&"dask >=2023.1".to_owned()),
        "{:?}",
        canonical.dependencies
    );
    assert!(canonical.dependencies.contains(&"xarray".to_owned()));
}

#[test]
fn conda_operator_spellings_read_as_conda_reads_them() {
    // conda reads `name=<op>version` as `name<op>version`: the `=` is dropped.
    let canonical = check(b"dependencies: ['pandoc=<2.0.0', 'nbsphinx=>0.8', 'sphinx=!=7.2.0']\n")
        .expect("accepted");
    assert_eq!(
        canonical.dependencies,
        ["nbsphinx >0.8", "pandoc <2.0.0", "sphinx !=7.2.0"]
    );
}

#[test]
fn channels_resolve_by_name_public_url_and_alias_to_the_mirror() {
    let by_name = check(b"channels: [conda-forge]\ndependencies: [python]\n").unwrap();
    for written in [
        "https://conda.anaconda.org/conda-forge",
        "https://conda.anaconda.org/conda-forge/",
        "https://mirror.example/conda-forge",
    ] {
        let body = format!("channels: ['{written}', nodefaults]\ndependencies: [python]\n");
        let canonical = check(body.as_bytes()).unwrap();
        assert_eq!(canonical, by_name, "{written}");
        assert_eq!(canonical.hash(), by_name.hash(), "{written}");
    }
    // No `channels:` gets the configured default channels, not every allowed one.
    let unnamed = check(b"dependencies: [python]\n").unwrap();
    assert_eq!(unnamed, by_name);
    // A dependency's channel, by name or public URL, is solved from the mirror.
    for written in [
        "conda-forge::numpy",
        "https://conda.anaconda.org/conda-forge::numpy",
    ] {
        let body = format!("channels: [conda-forge]\ndependencies: ['{written}']\n");
        let canonical = check(body.as_bytes()).unwrap();
        assert_eq!(
            canonical.dependencies,
            ["numpy[channel=\"https://mirror.example/conda-forge/\"]"],
            "{written}"
        );
        assert_eq!(canonical.match_specs().unwrap().len(), 1);
    }
    // A configured channel alias replaces conda.anaconda.org.
    let aliased = allowlist()
        .with_channel_alias(Url::parse("https://conda.internal.example/mirror").unwrap());
    let spec = EnvironmentSpec::parse(
        b"channels: ['https://conda.internal.example/mirror/bioconda']\ndependencies: [bwa]\n",
        SpecFormat::Yaml,
    )
    .unwrap();
    let canonical = spec.canonicalize(&aliased, Subdir::Linux64).unwrap();
    assert_eq!(canonical.channels, ["https://mirror.example/bioconda/"]);
}

#[test]
fn ignored_keys_and_nodefaults_are_kept_but_not_hashed() {
    let plain = b"channels: [conda-forge]\ndependencies: [python]\n";
    let decorated = b"name: x\ndescription: a course env\nversion: 1\nchannels: [conda-forge, nodefaults]\ndependencies: [python]\nprefix: /opt/envs/x\n";
    let spec = EnvironmentSpec::parse(decorated, SpecFormat::Yaml).unwrap();
    assert_eq!(spec.ignored_keys, ["description", "version"]);
    assert_eq!(spec.channels, ["conda-forge", "nodefaults"]);
    assert_eq!(spec.notes.len(), 1, "{:?}", spec.notes);
    assert!(
        spec.notes[0].contains("'description', 'version'"),
        "{:?}",
        spec.notes
    );
    assert_eq!(
        check(decorated).unwrap().hash(),
        check(plain).unwrap().hash()
    );
}
