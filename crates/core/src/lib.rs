//! Domain types of envstore: names, environment specs and their canonical
//! form, content hashes and build states. No IO happens here, so every other
//! crate can depend on it and the rules stay in one place.

mod access;
pub mod body_limits;
mod build;
pub mod channel_request;
mod channels;
mod hash;
mod names;
pub mod pip;
mod policy;
pub mod progress;
pub mod pypi;
pub mod spec;
pub mod usage;
pub mod variables;

pub use access::{
    AccessError, Grant, Grants, NamespacePattern, Role, glob_matches, narrow_scopes,
    validate_subject,
};
pub use build::{BuildPhase, BuildStatus, PhaseTiming, UnknownStatus};
pub use channels::{
    ChannelAllowlist, ChannelCredential, ChannelError, ChannelPath, ChannelSecret, NamedChannel,
    REDACTED, UrlDefect, locate_in, public_url,
};
pub use hash::{ContentHash, ParseHashError};
pub use names::{EnvironmentName, InvalidName, NamespaceName};
pub use policy::{Policy, PolicyError};
pub use progress::{PhaseState, ProgressEvent, ProgressRecord};
pub use spec::{CanonicalSpec, EnvironmentSpec, SpecError, SpecFormat};

/// Renders an error and its causes, one per line, the way users read them;
/// a failed build stores this for its user.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str("\n  caused by: ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
