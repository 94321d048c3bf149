use envstore_core::spec::{SystemRequirements, system_requirement_virtual_package};
use rattler_conda_types::{GenericVirtualPackage, PackageName, Subdir, Version};

/// The virtual packages a build assumes for a target platform. They are fixed
/// per platform rather than detected: a build service must not make the
/// environment depend on the machine that happened to build it.
pub fn virtual_packages_for(subdir: Subdir) -> Vec<GenericVirtualPackage> {
    let name = subdir.to_string();
    let mut packages = Vec::new();
    let mut add = |package: &str, version: &str, build: &str| {
        if let (Ok(name), Ok(version), Ok(build)) = (
            PackageName::try_from(package),
            version.parse::<Version>(),
            build.parse(),
        ) {
            packages.push(GenericVirtualPackage {
                name,
                version,
                build_string: build,
            });
        }
    };
    let arch = name.rsplit('-').next().unwrap_or_default();
    let archspec = match arch {
        "64" => "x86_64",
        "32" => "x86",
        "arm64" if name.starts_with("osx") => "arm64",
        "arm64" => "aarch64",
        other => other,
    };
    if name.starts_with("linux") {
        add("__linux", "5.10", "0");
        add("__glibc", "2.28", "0");
        add("__unix", "0", "0");
    } else if name.starts_with("osx") {
        add(
            "__osx",
            if archspec == "arm64" { "11.0" } else { "10.15" },
            "0",
        );
        add("__unix", "0", "0");
    } else if name.starts_with("win") {
        add("__win", "0", "0");
    } else if name.starts_with("freebsd") {
        add("__unix", "0", "0");
    }
    if subdir != Subdir::NoArch {
        add("__archspec", "1", archspec);
    }
    packages
}

/// The virtual packages of `subdir` with a spec's system requirements: each
/// replaces the platform's assumed value (`libc` the assumed glibc) or adds
/// one (`cuda`). The worker's own machine is never asked: a GPU environment
/// solves on a worker without a GPU.
pub fn virtual_packages_with(
    subdir: Subdir,
    requirements: &SystemRequirements,
) -> Vec<GenericVirtualPackage> {
    let mut packages = virtual_packages_for(subdir);
    for (key, value) in requirements {
        let Some(name) = system_requirement_virtual_package(key) else {
            continue;
        };
        // `__archspec` carries the microarchitecture as its build string.
        let (version, build) = if name == "__archspec" {
            ("1", value.as_str())
        } else {
            (value.as_str(), "0")
        };
        let (Ok(name), Ok(version), Ok(build)) = (
            PackageName::try_from(name),
            version.parse::<Version>(),
            build.parse(),
        ) else {
            continue;
        };
        let package = GenericVirtualPackage {
            name,
            version,
            build_string: build,
        };
        match packages.iter_mut().find(|known| known.name == package.name) {
            Some(known) => *known = package,
            None => packages.push(package),
        }
    }
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(subdir: Subdir) -> Vec<String> {
        virtual_packages_for(subdir)
            .iter()
            .map(|p| {
                format!(
                    "{}={}={}",
                    p.name.as_normalized(),
                    p.version,
                    p.build_string
                )
            })
            .collect()
    }

    #[test]
    fn each_platform_declares_its_own() {
        assert_eq!(
            names(Subdir::Linux64),
            [
                "__linux=5.10=0",
                "__glibc=2.28=0",
                "__unix=0=0",
                "__archspec=1=x86_64"
            ]
        );
        assert_eq!(
            names(Subdir::OsxArm64),
            ["__osx=11.0=0", "__unix=0=0", "__archspec=1=arm64"]
        );
        assert_eq!(names(Subdir::Win64), ["__win=0=0", "__archspec=1=x86_64"]);
        assert_eq!(names(Subdir::LinuxAarch64)[3], "__archspec=1=aarch64");
    }

    #[test]
    fn system_requirements_replace_or_add_to_the_assumed_ones() {
        let requirements: SystemRequirements = [
            ("cuda".to_owned(), "12.4".to_owned()),
            ("libc".to_owned(), "2.35".to_owned()),
            ("archspec".to_owned(), "x86_64_v3".to_owned()),
        ]
        .into();
        let named: Vec<String> = virtual_packages_with(Subdir::Linux64, &requirements)
            .iter()
            .map(|p| {
                format!(
                    "{}={}={}",
                    p.name.as_normalized(),
                    p.version,
                    p.build_string
                )
            })
            .collect();
        assert_eq!(
            named,
            [
                "__linux=5.10=0",
                "__glibc=2.35=0",
                "__unix=0=0",
                "__archspec=1=x86_64_v3",
                "__cuda=12.4=0"
            ]
        );
        assert_eq!(
            virtual_packages_with(Subdir::Linux64, &SystemRequirements::new()),
            virtual_packages_for(Subdir::Linux64)
        );
    }
}
