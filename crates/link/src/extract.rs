//! Extracting a package archive member by member, each checked before it is
//! written: its path stays inside, it is a file, folder or link (nothing
//! special), no link leads out, nothing is written through a link, and the
//! running totals stay under the [`PackageLimits`], so a bomb stops before
//! it fills the disk. Mode bits that no prefix may hold are dropped.
//!
//! Each file is hashed as it is written, so validating the package against
//! its `paths.json` reads no file back (see [`Extracted::file_digests`]).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

use fs_err::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rattler_digest::{HashingWriter, Sha256, Sha256Hash};
use tar::EntryType;

use crate::limits::PackageLimits;
use crate::validate::{DROPPED_MODE_BITS, Rejection, is_plain_relative, link_stays_inside};

/// The two archive formats of conda packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArchiveKind {
    TarBz2,
    Conda,
}

impl ArchiveKind {
    pub fn of(file_name: &str) -> Option<Self> {
        if file_name.ends_with(".conda") {
            Some(Self::Conda)
        } else if file_name.ends_with(".tar.bz2") {
            Some(Self::TarBz2)
        } else {
            None
        }
    }
}

/// What extraction wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Extracted {
    pub bytes: u64,
    pub members: u64,
    /// The sha256 of every regular file written, by its path in the
    /// package, computed from the bytes as they were written. Each path is
    /// written once (`create_new`), never through a link, and nothing else
    /// writes the folder while the gate holds the entry, so these are the
    /// files' contents: validation compares them with `paths.json` without
    /// reading 30,000 files back.
    pub file_digests: HashMap<PathBuf, Sha256Hash>,
}

/// Extracts `archive` (a file of `kind`) into `dest`, which must exist and be
/// empty.
pub(crate) fn extract_checked(
    archive: &Path,
    kind: ArchiveKind,
    dest: &Path,
    limits: &PackageLimits,
) -> Result<Extracted, Rejection> {
    let corrupt = |error: &dyn std::fmt::Display| Rejection::Corrupt(error.to_string());
    let archive_bytes = fs_err::metadata(archive).map_err(|e| corrupt(&e))?.len();
    if archive_bytes > limits.max_extracted_bytes {
        return Err(Rejection::ArchiveTooLarge {
            limit: limits.max_extracted_bytes,
        });
    }
    let mut writer = Writer {
        dest,
        limits,
        archive_bytes: archive_bytes.max(1),
        totals: Extracted::default(),
        links: HashSet::new(),
    };
    let open = || fs_err::File::open(archive).map_err(|e| corrupt(&e));
    match kind {
        ArchiveKind::TarBz2 => {
            let mut tar =
                rattler_package_streaming::read::stream_tar_bz2(std::io::BufReader::new(open()?));
            writer.unpack(&mut tar)?;
        }
        ArchiveKind::Conda => {
            let mut info = rattler_package_streaming::seek::stream_conda_info(open()?)
                .map_err(|e| corrupt(&e))?;
            writer.unpack(&mut info)?;
            let mut content = rattler_package_streaming::seek::stream_conda_content(open()?)
                .map_err(|e| corrupt(&e))?;
            writer.unpack(&mut content)?;
        }
    }
    Ok(writer.totals)
}

struct Writer<'a> {
    dest: &'a Path,
    limits: &'a PackageLimits,
    archive_bytes: u64,
    totals: Extracted,
    /// Symlinks written so far: nothing may be written through them.
    links: HashSet<PathBuf>,
}

impl Writer<'_> {
    fn unpack<R: Read>(&mut self, tar: &mut tar::Archive<R>) -> Result<(), Rejection> {
        let corrupt = |error: std::io::Error| Rejection::Corrupt(error.to_string());
        for entry in tar.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let path = entry.path().map_err(corrupt)?.into_owned();
            let shown = path.display().to_string();
            let kind = entry.header().entry_type();
            if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
                continue;
            }
            // `./` prefixes are how some tools write members; nothing else.
            let path: PathBuf = path
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            if path.as_os_str().is_empty() && kind == EntryType::Directory {
                continue;
            }
            if !is_plain_relative(&path) {
                return Err(Rejection::EscapingPath(shown));
            }
            self.count_member()?;
            self.refuse_through_link(&path)?;
            let target = self.dest.join(&path);
            let mode = entry.header().mode().unwrap_or(0o644) & 0o777 & !DROPPED_MODE_BITS;
            match kind {
                EntryType::Regular | EntryType::Continuous => {
                    let size = entry.header().size().map_err(corrupt)?;
                    self.count_bytes(size)?;
                    let file = self.create_file(&path, &target, mode)?;
                    let mut file = HashingWriter::<_, Sha256>::new(file);
                    // The header's size bounds what the entry yields.
                    let copied =
                        std::io::copy(&mut (&mut entry).take(size), &mut file).map_err(corrupt)?;
                    if copied != size {
                        return Err(Rejection::Corrupt(format!("{shown}: cut short")));
                    }
                    file.flush().map_err(corrupt)?;
                    let (_, digest) = file.finalize();
                    self.totals.file_digests.insert(path, digest);
                }
                EntryType::Directory => {
                    match fs_err::symlink_metadata(&target) {
                        Ok(meta) if meta.is_dir() => {}
                        Ok(_) => return Err(Rejection::Duplicate(shown)),
                        Err(_) => {
                            self.create_parents(&path)?;
                            fs_err::create_dir(&target).map_err(corrupt)?;
                        }
                    }
                    fs_err::set_permissions(&target, std::fs::Permissions::from_mode(mode | 0o700))
                        .map_err(corrupt)?;
                }
                EntryType::Symlink => {
                    let link = link_target(&entry, &shown)?;
                    if !link_stays_inside(&path, &link) {
                        return Err(Rejection::EscapingLink {
                            path: shown,
                            target: link.display().to_string(),
                        });
                    }
                    self.create_parents(&path)?;
                    std::os::unix::fs::symlink(&link, &target)
                        .map_err(|error| self.exists_or(&path, error))?;
                    self.links.insert(path);
                }
                EntryType::Link => {
                    let link = link_target(&entry, &shown)?;
                    let link: PathBuf = link
                        .components()
                        .filter(|c| !matches!(c, std::path::Component::CurDir))
                        .collect();
                    let Some(digest) = self.totals.file_digests.get(&link).copied() else {
                        return Err(Rejection::BadHardLink {
                            path: shown,
                            target: link.display().to_string(),
                        });
                    };
                    let size = fs_err::symlink_metadata(self.dest.join(&link))
                        .map_err(corrupt)?
                        .len();
                    self.count_bytes(size)?;
                    // A copy, not a link: the two names must not share an inode
                    // a later prefix replacement could write through.
                    let mut source = fs_err::File::open(self.dest.join(&link)).map_err(corrupt)?;
                    let mut file = self.create_file(&path, &target, mode)?;
                    std::io::copy(&mut (&mut source).take(size), &mut file).map_err(corrupt)?;
                    // The same bytes as the file it copies.
                    self.totals.file_digests.insert(path, digest);
                }
                EntryType::Char | EntryType::Block | EntryType::Fifo => {
                    return Err(Rejection::SpecialFile(shown));
                }
                _ => {
                    return Err(Rejection::Corrupt(format!(
                        "{shown}: tar member type {kind:?} is not allowed in a package"
                    )));
                }
            }
        }
        Ok(())
    }

    fn count_member(&mut self) -> Result<(), Rejection> {
        self.totals.members += 1;
        if self.totals.members > self.limits.max_files {
            return Err(Rejection::TooManyFiles {
                limit: self.limits.max_files,
            });
        }
        Ok(())
    }

    /// Counts `size` more bytes before they are written.
    fn count_bytes(&mut self, size: u64) -> Result<(), Rejection> {
        let total = self.totals.bytes.saturating_add(size);
        if total > self.limits.max_extracted_bytes {
            return Err(Rejection::TooLarge {
                limit: self.limits.max_extracted_bytes,
            });
        }
        if total > self.limits.ratio_grace_bytes
            && total / self.archive_bytes >= self.limits.max_compression_ratio
        {
            return Err(Rejection::Bomb {
                limit: self.limits.max_compression_ratio,
                extracted: total,
                archive: self.archive_bytes,
            });
        }
        self.totals.bytes = total;
        Ok(())
    }

    /// No member may be written through a link written before it.
    fn refuse_through_link(&self, path: &Path) -> Result<(), Rejection> {
        for ancestor in path
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
        {
            if self.links.contains(ancestor) {
                return Err(Rejection::ThroughLink {
                    path: path.display().to_string(),
                    link: ancestor.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Creates the missing folders above `path` (none of them is a link:
    /// [`Self::refuse_through_link`] ran first).
    fn create_parents(&self, path: &Path) -> Result<(), Rejection> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let folder = self.dest.join(parent);
            fs_err::create_dir_all(&folder)
                .map_err(|error| Rejection::Corrupt(format!("{}: {error}", parent.display())))?;
        }
        Ok(())
    }

    /// Creates the member's file with `mode`, its folders first. `create_new`
    /// (O_EXCL) never follows a link at the path itself, and a second member
    /// of the same name is a duplicate.
    fn create_file(
        &self,
        path: &Path,
        target: &Path,
        mode: u32,
    ) -> Result<std::fs::File, Rejection> {
        self.create_parents(path)?;
        fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(target)
            .map(fs_err::File::into_file)
            .map_err(|error| self.exists_or(path, error))
    }

    fn exists_or(&self, path: &Path, error: std::io::Error) -> Rejection {
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            Rejection::Duplicate(path.display().to_string())
        } else {
            Rejection::Corrupt(format!("{}: {error}", path.display()))
        }
    }
}

/// The target a symlink or hard link member names.
fn link_target<R: std::io::Read>(
    entry: &tar::Entry<'_, R>,
    shown: &str,
) -> Result<PathBuf, Rejection> {
    entry
        .link_name()
        .map_err(|error| Rejection::Corrupt(error.to_string()))?
        .map(std::borrow::Cow::into_owned)
        .ok_or_else(|| Rejection::Corrupt(format!("{shown}: a link without a target")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.tar.bz2` of `entries` (path, contents or a hard link's target,
    /// kind) written with the tar crate.
    fn tar_bz2(entries: &[(&str, &[u8], EntryType)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data, kind) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            match kind {
                EntryType::Regular => {
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, *data).unwrap();
                }
                _ => {
                    header.set_size(0);
                    let target = std::str::from_utf8(data).unwrap();
                    builder.append_link(&mut header, path, target).unwrap();
                }
            }
        }
        let tar = builder.into_inner().unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar).unwrap();
        bz.finish().unwrap()
    }

    #[test]
    fn every_written_file_is_hashed_as_it_is_written_hard_link_copies_too() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("p-1-0.tar.bz2");
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fs_err::write(
            &archive,
            tar_bz2(&[
                ("a.txt", b"hello\n", EntryType::Regular),
                ("lib/big.bin", &big, EntryType::Regular),
                ("lib/empty", b"", EntryType::Regular),
                ("c.txt", b"a.txt", EntryType::Link),
                ("lib/link", b"big.bin", EntryType::Symlink),
            ]),
        )
        .unwrap();
        let dest = dir.path().join("out");
        fs_err::create_dir(&dest).unwrap();
        let extracted = extract_checked(
            &archive,
            ArchiveKind::TarBz2,
            &dest,
            &PackageLimits::default(),
        )
        .unwrap();
        let mut hashed: Vec<&Path> = extracted
            .file_digests
            .keys()
            .map(PathBuf::as_path)
            .collect();
        hashed.sort();
        assert_eq!(
            hashed,
            ["a.txt", "c.txt", "lib/big.bin", "lib/empty"].map(Path::new)
        );
        for (path, digest) in &extracted.file_digests {
            let on_disk = rattler_digest::compute_file_digest::<Sha256>(dest.join(path)).unwrap();
            assert_eq!(*digest, on_disk, "{}", path.display());
        }
    }
}
