//! What changed in the packages between two builds, per platform: added,
//! removed, and changed (another version or build of the same package).

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Query, State};
use maud::{Markup, html};
use serde::Deserialize;

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

/// One package's change between two locks of one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change<'a> {
    Added(&'a LockedPackage),
    Removed(&'a LockedPackage),
    Changed {
        from: &'a LockedPackage,
        to: &'a LockedPackage,
    },
}

impl Change<'_> {
    fn name(&self) -> &str {
        match self {
            Self::Added(package) | Self::Removed(package) => &package.name,
            Self::Changed { to, .. } => &to.name,
        }
    }
}

/// The changes from `from` to `to` for each platform either has, by package
/// name, with the number of packages left as they were.
pub(crate) fn diff<'a>(
    from: &'a BTreeMap<String, Vec<LockedPackage>>,
    to: &'a BTreeMap<String, Vec<LockedPackage>>,
) -> BTreeMap<&'a str, (Vec<Change<'a>>, usize)> {
    let platforms: BTreeSet<&str> = from.keys().chain(to.keys()).map(String::as_str).collect();
    platforms
        .into_iter()
        .map(|platform| {
            let by_name =
                |lock: &'a BTreeMap<String, Vec<LockedPackage>>| -> BTreeMap<&'a str, &'a LockedPackage> {
                    lock.get(platform)
                        .map(|packages| {
                            packages
                                .iter()
                                .map(|package| (package.name.as_str(), package))
                                .collect()
                        })
                        .unwrap_or_default()
                };
            let (before, after) = (by_name(from), by_name(to));
            let mut changes = Vec::new();
            let mut unchanged = 0;
            for (name, old) in &before {
                match after.get(name) {
                    None => changes.push(Change::Removed(old)),
                    Some(new)
                        if old.version != new.version
                            || old.build != new.build
                            || old.url != new.url =>
                    {
                        changes.push(Change::Changed { from: old, to: new });
                    }
                    Some(_) => unchanged += 1,
                }
            }
            changes.extend(
                after
                    .iter()
                    .filter(|(name, _)| !before.contains_key(*name))
                    .map(|(_, new)| Change::Added(new)),
            );
            changes.sort_by(|a, b| a.name().cmp(b.name()));
            (platform, (changes, unchanged))
        })
        .collect()
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

fn changes(platforms: &BTreeMap<&str, (Vec<Change<'_>>, usize)>) -> Markup {
    let describe = |package: &LockedPackage| format!("{} ({})", package.version, package.build);
    html! {
        @for (platform, (changes, unchanged)) in platforms {
            @let count = |kind: fn(&Change<'_>) -> bool| changes.iter().filter(|change| kind(change)).count();
            section aria-labelledby={ "diff-" (platform) } {
                h2 id={ "diff-" (platform) } { (platform) }
                p.summary {
                    (count(|change| matches!(change, Change::Added(_)))) " added, "
                    (count(|change| matches!(change, Change::Removed(_)))) " removed, "
                    (count(|change| matches!(change, Change::Changed { .. }))) " changed, "
                    (unchanged) " unchanged."
                }
                @if !changes.is_empty() {
                    table.diff data-platform=(platform) {
                        thead { tr { th scope="col" { "Change" } th scope="col" { "Package" } th scope="col" { "Before" } th scope="col" { "After" } } }
                        tbody {
                            @for change in changes {
                                @match change {
                                    Change::Added(package) => tr.added data-change="added" {
                                        td { span aria-hidden="true" { "+ " } "added" }
                                        th scope="row" { (package.name) }
                                        td { "—" }
                                        td { (describe(package)) }
                                    },
                                    Change::Removed(package) => tr.removed data-change="removed" {
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
            .0
            .iter()
            .map(|change| {
                let kind = match change {
                    Change::Added(_) => "added",
                    Change::Removed(_) => "removed",
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
        assert_eq!(changes["linux-64"].1, 1, "six is unchanged");
        assert_eq!(
            changes["osx-arm64"].0,
            [Change::Removed(&from["osx-arm64"][0])]
        );
        assert!(diff(&to, &to)["linux-64"].0.is_empty());
    }
}
