//! A namespace's settings: who its members are, whether anyone may read it,
//! its policy and its quota. Everyone who may see the namespace reads them;
//! its admins change members, visibility and policy (the forms show only to
//! them, as the API allows only them).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Redirect;
use maud::{Markup, html};
use serde::Deserialize;

use envstore_api_types::{
    MemberRole, Members, NamespaceView, PolicyView, QuotaView, Role, Visibility,
};

use crate::api::Api;
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::roles;
use crate::session::{Session, Visitor};

pub(crate) async fn show(
    State(api): State<Api>,
    visitor: Visitor,
    Path(namespace): Path<String>,
) -> Result<Markup, UiError> {
    let view: NamespaceView = api
        .get(&visitor, &links::api::namespace(&namespace))
        .await?;
    let members: Members = api
        .get(&visitor, &links::api::namespace_part(&namespace, "members"))
        .await?;
    let policy: PolicyView = api
        .get(&visitor, &links::api::namespace_part(&namespace, "policy"))
        .await?;
    let quota: QuotaView = api
        .get(&visitor, &links::api::namespace_part(&namespace, "quota"))
        .await?;
    let admin = visitor
        .session()
        .filter(|session| roles::may(Some(*session), &namespace, Role::Admin));
    let here = links::settings(&namespace);
    let policy_json = |policy: &envstore_api_types::Policy| {
        serde_json::to_string_pretty(policy).unwrap_or_default()
    };
    let body = html! {
        section aria-labelledby="visibility-heading" {
            h2 #visibility-heading { "Visibility" }
            p #visibility data-public=(view.public_read) {
                @if view.public_read { "Anyone may read this namespace, without signing in." }
                @else { "Only its members (and server admins) may read this namespace." }
            }
            @if let Some(session) = admin {
                form #visibility-form.inline method="post" action={ (here) "/visibility" } {
                    (layout::csrf_field(session))
                    input type="hidden" name="public_read" value=(!view.public_read);
                    button type="submit" {
                        @if view.public_read { "Make it readable by members only" } @else { "Make it readable by anyone" }
                    }
                }
            }
        }
        section aria-labelledby="members-heading" {
            h2 #members-heading { "Members" }
            @if members.members.is_empty() {
                p { "No one is bound to a role here (server admins hold every role)." }
            } @else {
                table.members {
                    thead { tr { th scope="col" { "Subject" } th scope="col" { "Role" } th scope="col" { "Through the binding" } @if admin.is_some() { th scope="col" { "Actions" } } } }
                    tbody {
                        @for member in &members.members {
                            tr data-subject=(member.subject) {
                                th scope="row" { (member.subject) }
                                td { (member.role) }
                                td { code { (member.via.as_str()) } }
                                @if let Some(session) = admin {
                                    td.row-actions {
                                        // Glob bindings belong to server admins (admin pages).
                                        @if member.via.as_str() == namespace {
                                            form.inline method="post" action={ (here) "/members/remove" } {
                                                (layout::csrf_field(session))
                                                input type="hidden" name="subject" value=(member.subject);
                                                button type="submit" aria-label={ "Remove " (member.subject) } { "Remove" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(session) = admin {
                form #member-form.search method="post" action={ (here) "/members" } {
                    (layout::csrf_field(session))
                    label for="member-subject" { "Subject" }
                    input #member-subject type="text" name="subject" required autocomplete="off";
                    label for="member-role" { "Role" }
                    select #member-role name="role" {
                        option value="viewer" { "viewer" }
                        option value="developer" { "developer" }
                        option value="admin" { "admin" }
                    }
                    button type="submit" { "Give the role" }
                }
            }
        }
        section aria-labelledby="policy-heading" {
            h2 #policy-heading { "Policy" }
            p.hint { "The namespace's own policy only tightens the server's; the one in effect is both together." }
            @if let Some(session) = admin {
                form #policy-form.stacked method="post" action={ (here) "/policy" } {
                    (layout::csrf_field(session))
                    label for="policy" { "The namespace's policy (JSON)" }
                    textarea #policy name="policy" rows="10" spellcheck="false" { (policy_json(&policy.policy)) }
                    button type="submit" { "Save the policy" }
                }
            } @else {
                h3 { "The namespace's policy" }
                pre #policy-own { (policy_json(&policy.policy)) }
            }
            h3 { "In effect" }
            pre #policy-effective { (policy_json(&policy.effective)) }
        }
        section aria-labelledby="quota-heading" {
            h2 #quota-heading { "Quota" }
            (quota_facts(&quota))
            @if roles::server_admin(visitor.session()) {
                p { a href=(links::admin("namespaces")) { "Set quotas on the admin pages" } }
            }
        }
    };
    let trail = [
        ("Namespaces".to_owned(), links::namespaces()),
        (namespace.clone(), links::namespace(&namespace)),
    ];
    Ok(layout::page(
        &format!("{namespace}: settings"),
        Chrome::visitor(&visitor, Section::Namespaces),
        &trail,
        body,
    ))
}

/// A quota's limits in effect, and where each comes from.
pub(crate) fn quota_facts(quota: &QuotaView) -> Markup {
    let source = |own: Option<i64>| {
        if own.is_some() {
            "set here"
        } else {
            "the server's default"
        }
    };
    html! {
        dl.facts {
            dt { "Disk" }
            dd {
                @match quota.effective.max_disk_bytes {
                    Some(bytes) => (layout::bytes(bytes)),
                    None => "unlimited",
                }
                " (" (source(quota.quota.max_disk_bytes)) ")"
            }
            dt { "Builds at once" }
            dd {
                @match quota.effective.max_concurrent_builds {
                    Some(builds) => (builds),
                    None => "unlimited",
                }
                " (" (source(quota.quota.max_concurrent_builds)) ")"
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct VisibilityForm {
    #[serde(default)]
    csrf: String,
    public_read: bool,
}

pub(crate) async fn set_visibility(
    State(api): State<Api>,
    session: Session,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    Form(form): Form<VisibilityForm>,
) -> Result<Redirect, UiError> {
    session.check_form(&headers, &form.csrf)?;
    let body = json(&Visibility {
        public_read: form.public_read,
    })?;
    api.act(
        &session,
        Method::PUT,
        &links::api::namespace_part(&namespace, "visibility"),
        Some(body),
    )
    .await?;
    Ok(Redirect::to(&links::settings(&namespace)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct MemberForm {
    #[serde(default)]
    csrf: String,
    subject: String,
    role: Option<Role>,
}

/// Gives a subject a role here (the API's `PUT …/members/{subject}`).
pub(crate) async fn set_member(
    State(api): State<Api>,
    session: Session,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    Form(form): Form<MemberForm>,
) -> Result<Redirect, UiError> {
    session.check_form(&headers, &form.csrf)?;
    let role = form
        .role
        .ok_or_else(|| UiError::BadRequest("choose a role".to_owned()))?;
    let path = format!(
        "{}/{}",
        links::api::namespace_part(&namespace, "members"),
        links::segment(form.subject.trim())
    );
    api.act(
        &session,
        Method::PUT,
        &path,
        Some(json(&MemberRole { role })?),
    )
    .await?;
    Ok(Redirect::to(&links::settings(&namespace)))
}

/// Takes a subject's role here away (the API's `DELETE …/members/{subject}`).
pub(crate) async fn remove_member(
    State(api): State<Api>,
    session: Session,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    Form(form): Form<MemberForm>,
) -> Result<Redirect, UiError> {
    session.check_form(&headers, &form.csrf)?;
    let path = format!(
        "{}/{}",
        links::api::namespace_part(&namespace, "members"),
        links::segment(form.subject.trim())
    );
    api.act(&session, Method::DELETE, &path, None).await?;
    Ok(Redirect::to(&links::settings(&namespace)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PolicyForm {
    #[serde(default)]
    csrf: String,
    policy: String,
}

/// Sets the namespace's policy as typed (the API validates it).
pub(crate) async fn set_policy(
    State(api): State<Api>,
    session: Session,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    Form(form): Form<PolicyForm>,
) -> Result<Redirect, UiError> {
    session.check_form(&headers, &form.csrf)?;
    api.act(
        &session,
        Method::PUT,
        &links::api::namespace_part(&namespace, "policy"),
        Some(form.policy),
    )
    .await?;
    Ok(Redirect::to(&links::settings(&namespace)))
}

/// A request body as the API reads it.
pub(crate) fn json(body: &impl serde::Serialize) -> Result<String, UiError> {
    serde_json::to_string(body)
        .map_err(|error| UiError::Unexpected(format!("a request could not be written: {error}")))
}
