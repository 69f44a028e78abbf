//! `berth-monitor export DIR`: writes DIR as a tar stream to stdout from inside a chroot.
//!
//! The directory is a container's root filesystem, which the container (root inside) may be
//! changing while we read it: swapping a directory for a symlink to `/` between our listing
//! and our open would make a plain walk read the host. Chrooted into the directory, every
//! path, symlinks included, resolves inside it (podman's chrootarchive does the same).

use std::io::Write;
use std::path::Path;

/// Runs the export; returns the process exit code.
pub fn run(root: &Path) -> i32 {
    match export(root) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("export {}: {error}", root.display());
            1
        }
    }
}

fn export(root: &Path) -> std::io::Result<()> {
    nix::unistd::chroot(root).map_err(std::io::Error::from)?;
    std::env::set_current_dir("/")?;
    // A `File`, not `std::io::stdout()`: the standard stream swallows EBADF, which would
    // report an export into a read-only descriptor as a success with nothing written.
    let stdout =
        std::fs::File::from(std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned()?);
    let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, stdout));
    builder.follow_symlinks(false);
    builder.append_dir_all(".", "/")?;
    builder.into_inner()?.flush()
}
