//! Tokens, namespace members and role bindings.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use envstore_api_types::{
    AuditEntry, AuditPage, Member, MemberRole, MemberSet, Members, NewToken as NewTokenRequest,
    RoleBinding, RoleBindingSet, RoleBindings, SetRoleBinding, TokenCreated, TokenView, Tokens,
    WhoAmI,
};
use envstore_core::{NamespacePattern, Role, narrow_scopes, validate_subject};
use envstore_db::{DbError, NewToken, TokenRecord};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::auth::authorized_namespace;
use crate::extract::{JsonBody, JsonExample};
use crate::{ApiError, AppState};

/// Longest token lifetime a caller may ask for.
const MAX_TOKEN_DAYS: i64 = 366;

/// A token's lifetime when the request names none (or less, to stay within
/// the lifetime of the token that mints it).
const DEFAULT_TOKEN_DAYS: i64 = 90;

const DAY_MILLIS: i64 = 24 * 3600 * 1000;

impl JsonExample for NewTokenRequest {
    const EXAMPLE: &'static str = "{\"name\": \"ci\", \"expires_in_days\": 30}";
}

/// Creates a token; its value is in this answer and nowhere else. A token
/// minted with a token never outlives it, never holds more than it (its
/// scopes are cut down to the minting token's) and is revoked with it.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "access",
    request_body(content = NewTokenRequest, content_type = "application/json", description = "`{\"name\": \"ci\", \"subject\": …, \"expires_in_days\": …, \"scopes\": [{\"namespace\": …, \"role\": …}]}`"),
    responses(
        (status = 201, description = "The token: its value is shown here only.", body = TokenCreated),
        crate::openapi::SignedIn
    ),
    security(("bearer" = []))
)]
pub async fn create_token(
    State(app): State<AppState>,
    caller: Caller,
    body: JsonBody<NewTokenRequest>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let creator = caller.subject()?.to_owned();
    let request = body.parse()?;
    let subject = request.subject.unwrap_or_else(|| creator.clone());
    validate_subject(&subject)?;
    if (subject != creator || request.server_admin) && !caller.is_server_admin() {
        return Err(ApiError::Forbidden);
    }
    if request.name.is_empty()
        || request.name.len() > 128
        || request.name.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(
            "a token name has 1 to 128 printable characters".to_owned(),
        ));
    }
    let now = envstore_db::now_millis();
    let expires_at = match request.expires_in_days {
        Some(days) => {
            if !(1..=MAX_TOKEN_DAYS).contains(&days) {
                return Err(ApiError::BadRequest(format!(
                    "expires_in_days must be between 1 and {MAX_TOKEN_DAYS}"
                )));
            }
            let expires_at = now + days * DAY_MILLIS;
            if let Some(limit) = caller.expires_at
                && expires_at > limit
            {
                return Err(ApiError::BadRequest(format!(
                    "the token you are using expires in {} whole days, and a token it mints cannot outlive it: \
                     ask for at most that many days, or mint with a longer-lived token",
                    (limit - now).max(0) / DAY_MILLIS
                )));
            }
            expires_at
        }
        None => (now + DEFAULT_TOKEN_DAYS * DAY_MILLIS).min(caller.expires_at.unwrap_or(i64::MAX)),
    };
    // A scoped caller is never a server admin, so it mints only for its own
    // subject, and only within its own scopes.
    let scopes = match &caller.grants.scopes {
        Some(held) => Some(narrow_scopes(request.scopes, held)),
        None => request.scopes,
    };
    let (record, value) = app
        .db
        .create_token(&NewToken {
            subject,
            name: request.name,
            created_by: creator,
            server_admin: request.server_admin,
            scopes,
            expires_at: Some(expires_at),
            parent_token_id: caller.token_id.clone(),
        })
        .await
        .map_err(|error| match error {
            // The minting token was revoked while this request ran.
            DbError::NotFound(_) => ApiError::InvalidToken,
            other => other.into(),
        })?;
    tracing::info!(token = %record.id, subject = %record.subject, by = %record.created_by, "token created");
    app.audit(
        &caller,
        "token.create",
        &record.id,
        json!({ "subject": record.subject, "name": record.name, "scopes": record.scopes, "server_admin": record.server_admin }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token: value,
            record: token_view(record),
        }),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct TokensQuery {
    /// Server admins: the tokens of every subject.
    #[serde(default)]
    all: bool,
}

/// The caller's own tokens (never their values). A scoped token sees only
/// itself and the tokens minted from it, not its subject's other tokens.
/// With `?all=true`, server admins get the tokens of every subject.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "access",
    params(("all" = Option<bool>, Query, description = "Server admins: the tokens of every subject.")),
    responses(
        (status = 200, description = "The caller's tokens (with `all=true`, everyone's), never their values.", body = Tokens),
        crate::openapi::SignedIn
    ),
    security(("bearer" = []))
)]
pub async fn list_tokens(
    State(app): State<AppState>,
    caller: Caller,
    axum::extract::Query(query): axum::extract::Query<TokensQuery>,
) -> Result<Json<Tokens>, ApiError> {
    let subject = caller.subject()?;
    let tokens = match (&caller.grants.scopes, &caller.token_id) {
        _ if query.all => {
            caller.require_server_admin()?;
            let mut tokens = Vec::new();
            for subject in app.db.token_subjects().await? {
                tokens.extend(app.db.tokens_of(&subject).await?);
            }
            tokens
        }
        (Some(_), Some(own)) => app.db.token_lineage(own).await?,
        _ => app.db.tokens_of(subject).await?,
    };
    Ok(Json(Tokens {
        tokens: tokens.into_iter().map(token_view).collect(),
    }))
}

/// Who the caller is, and what its credential lets it do: its subject, its
/// role bindings, the scopes a token is narrowed to and when it expires.
/// Anonymous callers get an answer too (no subject, nothing bound), so a
/// client can tell "not signed in" from "signed in with no roles".
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "access",
    responses(
        (status = 200, description = "The caller as the server sees it.", body = WhoAmI),
        (status = 401, description = "A credential was presented and is unknown, expired or revoked.", body = crate::openapi::Problem, content_type = "application/problem+json")
    ),
    security((), ("bearer" = []))
)]
pub async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        server_admin: caller.is_server_admin(),
        subject: caller.subject,
        bindings: caller.grants.bindings,
        scopes: caller.grants.scopes,
        token_id: caller.token_id,
        expires_at: caller.expires_at,
    })
}

/// Revokes one of the caller's tokens (server admins: anyone's; a scoped
/// token: itself or a token minted from it), and every token minted from it.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "access",
    params(("id" = String, Path, description = "The token's id.")),
    responses(
        (status = 204, description = "Revoked."),
        crate::openapi::SignedIn,
        (status = 404, description = "No such token of the caller's.", body = crate::openapi::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn revoke_token(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let subject = caller.subject()?;
    let not_found = || ApiError::NotFound(format!("token '{}' was not found", id.escape_debug()));
    let token = app.db.token(&id).await?.ok_or_else(not_found)?;
    if token.subject != subject && !caller.is_server_admin() {
        return Err(not_found());
    }
    if let (Some(_), Some(own)) = (&caller.grants.scopes, &caller.token_id)
        && !app
            .db
            .token_lineage(own)
            .await?
            .iter()
            .any(|mine| mine.id == token.id)
    {
        return Err(not_found());
    }
    app.db.revoke_token(&id).await?;
    tracing::info!(token = %id, by = subject, "token revoked");
    app.audit(
        &caller,
        "token.revoke",
        &id,
        json!({ "subject": token.subject }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Members of a namespace: the bindings whose pattern is exactly its name.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/members",
    tag = "access",
    params(crate::openapi::NamespacePath),
    responses(
        (status = 200, description = "The namespace's members and their roles.", body = Members),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn list_members(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<Members>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Viewer).await?;
    let members: Vec<Member> = app
        .db
        .all_bindings()
        .await?
        .into_iter()
        .filter(|(_, grant)| grant.namespace.matches(namespace.as_str()))
        .map(|(subject, grant)| Member {
            subject,
            role: grant.role,
            via: grant.namespace,
        })
        .collect();
    Ok(Json(Members {
        namespace: namespace.to_string(),
        members,
    }))
}

impl JsonExample for MemberRole {
    const EXAMPLE: &'static str = "{\"role\": \"developer\"}";
}

/// Namespace admins give a subject a role in their namespace.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{namespace}/members/{subject}",
    tag = "access",
    params(crate::openapi::NamespacePath, ("subject" = String, Path, description = "Who gets the role.")),
    request_body(content = MemberRole, content_type = "application/json", description = "`{\"role\": \"viewer\" | \"developer\" | \"admin\"}`"),
    responses(
        (status = 200, description = "Role set.", body = MemberSet),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn set_member(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, subject)): Path<(String, String)>,
    body: JsonBody<MemberRole>,
) -> Result<Json<MemberSet>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Admin).await?;
    validate_subject(&subject)?;
    let request = body.parse()?;
    let pattern: NamespacePattern = namespace.as_str().parse()?;
    app.db.bind_role(&subject, &pattern, request.role).await?;
    tracing::info!(namespace = %namespace, subject, role = %request.role, by = caller.subject.as_deref(), "member set");
    app.audit(
        &caller,
        "role.set",
        namespace.as_str(),
        json!({ "subject": subject, "role": request.role }),
    )
    .await?;
    Ok(Json(MemberSet {
        namespace: namespace.to_string(),
        subject,
        role: request.role,
    }))
}

/// Namespace admins take a subject's role in their namespace away.
#[utoipa::path(
    delete,
    path = "/api/v1/namespaces/{namespace}/members/{subject}",
    tag = "access",
    params(crate::openapi::NamespacePath, ("subject" = String, Path, description = "Whose role goes.")),
    responses(
        (status = 204, description = "Role removed."),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn remove_member(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, subject)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Admin).await?;
    let pattern: NamespacePattern = namespace.as_str().parse()?;
    if !app.db.unbind_role(&subject, &pattern).await? {
        return Err(ApiError::NotFound(format!(
            "'{}' is not a member of '{namespace}'",
            subject.escape_debug()
        )));
    }
    tracing::info!(namespace = %namespace, subject, by = caller.subject.as_deref(), "member removed");
    app.audit(
        &caller,
        "role.remove",
        namespace.as_str(),
        json!({ "subject": subject }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every binding, globs included (server admins).
#[utoipa::path(
    get,
    path = "/api/v1/role-bindings",
    tag = "access",
    responses(
        (status = 200, description = "Every role binding, globs included.", body = RoleBindings),
        crate::openapi::SignedIn
    ),
    security(("bearer" = []))
)]
pub async fn list_role_bindings(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<RoleBindings>, ApiError> {
    caller.require_server_admin()?;
    let role_bindings: Vec<RoleBinding> = app
        .db
        .all_bindings()
        .await?
        .into_iter()
        .map(|(subject, grant)| RoleBinding {
            subject,
            namespace: grant.namespace,
            role: grant.role,
        })
        .collect();
    Ok(Json(RoleBindings { role_bindings }))
}

impl JsonExample for SetRoleBinding {
    const EXAMPLE: &'static str =
        "{\"subject\": \"alice\", \"namespace\": \"team-*\", \"role\": \"viewer\"}";
}

/// Binds a subject to a role over a namespace glob such as `team-*`
/// (server admins).
#[utoipa::path(
    put,
    path = "/api/v1/role-bindings",
    tag = "access",
    request_body(content = SetRoleBinding, content_type = "application/json", description = "`{\"subject\": …, \"namespace\": \"team-*\", \"role\": … | null}`"),
    responses(
        (status = 200, description = "Binding set (or removed with a null role).", body = RoleBindingSet),
        crate::openapi::SignedIn
    ),
    security(("bearer" = []))
)]
pub async fn set_role_binding(
    State(app): State<AppState>,
    caller: Caller,
    body: JsonBody<SetRoleBinding>,
) -> Result<Json<RoleBindingSet>, ApiError> {
    caller.require_server_admin()?;
    let request = body.parse()?;
    validate_subject(&request.subject)?;
    match request.role {
        Some(role) => {
            app.db
                .bind_role(&request.subject, &request.namespace, role)
                .await?
        }
        None => {
            app.db
                .unbind_role(&request.subject, &request.namespace)
                .await?;
        }
    }
    tracing::info!(subject = %request.subject, namespace = %request.namespace.as_str(), role = ?request.role, by = caller.subject.as_deref(), "role binding set");
    app.audit(
        &caller,
        if request.role.is_some() {
            "role.set"
        } else {
            "role.remove"
        },
        request.namespace.as_str(),
        json!({ "subject": request.subject, "role": request.role }),
    )
    .await?;
    Ok(Json(RoleBindingSet {
        subject: request.subject,
        namespace: request.namespace,
        role: request.role,
    }))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<i64>,
    before: Option<String>,
}

/// The audit log, newest first, paged with `?limit=&before=<id>` (server admins).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "access",
    params(("limit" = Option<i64>, Query, description = "Page size."), ("before" = Option<String>, Query, description = "An entry id: older entries only.")),
    responses(
        (status = 200, description = "The audit log, newest first.", body = AuditPage),
        crate::openapi::SignedIn
    ),
    security(("bearer" = []))
)]
pub async fn list_audit(
    State(app): State<AppState>,
    caller: Caller,
    axum::extract::Query(query): axum::extract::Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require_server_admin()?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let entries = app.db.audit_entries(limit, query.before.as_deref()).await?;
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|entry| entry.id.clone()))
        .flatten();
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .map(|entry| AuditEntry {
                id: entry.id,
                at: entry.at,
                subject: entry.subject,
                action: entry.action,
                target: entry.target,
                detail: entry.detail,
            })
            .collect(),
        next_before: next,
    }))
}

/// A token as the API shows it: never its value, which the database does not keep.
fn token_view(record: TokenRecord) -> TokenView {
    TokenView {
        id: record.id,
        subject: record.subject,
        name: record.name,
        created_by: record.created_by,
        server_admin: record.server_admin,
        scopes: record.scopes,
        created_at: record.created_at,
        expires_at: record.expires_at,
        revoked_at: record.revoked_at,
        parent_token_id: record.parent_token_id,
    }
}
