//! The check that every package of a lock comes from the build's own
//! channels, shared by builds and by materialising a prefix from a lock.

use envstore_core::ChannelAllowlist;
use envstore_solve::Lock;

/// A lock package from outside the build's channels.
#[derive(Debug, thiserror::Error)]
#[error(
    "package '{package}' ({platform}) comes from '{url}', which is not a package of the build's channels: {defect}"
)]
pub struct UrlNotAllowed {
    package: String,
    platform: String,
    url: String,
    defect: envstore_core::UrlDefect,
}

/// Defence in depth: every package URL must be a package of one of the
/// build's own channels (those the namespace's policy let its spec name)
/// for its platform, compared after decoding, so neither a channel nor a
/// submitted lock can send the worker elsewhere.
pub(crate) fn check_lock_urls(
    allowlist: &ChannelAllowlist,
    lock: &Lock,
    channels: &[String],
) -> Result<(), UrlNotAllowed> {
    let channels: Vec<url::Url> = allowlist
        .channels()
        .iter()
        .filter(|allowed| {
            let allowed = allowed.url.as_str().trim_end_matches('/');
            channels
                .iter()
                .any(|channel| channel.trim_end_matches('/') == allowed)
        })
        .map(|allowed| allowed.url.clone())
        .collect();
    for platform in lock.platforms() {
        for record in lock.records(platform).unwrap_or_default() {
            let checked = envstore_core::locate_in(&channels, &record.url)
                .and_then(|path| path.check_package(&[platform.to_owned()]));
            if let Err(defect) = checked {
                return Err(UrlNotAllowed {
                    package: record.package_record.name.as_normalized().to_owned(),
                    platform: platform.to_owned(),
                    url: envstore_core::public_url(&record.url).to_string(),
                    defect,
                });
            }
        }
    }
    Ok(())
}
