//! The PyPI resolution workload: the real wheels of one project (by default
//! `ipykernel`, downloaded by `pip download` into `target/test-wheels/`),
//! served as a simple index on loopback and resolved for CPython 3.11
//! linux-64 (manylinux_2_28) by envstore-pypi in-process, and by the
//! `uv pip compile` CLI on the same index as the peer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use envstore_core::pypi::normalize_name;
use envstore_fixtures::{ServedIndex, serve_simple_index, write_simple_index_of_dir};
use envstore_pypi::{DEFAULT_GLIBC, IndexSettings, PythonTarget, TlsSettings, resolve};
use rattler_conda_types::{PackageName, PackageRecord, RepoDataRecord, Subdir, VersionWithSource};
use url::Url;

/// The project resolved.
pub const PYPI_REQUIREMENT: &str = "ipykernel";

/// The python both resolvers target: uv reads `--python-version 3.11` as
/// 3.11.0, so the conda `python` record says the same.
pub const PYTHON_VERSION: &str = "3.11.0";

/// uv's `--python-platform` for linux-64 at envstore's default glibc
/// baseline ([`DEFAULT_GLIBC`], 2.28).
pub const UV_PYTHON_PLATFORM: &str = "x86_64-manylinux_2_28";

/// Where `pip download` puts the wheels (shared with `scripts/test`).
pub fn default_wheels_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-wheels/ipykernel")
}

/// A resolution as both tools can state it: normalized name → version.
pub type Pins = BTreeMap<String, String>;

/// The wheels of a folder, published as a simple index and served on
/// 127.0.0.1 for as long as this lives.
pub struct PypiIndex {
    served: ServedIndex,
    /// How many wheels the folder holds.
    pub wheels: usize,
}

impl PypiIndex {
    /// Writes the index of `wheels` under `data/pypi-index` and serves it.
    /// Must be called inside a tokio runtime (the server runs on it).
    pub async fn serve(wheels: &Path, data: &Path) -> anyhow::Result<Self> {
        ensure!(
            wheels.is_dir(),
            "no wheels at {} (python3 -m pip download --only-binary=:all: --python-version 3.11 \
             --platform manylinux_2_28_x86_64 -d {} {PYPI_REQUIREMENT})",
            wheels.display(),
            wheels.display()
        );
        let info = write_simple_index_of_dir(&data.join("pypi-index"), wheels)
            .with_context(|| format!("publishing the wheels of {}", wheels.display()))?;
        let count = info.projects.values().map(Vec::len).sum();
        ensure!(count > 0, "no wheels in {}", wheels.display());
        let served = serve_simple_index(info.root).await?;
        Ok(Self {
            served,
            wheels: count,
        })
    }

    /// `http://127.0.0.1:PORT/simple/`.
    pub fn url(&self) -> &Url {
        &self.served.url
    }

    /// envstore-pypi's settings for this index with its uv cache in `cache_dir`.
    pub fn settings(&self, cache_dir: &Path) -> IndexSettings {
        IndexSettings {
            index_url: self.served.url.clone(),
            extra_index_urls: Vec::new(),
            exclude_newer: None,
            tls: TlsSettings::default(),
            cache_dir: cache_dir.to_path_buf(),
            timeout: Duration::from_secs(60),
        }
    }

    pub async fn shutdown(self) -> anyhow::Result<()> {
        Ok(self.served.shutdown().await?)
    }
}

/// CPython [`PYTHON_VERSION`] on linux-64 as a conda solution would state
/// it, with no `__glibc` declared (so the default 2.28 baseline).
pub fn python_target() -> anyhow::Result<PythonTarget> {
    let platform = Subdir::Linux64;
    let records = [
        ("python", PYTHON_VERSION, "h0_0_cpython"),
        ("python_abi", "3.11", "8_cp311"),
    ]
    .into_iter()
    .map(|(name, version, build)| conda_record(platform, name, version, build))
    .collect::<anyhow::Result<Vec<_>>>()?;
    let target =
        PythonTarget::from_conda(platform, &records, &[])?.context("the records have a python")?;
    ensure!(
        target.os_baseline() == Some(DEFAULT_GLIBC) && DEFAULT_GLIBC == (2, 28),
        "the target's glibc baseline {:?} is not the manylinux_2_28 of uv's --python-platform {UV_PYTHON_PLATFORM}",
        target.os_baseline()
    );
    Ok(target)
}

fn conda_record(
    platform: Subdir,
    name: &str,
    version: &str,
    build: &str,
) -> anyhow::Result<RepoDataRecord> {
    let mut package_record = PackageRecord::new(
        PackageName::from_str(name).map_err(|error| anyhow!("{name}: {error}"))?,
        VersionWithSource::from_str(version).map_err(|error| anyhow!("{version}: {error}"))?,
        build
            .parse()
            .map_err(|error| anyhow!("{build}: {error:?}"))?,
    );
    package_record.subdir = platform.as_str().to_string();
    Ok(RepoDataRecord {
        package_record,
        identifier: format!("{name}-{version}-{build}.conda")
            .parse()
            .map_err(|error| anyhow!("{name}: {error:?}"))?,
        url: Url::parse(&format!(
            "https://example.invalid/{platform}/{name}-{version}-{build}.conda"
        ))?,
        channel: Some("https://example.invalid/".to_string()),
    })
}

/// One resolution of [`PYPI_REQUIREMENT`] through envstore-pypi, timed from
/// the call to the locked wheels; `cache_dir` is uv's cache (empty: cold).
pub async fn resolve_envstore(
    index: &PypiIndex,
    target: &PythonTarget,
    cache_dir: &Path,
) -> anyhow::Result<(Duration, Pins)> {
    let settings = index.settings(cache_dir);
    let requirements = [PYPI_REQUIREMENT.to_string()];
    let started = Instant::now();
    let wheels = resolve(&requirements, target, &BTreeMap::new(), &settings).await?;
    let elapsed = started.elapsed();
    let pins = wheels
        .into_iter()
        .map(|wheel| (normalize_name(&wheel.name), wheel.version))
        .collect();
    Ok((elapsed, pins))
}

/// The `uv pip compile` peer: the CLI (a process per resolution) reading a
/// `requirements.in`, on the same index, python version and platform.
pub struct UvCompile {
    uv: PathBuf,
    python: PathBuf,
    requirements_in: PathBuf,
    index_url: Url,
}

impl UvCompile {
    /// Writes `work/requirements.in` and checks that `uv` runs. The CLI
    /// always looks for an interpreter (it would build sdists with it), even
    /// with `--python-version`; `python` names one, so that search is not a
    /// walk through PATH (pyenv shims are slow scripts).
    pub fn new(uv: &Path, python: &Path, work: &Path, index: &PypiIndex) -> anyhow::Result<Self> {
        fs_err::create_dir_all(work)?;
        let requirements_in = work.join("requirements.in");
        fs_err::write(&requirements_in, format!("{PYPI_REQUIREMENT}\n"))?;
        let compile = Self {
            uv: uv.to_path_buf(),
            python: python.to_path_buf(),
            requirements_in,
            index_url: index.url().clone(),
        };
        compile.version()?;
        Ok(compile)
    }

    /// `uv --version`, e.g. `uv 0.12.5 (x86_64-unknown-linux-gnu)`.
    pub fn version(&self) -> anyhow::Result<String> {
        let output = Command::new(&self.uv)
            .arg("--version")
            .output()
            .with_context(|| format!("running {} --version", self.uv.display()))?;
        ensure!(
            output.status.success(),
            "{} --version failed: {}",
            self.uv.display(),
            output.status
        );
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// The command line of one resolution with uv's cache in `cache_dir`
    /// (a new folder: cold; a kept one: warm).
    pub fn command(&self, cache_dir: &Path) -> Command {
        let mut command = Command::new(&self.uv);
        command
            .args(["pip", "compile", "--quiet", "--no-header", "--no-annotate"])
            .args(["--no-config", "--no-python-downloads"])
            .arg("--python")
            .arg(&self.python)
            .arg("--index-url")
            .arg(self.index_url.as_str().trim_end_matches('/'))
            .args(["--python-version", "3.11"])
            .args(["--python-platform", UV_PYTHON_PLATFORM])
            .args(["--only-binary", ":all:"])
            .arg("--cache-dir")
            .arg(cache_dir)
            .arg(&self.requirements_in)
            // The CLI's own settings come from its flags only.
            .env_remove("UV_INDEX_URL")
            .env_remove("UV_EXTRA_INDEX_URL")
            .env_remove("UV_CACHE_DIR")
            .env_remove("UV_PYTHON");
        command
    }

    /// One resolution, timed from spawning `uv` to its exit.
    pub fn run(&self, cache_dir: &Path) -> anyhow::Result<(Duration, Pins)> {
        let mut command = self.command(cache_dir);
        let started = Instant::now();
        let output = command
            .output()
            .with_context(|| format!("running {}", self.uv.display()))?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            bail!(
                "uv pip compile failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok((
            elapsed,
            parse_compiled(&String::from_utf8_lossy(&output.stdout))?,
        ))
    }
}

/// The `name==version` lines of `uv pip compile`'s output (comments,
/// options and markers ignored).
pub fn parse_compiled(text: &str) -> anyhow::Result<Pins> {
    let mut pins = Pins::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with('-') {
            continue;
        }
        let requirement = line.split([';', ' ', '\\']).next().unwrap_or(line);
        let (name, version) = requirement
            .split_once("==")
            .with_context(|| format!("'{line}' in uv's output is not name==version"))?;
        pins.insert(normalize_name(name), version.to_string());
    }
    Ok(pins)
}

/// Why two resolutions differ, or `None` when they pin the same versions.
pub fn differences(ours: &Pins, theirs: &Pins) -> Option<String> {
    let mut lines = Vec::new();
    for (name, version) in ours {
        match theirs.get(name) {
            None => lines.push(format!("  {name}=={version}: only envstore")),
            Some(other) if other != version => {
                lines.push(format!("  {name}: envstore {version}, uv {other}"));
            }
            Some(_) => {}
        }
    }
    for (name, version) in theirs {
        if !ours.contains_key(name) {
            lines.push(format!("  {name}=={version}: only uv"));
        }
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uv_output_is_read_as_pins() {
        let text = "# comment\n--index-url http://x/simple\nJupyter_Client==8.6.3\n    # via ipykernel\n\
                    pexpect==4.9.0 ; sys_platform != 'win32'\ntornado==6.4.2 \\\n    --hash=sha256:ab\n";
        let pins = parse_compiled(text).expect("pins");
        assert_eq!(
            pins,
            Pins::from([
                ("jupyter-client".into(), "8.6.3".into()),
                ("pexpect".into(), "4.9.0".into()),
                ("tornado".into(), "6.4.2".into()),
            ])
        );
        assert!(parse_compiled("ipykernel>=6\n").is_err());
    }

    #[test]
    fn differences_name_each_side() {
        let ours = Pins::from([("a".into(), "1".into()), ("b".into(), "2".into())]);
        let theirs = Pins::from([("a".into(), "1".into()), ("c".into(), "3".into())]);
        assert_eq!(differences(&ours, &ours.clone()), None);
        let text = differences(&ours, &theirs).expect("they differ");
        assert!(
            text.contains("b==2: only envstore") && text.contains("c==3: only uv"),
            "{text}"
        );
    }
}
