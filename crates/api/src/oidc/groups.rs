//! Groups to roles: `[[oidc.group_roles]]` rules turn the groups a token or
//! a sign-in names into grants. They are worked out again at every bearer
//! verification and every sign-in, never stored as role bindings, so a
//! person taken out of a group loses its roles with their next token or
//! sign-in.

use envstore_core::{Grant, NamespaceName, NamespacePattern, Role, glob_matches};
use serde::Deserialize;

/// What a namespace template puts a matching group's name in place of.
pub const GROUP_PLACEHOLDER: &str = "{group}";

/// One rule: members of groups matching `group` hold `role` in `namespace`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRole {
    /// A group name or a glob (`*` matches any run of characters): `team-*`.
    pub group: String,
    /// A namespace name, a pattern (`*`, `team-*`), or a template holding
    /// `{group}`, which becomes the matching group's name.
    pub namespace: String,
    pub role: Role,
}

impl GroupRole {
    /// Refuses a rule whose namespace can never be a valid pattern.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.group.is_empty() {
            return Err("a rule's group is empty".to_owned());
        }
        let sample = self.namespace.replace(GROUP_PLACEHOLDER, "group");
        sample.parse::<NamespacePattern>().map(|_| ()).map_err(|_| {
            format!(
                "namespace '{}' is not a namespace, a pattern or a template with {GROUP_PLACEHOLDER}",
                self.namespace.escape_debug()
            )
        })
    }

    /// The grant this rule gives a member of `group`, if it matches.
    fn grant_for(&self, group: &str) -> Option<Grant> {
        // Keycloak names groups by path (`/team-data`): matched without the `/`.
        let group = group.strip_prefix('/').unwrap_or(group);
        if !glob_matches(self.group.as_bytes(), group.as_bytes()) {
            return None;
        }
        let namespace = if self.namespace.contains(GROUP_PLACEHOLDER) {
            // A group must be a plain namespace name to stand in: no `*`,
            // nothing reserved.
            let name: NamespaceName = group.parse().ok()?;
            self.namespace.replace(GROUP_PLACEHOLDER, name.as_str())
        } else {
            self.namespace.clone()
        };
        Some(Grant {
            namespace: namespace.parse().ok()?,
            role: self.role,
        })
    }
}

/// The grants `groups` earn under `rules`, each once.
pub fn group_grants(rules: &[GroupRole], groups: &[String]) -> Vec<Grant> {
    let mut grants: Vec<Grant> = Vec::new();
    for rule in rules {
        for group in groups {
            if let Some(grant) = rule.grant_for(group)
                && !grants.contains(&grant)
            {
                grants.push(grant);
            }
        }
    }
    grants
}

/// A claim by its name, or by a dotted path into nested objects
/// (`realm_access.roles`) when no claim has the whole name.
pub fn claim<'a>(claims: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    name.split('.')
        .try_fold(claims, |value, part| value.get(part))
}

/// The groups a claim lists: an array of strings, or one string.
pub fn groups(claims: &serde_json::Value, name: &str) -> Vec<String> {
    match claim(claims, name) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(group: &str, namespace: &str, role: Role) -> GroupRole {
        GroupRole {
            group: group.to_owned(),
            namespace: namespace.to_owned(),
            role,
        }
    }

    fn names(grants: &[Grant]) -> Vec<(String, Role)> {
        grants
            .iter()
            .map(|grant| (grant.namespace.as_str().to_owned(), grant.role))
            .collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn globs_on_groups_map_to_their_namespace_fixed_names_and_everything() {
        let rules = [
            rule("team-*", "{group}", Role::Developer),
            rule("platform", "*", Role::Viewer),
            rule("data-admins", "shared-data", Role::Admin),
        ];
        assert_eq!(
            names(&group_grants(
                &rules,
                &strings(&["team-data", "other", "/team-ml"])
            )),
            [
                ("team-data".to_owned(), Role::Developer),
                ("team-ml".to_owned(), Role::Developer),
            ]
        );
        assert_eq!(
            names(&group_grants(
                &rules,
                &strings(&["platform", "data-admins"])
            )),
            [
                ("*".to_owned(), Role::Viewer),
                ("shared-data".to_owned(), Role::Admin),
            ]
        );
        assert!(group_grants(&rules, &[]).is_empty());
        // `team-*` is a whole-name glob: `my-team-x` and `team` do not match.
        assert!(group_grants(&rules, &strings(&["my-team-x", "team", "teams"])).is_empty());
    }

    #[test]
    fn a_group_never_stands_in_as_a_glob_or_a_bad_name() {
        let rules = [rule("*", "{group}", Role::Admin)];
        for group in ["team-*", "*", "a b", "../x", "api", "", "/", "team/data"] {
            assert!(
                group_grants(&rules, &strings(&[group])).is_empty(),
                "{group:?} must not become a namespace"
            );
        }
        let prefixed = [rule("*", "g-{group}", Role::Viewer)];
        assert_eq!(
            names(&group_grants(&prefixed, &strings(&["x"]))),
            [("g-x".to_owned(), Role::Viewer)]
        );
    }

    #[test]
    fn rules_are_checked_and_claims_read_by_name_or_path() {
        assert!(rule("team-*", "{group}", Role::Viewer).check().is_ok());
        assert!(rule("x", "team-*", Role::Viewer).check().is_ok());
        assert!(rule("x", "team/{group}", Role::Viewer).check().is_err());
        assert!(rule("", "x", Role::Viewer).check().is_err());
        let claims = serde_json::json!({
            "groups": ["a", 7, "b"], "realm_access": { "roles": ["r"] },
            "https://example.org/groups": "one", "dotted.name": ["d"],
        });
        assert_eq!(groups(&claims, "groups"), ["a", "b"]);
        assert_eq!(groups(&claims, "realm_access.roles"), ["r"]);
        assert_eq!(groups(&claims, "https://example.org/groups"), ["one"]);
        assert_eq!(groups(&claims, "dotted.name"), ["d"]);
        assert!(groups(&claims, "missing").is_empty());
    }
}
