//! The container's root filesystem: the read-only lower layers under a per-container
//! overlay upper/work pair, so the layers themselves are never written. Where overlayfs
//! cannot mount (or `--storage-driver vfs` asks for it), a copy of the layers made once into
//! the container's own directory stands in, as podman's vfs driver does.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The mount seam, faked in engine tests.
pub trait Mounter: Send + Sync {
    /// Mounts the read-only `lowers` (top first) under `upper`/`work` at `target`.
    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> std::io::Result<()>;
    fn unmount(&self, target: &Path) -> std::io::Result<()>;
}

/// Real overlayfs mounts, with the copy fallback.
pub struct OverlayMounter {
    /// Always copy (the `vfs` storage driver); otherwise only when overlayfs fails.
    pub copy_only: bool,
}

/// The file beside a target directory that says the copy fallback populated it (beside, not
/// inside: the container must not see it, nor an export carry it).
fn copy_marker(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.copied"))
}

/// Whether the container filesystem at `target` is a copy of its layers (the `vfs` driver or
/// the fallback), not an overlay mount.
pub fn is_copy(target: &Path) -> bool {
    copy_marker(target).exists()
}

/// overlayfs separates its options with `,` and lower layers with `:`; such paths would be
/// misread, so they are refused when the container is created.
pub fn is_mountable_path(path: &Path) -> bool {
    let text = path.to_string_lossy();
    !text.contains(',') && !text.contains(':')
}

impl Mounter for OverlayMounter {
    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> std::io::Result<()> {
        if self.copy_only || copy_marker(target).exists() {
            return copy_layers(lowers, target);
        }
        let lower: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .or_else(|errno| {
            // Only "overlayfs cannot work here" (no such filesystem, or it refuses these
            // directories), and only for a container with no changes of its own yet: a copy
            // would not carry them.
            let unsupported = matches!(errno, nix::errno::Errno::ENODEV | nix::errno::Errno::EINVAL);
            let fresh = std::fs::read_dir(upper).map(|mut entries| entries.next().is_none()).unwrap_or(true);
            if !(unsupported && fresh) {
                return Err(std::io::Error::other(format!("mount overlay at {}: {errno}", target.display())));
            }
            tracing::warn!(target = %target.display(), %errno, "overlayfs cannot mount here; copying the layers instead");
            copy_layers(lowers, target)
        })
    }

    fn unmount(&self, target: &Path) -> std::io::Result<()> {
        if copy_marker(target).exists() {
            // A copy is the container's filesystem itself: nothing to unmount.
            return Ok(());
        }
        match umount2(target, MntFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            // Something still holds it (a shell cd'ed into a `Mount()`): detach it lazily, as
            // podman's `umount --force` does.
            Err(nix::errno::Errno::EBUSY) => {
                umount2(target, MntFlags::MNT_DETACH).map_err(|errno| {
                    std::io::Error::other(format!("unmount {}: {errno}", target.display()))
                })
            }
            Err(errno) => Err(std::io::Error::other(format!(
                "unmount {}: {errno}",
                target.display()
            ))),
        }
    }
}

/// Populates `target` with the layers (top first), bottom layer first, applying overlayfs
/// whiteouts and opaque directories; once only (the marker remembers it).
fn copy_layers(lowers: &[PathBuf], target: &Path) -> std::io::Result<()> {
    if copy_marker(target).exists() {
        return Ok(());
    }
    for layer in lowers.iter().rev() {
        copy_tree(layer, target)?;
    }
    std::fs::write(copy_marker(target), b"")
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(path), Ok(name)) = (
        std::ffi::CString::new(dir.as_os_str().as_bytes()),
        std::ffi::CString::new("trusted.overlay.opaque"),
    ) else {
        return false;
    };
    let mut value = [0u8; 1];
    // SAFETY: both strings are NUL-terminated and the buffer is valid for its length.
    #[allow(unsafe_code)]
    let length =
        unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), value.as_mut_ptr().cast(), 1) };
    length == 1 && value[0] == b'y'
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

/// Copies one layer over `target`, never following a symlink of either tree.
fn copy_tree(source: &Path, target: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if is_opaque(source) {
        for entry in std::fs::read_dir(target)? {
            remove_any(&entry?.path())?;
        }
    }
    for entry in std::fs::read_dir(source)? {
        let entry = entry?;
        let from = entry.path();
        let to = target.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from)?;
        if is_whiteout(&meta) {
            remove_any(&to)?;
            continue;
        }
        if meta.is_dir() {
            if !std::fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir()) {
                remove_any(&to)?;
                std::fs::create_dir(&to)?;
            }
            copy_tree(&from, &to)?;
        } else {
            remove_any(&to)?;
            if meta.file_type().is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            } else if meta.is_file() {
                std::fs::copy(&from, &to)?;
            } else {
                let kind = nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
                let mode = nix::sys::stat::Mode::from_bits_truncate(meta.mode());
                nix::sys::stat::mknod(&to, kind, mode, meta.rdev())
                    .map_err(std::io::Error::from)?;
            }
        }
        let _ = nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &to,
            Some(nix::unistd::Uid::from_raw(meta.uid())),
            Some(nix::unistd::Gid::from_raw(meta.gid())),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        if !meta.file_type().is_symlink() {
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_fallback_stacks_layers_with_whiteouts() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP copy fallback: whiteouts need mknod (root)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (base, top, target) = (
            dir.path().join("base"),
            dir.path().join("top"),
            dir.path().join("merged"),
        );
        for d in [&base, &top, &target] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::write(base.join("etc/motd"), "old").unwrap();
        std::fs::write(base.join("etc/keep"), "kept").unwrap();
        std::os::unix::fs::symlink("etc/keep", base.join("link")).unwrap();
        std::fs::create_dir_all(top.join("etc")).unwrap();
        nix::sys::stat::mknod(
            &top.join("etc/motd"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        std::fs::write(top.join("etc/new"), "new").unwrap();
        let mounter = OverlayMounter { copy_only: true };
        mounter
            .mount_overlay(
                &[top.clone(), base.clone()],
                &dir.path().join("u"),
                &dir.path().join("w"),
                &target,
            )
            .unwrap();
        assert!(
            !target.join("etc/motd").exists(),
            "the whiteout hid nothing"
        );
        assert_eq!(
            std::fs::read_to_string(target.join("etc/keep")).unwrap(),
            "kept"
        );
        assert_eq!(
            std::fs::read_to_string(target.join("etc/new")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_link(target.join("link")).unwrap(),
            Path::new("etc/keep")
        );
        // A second mount keeps the container's own changes.
        std::fs::write(target.join("mine"), "x").unwrap();
        mounter.unmount(&target).unwrap();
        mounter
            .mount_overlay(
                &[top, base],
                &dir.path().join("u"),
                &dir.path().join("w"),
                &target,
            )
            .unwrap();
        assert!(target.join("mine").exists());
    }
}
