//! Named volumes on disk, laid out as podman's `local` driver: `<root>/volumes/<name>/_data`.
//!
//! A volume directory appears and disappears by one rename (made in a staging directory
//! whose name starts with `.`, which no volume name can), so a crash leaves the whole
//! directory or none of it; staging leftovers are swept at start-up. Imports go through the
//! hostile-safe layer unpacker into a staging directory first, so a refused archive writes
//! nothing into the volume, let alone outside it.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::unpack::{unpack_layer, UnpackError, UnpackLimits};

/// The directory inside a volume that containers see.
const DATA: &str = "_data";

/// A volume as stored in the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// Microseconds since the epoch.
    pub created_at: u64,
    pub labels: BTreeMap<String, String>,
    /// Made for one container (an image's declared volume, or `Source` ""); goes with it.
    pub anonymous: bool,
    /// Not yet used by a container: the first one fills it from its image (podman's
    /// `NeedsCopyUp`).
    #[serde(default)]
    pub needs_copy_up: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {0:?} already exists")]
    Exists(String),
    #[error("the archive is refused: {0}")]
    Refused(String),
    #[error("volume {name}: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
}

/// Where volumes live.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
}

fn staging_name(kind: &str, name: &str) -> String {
    let suffix: u64 = rand::random();
    format!(".{kind}-{name}-{suffix:016x}")
}

/// Makes a rename durable before the database records what it did.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl VolumeStore {
    /// The store under `dir` (`<root>/volumes`), created if missing.
    pub fn open(dir: &Path) -> std::io::Result<VolumeStore> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(VolumeStore {
            dir: dir.to_path_buf(),
        })
    }

    /// `<root>/volumes/<name>`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `<root>/volumes/<name>/_data`: the mountpoint.
    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.join(name).join(DATA)
    }

    /// Makes the volume's directory whole, in one rename. `Exists` if there is one already.
    pub fn create(&self, name: &str) -> Result<PathBuf, VolumeError> {
        let io = |source| VolumeError::Io {
            name: name.to_string(),
            source,
        };
        let staging = self.dir.join(staging_name("create", name));
        std::fs::create_dir(&staging).map_err(io)?;
        let made = (|| {
            std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))?;
            let data = staging.join(DATA);
            std::fs::create_dir(&data)?;
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))?;
            sync_dir(&staging)
        })();
        if let Err(error) = made {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(io(error));
        }
        let renamed = nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &staging,
            nix::fcntl::AT_FDCWD,
            &self.path(name),
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        );
        match renamed {
            Ok(()) => {}
            Err(nix::errno::Errno::EEXIST) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(VolumeError::Exists(name.to_string()));
            }
            Err(errno) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(io(std::io::Error::from(errno)));
            }
        }
        sync_dir(&self.dir).map_err(io)?;
        Ok(self.data(name))
    }

    /// Takes the volume's directory out of sight in one rename (durable when this returns);
    /// the returned staging path is deleted with [`VolumeStore::discard`]. `None` when there
    /// was no directory.
    pub fn detach(&self, name: &str) -> Result<Option<PathBuf>, VolumeError> {
        let io = |source| VolumeError::Io {
            name: name.to_string(),
            source,
        };
        let staging = self.dir.join(staging_name("remove", name));
        match std::fs::rename(self.path(name), &staging) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io(error)),
        }
        sync_dir(&self.dir).map_err(io)?;
        Ok(Some(staging))
    }

    /// Deletes a directory [`VolumeStore::detach`] set aside.
    pub fn discard(&self, staging: &Path) -> std::io::Result<()> {
        std::fs::remove_dir_all(staging)
    }

    /// Names of the volume directories on disk (staging leftovers are not volumes).
    pub fn on_disk(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.file_type()?.is_dir() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes what an interrupted create, remove or import left: top-level staging
    /// directories and unfinished imports inside each volume.
    pub fn sweep_staging(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                remove_any(&entry.path())?;
            } else if entry.file_type()?.is_dir() {
                for inner in std::fs::read_dir(entry.path())? {
                    let inner = inner?;
                    if inner.file_name().to_string_lossy().starts_with(".import-") {
                        remove_any(&inner.path())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the volume holds nothing.
    pub fn is_empty(&self, name: &str) -> std::io::Result<bool> {
        Ok(std::fs::read_dir(self.data(name))?.next().is_none())
    }

    /// Replaces the volume's content with the tar stream `reader`. The archive is unpacked
    /// into a staging directory by the image unpacker (no `..`, no absolute names, nothing
    /// written through a symlink, no device nodes); only a clean archive replaces the
    /// content, entry by entry (the `_data` directory itself stays, so running containers
    /// that mount it see the new content).
    pub fn import(&self, name: &str, reader: impl Read) -> Result<(), VolumeError> {
        let io = |source| VolumeError::Io {
            name: name.to_string(),
            source,
        };
        let staging = self.path(name).join(staging_name("import", name));
        std::fs::create_dir(&staging).map_err(io)?;
        let limits = UnpackLimits {
            allow_devices: false,
            allow_setuid: false,
            ..UnpackLimits::default()
        };
        let unpacked = unpack_layer(reader, &staging, limits)
            .map_err(|error| match error {
                UnpackError::Io { .. } => io(std::io::Error::other(error)),
                refused => VolumeError::Refused(refused.to_string()),
            })
            .and_then(|_| match find_device(&staging).map_err(io)? {
                // OCI whiteouts become 0:0 character devices in a layer; a volume has no
                // lower layer to hide, so an archive with one is refused too.
                Some(device) => Err(VolumeError::Refused(format!(
                    "entry {device:?} is a device node or a whiteout"
                ))),
                None => Ok(()),
            });
        if let Err(error) = unpacked {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
        let data = self.data(name);
        let replaced = (|| {
            for entry in std::fs::read_dir(&data)? {
                remove_any(&entry?.path())?;
            }
            for entry in std::fs::read_dir(&staging)? {
                let entry = entry?;
                std::fs::rename(entry.path(), data.join(entry.file_name()))?;
            }
            std::fs::remove_dir(&staging)
        })();
        if let Err(error) = replaced {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(io(error));
        }
        Ok(())
    }
}

/// The first character or block device under `dir` (relative path), never following links.
fn find_device(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(dir.join(&relative))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = relative.join(entry.file_name());
            if kind.is_char_device() || kind.is_block_device() {
                return Ok(Some(path));
            }
            if kind.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok(None)
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Owner and mode of `meta`, set on `path` without following a symlink (chown first: it
/// clears setuid bits that chmod then restores).
fn copy_owner_and_mode(meta: &std::fs::Metadata, path: &Path) -> std::io::Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(nix::unistd::Uid::from_raw(meta.uid())),
        Some(nix::unistd::Gid::from_raw(meta.gid())),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(std::io::Error::from)?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

/// Podman's copy-up: fills `destination` (an empty volume) with the tree at `source` (a
/// directory of the container's root filesystem), keeping owners and modes. Symlinks are
/// copied as links and never followed; hard links become separate files.
pub fn copy_up(source: &Path, destination: &Path) -> std::io::Result<()> {
    let top = match std::fs::symlink_metadata(source) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if !top.is_dir() {
        return Ok(());
    }
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(source.join(&relative))? {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            let from = source.join(&path);
            let to = destination.join(&path);
            let meta = std::fs::symlink_metadata(&from)?;
            let kind = meta.file_type();
            if kind.is_dir() {
                std::fs::create_dir(&to)?;
                pending.push(path);
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            } else if kind.is_file() {
                let mut input = std::fs::File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&from)?;
                let mut output = std::fs::File::options()
                    .write(true)
                    .create_new(true)
                    .open(&to)?;
                std::io::copy(&mut input, &mut output)?;
            } else {
                nix::sys::stat::mknod(
                    &to,
                    nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT),
                    nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777),
                    meta.rdev(),
                )
                .map_err(std::io::Error::from)?;
            }
            copy_owner_and_mode(&meta, &to)?;
        }
    }
    copy_owner_and_mode(&top, destination)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, VolumeStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(&dir.path().join("volumes")).unwrap();
        (dir, store)
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            builder.append_data(&mut header, name, *bytes).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn a_volume_is_created_whole_and_only_once() {
        let (_dir, store) = store();
        let data = store.create("db").unwrap();
        assert!(data.is_dir());
        assert!(matches!(store.create("db"), Err(VolumeError::Exists(_))));
        assert_eq!(store.on_disk().unwrap(), vec!["db".to_string()]);
    }

    #[test]
    fn a_detached_volume_is_gone_from_the_listing_at_once() {
        let (_dir, store) = store();
        store.create("db").unwrap();
        let staging = store.detach("db").unwrap().unwrap();
        assert!(store.on_disk().unwrap().is_empty());
        store.sweep_staging().unwrap();
        assert!(!staging.exists());
        assert!(store.detach("db").unwrap().is_none());
    }

    #[test]
    fn an_import_replaces_the_content() {
        let (_dir, store) = store();
        store.create("v").unwrap();
        std::fs::write(store.data("v").join("old"), b"x").unwrap();
        store
            .import("v", &tar_of(&[("a/b", b"hello")])[..])
            .unwrap();
        assert!(!store.data("v").join("old").exists());
        assert_eq!(
            std::fs::read(store.data("v").join("a/b")).unwrap(),
            b"hello"
        );
        let leftovers: Vec<_> = std::fs::read_dir(store.path("v")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only _data is left");
    }

    #[test]
    fn a_whiteout_in_an_import_is_refused_and_changes_nothing() {
        let (_dir, store) = store();
        store.create("v").unwrap();
        std::fs::write(store.data("v").join("keep"), b"x").unwrap();
        let error = store
            .import("v", &tar_of(&[("dir/.wh.keep", b"")])[..])
            .unwrap_err();
        assert!(matches!(error, VolumeError::Refused(_)), "{error}");
        assert!(store.data("v").join("keep").exists());
    }

    #[test]
    fn copy_up_keeps_owners_modes_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        std::fs::create_dir_all(source.join("sub")).unwrap();
        std::fs::write(source.join("sub/file"), b"data").unwrap();
        std::fs::set_permissions(
            source.join("sub/file"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", source.join("link")).unwrap();
        let destination = dir.path().join("dst");
        std::fs::create_dir(&destination).unwrap();
        copy_up(&source, &destination).unwrap();
        let meta = std::fs::metadata(destination.join("sub/file")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(
            std::fs::read(destination.join("sub/file")).unwrap(),
            b"data"
        );
        assert_eq!(
            std::fs::read_link(destination.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
    }
}
