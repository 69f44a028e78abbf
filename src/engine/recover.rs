//! Start-up recovery of what a crash of berthd left between the database and reality, both
//! ways: a run that the runtime and a live monitor have but the database never recorded
//! (berthd died between `runc create`/`run` and the commit) is adopted with its events;
//! runtime containers, monitors, mounts, bundles, directories and exit files that belong to
//! no container, or to no recorded run, are cleaned up.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{blocking, event, Caller, Engine, Locked, Result, State};
use crate::clock::now_micros;
use crate::runtime::RuntimeStatus;

/// Names of the entries of `dir` (none when it cannot be read).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
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

/// How long recovery waits for a monitor's launch that was in flight when berthd died.
const LAUNCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Kills a monitor that no recorded run owns (found by [`MonitorLauncher::find`], so it is
/// berth's monitor of that container).
///
/// [`MonitorLauncher::find`]: crate::monitor::launcher::MonitorLauncher::find
fn kill_monitor(monitor: u32) {
    if let Ok(pid) = i32::try_from(monitor) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The container ids runc knows under berth's runtime root.
fn runtime_ids(runtime_root: &Path) -> HashSet<String> {
    entries(runtime_root).into_iter().collect()
}

impl Engine {
    /// Removes what belongs to no container in the database: runtime containers (with their
    /// monitors), bundles, container directories (unmounted first) and exit files.
    pub(crate) async fn sweep_orphans(&self) {
        let known: HashSet<String> = self.container_ids().into_iter().collect();
        let inner = self.inner().clone();
        let swept = blocking(move || {
            let paths = &inner.paths;
            for id in runtime_ids(&paths.runtime_root()) {
                if known.contains(&id) {
                    continue;
                }
                tracing::warn!(id = %id, "deleting a runtime container no container owns");
                if let Some(monitor) = inner.backends.launcher.find(&id) {
                    kill_monitor(monitor);
                }
                if let Err(error) = inner.backends.runtime.delete(&id, true) {
                    tracing::warn!(id = %id, %error, "deleting an orphan runtime container failed");
                }
            }
            for id in entries(&paths.runroot.join("containers")) {
                if !known.contains(&id) {
                    let _ = std::fs::remove_dir_all(paths.bundle(&id));
                }
            }
            for id in entries(&inner.options.root.join("containers")) {
                if known.contains(&id) {
                    continue;
                }
                let dir = inner.container_dir(&id);
                let merged = dir.join("merged");
                if is_mounted(&merged) {
                    if let Err(error) = inner.backends.mounter.unmount(&merged) {
                        tracing::warn!(id = %id, %error, "unmounting an orphan rootfs failed");
                        continue;
                    }
                }
                tracing::warn!(id = %id, "removing the directory of no container");
                let _ = std::fs::remove_dir_all(&dir);
            }
            for name in entries(&paths.exits_dir()) {
                let id = name.trim_start_matches('.');
                let id = id.split('.').next().unwrap_or_default();
                if !known.contains(id) {
                    let _ = std::fs::remove_file(paths.exits_dir().join(&name));
                }
            }
            Ok(())
        })
        .await;
        if let Err(error) = swept {
            tracing::warn!(%error, "sweeping orphans failed");
        }
    }
}

/// A container whose recorded state has no process: adopts a run the runtime and a live
/// monitor still have (berthd died before recording it), or cleans up what is left of one.
/// Returns whether a run was adopted.
///
/// `monitors` are the live monitors by container id, found once for the whole start-up
/// ([`MonitorLauncher::find_all`]): a scan of /proc per container cost about a millisecond
/// each.
///
/// [`MonitorLauncher::find_all`]: crate::monitor::launcher::MonitorLauncher::find_all
pub(crate) async fn recover_unrecorded_run(
    locked: &Locked<'_>,
    monitors: &HashMap<String, u32>,
) -> Result<bool> {
    let inner = locked.engine().clone();
    let id = locked.id().to_string();
    let monitor = monitors.get(&id).copied();
    let found = blocking(move || {
        let launcher = &inner.backends.launcher;
        let read_pid = || {
            std::fs::read_to_string(inner.paths.pid_file(&id))
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok())
        };
        if let Some(monitor) = monitor {
            // A launch still in flight (berthd died while the monitor ran `runc create`):
            // it ends with runc's pid file written, or with the monitor gone.
            let asked = std::time::Instant::now();
            while launcher.is_alive(monitor, &id)
                && read_pid().is_none()
                && asked.elapsed() < LAUNCH_LIMIT
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        if !runtime_ids(&inner.paths.runtime_root()).contains(&id) {
            if let Some(monitor) = monitor.filter(|m| launcher.is_alive(*m, &id)) {
                kill_monitor(monitor);
            }
            return Ok(None);
        }
        let seen = inner.backends.runtime.state(&id)?;
        let monitor = monitor.filter(|monitor| launcher.is_alive(*monitor, &id));
        let pid = read_pid();
        match (seen, monitor, pid) {
            (
                Some(
                    seen
                    @ (RuntimeStatus::Created | RuntimeStatus::Running | RuntimeStatus::Paused),
                ),
                Some(monitor),
                Some(pid),
            ) => Ok(Some((seen, monitor, pid))),
            (_, monitor, _) => {
                tracing::warn!(id = %id, "deleting a runtime container no recorded run owns");
                if let Some(monitor) = monitor {
                    kill_monitor(monitor);
                }
                inner.backends.runtime.delete(&id, true)?;
                Ok(None)
            }
        }
    })
    .await?;
    if let Some((seen, monitor_pid, pid)) = found {
        adopt(locked, seen, monitor_pid, pid).await?;
        return Ok(true);
    }
    release_unrecorded_mount(locked).await?;
    let exit_file = locked.engine().paths.exit_file(locked.id());
    let _ = std::fs::remove_file(exit_file);
    Ok(false)
}

/// Records a run berthd started but died before recording: `created` (with `init`), then
/// `running` (with `start`) and `paused` as the runtime reports it.
async fn adopt(locked: &Locked<'_>, seen: RuntimeStatus, monitor_pid: u32, pid: u32) -> Result<()> {
    tracing::warn!(id = %locked.id(), pid, "adopting a run berthd had not recorded");
    let mut status = locked.status();
    if status.mount_count == status.user_mounts {
        // The runtime's mount reference was taken but not recorded.
        let merged = locked.engine().container_dir(locked.id()).join("merged");
        status.mount_count += 1;
        status.mountpoint = merged.display().to_string();
    }
    status.state = State::Created;
    status.pid = pid;
    status.monitor_pid = monitor_pid;
    status.exit_code = 0;
    status.oom_killed = false;
    status.finished_at = 0;
    status.error.clear();
    status.stopped_by_user = false;
    status.exec_sessions.clear();
    status.checkpointed = false;
    let config = locked.config();
    let mut events = vec![event("init", config, Caller::ENGINE, &[])];
    if matches!(seen, RuntimeStatus::Running | RuntimeStatus::Paused) {
        status.state = State::Running;
        status.started_at = now_micros();
        events.push(event("start", config, Caller::ENGINE, &[]));
    }
    if seen == RuntimeStatus::Paused {
        status.state = State::Paused;
        events.push(event("pause", config, Caller::ENGINE, &[]));
    }
    locked.commit(status, events).await?;
    Engine {
        inner: locked.engine().clone(),
    }
    .watch_monitor(locked.id(), monitor_pid);
    Ok(())
}

/// No run holds the storage: a runtime reference recorded without a run is dropped, and an
/// overlay mounted without any recorded reference is unmounted.
async fn release_unrecorded_mount(locked: &Locked<'_>) -> Result<()> {
    let mut status = locked.status();
    if status.mount_count > status.user_mounts {
        super::filesystem::release_runtime_mount_into(locked, &mut status).await?;
        return locked.commit(status, Vec::new()).await;
    }
    if status.mount_count == 0 {
        let merged: PathBuf = locked.engine().container_dir(locked.id()).join("merged");
        let mounter = locked.engine().backends.mounter.clone();
        blocking(move || {
            if is_mounted(&merged) {
                mounter
                    .unmount(&merged)
                    .map_err(|e| super::EngineError::Internal(e.to_string()))?;
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// A recorded live run whose monitor is alive: the runtime may have moved on without the
/// database (a `start`, `pause` or `resume` done just before berthd died). Adopts what the
/// runtime reports.
pub(crate) async fn adopt_runtime_state(locked: &Locked<'_>) -> Result<()> {
    let runtime = locked.engine().backends.runtime.clone();
    let id = locked.id().to_string();
    let seen = blocking(move || Ok(runtime.state(&id)?)).await?;
    let mut status = locked.status();
    let config = locked.config();
    let (state, kind) = match (status.state, seen) {
        (State::Created, Some(RuntimeStatus::Running)) => (State::Running, "start"),
        (State::Running | State::Stopping, Some(RuntimeStatus::Paused)) => (State::Paused, "pause"),
        (State::Paused, Some(RuntimeStatus::Running)) => (State::Running, "unpause"),
        _ => return Ok(()),
    };
    if kind == "start" {
        status.started_at = now_micros();
    }
    status.state = state;
    locked
        .commit(status, vec![event(kind, config, Caller::ENGINE, &[])])
        .await
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
