//! Installing wheels into a prefix whose conda packages are already linked.
//!
//! Every wheel passes a gate before anything of any wheel is written: each
//! zip entry and RECORD path is normalised and must stay inside its scheme
//! directory, `.data/<scheme>/` maps only to purelib / platlib / scripts /
//! data / headers inside the prefix, RECORD hashes must match the bytes,
//! nothing may land on a file a conda package owns or another wheel (or
//! entry-point script) writes, and sizes stay within [`WheelLimits`]. Then
//! uv's `install_wheel` installs each one with a `Layout` built from the
//! [`PythonTarget`] alone (as pixi does), `INSTALLER` = `envstore`, RECORD
//! kept, and relocatable entry-point scripts (uv's `/bin/sh` trampoline that
//! finds the interpreter beside the script), so the prefix can be renamed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use envstore_core::pypi::LockedWheel;
use rattler_conda_types::PrefixRecord;
use sha2::Digest;
use uv_distribution_filename::WheelFilename;
use uv_install_wheel::{InstallState, Layout, LinkMode};
use uv_pypi_types::Scheme;

use crate::PypiError;
use crate::target::PythonTarget;

/// What the installer writes into every installed dist-info.
pub const INSTALLER: &str = "envstore";

/// Size limits of one wheel's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelLimits {
    /// Uncompressed bytes of all entries of one wheel.
    pub max_unpacked_bytes: u64,
    /// Entries (files and directories) of one wheel.
    pub max_entries: usize,
}

impl Default for WheelLimits {
    /// Far above real wheels (the largest unpack to a few GiB and tens of
    /// thousands of files), far below what fills a disk.
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 16 * 1024 * 1024 * 1024,
            max_entries: 200_000,
        }
    }
}

/// One installed wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledWheel {
    pub name: String,
    pub version: String,
    /// The `*.dist-info` folder, relative to the prefix.
    pub dist_info: String,
    /// Every file it installed, relative to the prefix (`/`-separated),
    /// sorted: its contents, entry-point scripts and installer metadata.
    pub files: Vec<String>,
}

/// Installs wheels (each with its local path, e.g. from
/// [`crate::WheelCache::fetch`]) into `prefix`. Every wheel is checked
/// first; if any is refused nothing is written. Returns what was installed.
pub fn install_wheels(
    prefix: &Path,
    target: &PythonTarget,
    wheels: &[(LockedWheel, PathBuf)],
    limits: &WheelLimits,
) -> Result<Vec<InstalledWheel>, PypiError> {
    if target.platform().is_windows() != cfg!(windows) {
        // uv writes Windows launchers (`.exe`) only when it runs on Windows.
        return Err(PypiError::UnsupportedTarget {
            platform: target.platform().to_string(),
            reason: "wheels are installed only for the operating system envstore runs on".into(),
        });
    }
    let places = Places::new(target);
    let conda_owned = conda_owned_paths(prefix, target)?;
    let mut claimed: HashMap<String, String> = HashMap::new();
    let mut gated = Vec::with_capacity(wheels.len());
    for (locked, path) in wheels {
        let wheel = GatedWheel::check(locked, path, &places, limits)?;
        for destination in &wheel.destinations {
            let key = places.key(destination);
            let refuse = |rule: String| PypiError::HostileWheel {
                wheel: wheel.file_name.clone(),
                path: destination.clone(),
                rule,
            };
            if let Some(owner) = conda_owned.get(&key) {
                return Err(refuse(format!(
                    "would overwrite a file of the conda package '{owner}'"
                )));
            }
            if let Some(other) = claimed.insert(key, wheel.file_name.clone()) {
                return Err(refuse(format!("is also installed by the wheel '{other}'")));
            }
            if fs_err::symlink_metadata(prefix.join(destination)).is_ok() {
                return Err(refuse("exists in the prefix already".to_string()));
            }
        }
        gated.push(wheel);
    }

    let layout = places.layout(prefix);
    let state = InstallState::new(uv_preview::Preview::default());
    let mut installed = Vec::with_capacity(gated.len());
    for wheel in &gated {
        let unpacked = tempfile::Builder::new()
            .prefix(".envstore-wheel-")
            .tempdir_in(prefix)?;
        wheel.unpack(unpacked.path())?;
        uv_install_wheel::install_wheel(
            &layout,
            true,
            unpacked.path(),
            &wheel.filename,
            None,
            None::<&()>,
            None::<&()>,
            Some(INSTALLER),
            true,
            LinkMode::Copy,
            &state,
        )
        .map_err(|error| PypiError::Install {
            wheel: wheel.file_name.clone(),
            message: crate::error_chain(&error),
        })?;
        installed.push(wheel.installed(prefix, &places)?);
    }
    Ok(installed)
}

/// Where a wheel's parts go, relative to the prefix (`/`-separated).
struct Places {
    site_packages: String,
    scripts: String,
    include: String,
    python_executable: String,
    python_version: (u8, u8),
    windows: bool,
}

impl Places {
    fn new(target: &PythonTarget) -> Self {
        Self {
            site_packages: target.site_packages().to_string(),
            scripts: target.scripts_dir().to_string(),
            include: target.include_dir(),
            python_executable: target.python_executable(),
            python_version: target.python_major_minor(),
            windows: target.platform().is_windows(),
        }
    }

    /// How paths are compared: case-insensitively for Windows prefixes.
    fn key(&self, path: &str) -> String {
        if self.windows {
            path.to_lowercase()
        } else {
            path.to_string()
        }
    }

    /// uv's `Layout` without an interpreter, as pixi builds it: purelib =
    /// platlib = site-packages, scripts = bin (Scripts), data = the prefix,
    /// include = include/pythonX.Y.
    fn layout(&self, prefix: &Path) -> Layout {
        let site_packages = prefix.join(&self.site_packages);
        Layout {
            sys_executable: prefix.join(&self.python_executable),
            python_version: self.python_version,
            os_name: if self.windows { "nt" } else { "posix" }.to_string(),
            scheme: Scheme {
                purelib: site_packages.clone(),
                platlib: site_packages,
                scripts: prefix.join(&self.scripts),
                data: prefix.to_path_buf(),
                include: prefix.join(&self.include),
            },
        }
    }
}

/// Paths (relative to the prefix) the conda packages own, with the owner.
fn conda_owned_paths(
    prefix: &Path,
    target: &PythonTarget,
) -> Result<HashMap<String, String>, PypiError> {
    let places = Places::new(target);
    let conda_meta = prefix.join("conda-meta");
    let mut owned = HashMap::new();
    let entries = match fs_err::read_dir(&conda_meta) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(owned),
        Err(error) => return Err(error.into()),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        let record = PrefixRecord::from_path(&path).map_err(|error| PypiError::PrefixRecords {
            prefix: prefix.to_path_buf(),
            message: format!("{}: {error}", path.display()),
        })?;
        let owner = record
            .repodata_record
            .package_record
            .name
            .as_normalized()
            .to_string();
        let files = record.files.iter().chain(
            record
                .paths_data
                .paths
                .iter()
                .map(|entry| &entry.relative_path),
        );
        for file in files {
            let relative = file.to_string_lossy().replace('\\', "/");
            owned.insert(places.key(&relative), owner.clone());
        }
    }
    Ok(owned)
}

/// A wheel that passed the gate: its entries and where each one goes.
struct GatedWheel {
    path: PathBuf,
    file_name: String,
    filename: WheelFilename,
    dist_info: String,
    /// Zip entry index → its normalised path inside the wheel.
    entries: Vec<(usize, String, bool)>,
    /// Destinations relative to the prefix, entry-point scripts included.
    destinations: BTreeSet<String>,
}

impl GatedWheel {
    fn check(
        locked: &LockedWheel,
        path: &Path,
        places: &Places,
        limits: &WheelLimits,
    ) -> Result<Self, PypiError> {
        let file_name = crate::cache::wheel_file_name(locked)?;
        let invalid = |message: String| PypiError::InvalidWheel {
            wheel: file_name.clone(),
            message,
        };
        let hostile = |path: &str, rule: &str| PypiError::HostileWheel {
            wheel: file_name.clone(),
            path: path.to_string(),
            rule: rule.to_string(),
        };
        let filename = WheelFilename::from_str(&file_name)
            .map_err(|error| invalid(format!("its file name: {error}")))?;
        let mut archive = zip::ZipArchive::new(fs_err::File::open(path)?)
            .map_err(|error| invalid(format!("not a zip file: {error}")))?;
        if archive.len() > limits.max_entries {
            return Err(hostile(
                &file_name,
                &format!("has more than {} entries", limits.max_entries),
            ));
        }

        // Names first: normalised, unique, no links, within the size limit.
        let mut entries = Vec::with_capacity(archive.len());
        let mut by_path: BTreeMap<String, usize> = BTreeMap::new();
        let mut declared_bytes: u64 = 0;
        for index in 0..archive.len() {
            let entry = archive
                .by_index(index)
                .map_err(|error| invalid(format!("entry {index}: {error}")))?;
            let raw = entry
                .name()
                .map_err(|error| invalid(format!("entry {index}: {error}")))?
                .into_owned();
            let normalised = normalise(&raw).map_err(|rule| hostile(&raw, rule))?;
            if entry.is_symlink() {
                return Err(hostile(&raw, "is a symbolic link"));
            }
            declared_bytes = declared_bytes.saturating_add(entry.size());
            if declared_bytes > limits.max_unpacked_bytes {
                return Err(hostile(
                    &raw,
                    &format!(
                        "takes the wheel over {} unpacked bytes",
                        limits.max_unpacked_bytes
                    ),
                ));
            }
            let is_dir = entry.is_dir();
            if !is_dir {
                let executable = entry.unix_mode().is_some_and(|mode| mode & 0o111 != 0);
                if by_path.insert(places.key(&normalised), index).is_some() {
                    return Err(hostile(&raw, "appears twice in the wheel"));
                }
                entries.push((index, normalised, executable));
            }
        }

        // The one dist-info folder, named as the file name says.
        let dist_infos: BTreeSet<&str> = entries
            .iter()
            .filter_map(|(_, path, _)| path.split('/').next())
            .filter(|top| top.ends_with(".dist-info"))
            .collect();
        let dist_info = match dist_infos.into_iter().collect::<Vec<_>>().as_slice() {
            [one] => (*one).to_string(),
            [] => return Err(invalid("it has no .dist-info folder".into())),
            _ => return Err(invalid("it has more than one .dist-info folder".into())),
        };
        let dist_prefix = dist_info.trim_end_matches(".dist-info").to_string();
        let data_dir = format!("{dist_prefix}.data");

        // RECORD lists every file with its hash; the bytes must match.
        let record_path = format!("{dist_info}/RECORD");
        let record_index = *by_path
            .get(&places.key(&record_path))
            .ok_or_else(|| invalid("it has no RECORD".into()))?;
        let record_bytes = read_entry(&mut archive, record_index, limits.max_unpacked_bytes)
            .map_err(|error| invalid(format!("its RECORD: {error}")))?;
        let record = uv_install_wheel::read_record(record_bytes.as_slice())
            .map_err(|error| invalid(format!("its RECORD: {error}")))?;
        let mut recorded: BTreeMap<String, Option<String>> = BTreeMap::new();
        for line in record {
            let normalised = normalise(&line.path).map_err(|rule| hostile(&line.path, rule))?;
            recorded.insert(places.key(&normalised), line.hash);
        }
        let mut unpacked_bytes: u64 = 0;
        for (index, path, _) in &entries {
            let key = places.key(path);
            let Some(hash) = recorded.remove(&key) else {
                return Err(hostile(path, "is not listed in RECORD"));
            };
            let unsigned = key == places.key(&record_path)
                || key == places.key(&format!("{dist_info}/RECORD.jws"))
                || key == places.key(&format!("{dist_info}/RECORD.p7s"));
            let budget = limits.max_unpacked_bytes.saturating_sub(unpacked_bytes);
            let bytes = read_entry(&mut archive, *index, budget).map_err(|error| {
                if error.kind() == std::io::ErrorKind::FileTooLarge {
                    hostile(
                        path,
                        &format!(
                            "takes the wheel over {} unpacked bytes",
                            limits.max_unpacked_bytes
                        ),
                    )
                } else {
                    invalid(format!("{path}: {error}"))
                }
            })?;
            unpacked_bytes += bytes.len() as u64;
            match hash {
                Some(hash) if !hash.is_empty() => {
                    if !record_hash_matches(&hash, &bytes) {
                        return Err(hostile(path, "does not match its RECORD hash"));
                    }
                }
                _ if unsigned => {}
                _ => return Err(hostile(path, "has no hash in RECORD")),
            }
        }
        if let Some(missing) = recorded.keys().next() {
            return Err(hostile(missing, "is listed in RECORD but missing"));
        }

        // Where each file goes; entry-point scripts too.
        let mut destinations = BTreeSet::new();
        for (_, path, _) in &entries {
            let destination = destination(path, &data_dir, &filename, places)
                .map_err(|rule| hostile(path, &rule))?;
            destinations.insert(destination);
        }
        let entry_points = format!("{dist_info}/entry_points.txt");
        if let Some(index) = by_path.get(&places.key(&entry_points)) {
            let text = read_entry(&mut archive, *index, limits.max_unpacked_bytes)
                .map_err(|error| invalid(format!("{entry_points}: {error}")))?;
            for script in script_names(&String::from_utf8_lossy(&text)) {
                let name = normalise(&script)
                    .ok()
                    .filter(|name| !name.contains('/'))
                    .ok_or_else(|| hostile(&script, "is not a plain entry-point script name"))?;
                let file = if places.windows {
                    format!("{name}.exe")
                } else {
                    name
                };
                destinations.insert(format!("{}/{file}", places.scripts));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file_name,
            filename,
            dist_info,
            entries,
            destinations,
        })
    }

    /// Writes the checked entries, by their normalised names, into `dir`.
    fn unpack(&self, dir: &Path) -> Result<(), PypiError> {
        let mut archive =
            zip::ZipArchive::new(fs_err::File::open(&self.path)?).map_err(|error| {
                PypiError::InvalidWheel {
                    wheel: self.file_name.clone(),
                    message: error.to_string(),
                }
            })?;
        for (index, path, executable) in &self.entries {
            let destination = dir.join(path);
            if let Some(parent) = destination.parent() {
                fs_err::create_dir_all(parent)?;
            }
            let bytes = read_entry(&mut archive, *index, u64::MAX)?;
            let mut file = fs_err::File::create(&destination)?;
            file.write_all(&bytes)?;
            #[cfg(unix)]
            if *executable {
                use std::os::unix::fs::PermissionsExt;
                fs_err::set_permissions(&destination, std::fs::Permissions::from_mode(0o755))?;
            }
            #[cfg(not(unix))]
            let _ = executable;
        }
        Ok(())
    }

    /// What the installed RECORD lists, relative to the prefix.
    fn installed(&self, prefix: &Path, places: &Places) -> Result<InstalledWheel, PypiError> {
        let dist_info = format!("{}/{}", places.site_packages, self.dist_info);
        let record = fs_err::File::open(prefix.join(&dist_info).join("RECORD"))?;
        let lines = uv_install_wheel::read_record(record).map_err(|error| PypiError::Install {
            wheel: self.file_name.clone(),
            message: format!("reading the installed RECORD: {error}"),
        })?;
        let mut files = BTreeSet::new();
        for line in lines {
            let joined = format!("{}/{}", places.site_packages, line.path.replace('\\', "/"));
            if let Some(relative) = lexically_normal(&joined) {
                files.insert(relative);
            }
        }
        Ok(InstalledWheel {
            name: self.filename.name.to_string(),
            version: self.filename.version.to_string(),
            dist_info,
            files: files.into_iter().collect(),
        })
    }
}

/// A path inside a wheel, `/`-separated without `.` or empty parts; refused
/// when absolute, escaping (`..`), or not portable.
fn normalise(raw: &str) -> Result<String, &'static str> {
    if raw.contains('\0') {
        return Err("contains a NUL byte");
    }
    if raw.contains('\\') {
        return Err("contains a backslash (not a portable wheel path)");
    }
    if raw.starts_with('/') {
        return Err("is an absolute path");
    }
    let bytes = raw.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err("is an absolute (drive letter) path");
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("escapes the wheel with '..'"),
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err("is an empty path");
    }
    Ok(parts.join("/"))
}

/// `a/b/../c` → `a/c`; `None` when it climbs above its start.
fn lexically_normal(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// Where a (normalised) wheel path goes, relative to the prefix.
fn destination(
    path: &str,
    data_dir: &str,
    filename: &WheelFilename,
    places: &Places,
) -> Result<String, String> {
    let Some(inside) = path
        .strip_prefix(data_dir)
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        if path
            .split('/')
            .next()
            .is_some_and(|top| top.ends_with(".data"))
        {
            return Err(format!("is in a .data folder other than '{data_dir}'"));
        }
        return Ok(format!("{}/{path}", places.site_packages));
    };
    let (scheme, rest) = inside
        .split_once('/')
        .ok_or_else(|| "is a file directly in the .data folder".to_string())?;
    Ok(match scheme {
        "purelib" | "platlib" => format!("{}/{rest}", places.site_packages),
        "scripts" => {
            if rest.contains('/') {
                return Err("is in a subfolder of .data/scripts".to_string());
            }
            format!("{}/{rest}", places.scripts)
        }
        "data" => rest.to_string(),
        "headers" => format!("{}/{}/{rest}", places.include, filename.name),
        other => return Err(format!("uses the unknown .data scheme '{other}'")),
    })
}

/// `name = module:function` lines of the console and gui script groups.
fn script_names(entry_points: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_scripts = false;
    for line in entry_points.lines().map(str::trim) {
        if line.starts_with('[') {
            in_scripts = matches!(line, "[console_scripts]" | "[gui_scripts]");
        } else if in_scripts
            && !line.is_empty()
            && !line.starts_with('#')
            && !line.starts_with(';')
            && let Some((name, _)) = line.split_once('=')
        {
            names.push(name.trim().to_string());
        }
    }
    names
}

/// A RECORD hash (`sha256=<urlsafe base64, no padding>`, or sha384/sha512).
fn record_hash_matches(record_hash: &str, bytes: &[u8]) -> bool {
    let Some((algorithm, expected)) = record_hash.split_once('=') else {
        return false;
    };
    let actual = match algorithm {
        "sha256" => sha2::Sha256::digest(bytes).to_vec(),
        "sha384" => sha2::Sha384::digest(bytes).to_vec(),
        "sha512" => sha2::Sha512::digest(bytes).to_vec(),
        _ => return false,
    };
    let expected = expected.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(actual) == expected
}

/// An entry's bytes, refusing more than `limit` whatever its header claims.
fn read_entry(
    archive: &mut zip::ZipArchive<fs_err::File>,
    index: usize,
    limit: u64,
) -> std::io::Result<Vec<u8>> {
    let entry = archive.by_index(index).map_err(std::io::Error::other)?;
    let mut bytes = Vec::new();
    entry
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            "larger than the limit",
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_paths_are_normalised_or_refused() {
        assert_eq!(normalise("pkg/./a//b.py"), Ok("pkg/a/b.py".to_string()));
        assert!(normalise("../evil").is_err());
        assert!(normalise("pkg/../../evil").is_err());
        assert!(normalise("/etc/passwd").is_err());
        assert!(normalise("C:/Windows/x").is_err());
        assert!(normalise("pkg\\..\\x").is_err());
        assert!(normalise("").is_err());
        assert_eq!(
            lexically_normal("lib/site/../../bin/x"),
            Some("bin/x".to_string())
        );
        assert_eq!(lexically_normal("../x"), None);
    }

    #[test]
    fn record_hashes_are_urlsafe_base64_without_padding() {
        // sha256 of "hello\n"
        assert!(record_hash_matches(
            "sha256=WJG1tSLV3whtD_CxEPvZ0hu0_HFjrzTQgoai6Eb2vgM",
            b"hello\n"
        ));
        assert!(!record_hash_matches(
            "sha256=WJG1tSLV3whtD_CxEPvZ0hu0_HFjrzTQgoai6Eb2vgM",
            b"hello"
        ));
        assert!(!record_hash_matches("md5=x", b"hello\n"));
    }

    #[test]
    fn data_schemes_map_inside_the_prefix_only() {
        let target = crate::target::tests::python_records(
            rattler_conda_types::Subdir::Linux64,
            "3.11.9",
            "cp311",
        );
        let target = PythonTarget::from_conda(rattler_conda_types::Subdir::Linux64, &target, &[])
            .expect("a target")
            .expect("python is there");
        let places = Places::new(&target);
        let filename = WheelFilename::from_str("pkg-1.0-py3-none-any.whl").expect("a name");
        let map = |path: &str| destination(path, "pkg-1.0.data", &filename, &places);
        assert_eq!(
            map("pkg/a.py"),
            Ok("lib/python3.11/site-packages/pkg/a.py".into())
        );
        assert_eq!(
            map("pkg-1.0.data/platlib/pkg/_x.so"),
            Ok("lib/python3.11/site-packages/pkg/_x.so".into())
        );
        assert_eq!(map("pkg-1.0.data/scripts/tool"), Ok("bin/tool".into()));
        assert_eq!(
            map("pkg-1.0.data/data/share/pkg/x"),
            Ok("share/pkg/x".into())
        );
        assert_eq!(
            map("pkg-1.0.data/headers/pkg.h"),
            Ok("include/python3.11/pkg/pkg.h".into())
        );
        assert!(map("pkg-1.0.data/scripts/sub/tool").is_err());
        assert!(map("pkg-1.0.data/secrets/x").is_err());
        assert!(map("pkg-1.0.data/file").is_err());
        assert!(map("other-2.0.data/data/x").is_err());
    }

    #[test]
    fn script_names_come_from_both_groups() {
        let text =
            "[console_scripts]\ntool = pkg:main\n\n[gui_scripts]\ngui=pkg:gui\n[other]\nx = y:z\n";
        assert_eq!(script_names(text), ["tool", "gui"]);
    }
}
