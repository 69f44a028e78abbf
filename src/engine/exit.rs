//! Exits: learned from the monitors' exit files, recorded with their events, followed by
//! cleanup, `AutoRemove` and the restart policy.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{blocking, event, Caller, Engine, Locked, Result, State};
use crate::monitor::protocol::read_exit_file;

/// How long cleanup of a created container waits for its monitor to report the kill.
const MONITOR_REPORT_LIMIT: Duration = Duration::from_secs(5);

impl Engine {
    /// Handles every exit file the watcher reports, each in its own task.
    pub(crate) async fn follow_exits(&self, mut exits: mpsc::UnboundedReceiver<String>) {
        while let Some(id) = exits.recv().await {
            let Ok(entry) = self.inner().entry(&id) else {
                continue;
            };
            // Wakes a `Stop` waiting on this exit before the lock is free.
            entry.exit_seen.send_replace(true);
            let engine = self.clone();
            let busy = self.busy();
            tokio::spawn(async move {
                let _busy = busy;
                match engine.handle_exit(&id).await {
                    // A force-remove recorded it and took the container away meanwhile.
                    Ok(())
                    | Err(
                        super::EngineError::Removed(_) | super::EngineError::NoSuchContainer(_),
                    ) => {}
                    Err(error) => tracing::warn!(id = %id, %error, "recording an exit failed"),
                }
            });
        }
    }

    pub(crate) async fn handle_exit(&self, id: &str) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        record_exit_locked(&locked, Caller::ENGINE).await?;
        after_exit_locked(&locked).await
    }
}

/// Records the exit in the container's exit file, if it belongs to the current run: state
/// `stopped` with the exit code and a `died` event, `Exited` announced, then cleanup to
/// `exited`. Idempotent: a second call, or a stale file, changes nothing.
pub(crate) async fn record_exit_locked(locked: &Locked<'_>, caller: Caller) -> Result<()> {
    let status = locked.status();
    let path = locked.engine().paths.exit_file(locked.id());
    let record = {
        let path = path.clone();
        blocking(move || {
            read_exit_file(&path)
                .map_err(|e| super::EngineError::Internal(format!("exit file: {e}")))
        })
        .await?
    };
    let Some(record) = record else {
        return Ok(());
    };
    if !status.state.has_process() || record.pid != status.pid {
        tracing::debug!(id = %locked.id(), pid = record.pid, "ignoring a stale exit file");
        return Ok(());
    }
    let mut stopped = status.clone();
    stopped.state = State::Stopped;
    stopped.exit_code = record.exit_code;
    stopped.oom_killed = record.oom_killed;
    stopped.finished_at = record.exited_at;
    stopped.pid = 0;
    stopped.monitor_pid = 0;
    let mut events = Vec::new();
    if record.oom_killed {
        events.push(event("oom", locked.config(), caller, &[]));
    }
    events.push(event(
        "died",
        locked.config(),
        caller,
        &[("exitCode", record.exit_code.to_string())],
    ));
    locked
        .commit_with(stopped, events, Some(record.exit_code))
        .await?;
    release_runtime(locked).await
}

/// Deletes the container from the runtime and drops the runtime's mount reference:
/// `stopped` becomes `exited` and `created` becomes `configured` (libpod's cleanupRuntime).
pub(crate) async fn release_runtime(locked: &Locked<'_>) -> Result<()> {
    let mut status = locked.status();
    let was_created = status.state == State::Created;
    // Only these are known to the runtime; `exited` and `configured` were released already.
    if !matches!(
        status.state,
        State::Stopped | State::Created | State::Unknown
    ) {
        return Ok(());
    }
    let runtime = locked.engine().backends.runtime.clone();
    let id = locked.id().to_string();
    blocking(move || Ok(runtime.delete(&id, true)?)).await?;
    if was_created {
        // The killed `runc init` still gets its exit file; wait for it so it cannot be taken
        // for the exit of the next run.
        let mut seen = locked.entry.exit_seen.subscribe();
        let _ = tokio::time::timeout(MONITOR_REPORT_LIMIT, seen.wait_for(|s| *s)).await;
        status.pid = 0;
        status.monitor_pid = 0;
    }
    super::filesystem::release_runtime_mount_into(locked, &mut status).await?;
    let path = locked.engine().paths.exit_file(locked.id());
    let _ = std::fs::remove_file(path);
    let next = match status.state {
        State::Stopped => Some(State::Exited),
        State::Created => Some(State::Configured),
        _ => None,
    };
    let events = match next {
        Some(state) => {
            status.state = state;
            vec![event("cleanup", locked.config(), Caller::ENGINE, &[])]
        }
        None => Vec::new(),
    };
    if status != locked.status() || !events.is_empty() {
        locked.commit(status, events).await?;
    }
    Ok(())
}

/// After an exit has been recorded: `AutoRemove`, or the restart policy.
pub(crate) async fn after_exit_locked(locked: &Locked<'_>) -> Result<()> {
    let status = locked.status();
    if status.state != State::Exited {
        return Ok(());
    }
    let config = locked.config();
    if config.auto_remove {
        return super::create::remove_locked(locked, Caller::ENGINE, false).await;
    }
    if !config.restart_policy.wants_restart(
        status.exit_code,
        status.restart_count,
        status.stopped_by_user,
    ) {
        return Ok(());
    }
    // Back off as Docker does (100 ms doubling, at most ~25 s) so a crash loop cannot spin.
    let delay = Duration::from_millis(100 << status.restart_count.min(8));
    let engine = Engine {
        inner: locked.engine().clone(),
    };
    let id = locked.id().to_string();
    let busy = engine.busy();
    tokio::spawn(async move {
        let _busy = busy;
        tokio::time::sleep(delay).await;
        let Ok(locked) = engine.inner().lock(&id).await else {
            return;
        };
        let status = locked.status();
        if status.state != State::Exited || status.stopped_by_user {
            return;
        }
        let mut counted = status.clone();
        counted.restart_count += 1;
        if locked.commit(counted, Vec::new()).await.is_err() {
            return;
        }
        match super::lifecycle::start_locked(&locked, Caller::ENGINE, false).await {
            Ok(()) => {
                let _ = locked
                    .record(vec![event("restart", locked.config(), Caller::ENGINE, &[])])
                    .await;
            }
            Err(error) => {
                tracing::warn!(id = %id, %error, "restart policy could not start the container")
            }
        }
    });
    Ok(())
}
