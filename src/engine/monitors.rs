//! Watching the monitors: their exit files as they appear (recorded, then followed by
//! `AutoRemove` or the restart policy), and each live container's monitor through a pidfd —
//! a monitor that dies without writing the exit file settles its container at once
//! (stopped, `died` with the unknown exit code, `Exited`, `Wait` answered, restart policy
//! applied).

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::exit::record_exit_locked;
use super::lifecycle::after_exit_locked;
use super::{blocking, Caller, Engine, EngineError, Result};
use crate::monitor::protocol::read_exit_file;

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
            if let Ok(Some(record)) = read_exit_file(&self.inner().paths.container(&id).exit_file())
            {
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

impl Engine {
    /// Watches the monitor `monitor_pid` of container `id` until it exits, then settles the
    /// container if that monitor was still its monitor and left no exit behind.
    pub(crate) fn watch_monitor(&self, id: &str, monitor_pid: u32) {
        let Some(pidfd) = self.inner().backends.launcher.watch(monitor_pid, id) else {
            return;
        };
        let engine = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(error) = monitor_exited(pidfd).await {
                tracing::warn!(id = %id, %error, "watching a monitor failed");
                return;
            }
            let _busy = engine.busy();
            match engine.settle_lost_monitor(&id, monitor_pid).await {
                Ok(()) | Err(EngineError::Removed(_) | EngineError::NoSuchContainer(_)) => {}
                Err(error) => {
                    tracing::warn!(id = %id, %error, "settling after a lost monitor failed")
                }
            }
        });
    }

    async fn settle_lost_monitor(&self, id: &str, monitor_pid: u32) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        let status = locked.status();
        if status.monitor_pid != monitor_pid || !status.state.has_process() {
            // A later run, or the exit was recorded already.
            return Ok(());
        }
        // A monitor writes the exit file before it exits: an ordinary exit is left to the
        // exit watcher, which records it with its own follow-up.
        let exit_file = self.inner().paths.container(id).exit_file();
        let written = blocking(move || Ok(read_exit_file(&exit_file).ok().flatten())).await?;
        if written.is_some_and(|record| record.pid == status.pid) {
            return Ok(());
        }
        super::maintenance::monitor_lost(&locked, Caller::ENGINE).await?;
        super::lifecycle::after_exit_locked(&locked).await
    }
}

/// Returns once the process behind `pidfd` has exited.
async fn monitor_exited(pidfd: OwnedFd) -> std::io::Result<()> {
    // SAFETY: the AsyncFd owns the pidfd, so the descriptor stays open for as long as it is
    // registered.
    #[allow(unsafe_code)]
    let registered =
        unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) };
    let watched = registered.map_err(std::io::Error::from)?;
    let _ready = watched.readable().await?;
    Ok(())
}
