//! Network namespace files: a new namespace bind-mounted on a file under the runroot, as
//! podman's `/run/netns/netns-…`; runc joins it through the spec's `linux.namespaces` path.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::NetworkError;

fn failed(path: &Path, message: impl std::fmt::Display) -> NetworkError {
    NetworkError::Namespace {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Creates a namespace on `path`. The `unshare` happens on a thread of its own, which ends
/// right after the bind mount: berthd's other threads never change namespace.
pub fn create(path: &Path) -> Result<(), NetworkError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| failed(parent, e))?;
    }
    std::fs::File::create(path).map_err(|e| failed(path, e))?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> nix::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    })
    .join();
    match made {
        Ok(Ok(())) => Ok(()),
        Ok(Err(errno)) => {
            let _ = std::fs::remove_file(path);
            Err(failed(path, errno))
        }
        Err(_) => {
            let _ = std::fs::remove_file(path);
            Err(failed(path, "the namespace thread panicked"))
        }
    }
}

/// Unmounts and deletes the file; the namespace goes when its last user does.
pub fn remove(path: &Path) -> Result<(), NetworkError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(errno) => return Err(failed(path, errno)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed(path, e)),
    }
}
