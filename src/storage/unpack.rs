//! Unpacking one image layer (a tar stream) into a directory, treating every entry as
//! hostile: nothing is ever written outside the directory, no write goes through a symlink,
//! hard links stay inside the layer, device nodes and setuid bits only where allowed, and the
//! whole layer is bounded in size. OCI whiteouts become overlayfs whiteouts.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// OCI whiteout prefix and the opaque-directory marker (image-spec layer.md).
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What a layer may contain.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Bytes of uncompressed tar stream accepted in all.
    pub max_bytes: u64,
    /// Character and block devices (never from an unprivileged import).
    pub allow_devices: bool,
    /// setuid/setgid bits (cleared otherwise).
    pub allow_setuid: bool,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 64 << 30,
            allow_devices: false,
            allow_setuid: true,
        }
    }
}

/// A layer unpacked: its diff id (sha256 of the uncompressed tar) and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub diff_id: String,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry {0:?} leaves the layer (absolute path or '..')")]
    Escapes(String),
    #[error("entry {entry:?} would be written through the symlink {link:?}")]
    ThroughSymlink { entry: String, link: String },
    #[error("hard link {entry:?} points outside the layer or at nothing ({target:?})")]
    BadHardLink { entry: String, target: String },
    #[error("entry {0:?} is a device node, which this import may not create")]
    Device(String),
    #[error("layer is larger than the {0} bytes allowed")]
    TooLarge(u64),
    #[error("layer is not a valid tar stream: {0}")]
    Corrupt(String),
    #[error("unpacking {entry:?}: {source}")]
    Io {
        entry: String,
        source: std::io::Error,
    },
}

/// Counts and hashes what passes through, and stops at a size limit.
struct Metered<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    limit: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.bytes += read as u64;
        if self.bytes > self.limit {
            return Err(std::io::Error::other(UnpackError::TooLarge(self.limit)));
        }
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

/// The path of an entry as components beneath the layer root; refuses `..` and absolute
/// names rather than clamping them, since no honest layer has them.
fn relative_path(name: &Path) -> Result<PathBuf, UnpackError> {
    let mut clean = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Escapes(name.display().to_string()))
            }
        }
    }
    Ok(clean)
}

/// Makes sure every existing ancestor of `relative` under `root` is a real directory
/// (creating missing ones), so that nothing is written through a symlink.
fn prepare_parent(root: &Path, relative: &Path) -> Result<(), UnpackError> {
    let entry = relative.display().to_string();
    let mut current = root.to_path_buf();
    let parents: Vec<&OsStr> = relative
        .parent()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    for part in parents {
        current.push(part);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(UnpackError::ThroughSymlink {
                    entry,
                    link: current
                        .strip_prefix(root)
                        .unwrap_or(&current)
                        .display()
                        .to_string(),
                })
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => std::fs::remove_file(&current)
                .and_then(|()| std::fs::create_dir(&current))
                .map_err(|source| UnpackError::Io {
                    entry: entry.clone(),
                    source,
                })?,
            Err(_) => std::fs::create_dir(&current).map_err(|source| UnpackError::Io {
                entry: entry.clone(),
                source,
            })?,
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (a later entry replaces an earlier one), never following
/// a symlink.
fn clear(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

/// Unpacks the tar stream `reader` into `root` (which must exist and be empty or a layer in
/// progress). Whiteouts become overlayfs whiteouts (0:0 character devices) and opaque
/// markers become the `trusted.overlay.opaque` attribute.
pub fn unpack_layer(
    reader: impl Read,
    root: &Path,
    limits: UnpackLimits,
) -> Result<Unpacked, UnpackError> {
    let mut metered = Metered {
        inner: reader,
        hasher: Sha256::new(),
        bytes: 0,
        limit: limits.max_bytes,
    };
    let mut archive = tar::Archive::new(&mut metered);
    let entries = archive.entries().map_err(corrupt)?;
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        let name = entry.path().map_err(corrupt)?.into_owned();
        let relative = relative_path(&name)?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        prepare_parent(root, &relative)?;
        if !apply_marker(root, &relative)? {
            unpack_entry(&mut entry, root, &relative, &limits)?;
        }
    }
    // Drain any padding after the end-of-archive blocks so the digest covers the stream.
    std::io::copy(&mut metered, &mut std::io::sink()).map_err(corrupt)?;
    Ok(Unpacked {
        diff_id: format!("sha256:{:x}", metered.hasher.finalize()),
        bytes: metered.bytes,
    })
}

/// An `Io` error about the entry `label`.
fn io_error(label: &str) -> impl Fn(std::io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        entry: label.to_string(),
        source,
    }
}

/// Applies an opaque marker or a whiteout (`relative` is one); false for any other entry.
fn apply_marker(root: &Path, relative: &Path) -> Result<bool, UnpackError> {
    let label = relative.display().to_string();
    let io = io_error(&label);
    let target = root.join(relative);
    let file_name = relative
        .file_name()
        .map(|n| n.as_bytes())
        .unwrap_or_default();
    if file_name == OPAQUE_MARKER.as_bytes() {
        let dir = target.parent().unwrap_or(root);
        set_opaque(dir).map_err(io)?;
        return Ok(true);
    }
    let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
        return Ok(false);
    };
    // `.wh.` names a sibling; `.wh..`, `.wh...` would name the layer or its parent, and
    // other `.wh..wh.` names are reserved metadata (image-spec layer.md).
    if hidden.starts_with(b".wh.") {
        return Ok(true);
    }
    if hidden.is_empty() || hidden == b"." || hidden == b".." {
        return Err(UnpackError::Escapes(label.clone()));
    }
    let whiteout = target.with_file_name(OsStr::from_bytes(hidden));
    remove_any(&whiteout).map_err(&io)?;
    make_whiteout(&whiteout).map_err(io)?;
    Ok(true)
}

/// Creates the file, directory, link or device an entry describes at `root/relative`, with
/// its owner and mode.
fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    root: &Path,
    relative: &Path,
    limits: &UnpackLimits,
) -> Result<(), UnpackError> {
    let label = relative.display().to_string();
    let io = io_error(&label);
    let target = root.join(relative);
    let header = entry.header().clone();
    let mode = header.mode().map_err(corrupt)?;
    let mode = if limits.allow_setuid {
        mode
    } else {
        mode & !0o6000
    };
    let (uid, gid) = (
        header.uid().map_err(corrupt)?,
        header.gid().map_err(corrupt)?,
    );
    let kind = header.entry_type();
    match kind {
        tar::EntryType::Directory => match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(&target).map_err(&io)?;
                std::fs::create_dir(&target).map_err(&io)?;
            }
            Err(_) => std::fs::create_dir(&target).map_err(&io)?,
        },
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            write_file(entry, &target, &label)?;
        }
        tar::EntryType::Symlink => {
            let link = entry
                .link_name()
                .map_err(corrupt)?
                .ok_or_else(|| UnpackError::Corrupt(format!("{label}: symlink without target")))?;
            clear(&target).map_err(&io)?;
            // The target is resolved inside the container at run time, never here.
            symlink(&*link, &target).map_err(&io)?;
        }
        // A hard link shares its source's owner and mode.
        tar::EntryType::Link => return hard_link(entry, root, &target, &label),
        tar::EntryType::Char | tar::EntryType::Block => {
            if !limits.allow_devices {
                return Err(UnpackError::Device(label.clone()));
            }
            let major = header.device_major().map_err(corrupt)?.unwrap_or(0);
            let minor = header.device_minor().map_err(corrupt)?.unwrap_or(0);
            let kind = if kind == tar::EntryType::Char {
                nix::sys::stat::SFlag::S_IFCHR
            } else {
                nix::sys::stat::SFlag::S_IFBLK
            };
            clear(&target).map_err(&io)?;
            nix::sys::stat::mknod(
                &target,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(mode),
                nix::sys::stat::makedev(major.into(), minor.into()),
            )
            .map_err(|e| io(std::io::Error::from(e)))?;
        }
        tar::EntryType::Fifo => {
            clear(&target).map_err(&io)?;
            nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(mode))
                .map_err(|e| io(std::io::Error::from(e)))?;
        }
        // PAX and GNU metadata entries are consumed by the tar reader itself.
        _ => return Ok(()),
    }
    // Ownership and mode, without following a symlink.
    let _ = nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &target,
        Some(nix::unistd::Uid::from_raw(uid as u32)),
        Some(nix::unistd::Gid::from_raw(gid as u32)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    );
    if kind != tar::EntryType::Symlink {
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    Ok(())
}

/// Writes a regular file's content at `target`, replacing what was there.
fn write_file(entry: &mut impl Read, target: &Path, label: &str) -> Result<(), UnpackError> {
    let io = io_error(label);
    clear(target).map_err(&io)?;
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(&io)?;
    std::io::copy(entry, &mut file).map_err(|e| match e.raw_os_error() {
        // Writing failed (a full disk): the archive is not to blame.
        Some(_) => io(e),
        None => match e.into_inner() {
            Some(inner) => match inner.downcast::<UnpackError>() {
                Ok(unpack) => *unpack,
                Err(other) => io(std::io::Error::other(other)),
            },
            None => UnpackError::Corrupt(format!("{label}: truncated")),
        },
    })?;
    file.flush().map_err(io)
}

/// Links `target` to an earlier entry of the layer, which must resolve beneath `root` and
/// not be a directory.
fn hard_link<R: Read>(
    entry: &tar::Entry<'_, R>,
    root: &Path,
    target: &Path,
    label: &str,
) -> Result<(), UnpackError> {
    let link = entry
        .link_name()
        .map_err(corrupt)?
        .ok_or_else(|| UnpackError::Corrupt(format!("{label}: hard link without target")))?;
    let bad = || UnpackError::BadHardLink {
        entry: label.to_string(),
        target: link.display().to_string(),
    };
    let source_relative = relative_path(&link).map_err(|_| bad())?;
    prepare_parent(root, &source_relative).map_err(|_| bad())?;
    let source = root.join(&source_relative);
    let meta = std::fs::symlink_metadata(&source).map_err(|_| bad())?;
    if meta.is_dir() {
        return Err(bad());
    }
    let io = io_error(label);
    clear(target).map_err(&io)?;
    std::fs::hard_link(&source, target).map_err(io)
}

fn corrupt(error: std::io::Error) -> UnpackError {
    match error.into_inner() {
        Some(inner) => match inner.downcast::<UnpackError>() {
            Ok(unpack) => *unpack,
            Err(other) => UnpackError::Corrupt(other.to_string()),
        },
        None => UnpackError::Corrupt("unexpected end of stream".into()),
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

/// An overlayfs whiteout: a 0:0 character device.
fn make_whiteout(path: &Path) -> std::io::Result<()> {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .map_err(std::io::Error::from)
}

/// An overlayfs opaque directory: hides everything below it in lower layers.
fn set_opaque(dir: &Path) -> std::io::Result<()> {
    xattr_set(dir, "trusted.overlay.opaque", b"y")
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let path =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: both strings are NUL-terminated and live across the call; the value pointer
    // and length describe a valid slice.
    #[allow(unsafe_code)]
    let result = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A tar entry whose name is written raw, so hostile names survive the builder.
    fn header() -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header
    }

    fn entry(
        builder: &mut tar::Builder<Vec<u8>>,
        name: &str,
        kind: tar::EntryType,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut header = header();
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        if let Some(link) = link {
            let raw = &mut header.as_old_mut().linkname;
            raw[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    /// Every path under `dir` with its size: what "the host tree is unchanged" compares.
    fn tree(dir: &Path) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            for item in std::fs::read_dir(&path).unwrap().flatten() {
                let meta = std::fs::symlink_metadata(item.path()).unwrap();
                out.push((item.path().display().to_string(), meta.len()));
                if meta.is_dir() {
                    stack.push(item.path());
                }
            }
        }
        out.sort();
        out
    }

    struct Sandbox {
        _dir: tempfile::TempDir,
        outside: PathBuf,
        layer: PathBuf,
    }

    fn sandbox() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("host");
        std::fs::create_dir_all(outside.join("etc")).unwrap();
        std::fs::write(outside.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let layer = dir.path().join("store/layer");
        std::fs::create_dir_all(&layer).unwrap();
        Sandbox {
            _dir: dir,
            outside,
            layer,
        }
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn a_plain_layer_unpacks_with_its_diff_id() {
        let s = sandbox();
        let bytes = archive(|b| {
            entry(b, "bin/", tar::EntryType::Directory, None, b"");
            entry(b, "bin/busybox", tar::EntryType::Regular, None, b"binary");
            entry(b, "bin/sh", tar::EntryType::Symlink, Some("busybox"), b"");
            entry(b, "bin/ash", tar::EntryType::Link, Some("bin/busybox"), b"");
        });
        let unpacked = unpack_layer(&bytes[..], &s.layer, UnpackLimits::default()).unwrap();
        assert_eq!(
            unpacked.diff_id,
            format!("sha256:{:x}", Sha256::digest(&bytes))
        );
        assert_eq!(
            std::fs::read(s.layer.join("bin/busybox")).unwrap(),
            b"binary"
        );
        assert_eq!(
            std::fs::read_link(s.layer.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        let (a, b) = (
            std::fs::metadata(s.layer.join("bin/ash")).unwrap(),
            std::fs::metadata(s.layer.join("bin/busybox")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
    }

    #[test]
    fn path_traversal_is_refused_and_nothing_lands_outside() {
        let s = sandbox();
        let before = tree(&s.outside);
        for name in ["../../host/etc/passwd", "/etc/evil", "a/../../b"] {
            let bytes = archive(|b| entry(b, name, tar::EntryType::Regular, None, b"pwned"));
            let error = unpack_layer(&bytes[..], &s.layer, UnpackLimits::default()).unwrap_err();
            assert!(matches!(error, UnpackError::Escapes(_)), "{name}: {error}");
        }
        assert_eq!(tree(&s.outside), before);
    }

    #[test]
    fn a_symlink_then_a_write_through_it_is_refused() {
        let s = sandbox();
        let before = tree(&s.outside);
        let outside = s.outside.join("etc").display().to_string();
        let bytes = archive(|b| {
            entry(b, "escape", tar::EntryType::Symlink, Some(&outside), b"");
            entry(b, "escape/passwd", tar::EntryType::Regular, None, b"pwned");
        });
        let error = unpack_layer(&bytes[..], &s.layer, UnpackLimits::default()).unwrap_err();
        assert!(
            matches!(error, UnpackError::ThroughSymlink { .. }),
            "{error}"
        );
        assert_eq!(tree(&s.outside), before);
        assert_eq!(
            std::fs::read_to_string(s.outside.join("etc/passwd")).unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
    }

    #[test]
    fn a_hard_link_to_a_host_file_is_refused() {
        let s = sandbox();
        let host = s.outside.join("etc/passwd").display().to_string();
        for target in [host.as_str(), "../../host/etc/passwd", "missing"] {
            let bytes = archive(|b| entry(b, "stolen", tar::EntryType::Link, Some(target), b""));
            let error = unpack_layer(&bytes[..], &s.layer, UnpackLimits::default()).unwrap_err();
            assert!(
                matches!(error, UnpackError::BadHardLink { .. }),
                "{target}: {error}"
            );
        }
        assert_eq!(
            std::fs::metadata(s.outside.join("etc/passwd"))
                .unwrap()
                .nlink(),
            1
        );
    }

    #[test]
    fn whiteouts_cannot_name_the_layer_or_its_parent() {
        let s = sandbox();
        std::fs::write(s.layer.join("keep"), "kept").unwrap();
        for name in [".wh...", ".wh..", ".wh."] {
            let bytes = archive(|b| entry(b, name, tar::EntryType::Regular, None, b""));
            let error = unpack_layer(&bytes[..], &s.layer, UnpackLimits::default()).unwrap_err();
            assert!(matches!(error, UnpackError::Escapes(_)), "{name}: {error}");
        }
        assert_eq!(
            std::fs::read_to_string(s.layer.join("keep")).unwrap(),
            "kept"
        );
        assert!(s.outside.join("etc/passwd").exists());
    }

    #[test]
    fn device_nodes_need_permission() {
        let s = sandbox();
        let bytes = archive(|b| entry(b, "dev/sda", tar::EntryType::Block, None, b""));
        let error = unpack_layer(&bytes[..], &s.layer, UnpackLimits::default()).unwrap_err();
        assert!(matches!(error, UnpackError::Device(_)), "{error}");
    }

    #[test]
    fn a_bomb_of_zeros_stops_at_the_limit() {
        let s = sandbox();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = header();
        header.set_path("zeros").unwrap();
        header.set_size(100 << 20);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append(&header, std::io::repeat(0).take(100 << 20))
            .unwrap();
        let bytes = builder.into_inner().unwrap();
        let limits = UnpackLimits {
            max_bytes: 1 << 20,
            ..Default::default()
        };
        let error = unpack_layer(&bytes[..], &s.layer, limits).unwrap_err();
        assert!(matches!(error, UnpackError::TooLarge(_)), "{error}");
        let written = std::fs::metadata(s.layer.join("zeros"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(written <= 1 << 20, "{written} bytes written");
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let s = sandbox();
        let bytes = archive(|b| entry(b, "file", tar::EntryType::Regular, None, &[7u8; 4096]));
        let error = unpack_layer(&bytes[..1000], &s.layer, UnpackLimits::default()).unwrap_err();
        assert!(matches!(error, UnpackError::Corrupt(_)), "{error}");
    }

    #[test]
    fn setuid_bits_are_cleared_unless_allowed() {
        let s = sandbox();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = header();
        header.set_path("su").unwrap();
        header.set_size(1);
        header.set_mode(0o4755);
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        let bytes = builder.into_inner().unwrap();
        let limits = UnpackLimits {
            allow_setuid: false,
            ..Default::default()
        };
        unpack_layer(&bytes[..], &s.layer, limits).unwrap();
        assert_eq!(
            std::fs::metadata(s.layer.join("su")).unwrap().mode() & 0o7777,
            0o755
        );
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts_and_opaque_directories() {
        if !is_root() {
            eprintln!("SKIP whiteouts: mknod and trusted.* xattrs need root");
            return;
        }
        let s = sandbox();
        let bytes = archive(|b| {
            entry(b, "etc/", tar::EntryType::Directory, None, b"");
            entry(b, "etc/.wh.motd", tar::EntryType::Regular, None, b"");
            entry(b, "var/", tar::EntryType::Directory, None, b"");
            entry(b, "var/.wh..wh..opq", tar::EntryType::Regular, None, b"");
        });
        unpack_layer(&bytes[..], &s.layer, UnpackLimits::default()).unwrap();
        let meta = std::fs::symlink_metadata(s.layer.join("etc/motd")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &meta.file_type()
        ));
        assert_eq!(meta.rdev(), 0);
        assert!(!s.layer.join("etc/.wh.motd").exists());
        let mut value = [0u8; 4];
        let path = std::ffi::CString::new(s.layer.join("var").as_os_str().as_bytes()).unwrap();
        let name = std::ffi::CString::new("trusted.overlay.opaque").unwrap();
        #[allow(unsafe_code)]
        let length = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert_eq!(&value[..length.max(0) as usize], b"y");
    }
}
