//! Jobs: long operations (registry pulls) that return at once and are followed through
//! their status. Each job's status lives in a `watch` channel; the bus turns its changes into
//! `PropertiesChanged` at a bounded rate. A finished job stays 60 s, then goes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{Engine, EngineError, Result};

/// How long a finished job stays listed (systemd keeps finished jobs briefly too, so a
/// client that looks late still sees how it ended).
pub const LINGER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// One layer of a pull, for per-layer progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    /// The blob digest.
    pub digest: String,
    /// `waiting`, `downloading`, `extracting`, `done`, or `present` (already stored).
    pub status: &'static str,
    pub done: u64,
    pub total: u64,
}

/// What a job shows.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    pub state: JobState,
    pub bytes_done: u64,
    /// None until the manifests say how much will travel.
    pub bytes_total: Option<u64>,
    pub detail: String,
    /// The image id, once completed.
    pub result: Option<String>,
    /// The failure's text ("" when none).
    pub error: String,
    pub layers: Vec<LayerProgress>,
    /// Removed from the engine's list: its object goes too.
    pub gone: bool,
}

impl JobStatus {
    /// 0–1, or -1 while the total is unknown; 1 once completed. Never decreases: bytes only
    /// grow and the total is set once.
    pub fn progress(&self) -> f64 {
        match (self.state, self.bytes_total) {
            (JobState::Completed, _) => 1.0,
            (_, None) => -1.0,
            (_, Some(0)) => 0.0,
            (_, Some(total)) => (self.bytes_done.min(total) as f64 / total as f64).min(0.999),
        }
    }
}

/// A long operation.
pub struct Job {
    pub id: u32,
    /// `pull`.
    pub operation: &'static str,
    /// The fully qualified reference.
    pub target: String,
    status: watch::Sender<JobStatus>,
    cancel: watch::Sender<bool>,
    /// The failure, kept to answer `Wait` with the same error.
    failure: Mutex<Option<EngineError>>,
}

impl Job {
    pub fn status(&self) -> JobStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<JobStatus> {
        self.status.subscribe()
    }

    /// Set once `Cancel` was called.
    pub(crate) fn cancelled(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut JobStatus)) {
        self.status.send_modify(change);
    }

    /// Records the outcome (once).
    pub(crate) fn finish(&self, outcome: Result<String>) {
        if self.status.borrow().state != JobState::Running {
            return;
        }
        // Before the state changes: a waiter woken by it reads the failure.
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) =
            outcome.as_ref().err().map(rebuild);
        self.status.send_modify(|status| {
            if status.state != JobState::Running {
                return;
            }
            match &outcome {
                Ok(image) => {
                    status.state = JobState::Completed;
                    status.result = Some(image.clone());
                    status.detail = "done".into();
                    if let Some(total) = status.bytes_total {
                        status.bytes_done = total;
                    }
                }
                Err(error) => {
                    status.state = if matches!(error, EngineError::Cancelled(_)) {
                        JobState::Cancelled
                    } else {
                        JobState::Failed
                    };
                    status.error = error.to_string();
                    status.detail = status.state.as_str().into();
                }
            }
        });
    }

    /// Waits for the end: the image id, or the job's failure.
    pub async fn wait(&self) -> Result<String> {
        let mut status = self.subscribe();
        let finished = status
            .wait_for(|s| s.state != JobState::Running)
            .await
            .map(|s| s.clone())
            .map_err(|_| EngineError::Internal("job vanished".into()))?;
        match (finished.state, finished.result) {
            (JobState::Completed, Some(image)) => Ok(image),
            _ => Err(self
                .failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(rebuild)
                .unwrap_or_else(|| EngineError::Internal(finished.error))),
        }
    }
}

/// The same error again (engine errors are not `Clone`): the variants a job can end with,
/// anything else as an internal failure with the same text.
pub(super) fn rebuild(error: &EngineError) -> EngineError {
    match error {
        EngineError::RegistryError(m) => EngineError::RegistryError(m.clone()),
        EngineError::AuthenticationFailed(m) => EngineError::AuthenticationFailed(m.clone()),
        EngineError::Cancelled(m) => EngineError::Cancelled(m.clone()),
        EngineError::NoSuchImage(m) => EngineError::NoSuchImage(m.clone()),
        EngineError::InvalidArgument(m) => EngineError::InvalidArgument(m.clone()),
        EngineError::LimitsExceeded(m) => EngineError::LimitsExceeded(m.clone()),
        EngineError::NoSpace(m) => EngineError::NoSpace(m.clone()),
        other => EngineError::Internal(other.to_string()),
    }
}

/// The engine's jobs, and the layer downloads their pulls share.
#[derive(Default)]
pub(crate) struct Jobs {
    next: AtomicU32,
    list: Mutex<BTreeMap<u32, Arc<Job>>>,
    pub(crate) downloads: super::pull::downloads::Downloads,
}

impl Jobs {
    pub(crate) fn create(&self, operation: &'static str, target: String) -> Arc<Job> {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let job = Arc::new(Job {
            id,
            operation,
            target,
            status: watch::Sender::new(JobStatus {
                state: JobState::Running,
                bytes_done: 0,
                bytes_total: None,
                detail: "starting".into(),
                result: None,
                error: String::new(),
                layers: Vec::new(),
                gone: false,
            }),
            cancel: watch::Sender::new(false),
            failure: Mutex::new(None),
        });
        self.lock().insert(id, job.clone());
        job
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Arc<Job>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops a job from the list and tells its followers it is gone.
    pub(crate) fn remove(&self, id: u32) {
        if let Some(job) = self.lock().remove(&id) {
            job.status.send_modify(|status| status.gone = true);
        }
    }
}

impl Engine {
    /// Ids of the jobs not yet gone.
    pub fn job_ids(&self) -> Vec<u32> {
        self.inner().jobs.lock().keys().copied().collect()
    }

    pub fn job(&self, id: u32) -> Result<Arc<Job>> {
        self.inner()
            .jobs
            .lock()
            .get(&id)
            .cloned()
            .ok_or_else(|| EngineError::InvalidArgument(format!("no job {id}")))
    }

    /// Asks a running job to stop; it ends `cancelled` with nothing left behind. A finished
    /// job is not changed.
    pub fn cancel_job(&self, id: u32) -> Result<()> {
        let job = self.job(id)?;
        job.cancel.send_replace(true);
        Ok(())
    }

    /// Runs `work` as the job's body: holds the service busy meanwhile, records the outcome,
    /// and removes the job [`LINGER`] after it finished.
    pub(crate) fn spawn_job(
        &self,
        job: Arc<Job>,
        work: impl std::future::Future<Output = Result<String>> + Send + 'static,
    ) {
        let engine = self.clone();
        tokio::spawn(async move {
            let busy = engine.busy();
            let outcome = work.await;
            if let Err(error) = &outcome {
                tracing::info!(job = job.id, target = %job.target, %error, "job failed");
            }
            job.finish(outcome);
            drop(busy);
            tokio::time::sleep(LINGER).await;
            engine.inner().jobs.remove(job.id);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_unknown_then_grows_and_ends_at_one() {
        let jobs = Jobs::default();
        let job = jobs.create("pull", "r/x:1".into());
        assert_eq!(job.status().progress(), -1.0);
        job.update(|s| s.bytes_total = Some(100));
        job.update(|s| s.bytes_done = 50);
        assert_eq!(job.status().progress(), 0.5);
        job.update(|s| s.bytes_done = 100);
        assert!(job.status().progress() < 1.0, "not 1 before it completed");
        job.finish(Ok("abc".into()));
        assert_eq!(job.status().progress(), 1.0);
        assert_eq!(job.status().state, JobState::Completed);
        // A second outcome changes nothing.
        job.finish(Err(EngineError::Cancelled("late".into())));
        assert_eq!(job.status().state, JobState::Completed);
    }

    #[tokio::test]
    async fn wait_gives_the_failure_with_its_kind() {
        let jobs = Jobs::default();
        let job = jobs.create("pull", "r/x:1".into());
        job.finish(Err(EngineError::AuthenticationFailed("denied".into())));
        assert_eq!(job.status().state, JobState::Failed);
        assert!(matches!(
            job.wait().await,
            Err(EngineError::AuthenticationFailed(_))
        ));
        let cancelled = jobs.create("pull", "r/x:1".into());
        cancelled.finish(Err(EngineError::Cancelled("pull cancelled".into())));
        assert_eq!(cancelled.status().state, JobState::Cancelled);
        jobs.remove(job.id);
        assert!(job.status().gone);
    }
}
