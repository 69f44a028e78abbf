//! Exits: ending a run (its signal, SIGKILL), recording the exit from the monitor's exit
//! file with its events, and the cleanup that follows. What comes after (`AutoRemove`, the
//! restart policy) is the lifecycle's; the exit watcher is in `monitors`.

use std::time::Duration;

use super::state::RunEnd;
use super::{blocking, event, Caller, EngineError, Entry, Locked, NewEvent, Result, State};
use crate::clock::now_micros;
use crate::monitor::protocol::read_exit_file;

/// How long cleanup of a created container waits for its monitor to report the kill.
const MONITOR_REPORT_LIMIT: Duration = Duration::from_secs(5);

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
    let path = locked.paths().exit_file();
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
        let events = vec![checkpoint_event(locked, caller)];
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
    clean_up_exit(locked).await
}

/// The cleanup after a recorded exit: the runtime released (`exited`). A failure is recorded
/// in `Error` rather than returned: the container stays `stopped`, settled, until a verb
/// (Cleanup, Start, Remove) tries again.
pub(crate) async fn clean_up_exit(locked: &Locked<'_>) -> Result<()> {
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
    let _ = std::fs::remove_file(locked.paths().exit_file());
    status.released()?;
    locked
        .commit(status, vec![event("cleanup", locked.config(), caller, &[])])
        .await?;
    Ok(true)
}

/// The `checkpoint` event of a dump that took the process.
pub(crate) fn checkpoint_event(locked: &Locked<'_>, caller: Caller) -> NewEvent {
    event("checkpoint", locked.config(), caller, &[])
}

/// How long a SIGKILLed process may take to be reaped before `Stop` gives up.
const KILL_GRACE: Duration = Duration::from_secs(30);

/// Signals the container's main process. A process that has just exited on its own (the
/// runtime says it is gone, its exit file may still be on the way) is not a failure.
pub(crate) async fn send_signal(locked: &Locked<'_>, signal: i32) -> Result<()> {
    let runtime = locked.engine().backends.runtime.clone();
    let id = locked.id().to_string();
    blocking(move || match runtime.kill(&id, signal) {
        Ok(()) => Ok(()),
        Err(error) => match runtime.state(&id) {
            Ok(None | Some(crate::runtime::RuntimeStatus::Stopped)) => Ok(()),
            _ => Err(error.into()),
        },
    })
    .await
}

/// Waits for the exit file of the run with main pid `pid` up to `timeout` seconds, then
/// SIGKILLs and waits again.
pub(crate) async fn await_exit_or_kill(
    backends: &super::Backends,
    entry: &super::Entry,
    pid: u32,
    timeout: u32,
) -> Result<()> {
    if super::exit::exit_file_written(entry, pid, Duration::from_secs(u64::from(timeout))).await {
        return Ok(());
    }
    let runtime = backends.runtime.clone();
    let id = entry.config.id.clone();
    let killed =
        blocking(move || Ok(runtime.kill(&id, nix::sys::signal::Signal::SIGKILL as i32)?)).await;
    if super::exit::exit_file_written(entry, pid, KILL_GRACE).await {
        return Ok(());
    }
    killed.and(Err(EngineError::Runtime(format!(
        "container {} did not exit {}s after SIGKILL",
        entry.config.id,
        KILL_GRACE.as_secs()
    ))))
}

/// SIGKILLs a live container and records its exit (force-remove); no-op for others.
pub(crate) async fn kill_and_reap(locked: &Locked<'_>, caller: Caller) -> Result<()> {
    let status = locked.status();
    if status.pid == 0 {
        return Ok(());
    }
    if status.state == State::Paused {
        let runtime = locked.engine().backends.runtime.clone();
        let id = locked.id().to_string();
        let _ = blocking(move || Ok(runtime.resume(&id)?)).await;
    }
    let _ = send_signal(locked, nix::sys::signal::Signal::SIGKILL as i32).await;
    await_exit_or_kill(&locked.engine().backends, &locked.entry, status.pid, 0).await?;
    super::exit::record_exit_locked(locked, caller, Vec::new()).await?;
    Ok(())
}
