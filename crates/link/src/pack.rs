//! Packed prefixes (`.tar.zst`), so a node without a shared filesystem can
//! materialise a prefix built elsewhere, at the same path.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use envstore_core::ContentHash;
use rattler_digest::{HashingReader, HashingWriter, Sha256};

use crate::error::PrefixError;
use rattler_conda_types::PrefixRecord;

use crate::conda_meta::{
    CompletionMarker, HISTORY_FILE, is_marker, read_marker, write_history, write_marker,
};

/// zstd level for packed prefixes: fast to write, still small.
const ZSTD_LEVEL: i32 = 3;

/// Packs a complete prefix (symlinks kept as symlinks) into `archive`, and
/// returns the archive's sha256. The marker (current or legacy) is left out: the unpacking side
/// writes its own, last, after it checked the contents.
pub fn pack_prefix(prefix: &Path, archive: &Path) -> Result<ContentHash, PrefixError> {
    let file = fs_err::File::create(archive).map_err(PrefixError::io("create", archive))?;
    // Held while it is written: `envstore gc` leaves a locked pack file alone.
    let _ = file.try_lock();
    // Hashed as it is written, so packing reads the prefix once.
    let hashing = HashingWriter::<_, Sha256>::new(file);
    let encoder =
        zstd::Encoder::new(hashing, ZSTD_LEVEL).map_err(PrefixError::io("compress", archive))?;
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);
    for entry in walk(prefix)? {
        let relative = entry.strip_prefix(prefix).unwrap_or(&entry);
        if is_marker(relative) || relative.as_os_str().is_empty() {
            continue;
        }
        builder
            .append_path_with_name(&entry, relative)
            .map_err(PrefixError::io("pack", &entry))?;
    }
    let encoder = builder
        .into_inner()
        .map_err(PrefixError::io("pack", archive))?;
    let mut hashing = encoder
        .finish()
        .map_err(PrefixError::io("compress", archive))?;
    hashing.flush().map_err(PrefixError::io("write", archive))?;
    let (file, sha256) = hashing.finalize();
    file.sync_all().map_err(PrefixError::io("sync", archive))?;
    Ok(ContentHash::from_bytes(sha256.into()))
}

/// Unpacks the archive read from `archive` into `prefix` as it arrives
/// (never whole in memory), hashing every byte on the way; refuses it unless
/// its sha256 is `sha256`. Then checks that its package records are exactly
/// `expected` (`name-version-build` of each package of the lock) and writes
/// the completion marker, last. On any failure the partial prefix is
/// removed, so a prefix without its marker is never left behind.
pub fn unpack_prefix(
    archive: impl Read,
    sha256: &ContentHash,
    prefix: &Path,
    marker: &CompletionMarker,
    expected: &BTreeSet<String>,
) -> Result<(), PrefixError> {
    if read_marker(prefix).is_some_and(|found| &found == marker) {
        return Ok(());
    }
    remove_dir_if_present(prefix)?;
    let result = unpack_and_check(archive, sha256, prefix, expected)
        .and_then(|()| write_missing_history(prefix, &marker.lock_hash))
        .and_then(|()| write_marker(prefix, marker));
    if result.is_err() {
        let _ = fs_err::remove_dir_all(prefix);
    }
    result
}

fn unpack_and_check(
    archive: impl Read,
    sha256: &ContentHash,
    prefix: &Path,
    expected: &BTreeSet<String>,
) -> Result<(), PrefixError> {
    fs_err::create_dir_all(prefix).map_err(PrefixError::io("create", prefix))?;
    // Hashed as it is read, so the archive's sha256 is checked in the same pass.
    let hashing = HashingReader::<_, Sha256>::new(archive);
    let decoder = zstd::Decoder::new(hashing).map_err(PrefixError::io("decompress", prefix))?;
    let mut tar = tar::Archive::new(decoder);
    tar.set_preserve_permissions(true);
    tar.set_overwrite(false);
    // `unpack` refuses entries that would land outside `prefix`.
    tar.unpack(prefix)
        .map_err(PrefixError::io("unpack into", prefix))?;
    // The tar ends before the stream does (padding, the zstd frame's end):
    // the rest is read too, so the hash covers every byte.
    let mut rest = tar.into_inner().finish();
    std::io::copy(&mut rest, &mut std::io::sink())
        .map_err(PrefixError::io("read the packed prefix for", prefix))?;
    let (_, found) = rest.into_inner().finalize();
    let found = ContentHash::from_bytes(found.into());
    if &found != sha256 {
        return Err(PrefixError::Checksum {
            prefix: prefix.to_owned(),
            expected: *sha256,
            found,
        });
    }
    // The same checks as a prefix built here: no link out, nothing special,
    // no setuid file, nothing writable for others.
    crate::validate::check_tree(prefix, crate::validate::TreeKind::Prefix).map_err(|reason| {
        PrefixError::Unsafe {
            prefix: prefix.to_owned(),
            reason,
        }
    })?;
    let found = installed_packages(prefix)?;
    if &found != expected {
        let missing: Vec<_> = expected.difference(&found).cloned().collect();
        let extra: Vec<_> = found.difference(expected).cloned().collect();
        return Err(PrefixError::Mismatch {
            prefix: prefix.to_owned(),
            missing,
            extra,
        });
    }
    Ok(())
}

/// Archives packed by releases before issue 17 have no `conda-meta/history`;
/// conda does not see a prefix as an environment without one, so it is
/// written from the package records the archive carries.
fn write_missing_history(prefix: &Path, lock_hash: &ContentHash) -> Result<(), PrefixError> {
    if prefix.join(HISTORY_FILE).is_file() {
        return Ok(());
    }
    let records: Vec<PrefixRecord> = PrefixRecord::collect_from_prefix(prefix)
        .map_err(PrefixError::io("read the package records of", prefix))?;
    let records: Vec<_> = records
        .into_iter()
        .map(|record| record.repodata_record)
        .collect();
    write_history(prefix, lock_hash, &records)
}

/// `name-version-build` of every package record in `conda-meta/`.
pub fn installed_packages(prefix: &Path) -> Result<BTreeSet<String>, PrefixError> {
    let meta = prefix.join("conda-meta");
    let mut found = BTreeSet::new();
    for entry in fs_err::read_dir(&meta).map_err(PrefixError::io("read", &meta))? {
        let entry = entry.map_err(PrefixError::io("read", &meta))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".json")
            && !is_marker(&Path::new("conda-meta").join(&name))
        {
            found.insert(stem.to_owned());
        }
    }
    Ok(found)
}

/// Every path under `root`, parents before children, without following links.
fn walk(root: &Path) -> Result<Vec<PathBuf>, PrefixError> {
    let mut paths = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(folder) = pending.pop() {
        let mut entries: Vec<_> = fs_err::read_dir(&folder)
            .map_err(PrefixError::io("read", &folder))?
            .collect::<Result<_, _>>()
            .map_err(PrefixError::io("read", &folder))?;
        entries.sort_by_key(fs_err::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(PrefixError::io("inspect", &path))?;
            paths.push(path.clone());
            if kind.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok(paths)
}

fn remove_dir_if_present(path: &Path) -> Result<(), PrefixError> {
    match fs_err::remove_dir_all(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(PrefixError::io("remove", path)(error))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::PermissionsExt;

    /// A packed prefix with the record `conda-meta/pkg-1.2.3-h0_1.json` and
    /// `extra` members, as an earlier release packed it: no history.
    fn packed(extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let record = PrefixRecord::from_repodata_record(
            crate::conda_meta::tests::record("pkg", Some("https://conda.anaconda.org/demo")),
            Vec::new(),
        );
        let meta = serde_json::to_vec(&record).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(meta.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        builder
            .append_data(&mut header, "conda-meta/pkg-1.2.3-h0_1.json", &meta[..])
            .unwrap();
        extra(&mut builder);
        let tar = builder.into_inner().unwrap();
        zstd::encode_all(tar.as_slice(), 3).unwrap()
    }

    /// Unpacks `archive` read a few bytes at a time, as a download arrives.
    fn unpack(archive: &[u8], prefix: &Path) -> Result<(), PrefixError> {
        unpack_checked(archive, &ContentHash::of(archive), prefix)
    }

    fn unpack_checked(
        archive: &[u8],
        sha256: &ContentHash,
        prefix: &Path,
    ) -> Result<(), PrefixError> {
        let marker = CompletionMarker {
            lock_hash: ContentHash::of(b"lock"),
            platform: "linux-64".into(),
            packages: 1,
        };
        unpack_prefix(
            Trickle(archive),
            sha256,
            prefix,
            &marker,
            &BTreeSet::from(["pkg-1.2.3-h0_1".to_owned()]),
        )
    }

    /// A reader that hands out at most 7 bytes per read.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let count = buf.len().min(7).min(self.0.len());
            buf[..count].copy_from_slice(&self.0[..count]);
            self.0 = &self.0[count..];
            Ok(count)
        }
    }

    #[test]
    fn an_archive_that_is_not_the_published_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("prefix");
        let archive = packed(|_| {});

        let other = ContentHash::of(b"another archive");
        let error = unpack_checked(&archive, &other, &prefix).unwrap_err();
        assert!(
            matches!(&error, PrefixError::Checksum { expected, found, .. }
                if *expected == other && *found == ContentHash::of(&archive)),
            "{error:?}"
        );
        assert!(!prefix.exists(), "no half-unpacked prefix");

        // Cut short on the way: refused, whatever step notices it.
        let cut = &archive[..archive.len() / 2];
        assert!(unpack_checked(cut, &ContentHash::of(&archive), &prefix).is_err());
        assert!(!prefix.exists());

        // A prefix left by an earlier failed attempt is replaced, not trusted.
        fs_err::create_dir_all(prefix.join("conda-meta")).unwrap();
        fs_err::write(prefix.join("stale"), b"x").unwrap();
        unpack(&archive, &prefix).unwrap();
        assert!(crate::is_complete(&prefix));
        assert!(!prefix.join("stale").exists());
    }

    #[test]
    fn a_packed_prefix_gets_the_checks_of_a_built_one() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("prefix");
        unpack(&packed(|_| {}), &prefix).unwrap();
        assert!(crate::is_complete(&prefix));
        let history = fs_err::read_to_string(prefix.join(HISTORY_FILE)).unwrap();
        assert!(
            history.ends_with("\n+demo/linux-64::pkg-1.2.3-h0_1\n"),
            "{history}"
        );
        let record_mode = fs_err::metadata(prefix.join("conda-meta/pkg-1.2.3-h0_1.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(record_mode & 0o777, 0o644, "readable by everyone");
        fs_err::remove_dir_all(&prefix).unwrap();

        let escaping = packed(|builder| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            builder
                .append_link(&mut header, "lib/out", "../../../../etc/passwd")
                .unwrap();
        });
        let error = unpack(&escaping, &prefix).unwrap_err();
        assert!(
            matches!(
                &error,
                PrefixError::Unsafe {
                    reason: crate::Rejection::EscapingLink { .. },
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(!prefix.exists(), "no half-unpacked prefix");

        let setuid = packed(|builder| {
            let mut header = tar::Header::new_gnu();
            header.set_size(2);
            header.set_mode(0o4755);
            header.set_cksum();
            builder
                .append_data(&mut header, "bin/su", &b"#!"[..])
                .unwrap();
        });
        let error = unpack(&setuid, &prefix).unwrap_err();
        assert!(
            matches!(
                &error,
                PrefixError::Unsafe {
                    reason: crate::Rejection::Setuid(_),
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(!prefix.exists());
    }
}
