//! Jupyter kernelspecs for the environments a server lists at
//! `/api/v1/kernels`, so students pick environments in Jupyter and never
//! build them. Only kernelspecs this module wrote are ever replaced or
//! removed: they are named `envstore-…` and carry `metadata.envstore`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

pub use envstore_api_types::Kernel;

/// The start of every kernelspec id the server hands out.
pub const ID_PREFIX: &str = "envstore-";

#[derive(Debug, thiserror::Error)]
pub enum KernelspecError {
    /// The id becomes a directory name: anything but Jupyter's own alphabet
    /// could escape the kernels folder.
    #[error("the server sent the kernel id '{0}', which is not a safe kernelspec name")]
    UnsafeId(String),
    /// File IO, its error naming the path (`fs_err`).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What writing a kernelspec did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Updated,
    Unchanged,
}

/// Checks that an id is a kernelspec name Jupyter accepts and that we own.
pub fn check_id(id: &str) -> Result<(), KernelspecError> {
    let safe = id.len() > ID_PREFIX.len()
        && id.len() <= 255
        && id.starts_with(ID_PREFIX)
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if safe {
        Ok(())
    } else {
        Err(KernelspecError::UnsafeId(id.escape_debug().to_string()))
    }
}

/// The `kernel.json` of `kernel`, run from the environment at `prefix`.
pub fn kernelspec(kernel: &Kernel, prefix: &Path) -> Value {
    let mut spec = json!({
        "argv": [
            prefix.join("bin").join("python").display().to_string(),
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
        ],
        "display_name": kernel.display_name,
        "language": kernel.language,
        "metadata": {
            "envstore": {
                "namespace": kernel.namespace,
                "environment": kernel.environment,
                "lock_hash": kernel.lock_hash,
            }
        }
    });
    // Jupyter starts a kernel without `conda activate`: the kernelspec sets
    // the environment's variables itself.
    if !kernel.env.is_empty() {
        spec["env"] = json!(kernel.env);
    }
    spec
}

/// Writes `<kernels_dir>/<id>/kernel.json` through a temporary file renamed
/// over it, so Jupyter never reads half a file.
pub fn write_kernelspec(
    kernels_dir: &Path,
    id: &str,
    spec: &Value,
) -> Result<Change, KernelspecError> {
    check_id(id)?;
    let dir = kernels_dir.join(id);
    let path = dir.join("kernel.json");
    let mut text = serde_json::to_string_pretty(spec).unwrap_or_else(|_| spec.to_string());
    text.push('\n');
    let change = match fs_err::read(&path) {
        Ok(existing) if existing == text.as_bytes() => return Ok(Change::Unchanged),
        Ok(_) => Change::Updated,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Change::Added,
        Err(error) => return Err(error.into()),
    };
    fs_err::create_dir_all(&dir)?;
    let temporary = dir.join(format!(".kernel.json.{}.tmp", std::process::id()));
    let written = fs_err::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| fs_err::rename(&temporary, &path));
    if written.is_err() {
        let _ = fs_err::remove_file(&temporary);
    }
    Ok(written.map(|()| change)?)
}

/// Kernelspec directories under `kernels_dir` that this module wrote (an
/// `envstore-` name and `metadata.envstore` in their kernel.json) and whose
/// id is not in `keep`. Anything else there is left alone.
pub fn stale_kernelspecs(
    kernels_dir: &Path,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, KernelspecError> {
    let entries = match fs_err::read_dir(kernels_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let mut stale = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if check_id(&id).is_err() || keep.contains(&id) || !written_by_envstore(&entry.path()) {
            continue;
        }
        stale.push(id);
    }
    stale.sort();
    Ok(stale)
}

fn written_by_envstore(dir: &Path) -> bool {
    fs_err::read(dir.join("kernel.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|spec| spec["metadata"]["envstore"].is_object())
}

/// Removes a kernelspec directory: renamed aside first, so Jupyter sees it
/// whole or not at all.
pub fn remove_kernelspec(kernels_dir: &Path, id: &str) -> Result<(), KernelspecError> {
    check_id(id)?;
    let dir = kernels_dir.join(id);
    let aside = kernels_dir.join(format!(".{id}.{}.removing", std::process::id()));
    fs_err::rename(&dir, &aside)?;
    Ok(fs_err::remove_dir_all(&aside)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(id: &str) -> Kernel {
        Kernel {
            id: id.to_owned(),
            display_name: "team/env".to_owned(),
            namespace: "team".to_owned(),
            environment: "env".to_owned(),
            build_id: "b".to_owned(),
            lock_hash: "abc".to_owned(),
            prefix: "/srv/envs/team/env".to_owned(),
            language: "python".to_owned(),
            env: Default::default(),
        }
    }

    #[test]
    fn a_kernel_sets_the_variables_activation_would() {
        let plain = kernelspec(&kernel("envstore-a"), Path::new("/p"));
        assert!(plain.get("env").is_none(), "{plain}");
        let varied = Kernel {
            env: [("MODE".to_owned(), "fast".to_owned())].into(),
            ..kernel("envstore-a")
        };
        let spec = kernelspec(&varied, Path::new("/p"));
        assert_eq!(spec["env"], json!({ "MODE": "fast" }));
        assert_eq!(spec["argv"][0], "/p/bin/python");
    }

    #[test]
    fn ids_must_be_ours_and_safe() {
        assert!(check_id("envstore-team-env-0a1b2c3d").is_ok());
        for bad in [
            "envstore-",
            "other",
            "envstore-../x",
            "envstore-a/b",
            "envstore-Team",
            "envstore-a b",
        ] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_once_updates_on_change_and_removes_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let kernels = dir.path();
        let spec = kernelspec(&kernel("envstore-a"), Path::new("/p"));
        assert_eq!(
            write_kernelspec(kernels, "envstore-a", &spec).unwrap(),
            Change::Added
        );
        assert_eq!(
            write_kernelspec(kernels, "envstore-a", &spec).unwrap(),
            Change::Unchanged
        );
        let other = kernelspec(&kernel("envstore-a"), Path::new("/q"));
        assert_eq!(
            write_kernelspec(kernels, "envstore-a", &other).unwrap(),
            Change::Updated
        );
        assert!(write_kernelspec(kernels, "../escape", &spec).is_err());

        // Foreign kernelspecs: another name, or ours by name but not by content.
        fs_err::create_dir_all(kernels.join("python3")).unwrap();
        fs_err::write(
            kernels.join("python3/kernel.json"),
            "{\"metadata\": {\"envstore\": {}}}",
        )
        .unwrap();
        fs_err::create_dir_all(kernels.join("envstore-handmade")).unwrap();
        fs_err::write(
            kernels.join("envstore-handmade/kernel.json"),
            "{\"argv\": []}",
        )
        .unwrap();

        let none = BTreeSet::new();
        assert_eq!(
            stale_kernelspecs(kernels, &none).unwrap(),
            vec!["envstore-a".to_owned()]
        );
        let keep = BTreeSet::from(["envstore-a".to_owned()]);
        assert!(stale_kernelspecs(kernels, &keep).unwrap().is_empty());
        remove_kernelspec(kernels, "envstore-a").unwrap();
        assert!(!kernels.join("envstore-a").exists());
        assert!(kernels.join("python3/kernel.json").exists());
        assert!(kernels.join("envstore-handmade/kernel.json").exists());
        assert!(
            stale_kernelspecs(&kernels.join("missing"), &none)
                .unwrap()
                .is_empty()
        );
    }
}
