//! Named volumes: their records and directories kept in step, and what containers mount.
//!
//! Disk first, then the database: a volume's directory is made whole (one rename) before
//! its row is inserted, and set aside (one rename) before its row is deleted. A crash in
//! between leaves a directory without a row (an unfinished create: removed at start-up) or a
//! row without a directory (an unfinished remove: its row is dropped at start-up); an
//! anonymous volume whose container is gone (a crash between the two removals) goes too.
//! Containers name their volumes in `Mounts` entries of type `volume`; the one lock here
//! serialises volume changes with the container creates and removals that use volumes, so a
//! volume is never removed while a container is being given it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde_json::json;

use super::config::{is_valid_name, ContainerConfig, MountSpec};
use super::{blocking, Caller, Engine, EngineError, Inner, Notification, Result};
use crate::clock::{now_micros, rfc3339_micros};
use crate::db::Db;
use crate::storage::resolve::resolve_in_root;
use crate::storage::volumes::{copy_up, VolumeError, VolumeRecord, VolumeStore};

/// The `Mounts` type of a volume mount.
pub const VOLUME: &str = "volume";

/// Mount options that berth reads itself and does not hand to the runtime.
const OWN_OPTIONS: &[&str] = &["nocopy", "copy", "ro", "rw", "z", "Z", "U"];

/// Options podman gives every volume mount.
const DEFAULT_OPTIONS: &[&str] = &["nosuid", "nodev", "rbind"];

/// The engine's volumes.
pub(crate) struct Volumes {
    store: VolumeStore,
    records: RwLock<HashMap<String, VolumeRecord>>,
    /// Serialises volume changes, and container creates and removals that use volumes.
    lock: tokio::sync::Mutex<()>,
}

fn internal(error: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(error.to_string())
}

impl From<VolumeError> for EngineError {
    fn from(error: VolumeError) -> Self {
        match error {
            VolumeError::Exists(name) => EngineError::NameInUse(name),
            VolumeError::Refused(_) => EngineError::InvalidArgument(error.to_string()),
            VolumeError::Io { .. } => EngineError::Internal(error.to_string()),
        }
    }
}

impl Volumes {
    /// Opens `<root>/volumes` and makes it agree with the database, finishing what a crash
    /// interrupted (see the module comment).
    pub(crate) fn open(
        root: &Path,
        db: &Db,
        containers: &HashMap<String, Arc<super::Entry>>,
    ) -> Result<Volumes> {
        let store = VolumeStore::open(&root.join("volumes")).map_err(internal)?;
        store.sweep_staging().map_err(internal)?;
        let mut records = HashMap::new();
        for (name, json) in db.volumes()? {
            let record: VolumeRecord = serde_json::from_str(&json)
                .map_err(|e| EngineError::Internal(format!("volume {name}: {e}")))?;
            records.insert(name, record);
        }
        let on_disk = store.on_disk().map_err(internal)?;
        for name in records.keys().cloned().collect::<Vec<_>>() {
            if !on_disk.contains(&name) {
                tracing::warn!(volume = %name, "volume has no directory (an interrupted remove): dropping its record");
                db.delete_volume(&name)?;
                records.remove(&name);
            }
        }
        let used: std::collections::HashSet<&str> = containers
            .values()
            .flat_map(|entry| volume_names(&entry.config))
            .collect();
        for (name, record) in &records {
            if record.anonymous && !used.contains(name.as_str()) {
                tracing::warn!(volume = %name, "anonymous volume outlived its container: removing it");
                if let Some(staging) = store.detach(name)? {
                    db.delete_volume(name)?;
                    store.discard(&staging).map_err(internal)?;
                }
            }
        }
        records.retain(|name, record| !record.anonymous || used.contains(name.as_str()));
        for name in on_disk {
            if !records.contains_key(&name) {
                tracing::warn!(volume = %name, "volume directory has no record (an interrupted create): removing it");
                if let Some(staging) = store.detach(&name)? {
                    store.discard(&staging).map_err(internal)?;
                }
            }
        }
        Ok(Volumes {
            store,
            records: RwLock::new(records),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, VolumeRecord>> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, VolumeRecord>> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, name: &str) -> Result<VolumeRecord> {
        self.read()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NoSuchVolume(name.to_string()))
    }
}

/// Names of the volumes a container mounts.
pub(crate) fn volume_names(config: &ContainerConfig) -> impl Iterator<Item = &str> {
    config
        .mounts
        .iter()
        .filter(|m| m.kind == VOLUME)
        .map(|m| m.source.as_str())
}

fn generated_name() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn same_path(a: &str, b: &str) -> bool {
    Path::new(a).components().eq(Path::new(b).components())
}

impl Inner {
    /// Ids of the containers that mount the volume, oldest first.
    pub(crate) fn volume_users(&self, name: &str) -> Vec<String> {
        let mut users: Vec<(u64, String)> = self
            .read_containers()
            .values()
            .filter(|e| volume_names(&e.config).any(|n| n == name))
            .map(|e| (e.config.created_at, e.config.id.clone()))
            .collect();
        users.sort();
        users.into_iter().map(|(_, id)| id).collect()
    }

    /// Tells the bus that the `Containers` of the container's volumes changed.
    pub(crate) fn announce_volume_users(&self, config: &ContainerConfig) {
        for name in volume_names(config) {
            self.notify.send(Notification::VolumeChanged {
                name: name.to_string(),
            });
        }
    }

    /// Makes a volume: directory, then row. The caller holds the volume lock.
    async fn create_volume_locked(
        self: &Arc<Self>,
        name: &str,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<VolumeRecord> {
        let name = if name.is_empty() {
            generated_name()
        } else {
            name.to_string()
        };
        if !is_valid_name(&name) {
            return Err(EngineError::InvalidArgument(format!(
                "volume name {name:?} does not match [a-zA-Z0-9][a-zA-Z0-9_.-]{{0,127}}"
            )));
        }
        if self.volumes.read().contains_key(&name) {
            return Err(EngineError::NameInUse(name));
        }
        let record = VolumeRecord {
            name: name.clone(),
            driver: "local".into(),
            created_at: now_micros(),
            labels,
            anonymous,
            needs_copy_up: true,
        };
        let json = serde_json::to_string(&record).map_err(internal)?;
        let inner = self.clone();
        let made = record.clone();
        blocking(move || {
            let volumes = &inner.volumes;
            volumes.store.create(&name)?;
            if let Err(error) = inner.db.insert_volume(&name, &json) {
                if let Ok(Some(staging)) = volumes.store.detach(&name) {
                    let _ = volumes.store.discard(&staging);
                }
                return Err(error.into());
            }
            volumes.write().insert(name.clone(), made);
            inner.notify.send(Notification::VolumeAdded { name });
            Ok(())
        })
        .await?;
        Ok(record)
    }

    /// Removes a volume: directory set aside, row deleted, directory deleted. The caller
    /// holds the volume lock and has checked that no container uses it.
    async fn remove_volume_locked(self: &Arc<Self>, name: &str) -> Result<()> {
        let inner = self.clone();
        let name = name.to_string();
        blocking(move || {
            let volumes = &inner.volumes;
            let staging = volumes.store.detach(&name)?;
            if let Err(error) = inner.db.delete_volume(&name) {
                if let Some(staging) = &staging {
                    let _ = std::fs::rename(staging, volumes.store.path(&name));
                }
                return Err(error.into());
            }
            volumes.write().remove(&name);
            inner.notify.send(Notification::VolumeRemoved { name: name.clone() });
            if let Some(staging) = staging {
                if let Err(error) = volumes.store.discard(&staging) {
                    // Out of sight already; the next start-up sweeps it.
                    tracing::warn!(volume = %name, %error, "deleting a removed volume's files failed");
                }
            }
            Ok(())
        })
        .await
    }

    /// After a container is gone: its anonymous volumes go too, and its named volumes'
    /// `Containers` change. Failures are logged: the container is removed either way.
    pub(crate) async fn release_volumes(self: &Arc<Self>, config: &ContainerConfig) {
        if volume_names(config).next().is_none() {
            return;
        }
        let _lock = self.volumes.lock.lock().await;
        for name in volume_names(config) {
            let anonymous = self
                .volumes
                .read()
                .get(name)
                .is_some_and(|record| record.anonymous);
            if anonymous && self.volume_users(name).is_empty() {
                if let Err(error) = self.remove_volume_locked(name).await {
                    tracing::warn!(volume = %name, %error, "removing an anonymous volume failed");
                }
            } else {
                self.notify.send(Notification::VolumeChanged {
                    name: name.to_string(),
                });
            }
        }
    }

    /// The mounts handed to the runtime for a container whose root filesystem is mounted at
    /// `rootfs`: each volume becomes a bind mount of its `_data`, filled from the root
    /// filesystem first if it is new and empty (podman's copy-up; `nocopy` skips it).
    /// Runs on a blocking thread.
    pub(crate) fn runtime_mounts(
        &self,
        config: &ContainerConfig,
        rootfs: &Path,
    ) -> Result<Vec<MountSpec>> {
        let _lock = volume_names(config)
            .next()
            .map(|_| self.volumes.lock.blocking_lock());
        let mut mounts = Vec::new();
        for mount in &config.mounts {
            if mount.kind != VOLUME {
                mounts.push(mount.clone());
                continue;
            }
            let name = &mount.source;
            let mut record = self.volumes.record(name)?;
            let data = self.volumes.store.data(name);
            let nocopy = mount.options.iter().any(|o| o == "nocopy");
            if record.needs_copy_up && !nocopy {
                let fill = || -> std::io::Result<()> {
                    if self.volumes.store.is_empty(name)? {
                        let source = resolve_in_root(rootfs, Path::new(&mount.destination))?;
                        copy_up(&source, &data)?;
                    }
                    Ok(())
                };
                fill().map_err(|e| {
                    EngineError::Internal(format!(
                        "copying {} into volume {name}: {e}",
                        mount.destination
                    ))
                })?;
                record.needs_copy_up = false;
                let json = serde_json::to_string(&record).map_err(internal)?;
                self.db.update_volume(name, &json)?;
                self.volumes.write().insert(name.clone(), record);
            }
            mounts.push(MountSpec {
                kind: "bind".into(),
                source: data.display().to_string(),
                destination: mount.destination.clone(),
                options: runtime_options(mount),
                read_only: read_only(mount),
            });
        }
        Ok(mounts)
    }
}

fn read_only(mount: &MountSpec) -> bool {
    mount.read_only || mount.options.iter().any(|o| o == "ro")
}

/// A volume mount's options as the runtime gets them (and `Inspect` shows them).
fn runtime_options(mount: &MountSpec) -> Vec<String> {
    let mut options: Vec<String> = DEFAULT_OPTIONS.iter().map(|o| o.to_string()).collect();
    for option in &mount.options {
        if !OWN_OPTIONS.contains(&option.as_str()) && !options.contains(option) {
            options.push(option.clone());
        }
    }
    options
}

impl Engine {
    /// Gives a new container's volume mounts their volumes before it is recorded: the
    /// image's declared `Volumes` not covered by a mount become anonymous volume mounts, an
    /// anonymous mount (`Source` "") gets a fresh volume, and a missing named volume is
    /// created (as `podman run -v name:/path`). Returns the volume lock, to hold until the
    /// container is recorded, and the anonymous volumes made (to undo on failure).
    pub(crate) async fn attach_volumes(
        &self,
        config: &mut ContainerConfig,
    ) -> Result<Option<(tokio::sync::MutexGuard<'_, ()>, Vec<String>)>> {
        if !config.image_id.is_empty() {
            let image = self.image(&config.image_id)?;
            for destination in image.config.volumes {
                if !config
                    .mounts
                    .iter()
                    .any(|m| same_path(&m.destination, &destination))
                {
                    config.mounts.push(MountSpec {
                        kind: VOLUME.into(),
                        source: String::new(),
                        destination,
                        options: Vec::new(),
                        read_only: false,
                    });
                }
            }
        }
        if volume_names(config).next().is_none() {
            return Ok(None);
        }
        for mount in config.mounts.iter().filter(|m| m.kind == VOLUME) {
            if !mount.source.is_empty() && !is_valid_name(&mount.source) {
                return Err(EngineError::InvalidArgument(format!(
                    "Mounts: volume name {:?} does not match [a-zA-Z0-9][a-zA-Z0-9_.-]{{0,127}}",
                    mount.source
                )));
            }
        }
        let inner = self.inner();
        let guard = inner.volumes.lock.lock().await;
        let mut made = Vec::new();
        let mut result = Ok(());
        for mount in config.mounts.iter_mut().filter(|m| m.kind == VOLUME) {
            let created = if mount.source.is_empty() {
                inner
                    .create_volume_locked("", BTreeMap::new(), true)
                    .await
                    .map(|record| {
                        made.push(record.name.clone());
                        record.name
                    })
            } else if inner.volumes.read().contains_key(&mount.source) {
                continue;
            } else {
                inner
                    .create_volume_locked(&mount.source, BTreeMap::new(), false)
                    .await
                    .map(|record| record.name)
            };
            match created {
                Ok(name) => mount.source = name,
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        if let Err(error) = result {
            self.discard_volumes(&made).await;
            return Err(error);
        }
        Ok(Some((guard, made)))
    }

    /// Removes anonymous volumes made for a container that was not recorded after all. The
    /// caller holds the volume lock.
    pub(crate) async fn discard_volumes(&self, names: &[String]) {
        for name in names {
            if let Err(error) = self.inner().remove_volume_locked(name).await {
                tracing::warn!(volume = %name, %error, "removing an unused anonymous volume failed");
            }
        }
    }

    /// `CreateVolume`: "" generates a name.
    pub async fn create_volume(
        &self,
        _caller: Caller,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<String> {
        let _lock = self.inner().volumes.lock.lock().await;
        let record = self
            .inner()
            .create_volume_locked(name, labels, false)
            .await?;
        Ok(record.name)
    }

    pub fn volume(&self, name: &str) -> Result<VolumeRecord> {
        self.inner().volumes.record(name)
    }

    /// Every volume, oldest first.
    pub fn volumes(&self) -> Vec<VolumeRecord> {
        let mut all: Vec<VolumeRecord> = self.inner().volumes.read().values().cloned().collect();
        all.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        all
    }

    /// Where containers see the volume's content.
    pub fn volume_mountpoint(&self, name: &str) -> PathBuf {
        self.inner().volumes.store.data(name)
    }

    /// Ids of the containers that use the volume.
    pub fn volume_containers(&self, name: &str) -> Vec<String> {
        self.inner().volume_users(name)
    }

    /// `RemoveVolume`: `VolumeInUse` while a container uses it, unless `force`, which
    /// removes those containers first (as `podman volume rm -f`).
    pub async fn remove_volume(&self, caller: Caller, name: &str, force: bool) -> Result<()> {
        self.volume(name)?;
        if force {
            for id in self.inner().volume_users(name) {
                match self.remove(caller, &id, true).await {
                    Ok(()) | Err(EngineError::NoSuchContainer(_) | EngineError::Removed(_)) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        let _lock = self.inner().volumes.lock.lock().await;
        self.volume(name)?;
        let users = self.inner().volume_users(name);
        if !users.is_empty() {
            let names: Vec<String> = users
                .iter()
                .filter_map(|id| self.config(id).ok().map(|c| c.name))
                .collect();
            return Err(EngineError::VolumeInUse(format!(
                "volume {name} is used by container(s) {}",
                names.join(", ")
            )));
        }
        self.inner().remove_volume_locked(name).await
    }

    /// `PruneVolumes`: removes every volume no container uses; returns their names.
    pub async fn prune_volumes(&self, _caller: Caller) -> Result<Vec<String>> {
        let _lock = self.inner().volumes.lock.lock().await;
        let mut removed = Vec::new();
        for record in self.volumes() {
            if self.inner().volume_users(&record.name).is_empty() {
                self.inner().remove_volume_locked(&record.name).await?;
                removed.push(record.name);
            }
        }
        Ok(removed)
    }

    /// Writes the volume's content as a tar stream into `destination`. Containers may be
    /// changing it meanwhile, so the walk runs chrooted into it, as a container export does.
    pub async fn export_volume(&self, name: &str, destination: std::fs::File) -> Result<()> {
        self.volume(name)?;
        let data = self.volume_mountpoint(name);
        let launcher = self.inner().backends.launcher.clone();
        blocking(move || {
            launcher
                .export(&data, destination)
                .map_err(|e| EngineError::Internal(format!("export: {e}")))
        })
        .await
    }

    /// Replaces the volume's content with the tar stream read from `source`; a hostile
    /// archive is `InvalidArgument` and changes nothing.
    pub async fn import_volume(&self, name: &str, source: std::fs::File) -> Result<()> {
        let _lock = self.inner().volumes.lock.lock().await;
        self.volume(name)?;
        let inner = self.inner().clone();
        let name = name.to_string();
        blocking(move || Ok(inner.volumes.store.import(&name, source)?)).await
    }

    /// The volume as JSON, shaped like one element of `podman volume inspect`.
    pub fn inspect_volume(&self, name: &str) -> Result<String> {
        let record = self.volume(name)?;
        let containers = self.volume_containers(name);
        let document = json!({
            "Name": record.name,
            "Driver": record.driver,
            "Mountpoint": self.volume_mountpoint(name).display().to_string(),
            "CreatedAt": rfc3339_micros(record.created_at),
            "Labels": record.labels,
            "Scope": "local",
            "Options": {},
            "Anonymous": record.anonymous,
            "NeedsCopyUp": record.needs_copy_up,
            "Containers": containers,
        });
        serde_json::to_string_pretty(&document).map_err(internal)
    }

    /// A container's `Mounts` as `podman inspect` shows them.
    pub(crate) fn mounts_json(&self, config: &ContainerConfig) -> Vec<serde_json::Value> {
        config
            .mounts
            .iter()
            .map(|m| {
                if m.kind == VOLUME {
                    json!({
                        "Type": "volume",
                        "Name": m.source,
                        "Source": self.volume_mountpoint(&m.source).display().to_string(),
                        "Destination": m.destination,
                        "Driver": "local",
                        "Mode": "",
                        "Options": runtime_options(m),
                        "RW": !read_only(m),
                        "Propagation": "rprivate",
                    })
                } else {
                    json!({
                        "Type": m.kind,
                        "Source": m.source,
                        "Destination": m.destination,
                        "Driver": "",
                        "Mode": "",
                        "Options": m.options,
                        "RW": !m.read_only,
                        "Propagation": "rprivate",
                    })
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(options: &[&str], read_only: bool) -> MountSpec {
        MountSpec {
            kind: VOLUME.into(),
            source: "v".into(),
            destination: "/data".into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            read_only,
        }
    }

    #[test]
    fn berths_own_options_never_reach_the_runtime() {
        let options = runtime_options(&mount(&["nocopy", "ro", "noexec"], false));
        assert_eq!(options, ["nosuid", "nodev", "rbind", "noexec"]);
        assert!(read_only(&mount(&["ro"], false)));
        assert!(read_only(&mount(&[], true)));
        assert!(!read_only(&mount(&["rw"], false)));
    }

    /// An engine on the fakes (no root needed) and a rootfs directory.
    fn engine() -> (
        Engine,
        tempfile::TempDir,
        tokio::sync::mpsc::UnboundedReceiver<Notification>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let options = super::super::EngineOptions {
            root: dir.path().join("root"),
            runroot: dir.path().join("run"),
            init_binary: None,
            storage_driver: "overlay".into(),
            systemd_cgroups: false,
        };
        let world = super::super::fake::FakeWorld::new();
        let (engine, notifications) = Engine::open(options, world.backends()).unwrap();
        (engine, dir, notifications)
    }

    fn request(dir: &Path, mounts: Vec<MountSpec>) -> super::super::CreateRequest {
        super::super::CreateRequest {
            name: Some("user".into()),
            rootfs: Some(dir.join("rootfs").display().to_string()),
            command: vec!["/bin/true".into()],
            mounts,
            ..Default::default()
        }
    }

    const ROOT: Caller = Caller { uid: 0 };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_used_volume_stays_until_its_container_goes_and_an_anonymous_one_goes_with_it() {
        let (engine, dir, _notifications) = engine();
        engine.start_up().await.unwrap();
        let mut cache = mount(&["nocopy"], false);
        cache.source = String::new();
        cache.destination = "/cache".into();
        let id = engine
            .create(ROOT, request(dir.path(), vec![mount(&[], true), cache]))
            .await
            .unwrap();
        assert!(!engine.volume("v").unwrap().anonymous, "created on use");
        let anonymous = engine.config(&id).unwrap().mounts[1].source.clone();
        assert!(engine.volume(&anonymous).unwrap().anonymous);
        assert_eq!(engine.volume_containers("v"), vec![id.clone()]);
        let error = engine.remove_volume(ROOT, "v", false).await.unwrap_err();
        assert!(matches!(error, EngineError::VolumeInUse(_)), "{error}");
        assert!(engine.prune_volumes(ROOT).await.unwrap().is_empty());

        // The runtime gets bind mounts of the volumes' directories.
        engine.start(ROOT, &id, false).await.unwrap();
        let spec = std::fs::read_to_string(
            engine
                .inner()
                .paths
                .container(&id)
                .bundle()
                .join("config.json"),
        )
        .unwrap();
        let data = engine.volume_mountpoint("v").display().to_string();
        assert!(spec.contains(&data), "{spec}");
        assert!(!spec.contains("nocopy"));

        engine.remove(ROOT, &id, true).await.unwrap();
        assert!(matches!(
            engine.volume(&anonymous),
            Err(EngineError::NoSuchVolume(_))
        ));
        assert!(engine.volume_containers("v").is_empty());
        engine.remove_volume(ROOT, "v", false).await.unwrap();
        assert!(engine.volumes().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forced_removal_takes_the_containers_and_bad_names_are_refused() {
        let (engine, dir, _notifications) = engine();
        engine.start_up().await.unwrap();
        let id = engine
            .create(ROOT, request(dir.path(), vec![mount(&[], false)]))
            .await
            .unwrap();
        engine.remove_volume(ROOT, "v", true).await.unwrap();
        assert!(matches!(
            engine.config(&id),
            Err(EngineError::NoSuchContainer(_))
        ));
        let mut bad = mount(&[], false);
        bad.source = "../etc".into();
        let error = engine
            .create(ROOT, request(dir.path(), vec![bad]))
            .await
            .unwrap_err();
        assert!(matches!(error, EngineError::InvalidArgument(_)), "{error}");
        assert!(engine.volumes().is_empty(), "nothing was made");
        engine
            .create_volume(ROOT, "dup", BTreeMap::new())
            .await
            .unwrap();
        let error = engine
            .create_volume(ROOT, "dup", BTreeMap::new())
            .await
            .unwrap_err();
        assert!(matches!(error, EngineError::NameInUse(_)), "{error}");
    }

    #[test]
    fn an_unfinished_create_remove_and_container_removal_are_finished_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("berth.db")).unwrap();
        let store = VolumeStore::open(&dir.path().join("volumes")).unwrap();
        // A directory whose row was never written, and a row whose directory was set aside.
        store.create("orphan").unwrap();
        db.insert_volume("gone", "{\"name\":\"gone\",\"driver\":\"local\",\"created_at\":1,\"labels\":{},\"anonymous\":false}")
            .unwrap();
        // An anonymous volume whose container is gone.
        store.create("stray").unwrap();
        db.insert_volume("stray", "{\"name\":\"stray\",\"driver\":\"local\",\"created_at\":1,\"labels\":{},\"anonymous\":true}")
            .unwrap();
        store.create("kept").unwrap();
        db.insert_volume("kept", "{\"name\":\"kept\",\"driver\":\"local\",\"created_at\":1,\"labels\":{},\"anonymous\":false}")
            .unwrap();
        let volumes = Volumes::open(dir.path(), &db, &HashMap::new()).unwrap();
        assert_eq!(store.on_disk().unwrap(), vec!["kept".to_string()]);
        let rows: Vec<String> = db.volumes().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(rows, vec!["kept".to_string()]);
        assert!(volumes.record("kept").is_ok());
        assert!(matches!(
            volumes.record("gone"),
            Err(EngineError::NoSuchVolume(_))
        ));
    }
}
