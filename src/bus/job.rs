//! `org.berth.Engine1.Job` at `/org/berth/Engine1/job/<n>`: a long operation (a pull). Its
//! properties follow the engine job's status; one task per job emits their changes at most
//! ten times a second, then `Finished`, and removes the object once the job is gone.

use std::sync::Arc;
use std::time::Duration;

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection, ObjectPath, OwnedObjectPath};

use super::auth::Action;
use super::call::Served;
use super::error::BusError;
use super::image;
use super::property::{announce, changes, Property, Table};
use super::Shared;
use crate::engine::jobs::{Job, JobState, JobStatus};
use crate::engine::Engine;

pub const INTERFACE: &str = "org.berth.Engine1.Job";

/// Between two `PropertiesChanged` of one job (so each property changes at most ~10/s).
const MIN_INTERVAL: Duration = Duration::from_millis(100);

pub fn path(id: u32) -> OwnedObjectPath {
    super::object_path("job", &id.to_string())
}

pub struct JobObject {
    pub engine: Engine,
    pub shared: Arc<Shared>,
    pub job: Arc<Job>,
}

impl Served for JobObject {
    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }
}

fn result_path(status: &JobStatus) -> OwnedObjectPath {
    match &status.result {
        Some(id) => image::path(id),
        None => OwnedObjectPath::from(ObjectPath::from_static_str_unchecked("/")),
    }
}

/// (blob digest, status, bytes done, bytes total) of each layer.
type LayerTuple = (String, String, u64, u64);

fn layers(status: &JobStatus) -> Vec<LayerTuple> {
    status
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.status.to_string(), l.done, l.total))
        .collect()
}

/// A property of the Job interface announced with `PropertiesChanged`.
type Announced<T> = Property<JobStatus, T>;

const STATE: Announced<String> = Property::new("State", |s| s.state.as_str().into());
const PROGRESS: Announced<f64> = Property::new("Progress", JobStatus::progress);
const BYTES_DONE: Announced<u64> = Property::new("BytesDone", |s| s.bytes_done);
const BYTES_TOTAL: Announced<u64> = Property::new("BytesTotal", |s| s.bytes_total.unwrap_or(0));
const DETAIL: Announced<String> = Property::new("Detail", |s| s.detail.clone());
const RESULT: Announced<OwnedObjectPath> = Property::new("Result", result_path);
const ERROR: Announced<String> = Property::new("Error", |s| s.error.clone());
const LAYERS: Announced<Vec<LayerTuple>> = Property::new("Layers", layers);

/// Every property of the Job interface announced with `PropertiesChanged` (all but `Id`,
/// `Operation` and `Target`): the getters read the same entries.
pub const ANNOUNCED: &Table<JobStatus> = &[
    &STATE,
    &PROGRESS,
    &BYTES_DONE,
    &BYTES_TOTAL,
    &DETAIL,
    &RESULT,
    &ERROR,
    &LAYERS,
];

#[interface(name = "org.berth.Engine1.Job")]
impl JobObject {
    /// Stops a running job: it ends `cancelled`, leaving nothing behind.
    async fn cancel(&self, #[zbus(header)] header: Header<'_>) -> Result<(), BusError> {
        let call = self.call(&header);
        call.authorize(Action::Images).await?;
        Ok(self.engine.cancel_job(self.job.id)?)
    }

    /// The Image once the job completed, or its failure as the D-Bus error.
    async fn wait(&self, #[zbus(header)] header: Header<'_>) -> Result<OwnedObjectPath, BusError> {
        let call = self.call(&header);
        let outcome = self.job.wait().await;
        call.reply(outcome.map(|id| image::path(&id))).await
    }

    #[zbus(signal)]
    pub async fn finished(
        emitter: &SignalEmitter<'_>,
        state: &str,
        result: ObjectPath<'_>,
        error: &str,
    ) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> u32 {
        self.job.id
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn operation(&self) -> String {
        self.job.operation.to_string()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn target(&self) -> String {
        self.job.target.clone()
    }

    #[zbus(property)]
    fn state(&self) -> String {
        STATE.read(&self.job.status())
    }

    #[zbus(property)]
    fn progress(&self) -> f64 {
        PROGRESS.read(&self.job.status())
    }

    #[zbus(property)]
    fn bytes_done(&self) -> u64 {
        BYTES_DONE.read(&self.job.status())
    }

    #[zbus(property)]
    fn bytes_total(&self) -> u64 {
        BYTES_TOTAL.read(&self.job.status())
    }

    #[zbus(property)]
    fn detail(&self) -> String {
        DETAIL.read(&self.job.status())
    }

    #[zbus(property)]
    fn result(&self) -> OwnedObjectPath {
        RESULT.read(&self.job.status())
    }

    #[zbus(property)]
    fn error(&self) -> String {
        ERROR.read(&self.job.status())
    }

    /// (blob digest, `waiting`|`downloading`|`extracting`|`done`|`present`, bytes done,
    /// bytes total) per layer, for progress bars.
    #[zbus(property)]
    fn layers(&self) -> Vec<LayerTuple> {
        LAYERS.read(&self.job.status())
    }
}

/// Serves a new job's object and starts the task that publishes its changes.
pub async fn serve(
    connection: &Connection,
    engine: &Engine,
    shared: &Arc<Shared>,
    job: Arc<Job>,
) -> zbus::Result<()> {
    let object = JobObject {
        engine: engine.clone(),
        shared: shared.clone(),
        job: job.clone(),
    };
    connection.object_server().at(path(job.id), object).await?;
    let connection = connection.clone();
    tokio::spawn(async move {
        if let Err(error) = publish(&connection, &job).await {
            tracing::warn!(job = job.id, %error, "publishing a job's changes failed");
        }
        let _ = connection
            .object_server()
            .remove::<JobObject, _>(path(job.id))
            .await;
    });
    Ok(())
}

/// Emits the job's changes (rate-limited) and `Finished`, until the job is gone.
async fn publish(connection: &Connection, job: &Job) -> zbus::Result<()> {
    let emitter = SignalEmitter::new(connection, path(job.id))?;
    let mut status = job.subscribe();
    let mut last = JobStatus {
        state: JobState::Running,
        bytes_done: 0,
        bytes_total: None,
        detail: "starting".into(),
        result: None,
        error: String::new(),
        layers: Vec::new(),
        gone: false,
    };
    let mut finished_sent = false;
    loop {
        let now = status.borrow_and_update().clone();
        announce(&emitter, INTERFACE, changes(ANNOUNCED, Some(&last), &now)).await?;
        if now.state != JobState::Running && !finished_sent {
            finished_sent = true;
            JobObject::finished(
                &emitter,
                now.state.as_str(),
                result_path(&now).as_ref(),
                &now.error,
            )
            .await?;
        }
        if now.gone {
            return Ok(());
        }
        last = now;
        tokio::time::sleep(MIN_INTERVAL).await;
        if status.changed().await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_announced_property_of_the_xml_is_in_the_change_table() {
        let sample = JobStatus {
            state: JobState::Running,
            bytes_done: 0,
            bytes_total: None,
            detail: String::new(),
            result: None,
            error: String::new(),
            layers: Vec::new(),
            gone: false,
        };
        super::super::property::tests::assert_table_matches_xml(INTERFACE, ANNOUNCED, &sample);
    }
}
