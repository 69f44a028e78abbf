//! Lost monitors: each live container's monitor is watched through a pidfd, and a monitor
//! that dies without writing the exit file settles its container at once (stopped, `died`
//! with the unknown exit code, `Exited`, `Wait` answered, restart policy applied).

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

use super::{blocking, Caller, Engine, EngineError};
use crate::monitor::protocol::read_exit_file;

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

    async fn settle_lost_monitor(&self, id: &str, monitor_pid: u32) -> super::Result<()> {
        let locked = self.inner().lock(id).await?;
        let status = locked.status();
        if status.monitor_pid != monitor_pid || !status.state.has_process() {
            // A later run, or the exit was recorded already.
            return Ok(());
        }
        // A monitor writes the exit file before it exits: an ordinary exit is left to the
        // exit watcher, which records it with its own follow-up.
        let exit_file = self.inner().paths.exit_file(id);
        let written = blocking(move || Ok(read_exit_file(&exit_file).ok().flatten())).await?;
        if written.is_some_and(|record| record.pid == status.pid) {
            return Ok(());
        }
        super::maintenance::monitor_lost(&locked, Caller::ENGINE).await?;
        super::exit::after_exit_locked(&locked).await
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
