//! The server's refusals (`application/problem+json`) as errors a person
//! can act on: the status, what went wrong, every problem listed, and for
//! 401, 403 and 404 a hint of what to do.

use std::fmt;

use envstore_api_types::Problem;

/// An answer that is not a success, with its problem when it sent one.
#[derive(Debug, thiserror::Error)]
pub struct ApiError {
    pub status: reqwest::StatusCode,
    /// The problem+json body; None when the body was something else.
    pub problem: Option<Problem>,
    /// The body as text when it was not a problem.
    pub body: String,
}

impl ApiError {
    /// Reads a refused answer's body.
    pub(crate) async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let problem = serde_json::from_str::<Problem>(&body).ok();
        Self {
            status,
            problem,
            body,
        }
    }

    /// The first line: `the server answered 404 Not Found: …`.
    pub fn summary(&self) -> String {
        let detail = match &self.problem {
            Some(problem) if !problem.detail.is_empty() => problem.detail.as_str(),
            Some(problem) if !problem.title.is_empty() => problem.title.as_str(),
            _ => self.body.trim(),
        };
        let title = self
            .problem
            .as_ref()
            .map(|problem| problem.title.as_str())
            .filter(|title| !title.is_empty() && Some(*title) != self.status.canonical_reason());
        match title {
            Some(title) => format!("the server answered {} ({title}): {detail}", self.status),
            None => format!("the server answered {}: {detail}", self.status),
        }
    }

    /// What to do about it, for the statuses a person can fix.
    pub fn hint(&self) -> Option<&'static str> {
        match self.status.as_u16() {
            401 => Some(
                "set ENVSTORE_TOKEN (or pass --token) to a valid token: none was sent, or it is unknown, expired or revoked",
            ),
            403 => Some(
                "your token lacks the role this needs: ask an admin of the namespace (`envstore namespaces members NAME` lists them) or a server admin",
            ),
            404 => Some(
                "check the name (`envstore namespaces list`, `envstore env list NAMESPACE` show what you may see); a private namespace looks missing without a token",
            ),
            _ => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        if let Some(problem) = &self.problem {
            for item in &problem.errors {
                write!(f, "\n  - {}", item.detail)?;
                let mut at = Vec::new();
                if let Some(line) = item.line {
                    at.push(match item.column {
                        Some(column) => format!("line {line}, column {column}"),
                        None => format!("line {line}"),
                    });
                }
                if let Some(dependency) = &item.dependency {
                    at.push(format!("dependency {dependency}"));
                }
                if let Some(rule) = &item.rule {
                    at.push(format!("rule {rule}"));
                }
                if !at.is_empty() {
                    write!(f, " ({})", at.join("; "))?;
                }
            }
            if problem.errors.is_empty() {
                for (label, value) in pointers(problem) {
                    write!(f, "\n  {label}: {value}")?;
                }
            }
        }
        if let Some(hint) = self.hint() {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// The members of a single problem that point at its cause.
fn pointers(problem: &Problem) -> Vec<(&'static str, String)> {
    let mut pointers = Vec::new();
    if let Some(line) = problem.line {
        pointers.push((
            "at",
            match problem.column {
                Some(column) => format!("line {line}, column {column}"),
                None => format!("line {line}"),
            },
        ));
    }
    let named = [
        ("dependency", &problem.dependency),
        ("rule", &problem.rule),
        ("package", &problem.package),
        ("platform", &problem.platform),
        ("quota", &problem.quota),
    ];
    for (label, value) in named {
        if let Some(value) = value {
            pointers.push((label, value.clone()));
        }
    }
    if let (Some(used), Some(limit)) = (problem.used, problem.limit) {
        pointers.push(("used", format!("{used} of {limit}")));
    }
    if let Some(failed) = &problem.failed {
        pointers.push(("failing", failed.join(", ")));
    }
    pointers
}

#[cfg(test)]
mod tests {
    use envstore_api_types::problem::ProblemItem;

    use super::*;

    #[test]
    fn every_listed_problem_and_a_hint_are_shown() {
        let error = ApiError {
            status: reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            problem: Some(Problem {
                kind: "/problems/invalid-spec".to_owned(),
                title: "Unprocessable Entity".to_owned(),
                status: 422,
                detail: "the spec has 2 problems".to_owned(),
                errors: vec![
                    ProblemItem {
                        kind: "/problems/invalid-dependency".to_owned(),
                        detail: "'numpy>>1' is not a match spec".to_owned(),
                        line: Some(4),
                        column: Some(5),
                        dependency: Some("numpy>>1".to_owned()),
                        rule: None,
                    },
                    ProblemItem {
                        kind: "/problems/policy".to_owned(),
                        detail: "channel 'x' is not allowed".to_owned(),
                        rule: Some("allowed_channels".to_owned()),
                        ..ProblemItem::default()
                    },
                ],
                ..Problem::default()
            }),
            body: String::new(),
        };
        let text = error.to_string();
        assert_eq!(
            text,
            "the server answered 422 Unprocessable Entity: the spec has 2 problems\n  - 'numpy>>1' is not a match spec (line 4, column 5; dependency numpy>>1)\n  - channel 'x' is not allowed (rule allowed_channels)"
        );
        let missing = ApiError {
            status: reqwest::StatusCode::NOT_FOUND,
            problem: None,
            body: "no such thing".to_owned(),
        };
        let text = missing.to_string();
        assert!(
            text.starts_with(
                "the server answered 404 Not Found: no such thing\nhint: check the name"
            ),
            "{text}"
        );
    }
}
