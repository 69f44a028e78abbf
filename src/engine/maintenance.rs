//! Cleanup, Sync, Refresh and Batch: the seed's verbs that repair or group others.

use std::time::Duration;

use super::state::RunEnd;
use super::{blocking, event, Caller, Engine, EngineError, Locked, Result, State, Verb};
use crate::runtime::RuntimeStatus;

/// One step of a `Batch`, run under the container's lock.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOp {
    Init,
    Start { recursive: bool },
    Stop { timeout: Option<u32> },
    Restart { timeout: Option<u32> },
    Kill { signal: String },
    Pause,
    Unpause,
    Cleanup,
    Sync,
    Refresh,
}

impl Engine {
    pub async fn cleanup(&self, caller: Caller, id: &str) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        cleanup_locked(&locked, caller).await
    }

    pub async fn sync(&self, caller: Caller, id: &str) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        sync_locked(&locked, caller).await
    }

    pub async fn refresh(&self, caller: Caller, id: &str) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        refresh_locked(&locked, caller).await
    }

    /// Runs `ops` in order under one hold of the lock; the first failure is returned with
    /// its index and the rest are not run.
    pub async fn batch(
        &self,
        caller: Caller,
        id: &str,
        ops: Vec<BatchOp>,
    ) -> std::result::Result<(), (usize, EngineError)> {
        let locked = self.inner().lock(id).await.map_err(|e| (0, e))?;
        for (index, op) in ops.into_iter().enumerate() {
            run_op(&locked, caller, op).await.map_err(|e| (index, e))?;
        }
        Ok(())
    }
}

async fn run_op(locked: &Locked<'_>, caller: Caller, op: BatchOp) -> Result<()> {
    use super::lifecycle::*;
    let default_timeout = locked.config().stop_timeout;
    match op {
        BatchOp::Init => init_locked(locked, caller).await,
        BatchOp::Start { recursive } => start_locked(locked, caller, recursive).await,
        BatchOp::Stop { timeout } => {
            stop_locked(locked, caller, timeout.unwrap_or(default_timeout)).await
        }
        BatchOp::Restart { timeout } => {
            restart_locked(locked, caller, timeout.unwrap_or(default_timeout)).await
        }
        BatchOp::Kill { signal } => kill_locked(locked, caller, &signal).await,
        BatchOp::Pause => pause_locked(locked, caller).await,
        BatchOp::Unpause => unpause_locked(locked, caller).await,
        BatchOp::Cleanup => cleanup_locked(locked, caller).await,
        BatchOp::Sync => sync_locked(locked, caller).await,
        BatchOp::Refresh => refresh_locked(locked, caller).await,
    }
}

/// libpod's Cleanup: refuses running and paused containers; deletes the runtime state and
/// drops the runtime's mount.
pub(crate) async fn cleanup_locked(locked: &Locked<'_>, caller: Caller) -> Result<()> {
    locked.check(Verb::Cleanup)?;
    // The seed's rule; sessions end with the container, so this holds only in a race.
    if locked.status().exec_sessions.values().any(|s| s.running) {
        return Err(EngineError::InvalidArgument(format!(
            "container {} has running exec sessions",
            locked.id()
        )));
    }
    super::exit::record_exit_locked(locked, caller, Vec::new()).await?;
    if !super::exit::release_runtime(locked, caller).await? {
        locked
            .record(vec![event("cleanup", locked.config(), caller, &[])])
            .await?;
    }
    Ok(())
}

/// How long `Sync` gives a live monitor to write the exit file of a process the runtime
/// already reports gone.
const EXIT_FILE_GRACE: Duration = Duration::from_secs(5);

/// Re-reads the runtime's view. A process the runtime says is gone is recorded from its exit
/// file (waiting for a live monitor to write it); a pause done behind our back is adopted;
/// a container whose monitor is gone is stopped, since its exit could never be learned.
pub(crate) async fn sync_locked(locked: &Locked<'_>, caller: Caller) -> Result<()> {
    let status = locked.status();
    if status.state.has_process() {
        let backends = &locked.engine().backends;
        let monitor_alive = backends.launcher.is_alive(status.monitor_pid, locked.id());
        let runtime = backends.runtime.clone();
        let id = locked.id().to_string();
        let seen = blocking(move || Ok(runtime.state(&id)?)).await?;
        match seen {
            Some(RuntimeStatus::Stopped) | None => {
                if monitor_alive {
                    super::exit::exit_file_written(&locked.entry, status.pid, EXIT_FILE_GRACE)
                        .await;
                }
                if !super::exit::record_exit_locked(locked, caller, Vec::new()).await? {
                    monitor_lost(locked, caller).await?;
                }
            }
            Some(_) if !monitor_alive => monitor_lost(locked, caller).await?,
            Some(RuntimeStatus::Paused) if status.state == State::Running => {
                let mut paused = status.clone();
                paused.paused()?;
                locked.commit(paused, Vec::new()).await?;
            }
            Some(RuntimeStatus::Running) if status.state == State::Paused => {
                let mut running = status.clone();
                running.resumed()?;
                locked.commit(running, Vec::new()).await?;
            }
            Some(_) => {}
        }
    }
    locked
        .record(vec![event("sync", locked.config(), caller, &[])])
        .await
}

/// The monitor is gone (killed, or a reboot wiped `--runroot`) without an exit file: nobody
/// can learn this process's exit any more, so it is stopped and the exit recorded as
/// unknown (-1) rather than left to hang every `Wait`.
pub(crate) async fn monitor_lost(locked: &Locked<'_>, caller: Caller) -> Result<()> {
    tracing::warn!(id = %locked.id(), "monitor lost: stopping the container, its exit code is unknown");
    // Killed here so that the `runc delete` of the cleanup finds it gone and need not wait
    // for it (`runc delete --force` of a live container polls for its end).
    let runtime = locked.engine().backends.runtime.clone();
    let id = locked.id().to_string();
    let _ =
        blocking(move || Ok(runtime.kill(&id, nix::sys::signal::Signal::SIGKILL as i32)?)).await;
    let died = event(
        "died",
        locked.config(),
        caller,
        &[("exitCode", "-1".to_string())],
    );
    let end = RunEnd::Exit {
        code: -1,
        oom_killed: false,
    };
    super::exit::record_stopped(locked, end, crate::clock::now_micros(), vec![died]).await?;
    let mut status = locked.status();
    status.error =
        "the container's monitor was lost; it was stopped and its exit code is unknown".into();
    locked.commit(status, Vec::new()).await
}

/// libpod's Refresh: unwind the container to `configured`, then bring it back to the state
/// it was in (created, running or paused).
pub(crate) async fn refresh_locked(locked: &Locked<'_>, caller: Caller) -> Result<()> {
    use super::lifecycle::*;
    let before = locked.check(Verb::Refresh)?;
    if before == State::Paused {
        unpause_locked(locked, caller).await?;
    }
    if Verb::Stop.accepts(locked.status().state) {
        stop_locked(locked, caller, locked.config().stop_timeout).await?;
    }
    super::exit::release_runtime(locked, caller).await?;
    let mut status = locked.status();
    status.refreshed()?;
    locked
        .commit(status, vec![event("refresh", locked.config(), caller, &[])])
        .await?;
    match before {
        State::Created => init_locked(locked, caller).await,
        State::Running | State::Stopping => start_locked(locked, caller, false).await,
        State::Paused => {
            start_locked(locked, caller, false).await?;
            pause_locked(locked, caller).await
        }
        _ => Ok(()),
    }
}
