//! Errors on the wire: `application/problem+json` (RFC 9457).

use serde::{Deserialize, Serialize};

/// The content type every error answer carries.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An error answer (RFC 9457), as every route gives it: what went wrong for
/// a person to act on, and the members that point at the cause.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// `/problems/<slug>`, e.g. `/problems/unsolvable`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    #[serde(default)]
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for a person to act on.
    #[serde(default)]
    pub detail: String,
    /// The request the problem is about, when the API names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Where in a spec a syntax error is (1-based), or the line a body nests too deep at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
    /// The spec dependency that is invalid or not allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
    /// The policy rule a spec breaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The package of a lockfile its channels contradict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// The platform a solve failed or timed out for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Readiness: the dependencies that do not answer (`database`, `store`, `data_folder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Vec<String>>,
    /// A refused submission: the quota it hit (`max_concurrent_builds`, `max_disk_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// The figure the quota bounds, as it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<i64>,
    /// The quota's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Every problem of a refused spec, so all can be fixed in one round;
    /// `detail` then summarises them and the members above describe the first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemItem>,
}

/// One problem of several, pointing at its cause as far as it is known.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProblemItem {
    /// `/problems/<slug>` of this problem alone, e.g. `/problems/pip-unsupported`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What is wrong, for a person to act on.
    pub detail: String,
    /// Where in the spec (1-based), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
    /// The dependency at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
    /// The policy rule broken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl Problem {
    /// The slug of `type` (`unsolvable` for `/problems/unsolvable`).
    pub fn slug(&self) -> &str {
        self.kind.strip_prefix("/problems/").unwrap_or(&self.kind)
    }
}
