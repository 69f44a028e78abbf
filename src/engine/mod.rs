//! The domain: containers, their state machine and verbs, events — no zbus here.
//!
//! Each container is an [`Entry`]: its immutable config, a lock every verb takes, and its
//! status in a `watch` channel that readers (properties, `Wait`) borrow without the lock.
//! A transition writes the status and its events in one SQLite transaction, then announces
//! them as [`Notification`]s in sequence order; the bus layer turns those into signals.

mod attach;
mod checkpoint;
pub mod config;
mod create;
mod error;
mod exec;
mod exit;
#[cfg(test)]
mod fake;
mod filesystem;
mod health;
mod images;
mod inspect;
pub mod jobs;
mod lifecycle;
mod logs;
mod maintenance;
mod monitors;
mod networking;
mod paths;
mod pull;
mod reconcile;
mod recover;
pub mod state;
#[cfg(test)]
mod tests;
mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, watch, Mutex, OwnedMutexGuard};

/// The image types the bus speaks of, so that `bus/` reaches storage only through the engine.
pub use crate::storage::images::{ImageRecord, ImportOptions};
pub use crate::storage::volumes::VolumeRecord;
pub use attach::{AttachOptions, Attached};
pub use checkpoint::{criu_problem, CheckpointRequest, RestoreRequest};
pub use config::{ContainerConfig, CreateRequest, HealthRequest, MountSpec};
pub use error::EngineError;
pub use exec::ExecRequest;
pub use logs::LogOptions;
pub use maintenance::BatchOp;
pub use networking::NetworkRequest;
pub use paths::{ContainerPaths, Paths};
pub use pull::{PullOptions, PullPolicy};
pub use state::{ContainerStatus, ExecSession, State, Verb};

use crate::clock::now_micros;
use crate::db::{Change, Db, EventRecord, NewEvent};
use crate::monitor::control::{ControlError, Reply, Request};
use crate::monitor::launcher::MonitorLauncher;
use crate::runtime::OciRuntime;
use crate::storage::rootfs::Mounter;

pub type Result<T> = std::result::Result<T, EngineError>;

/// Who asked: recorded in the events a call produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
}

impl Caller {
    /// berthd itself (restart policies, reconciliation).
    pub const ENGINE: Caller = Caller { uid: u32::MAX };
}

/// What the engine announces, in commit order.
#[derive(Debug, Clone)]
pub enum Notification {
    Added {
        id: String,
    },
    Status {
        id: String,
        status: Box<ContainerStatus>,
    },
    Event(EventRecord),
    Exited {
        id: String,
        exit_code: i32,
    },
    Removed {
        id: String,
    },
    ImageAdded {
        id: String,
    },
    /// An image's names changed.
    ImageChanged {
        id: String,
    },
    ImageRemoved {
        id: String,
    },
    VolumeAdded {
        name: String,
    },
    /// A volume's `Containers` changed.
    VolumeChanged {
        name: String,
    },
    VolumeRemoved {
        name: String,
    },
}

/// Sends notifications and counts them, so a caller can wait until the bus has published
/// everything its call produced (signals before the method reply, as systemd does).
pub(crate) struct Notifier {
    sender: mpsc::UnboundedSender<Notification>,
    sent: std::sync::atomic::AtomicU64,
}

impl Notifier {
    pub(crate) fn send(&self, notification: Notification) {
        if self.sender.send(notification).is_ok() {
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The seams to the outside world, real or fake.
pub struct Backends {
    pub runtime: Arc<dyn OciRuntime>,
    pub launcher: Arc<dyn MonitorLauncher>,
    pub mounter: Arc<dyn Mounter>,
    pub network: Arc<dyn crate::network::NetworkDriver>,
}

/// Where the engine keeps things.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub root: PathBuf,
    pub runroot: PathBuf,
    /// Host path of the init binary for the `Init` spec key (catatonit), if there is one.
    pub init_binary: Option<PathBuf>,
    /// `overlay` or `vfs` (shown as the Manager's `StorageDriver`).
    pub storage_driver: String,
    /// Containers' cgroups are systemd scopes in `machine.slice` (runc's systemd driver),
    /// not `berth/<id>` directories (cgroupfs).
    pub systemd_cgroups: bool,
}

/// One container: config, verb lock and observable status.
pub(crate) struct Entry {
    pub config: ContainerConfig,
    lock: Arc<Mutex<()>>,
    status: watch::Sender<ContainerStatus>,
    /// The main pid of the last run whose exit file appeared (before the exit is recorded):
    /// what `Stop` waits on, so it needs no lock.
    exited_pid: watch::Sender<u32>,
    /// The restart policy has a start scheduled; a user's verb cancels it.
    restart_pending: std::sync::atomic::AtomicBool,
    /// A `Restart` waits for the stop without the lock: the exit it causes is not followed
    /// by AutoRemove or the restart policy.
    restarting: std::sync::atomic::AtomicBool,
}

impl Entry {
    fn new(config: ContainerConfig, status: ContainerStatus) -> Arc<Entry> {
        Arc::new(Entry {
            config,
            lock: Arc::new(Mutex::new(())),
            status: watch::Sender::new(status),
            exited_pid: watch::Sender::new(0),
            restart_pending: std::sync::atomic::AtomicBool::new(false),
            restarting: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn status(&self) -> ContainerStatus {
        self.status.borrow().clone()
    }
}

/// A container whose lock is held: every transition goes through here.
pub(crate) struct Locked<'a> {
    engine: &'a Arc<Inner>,
    pub entry: Arc<Entry>,
    _guard: OwnedMutexGuard<()>,
}

pub(crate) struct Inner {
    db: Arc<Db>,
    backends: Backends,
    options: EngineOptions,
    paths: Paths,
    containers: RwLock<HashMap<String, Arc<Entry>>>,
    notify: Arc<Notifier>,
    /// Image records by id; their layers are in `layers`.
    images: RwLock<HashMap<String, crate::storage::images::ImageRecord>>,
    /// Serialises image changes (imports, tags, removals with their layer deletion).
    images_lock: Mutex<()>,
    layers: crate::storage::images::LayerStore,
    /// Named volumes: records, directories and their lock.
    volumes: volumes::Volumes,
    /// Long operations (pulls) in flight or recently finished.
    jobs: jobs::Jobs,
    /// Calls and background tasks in flight (for `--idle-timeout`).
    busy: AtomicUsize,
    /// Bumped whenever `busy` changes, so idling is awaited, not polled.
    activity: watch::Sender<u64>,
    networks: networking::NetworkState,
}

/// Cheap to clone handle on the engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Held while a call or task is in flight; the service only idles out with none.
pub struct BusyGuard {
    inner: Arc<Inner>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.inner.busy.fetch_sub(1, Ordering::SeqCst);
        self.inner.activity.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Engine {
    /// Opens the database and loads every container. Exits are not looked at yet: call
    /// [`Engine::start`] once the notifications have a reader.
    pub fn open(
        options: EngineOptions,
        backends: Backends,
    ) -> Result<(Engine, mpsc::UnboundedReceiver<Notification>)> {
        let paths = Paths::new(&options.root, &options.runroot);
        for dir in paths.dirs_to_create() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| EngineError::Internal(format!("create {}: {e}", dir.display())))?;
        }
        // Only root may enter: layers hold image files as the image made them, setuid ones
        // included (podman's storage is 0700 for the same reason).
        for dir in [&options.root, &options.runroot] {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(|e| EngineError::Internal(format!("chmod {}: {e}", dir.display())))?;
        }
        let db = Db::open(&options.root.join("berth.db"))?;
        let mut containers = HashMap::new();
        for row in db.containers()? {
            let config: ContainerConfig = serde_json::from_str(&row.config)
                .map_err(|e| EngineError::Internal(format!("container {} config: {e}", row.id)))?;
            let status: ContainerStatus = serde_json::from_str(&row.status)
                .map_err(|e| EngineError::Internal(format!("container {} status: {e}", row.id)))?;
            containers.insert(row.id.clone(), Entry::new(config, status));
        }
        let mut images = HashMap::new();
        for (id, record) in db.images()? {
            let image: crate::storage::images::ImageRecord = serde_json::from_str(&record)
                .map_err(|e| EngineError::Internal(format!("image {id}: {e}")))?;
            images.insert(id, image);
        }
        let layers = crate::storage::images::LayerStore::new(&options.root.join("layers"));
        let referenced = images
            .values()
            .flat_map(|image: &crate::storage::images::ImageRecord| image.layers.clone())
            .collect();
        layers
            .sweep(&referenced)
            .map_err(|e| EngineError::Internal(format!("layer store: {e}")))?;
        let volumes = volumes::Volumes::open(&options.root, &db, &containers)?;
        let networks =
            networking::NetworkState::load(&db, backends.network.clone(), &options.root)?;
        let (sender, notifications) = mpsc::unbounded_channel();
        let notify = Arc::new(Notifier {
            sender,
            sent: std::sync::atomic::AtomicU64::new(0),
        });
        let inner = Arc::new(Inner {
            db: Arc::new(db),
            backends,
            options,
            paths,
            containers: RwLock::new(containers),
            notify,
            images: RwLock::new(images),
            images_lock: Mutex::new(()),
            layers,
            volumes,
            jobs: jobs::Jobs::default(),
            busy: AtomicUsize::new(0),
            activity: watch::Sender::new(0),
            networks,
        });
        Ok((Engine { inner }, notifications))
    }

    /// Watches for exits, then reconciles every container with its monitor, exit file and
    /// the runtime (adopting the live ones, recording exits missed while berthd was down).
    pub async fn start_up(&self) -> Result<()> {
        let exits = crate::monitor::exits::watch(&self.inner.paths.exits_dir())
            .map_err(|e| EngineError::Internal(format!("watch exits: {e}")))?;
        let engine = self.clone();
        tokio::spawn(async move { engine.follow_exits(exits).await });
        self.reconcile().await;
        self.follow_sidecars().await?;
        self.hold_published_ports();
        Ok(())
    }

    /// How many notifications have been sent so far; the publisher counts how many it has
    /// published, and a call waits for the two to meet before replying.
    pub fn notifications_sent(&self) -> u64 {
        self.inner.notify.sent.load(Ordering::SeqCst)
    }

    pub fn busy(&self) -> BusyGuard {
        self.inner.busy.fetch_add(1, Ordering::SeqCst);
        self.inner.activity.send_modify(|n| *n = n.wrapping_add(1));
        BusyGuard {
            inner: self.inner.clone(),
        }
    }

    pub fn is_idle(&self) -> bool {
        self.inner.busy.load(Ordering::SeqCst) == 0
    }

    pub fn root(&self) -> &Path {
        &self.inner.options.root
    }

    pub fn runroot(&self) -> &Path {
        &self.inner.options.runroot
    }

    pub fn storage_driver(&self) -> &str {
        &self.inner.options.storage_driver
    }

    pub fn runtime_name(&self) -> String {
        self.inner.backends.runtime.name()
    }

    /// Ids of every container, oldest first.
    pub fn container_ids(&self) -> Vec<String> {
        let mut entries: Vec<(u64, String)> = self
            .inner
            .read_containers()
            .values()
            .map(|e| (e.config.created_at, e.config.id.clone()))
            .collect();
        entries.sort();
        entries.into_iter().map(|(_, id)| id).collect()
    }

    /// (id, name, state) of every container, oldest first.
    pub fn list(&self) -> Vec<(String, String, State)> {
        let containers = self.inner.read_containers();
        let mut rows: Vec<(u64, String, String, State)> = containers
            .values()
            .map(|e| {
                (
                    e.config.created_at,
                    e.config.id.clone(),
                    e.config.name.clone(),
                    e.status.borrow().state,
                )
            })
            .collect();
        rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        rows.into_iter()
            .map(|(_, id, name, state)| (id, name, state))
            .collect()
    }

    /// Resolves a name, a full id or a unique id prefix to an id.
    pub fn lookup(&self, name_or_id: &str) -> Result<String> {
        let containers = self.inner.read_containers();
        if containers.contains_key(name_or_id) {
            return Ok(name_or_id.to_string());
        }
        if let Some(entry) = containers.values().find(|e| e.config.name == name_or_id) {
            return Ok(entry.config.id.clone());
        }
        let mut matches = containers
            .keys()
            .filter(|id| !name_or_id.is_empty() && id.starts_with(name_or_id));
        match (matches.next(), matches.next()) {
            (Some(id), None) => Ok(id.clone()),
            (Some(_), Some(_)) => Err(EngineError::InvalidArgument(format!(
                "id prefix {name_or_id:?} matches more than one container"
            ))),
            _ => Err(EngineError::NoSuchContainer(name_or_id.to_string())),
        }
    }

    pub fn config(&self, id: &str) -> Result<ContainerConfig> {
        Ok(self.inner.entry(id)?.config.clone())
    }

    /// Reads from a container's configuration in place, without copying all of it.
    pub fn with_config<T>(&self, id: &str, read: impl FnOnce(&ContainerConfig) -> T) -> Result<T> {
        Ok(read(&self.inner.entry(id)?.config))
    }

    pub fn status(&self, id: &str) -> Result<ContainerStatus> {
        Ok(self.inner.entry(id)?.status())
    }

    /// Keeps the event log within `limit` events (0: no bound): the oldest events of
    /// containers that are gone are trimmed now and at every removal.
    pub fn bound_event_log(&self, limit: u64) -> Result<()> {
        Ok(self.inner.db.set_event_limit(limit)?)
    }

    /// The durable event log after `after` (the Manager's `GetEvents`).
    pub async fn events(&self, after: u64, limit: u32) -> Result<Vec<EventRecord>> {
        let db = self.inner.db.clone();
        blocking(move || db.events_after(after, limit).map_err(EngineError::from)).await
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Inner {
    fn read_containers(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Entry>>> {
        self.containers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_containers(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Entry>>> {
        self.containers.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn entry(&self, id: &str) -> Result<Arc<Entry>> {
        self.read_containers()
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NoSuchContainer(id.to_string()))
    }

    /// Takes the container's lock. A container removed while we waited answers `Removed`.
    pub(crate) async fn lock<'a>(self: &'a Arc<Self>, id: &str) -> Result<Locked<'a>> {
        let entry = self.entry(id)?;
        let guard = entry.lock.clone().lock_owned().await;
        if !self.read_containers().contains_key(id) {
            return Err(EngineError::Removed(id.to_string()));
        }
        Ok(Locked {
            engine: self,
            entry,
            _guard: guard,
        })
    }

    /// Commits events that change no state (they need no container lock).
    pub(crate) async fn record_events(&self, id: &str, events: Vec<NewEvent>) -> Result<()> {
        let db = self.db.clone();
        let notify = self.notify.clone();
        let id = id.to_string();
        blocking(move || {
            db.commit(&id, Change::Nothing, &events, now_micros(), |records| {
                for record in records {
                    notify.send(Notification::Event(record));
                }
            })?;
            Ok(())
        })
        .await
    }
}

/// Runs blocking work (SQLite with fsync, runtime commands) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EngineError::Internal(format!("blocking task: {e}")))?
}

/// One request to the container's monitor, off the async workers. `fds` are produced on the
/// blocking thread and closed there once sent. `None` when the monitor is gone (the
/// process has just ended); a refusal is a runtime error.
pub(crate) async fn control(
    locked: &Locked<'_>,
    request: Request,
    fds: impl FnOnce() -> Vec<OwnedFd> + Send + 'static,
) -> Result<Option<(Reply, Vec<OwnedFd>)>> {
    let launcher = locked.engine().backends.launcher.clone();
    let bundle = locked.paths().bundle().to_path_buf();
    blocking(move || {
        let fds = fds();
        let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        match launcher.control(&bundle, &request, &borrowed) {
            Ok((Reply::Error { message }, _)) => Err(EngineError::Runtime(message)),
            Ok(reply) => Ok(Some(reply)),
            Err(ControlError::Gone) => Ok(None),
            Err(error) => Err(EngineError::Runtime(error.to_string())),
        }
    })
    .await
}

/// Event attributes every event carries: name, image, caller uid.
pub(crate) fn event(
    kind: &'static str,
    config: &ContainerConfig,
    caller: Caller,
    extra: &[(&str, String)],
) -> NewEvent {
    let mut attributes = BTreeMap::new();
    attributes.insert("name".to_string(), config.name.clone());
    attributes.insert(
        "image".to_string(),
        if config.image.is_empty() {
            config.rootfs.clone()
        } else {
            config.image.clone()
        },
    );
    if caller != Caller::ENGINE {
        attributes.insert("uid".to_string(), caller.uid.to_string());
    }
    for (key, value) in extra {
        attributes.insert(key.to_string(), value.clone());
    }
    NewEvent { kind, attributes }
}

impl Locked<'_> {
    pub fn id(&self) -> &str {
        &self.entry.config.id
    }

    pub fn config(&self) -> &ContainerConfig {
        &self.entry.config
    }

    pub fn status(&self) -> ContainerStatus {
        self.entry.status()
    }

    pub fn engine(&self) -> &Arc<Inner> {
        self.engine
    }

    /// Where the container's files are.
    pub fn paths(&self) -> ContainerPaths {
        self.engine.paths.container(self.id())
    }

    /// The verb's guard on the current state: the state when the verb accepts it, else the
    /// verb's typed error.
    pub fn check(&self, verb: Verb) -> Result<State> {
        let state = self.status().state;
        verb.check(self.id(), state)?;
        Ok(state)
    }

    /// `InvalidState` for `verb` in the current state: a refusal found once the verb ran.
    pub fn refused(&self, verb: Verb) -> EngineError {
        verb.refused(self.id(), self.status().state).into()
    }

    /// Commits a new status with its events in one transaction, then publishes both.
    pub async fn commit(&self, status: ContainerStatus, events: Vec<NewEvent>) -> Result<()> {
        self.commit_with(status, events, None).await
    }

    /// As [`Locked::commit`], also announcing the container's exit after its events.
    pub async fn commit_with(
        &self,
        status: ContainerStatus,
        events: Vec<NewEvent>,
        exited: Option<i32>,
    ) -> Result<()> {
        let json =
            serde_json::to_string(&status).map_err(|e| EngineError::Internal(e.to_string()))?;
        let db = self.engine.db.clone();
        let entry = self.entry.clone();
        let notify = self.engine.notify.clone();
        let id = self.id().to_string();
        blocking(move || {
            db.commit(
                &id,
                Change::Status(&id, &json),
                &events,
                now_micros(),
                |records| {
                    entry.status.send_replace(status.clone());
                    notify.send(Notification::Status {
                        id: id.clone(),
                        status: Box::new(status),
                    });
                    for record in records {
                        notify.send(Notification::Event(record));
                    }
                    if let Some(exit_code) = exited {
                        notify.send(Notification::Exited {
                            id: id.clone(),
                            exit_code,
                        });
                    }
                },
            )?;
            Ok(())
        })
        .await
    }

    /// Records events that change no state (`wait`, `sync`, `mount` of a mounted one…).
    pub async fn record(&self, events: Vec<NewEvent>) -> Result<()> {
        self.engine.record_events(self.id(), events).await
    }
}

impl Engine {
    /// Returns once nothing has been in flight for `timeout` (event-driven: woken by every
    /// call and task that starts or ends).
    pub async fn wait_idle(&self, timeout: std::time::Duration) {
        let mut activity = self.inner.activity.subscribe();
        loop {
            activity.borrow_and_update();
            if !self.is_idle() {
                let _ = activity.changed().await;
                continue;
            }
            if tokio::time::timeout(timeout, activity.changed())
                .await
                .is_err()
                && self.is_idle()
            {
                return;
            }
        }
    }
}
