//! What changed in the packages between two builds, per platform: added,
//! removed, and changed (another version, build or URL of the same
//! package). Pure computation over [`BuildView::packages`], shared by the
//! web UI's diff page and `envstore env diff`.
//!
//! [`BuildView::packages`]: crate::BuildView::packages

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::builds::LockedPackage;

/// One package's change between two locks of one platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change<'a> {
    Added {
        package: &'a LockedPackage,
    },
    Removed {
        package: &'a LockedPackage,
    },
    Changed {
        from: &'a LockedPackage,
        to: &'a LockedPackage,
    },
}

impl<'a> Change<'a> {
    /// The package's name (the same before and after).
    pub fn name(&self) -> &'a str {
        match self {
            Self::Added { package } | Self::Removed { package } => &package.name,
            Self::Changed { to, .. } => &to.name,
        }
    }

    /// `added`, `removed` or `changed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Added { .. } => "added",
            Self::Removed { .. } => "removed",
            Self::Changed { .. } => "changed",
        }
    }
}

/// The changes of one platform, by package name, and how many packages
/// stayed as they were.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlatformDiff<'a> {
    pub changes: Vec<Change<'a>>,
    pub unchanged: usize,
}

impl PlatformDiff<'_> {
    /// How many changes are of `kind` (`added`, `removed`, `changed`).
    pub fn count(&self, kind: &str) -> usize {
        self.changes
            .iter()
            .filter(|change| change.kind() == kind)
            .count()
    }
}

/// The changes from `from` to `to` for each platform either has.
pub fn diff<'a>(
    from: &'a BTreeMap<String, Vec<LockedPackage>>,
    to: &'a BTreeMap<String, Vec<LockedPackage>>,
) -> BTreeMap<&'a str, PlatformDiff<'a>> {
    let platforms: BTreeSet<&str> = from.keys().chain(to.keys()).map(String::as_str).collect();
    platforms
        .into_iter()
        .map(|platform| {
            let (before, after) = (by_name(from, platform), by_name(to, platform));
            let mut changes = Vec::new();
            let mut unchanged = 0;
            for (name, old) in &before {
                match after.get(name) {
                    None => changes.push(Change::Removed { package: old }),
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
                    .map(|(_, new)| Change::Added { package: new }),
            );
            changes.sort_by(|a, b| a.name().cmp(b.name()));
            (platform, PlatformDiff { changes, unchanged })
        })
        .collect()
}

/// One platform's packages of a lock, by name (none when it lacks the platform).
fn by_name<'a>(
    lock: &'a BTreeMap<String, Vec<LockedPackage>>,
    platform: &str,
) -> BTreeMap<&'a str, &'a LockedPackage> {
    lock.get(platform)
        .map(|packages| {
            packages
                .iter()
                .map(|package| (package.name.as_str(), package))
                .collect()
        })
        .unwrap_or_default()
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
    fn a_platform_only_one_side_has_is_all_added_or_removed() {
        let from = BTreeMap::from([("linux-64".to_owned(), vec![package("six", "1.16", "0")])]);
        let to = BTreeMap::from([(
            "osx-arm64".to_owned(),
            vec![package("six", "1.16", "0"), package("zlib", "1.3", "0")],
        )]);
        let changes = diff(&from, &to);
        assert_eq!(changes["linux-64"].count("removed"), 1);
        assert_eq!(changes["linux-64"].unchanged, 0);
        let added: Vec<&str> = changes["osx-arm64"]
            .changes
            .iter()
            .map(Change::name)
            .collect();
        assert_eq!(added, ["six", "zlib"]);
        assert_eq!(changes["osx-arm64"].count("added"), 2);
    }

    #[test]
    fn another_url_of_the_same_version_is_a_change() {
        let old = package("six", "1.16", "0");
        let mut moved = old.clone();
        moved.url = "http://mirror/linux-64/six-1.16-0.conda".to_owned();
        let from = BTreeMap::from([("linux-64".to_owned(), vec![old])]);
        let to = BTreeMap::from([("linux-64".to_owned(), vec![moved])]);
        let changes = diff(&from, &to);
        assert_eq!(changes["linux-64"].count("changed"), 1);
        assert_eq!(diff(&from, &from)["linux-64"].unchanged, 1);
    }

    #[test]
    fn changes_serialize_tagged_with_their_kind() {
        let from = BTreeMap::from([("linux-64".to_owned(), vec![package("six", "1.16", "0")])]);
        let to = BTreeMap::from([("linux-64".to_owned(), vec![package("six", "1.17", "0")])]);
        let json = serde_json::to_value(diff(&from, &to)).unwrap();
        assert_eq!(json["linux-64"]["changes"][0]["change"], "changed");
        assert_eq!(json["linux-64"]["changes"][0]["from"]["version"], "1.16");
        assert_eq!(json["linux-64"]["changes"][0]["to"]["version"], "1.17");
        assert_eq!(json["linux-64"]["unchanged"], 0);
    }
}
