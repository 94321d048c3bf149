//! Which PyPI projects the conda part of an environment already provides:
//! those are pinned to the conda version and never fetched from an index,
//! as pixi does (it maps names with its purl mapping; envstore has no
//! mapping service, so it reads the records' own purls, then falls back to
//! names).

use std::collections::BTreeMap;

use envstore_core::pypi::normalize_name;
use rattler_conda_types::{MatchSpec, ParseStrictness, RepoDataRecord};

/// conda-forge packages whose PyPI project has another name. Short on
/// purpose: only the well-known cases where the same-name rule gets it
/// wrong; records with `purls` never need it.
pub const KNOWN_RENAMES: &[(&str, &str)] = &[
    ("pytorch", "torch"),
    ("msgpack-python", "msgpack"),
    ("py-opencv", "opencv-python"),
    ("matplotlib-base", "matplotlib"),
    ("pytables", "tables"),
];

/// PyPI names the conda solution already provides, with their conda
/// versions: from record purls (`pkg:pypi/NAME`) where present (an empty
/// list means "not a PyPI project"), otherwise the same-name rule (conda
/// name == PyPI name, true on conda-forge style channels) with
/// [`KNOWN_RENAMES`]. The same-name rule applies only to records that are
/// python packages (`noarch: python`, or depending on `python` /
/// `python_abi`), so `openssl` or `zlib` never shadow a PyPI project.
pub fn conda_provided(records: &[RepoDataRecord]) -> BTreeMap<String, String> {
    let mut provided = BTreeMap::new();
    for record in records {
        let package = &record.package_record;
        let version = package.version.as_str().to_string();
        match &package.purls {
            Some(purls) => {
                for purl in purls.iter().filter(|purl| purl.package_type() == "pypi") {
                    let version = purl.version().map_or(version.clone(), str::to_string);
                    provided.insert(normalize_name(purl.name()), version);
                }
            }
            None if is_python_package(record) => {
                let conda_name = package.name.as_normalized();
                let pypi_name = KNOWN_RENAMES
                    .iter()
                    .find(|(conda, _)| *conda == conda_name)
                    .map_or(conda_name, |(_, pypi)| *pypi);
                provided.insert(normalize_name(pypi_name), version);
            }
            None => {}
        }
    }
    provided
}

/// A python package (not the interpreter itself): `noarch: python`, or a
/// dependency on `python` or `python_abi`.
fn is_python_package(record: &RepoDataRecord) -> bool {
    let package = &record.package_record;
    if matches!(package.name.as_normalized(), "python" | "python_abi") {
        return false;
    }
    package.noarch.is_python()
        || package.depends.iter().any(|depend| {
            MatchSpec::from_str(depend, ParseStrictness::Lenient).is_ok_and(|spec| {
                spec.name
                    .as_exact()
                    .is_some_and(|name| matches!(name.as_normalized(), "python" | "python_abi"))
            })
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rattler_conda_types::PackageUrl;

    use super::*;
    use crate::target::tests::record;

    fn python_package(name: &str, version: &str) -> RepoDataRecord {
        let mut record = record(name, version, "py_0", "linux-64");
        record.package_record.depends = vec!["python >=3.9".to_string()];
        record
    }

    #[test]
    fn purls_win_and_names_fall_back() {
        let mut with_purl = python_package("some-conda-name", "2.0");
        with_purl.package_record.purls = Some(BTreeSet::from([
            "pkg:pypi/Real.Name@2.0.1"
                .parse::<PackageUrl>()
                .expect("a purl"),
            "pkg:github/x/y".parse::<PackageUrl>().expect("a purl"),
        ]));
        let mut not_pypi = python_package("conda-only", "1.0");
        not_pypi.package_record.purls = Some(BTreeSet::new());
        let records = vec![
            record("python", "3.11.9", "h0_0_cp311", "linux-64"),
            record("openssl", "3.3.0", "h0_0", "linux-64"),
            python_package("numpy", "1.26.4"),
            python_package("pytorch", "2.3.0"),
            python_package("typing_extensions", "4.12.2"),
            with_purl,
            not_pypi,
        ];
        let provided = conda_provided(&records);
        assert_eq!(
            provided,
            BTreeMap::from([
                ("numpy".to_string(), "1.26.4".to_string()),
                ("real-name".to_string(), "2.0.1".to_string()),
                ("torch".to_string(), "2.3.0".to_string()),
                ("typing-extensions".to_string(), "4.12.2".to_string()),
            ])
        );
    }
}
