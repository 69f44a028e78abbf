//! Start-up recovery of what a crash of berthd left between the database and reality, both
//! ways: a run that the runtime and a live monitor have but the database never recorded
//! (berthd died between `runc create`/`run` and the commit) is adopted with its events;
//! runtime containers, monitors, mounts, bundles, directories and exit files that belong to
//! no container, or to no recorded run, are cleaned up.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::filesystem::is_mounted;
use super::{blocking, event, Caller, Engine, Inner, Locked, Result, State};
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

/// What runs at start-up, looked at once for every container: the live monitors by
/// container id (one scan of /proc) and the runtime's containers (one read of its root).
/// Asking per container cost about a millisecond each.
#[derive(Default)]
pub(crate) struct Survey {
    monitors: HashMap<String, u32>,
    runtime: HashSet<String>,
}

impl Survey {
    pub(crate) fn take(inner: &Inner) -> Survey {
        Survey {
            monitors: inner.backends.launcher.find_all(),
            runtime: runtime_ids(&inner.paths.runtime_root()),
        }
    }
}

impl Engine {
    /// Removes what belongs to no container in the database: everything a container's paths
    /// name (runtime container and monitor, bundle, directory unmounted first, exit files,
    /// sidecar state) for every id found on disk or in the runtime that no container has.
    pub(crate) async fn sweep_orphans(&self) {
        let known: HashSet<String> = self.container_ids().into_iter().collect();
        let inner = self.inner().clone();
        let swept = blocking(move || {
            let paths = &inner.paths;
            let in_runtime = runtime_ids(&paths.runtime_root());
            let exit_files = entries(&paths.exits_dir());
            let mut found: HashSet<String> = in_runtime.clone();
            found.extend(entries(&paths.bundles_dir()));
            found.extend(entries(&paths.containers_dir()));
            found.extend(
                exit_files
                    .iter()
                    .map(|name| exit_file_owner(name).to_string()),
            );
            for id in found.difference(&known) {
                let owned: Vec<&String> = exit_files
                    .iter()
                    .filter(|name| exit_file_owner(name) == id)
                    .collect();
                sweep_orphan(&inner, id, in_runtime.contains(id), &owned);
            }
            Ok(())
        })
        .await;
        if let Err(error) = swept {
            tracing::warn!(%error, "sweeping orphans failed");
        }
    }
}

/// The container an exit file belongs to: `<id>`, `<id>.<session>`, or a monitor's
/// temporary `.<name>.tmp`.
fn exit_file_owner(name: &str) -> &str {
    let name = name.trim_start_matches('.');
    name.split('.').next().unwrap_or_default()
}

/// Removes what is left of container `id`, which the database does not have.
fn sweep_orphan(inner: &Inner, id: &str, in_runtime: bool, exit_files: &[&String]) {
    let paths = inner.paths.container(id);
    if in_runtime {
        tracing::warn!(id = %id, "deleting a runtime container no container owns");
        if let Some(monitor) = inner.backends.launcher.find(id) {
            kill_monitor(monitor);
        }
        if let Err(error) = inner.backends.runtime.delete(id, true) {
            tracing::warn!(id = %id, %error, "deleting an orphan runtime container failed");
        }
    }
    let _ = std::fs::remove_dir_all(paths.bundle());
    let merged = paths.merged();
    let unmounted = !is_mounted(&merged)
        || inner
            .backends
            .mounter
            .unmount(&merged)
            .map_err(|error| {
                tracing::warn!(id = %id, %error, "unmounting an orphan rootfs failed");
            })
            .is_ok();
    if unmounted && paths.dir().exists() {
        tracing::warn!(id = %id, "removing the directory of no container");
        let _ = std::fs::remove_dir_all(paths.dir());
    }
    for name in exit_files {
        let _ = std::fs::remove_file(inner.paths.exits_dir().join(name));
    }
    let _ = std::fs::remove_file(paths.sidecar_state());
}

/// A container whose recorded state has no process: adopts a run the runtime and a live
/// monitor still have (berthd died before recording it), or cleans up what is left of one.
/// Returns whether a run was adopted.
///
/// `survey` is what runs, looked at once for the whole start-up.
pub(crate) async fn recover_unrecorded_run(locked: &Locked<'_>, survey: &Survey) -> Result<bool> {
    let inner = locked.engine().clone();
    let id = locked.id().to_string();
    let monitor = survey.monitors.get(&id).copied();
    let in_runtime = survey.runtime.contains(&id);
    // Most containers at start-up: no monitor, no runtime container, so nothing to adopt.
    let found = if monitor.is_none() && !in_runtime {
        None
    } else {
        find_unrecorded_run(inner, id, monitor).await?
    };
    if let Some((seen, monitor_pid, pid)) = found {
        adopt(locked, seen, monitor_pid, pid).await?;
        return Ok(true);
    }
    release_unrecorded_mount(locked).await?;
    let _ = std::fs::remove_file(locked.paths().exit_file());
    Ok(false)
}

/// The run of container `id` that the runtime and a live `monitor` both have, waiting out
/// a launch that was in flight; a runtime container or monitor without the other is
/// removed.
async fn find_unrecorded_run(
    inner: Arc<Inner>,
    id: String,
    monitor: Option<u32>,
) -> Result<Option<(RuntimeStatus, u32, u32)>> {
    blocking(move || {
        let launcher = &inner.backends.launcher;
        let paths = inner.paths.container(&id);
        let read_pid = || {
            std::fs::read_to_string(paths.pid_file())
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
        // A launch that was in flight may have made its runtime container since the survey.
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
    .await
}

/// Records a run berthd started but died before recording: `created` (with `init`), then
/// `running` (with `start`) and `paused` as the runtime reports it.
async fn adopt(locked: &Locked<'_>, seen: RuntimeStatus, monitor_pid: u32, pid: u32) -> Result<()> {
    tracing::warn!(id = %locked.id(), pid, "adopting a run berthd had not recorded");
    let mut status = locked.status();
    if status.mount_count == status.user_mounts {
        // The runtime's mount reference was taken but not recorded.
        let merged = locked.paths().merged();
        status.mount_count += 1;
        status.mountpoint = merged.display().to_string();
    }
    status.launched(pid, monitor_pid)?;
    let config = locked.config();
    let mut events = vec![event("init", config, Caller::ENGINE, &[])];
    if matches!(seen, RuntimeStatus::Running | RuntimeStatus::Paused) {
        status.started(now_micros())?;
        events.push(event("start", config, Caller::ENGINE, &[]));
    }
    if seen == RuntimeStatus::Paused {
        status.paused()?;
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
        let merged = locked.paths().merged();
        // Most containers never mounted here, or had the directory removed: one stat.
        if !merged.exists() {
            return Ok(());
        }
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
    let kind = match (status.state, seen) {
        (State::Created, Some(RuntimeStatus::Running)) => {
            status.started(now_micros())?;
            "start"
        }
        (State::Running | State::Stopping, Some(RuntimeStatus::Paused)) => {
            status.paused()?;
            "pause"
        }
        (State::Paused, Some(RuntimeStatus::Running)) => {
            status.resumed()?;
            "unpause"
        }
        _ => return Ok(()),
    };
    locked
        .commit(status, vec![event(kind, config, Caller::ENGINE, &[])])
        .await
}
