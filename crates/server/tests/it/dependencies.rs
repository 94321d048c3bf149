//! What a release build of the server links: the demo channel generator and
//! what it brings (rattler_index, opendal, the D-Bus/keyring stack with its
//! vendored C build) only come with the `demo` feature, which is off there.

use std::path::Path;
use std::process::Command;

/// Crates the server binary must not depend on without its `demo` feature.
const DEMO_ONLY: [&str; 4] = [
    "envstore-fixtures",
    "rattler_index",
    "libdbus-sys",
    "opendal",
];

#[test]
fn the_server_without_features_has_no_demo_dependencies() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(env!("CARGO"))
        .current_dir(&workspace)
        .args([
            "tree",
            "-p",
            "envstore-server",
            "-e",
            "normal",
            "--locked",
            "--prefix",
            "none",
            "--color",
            "never",
        ])
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cargo tree failed: {stderr}");
    let tree = String::from_utf8_lossy(&output.stdout);
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        names.contains(&"envstore-api"),
        "an unexpected tree:\n{tree}"
    );
    let found: Vec<&str> = DEMO_ONLY
        .into_iter()
        .filter(|name| names.contains(name))
        .collect();
    assert!(
        found.is_empty(),
        "the server's normal dependencies include {found:?}: keep them behind the `demo` feature\n{tree}"
    );
}
