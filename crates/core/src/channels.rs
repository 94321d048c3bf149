use std::fmt;

use percent_encoding::percent_decode_str;
use rattler_conda_types::Subdir;
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

/// What replaces a channel secret in text a person or a log can see.
pub const REDACTED: &str = "********";

/// A channel the server is allowed to fetch from, with the short name users
/// may write in `channels:` instead of the URL.
///
/// The URL may carry credentials as configured (`https://user:pass@host/…`,
/// `https://host/t/<token>/…`); [`ChannelAllowlist::new`] takes them out, so
/// the channels it lists are credential-free. Debug output and serialisation
/// never show them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedChannel {
    pub name: String,
    #[serde(serialize_with = "serialize_public_url")]
    pub url: Url,
}

impl fmt::Debug for NamedChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedChannel")
            .field("name", &self.name)
            .field("url", &public_url(&self.url).as_str())
            .finish()
    }
}

fn serialize_public_url<S: Serializer>(url: &Url, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(public_url(url).as_str())
}

/// A URL without user info, `/t/<token>/` prefix and query: what lockfiles,
/// specs, records and logs may hold (as conda-lock and pixi write them).
pub fn public_url(url: &Url) -> Url {
    rattler_redaction::strip_url_for_serialization(url)
}

impl NamedChannel {
    /// Parses `name=url` (the command-line form) or a bare URL, whose last path
    /// segment becomes the name.
    pub fn parse(text: &str) -> Result<Self, ChannelError> {
        let (name, url) = match text.split_once('=') {
            Some((name, url)) if !name.contains("://") => (Some(name.to_owned()), url),
            _ => (None, text),
        };
        let url =
            normalize_url(url).ok_or_else(|| ChannelError::InvalidUrl(redact_url_text(url)))?;
        let name = match name {
            Some(name) => name,
            None => public_url(&url)
                .path_segments()
                .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
                .map(str::to_owned)
                .ok_or_else(|| ChannelError::InvalidUrl(public_url(&url).to_string()))?,
        };
        Ok(Self { name, url })
    }
}

/// A URL as text, credentials masked, for messages about URLs that did not parse.
fn redact_url_text(text: &str) -> String {
    match Url::parse(text.trim()) {
        Ok(url) => public_url(&url).to_string(),
        Err(_) => text.escape_debug().to_string(),
    }
}

/// How the worker authenticates to one channel. Kept server-side: never
/// serialised, and its Debug output shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelCredential {
    /// HTTP basic authentication, from the URL's user info.
    Basic {
        username: String,
        password: Option<String>,
    },
    /// An anaconda.org-style token, sent as the `/t/<token>/` path prefix.
    Token(String),
}

impl fmt::Debug for ChannelCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}:{REDACTED})"),
            Self::Token(_) => write!(f, "Token({REDACTED})"),
        }
    }
}

/// The credentials configured for one channel, by its credential-free URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSecret {
    pub channel: Url,
    pub credentials: Vec<ChannelCredential>,
}

/// Why a URL is not a path inside a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlDefect {
    #[error("it is not inside any of the channels {0}")]
    Outside(String),
    #[error("it carries user info, a token, a query or a fragment")]
    Decorated,
    #[error(
        "its path segment '{0}' is empty, '.', '..' or hides a '/', '\\' or a control character once percent-decoded"
    )]
    Segment(String),
    #[error("it is not '<subdir>/<file>.conda' or '<subdir>/<file>.tar.bz2' inside the channel")]
    NotAPackage,
    #[error("its subdir '{found}' is not one of {allowed}")]
    Subdir { found: String, allowed: String },
}

/// Where a URL lies inside a channel: the channel and the path below it,
/// percent-decoded, segment by segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPath<'a> {
    pub channel: &'a Url,
    pub segments: Vec<String>,
}

impl ChannelPath<'_> {
    /// The path below the channel, as a person reads it.
    pub fn relative(&self) -> String {
        self.segments.join("/")
    }

    /// Checks that the path is `<subdir>/<file>` of a package archive, the
    /// subdir one of `subdirs` (`noarch` is always allowed).
    pub fn check_package(&self, subdirs: &[String]) -> Result<(), UrlDefect> {
        let [subdir, file] = self.segments.as_slice() else {
            return Err(UrlDefect::NotAPackage);
        };
        if !(file.ends_with(".conda") || file.ends_with(".tar.bz2"))
            || subdir.parse::<Subdir>().is_err()
        {
            return Err(UrlDefect::NotAPackage);
        }
        if subdir != "noarch" && !subdirs.iter().any(|allowed| allowed == subdir) {
            let mut allowed: Vec<&str> = subdirs.iter().map(String::as_str).collect();
            allowed.push("noarch");
            return Err(UrlDefect::Subdir {
                found: subdir.clone(),
                allowed: allowed.join(", "),
            });
        }
        Ok(())
    }
}

/// Locates `url` inside one of `channels` (credential-free, ending in `/`),
/// comparing after normalisation: same scheme, host and port, no user info,
/// token, query or fragment, and every segment below the channel's path a
/// plain name once percent-decoded (`%2F`, `%2e%2e`, `..` are refused, so
/// what the channel's server sees is what was checked).
pub fn locate_in<'a>(
    channels: impl IntoIterator<Item = &'a Url>,
    url: &Url,
) -> Result<ChannelPath<'a>, UrlDefect> {
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(UrlDefect::Decorated);
    }
    if public_url(url).path() != url.path() {
        return Err(UrlDefect::Decorated);
    }
    let segments: Vec<&str> = match url.path_segments() {
        Some(segments) => segments.collect(),
        None => return Err(UrlDefect::NotAPackage),
    };
    let mut names = Vec::new();
    for channel in channels {
        names.push(channel.as_str().to_owned());
        if channel.scheme() != url.scheme()
            || channel.host() != url.host()
            || channel.port_or_known_default() != url.port_or_known_default()
        {
            continue;
        }
        let Some(base) = channel.path_segments() else {
            continue;
        };
        let base: Vec<&str> = base.filter(|segment| !segment.is_empty()).collect();
        if segments.len() <= base.len() || segments[..base.len()] != base[..] {
            continue;
        }
        let mut decoded = Vec::new();
        for segment in &segments[base.len()..] {
            let text = percent_decode_str(segment)
                .decode_utf8()
                .map_err(|_| UrlDefect::Segment(segment.escape_debug().to_string()))?;
            if text.is_empty()
                || text == "."
                || text == ".."
                || text.contains(['/', '\\', '%'])
                || text.chars().any(char::is_control)
            {
                return Err(UrlDefect::Segment(segment.escape_debug().to_string()));
            }
            decoded.push(text.into_owned());
        }
        return Ok(ChannelPath {
            channel,
            segments: decoded,
        });
    }
    Err(UrlDefect::Outside(if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error(
        "'{0}' is not a valid channel URL (expected e.g. https://host/channel or file:///path)"
    )]
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
    /// Credentials taken out of the configured URLs, for the worker's HTTP
    /// client only.
    #[serde(skip)]
    secrets: Vec<ChannelSecret>,
    /// The channel names a spec without `channels:` gets; empty means every
    /// allowed channel, as before this setting existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    default_channels: Vec<String>,
    /// conda's `channel_alias`: a URL under it names the channel of that name
    /// (`https://conda.anaconda.org/conda-forge` is `conda-forge`). `None`
    /// is conda's default, [`DEFAULT_CHANNEL_ALIAS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channel_alias: Option<Url>,
    /// conda's `custom_channels`: the channel `name` lives at `<base>/<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    custom_channels: Vec<(String, Url)>,
}

/// conda's default `channel_alias`, which turns a channel name into the URL
/// the public channel lives at.
pub const DEFAULT_CHANNEL_ALIAS: &str = "https://conda.anaconda.org/";

impl ChannelAllowlist {
    /// The allowed channels, their URLs normalised (a trailing `/`) and
    /// stripped of credentials, which are kept apart for [`Self::secrets`].
    pub fn new(channels: Vec<NamedChannel>) -> Self {
        let mut secrets = Vec::new();
        let channels = channels
            .into_iter()
            .map(|channel| {
                let mut url = public_url(&channel.url);
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                let credentials = credentials_of(&channel.url);
                if !credentials.is_empty() {
                    secrets.push(ChannelSecret {
                        channel: url.clone(),
                        credentials,
                    });
                }
                NamedChannel {
                    name: channel.name,
                    url,
                }
            })
            .collect();
        Self {
            channels,
            secrets,
            ..Self::default()
        }
    }

    /// The channels a spec without `channels:` is solved from, by name.
    pub fn with_default_channels(mut self, names: Vec<String>) -> Self {
        self.default_channels = names;
        self
    }

    /// conda's `channel_alias` (see [`DEFAULT_CHANNEL_ALIAS`]).
    pub fn with_channel_alias(mut self, alias: Url) -> Self {
        self.channel_alias = Some(with_trailing_slash(alias));
        self
    }

    /// conda's `custom_channels`: name to the base URL the channel lives under.
    pub fn with_custom_channels(mut self, channels: Vec<(String, Url)>) -> Self {
        self.custom_channels = channels
            .into_iter()
            .map(|(name, base)| (name, with_trailing_slash(base)))
            .collect();
        self
    }

    /// The channel names a spec that gives none is solved from: the
    /// configured default channels, or else every allowed channel.
    pub fn default_channels(&self) -> Vec<&str> {
        if self.default_channels.is_empty() {
            self.channels.iter().map(|c| c.name.as_str()).collect()
        } else {
            self.default_channels.iter().map(String::as_str).collect()
        }
    }

    /// The channel name a public URL stands for, as conda reads it: a
    /// custom channel's URL, or a URL under the channel alias.
    fn public_name(&self, url: &Url) -> Option<String> {
        for (name, base) in &self.custom_channels {
            if normalize_url(&format!("{base}{name}")).as_ref() == Some(url) {
                return Some(name.clone());
            }
        }
        let alias = match &self.channel_alias {
            Some(alias) => alias.clone(),
            None => Url::parse(DEFAULT_CHANNEL_ALIAS).ok()?,
        };
        let name = url
            .as_str()
            .strip_prefix(alias.as_str())?
            .trim_end_matches('/');
        (!name.is_empty()).then(|| name.to_owned())
    }

    /// The credentials of the channels that have some, by credential-free URL.
    pub fn secrets(&self) -> &[ChannelSecret] {
        &self.secrets
    }

    /// `text` with every configured channel secret (as written, and
    /// percent-encoded) masked: the last guard before a message reaches a
    /// person or a log.
    pub fn redact_text(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in self.secrets.iter().flat_map(|secret| &secret.credentials) {
            let values: Vec<&str> = match secret {
                ChannelCredential::Basic {
                    password: Some(password),
                    ..
                } => vec![password.as_str()],
                ChannelCredential::Basic { password: None, .. } => Vec::new(),
                ChannelCredential::Token(token) => vec![token.as_str()],
            };
            for value in values.into_iter().filter(|value| value.len() >= 3) {
                let encoded = percent_encoding::utf8_percent_encode(
                    value,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string();
                text = text.replace(value, REDACTED).replace(&encoded, REDACTED);
            }
        }
        text
    }

    /// Locates a URL inside one of the allowed channels (see [`locate_in`]).
    pub fn locate(&self, url: &Url) -> Result<(&NamedChannel, ChannelPath<'_>), UrlDefect> {
        let path = locate_in(
            self.channels.iter().map(|channel| &channel.url),
            &public_url_if_tokened(url),
        )?;
        let channel = self
            .channels
            .iter()
            .find(|channel| &channel.url == path.channel)
            .ok_or_else(|| UrlDefect::Outside(path.channel.to_string()))?;
        Ok((channel, path))
    }

    pub fn channels(&self) -> &[NamedChannel] {
        &self.channels
    }

    /// Resolves what a user wrote in `channels:` (a name or a URL) to the
    /// allowed channel's URL.
    pub fn resolve(&self, channel: &str) -> Result<&NamedChannel, ChannelError> {
        let wanted = channel.trim();
        let by_name = |name: &str| self.channels.iter().find(|allowed| allowed.name == name);
        if !wanted.contains("://") {
            return by_name(wanted).ok_or_else(|| self.not_allowed(wanted));
        }
        let url = normalize_url(wanted).ok_or_else(|| self.not_allowed(wanted))?;
        self.channels
            .iter()
            .find(|allowed| allowed.url == url)
            .or_else(|| self.public_name(&url).and_then(|name| by_name(&name)))
            .ok_or_else(|| self.not_allowed(wanted))
    }

    /// Whether a URL lies inside one of the allowed channels, compared
    /// after normalisation (see [`locate_in`]).
    pub fn contains_url(&self, url: &Url) -> bool {
        locate_in(self.channels.iter().map(|channel| &channel.url), url).is_ok()
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

/// What a URL reached through a channel's token looks like without it: a
/// server redirecting inside a token channel keeps the `/t/<token>/` prefix.
fn public_url_if_tokened(url: &Url) -> Url {
    let tokened = url.path_segments().is_some_and(|mut segments| {
        segments.next() == Some("t") && segments.next().is_some_and(|token| !token.is_empty())
    });
    if tokened {
        let mut stripped = public_url(url);
        stripped.set_query(url.query());
        stripped.set_fragment(url.fragment());
        stripped
    } else {
        url.clone()
    }
}

/// The credentials a configured channel URL carries.
fn credentials_of(url: &Url) -> Vec<ChannelCredential> {
    let mut credentials = Vec::new();
    if !url.username().is_empty() || url.password().is_some() {
        let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
        credentials.push(ChannelCredential::Basic {
            username: decode(url.username()),
            password: url.password().map(decode),
        });
    }
    if let Some(mut segments) = url.path_segments()
        && segments.next() == Some("t")
        && let Some(token) = segments.next().filter(|token| !token.is_empty())
    {
        credentials.push(ChannelCredential::Token(token.to_owned()));
    }
    credentials
}

/// Parses a channel URL and gives it the trailing slash that makes URL joins
/// (`<channel>/<subdir>/repodata.json`) and comparisons behave.
fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

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
        assert_eq!(
            list.channels()[0].url.as_str(),
            "http://127.0.0.1:8080/demo/"
        );
        assert_eq!(list.channels()[1].name, "extra");
    }

    #[test]
    fn resolves_by_name_or_url() {
        let list = allowlist();
        assert_eq!(list.resolve("demo").unwrap().name, "demo");
        assert_eq!(
            list.resolve("http://127.0.0.1:8080/demo").unwrap().name,
            "demo"
        );
        assert_eq!(
            list.resolve("file:///srv/channels/extra/").unwrap().name,
            "extra"
        );
    }

    #[test]
    fn refuses_channels_not_listed() {
        let list = allowlist();
        for channel in [
            "conda-forge",
            "http://169.254.169.254/latest",
            "http://127.0.0.1:8080/demo/../x",
        ] {
            let error = list.resolve(channel).unwrap_err();
            assert!(
                matches!(error, ChannelError::NotAllowed { .. }),
                "{channel}"
            );
            assert!(
                error
                    .to_string()
                    .contains("demo (http://127.0.0.1:8080/demo/)")
            );
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

    #[test]
    fn urls_are_compared_after_decoding_and_normalisation() {
        let list = allowlist();
        let inside = |text: &str| list.contains_url(&Url::parse(text).unwrap());
        assert!(inside("http://127.0.0.1:8080/demo/noarch/x-1-0.tar.bz2"));
        for hostile in [
            "http://127.0.0.1:8080/demo/linux-64%2F..%2F..%2Fother/x-1-0.conda",
            "http://127.0.0.1:8080/demo/%2e%2e/other/x-1-0.conda",
            "http://127.0.0.1:8080/demo/linux-64/..%2fx-1-0.conda",
            "http://127.0.0.1:8080/demo/../demox/linux-64/x-1-0.conda",
            "http://127.0.0.1:8080/demo/linux-64/%252e%252e/x-1-0.conda",
            "http://127.0.0.1:8080/demo/linux-64//x-1-0.conda",
            "http://127.0.0.1:8080/demo/linux-64/x-1-0.conda?x=1",
            "http://user:pw@127.0.0.1:8080/demo/linux-64/x-1-0.conda",
            "http://127.0.0.1:8081/demo/linux-64/x-1-0.conda",
            "https://127.0.0.1:8080/demo/linux-64/x-1-0.conda",
        ] {
            assert!(!inside(hostile), "{hostile}");
        }
        let located = locate_in(
            [&list.channels()[0].url],
            &Url::parse("http://127.0.0.1:8080/demo/linux-64/x-1-0.conda").unwrap(),
        )
        .unwrap();
        assert_eq!(located.relative(), "linux-64/x-1-0.conda");
        assert!(located.check_package(&["linux-64".to_owned()]).is_ok());
        assert!(matches!(
            located.check_package(&["osx-arm64".to_owned()]),
            Err(UrlDefect::Subdir { .. })
        ));
        let deeper = locate_in(
            [&list.channels()[0].url],
            &Url::parse("http://127.0.0.1:8080/demo/linux-64/sub/x-1-0.conda").unwrap(),
        )
        .unwrap();
        assert_eq!(
            deeper.check_package(&["linux-64".to_owned()]),
            Err(UrlDefect::NotAPackage)
        );
    }

    #[test]
    fn credentials_are_taken_out_of_the_listed_channels() {
        let list = ChannelAllowlist::new(vec![
            NamedChannel::parse("private=https://reader:hunter2hunter2@conda.example/private")
                .unwrap(),
            NamedChannel::parse("tokened=https://conda.example/t/tk-123456/tokened/").unwrap(),
        ]);
        assert_eq!(
            list.channels()[0].url.as_str(),
            "https://conda.example/private/"
        );
        assert_eq!(
            list.channels()[1].url.as_str(),
            "https://conda.example/tokened/"
        );
        assert_eq!(list.secrets().len(), 2);
        assert_eq!(
            list.secrets()[0].credentials,
            [ChannelCredential::Basic {
                username: "reader".into(),
                password: Some("hunter2hunter2".into())
            }]
        );
        assert_eq!(
            list.secrets()[1].credentials,
            [ChannelCredential::Token("tk-123456".into())]
        );
        let shown = format!("{list:?} {}", serde_json::to_string(&list).unwrap());
        assert!(
            !shown.contains("hunter2") && !shown.contains("tk-123456"),
            "{shown}"
        );
        let configured =
            NamedChannel::parse("https://reader:hunter2hunter2@conda.example/t/tk-123456/private")
                .unwrap();
        let shown = format!(
            "{configured:?} {}",
            serde_json::to_string(&configured).unwrap()
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("tk-123456"),
            "{shown}"
        );
        assert_eq!(
            list.redact_text("GET https://conda.example/t/tk-123456/x failed; pass=hunter2hunter2"),
            "GET https://conda.example/t/********/x failed; pass=********"
        );
        // A redirect that keeps the token still lands inside the channel.
        let (channel, path) = list
            .locate(
                &Url::parse("https://conda.example/t/tk-123456/tokened/noarch/repodata.json")
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(
            (channel.name.as_str(), path.relative().as_str()),
            ("tokened", "noarch/repodata.json")
        );
    }
}
