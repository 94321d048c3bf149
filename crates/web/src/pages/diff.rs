//! What changed in the packages between two builds, per platform: added,
//! removed, and changed (another version or build of the same package).
//! The computation is `envstore_api_types::diff`, shared with the CLI.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use maud::{Markup, html};
use serde::Deserialize;

use envstore_api_types::diff::{Change, PlatformDiff, diff};
use envstore_api_types::{BuildView, LockedPackage};

use crate::api::Api;
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::session::Visitor;

#[derive(Debug, Deserialize)]
pub(crate) struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

pub(crate) async fn show(
    State(api): State<Api>,
    visitor: Visitor,
    Query(query): Query<DiffQuery>,
) -> Result<Markup, UiError> {
    let (Some(from), Some(to)) = (&query.from, &query.to) else {
        return Err(UiError::BadRequest(
            "choose two builds to compare (?from=…&to=…)".to_owned(),
        ));
    };
    let from: BuildView = api.get(&visitor, &links::api::build(from)).await?;
    let to: BuildView = api.get(&visitor, &links::api::build(to)).await?;
    let body = html! {
        p {
            "From build " a href=(links::build(&from.id)) { code { (layout::short_id(&from.id)) } }
            " (" (from.namespace) "/" (from.environment) ", " (layout::time(from.created_at)) ") to build "
            a href=(links::build(&to.id)) { code { (layout::short_id(&to.id)) } }
            " (" (to.namespace) "/" (to.environment) ", " (layout::time(to.created_at)) ")."
        }
        @match (&from.packages, &to.packages) {
            (Some(old), Some(new)) => (changes(&diff(old, new))),
            _ => p { "Both builds need a lock to be compared; at least one of them has none." },
        }
    };
    let trail = [
        ("Namespaces".to_owned(), links::namespaces()),
        (to.namespace.clone(), links::namespace(&to.namespace)),
        (
            format!("{}/{}", to.namespace, to.environment),
            links::environment(&to.namespace, &to.environment),
        ),
    ];
    Ok(layout::page(
        "Package changes",
        Chrome::visitor(&visitor, Section::Namespaces),
        &trail,
        body,
    ))
}

fn changes(platforms: &BTreeMap<&str, PlatformDiff<'_>>) -> Markup {
    let describe = |package: &LockedPackage| format!("{} ({})", package.version, package.build);
    html! {
        @for (platform, platform_diff) in platforms {
            @let (changes, unchanged) = (&platform_diff.changes, platform_diff.unchanged);
            @let count = |kind: fn(&Change<'_>) -> bool| changes.iter().filter(|change| kind(change)).count();
            section aria-labelledby={ "diff-" (platform) } {
                h2 id={ "diff-" (platform) } { (platform) }
                p.summary {
                    (count(|change| matches!(change, Change::Added { .. }))) " added, "
                    (count(|change| matches!(change, Change::Removed { .. }))) " removed, "
                    (count(|change| matches!(change, Change::Changed { .. }))) " changed, "
                    (unchanged) " unchanged."
                }
                @if !changes.is_empty() {
                    table.diff data-platform=(platform) {
                        thead { tr { th scope="col" { "Change" } th scope="col" { "Package" } th scope="col" { "Before" } th scope="col" { "After" } } }
                        tbody {
                            @for change in changes {
                                @match change {
                                    Change::Added { package } => tr.added data-change="added" {
                                        td { span aria-hidden="true" { "+ " } "added" }
                                        th scope="row" { (package.name) }
                                        td { "—" }
                                        td { (describe(package)) }
                                    },
                                    Change::Removed { package } => tr.removed data-change="removed" {
                                        td { span aria-hidden="true" { "− " } "removed" }
                                        th scope="row" { (package.name) }
                                        td { (describe(package)) }
                                        td { "—" }
                                    },
                                    Change::Changed { from, to } => tr.changed data-change="changed" {
                                        td { span aria-hidden="true" { "~ " } "changed" }
                                        th scope="row" { (to.name) }
                                        td { (describe(from)) }
                                        td { (describe(to)) }
                                    },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, version: &str, build: &str) -> LockedPackage {
        LockedPackage {
            name: name.to_owned(),
            version: version.to_owned(),
            build: build.to_owned(),
            subdir: "linux-64".to_owned(),
            url: format!("http://demo/linux-64/{name}-{version}-{build}.conda"),
            sha256: None,
            size: None,
            manager: None,
        }
    }

    #[test]
    fn changes_are_added_removed_or_changed_per_platform() {
        let from = BTreeMap::from([
            (
                "linux-64".to_owned(),
                vec![
                    package("python", "3.11.9", "0"),
                    package("numpy", "2.0.2", "py311_0"),
                    package("six", "1.16", "0"),
                ],
            ),
            (
                "osx-arm64".to_owned(),
                vec![package("python", "3.11.9", "0")],
            ),
        ]);
        let to = BTreeMap::from([(
            "linux-64".to_owned(),
            vec![
                package("python", "3.10.14", "0"),
                package("numpy", "2.0.2", "py310_0"),
                package("six", "1.16", "0"),
                package("pandas", "2.2", "0"),
            ],
        )]);
        let changes = diff(&from, &to);
        let linux: Vec<(String, &str)> = changes["linux-64"]
            .changes
            .iter()
            .map(|change| {
                let kind = match change {
                    Change::Added { .. } => "added",
                    Change::Removed { .. } => "removed",
                    Change::Changed { .. } => "changed",
                };
                (change.name().to_owned(), kind)
            })
            .collect();
        assert_eq!(
            linux,
            [
                ("numpy".to_owned(), "changed"),
                ("pandas".to_owned(), "added"),
                ("python".to_owned(), "changed")
            ]
        );
        assert_eq!(changes["linux-64"].unchanged, 1, "six is unchanged");
        assert_eq!(
            changes["osx-arm64"].changes,
            [Change::Removed {
                package: &from["osx-arm64"][0]
            }]
        );
        assert!(diff(&to, &to)["linux-64"].changes.is_empty());
        // The page shows each change as a row of its kind, and the counts.
        let page = super::changes(&changes).into_string();
        assert_eq!(page.matches(r#"data-change="changed""#).count(), 2);
        assert_eq!(page.matches(r#"data-change="added""#).count(), 1);
        assert!(
            page.contains("1 added, 0 removed, 2 changed, 1 unchanged."),
            "{page}"
        );
    }
}
