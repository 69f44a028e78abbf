//! The container's root filesystem: the read-only lower directory under a per-container
//! overlay upper/work pair, so the lower directory itself is never written.

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

/// Real overlayfs mounts.
pub struct OverlayMounter;

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
        .map_err(|errno| {
            std::io::Error::other(format!("mount overlay at {}: {errno}", target.display()))
        })
    }

    fn unmount(&self, target: &Path) -> std::io::Result<()> {
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
