//! The frame of every page (skip link, header with the main navigation,
//! breadcrumbs, main landmark) and the small pieces pages share: statuses,
//! times, search forms and pagers.

use envstore_core::BuildStatus;
use maud::{DOCTYPE, Markup, html};

use crate::links;
use crate::roles;
use crate::session::{Session, Visitor};

/// The top-level sections, in the order the navigation shows them. A new
/// top-level page adds its entry here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Section {
    #[default]
    None,
    Namespaces,
    Packages,
    Usage,
    Admin,
}

/// The main navigation: (section, label, link, for server admins only).
const NAVIGATION: &[(Section, &str, &str, bool)] = &[
    (Section::Namespaces, "Namespaces", "/ui/namespaces", false),
    (Section::Packages, "Packages", "/ui/packages", false),
    (Section::Usage, "Usage", "/ui/usage", false),
    (Section::Admin, "Admin", "/ui/admin", true),
];

/// What the frame needs to know about the page around it.
#[derive(Default)]
pub(crate) struct Chrome<'a> {
    /// The signed-in session, for the sign-out form.
    pub session: Option<&'a Session>,
    pub section: Section,
    /// For a page anyone may see, the page to come back to after signing
    /// in, when nobody is signed in: the header links to the sign-in.
    pub sign_in_next: Option<String>,
}

impl<'a> Chrome<'a> {
    pub(crate) fn new(session: &'a Session, section: Section) -> Self {
        Self {
            session: Some(session),
            section,
            sign_in_next: None,
        }
    }

    /// The frame of a page that may be public: the sign-out form for a
    /// session, a sign-in link for everyone else.
    pub(crate) fn visitor(visitor: &'a Visitor, section: Section) -> Self {
        Self {
            session: visitor.session(),
            section,
            sign_in_next: Some(visitor.next().unwrap_or_else(links::namespaces)),
        }
    }
}

/// A whole page: `title` is its heading; `trail` the breadcrumbs above it
/// (label, link).
pub(crate) fn page(
    title: &str,
    chrome: Chrome<'_>,
    trail: &[(String, String)],
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · envstore" }
                link rel="stylesheet" href="/ui/static/style.css";
                script src="/ui/static/app.js" defer {}
            }
            body {
                a.skip-link href="#main" { "Skip to the content" }
                header.site-header {
                    a.brand href=(links::namespaces()) { "envstore" }
                    nav.site-nav aria-label="Main" {
                        ul {
                            @for (section, label, href, admins_only) in NAVIGATION {
                                @if !admins_only || roles::server_admin(chrome.session) {
                                    li {
                                        a href=(href) aria-current=[(chrome.section == *section).then_some("page")] { (label) }
                                    }
                                }
                            }
                        }
                    }
                    @if let Some(session) = chrome.session {
                        div.account {
                            @if let Some(subject) = session.who().and_then(|who| who.subject.as_deref()) {
                                span #signed-in-as {
                                    "Signed in as " strong.subject { (subject) }
                                    @if session.who().is_some_and(|who| who.server_admin) { " " span.badge { "server admin" } }
                                }
                            }
                            form.sign-out method="post" action="/ui/sign-out" {
                                (csrf_field(session))
                                button type="submit" { "Sign out" }
                            }
                        }
                    } @else {
                        @if let Some(next) = &chrome.sign_in_next {
                            a.sign-in href=(links::sign_in(Some(next), None)) { "Sign in" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    @if !trail.is_empty() {
                        nav aria-label="Breadcrumb" {
                            ol.breadcrumbs {
                                @for (label, href) in trail {
                                    li { a href=(href) { (label) } }
                                }
                            }
                        }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden field that proves a form came from this session's page.
pub(crate) fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf_token()); }
}

/// A build status as a symbol and a word (never colour alone).
pub(crate) fn status(status: BuildStatus) -> Markup {
    let symbol = match status {
        BuildStatus::Queued => "…",
        BuildStatus::Running => "▶",
        BuildStatus::Succeeded => "✓",
        BuildStatus::Failed => "✗",
        BuildStatus::Cancelled => "⊘",
    };
    html! {
        span class={ "status status-" (status) } data-status=(status) {
            span.symbol aria-hidden="true" { (symbol) } " " span.label { (status) }
        }
    }
}

/// A time (milliseconds since the epoch) in UTC, machine-readable too.
pub(crate) fn time(millis: i64) -> Markup {
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(at) => html! {
            time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) {
                (at.format("%Y-%m-%d %H:%M:%S UTC"))
            }
        },
        None => html! { "unknown" },
    }
}

/// A duration a person reads at a glance: `850 ms`, `12.4 s`, `3 min 5 s`.
pub(crate) fn duration(millis: i64) -> String {
    match millis {
        ..1000 => format!("{} ms", millis.max(0)),
        1000..60_000 => format!("{:.1} s", millis as f64 / 1000.0),
        _ => format!("{} min {} s", millis / 60_000, (millis % 60_000) / 1000),
    }
}

/// A size in human units (`1.0 GiB`).
pub(crate) fn bytes(bytes: i64) -> String {
    bytesize::ByteSize::b(u64::try_from(bytes).unwrap_or(0)).to_string()
}

/// Enough of a build id to tell builds apart on a page: its last 12
/// characters, the random part of a UUIDv7 (its first ones are the time,
/// alike for builds made together).
pub(crate) fn short_id(id: &str) -> &str {
    id.get(id.len().saturating_sub(12)..).unwrap_or(id)
}

/// A search form that narrows a listing (sent as `?q=`).
pub(crate) fn search(action: &str, label: &str, query: Option<&str>) -> Markup {
    search_keeping(action, label, query, &[])
}

/// [`search`] on a page with more in its query (a period, a filter): the
/// search and its "Clear" link keep `kept`, so searching does not lose it.
pub(crate) fn search_keeping(
    action: &str,
    label: &str,
    query: Option<&str>,
    kept: &[(&str, Option<&str>)],
) -> Markup {
    html! {
        form.search method="get" action=(action) role="search" {
            @for (name, value) in kept {
                @if let Some(value) = value.filter(|value| !value.is_empty()) {
                    input type="hidden" name=(name) value=(value);
                }
            }
            label for="q" { (label) }
            input #q type="search" name="q" value=[query];
            button type="submit" { "Search" }
            @if query.is_some_and(|query| !query.is_empty()) {
                " " a href=(links::with_query(action, kept)) { "Clear the search" }
            }
        }
    }
}

/// Links to the first and the next page of a listing paged by cursor.
pub(crate) fn pager(
    path: &str,
    query: Option<&str>,
    after: Option<&str>,
    next_after: Option<&str>,
    next_label: &str,
) -> Markup {
    let paged = after.is_some_and(|after| !after.is_empty());
    html! {
        @if paged || next_after.is_some() {
            nav.pager aria-label="Pages" {
                @if paged {
                    a href=(links::with_query(path, &[("q", query)])) { "First page" }
                }
                @if let Some(next) = next_after {
                    a rel="next" href=(links::with_query(path, &[("q", query), ("after", Some(next))])) { (next_label) " →" }
                }
            }
        }
    }
}

/// A short confirmation shown after an action.
pub(crate) fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(0), "0 ms");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_449), "12.4 s");
        assert_eq!(duration(185_000), "3 min 5 s");
    }

    #[test]
    fn short_ids_keep_the_random_part() {
        assert_eq!(
            short_id("01a20abb-390d-721a-af82-e2b8ad1f61fe"),
            "e2b8ad1f61fe"
        );
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn the_header_says_who_is_signed_in_and_offers_admins_their_pages() {
        let who = |subject: &str, server_admin: bool| envstore_api_types::WhoAmI {
            subject: Some(subject.to_owned()),
            server_admin,
            bindings: Vec::new(),
            scopes: None,
            token_id: None,
            expires_at: None,
        };
        let render = |session: &Session| {
            page(
                "Namespaces",
                Chrome::new(session, Section::Namespaces),
                &[],
                html! {},
            )
            .into_string()
        };
        let vera = render(&Session::new("t").identified(who("vera", false)));
        assert!(
            vera.contains("Signed in as <strong class=\"subject\">vera</strong>"),
            "{vera}"
        );
        assert!(!vera.contains("/ui/admin"), "{vera}");
        assert!(vera.contains("Sign out"));
        let admin = render(&Session::new("t").identified(who("root", true)));
        assert!(admin.contains("href=\"/ui/admin\"") && admin.contains("server admin"));
        let unknown = render(&Session::new("t"));
        assert!(!unknown.contains("Signed in as") && unknown.contains("Sign out"));
    }

    #[test]
    fn pages_escape_what_they_show() {
        let markup = page(
            "<script>alert(1)</script>",
            Chrome::default(),
            &[],
            html! { (status(BuildStatus::Failed)) },
        );
        let text = markup.into_string();
        assert!(text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!text.contains("<script>alert"));
        assert!(text.contains("data-status=\"failed\""));
        assert!(text.contains("<main id=\"main\""));
    }
}
