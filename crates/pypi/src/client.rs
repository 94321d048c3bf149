//! Where PyPI packages come from and how they are fetched.
//!
//! TLS and proxies: uv-client ignores `SSL_CERT_FILE` unless told, and by
//! default trusts only the webpki roots it bundles. envstore's channel
//! client (`envstore_solve::http`) is a reqwest 0.13 client with rustls and
//! the platform verifier, i.e. the system's roots, which on Linux honour
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`, and reqwest's proxies from the
//! environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`). The
//! uv client is built to match: system roots (`system_certs`), replaced by
//! the PEM file or directory of `SSL_CERT_FILE` / `SSL_CERT_DIR` when either
//! is set (or by [`TlsSettings::ca_certificates`]), and reqwest's own
//! environment proxies (uv adds none of its own here). The wheel cache uses
//! the same settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;
use uv_cache::Cache;
use uv_client::{
    BaseClientBuilder, Certificates, Connectivity, RegistryClient, RegistryClientBuilder,
};
use uv_distribution_types::{Index, IndexLocations, IndexUrl};

use crate::PypiError;

/// The public PyPI simple index.
pub const PYPI_INDEX_URL: &str = "https://pypi.org/simple/";

/// How often uv retries a failed request (it retries only transient errors).
const RETRIES: u32 = 3;

/// Trust roots for PyPI indexes (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Trust the system's roots, as envstore's channel client does; `false`:
    /// the webpki roots bundled with uv.
    pub system_roots: bool,
    /// A PEM file (or directory of them) whose certificates replace the
    /// roots above; [`TlsSettings::from_env`] takes `SSL_CERT_FILE`.
    pub ca_certificates: Option<PathBuf>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            system_roots: true,
            ca_certificates: None,
        }
    }
}

impl TlsSettings {
    /// System roots, replaced by `SSL_CERT_FILE` when it is set.
    pub fn from_env() -> Self {
        Self {
            system_roots: true,
            ca_certificates: std::env::var_os("SSL_CERT_FILE")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// Where PyPI packages come from, and how they are fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSettings {
    /// The default index (a PEP 503 / 691 simple index), e.g. [`PYPI_INDEX_URL`].
    pub index_url: Url,
    /// Further indexes, asked before the default one (pip's and uv's order).
    pub extra_index_urls: Vec<Url>,
    /// Files uploaded after this instant are ignored (reproducible resolutions).
    pub exclude_newer: Option<jiff::Timestamp>,
    pub tls: TlsSettings,
    /// uv's cache (index pages, wheel metadata); safe to share between
    /// concurrent resolutions and processes.
    pub cache_dir: PathBuf,
    /// The connect and read timeout of each request.
    pub timeout: Duration,
}

impl IndexSettings {
    /// PyPI, system roots (or `SSL_CERT_FILE`), a 60 s timeout.
    pub fn pypi(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            index_url: Url::parse(PYPI_INDEX_URL).expect("PYPI_INDEX_URL is a valid URL"),
            extra_index_urls: Vec::new(),
            exclude_newer: None,
            tls: TlsSettings::from_env(),
            cache_dir: cache_dir.into(),
            timeout: Duration::from_secs(60),
        }
    }

    pub(crate) fn index_locations(&self) -> Result<IndexLocations, PypiError> {
        let parse = |url: &Url| {
            url.as_str()
                .parse::<IndexUrl>()
                .map_err(|error| PypiError::IndexUnreachable {
                    message: format!("'{url}' is not an index URL: {error}"),
                })
        };
        let mut indexes = self
            .extra_index_urls
            .iter()
            .map(|url| parse(url).map(Index::from_extra_index_url))
            .collect::<Result<Vec<_>, _>>()?;
        indexes.push(Index::from_index_url(parse(&self.index_url)?));
        Ok(IndexLocations::new(indexes, Vec::new(), false))
    }

    /// uv's base client with envstore's trust roots, proxies and timeouts.
    pub(crate) fn base_client_builder(&self) -> Result<BaseClientBuilder<'static>, PypiError> {
        let mut builder = BaseClientBuilder::new(
            Connectivity::Online,
            self.tls.system_roots,
            Vec::new(),
            uv_preview::Preview::default(),
            self.timeout,
            self.timeout,
            RETRIES,
        );
        let certificates = match &self.tls.ca_certificates {
            Some(path) => Some(load_certificates(path)?),
            None => Certificates::from_env(),
        };
        if let Some(certificates) = certificates {
            builder = builder.custom_certificates(certificates);
        }
        Ok(builder)
    }

    pub(crate) fn registry_client(&self, cache: Cache) -> Result<RegistryClient, PypiError> {
        RegistryClientBuilder::new(self.base_client_builder()?, cache)
            .index_locations(self.index_locations()?)
            .build()
            .map_err(|error| PypiError::IndexUnreachable {
                message: crate::error_chain(&error),
            })
    }
}

fn load_certificates(path: &Path) -> Result<Certificates, PypiError> {
    Certificates::from_file(path).map_err(|error| PypiError::IndexUnreachable {
        message: format!(
            "the CA certificates {} cannot be used: {}",
            path.display(),
            crate::error_chain(&error)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_indexes_come_before_the_default_one() {
        let mut settings = IndexSettings::pypi("/tmp/unused");
        settings.extra_index_urls = vec![Url::parse("http://127.0.0.1:1/simple/").expect("a URL")];
        let locations = settings.index_locations().expect("locations");
        let urls: Vec<String> = locations
            .indexes()
            .map(|index| index.url().to_string())
            .collect();
        assert_eq!(
            urls,
            ["http://127.0.0.1:1/simple/", "https://pypi.org/simple/"]
        );
    }

    #[test]
    fn a_missing_ca_file_is_reported() {
        let mut settings = IndexSettings::pypi("/tmp/unused");
        settings.tls.ca_certificates = Some(PathBuf::from("/nonexistent/ca.pem"));
        let Err(error) = settings.base_client_builder() else {
            panic!("a missing CA file is an error");
        };
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }
}
