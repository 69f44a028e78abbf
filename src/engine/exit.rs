//! Exits: learned from the monitors' exit files, recorded with their events, followed by
//! cleanup, `AutoRemove` and the restart policy.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::state::RunEnd;
use super::{blocking, event, Caller, Engine, EngineError, Entry, Locked, NewEvent, Result, State};
use crate::clock::now_micros;
use crate::monitor::protocol::read_exit_file;

/// How long cleanup of a created container waits for its monitor to report the kill.
const MONITOR_REPORT_LIMIT: Duration = Duration::from_secs(5);

impl Engine {
    /// Handles every exit file the watcher reports, each in its own task.
    pub(crate) async fn follow_exits(&self, mut exits: mpsc::UnboundedReceiver<String>) {
        while let Some(name) = exits.recv().await {
            // `<id>.<session>`: an exec session's exit.
            if let Some((id, session)) = name.split_once('.') {
                let (engine, id, session) = (self.clone(), id.to_string(), session.to_string());
                let busy = self.busy();
                tokio::spawn(async move {
                    let _busy = busy;
                    match engine.handle_exec_exit(&id, &session).await {
                        Ok(()) | Err(EngineError::Removed(_) | EngineError::NoSuchContainer(_)) => {
                        }
                        Err(error) => {
                            tracing::warn!(%id, %session, %error, "recording an exec exit failed")
                        }
                    }
                });
                continue;
            }
            let id = name;
            let Ok(entry) = self.inner().entry(&id) else {
                continue;
            };
            // Wakes a `Stop` waiting on this exit before the lock is free.
            if let Ok(Some(record)) = read_exit_file(&self.inner().paths.exit_file(&id)) {
                entry.exited_pid.send_replace(record.pid);
            }
            let engine = self.clone();
            let busy = self.busy();
            tokio::spawn(async move {
                let _busy = busy;
                match engine.handle_exit(&id).await {
                    // A force-remove recorded it and took the container away meanwhile.
                    Ok(()) | Err(EngineError::Removed(_) | EngineError::NoSuchContainer(_)) => {}
                    Err(error) => tracing::warn!(id = %id, %error, "recording an exit failed"),
                }
            });
        }
    }

    pub(crate) async fn handle_exit(&self, id: &str) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        if record_exit_locked(&locked, Caller::ENGINE, Vec::new()).await? {
            after_exit_locked(&locked).await?;
        }
        Ok(())
    }
}

/// Waits until the monitor of the run with main process `pid` has written its exit file;
/// false on timeout.
pub(crate) async fn exit_file_written(entry: &Entry, pid: u32, limit: Duration) -> bool {
    let mut exited = entry.exited_pid.subscribe();
    tokio::time::timeout(limit, exited.wait_for(|exited| *exited == pid))
        .await
        .is_ok_and(|result| result.is_ok())
}

/// Records the exit in the container's exit file, if it belongs to the current run: state
/// `stopped` with the exit code and a `died` event (and `also`, in the same transaction),
/// `Exited` announced, then cleanup to `exited`. Returns whether this call recorded it:
/// a second call, or a stale file, changes nothing.
pub(crate) async fn record_exit_locked(
    locked: &Locked<'_>,
    caller: Caller,
    also: Vec<NewEvent>,
) -> Result<bool> {
    let status = locked.status();
    let path = locked.engine().paths.exit_file(locked.id());
    let record = blocking(move || {
        read_exit_file(&path).map_err(|e| EngineError::Internal(format!("exit file: {e}")))
    })
    .await?;
    let Some(record) = record else {
        return Ok(false);
    };
    if !status.state.has_process() || record.pid != status.pid {
        tracing::debug!(id = %locked.id(), pid = record.pid, "ignoring a stale exit file");
        return Ok(false);
    }
    if record.checkpointed {
        // Not a death: no `died`, no `Exited`, and nothing for the caller's after-exit
        // handling (AutoRemove, restart policy) to do.
        let events = vec![super::checkpoint::checkpoint_event(locked, caller)];
        let end = RunEnd::Checkpoint { at: now_micros() };
        record_stopped(locked, end, record.exited_at, events).await?;
        return Ok(false);
    }
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
    events.extend(also);
    let end = RunEnd::Exit {
        code: record.exit_code,
        oom_killed: record.oom_killed,
    };
    record_stopped(locked, end, record.exited_at, events).await?;
    Ok(true)
}

/// Commits `stopped` with its end and events (announcing `Exited` for an exit), then cleans
/// up. A failed cleanup leaves the container `stopped` with the failure in `Error`; the end
/// itself is recorded either way.
pub(crate) async fn record_stopped(
    locked: &Locked<'_>,
    end: RunEnd,
    finished_at: u64,
    events: Vec<NewEvent>,
) -> Result<()> {
    let exited = match end {
        RunEnd::Exit { code, .. } => Some(code),
        RunEnd::Checkpoint { .. } => None,
    };
    let mut stopped = locked.status();
    let mut all = super::exec::apply_exec_exits(locked, &mut stopped, None).await?;
    all.extend(super::exec::end_unreported_sessions(
        locked.config(),
        &mut stopped,
        finished_at,
    ));
    all.extend(events);
    // The network goes with the process, before anyone is told it stopped.
    super::networking::detach_into(locked, &mut stopped).await;
    stopped.stopped(end, finished_at)?;
    locked.commit_with(stopped, all, exited).await?;
    if let Err(error) = release_runtime(locked, Caller::ENGINE).await {
        tracing::warn!(id = %locked.id(), %error, "cleanup after an exit failed");
        let mut status = locked.status();
        status.cleanup_failed(error.to_string())?;
        locked.commit(status, Vec::new()).await?;
    }
    Ok(())
}

/// Deletes the container from the runtime and drops the runtime's mount reference:
/// `stopped` becomes `exited` and `created` becomes `configured` (libpod's cleanupRuntime),
/// with a `cleanup` event. Returns whether it did anything.
pub(crate) async fn release_runtime(locked: &Locked<'_>, caller: Caller) -> Result<bool> {
    let mut status = locked.status();
    // Only these are known to the runtime; `exited` and `configured` were released already.
    if status.state.released().is_none() {
        return Ok(false);
    }
    let runtime = locked.engine().backends.runtime.clone();
    let id = locked.id().to_string();
    blocking(move || Ok(runtime.delete(&id, true)?)).await?;
    if status.pid != 0 {
        // The killed process still gets its exit file; wait for it, so that it cannot be
        // taken for the exit of the next run.
        exit_file_written(&locked.entry, status.pid, MONITOR_REPORT_LIMIT).await;
    }
    super::networking::detach_into(locked, &mut status).await;
    super::filesystem::release_runtime_mount_into(locked, &mut status).await?;
    let _ = std::fs::remove_file(locked.engine().paths.exit_file(locked.id()));
    status.released()?;
    locked
        .commit(status, vec![event("cleanup", locked.config(), caller, &[])])
        .await?;
    Ok(true)
}

/// After an exit has been recorded: `AutoRemove`, or the restart policy. Runs once per exit,
/// from whoever recorded it (the exit watcher or a plain `Stop`), never inside a composite
/// verb such as `Restart`.
pub(crate) async fn after_exit_locked(locked: &Locked<'_>) -> Result<()> {
    let status = locked.status();
    if status.state != State::Exited || locked.entry.restarting.load(Ordering::SeqCst) {
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
    locked.entry.restart_pending.store(true, Ordering::SeqCst);
    tokio::spawn(async move {
        let _busy = busy;
        tokio::time::sleep(delay).await;
        let Ok(locked) = engine.inner().lock(&id).await else {
            return;
        };
        // A `Stop`, `Start` or `Remove` meanwhile cancels the pending restart.
        if !locked.entry.restart_pending.swap(false, Ordering::SeqCst)
            || locked.status().state != State::Exited
        {
            return;
        }
        let mut counted = locked.status();
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
