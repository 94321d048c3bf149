//! The lockfile formats a client may ask for (`?format=`) and, for
//! `@EXPLICIT` files and pinned `environment.yml` exports, which platform's
//! file it gets.

use crate::ApiError;

/// `asked` when the lock has it; otherwise why not, for the caller to
/// answer with its own status.
fn platform_of_lock(platforms: &[String], asked: &str) -> Result<String, String> {
    if platforms.iter().any(|known| known == asked) {
        Ok(asked.to_owned())
    } else {
        Err(format!(
            "the lock has no platform '{}'; it has {}",
            asked.escape_debug(),
            platforms.join(", ")
        ))
    }
}

/// The platform whose `@EXPLICIT` file is asked for: the one named, which
/// the lock must have, or the lock's only one.
pub(crate) fn explicit_platform(
    platforms: &[String],
    asked: Option<&str>,
) -> Result<String, ApiError> {
    match asked {
        Some(platform) => platform_of_lock(platforms, platform).map_err(ApiError::NotFound),
        None => match platforms {
            [only] => Ok(only.clone()),
            _ => Err(ApiError::BadRequest(format!(
                "the lock has several platforms ({}): choose one with ?platform=",
                platforms.join(", ")
            ))),
        },
    }
}

/// The platform of a pinned `environment.yml`: always named, since one
/// file pins one platform's builds, and one the lock has.
pub(crate) fn environment_platform(
    platforms: &[String],
    asked: Option<&str>,
) -> Result<String, ApiError> {
    match asked {
        Some(platform) => platform_of_lock(platforms, platform).map_err(ApiError::BadRequest),
        None => Err(ApiError::BadRequest(format!(
            "an environment.yml pins one platform's builds: choose one of {} with ?platform=",
            platforms.join(", ")
        ))),
    }
}

/// One package of a pinned `environment.yml`.
pub(crate) struct PinnedPackage<'a> {
    pub(crate) name: &'a str,
    pub(crate) version: String,
    pub(crate) build: &'a str,
}

/// An `environment.yml` that installs exactly one platform's locked
/// packages, as `conda env export` writes it (builds kept): `conda env
/// create -f` on a machine of that platform recreates the environment
/// without envstore. Channels and the name are quoted (a JSON string is a
/// YAML one) so any URL reads back as written.
pub(crate) fn pinned_environment_yml<'a>(
    name: &str,
    channels: impl IntoIterator<Item = &'a str>,
    packages: impl IntoIterator<Item = PinnedPackage<'a>>,
) -> String {
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    let mut yml = format!("name: {}\nchannels:\n", quoted(name));
    for channel in channels {
        yml.push_str(&format!("  - {}\n", quoted(channel)));
    }
    let mut pins: Vec<String> = packages
        .into_iter()
        .map(|package| format!("{}={}={}", package.name, package.version, package.build))
        .collect();
    pins.sort();
    if pins.is_empty() {
        yml.push_str("dependencies: []\n");
    } else {
        yml.push_str("dependencies:\n");
        for pin in pins {
            yml.push_str(&format!("  - {pin}\n"));
        }
    }
    yml
}

/// A lockfile format a client may ask for with `?format=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockfileFormat {
    CondaLock,
    Pixi,
    Explicit,
}

/// What `GET …/lockfile?format=` serves: a lockfile, or the pinned
/// `environment.yml` of one platform (made from the lock, so not a format
/// the solve route renders).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportFormat {
    Lockfile(LockfileFormat),
    Environment,
}

impl ExportFormat {
    /// `?format=` as given; conda-lock when absent.
    pub(crate) fn parse(format: Option<&str>) -> Result<Self, ApiError> {
        match format {
            Some("environment") => Ok(Self::Environment),
            other => LockfileFormat::parse(other)
                .map(Self::Lockfile)
                .map_err(|_| {
                    ApiError::BadRequest(format!(
                        "unknown lockfile format '{}': use conda-lock, pixi, explicit or environment",
                        other.unwrap_or_default().escape_debug()
                    ))
                }),
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Lockfile(format) => format.content_type(),
            Self::Environment => "application/yaml",
        }
    }
}

impl LockfileFormat {
    /// `?format=` as given; conda-lock when absent.
    pub(crate) fn parse(format: Option<&str>) -> Result<Self, ApiError> {
        match format.unwrap_or("conda-lock") {
            "conda-lock" => Ok(Self::CondaLock),
            "pixi" => Ok(Self::Pixi),
            "explicit" => Ok(Self::Explicit),
            other => Err(ApiError::BadRequest(format!(
                "unknown lockfile format '{}': use conda-lock, pixi or explicit",
                other.escape_debug()
            ))),
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::CondaLock | Self::Pixi => "application/yaml",
            Self::Explicit => "text/plain; charset=utf-8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_environment_names_every_package_with_its_build() {
        let pin = |name, version: &str, build| PinnedPackage {
            name,
            version: version.to_owned(),
            build,
        };
        let yml = pinned_environment_yml(
            "env",
            ["https://conda.anaconda.org/conda-forge/"],
            [
                pin("zlib", "1.3.1", "hb9d3cd8_2"),
                pin("python", "3.12.8", "h9e4cc4f_1_cpython"),
            ],
        );
        assert_eq!(
            yml,
            "name: \"env\"\nchannels:\n  - \"https://conda.anaconda.org/conda-forge/\"\n\
             dependencies:\n  - python=3.12.8=h9e4cc4f_1_cpython\n  - zlib=1.3.1=hb9d3cd8_2\n"
        );
    }

    #[test]
    fn the_lockfile_get_also_serves_an_environment() {
        assert_eq!(
            ExportFormat::parse(Some("environment")).unwrap(),
            ExportFormat::Environment
        );
        assert_eq!(
            ExportFormat::parse(None).unwrap(),
            ExportFormat::Lockfile(LockfileFormat::CondaLock)
        );
        let Err(ApiError::BadRequest(message)) = ExportFormat::parse(Some("toml")) else {
            panic!("an unknown format is a bad request")
        };
        assert!(message.contains("environment"), "{message}");
    }

    #[test]
    fn a_pinned_environment_needs_a_platform_of_the_lock() {
        let platforms = ["linux-64".to_owned(), "osx-arm64".to_owned()];
        assert_eq!(
            environment_platform(&platforms, Some("osx-arm64")).unwrap(),
            "osx-arm64"
        );
        for asked in [None, Some("win-64")] {
            assert!(matches!(
                environment_platform(&platforms, asked),
                Err(ApiError::BadRequest(_))
            ));
        }
        // Even a lock of one platform: the export says which one it pins.
        assert!(environment_platform(&platforms[..1], None).is_err());
    }
}
