//! A failed request towards a channel, as the channel client reports it.
//! It lives here, below both the solver's client and the package gate, so
//! the gate can tell a refused connection (worth retrying) from a refusal
//! of policy without depending on the solver.

use std::time::Duration;

/// What went wrong with one request, in words that echo nothing the
/// channel's server said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFailure {
    /// The URL is not inside an allowed channel: never sent.
    Outside,
    /// The server redirected outside the allowed channels: not followed.
    Redirected,
    /// No answer (or no more of it) within the read limit.
    TimedOut(Duration),
    /// No connection within the connect limit, or refused.
    Unreachable,
    /// The server answered with an error status that sending again will not
    /// change (a 4xx other than 429).
    Answered,
    /// The server answered that it cannot answer now (5xx or 429).
    Unavailable,
    /// The answer says it is larger than the limit for repodata.
    TooLarge(u64),
    /// Anything else; the server log has it.
    Failed,
}

impl std::fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Outside => f.write_str("was refused: the URL is not inside an allowed channel"),
            Self::Redirected => f.write_str(
                "was redirected outside the allowed channels; the redirect was not followed",
            ),
            Self::TimedOut(limit) => write!(f, "got no answer within {} s", limit.as_secs_f64()),
            Self::Unreachable => f.write_str("could not connect to the channel's server"),
            Self::Answered => f.write_str(
                "failed: the channel's server answered with an error (the server log has it)",
            ),
            Self::Unavailable => f.write_str(
                "failed: the channel's server answered with an error that may pass (a 5xx or 429 status)",
            ),
            Self::TooLarge(limit) => write!(
                f,
                "was refused: the answer is larger than the repodata limit of {limit} bytes"
            ),
            Self::Failed => f.write_str("failed (the server log has the details)"),
        }
    }
}

/// A request towards a channel that failed, by channel name and the path
/// below the channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("channel '{channel}': fetching '{path}' {failure}{}", retried_suffix(.retried.as_ref()))]
pub struct ChannelRequestError {
    pub channel: String,
    pub path: String,
    pub failure: RequestFailure,
    /// Set when the failure was transient and retried for the whole budget.
    pub retried: Option<Retried>,
}

/// How a transient failure was retried before it was given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retried {
    /// The channel's URL, without credentials.
    pub url: String,
    pub attempts: u32,
    pub after: Duration,
}

fn retried_suffix(retried: Option<&Retried>) -> String {
    match retried {
        None => String::new(),
        Some(retried) => format!(
            " (gave up after {} attempts in {:.1} s of retrying {}; --transient-retry-seconds sets how long)",
            retried.attempts,
            retried.after.as_secs_f64(),
            retried.url
        ),
    }
}

impl RequestFailure {
    /// Whether sending the request again may get an answer: no connection,
    /// no answer in time, or an answer of 5xx or 429. Refusals of policy and size never are.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::TimedOut(_) | Self::Unreachable | Self::Unavailable
        )
    }
}
