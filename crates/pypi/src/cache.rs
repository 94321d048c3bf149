//! A node-wide cache of locked wheels: each wheel is downloaded once,
//! checked against its locked sha256 and size, and kept under its hash.

use std::io::Write;
use std::path::{Path, PathBuf};

use envstore_core::pypi::LockedWheel;
use sha2::{Digest, Sha256};

use crate::PypiError;
use crate::client::IndexSettings;

/// The largest wheel downloaded, unless configured: above the biggest wheels
/// on PyPI (CUDA builds of torch are about 2.5 GB).
pub const DEFAULT_MAX_WHEEL_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Downloads a locked wheel once per node and returns its local path.
/// Concurrent callers and processes do not race: each download goes to a
/// temporary file beside its final place, is verified, then renamed into
/// place (atomic, and identical bytes if two callers both finish).
#[derive(Debug, Clone)]
pub struct WheelCache {
    dir: PathBuf,
    client: reqwest::Client,
    max_wheel_bytes: u64,
}

impl WheelCache {
    /// A cache in `dir` whose client trusts the same roots and proxies as
    /// the resolver's (see [`IndexSettings`]).
    pub fn new(dir: impl Into<PathBuf>, settings: &IndexSettings) -> Result<Self, PypiError> {
        let client = settings
            .base_client_builder()?
            .build()
            .map_err(|error| PypiError::IndexUnreachable {
                message: crate::error_chain(&error),
            })?
            .raw_client()
            .clone();
        Ok(Self {
            dir: dir.into(),
            client,
            max_wheel_bytes: DEFAULT_MAX_WHEEL_BYTES,
        })
    }

    /// Refuses wheels larger than `bytes`.
    #[must_use]
    pub fn with_max_wheel_bytes(mut self, bytes: u64) -> Self {
        self.max_wheel_bytes = bytes;
        self
    }

    /// Where a wheel is (or will be) kept: `<dir>/<sha256>/<file name>`.
    pub fn path_of(&self, wheel: &LockedWheel) -> Result<PathBuf, PypiError> {
        Ok(self
            .dir
            .join(checked_sha256(wheel)?)
            .join(wheel_file_name(wheel)?))
    }

    /// The local path of `wheel`, downloading and verifying it first when it
    /// is not cached yet.
    pub async fn fetch(&self, wheel: &LockedWheel) -> Result<PathBuf, PypiError> {
        let path = self.path_of(wheel)?;
        if fs_err::metadata(&path).is_ok_and(|metadata| {
            metadata.is_file() && wheel.size.is_none_or(|size| size == metadata.len())
        }) {
            return Ok(path);
        }
        let limit = wheel
            .size
            .map_or(self.max_wheel_bytes, |size| size.min(self.max_wheel_bytes));
        if wheel.size.is_some_and(|size| size > self.max_wheel_bytes) {
            return Err(PypiError::TooLarge {
                url: wheel.url.clone(),
                limit: self.max_wheel_bytes,
            });
        }
        let parent = path.parent().unwrap_or(&self.dir).to_path_buf();
        fs_err::create_dir_all(&parent)?;
        let download_error = |message: String| PypiError::Download {
            url: wheel.url.clone(),
            message,
        };
        let mut response = self
            .client
            .get(&wheel.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| download_error(crate::error_chain(&error)))?;
        if response
            .content_length()
            .is_some_and(|length| length > limit)
        {
            return Err(PypiError::TooLarge {
                url: wheel.url.clone(),
                limit,
            });
        }
        let mut temporary = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(&parent)?;
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| download_error(crate::error_chain(&error)))?
        {
            written += chunk.len() as u64;
            if written > limit {
                return Err(PypiError::TooLarge {
                    url: wheel.url.clone(),
                    limit,
                });
            }
            hasher.update(&chunk);
            temporary.write_all(&chunk)?;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != wheel.sha256.to_ascii_lowercase() {
            return Err(PypiError::HashMismatch {
                url: wheel.url.clone(),
                expected: wheel.sha256.clone(),
                actual,
            });
        }
        if let Some(size) = wheel.size
            && size != written
        {
            return Err(download_error(format!(
                "{written} bytes arrived, the lock says {size}"
            )));
        }
        temporary.as_file().sync_all()?;
        temporary
            .persist(&path)
            .map_err(|error| PypiError::Io(error.error))?;
        Ok(path)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The sha256 of a lock, checked to be 64 hex digits (it names a folder).
fn checked_sha256(wheel: &LockedWheel) -> Result<String, PypiError> {
    let sha256 = wheel.sha256.to_ascii_lowercase();
    if sha256.len() == 64 && sha256.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(sha256)
    } else {
        Err(PypiError::MissingHash {
            wheel: wheel.url.clone(),
        })
    }
}

/// The wheel's file name: the last segment of its URL, which must be a
/// plain `.whl` name (it becomes a path).
pub(crate) fn wheel_file_name(wheel: &LockedWheel) -> Result<String, PypiError> {
    let invalid = |message: &str| PypiError::InvalidWheel {
        wheel: wheel.url.clone(),
        message: message.to_string(),
    };
    let url = url::Url::parse(&wheel.url).map_err(|_| invalid("its URL does not parse"))?;
    let name = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .map(|segment| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8_lossy()
                .into_owned()
        })
        .ok_or_else(|| invalid("its URL names no file"))?;
    let plain = !name.is_empty()
        && name.ends_with(".whl")
        && !name.contains(['/', '\\', '\0'])
        && name != "."
        && name != "..";
    if plain {
        Ok(name)
    } else {
        Err(invalid("its URL does not end in a wheel file name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locked(url: &str, sha256: &str) -> LockedWheel {
        LockedWheel {
            name: "pkg".into(),
            version: "1.0".into(),
            url: url.into(),
            sha256: sha256.into(),
            size: None,
            requires_dist: Vec::new(),
            requires_python: None,
            index: "http://127.0.0.1/simple".into(),
        }
    }

    #[test]
    fn file_names_come_from_urls_and_must_be_plain() {
        let sha = "a".repeat(64);
        assert_eq!(
            wheel_file_name(&locked(
                "http://h/files/pkg-1.0-py3-none-any.whl#sha256=x",
                &sha
            ))
            .expect("a name"),
            "pkg-1.0-py3-none-any.whl"
        );
        assert_eq!(
            wheel_file_name(&locked(
                "http://h/files/pkg-1.0%2Blocal-py3-none-any.whl",
                &sha
            ))
            .expect("a name"),
            "pkg-1.0+local-py3-none-any.whl"
        );
        assert!(wheel_file_name(&locked("http://h/files/..%2F..%2Fx.whl", &sha)).is_err());
        assert!(wheel_file_name(&locked("http://h/files/pkg.tar.gz", &sha)).is_err());
    }

    #[test]
    fn a_malformed_sha256_never_becomes_a_path() {
        let settings = IndexSettings::pypi("/tmp/unused");
        let cache = WheelCache::new("/tmp/unused-cache", &settings).expect("a cache");
        assert!(
            cache
                .path_of(&locked("http://h/pkg-1.0-py3-none-any.whl", "../../etc"))
                .is_err()
        );
    }
}
