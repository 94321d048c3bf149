use serde::{Deserialize, Serialize};
use url::Url;

/// A channel the server is allowed to fetch from, with the short name users
/// may write in `channels:` instead of the URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedChannel {
    pub name: String,
    pub url: Url,
}

impl NamedChannel {
    /// Parses `name=url` (the command-line form) or a bare URL, whose last path
    /// segment becomes the name.
    pub fn parse(text: &str) -> Result<Self, ChannelError> {
        let (name, url) = match text.split_once('=') {
            Some((name, url)) if !name.contains("://") => (Some(name.to_owned()), url),
            _ => (None, text),
        };
        let url = normalize_url(url).ok_or_else(|| ChannelError::InvalidUrl(url.to_owned()))?;
        let name = match name {
            Some(name) => name,
            None => url
                .path_segments()
                .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
                .map(str::to_owned)
                .ok_or_else(|| ChannelError::InvalidUrl(url.to_string()))?,
        };
        Ok(Self { name, url })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("'{0}' is not a valid channel URL (expected e.g. https://host/channel or file:///path)")]
    InvalidUrl(String),
    #[error("channel '{channel}' is not allowed on this server; allowed channels: {allowed}")]
    NotAllowed { channel: String, allowed: String },
    #[error("no channels given and the server has no default channels")]
    NoChannels,
}

/// The channels a server (later: a namespace) may build from. Every channel a
/// spec names is resolved through this list, so the worker never fetches a URL
/// that was not allowed by the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelAllowlist {
    channels: Vec<NamedChannel>,
}

impl ChannelAllowlist {
    pub fn new(channels: Vec<NamedChannel>) -> Self {
        Self { channels }
    }

    pub fn channels(&self) -> &[NamedChannel] {
        &self.channels
    }

    /// Resolves what a user wrote in `channels:` (a name or a URL) to the
    /// allowed channel's URL.
    pub fn resolve(&self, channel: &str) -> Result<&NamedChannel, ChannelError> {
        let wanted = channel.trim();
        let by_url = normalize_url(wanted);
        self.channels
            .iter()
            .find(|allowed| match &by_url {
                Some(url) if wanted.contains("://") => &allowed.url == url,
                _ => allowed.name == wanted,
            })
            .ok_or_else(|| self.not_allowed(wanted))
    }

    /// Whether a URL lies inside one of the allowed channels.
    pub fn contains_url(&self, url: &Url) -> bool {
        self.channels
            .iter()
            .any(|allowed| url.as_str().starts_with(allowed.url.as_str()))
    }

    /// The error for a channel outside this list, naming what is allowed.
    pub(crate) fn not_allowed(&self, channel: &str) -> ChannelError {
        let allowed = if self.channels.is_empty() {
            "none configured".to_owned()
        } else {
            self.channels
                .iter()
                .map(|c| format!("{} ({})", c.name, c.url))
                .collect::<Vec<_>>()
                .join(", ")
        };
        ChannelError::NotAllowed {
            channel: channel.escape_debug().to_string(),
            allowed,
        }
    }
}

/// Parses a channel URL and gives it the trailing slash that makes URL joins
/// (`<channel>/<subdir>/repodata.json`) and comparisons behave.
pub(crate) fn normalize_url(text: &str) -> Option<Url> {
    let mut url = Url::parse(text.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https" | "file") || url.cannot_be_a_base() {
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() {
        return None;
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowlist() -> ChannelAllowlist {
        ChannelAllowlist::new(vec![
            NamedChannel::parse("demo=http://127.0.0.1:8080/demo").unwrap(),
            NamedChannel::parse("file:///srv/channels/extra").unwrap(),
        ])
    }

    #[test]
    fn parses_named_and_bare_channels() {
        let list = allowlist();
        assert_eq!(list.channels()[0].name, "demo");
        assert_eq!(list.channels()[0].url.as_str(), "http://127.0.0.1:8080/demo/");
        assert_eq!(list.channels()[1].name, "extra");
    }

    #[test]
    fn resolves_by_name_or_url() {
        let list = allowlist();
        assert_eq!(list.resolve("demo").unwrap().name, "demo");
        assert_eq!(list.resolve("http://127.0.0.1:8080/demo").unwrap().name, "demo");
        assert_eq!(list.resolve("file:///srv/channels/extra/").unwrap().name, "extra");
    }

    #[test]
    fn refuses_channels_not_listed() {
        let list = allowlist();
        for channel in ["conda-forge", "http://169.254.169.254/latest", "http://127.0.0.1:8080/demo/../x"] {
            let error = list.resolve(channel).unwrap_err();
            assert!(matches!(error, ChannelError::NotAllowed { .. }), "{channel}");
            assert!(error.to_string().contains("demo (http://127.0.0.1:8080/demo/)"));
        }
    }

    #[test]
    fn urls_inside_a_channel_are_contained() {
        let list = allowlist();
        let inside = Url::parse("http://127.0.0.1:8080/demo/linux-64/x-1-0.conda").unwrap();
        let outside = Url::parse("http://127.0.0.1:8080/demox/linux-64/x-1-0.conda").unwrap();
        assert!(list.contains_url(&inside));
        assert!(!list.contains_url(&outside));
    }
}
