//! Who may do what: roles in namespaces, granted to subjects through
//! bindings (exact names or globs like `team-*`), narrowed by token scopes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A role in a namespace; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum Role {
    /// Reads environments, builds, logs, lockfiles and artifacts.
    Viewer,
    /// Also submits builds.
    Developer,
    /// Also manages members, visibility and (later) policy.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Developer => "developer",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("unknown role '{0}' (viewer, developer or admin)")]
    UnknownRole(String),
    #[error(
        "invalid namespace pattern '{0}': letters, digits, '-', '_', '.' and '*' only, at most 64 characters"
    )]
    InvalidPattern(String),
    #[error("invalid subject '{0}': 1 to 128 printable characters without spaces")]
    InvalidSubject(String),
}

impl FromStr for Role {
    type Err = AccessError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "viewer" => Ok(Self::Viewer),
            "developer" => Ok(Self::Developer),
            "admin" => Ok(Self::Admin),
            other => Err(AccessError::UnknownRole(other.escape_debug().to_string())),
        }
    }
}

/// A namespace name or a glob over names (`*` matches any run of characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NamespacePattern(String);

impl NamespacePattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, namespace: &str) -> bool {
        glob_matches(self.0.as_bytes(), namespace.as_bytes())
    }

    /// Whether every name `other` matches, this matches too. Matching
    /// `other`'s text, its `*` taken as a plain character, is enough: each of
    /// its `*` then falls inside a run one of our `*` absorbs, which absorbs
    /// whatever the `*` stands for as well.
    pub fn covers(&self, other: &NamespacePattern) -> bool {
        self.matches(other.as_str())
    }
}

impl TryFrom<String> for NamespacePattern {
    type Error = AccessError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*'));
        if valid {
            Ok(Self(text))
        } else {
            Err(AccessError::InvalidPattern(text.escape_debug().to_string()))
        }
    }
}

impl FromStr for NamespacePattern {
    type Err = AccessError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::try_from(text.to_owned())
    }
}

impl From<NamespacePattern> for String {
    fn from(pattern: NamespacePattern) -> Self {
        pattern.0
    }
}

/// `*` globbing without backtracking blow-up: the classic two-pointer match.
/// Namespace patterns and the identity provider's group rules both use it.
pub fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Checks a subject (a user or robot name from a token or an identity provider).
pub fn validate_subject(subject: &str) -> Result<(), AccessError> {
    let valid = !subject.is_empty()
        && subject.len() <= 128
        && subject.chars().all(|c| c.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(AccessError::InvalidSubject(
            subject.escape_debug().to_string(),
        ))
    }
}

/// A role over the namespaces a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Grant {
    /// A namespace name or a glob such as `team-*`.
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub namespace: NamespacePattern,
    pub role: Role,
}

/// What a caller holds: its subject's grants, narrowed by the scopes of the
/// token it used. A token never carries more than its subject has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub server_admin: bool,
    pub bindings: Vec<Grant>,
    /// None: the token is not narrowed.
    pub scopes: Option<Vec<Grant>>,
}

/// The scopes a token minted by a token holding `held` may have: what
/// `requested` asks for (all of `held` when None), cut down to `held`. A
/// requested grant keeps its pattern where a held scope covers it, takes the
/// held scope's pattern where it covers that scope, and is dropped where the
/// two only overlap; its role never exceeds the held scope's.
pub fn narrow_scopes(requested: Option<Vec<Grant>>, held: &[Grant]) -> Vec<Grant> {
    let Some(requested) = requested else {
        return held.to_vec();
    };
    let mut narrowed: Vec<Grant> = Vec::new();
    for wanted in &requested {
        for scope in held {
            let namespace = if scope.namespace.covers(&wanted.namespace) {
                wanted.namespace.clone()
            } else if wanted.namespace.covers(&scope.namespace) {
                scope.namespace.clone()
            } else {
                continue;
            };
            let grant = Grant {
                namespace,
                role: wanted.role.min(scope.role),
            };
            if !narrowed.contains(&grant) {
                narrowed.push(grant);
            }
        }
    }
    narrowed
}

impl Grants {
    /// Whether the caller holds server-wide admin power: a server admin's
    /// token narrowed by scopes holds only what its scopes give, in the
    /// namespaces they name, and nothing server-wide.
    pub fn is_server_admin(&self) -> bool {
        self.server_admin && self.scopes.is_none()
    }

    /// The caller's role in `namespace`; `public_read` lets anyone view.
    pub fn role_in(&self, namespace: &str, public_read: bool) -> Option<Role> {
        let best = |grants: &[Grant]| {
            grants
                .iter()
                .filter(|grant| grant.namespace.matches(namespace))
                .map(|grant| grant.role)
                .max()
        };
        let held = if self.server_admin {
            Some(Role::Admin)
        } else {
            best(&self.bindings)
        };
        let held = match &self.scopes {
            Some(scopes) => held.zip(best(scopes)).map(|(held, scope)| held.min(scope)),
            None => held,
        };
        let public = public_read.then_some(Role::Viewer);
        held.max(public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(pattern: &str, role: Role) -> Grant {
        Grant {
            namespace: pattern.parse().unwrap(),
            role,
        }
    }

    #[test]
    fn globs_match_whole_names() {
        let pattern: NamespacePattern = "team-*".parse().unwrap();
        assert!(pattern.matches("team-ml"));
        assert!(pattern.matches("team-"));
        assert!(!pattern.matches("teams"));
        assert!(!pattern.matches("my-team-ml"));
        assert!("*".parse::<NamespacePattern>().unwrap().matches("anything"));
        assert!(
            "a*b*c"
                .parse::<NamespacePattern>()
                .unwrap()
                .matches("aXXbYYc")
        );
        assert!(
            !"a*b*c"
                .parse::<NamespacePattern>()
                .unwrap()
                .matches("aXXbYY")
        );
        let slow = format!("{}b", "*a".repeat(30));
        assert!(
            !slow
                .parse::<NamespacePattern>()
                .unwrap()
                .matches(&"a".repeat(60))
        );
        assert!("../x".parse::<NamespacePattern>().is_err());
    }

    #[test]
    fn the_best_binding_wins_and_scopes_only_narrow() {
        let grants = Grants {
            server_admin: false,
            bindings: vec![grant("team-*", Role::Viewer), grant("team-ml", Role::Admin)],
            scopes: None,
        };
        assert_eq!(grants.role_in("team-ml", false), Some(Role::Admin));
        assert_eq!(grants.role_in("team-web", false), Some(Role::Viewer));
        assert_eq!(grants.role_in("other", false), None);
        assert_eq!(grants.role_in("other", true), Some(Role::Viewer));

        let scoped = Grants {
            scopes: Some(vec![
                grant("team-ml", Role::Developer),
                grant("other", Role::Admin),
            ]),
            ..grants
        };
        assert_eq!(scoped.role_in("team-ml", false), Some(Role::Developer));
        assert_eq!(
            scoped.role_in("team-web", false),
            None,
            "outside the token's scope"
        );
        assert_eq!(
            scoped.role_in("other", false),
            None,
            "a scope grants nothing by itself"
        );
    }

    #[test]
    fn a_pattern_covers_what_it_matches_in_every_expansion() {
        let covers = |a: &str, b: &str| {
            a.parse::<NamespacePattern>()
                .unwrap()
                .covers(&b.parse().unwrap())
        };
        assert!(covers("*", "team-*"));
        assert!(covers("team-*", "team-ml"));
        assert!(covers("team-*", "team-ml-*"));
        assert!(covers("team-*", "team-*"));
        assert!(
            !covers("team-ml", "team-*"),
            "an exact name never covers a glob"
        );
        assert!(!covers("team-*", "*"));
        assert!(!covers("a*", "*b"), "overlap is not cover");
    }

    #[test]
    fn a_minted_token_never_holds_more_than_its_parent() {
        let held = vec![grant("team-*", Role::Developer), grant("lab", Role::Viewer)];
        assert_eq!(
            narrow_scopes(None, &held),
            held,
            "no request: the parent's scopes"
        );
        let narrowed = narrow_scopes(
            Some(vec![
                grant("*", Role::Admin),
                grant("team-ml", Role::Viewer),
                grant("other", Role::Admin),
            ]),
            &held,
        );
        assert_eq!(
            narrowed,
            vec![
                grant("team-*", Role::Developer),
                grant("lab", Role::Viewer),
                grant("team-ml", Role::Viewer)
            ]
        );
        let grants = |scopes: Vec<Grant>| Grants {
            server_admin: true,
            bindings: Vec::new(),
            scopes: Some(scopes),
        };
        let child = grants(narrowed);
        let parent = grants(held);
        for namespace in ["team-ml", "team-web", "lab", "other", "x"] {
            assert!(
                child.role_in(namespace, false) <= parent.role_in(namespace, false),
                "{namespace}"
            );
        }
        assert!(
            narrow_scopes(
                Some(vec![grant("a*", Role::Admin)]),
                &[grant("*b", Role::Admin)]
            )
            .is_empty()
        );
    }

    #[test]
    fn scopes_narrow_server_admin_power_too() {
        let scoped = Grants {
            server_admin: true,
            bindings: Vec::new(),
            scopes: Some(vec![grant("team-ml", Role::Viewer)]),
        };
        assert!(!scoped.is_server_admin());
        assert_eq!(scoped.role_in("team-ml", false), Some(Role::Viewer));
        assert_eq!(scoped.role_in("other", false), None);
        assert!(
            Grants {
                scopes: None,
                ..scoped
            }
            .is_server_admin()
        );
    }

    #[test]
    fn server_admins_administer_every_namespace() {
        let grants = Grants {
            server_admin: true,
            ..Grants::default()
        };
        assert_eq!(grants.role_in("anything", false), Some(Role::Admin));
    }

    #[test]
    fn subjects_are_printable() {
        assert!(validate_subject("alice@example.org").is_ok());
        assert!(validate_subject("").is_err());
        assert!(validate_subject("a b").is_err());
        assert!(validate_subject("a\nb").is_err());
    }
}
