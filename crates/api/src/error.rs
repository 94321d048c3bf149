//! Every error leaves the API as `application/problem+json` (RFC 9457), with
//! a message a person can act on. Internal errors are logged in full and
//! shown only as "internal error".

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use envstore_api_types::problem::ProblemItem;
use envstore_api_types::{PROBLEM_CONTENT_TYPE, Problem};
use envstore_core::{InvalidName, SpecError, error_chain};
use envstore_db::DbError;
use envstore_solve::SolveError;
use envstore_store::StoreError;

/// What `Retry-After` asks of a client when the database does not answer:
/// about the time a restarted PostgreSQL or a freed disk takes to come back.
pub const DATABASE_RETRY_AFTER_SECONDS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the request needs an 'Authorization: Bearer <token>' header")]
    Unauthorized,
    #[error("the token is not valid: unknown, expired or revoked")]
    InvalidToken,
    #[error("the token is not allowed to do this")]
    Forbidden,
    #[error(transparent)]
    Access(#[from] envstore_core::AccessError),
    #[error(transparent)]
    Policy(#[from] envstore_core::PolicyError),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Name(#[from] InvalidName),
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// A body refused before parsing: too large or nested too deep.
    #[error(transparent)]
    Body(#[from] envstore_core::body_limits::BodyError),
    /// Parsing the body took longer than its budget.
    #[error("the request body took more than {seconds} s to read; send a simpler one")]
    ParseBudget { seconds: u64 },
    /// Every parser slot stayed busy for the whole budget.
    #[error("the server is busy reading other request bodies; retry in a few seconds")]
    Busy,
    /// A submitted lock its channels contradict, or that could not be
    /// checked against them.
    #[error("the lockfile cannot be installed: {0}")]
    LockVerify(#[from] envstore_solve::VerifyError),
    /// The caller has as many event streams open as it may.
    #[error("{0}")]
    TooManyStreams(String),
    #[error("internal error")]
    Database(#[from] DbError),
    #[error("internal error")]
    Store(#[source] StoreError),
    #[error(transparent)]
    Solve(#[from] envstore_solve::SolveError),
    #[error("internal error")]
    Lock(#[from] envstore_solve::LockError),
    /// The `pip:` section could not be resolved after the conda solve.
    #[error(transparent)]
    Pypi(#[from] envstore_pypi::EnvironmentError),
    /// A dependency of the service does not answer (readiness); `failed`
    /// names which, the log has why.
    #[error("{detail}")]
    NotReady {
        failed: Vec<&'static str>,
        detail: String,
    },
    /// A lockfile submitted to be installed as is cannot be used.
    #[error("the lockfile cannot be installed: {0}")]
    InvalidLockfile(#[source] envstore_solve::LockError),
    /// An `Idempotency-Key` sent again with another request than its first.
    #[error(
        "Idempotency-Key '{0}' was already used for a different request; send a new key for a new request"
    )]
    IdempotencyKeyReused(String),
    /// A submission its namespace's quota does not allow.
    #[error(transparent)]
    Quota(#[from] crate::quota::QuotaExceeded),
}

/// Seconds a client is asked to wait when the object store does not answer.
pub const STORE_RETRY_AFTER_SECONDS: u64 = 5;

/// Whether a store failure is an outage (hanging, refusing, not answering)
/// rather than a fault of ours: a 503 the client may retry, not a 500.
fn store_unavailable(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::TimedOut { .. }
            | StoreError::Unreachable { .. }
            | StoreError::Unavailable { .. }
    )
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(key) => Self::NotFound(format!("artifact '{key}' was not found")),
            other => Self::Store(other),
        }
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Quota(quota) => quota.status(),
            Self::Spec(error) if spec_slug(error) == "malformed-spec" => StatusCode::BAD_REQUEST,
            Self::Spec(error) if spec_slug(error) == "too-large" => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooLarge { .. }
            | Self::Body(envstore_core::body_limits::BodyError::TooLarge { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::Body(_) | Self::ParseBudget { .. } => StatusCode::BAD_REQUEST,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::LockVerify(envstore_solve::VerifyError::Repodata { .. }) => {
                StatusCode::BAD_GATEWAY
            }
            Self::LockVerify(envstore_solve::VerifyError::Timeout(_)) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::LockVerify(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Spec(_)
            | Self::Name(_)
            | Self::Access(_)
            | Self::Policy(_)
            | Self::InvalidLockfile(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Database(DbError::NotFound(_)) => StatusCode::NOT_FOUND,
            Self::Database(DbError::Conflict(_)) => StatusCode::CONFLICT,
            Self::Database(DbError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(error) if store_unavailable(error) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Solve(
                SolveError::Spec(_) | SolveError::Unsolvable { .. } | SolveError::Timeout { .. },
            ) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Solve(SolveError::Repodata { .. }) => StatusCode::BAD_GATEWAY,
            Self::Pypi(error) if error.is_transient() => StatusCode::BAD_GATEWAY,
            Self::Pypi(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Database(_) | Self::Store(_) | Self::Solve(_) | Self::Lock(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// A short machine-readable name, used in the problem `type`.
    fn slug(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not-found",
            Self::Conflict(_) => "conflict",
            Self::Unauthorized | Self::InvalidToken => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::BadRequest(_) => "bad-request",
            Self::NotReady { .. } => "not-ready",
            Self::Quota(_) => "quota-exceeded",
            Self::Spec(error) => spec_slug(error),
            Self::TooLarge { .. }
            | Self::Body(envstore_core::body_limits::BodyError::TooLarge { .. }) => "too-large",
            Self::Body(_) => "too-deep",
            Self::ParseBudget { .. } => "too-complex",
            Self::Busy => "busy",
            Self::LockVerify(
                envstore_solve::VerifyError::Repodata { .. }
                | envstore_solve::VerifyError::Timeout(_),
            ) => "repodata-unavailable",
            Self::LockVerify(_) => "invalid-lockfile",
            Self::TooManyStreams(_) => "too-many-streams",
            Self::IdempotencyKeyReused(_) => "idempotency-key-reused",
            Self::InvalidLockfile(_) => "invalid-lockfile",
            Self::Name(_) | Self::Access(_) => "invalid-name",
            Self::Policy(
                envstore_core::PolicyError::Violated { .. }
                | envstore_core::PolicyError::Violations(_),
            ) => "policy-violation",
            Self::Policy(_) => "invalid-policy",
            Self::Database(DbError::NotFound(_)) => "not-found",
            Self::Database(DbError::Conflict(_)) => "conflict",
            Self::Database(DbError::Unavailable { .. }) => "database-unavailable",
            Self::Store(error) if store_unavailable(error) => "store-unavailable",
            Self::Solve(SolveError::Unsolvable { .. }) => "unsolvable",
            Self::Solve(SolveError::Timeout { .. }) => "solve-timeout",
            Self::Solve(SolveError::Spec(_)) => "invalid-spec",
            Self::Solve(SolveError::Repodata { .. }) => "repodata-unavailable",
            Self::Pypi(error) => pypi_slug(error),
            Self::Database(_) | Self::Store(_) | Self::Solve(_) | Self::Lock(_) => "internal",
        }
    }

    /// Sets the members beside `detail` that let a client point at the
    /// problem.
    fn point_at(&self, problem: &mut Problem) {
        match self {
            Self::Spec(error) => {
                problem.errors = error.problems().into_iter().map(spec_problem).collect();
                // The single-problem members, for clients that read only
                // those, describe the first problem.
                if let Some(first) = problem.errors.first() {
                    problem.line = first.line;
                    problem.column = first.column;
                    problem.dependency = first.dependency.clone();
                }
            }
            Self::Policy(error @ envstore_core::PolicyError::Violated { rule, .. }) => {
                problem.rule = Some(rule.to_string());
                problem.errors = vec![policy_problem(error)];
            }
            Self::Policy(error @ envstore_core::PolicyError::Violations(_)) => {
                problem.errors = error.violations().into_iter().map(policy_problem).collect();
                problem.rule = problem.errors.first().and_then(|first| first.rule.clone());
            }
            Self::Body(envstore_core::body_limits::BodyError::TooDeep { line, .. }) => {
                problem.line = Some(*line as u64);
            }
            Self::LockVerify(error) => problem.package = error.package().map(str::to_owned),
            Self::NotReady { failed, .. } => {
                problem.failed = Some(failed.iter().map(ToString::to_string).collect());
            }
            Self::Quota(quota) => quota.point_at(problem),
            Self::Solve(
                SolveError::Unsolvable { platform, .. } | SolveError::Timeout { platform, .. },
            ) => problem.platform = Some(platform.to_string()),
            Self::Pypi(
                envstore_pypi::EnvironmentError::Platform { platform, .. }
                | envstore_pypi::EnvironmentError::NoPython { platform },
            ) => problem.platform = Some(platform.clone()),
            _ => {}
        }
    }

    /// The problem+json body of this error.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let mut problem = Problem {
            kind: format!("/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            ..Problem::default()
        };
        self.point_at(&mut problem);
        problem
    }

    fn detail(&self) -> String {
        match self {
            Self::Database(DbError::NotFound(what)) => format!("{what} was not found"),
            Self::Database(DbError::Conflict(what)) => format!("{what} already exists"),
            Self::Database(DbError::Unavailable { reason, .. }) => format!(
                "the database does not answer ({reason}); try again in {DATABASE_RETRY_AFTER_SECONDS} s"
            ),
            // Where the store is and what it was asked stay in the log.
            Self::Store(error) if store_unavailable(error) => format!(
                "the object store does not answer; try again in {STORE_RETRY_AFTER_SECONDS} s"
            ),
            // The channel cannot be read: say which, so the caller can tell
            // a mistyped channel from an outage.
            Self::Solve(error @ SolveError::Repodata { .. }) => error_chain(error),
            // Which platform, then uv's explanation or the index's failure.
            Self::Pypi(error) => error_chain(error),
            _ => self.to_string(),
        }
    }
}

/// The problem `type` slug of a PyPI resolution failure: the spec's
/// fault (no solution, a source-only package) or the index's (unreachable).
fn pypi_slug(error: &envstore_pypi::EnvironmentError) -> &'static str {
    use envstore_pypi::{EnvironmentError, PypiError};
    match error {
        EnvironmentError::Platform {
            source: PypiError::SourceBuildRequired { .. },
            ..
        } => "source-build-unsupported",
        EnvironmentError::Platform {
            source: PypiError::IndexUnreachable { .. },
            ..
        } => "pypi-index-unavailable",
        EnvironmentError::Platform {
            source: PypiError::NoSolution { .. },
            ..
        } => "unsolvable",
        _ => "pypi-unresolvable",
    }
}

/// The problem `type` slug of a spec error (see [`SpecError::problem_type`]).
fn spec_slug(error: &SpecError) -> &'static str {
    error.problem_type()
}

/// One entry of a problem's `errors`, pointing at what it can.
fn spec_problem(error: &SpecError) -> ProblemItem {
    let mut item = ProblemItem {
        kind: format!("/problems/{}", spec_slug(error)),
        detail: error.to_string(),
        ..ProblemItem::default()
    };
    match error {
        SpecError::Syntax { line, column, .. } => {
            item.line = Some(*line as u64);
            item.column = Some(*column as u64);
        }
        SpecError::Pip { error, line } => {
            item.line = line.map(|line| line as u64);
            item.dependency = error.line_text().map(str::to_owned);
        }
        SpecError::InvalidDependency { dependency, .. }
        | SpecError::DependencyChannel { dependency, .. }
        | SpecError::DependencyUrl { dependency, .. } => item.dependency = Some(dependency.clone()),
        _ => {}
    }
    item
}

/// One entry of a policy problem's `errors`, naming the rule broken.
fn policy_problem(error: &envstore_core::PolicyError) -> ProblemItem {
    ProblemItem {
        kind: "/problems/policy-violation".to_owned(),
        detail: error.to_string(),
        rule: error.rule().map(str::to_owned),
        ..ProblemItem::default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Database(error @ DbError::Unavailable { .. }) = &self {
            // An outage, not a bug: one line per request, the cause in it.
            tracing::warn!(error = %error_chain(error).replace("\n ", ";"), "request failed: the database does not answer");
        } else if let Self::Store(error) = &self
            && store_unavailable(error)
        {
            tracing::warn!(error = %error_chain(error).replace("\n ", ";"), "request failed: the object store does not answer");
        } else if status.is_server_error() {
            tracing::error!(error = %error_chain(&self), "request failed");
        }
        let body = serde_json::to_string(&self.problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if matches!(self, Self::Unauthorized | Self::InvalidToken) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::Quota(quota) = &self
            && let Some(seconds) = quota.retry_after_seconds()
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(self, Self::Busy | Self::TooManyStreams(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(5u64));
        }
        if matches!(&self, Self::Store(error) if store_unavailable(error)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(STORE_RETRY_AFTER_SECONDS),
            );
        }
        if matches!(self, Self::Database(DbError::Unavailable { .. })) {
            metrics::counter!("envstore_database_unavailable_total").increment(1);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(DATABASE_RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

#[cfg(test)]
mod store_outage_tests {
    use super::*;

    #[tokio::test]
    async fn a_store_that_does_not_answer_is_a_503_with_retry_after_that_names_no_endpoint() {
        let error = ApiError::from(StoreError::TimedOut {
            store: "s3://private-bucket/ (endpoint http://10.0.0.7:9000)".to_owned(),
            operation: "reading",
            key: "logs/x".to_owned(),
            after: std::time::Duration::from_secs(20),
        });
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("a body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("problem+json");
        assert_eq!(body["type"], "/problems/store-unavailable");
        assert!(!body.to_string().contains("10.0.0.7"), "{body}");

        let refused = ApiError::from(StoreError::UnsupportedUrl("ftp://x".to_owned()));
        assert_eq!(
            refused.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}

#[cfg(test)]
mod spec_problem_tests {
    use super::*;
    use envstore_core::{EnvironmentSpec, SpecFormat};

    fn refusal(body: &str) -> Problem {
        let error = EnvironmentSpec::parse(body.as_bytes(), SpecFormat::Yaml)
            .expect_err("the spec is refused");
        ApiError::from(error).problem()
    }

    #[test]
    fn every_problem_of_a_spec_is_listed() {
        let problem = refusal(
            "dependencies:\n  - numpy >=>1\n  - pip:\n    - -e .\nplatforms: [amiga-68k]\n",
        );
        assert_eq!(problem.status, 422);
        assert_eq!(problem.kind, "/problems/invalid-spec");
        assert_eq!(problem.errors.len(), 3, "{problem:?}");
        assert!(problem.detail.contains("3 problems"), "{}", problem.detail);
        assert_eq!(problem.errors[0].kind, "/problems/invalid-dependency");
        assert_eq!(problem.errors[0].dependency.as_deref(), Some("numpy >=>1"));
        // The single-problem members still describe the first problem.
        assert_eq!(problem.dependency.as_deref(), Some("numpy >=>1"));
        assert_eq!(problem.errors[2].kind, "/problems/source-build-unsupported");
        assert_eq!(problem.errors[2].line, Some(4));
        assert_eq!(problem.errors[2].dependency.as_deref(), Some("-e ."));
        assert_eq!(problem.errors[1].kind, "/problems/invalid-spec");
        let json = serde_json::to_value(&problem).expect("serialisable");
        assert_eq!(
            json["errors"][2]["type"],
            "/problems/source-build-unsupported"
        );
        assert_eq!(json["errors"][2]["line"], 4);
    }

    #[test]
    fn a_source_build_is_a_422_that_says_what_to_do() {
        let problem = refusal("dependencies:\n  - python\n  - pip:\n    - ./src/tool\n");
        assert_eq!(problem.status, 422);
        assert_eq!(problem.kind, "/problems/source-build-unsupported");
        assert_eq!(problem.line, Some(4));
        assert!(
            problem
                .detail
                .contains("source builds are not supported yet"),
            "{}",
            problem.detail
        );
        assert_eq!(problem.errors.len(), 1);
    }

    #[test]
    fn policy_violations_are_listed_with_their_rules() {
        let error = envstore_core::PolicyError::Violations(vec![
            envstore_core::PolicyError::Violated {
                rule: "required_packages",
                message: "must list 'ipykernel'".to_owned(),
            },
            envstore_core::PolicyError::Violated {
                rule: "max_dependencies",
                message: "too many".to_owned(),
            },
        ]);
        let problem = ApiError::from(error).problem();
        assert_eq!(problem.kind, "/problems/policy-violation");
        assert_eq!(problem.status, 422);
        let rules: Vec<_> = problem
            .errors
            .iter()
            .map(|item| item.rule.as_deref())
            .collect();
        assert_eq!(rules, [Some("required_packages"), Some("max_dependencies")]);
        assert_eq!(problem.rule.as_deref(), Some("required_packages"));
    }

    #[test]
    fn a_syntax_error_keeps_its_status_and_members() {
        let problem = refusal("channels: [demo]\ndependencies:\n  - python\n - numpy: [\n");
        assert_eq!(problem.status, 400);
        assert_eq!(problem.kind, "/problems/malformed-spec");
        assert_eq!(problem.line, Some(4));
        assert!(problem.column.is_some());
    }
}
