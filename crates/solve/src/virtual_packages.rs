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
}
