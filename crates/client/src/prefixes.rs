//! Packed prefixes over HTTP: what a node with only the server's URL and a
//! token needs to place an environment's prefix, read as it arrives (never
//! whole in memory).

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use envstore_api_types::EnvironmentView;
use envstore_api_types::prefixes::{
    PREFIX_FILE, PREFIX_LOCK_HASH_HEADER, PREFIX_PATH_HEADER, PREFIX_SHA256_HEADER,
};

use crate::Client;
use crate::client::{expect_success, problem, split_environment};

/// How long the server may stay silent in the middle of a download before
/// it is given up: a stalled transfer fails instead of hanging.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server answered for a lock's packed prefix.
pub enum PrefixAnswer {
    /// The archive, ready to be read.
    Download(PrefixDownload),
    /// The server published none for this lock; its explanation.
    NotPublished(String),
}

/// A packed prefix being downloaded.
pub struct PrefixDownload {
    /// The archive's sha256 (hex), as the server recorded it at publishing:
    /// the download must hash to it.
    pub sha256: String,
    /// The lock it was built from (hex).
    pub lock_hash: String,
    /// Where the prefix is on the server (it embeds that path), if said.
    pub server_path: Option<String>,
    /// The archive's size in bytes, if said.
    pub size: Option<u64>,
    response: reqwest::Response,
}

impl PrefixDownload {
    /// The next bytes of the archive; None at its end.
    pub async fn chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
        tokio::time::timeout(CHUNK_TIMEOUT, self.response.chunk())
            .await
            .with_context(|| {
                format!(
                    "the server sent nothing for {} s while sending the packed prefix",
                    CHUNK_TIMEOUT.as_secs()
                )
            })?
            .context("the download of the packed prefix broke off")
    }
}

impl Client {
    /// `namespace/name` as the server shows it: its current build, with the
    /// lock and its packages per platform.
    pub async fn environment(&self, environment: &str) -> anyhow::Result<EnvironmentView> {
        let (namespace, name) = split_environment(environment)?;
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("api/v1/namespaces/{namespace}/environments/{name}"),
            )?
            .send()
            .await
            .context("the server did not answer")?;
        expect_success(response).await
    }

    /// Starts downloading the packed prefix of `lock_hash`
    /// (`GET /api/v1/locks/{lock_hash}/prefix.tar.zst`).
    pub async fn packed_prefix(&self, lock_hash: &str) -> anyhow::Result<PrefixAnswer> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("api/v1/locks/{lock_hash}/{PREFIX_FILE}"),
            )?
            .send()
            .await
            .context("the server did not answer")?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(PrefixAnswer::NotPublished(
                crate::error::ApiError::read(response).await.summary(),
            ));
        }
        if !response.status().is_success() {
            return Err(problem(response).await);
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let sha256 = header(PREFIX_SHA256_HEADER).with_context(|| {
            format!("the server sent a packed prefix without its sha256 ({PREFIX_SHA256_HEADER})")
        })?;
        Ok(PrefixAnswer::Download(PrefixDownload {
            sha256,
            lock_hash: header(PREFIX_LOCK_HASH_HEADER).unwrap_or_else(|| lock_hash.to_owned()),
            server_path: header(PREFIX_PATH_HEADER),
            size: response.content_length(),
            response,
        }))
    }
}
