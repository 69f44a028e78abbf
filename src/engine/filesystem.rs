//! The container's filesystem verbs: Mount/Unmount with libpod's reference counting, and
//! artifacts.
//!
//! References: the runtime holds one from Init until cleanup; each `Mount()` adds one that
//! only `Unmount` drops. The overlay is mounted on the first and unmounted on the last.

use std::path::{Path, PathBuf};

use super::{blocking, event, Caller, ContainerStatus, Engine, EngineError, Locked, Result, Verb};
use crate::storage::artifacts::Artifacts;

struct Layout {
    /// Read-only layers, top first (overlayfs order).
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
}

/// The read-only lower layers of a container's overlay, top first (overlayfs's order): the
/// image's layers, or the `Rootfs` directory.
pub(crate) fn lower_dirs(engine: &super::Inner, config: &super::ContainerConfig) -> Vec<PathBuf> {
    if config.layers.is_empty() {
        vec![PathBuf::from(&config.rootfs)]
    } else {
        config
            .layers
            .iter()
            .rev()
            .map(|layer| engine.layers.path(layer))
            .collect()
    }
}

fn layout(locked: &Locked<'_>) -> Layout {
    let paths = locked.paths();
    Layout {
        lowers: lower_dirs(locked.engine(), locked.config()),
        upper: paths.upper(),
        work: paths.work(),
        merged: paths.merged(),
    }
}

/// Takes one mount reference, mounting the overlay if it is the first. The caller commits.
pub(crate) async fn acquire_mount_into(
    locked: &Locked<'_>,
    status: &mut ContainerStatus,
) -> Result<String> {
    let layout = layout(locked);
    let merged = layout.merged.display().to_string();
    if status.mount_count == 0 {
        let mounter = locked.engine().backends.mounter.clone();
        blocking(move || {
            for dir in [&layout.upper, &layout.work, &layout.merged] {
                std::fs::create_dir_all(dir)
                    .map_err(|e| EngineError::io(format_args!("create {}", dir.display()), e))?;
            }
            mounter
                .mount_overlay(&layout.lowers, &layout.upper, &layout.work, &layout.merged)
                .map_err(|e| EngineError::io("mount the rootfs", e))
        })
        .await?;
    }
    status.mount_count += 1;
    status.mountpoint = merged.clone();
    Ok(merged)
}

/// Drops one reference, unmounting on the last. The caller commits. A failed unmount keeps
/// the reference: mounting again over a half-released overlay would be undefined.
pub(crate) async fn release_mount_into(
    locked: &Locked<'_>,
    status: &mut ContainerStatus,
) -> Result<()> {
    if status.mount_count == 0 {
        return Ok(());
    }
    if status.mount_count == 1 {
        unmount(locked).await?;
        status.mountpoint.clear();
    }
    status.mount_count -= 1;
    Ok(())
}

/// Drops the runtime's reference, if it holds one.
pub(crate) async fn release_runtime_mount_into(
    locked: &Locked<'_>,
    status: &mut ContainerStatus,
) -> Result<()> {
    if status.mount_count > status.user_mounts {
        release_mount_into(locked, status).await?;
    }
    Ok(())
}

async fn unmount(locked: &Locked<'_>) -> Result<()> {
    let mounter = locked.engine().backends.mounter.clone();
    let merged = layout(locked).merged;
    blocking(move || {
        mounter
            .unmount(&merged)
            .map_err(|e| EngineError::Internal(e.to_string()))
    })
    .await
}

/// Drops every reference (Remove); also an overlay left mounted without a recorded reference
/// (berthd died between mounting and recording it).
pub(crate) async fn unmount_all(locked: &Locked<'_>) -> Result<()> {
    if locked.status().mount_count > 0 || is_mounted(&layout(locked).merged) {
        unmount(locked).await?;
    }
    Ok(())
}

impl Engine {
    /// Mounts the rootfs for the caller and returns the mountpoint.
    pub async fn mount(&self, caller: Caller, id: &str) -> Result<String> {
        let locked = self.inner().lock(id).await?;
        locked.check(Verb::Mount)?;
        let mut status = locked.status();
        let mountpoint = acquire_mount_into(&locked, &mut status).await?;
        status.user_mounts += 1;
        locked
            .commit(status, vec![event("mount", locked.config(), caller, &[])])
            .await?;
        Ok(mountpoint)
    }

    /// Drops the caller's mount; `force` drops every user mount. The runtime's reference
    /// is never dropped here: the last mount of a running container stays.
    pub async fn unmount(&self, caller: Caller, id: &str, force: bool) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        let mut status = locked.status();
        if status.mount_count == 0 {
            return Ok(());
        }
        if status.user_mounts == 0 {
            // Only the runtime's reference is left: the container is using its storage.
            return Err(EngineError::InvalidState {
                id: id.to_string(),
                state: status.state,
                verb: "unmount the storage the runtime is using",
            });
        }
        let drops = if force { status.user_mounts } else { 1 };
        for _ in 0..drops {
            release_mount_into(&locked, &mut status).await?;
            status.user_mounts -= 1;
        }
        locked
            .commit(status, vec![event("unmount", locked.config(), caller, &[])])
            .await
    }

    fn artifacts(&self, id: &str) -> Artifacts {
        Artifacts::new(&self.inner().paths.container(id).artifacts())
    }

    pub async fn add_artifact(&self, id: &str, name: String, data: Vec<u8>) -> Result<()> {
        let _locked = self.inner().lock(id).await?;
        let store = self.artifacts(id);
        blocking(move || Ok(store.add(&name, &data)?)).await
    }

    pub async fn get_artifact(&self, id: &str, name: String) -> Result<Vec<u8>> {
        self.inner().entry(id)?;
        let store = self.artifacts(id);
        blocking(move || Ok(store.get(&name)?)).await
    }

    pub async fn remove_artifact(&self, id: &str, name: String) -> Result<()> {
        let _locked = self.inner().lock(id).await?;
        let store = self.artifacts(id);
        blocking(move || Ok(store.remove(&name)?)).await
    }

    pub async fn list_artifacts(&self, id: &str) -> Result<Vec<String>> {
        self.inner().entry(id)?;
        let store = self.artifacts(id);
        blocking(move || Ok(store.list()?)).await
    }
}

impl Engine {
    /// Writes the container's root filesystem (its changes included) as a tar stream into
    /// `destination`. The storage is mounted for the duration, as the seed's Export does.
    pub async fn export(&self, caller: Caller, id: &str, destination: std::fs::File) -> Result<()> {
        check_writable(&destination)?;
        Verb::Export.check(id, self.status(id)?.state)?;
        let mountpoint = PathBuf::from(self.mount(caller, id).await?);
        // The tree belongs to a possibly running container that can swap a directory for a
        // symlink at any moment: the walk runs chrooted into it (see `monitor::export`).
        let launcher = self.inner().backends.launcher.clone();
        let written = blocking(move || {
            launcher
                .export(&mountpoint, destination)
                .map_err(|e| EngineError::Internal(format!("export: {e}")))
        })
        .await;
        let unmounted = self.unmount(caller, id, false).await;
        written?;
        unmounted?;
        let locked = self.inner().lock(id).await?;
        locked
            .record(vec![event("export", locked.config(), caller, &[])])
            .await
    }
}

/// An export into a descriptor not open for writing fails at once, naming why, rather than
/// reporting success with nothing written.
fn check_writable(destination: &std::fs::File) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(destination, FcntlArg::F_GETFL)
        .map_err(|e| EngineError::InvalidArgument(format!("destination: {e}")))?;
    let mode = OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE;
    if mode == OFlag::O_RDONLY {
        return Err(EngineError::InvalidArgument(
            "destination: the descriptor is open for reading only".into(),
        ));
    }
    Ok(())
}

/// Whether `path` is a mount point. Recovery asks this of every container at start-up, so
/// the cheap answers come first: a path that does not exist is none (most containers were
/// never started or were cleaned up), and one on the same mount as its parent directory
/// (the `mnt_id` of `/proc/self/fdinfo`) is none either. Only when those cannot be read is
/// the whole mount table (`/proc/self/mountinfo`'s fifth field) searched.
pub(crate) fn is_mounted(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return false,
        _ => {}
    }
    if let (Some(own), Some(parent)) = (mount_id(path), path.parent().and_then(mount_id)) {
        return own != parent;
    }
    let wanted = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|table| {
            table
                .lines()
                .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
        })
        .unwrap_or(false)
}

/// The id of the mount `path` resolves into (`mnt_id` in `/proc/self/fdinfo`).
fn mount_id(path: &Path) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).ok()?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("mnt_id:"))
        .and_then(|id| id.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_told_from_plain_and_missing_directories() {
        assert!(is_mounted(Path::new("/proc")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mounted(dir.path()));
        assert!(!is_mounted(&dir.path().join("merged")));
    }
}
