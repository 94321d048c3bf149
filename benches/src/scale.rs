//! Synthetic channels for the scale benchmark: real repodata with every
//! record repeated under newer versions (`1.2.3` → `1.2.3.1`, `1.2.3.2`, …),
//! so a channel of a million records keeps the real dependency structure.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Map, Value};

/// Writes `factor` copies of each record of `channels` (directories under
/// `root`) into `out/<channel>/<subdir>/repodata.json`; returns the number of
/// records written. Reuses a channel written before with the same factor.
pub fn write_synthetic_channels(
    root: &Path,
    channels: &[String],
    factor: usize,
    out: &Path,
) -> anyhow::Result<usize> {
    let done = out.join(format!(".complete-x{factor}"));
    if let Ok(count) = fs_err::read_to_string(&done)
        && let Ok(count) = count.trim().parse()
    {
        return Ok(count);
    }
    let mut written = 0;
    for channel in channels {
        for entry in fs_err::read_dir(root.join(channel))? {
            let subdir_dir = entry?.path();
            let source = subdir_dir.join("repodata.json");
            if !source.is_file() {
                continue;
            }
            let subdir = subdir_dir.file_name().context("a subdir name")?;
            let target: PathBuf = out.join(channel).join(subdir);
            fs_err::create_dir_all(&target)?;
            let repodata: Value = serde_json::from_slice(&fs_err::read(&source)?)
                .with_context(|| format!("reading {}", source.display()))?;
            let mut scaled = Map::new();
            scaled.insert(
                "info".to_owned(),
                repodata.get("info").cloned().unwrap_or(Value::Null),
            );
            scaled.insert("repodata_version".to_owned(), Value::from(1));
            for key in ["packages", "packages.conda"] {
                let mut records = Map::new();
                for (filename, record) in repodata[key].as_object().into_iter().flatten() {
                    records.insert(filename.clone(), record.clone());
                    for copy in 1..factor {
                        if let Some((filename, record)) = newer_copy(filename, record, copy) {
                            records.insert(filename, record);
                        }
                    }
                }
                written += records.len();
                scaled.insert(key.to_owned(), Value::Object(records));
            }
            fs_err::write(
                target.join("repodata.json"),
                serde_json::to_vec(&Value::Object(scaled))?,
            )?;
        }
    }
    fs_err::write(&done, written.to_string())?;
    Ok(written)
}

fn newer_copy(filename: &str, record: &Value, copy: usize) -> Option<(String, Value)> {
    let name = record["name"].as_str()?;
    let version = record["version"].as_str()?;
    let build = record["build"].as_str()?;
    let extension = if filename.ends_with(".conda") {
        ".conda"
    } else {
        ".tar.bz2"
    };
    let new_version = format!("{version}.{copy}");
    let mut record = record.clone();
    record["version"] = Value::from(new_version.clone());
    Some((format!("{name}-{new_version}-{build}{extension}"), record))
}

/// The peak resident memory of this process so far (Linux's `VmHWM`), in MiB.
pub fn peak_memory_mib() -> Option<f64> {
    let status = fs_err::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_newer_versions_with_their_own_file_names() {
        let record = serde_json::json!({"name": "numpy", "version": "1.15.2", "build": "py36_0", "depends": ["python 3.6.*"]});
        let (filename, copy) = newer_copy("numpy-1.15.2-py36_0.tar.bz2", &record, 3).unwrap();
        assert_eq!(filename, "numpy-1.15.2.3-py36_0.tar.bz2");
        assert_eq!(copy["version"], "1.15.2.3");
        assert_eq!(copy["depends"], record["depends"]);
    }
}
