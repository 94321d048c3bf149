//! Tokens, namespace members, role bindings and the audit log.

use envstore_core::{Grant, NamespacePattern, Role};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/tokens`: a token to mint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for, 1 to 128 printable characters.
    pub name: String,
    /// Server admins may mint tokens for other subjects (robots, users);
    /// None: the caller's own subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// 1 to 366; None: 90 days, or less to stay within the minting token's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<i64>,
    /// Narrows the token to these roles; None: the subject's own roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Grant>>,
    /// Server admins only.
    #[serde(default)]
    pub server_admin: bool,
}

/// `GET /api/v1/whoami`: who the server takes the caller for, and what the
/// credential lets it do, so a CLI or a page can show the subject and offer
/// only the actions its roles allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// None: no credential was presented (public namespaces only).
    pub subject: Option<String>,
    /// Server-wide admin power (never through a token narrowed by scopes).
    pub server_admin: bool,
    /// The subject's role bindings (with server admin power, every role
    /// everywhere, whatever is bound).
    pub bindings: Vec<Grant>,
    /// What the credential is narrowed to; None: the subject's own roles.
    pub scopes: Option<Vec<Grant>>,
    /// The API token presented, if it was one.
    pub token_id: Option<String>,
    /// When the credential stops working (milliseconds since the epoch);
    /// None: it does not expire (the admin token).
    pub expires_at: Option<i64>,
}

/// A token as the server knows it; its value is never among its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub subject: String,
    pub name: String,
    pub created_by: String,
    pub server_admin: bool,
    /// The roles it is narrowed to; null: its subject's own.
    pub scopes: Option<Vec<Grant>>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The token this one was minted with; revoking it revokes this one.
    pub parent_token_id: Option<String>,
}

/// A token just minted: its value is in this answer and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenCreated {
    /// The bearer token.
    pub token: String,
    pub record: TokenView,
}

/// The caller's tokens, never their values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tokens {
    pub tokens: Vec<TokenView>,
}

/// A subject with a role in a namespace, and the binding that gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub subject: String,
    pub role: Role,
    /// The binding's namespace pattern (the name itself, or a glob).
    #[schema(value_type = String)]
    pub via: NamespacePattern,
}

/// A namespace's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Members {
    pub namespace: String,
    pub members: Vec<Member>,
}

/// `PUT …/members/{subject}`: the role to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRole {
    pub role: Role,
}

/// A member's role, as set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberSet {
    pub namespace: String,
    pub subject: String,
    pub role: Role,
}

/// A subject's role over the namespaces a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoleBinding {
    pub subject: String,
    /// A namespace name or a glob such as `team-*`.
    #[schema(value_type = String)]
    pub namespace: NamespacePattern,
    pub role: Role,
}

/// Every role binding, globs included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoleBindings {
    pub role_bindings: Vec<RoleBinding>,
}

/// `PUT /api/v1/role-bindings`: a binding to set, or with a null role to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoleBinding {
    pub subject: String,
    /// A namespace name or a glob such as `team-*`.
    #[schema(value_type = String)]
    pub namespace: NamespacePattern,
    /// None removes the binding.
    pub role: Option<Role>,
}

/// A role binding as set (a null role: removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoleBindingSet {
    pub subject: String,
    #[schema(value_type = String)]
    pub namespace: NamespacePattern,
    pub role: Option<Role>,
}

/// One entry of the audit log: who did what to what, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub subject: String,
    /// E.g. `environment.submit`, `token.create`, `role.set`.
    pub action: String,
    pub target: String,
    /// What the action was given; its members depend on the action.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// The `?before=` of the next page; null on the last.
    pub next_before: Option<String>,
}
