//! PyPI packages as envstore locks and installs them: plain data shared by
//! the resolver (`envstore-pypi`), the lock formats (`envstore-solve`), the
//! API and the workers. Names, versions and requirements cross between
//! uv's types and rattler_lock's as strings (they are different,
//! incompatible types), so they are strings here too.

use serde::{Deserialize, Serialize};

/// One wheel of a resolved environment, for one platform. Everything a
/// lock needs to install it again without asking an index: where it is,
/// what its bytes hash to, and what it said it needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LockedWheel {
    /// The normalized project name (PEP 503: lower case, runs of `-_.` as `-`).
    pub name: String,
    /// The version as the wheel's file name spells it.
    pub version: String,
    /// Where the wheel is downloaded from (never carries credentials).
    pub url: String,
    /// Lower-case hex sha256 of the wheel; every locked wheel has one.
    pub sha256: String,
    /// The wheel's size in bytes when the index said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `Requires-Dist` of the wheel's metadata, each a PEP 508 string with
    /// its extras and markers as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_dist: Vec<String>,
    /// `Requires-Python` of the wheel's metadata, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_python: Option<String>,
    /// The simple index it was resolved from (e.g. `https://pypi.org/simple`).
    pub index: String,
}

/// The PEP 508 markers a conda platform fixes, as pixi maps them: both the
/// resolver (uv's marker types) and the lock exporter (pep508_rs's) build
/// their marker environments from these, so the two always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformMarkers {
    pub sys_platform: &'static str,
    pub platform_system: &'static str,
    pub os_name: &'static str,
    /// Empty for a platform whose machine name is not known.
    pub platform_machine: &'static str,
}

/// [`PlatformMarkers`] of `subdir`; `None` for platforms other than Linux,
/// macOS and Windows (e.g. `noarch`, `emscripten-wasm32`).
pub fn platform_markers(subdir: rattler_conda_types::Subdir) -> Option<PlatformMarkers> {
    use rattler_conda_types::Subdir;
    let (sys_platform, platform_system, os_name) = if subdir.is_linux() {
        ("linux", "Linux", "posix")
    } else if subdir.is_osx() {
        ("darwin", "Darwin", "posix")
    } else if subdir.is_windows() {
        ("win32", "Windows", "nt")
    } else {
        return None;
    };
    let platform_machine = match subdir {
        Subdir::Linux32 => "i386",
        Subdir::Linux64 | Subdir::Osx64 => "x86_64",
        Subdir::LinuxAarch64 => "aarch64",
        Subdir::LinuxArmV6l => "armv6l",
        Subdir::LinuxArmV7l => "armv7l",
        Subdir::LinuxPpc64le => "ppc64le",
        Subdir::LinuxPpc64 => "ppc64",
        Subdir::LinuxS390X => "s390x",
        Subdir::LinuxRiscv32 => "riscv32",
        Subdir::LinuxRiscv64 => "riscv64",
        Subdir::OsxArm64 => "arm64",
        Subdir::Win32 => "x86",
        Subdir::Win64 => "AMD64",
        Subdir::WinArm64 => "ARM64",
        _ => "",
    };
    Some(PlatformMarkers {
        sys_platform,
        platform_system,
        os_name,
        platform_machine,
    })
}

/// Normalizes a PyPI project name as PEP 503 does: lower case, every run of
/// `-`, `_` and `.` becomes one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut normalized = String::with_capacity(name.len());
    let mut in_separator_run = false;
    for character in name.chars() {
        if matches!(character, '-' | '_' | '.') {
            if !in_separator_run {
                normalized.push('-');
            }
            in_separator_run = true;
        } else {
            normalized.push(character.to_ascii_lowercase());
            in_separator_run = false;
        }
    }
    normalized
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_as_pep_503_says() {
        assert_eq!(normalize_name("Friendly-Bard"), "friendly-bard");
        assert_eq!(normalize_name("FRIENDLY._-bard"), "friendly-bard");
        assert_eq!(normalize_name("zope.interface"), "zope-interface");
        assert_eq!(normalize_name("ipykernel"), "ipykernel");
    }
}
