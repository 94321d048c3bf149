//! The packages of a build, per platform, searchable by name.

use axum::extract::{Path, Query, State};
use envstore_core::ChannelAllowlist;
use maud::{Markup, html};
use serde::Deserialize;

use envstore_api_types::{BuildView, LockedPackage};

use crate::api::Api;
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::session::Visitor;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PackagesQuery {
    q: Option<String>,
}

pub(crate) async fn show(
    State(api): State<Api>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(query): Query<PackagesQuery>,
) -> Result<Markup, UiError> {
    let build: BuildView = api.get(&visitor, &links::api::build(&id)).await?;
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let wanted = |package: &&LockedPackage| {
        search.is_none_or(|q| package.name.to_lowercase().contains(&q.to_lowercase()))
    };
    let here = links::packages(&build.id);
    let body = html! {
        p { "Build " a href=(links::build(&build.id)) { code { (build.id) } } " of "
            a href=(links::environment(&build.namespace, &build.environment)) { (build.namespace) "/" (build.environment) } "." }
        @match &build.packages {
            None => p { "This build has no lock yet: its packages are known once it is solved." },
            Some(platforms) => {
                (layout::search(&here, "Search packages by name", search))
                @for (platform, packages) in platforms {
                    @let shown: Vec<&LockedPackage> = packages.iter().filter(wanted).collect();
                    section aria-labelledby={ "platform-" (platform) } {
                        h2 id={ "platform-" (platform) } { (platform) " " span.count { "(" (shown.len()) " of " (packages.len()) " packages)" } }
                        @if shown.is_empty() {
                            p { "No package matches this search." }
                        } @else {
                            table.packages data-platform=(platform) {
                                thead { tr { th scope="col" { "Name" } th scope="col" { "Version" } th scope="col" { "Build" } th scope="col" { "Channel" } } }
                                tbody {
                                    @for package in shown {
                                        tr {
                                            th scope="row" { (package.name) }
                                            td { (package.version) }
                                            td { code { (package.build) } }
                                            td { (channel_of(&package.url, api.allowlist())) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let trail = [
        ("Namespaces".to_owned(), links::namespaces()),
        (build.namespace.clone(), links::namespace(&build.namespace)),
        (
            format!("{}/{}", build.namespace, build.environment),
            links::environment(&build.namespace, &build.environment),
        ),
        (
            format!("Build {}", layout::short_id(&build.id)),
            links::build(&build.id),
        ),
    ];
    Ok(layout::page(
        "Packages",
        Chrome::visitor(&visitor, Section::Namespaces),
        &trail,
        body,
    ))
}

/// The channel a package came from: its allowed name when the URL lies in
/// an allowed channel, else the URL's channel part (without the platform
/// folder and the file).
pub(crate) fn channel_of(url: &str, allowlist: &ChannelAllowlist) -> String {
    if let Some(channel) = allowlist
        .channels()
        .iter()
        .find(|channel| url.starts_with(channel.url.as_str()))
    {
        return channel.name.clone();
    }
    let mut parts: Vec<&str> = url.trim_end_matches('/').rsplitn(3, '/').collect();
    parts
        .pop()
        .map(str::to_owned)
        .unwrap_or_else(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use envstore_core::NamedChannel;

    use super::*;

    #[test]
    fn packages_name_their_allowed_channel() {
        let allowlist = ChannelAllowlist::new(vec![
            NamedChannel::parse("demo=http://127.0.0.1:9/demo").expect("a channel"),
        ]);
        assert_eq!(
            channel_of(
                "http://127.0.0.1:9/demo/linux-64/numpy-2.0.2-py311_0.conda",
                &allowlist
            ),
            "demo"
        );
        assert_eq!(
            channel_of(
                "https://conda.example.org/forge/noarch/six-1.16-py_0.tar.bz2",
                &allowlist
            ),
            "https://conda.example.org/forge"
        );
    }
}
