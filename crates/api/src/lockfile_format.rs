//! The lockfile formats a client may ask for (`?format=`) and, for
//! `@EXPLICIT` files, which platform's file it gets.

use crate::ApiError;

/// The platform whose `@EXPLICIT` file is asked for: the one named, which
/// the lock must have, or the lock's only one.
pub(crate) fn explicit_platform(
    platforms: &[String],
    asked: Option<&str>,
) -> Result<String, ApiError> {
    match asked {
        Some(platform) if platforms.iter().any(|known| known == platform) => {
            Ok(platform.to_owned())
        }
        Some(platform) => Err(ApiError::NotFound(format!(
            "the lock has no platform '{}'; it has {}",
            platform.escape_debug(),
            platforms.join(", ")
        ))),
        None => match platforms {
            [only] => Ok(only.clone()),
            _ => Err(ApiError::BadRequest(format!(
                "the lock has several platforms ({}): choose one with ?platform=",
                platforms.join(", ")
            ))),
        },
    }
}

/// A lockfile format a client may ask for with `?format=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockfileFormat {
    CondaLock,
    Pixi,
    Explicit,
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
