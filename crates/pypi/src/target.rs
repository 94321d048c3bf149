//! The interpreter a PyPI resolution targets, derived from the locked conda
//! records of one platform alone: no interpreter is ever run (the platform
//! may not even be the one envstore runs on). This is what pixi does in
//! `pypi_modifiers` (markers from the subdir and the `python` record, wheel
//! tags from the `__glibc` / `__osx` virtual packages or a default).

use rattler_conda_types::{
    Arch, GenericVirtualPackage, MatchSpec, ParseStrictness, RepoDataRecord, Subdir,
};
use uv_pep508::{MarkerEnvironment, MarkerEnvironmentBuilder};
use uv_platform_tags::Tags;

use crate::PypiError;

/// The glibc baseline of `manylinux` wheels when the environment declares no
/// `__glibc`: pixi's default (`pixi_default_versions::default_glibc_version`),
/// the baseline of conda-forge's current sysroot (RHEL 8 / manylinux_2_28).
pub const DEFAULT_GLIBC: (u16, u16) = (2, 28);

/// The macOS baseline of `osx-arm64` wheels when the environment declares no
/// `__osx`: the first macOS release on Apple silicon. (pixi now defaults to
/// 13.0 for both macOS subdirs; a lower baseline only accepts fewer wheels.)
pub const DEFAULT_MACOS_ARM64: (u16, u16) = (11, 0);

/// The macOS baseline of `osx-64` wheels when the environment declares no
/// `__osx`: conda-forge's historical `MACOSX_DEPLOYMENT_TARGET` for x86_64.
pub const DEFAULT_MACOS_X86_64: (u16, u16) = (10, 13);

/// What uv needs to know about the target interpreter, derived from the
/// locked conda records of one platform (a [`Subdir`]: rattler_conda_types
/// 0.58 calls the platform that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonTarget {
    platform: Subdir,
    /// The `python` record's version, e.g. `3.11.9`.
    python_version: String,
    /// Major and minor, e.g. `(3, 11)`.
    python_major_minor: (u8, u8),
    /// A free-threaded build (`python_abi` `*_cp313t`).
    free_threaded: bool,
    /// The glibc (linux) or macOS baseline, `None` on Windows.
    os_baseline: Option<(u16, u16)>,
    site_packages: String,
}

impl PythonTarget {
    /// `None` when the records have no `python`. Virtual packages give the
    /// glibc / macOS baseline (`__glibc`, `__osx`); without them the stated
    /// defaults apply ([`DEFAULT_GLIBC`], [`DEFAULT_MACOS_ARM64`],
    /// [`DEFAULT_MACOS_X86_64`]).
    pub fn from_conda(
        platform: Subdir,
        records: &[RepoDataRecord],
        virtual_packages: &[GenericVirtualPackage],
    ) -> Result<Option<Self>, PypiError> {
        let Some(python) = records
            .iter()
            .find(|record| record.package_record.name.as_normalized() == "python")
        else {
            return Ok(None);
        };
        let record = &python.package_record;
        let python_version = record.version.as_str().to_string();
        let python_major_minor = record
            .version
            .as_major_minor()
            .and_then(|(major, minor)| Some((u8::try_from(major).ok()?, u8::try_from(minor).ok()?)))
            .ok_or_else(|| PypiError::UnsupportedTarget {
                platform: platform.to_string(),
                reason: format!("python version {python_version} has no major.minor"),
            })?;
        let os_baseline = os_baseline(platform, virtual_packages)?;
        let (major, minor) = python_major_minor;
        let site_packages = match &record.python_site_packages_path {
            Some(path) => path.trim_end_matches('/').to_string(),
            None if platform.is_windows() => "Lib/site-packages".to_string(),
            None => format!("lib/python{major}.{minor}/site-packages"),
        };
        let target = Self {
            platform,
            python_version,
            python_major_minor,
            free_threaded: is_free_threaded(records, &record.depends),
            os_baseline,
            site_packages,
        };
        // Fail here, not halfway through a resolution, on a platform uv has no tags for.
        target.tags()?;
        target.markers()?;
        Ok(Some(target))
    }

    /// Where wheels go, relative to the prefix: e.g.
    /// `lib/python3.11/site-packages`, or `Lib/site-packages` on Windows; the
    /// record's `python_site_packages_path` when it has one.
    pub fn site_packages(&self) -> &str {
        &self.site_packages
    }

    pub fn platform(&self) -> Subdir {
        self.platform
    }

    /// The full python version of the conda record, e.g. `3.11.9`.
    pub fn python_version(&self) -> &str {
        &self.python_version
    }

    pub fn python_major_minor(&self) -> (u8, u8) {
        self.python_major_minor
    }

    pub fn free_threaded(&self) -> bool {
        self.free_threaded
    }

    /// The glibc (linux) or macOS baseline of the wheel tags; `None` on Windows.
    pub fn os_baseline(&self) -> Option<(u16, u16)> {
        self.os_baseline
    }

    /// Where entry-point scripts go, relative to the prefix.
    pub fn scripts_dir(&self) -> &'static str {
        if self.platform.is_windows() {
            "Scripts"
        } else {
            "bin"
        }
    }

    /// The interpreter, relative to the prefix (what script shebangs point at).
    pub fn python_executable(&self) -> String {
        let (major, minor) = self.python_major_minor;
        if self.platform.is_windows() {
            "python.exe".to_string()
        } else if self.free_threaded {
            format!("bin/python{major}.{minor}t")
        } else {
            format!("bin/python{major}.{minor}")
        }
    }

    /// C headers of wheels (`.data/headers`), relative to the prefix.
    pub fn include_dir(&self) -> String {
        let (major, minor) = self.python_major_minor;
        if self.platform.is_windows() {
            "Include".to_string()
        } else {
            format!("include/python{major}.{minor}")
        }
    }

    /// The PEP 508 marker environment, as pixi derives it from the subdir and
    /// the `python` record (`platform_release` / `platform_version` unknown).
    pub fn markers(&self) -> Result<MarkerEnvironment, PypiError> {
        let unsupported = |reason: String| PypiError::UnsupportedTarget {
            platform: self.platform.to_string(),
            reason,
        };
        let markers = envstore_core::pypi::platform_markers(self.platform)
            .ok_or_else(|| unsupported("no PEP 508 markers for this platform".into()))?;
        let (major, minor) = self.python_major_minor;
        let python_version = format!("{major}.{minor}");
        MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
            implementation_name: "cpython",
            implementation_version: &self.python_version,
            os_name: markers.os_name,
            platform_machine: markers.platform_machine,
            platform_python_implementation: "CPython",
            platform_release: "",
            platform_system: markers.platform_system,
            platform_version: "",
            python_full_version: &self.python_version,
            python_version: &python_version,
            sys_platform: markers.sys_platform,
        })
        .map_err(|error| unsupported(format!("python version: {error}")))
    }

    /// The wheel tags this interpreter accepts, best first.
    pub fn tags(&self) -> Result<Tags, PypiError> {
        let unsupported = |reason: String| PypiError::UnsupportedTarget {
            platform: self.platform.to_string(),
            reason,
        };
        let arch = match self.platform.arch() {
            Some(Arch::X86) => uv_platform_tags::Arch::X86,
            Some(Arch::X86_64) => uv_platform_tags::Arch::X86_64,
            Some(Arch::Aarch64 | Arch::Arm64) => uv_platform_tags::Arch::Aarch64,
            Some(Arch::ArmV7l) => uv_platform_tags::Arch::Armv7L,
            Some(Arch::Ppc64le) => uv_platform_tags::Arch::Powerpc64Le,
            Some(Arch::Ppc64) => uv_platform_tags::Arch::Powerpc64,
            Some(Arch::Riscv64) => uv_platform_tags::Arch::Riscv64,
            Some(Arch::S390X) => uv_platform_tags::Arch::S390X,
            other => return Err(unsupported(format!("no wheel tags for arch {other:?}"))),
        };
        let os = match (self.platform, self.os_baseline) {
            (platform, Some((major, minor))) if platform.is_linux() => {
                uv_platform_tags::Os::Manylinux { major, minor }
            }
            (platform, Some((major, minor))) if platform.is_osx() => {
                uv_platform_tags::Os::Macos { major, minor }
            }
            (platform, _) if platform.is_windows() => uv_platform_tags::Os::Windows,
            _ => return Err(unsupported("no wheel tags for this platform".into())),
        };
        Tags::from_env(
            uv_platform_tags::Platform::new(os, arch),
            self.python_major_minor,
            "cpython",
            self.python_major_minor,
            uv_platform_tags::TagsOptions {
                manylinux_compatible: true,
                gil_disabled: self.free_threaded,
                debug_enabled: false,
                is_cross: false,
            },
        )
        .map_err(|error| unsupported(error.to_string()))
    }
}

/// The glibc (linux) or macOS (osx) baseline: declared, else the default.
fn os_baseline(
    platform: Subdir,
    virtual_packages: &[GenericVirtualPackage],
) -> Result<Option<(u16, u16)>, PypiError> {
    let declared = |name: &str| {
        virtual_packages
            .iter()
            .find(|package| package.name.as_normalized() == name)
            .map(|package| {
                let version = package.version.to_string();
                let mut segments = version.split('.').map(str::parse::<u16>);
                match (segments.next(), segments.next()) {
                    (Some(Ok(major)), Some(Ok(minor))) => Ok((major, minor)),
                    (Some(Ok(major)), None) => Ok((major, 0)),
                    _ => Err(PypiError::UnsupportedTarget {
                        platform: platform.to_string(),
                        reason: format!("{name} version {} is not major.minor", package.version),
                    }),
                }
            })
            .transpose()
    };
    if platform.is_linux() {
        Ok(Some(declared("__glibc")?.unwrap_or(DEFAULT_GLIBC)))
    } else if platform.is_osx() {
        let default = if platform == Subdir::OsxArm64 {
            DEFAULT_MACOS_ARM64
        } else {
            DEFAULT_MACOS_X86_64
        };
        Ok(Some(declared("__osx")?.unwrap_or(default)))
    } else {
        Ok(None)
    }
}

/// A free-threaded python shows in its `python_abi`: the locked record's
/// build string or the python record's dependency on it (`*_cp313t`).
fn is_free_threaded(records: &[RepoDataRecord], python_depends: &[String]) -> bool {
    let free_threaded_build = |build: &str| {
        build.split('_').any(|part| {
            part.strip_prefix("cp")
                .and_then(|rest| rest.strip_suffix('t'))
                .is_some_and(|digits| {
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                })
        })
    };
    let locked_abi = records
        .iter()
        .find(|record| record.package_record.name.as_normalized() == "python_abi");
    if let Some(abi) = locked_abi {
        return free_threaded_build(abi.package_record.build.as_str());
    }
    python_depends.iter().any(|depend| {
        MatchSpec::from_str(depend, ParseStrictness::Lenient).is_ok_and(|spec| {
            spec.name
                .as_exact()
                .is_some_and(|name| name.as_normalized() == "python_abi")
                && spec
                    .build
                    .as_ref()
                    .is_some_and(|build| free_threaded_build(&build.to_string()))
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::str::FromStr;

    use rattler_conda_types::{PackageName, PackageRecord, Version, VersionWithSource};
    use uv_distribution_filename::WheelFilename;

    use super::*;

    pub(crate) fn record(name: &str, version: &str, build: &str, subdir: &str) -> RepoDataRecord {
        let mut package_record = PackageRecord::new(
            PackageName::from_str(name).expect("a name"),
            VersionWithSource::from_str(version).expect("a version"),
            build.parse().expect("a build string"),
        );
        package_record.subdir = subdir.to_string();
        RepoDataRecord {
            package_record,
            identifier: format!("{name}-{version}-{build}.conda")
                .parse()
                .expect("an identifier"),
            url: url::Url::parse(&format!(
                "https://example.invalid/{subdir}/{name}-{version}-{build}.conda"
            ))
            .expect("a URL"),
            channel: Some("https://example.invalid/".to_string()),
        }
    }

    pub(crate) fn python_records(
        platform: Subdir,
        version: &str,
        abi: &str,
    ) -> Vec<RepoDataRecord> {
        let subdir = platform.as_str();
        vec![
            record("python", version, &format!("h0_0_{abi}"), subdir),
            record("python_abi", "3.11", &format!("8_{abi}"), subdir),
            record("openssl", "3.3.0", "h0_0", subdir),
        ]
    }

    fn virtual_package(name: &str, version: &str) -> GenericVirtualPackage {
        GenericVirtualPackage {
            name: PackageName::from_str(name).expect("a name"),
            version: Version::from_str(version).expect("a version"),
            build_string: "0".parse().expect("a build string"),
        }
    }

    fn compatible(target: &PythonTarget, wheel: &str) -> bool {
        WheelFilename::from_str(wheel)
            .expect("a wheel name")
            .is_compatible(&target.tags().expect("tags"))
    }

    #[test]
    fn no_python_no_target() {
        let records = vec![record("zlib", "1.3", "h0_0", "linux-64")];
        assert_eq!(
            PythonTarget::from_conda(Subdir::Linux64, &records, &[]).expect("no error"),
            None
        );
    }

    #[test]
    fn linux_target_from_records_with_default_glibc() {
        let records = python_records(Subdir::Linux64, "3.11.9", "cp311");
        let target = PythonTarget::from_conda(Subdir::Linux64, &records, &[])
            .expect("a target")
            .expect("python is there");
        assert_eq!(target.python_version(), "3.11.9");
        assert_eq!(target.site_packages(), "lib/python3.11/site-packages");
        assert_eq!(target.os_baseline(), Some(DEFAULT_GLIBC));
        assert!(!target.free_threaded());
        assert!(compatible(&target, "x-1.0-py3-none-any.whl"));
        assert!(compatible(
            &target,
            "x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
        ));
        assert!(compatible(
            &target,
            "x-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"
        ));
        assert!(!compatible(
            &target,
            "x-1.0-cp311-cp311-manylinux_2_34_x86_64.whl"
        ));
        assert!(!compatible(
            &target,
            "x-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"
        ));
        assert!(!compatible(&target, "x-1.0-cp311-cp311-win_amd64.whl"));
        let markers = target.markers().expect("markers");
        assert_eq!(markers.sys_platform(), "linux");
        assert_eq!(markers.platform_machine(), "x86_64");
        assert_eq!(markers.python_full_version().string, "3.11.9");
    }

    #[test]
    fn declared_glibc_raises_the_baseline() {
        let records = python_records(Subdir::Linux64, "3.11.9", "cp311");
        let target = PythonTarget::from_conda(
            Subdir::Linux64,
            &records,
            &[virtual_package("__glibc", "2.36")],
        )
        .expect("a target")
        .expect("python is there");
        assert_eq!(target.os_baseline(), Some((2, 36)));
        assert!(compatible(
            &target,
            "x-1.0-cp311-cp311-manylinux_2_34_x86_64.whl"
        ));
    }

    #[test]
    fn macos_and_windows_targets() {
        let records = python_records(Subdir::OsxArm64, "3.11.9", "cp311");
        let mac = PythonTarget::from_conda(Subdir::OsxArm64, &records, &[])
            .expect("a target")
            .expect("python is there");
        assert_eq!(mac.os_baseline(), Some(DEFAULT_MACOS_ARM64));
        assert!(compatible(&mac, "x-1.0-cp311-cp311-macosx_11_0_arm64.whl"));
        assert!(!compatible(&mac, "x-1.0-cp311-cp311-macosx_14_0_arm64.whl"));
        assert_eq!(mac.markers().expect("markers").sys_platform(), "darwin");

        let records = python_records(Subdir::Osx64, "3.11.9", "cp311");
        let intel =
            PythonTarget::from_conda(Subdir::Osx64, &records, &[virtual_package("__osx", "12")])
                .expect("a target")
                .expect("python is there");
        assert_eq!(intel.os_baseline(), Some((12, 0)));

        let records = python_records(Subdir::Win64, "3.11.9", "cp311");
        let windows = PythonTarget::from_conda(Subdir::Win64, &records, &[])
            .expect("a target")
            .expect("python is there");
        assert_eq!(windows.site_packages(), "Lib/site-packages");
        assert_eq!(windows.scripts_dir(), "Scripts");
        assert!(compatible(&windows, "x-1.0-cp311-cp311-win_amd64.whl"));
        assert!(!compatible(
            &windows,
            "x-1.0-cp311-cp311-macosx_11_0_arm64.whl"
        ));
        let markers = windows.markers().expect("markers");
        assert_eq!(markers.sys_platform(), "win32");
        assert_eq!(markers.platform_machine(), "AMD64");
    }

    #[test]
    fn free_threaded_python_is_seen_in_python_abi() {
        let records = python_records(Subdir::Linux64, "3.13.1", "cp313t");
        let target = PythonTarget::from_conda(Subdir::Linux64, &records, &[])
            .expect("a target")
            .expect("python is there");
        assert!(target.free_threaded());
        assert!(compatible(
            &target,
            "x-1.0-cp313-cp313t-manylinux_2_17_x86_64.whl"
        ));
        assert!(!compatible(
            &target,
            "x-1.0-cp313-cp313-manylinux_2_17_x86_64.whl"
        ));
        assert_eq!(target.python_executable(), "bin/python3.13t");
    }

    #[test]
    fn the_records_site_packages_path_wins() {
        let mut records = python_records(Subdir::Linux64, "3.13.1", "cp313t");
        records[0].package_record.python_site_packages_path =
            Some("lib/python3.13t/site-packages".to_string());
        let target = PythonTarget::from_conda(Subdir::Linux64, &records, &[])
            .expect("a target")
            .expect("python is there");
        assert_eq!(target.site_packages(), "lib/python3.13t/site-packages");
    }
}
