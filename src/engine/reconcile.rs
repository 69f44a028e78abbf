//! Start-up: every container in the database is reconciled with its monitor, its exit file
//! and the runtime (containerd's shim re-adoption). Cheap checks only — /proc and a stat —
//! so a start-up with many containers stays fast.

use super::recover::Survey;
use super::{Caller, Engine, State};

impl Engine {
    pub(crate) async fn reconcile(&self) {
        self.sweep_orphans().await;
        let inner = self.inner().clone();
        let survey = super::blocking(move || Ok(Survey::take(&inner)))
            .await
            .unwrap_or_default();
        for id in self.container_ids() {
            if let Err(error) = self.reconcile_one(&id, &survey).await {
                tracing::warn!(id = %id, %error, "reconciling a container failed");
            }
        }
    }

    async fn reconcile_one(&self, id: &str, survey: &Survey) -> super::Result<()> {
        let locked = self.inner().lock(id).await?;
        let status = locked.status();
        if status.state == State::Removing {
            drop(locked);
            return self.remove(Caller::ENGINE, id, true).await;
        }
        if status.state == State::Stopped {
            // The exit was recorded but not cleaned up (berthd died, or a reboot wiped
            // `--runroot`): release the runtime and the mount now.
            super::exit::clean_up_exit(&locked).await?;
            return super::lifecycle::after_exit_locked(&locked).await;
        }
        if !status.state.has_process()
            && !super::recover::recover_unrecorded_run(&locked, survey).await?
        {
            return Ok(());
        }
        let status = locked.status();
        // Sessions that ended while berthd was away.
        let mut with_sessions = status.clone();
        let events = super::exec::apply_exec_exits(&locked, &mut with_sessions, None).await?;
        if !events.is_empty() {
            locked.commit(with_sessions, events).await?;
        }
        // An exit that happened while berthd was away: record it now, in order.
        if super::exit::record_exit_locked(&locked, Caller::ENGINE, Vec::new()).await? {
            return super::lifecycle::after_exit_locked(&locked).await;
        }
        if self
            .inner()
            .backends
            .launcher
            .is_alive(status.monitor_pid, id)
        {
            // Adopted: the monitor still watches it and will write its exit file.
            self.watch_monitor(id, status.monitor_pid);
            if status.state == State::Stopping {
                let mut running = status.clone();
                running.stop_abandoned()?;
                locked.commit(running, Vec::new()).await?;
            }
            return super::recover::adopt_runtime_state(&locked).await;
        }
        // The monitor is gone: the runtime tells whether the process went too.
        super::maintenance::sync_locked(&locked, Caller::ENGINE).await?;
        super::lifecycle::after_exit_locked(&locked).await
    }
}
