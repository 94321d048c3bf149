//! The server admins' pages: the tokens of every subject (with revoke), the
//! role bindings (globs included), each namespace's policy and quota, and
//! the audit log. Anyone else gets a 403 page, and no link to them.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Redirect;
use maud::{Markup, html};
use serde::Deserialize;

use envstore_api_types::{
    AuditPage, NamespacesPage, PolicyView, Quota, QuotaView, Role, RoleBindings, SetRoleBinding,
    Tokens, WhoAmI,
};
use envstore_core::NamespacePattern;

use crate::api::Api;
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::pages::settings::{json, quota_facts};
use crate::roles;
use crate::session::Session;

/// Refuses anyone but a server admin (asking the API who the session is
/// when the middleware could not, so an ended session signs in again).
async fn require_admin(api: &Api, session: &Session) -> Result<(), UiError> {
    let admin = match session.who() {
        Some(_) => roles::server_admin(Some(session)),
        None => {
            let who: WhoAmI = api.get(session, "/api/v1/whoami").await?;
            who.server_admin && who.scopes.is_none()
        }
    };
    if admin {
        Ok(())
    } else {
        Err(UiError::Refused(
            "these pages are for server admins only".to_owned(),
        ))
    }
}

/// The admin pages, for the local navigation.
const PAGES: &[(&str, &str)] = &[
    ("tokens", "Tokens"),
    ("role-bindings", "Role bindings"),
    ("namespaces", "Policies and quotas"),
    ("audit", "Audit log"),
];

fn page(session: &Session, title: &str, current: &str, body: Markup) -> Markup {
    let body = html! {
        nav.admin-nav aria-label="Admin pages" {
            ul {
                @for (page, label) in PAGES {
                    li { a href=(links::admin(page)) aria-current=[(*page == current).then_some("page")] { (label) } }
                }
            }
        }
        (body)
    };
    layout::page(
        title,
        Chrome::new(session, Section::Admin),
        &[("Admin".to_owned(), "/ui/admin".to_owned())],
        body,
    )
}

pub(crate) async fn index(State(api): State<Api>, session: Session) -> Result<Markup, UiError> {
    require_admin(&api, &session).await?;
    let body = html! {
        ul.admin-index {
            li { a href=(links::admin("tokens")) { "Tokens" } ": every subject's tokens; revoke any of them." }
            li { a href=(links::admin("role-bindings")) { "Role bindings" } ": who holds which role where, globs included." }
            li { a href=(links::admin("namespaces")) { "Policies and quotas" } ": each namespace's policy and limits." }
            li { a href=(links::admin("audit")) { "Audit log" } ": who did what, newest first." }
        }
    };
    Ok(page(&session, "Admin", "", body))
}

pub(crate) async fn tokens(State(api): State<Api>, session: Session) -> Result<Markup, UiError> {
    require_admin(&api, &session).await?;
    let tokens: Tokens = api.get(&session, "/api/v1/tokens?all=true").await?;
    let body = html! {
        p.hint { "Token values are never kept: only their hashes. Revoking a token revokes every token minted with it." }
        table.tokens {
            thead {
                tr {
                    th scope="col" { "Subject" }
                    th scope="col" { "Name" }
                    th scope="col" { "Scopes" }
                    th scope="col" { "Created" }
                    th scope="col" { "Expires" }
                    th scope="col" { "State" }
                    th scope="col" { "Actions" }
                }
            }
            tbody {
                @for token in &tokens.tokens {
                    tr data-token=(token.id) data-subject=(token.subject) {
                        th scope="row" { (token.subject) @if token.server_admin { " " span.badge { "server admin" } } }
                        td { (token.name) br; span.hint { "by " (token.created_by) } }
                        td {
                            @match &token.scopes {
                                None => "all the subject's roles",
                                Some(scopes) => {
                                    @for scope in scopes { code { (scope.role) " in " (scope.namespace.as_str()) } " " }
                                }
                            }
                        }
                        td { (layout::time(token.created_at)) }
                        td { @match token.expires_at { Some(at) => (layout::time(at)), None => "never" } }
                        td {
                            @match token.revoked_at {
                                Some(at) => { "revoked " (layout::time(at)) }
                                None => "active",
                            }
                        }
                        td.row-actions {
                            @if token.revoked_at.is_none() {
                                form.inline method="post" action=(links::admin("tokens/revoke")) {
                                    (layout::csrf_field(&session))
                                    input type="hidden" name="id" value=(token.id);
                                    button type="submit" aria-label={ "Revoke " (token.subject) "'s token " (token.name) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&session, "Tokens", "tokens", body))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RevokeForm {
    #[serde(default)]
    csrf: String,
    id: String,
}

pub(crate) async fn revoke_token(
    State(api): State<Api>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<RevokeForm>,
) -> Result<Redirect, UiError> {
    session.check_form(&headers, &form.csrf)?;
    require_admin(&api, &session).await?;
    let path = format!("/api/v1/tokens/{}", links::segment(&form.id));
    api.act(&session, Method::DELETE, &path, None).await?;
    Ok(Redirect::to(&links::admin("tokens")))
}

pub(crate) async fn role_bindings(
    State(api): State<Api>,
    session: Session,
) -> Result<Markup, UiError> {
    require_admin(&api, &session).await?;
    let bindings: RoleBindings = api.get(&session, "/api/v1/role-bindings").await?;
    let action = links::admin("role-bindings");
    let body = html! {
        table.bindings {
            thead { tr { th scope="col" { "Subject" } th scope="col" { "Namespaces" } th scope="col" { "Role" } th scope="col" { "Actions" } } }
            tbody {
                @for binding in &bindings.role_bindings {
                    tr data-subject=(binding.subject) data-namespace=(binding.namespace.as_str()) {
                        th scope="row" { (binding.subject) }
                        td { code { (binding.namespace.as_str()) } }
                        td { (binding.role) }
                        td.row-actions {
                            form.inline method="post" action=(action) {
                                (layout::csrf_field(&session))
                                input type="hidden" name="subject" value=(binding.subject);
                                input type="hidden" name="namespace" value=(binding.namespace.as_str());
                                input type="hidden" name="role" value="";
                                button type="submit" aria-label={ "Remove " (binding.subject) "'s role in " (binding.namespace.as_str()) } { "Remove" }
                            }
                        }
                    }
                }
            }
        }
        form #binding-form.search method="post" action=(action) {
            (layout::csrf_field(&session))
            label for="binding-subject" { "Subject" }
            input #binding-subject type="text" name="subject" required autocomplete="off";
            label for="binding-namespace" { "Namespaces (a name or a glob such as team-*)" }
            input #binding-namespace type="text" name="namespace" required autocomplete="off";
            label for="binding-role" { "Role" }
            select #binding-role name="role" {
                option value="viewer" { "viewer" }
                option value="developer" { "developer" }
                option value="admin" { "admin" }
            }
            button type="submit" { "Bind the role" }
        }
    };
    Ok(page(&session, "Role bindings", "role-bindings", body))
}

#[derive(Debug, Deserialize)]
pub(crate) struct BindingForm {
    #[serde(default)]
    csrf: String,
    subject: String,
    namespace: String,
    /// Empty: remove the binding.
    #[serde(default)]
    role: String,
}

pub(crate) async fn set_role_binding(
    State(api): State<Api>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<BindingForm>,
) -> Result<Redirect, UiError> {
    session.check_form(&headers, &form.csrf)?;
    require_admin(&api, &session).await?;
    let namespace: NamespacePattern = form
        .namespace
        .trim()
        .parse()
        .map_err(|error: envstore_core::AccessError| UiError::BadRequest(error.to_string()))?;
    let role = match form.role.as_str() {
        "" => None,
        role => Some(
            role.parse::<Role>()
                .map_err(|error| UiError::BadRequest(error.to_string()))?,
        ),
    };
    let body = json(&SetRoleBinding {
        subject: form.subject.trim().to_owned(),
        namespace,
        role,
    })?;
    api.act(&session, Method::PUT, "/api/v1/role-bindings", Some(body))
        .await?;
    Ok(Redirect::to(&links::admin("role-bindings")))
}

pub(crate) async fn namespaces(
    State(api): State<Api>,
    session: Session,
) -> Result<Markup, UiError> {
    require_admin(&api, &session).await?;
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let uri = links::with_query(
            "/api/v1/namespaces",
            &[("limit", Some("1000")), ("after", after.as_deref())],
        );
        let page: NamespacesPage = api.get(&session, &uri).await?;
        for namespace in page.namespaces {
            let policy: PolicyView = api
                .get(
                    &session,
                    &links::api::namespace_part(&namespace.name, "policy"),
                )
                .await?;
            let quota: QuotaView = api
                .get(
                    &session,
                    &links::api::namespace_part(&namespace.name, "quota"),
                )
                .await?;
            rows.push((namespace, policy, quota));
        }
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let body = html! {
        @if rows.is_empty() { p { "There is no namespace yet." } }
        @for (namespace, policy, quota) in &rows {
            section.admin-namespace data-namespace=(namespace.name) aria-labelledby={ "ns-" (namespace.name) } {
                h2 id={ "ns-" (namespace.name) } {
                    a href=(links::settings(&namespace.name)) { (namespace.name) }
                    " " span.count { @if namespace.public_read { "(public)" } @else { "(members only)" } }
                }
                h3 { "Policy of its own" }
                pre.policy { (serde_json::to_string_pretty(&policy.policy).unwrap_or_default()) }
                h3 { "Quota" }
                (quota_facts(quota))
                form.search.quota-form method="post" action=(links::admin("namespaces/quota")) {
                    (layout::csrf_field(&session))
                    input type="hidden" name="namespace" value=(namespace.name);
                    label for={ "disk-" (namespace.name) } { "Disk (bytes; empty: the default)" }
                    input id={ "disk-" (namespace.name) } type="number" min="0" name="max_disk_bytes" value=[quota.quota.max_disk_bytes];
                    label for={ "builds-" (namespace.name) } { "Builds at once" }
                    input id={ "builds-" (namespace.name) } type="number" min="1" name="max_concurrent_builds" value=[quota.quota.max_concurrent_builds];
                    button type="submit" { "Set the quota" }
                }
            }
        }
    };
    Ok(page(&session, "Policies and quotas", "namespaces", body))
}

#[derive(Debug, Deserialize)]
pub(crate) struct QuotaForm {
    #[serde(default)]
    csrf: String,
    namespace: String,
    #[serde(default)]
    max_disk_bytes: String,
    #[serde(default)]
    max_concurrent_builds: String,
}

/// A number typed in a form; empty: none.
fn number(text: &str, what: &str) -> Result<Option<i64>, UiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| UiError::BadRequest(format!("{what} is a whole number, not '{text}'")))
}

pub(crate) async fn set_quota(
    State(api): State<Api>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<QuotaForm>,
) -> Result<Redirect, UiError> {
    session.check_form(&headers, &form.csrf)?;
    require_admin(&api, &session).await?;
    let quota = Quota {
        max_disk_bytes: number(&form.max_disk_bytes, "the disk quota")?,
        max_concurrent_builds: number(&form.max_concurrent_builds, "the builds at once")?,
    };
    api.act(
        &session,
        Method::PUT,
        &links::api::namespace_part(&form.namespace, "quota"),
        Some(json(&quota)?),
    )
    .await?;
    Ok(Redirect::to(&links::admin("namespaces")))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    before: Option<String>,
}

/// Audit entries per page.
const AUDIT_PAGE: &str = "50";

pub(crate) async fn audit(
    State(api): State<Api>,
    session: Session,
    Query(query): Query<AuditQuery>,
) -> Result<Markup, UiError> {
    require_admin(&api, &session).await?;
    let before = query.before.as_deref().filter(|before| !before.is_empty());
    let uri = links::with_query(
        "/api/v1/audit",
        &[("limit", Some(AUDIT_PAGE)), ("before", before)],
    );
    let page_of: AuditPage = api.get(&session, &uri).await?;
    let here = links::admin("audit");
    let body = html! {
        @if page_of.entries.is_empty() {
            p { "Nothing was recorded yet." }
        } @else {
            table.audit {
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Detail" } } }
                tbody {
                    @for entry in &page_of.entries {
                        tr data-action=(entry.action) {
                            td { (layout::time(entry.at)) }
                            th scope="row" { (entry.subject) }
                            td { code { (entry.action) } }
                            td { (entry.target) }
                            td { code { (entry.detail.to_string()) } }
                        }
                    }
                }
            }
        }
        @if before.is_some() || page_of.next_before.is_some() {
            nav.pager aria-label="Pages" {
                @if before.is_some() { a href=(here) { "Newest entries" } }
                @if let Some(next) = &page_of.next_before {
                    a rel="next" href=(links::with_query(&here, &[("before", Some(next))])) { "Older entries →" }
                }
            }
        }
    };
    Ok(page(&session, "Audit log", "audit", body))
}
