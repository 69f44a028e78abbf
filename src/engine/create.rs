//! `CreateContainer` and `Remove`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::config::{is_valid_name, ContainerConfig, CreateRequest, RestartPolicy};
use super::{
    blocking, event, Caller, ContainerStatus, Engine, EngineError, Entry, Locked, Notification,
    Result, Verb,
};
use crate::clock::now_micros;
use crate::db::{Change, ContainerRow};
use crate::runtime::signal::parse_signal;
use crate::runtime::spec::capability_set;
use crate::storage::images::{ImageConfig, ImageRecord};
use crate::storage::rootfs::is_mountable_path;

/// Where a container's root filesystem comes from.
enum Source {
    /// A host directory, used read-only as the lower layer.
    Rootfs(String),
    /// An image (the reference as given, and the image).
    Image(String, Box<ImageRecord>),
}

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument(message.into())
}

fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Engine {
    /// Validates the request and stores a `configured` container. Nothing touches the disk
    /// until every check has passed.
    pub async fn create(&self, caller: Caller, request: CreateRequest) -> Result<String> {
        // An image cannot be removed between the lookup and the insert.
        let _images = match request.image {
            Some(_) => Some(self.inner().images_lock.lock().await),
            None => None,
        };
        let mut config = self.validate(request)?;
        // Held until the container is recorded: its volumes cannot be removed meanwhile.
        let volumes = self.attach_volumes(&mut config).await?;
        let inner = self.inner().clone();
        let id = config.id.clone();
        let row = ContainerRow {
            id: id.clone(),
            name: config.name.clone(),
            config: serde_json::to_string(&config)
                .map_err(|e| EngineError::Internal(e.to_string()))?,
            status: serde_json::to_string(&ContainerStatus::new())
                .map_err(|e| EngineError::Internal(e.to_string()))?,
        };
        let events = vec![event("create", &config, caller, &[])];
        let dir = inner.paths.container(&id).dir().to_path_buf();
        let created = blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| EngineError::io(format_args!("create {}", dir.display()), e))?;
            crate::failpoint::hit("create.after-directory");
            let entry = Entry::new(config.clone(), ContainerStatus::new());
            let result = inner.db.commit(
                &id,
                Change::Insert(&row, config.created_at),
                &events,
                now_micros(),
                |records| {
                    inner.write_containers().insert(id.clone(), entry);
                    inner.notify.send(Notification::Added { id: id.clone() });
                    for record in records {
                        inner.notify.send(Notification::Event(record));
                    }
                    inner.announce_volume_users(&config);
                },
            );
            if let Err(error) = result {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error.into());
            }
            Ok(id)
        })
        .await;
        if let (Err(_), Some((_, made))) = (&created, &volumes) {
            self.discard_volumes(made).await;
        }
        created
    }

    /// Checks every key of the request and builds the container's config, the image's
    /// config filling what the request leaves out.
    fn validate(&self, mut request: CreateRequest) -> Result<ContainerConfig> {
        let id = new_id();
        let name = self.unused_name(request.name.take(), &id)?;
        let source = self.source(request.rootfs.take(), request.image.take())?;
        let stop_signal = stop_signal(request.stop_signal.as_deref())?;
        let restart_policy = restart_policy(request.restart_policy.as_deref())?;
        let (network, network_options) = self.network_request(
            request.network.take(),
            std::mem::take(&mut request.networks),
            super::config::ContainerNetworks {
                networks: Vec::new(),
                port_mappings: std::mem::take(&mut request.port_mappings),
                aliases: std::mem::take(&mut request.network_aliases),
                dns_servers: std::mem::take(&mut request.dns_servers),
            },
        )?;
        let log_driver = log_driver(request.log_driver.as_deref())?;
        check_env_and_mounts(&request)?;
        check_confinement_and_limits(&request)?;
        if request.init && self.inner().options.init_binary.is_none() {
            return Err(EngineError::NotSupported(
                "Init: no init binary (catatonit) is installed".into(),
            ));
        }
        let mut dependencies = Vec::new();
        for dependency in &request.dependencies {
            dependencies.push(self.lookup(dependency)?);
        }
        let (rootfs, image, image_id, layers, suggested) = match source {
            Source::Rootfs(rootfs) => (
                rootfs,
                String::new(),
                String::new(),
                Vec::new(),
                ImageConfig::default(),
            ),
            Source::Image(reference, image) => (
                String::new(),
                reference,
                image.id,
                image.layers,
                image.config,
            ),
        };
        let process = Process::of(&mut request, suggested)?;
        Ok(ContainerConfig {
            hostname: request.hostname.unwrap_or_else(|| id[..12].to_string()),
            id,
            name,
            rootfs,
            image,
            image_id,
            layers,
            command: process.command,
            entrypoint: process.entrypoint,
            env: process.env,
            working_dir: process.working_dir,
            user: process.user,
            terminal: request.terminal,
            stdin: request.stdin,
            labels: process.labels,
            annotations: request.annotations,
            stop_signal,
            stop_timeout: request.stop_timeout.unwrap_or(10),
            mounts: request.mounts,
            network,
            network_options,
            dependencies,
            restart_policy,
            auto_remove: request.auto_remove,
            memory_max: request.memory_max,
            pids_max: request.pids_max,
            cpu_quota: request.cpu_quota,
            read_only_rootfs: request.read_only_rootfs,
            init: request.init,
            privileged: request.privileged,
            cap_add: request.cap_add,
            cap_drop: request.cap_drop,
            log_driver,
            created_at: now_micros(),
            notify: request.notify,
            health: super::health::health_config(&request.health)?,
            seccomp_profile: request.seccomp_profile,
        })
    }

    /// The requested name, or the id's first 12 characters: valid and not taken.
    fn unused_name(&self, name: Option<String>, id: &str) -> Result<String> {
        let name = match name {
            Some(name) if !is_valid_name(&name) => {
                return Err(invalid(format!(
                    "Name: {name:?} does not match [a-zA-Z0-9][a-zA-Z0-9_.-]{{0,127}}"
                )))
            }
            Some(name) => name,
            None => id[..12].to_string(),
        };
        let names_taken = self
            .inner()
            .read_containers()
            .values()
            .any(|e| e.config.name == name);
        if names_taken {
            return Err(EngineError::NameInUse(name));
        }
        Ok(name)
    }

    /// The `Rootfs` or `Image` key: exactly one, naming a directory overlayfs can take or a
    /// known image.
    fn source(&self, rootfs: Option<String>, image: Option<String>) -> Result<Source> {
        match (rootfs, image) {
            (Some(_), Some(_)) => Err(invalid("Image and Rootfs: give exactly one")),
            (None, None) => Err(invalid("Image or Rootfs: one is required")),
            (None, Some(reference)) => {
                let image = self.image(&self.lookup_image(&reference)?)?;
                Ok(Source::Image(reference, Box::new(image)))
            }
            (Some(rootfs), None) => {
                let path = Path::new(&rootfs);
                if !path.is_absolute() || !path.is_dir() {
                    return Err(invalid(format!(
                        "Rootfs: {rootfs:?} is not an absolute path to a directory"
                    )));
                }
                if !is_mountable_path(path) {
                    return Err(invalid(format!(
                        "Rootfs: {rootfs:?} contains ',' or ':', which overlayfs cannot take"
                    )));
                }
                Ok(Source::Rootfs(rootfs))
            }
        }
    }

    /// Removes a container; `force` stops a live one first (SIGKILL, as podman rm -f).
    pub async fn remove(&self, caller: Caller, id: &str, force: bool) -> Result<()> {
        let inner = self.inner().clone();
        let locked = inner.lock(id).await?;
        remove_locked(&locked, caller, force).await
    }
}

/// Removal under the container's lock.
pub(crate) async fn remove_locked(locked: &Locked<'_>, caller: Caller, force: bool) -> Result<()> {
    let id = locked.id().to_string();
    let dependents: Vec<String> = locked
        .engine()
        .read_containers()
        .values()
        .filter(|e| e.config.dependencies.contains(&id))
        .map(|e| e.config.name.clone())
        .collect();
    if !dependents.is_empty() {
        return Err(EngineError::HasDependents {
            id: id.clone(),
            state: locked.status().state,
            dependents,
        });
    }
    locked.check(if force {
        Verb::ForceRemove
    } else {
        Verb::Remove
    })?;
    locked
        .entry
        .restart_pending
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // The process and the runtime go first, the normal way (died, cleanup); from here on the
    // `removing` mark lets a berthd that crashes midway finish the job at its next start.
    super::exit::kill_and_reap(locked, caller).await?;
    super::exit::release_runtime(locked, caller).await?;
    crate::failpoint::hit("remove.after-runtime-release");
    let mut status = locked.status();
    super::networking::detach_into(locked, &mut status).await;
    status.removing()?;
    locked.commit(status, Vec::new()).await?;
    super::filesystem::unmount_all(locked).await?;
    crate::failpoint::hit("remove.after-unmount");

    let inner: Arc<super::Inner> = locked.engine().clone();
    let paths = locked.paths();
    let events = vec![event("remove", locked.config(), caller, &[])];
    let removed = blocking(move || {
        for path in [paths.dir(), paths.bundle()] {
            match std::fs::remove_dir_all(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(EngineError::Internal(format!(
                        "remove {}: {e}",
                        path.display()
                    )))
                }
            }
        }
        let _ = std::fs::remove_file(paths.exit_file());
        inner
            .db
            .commit(&id, Change::Delete(&id), &events, now_micros(), |records| {
                inner.write_containers().remove(&id);
                for record in records {
                    inner.notify.send(Notification::Event(record));
                }
                inner.notify.send(Notification::Removed { id: id.clone() });
            })?;
        Ok(())
    })
    .await;
    if removed.is_ok() {
        // Anonymous volumes go with their container.
        locked.engine().release_volumes(locked.config()).await;
    }
    removed
}

/// The `StopSignal` key as a canonical name without `SIG`; `TERM` by default.
/// What the container runs and with what: the spec's, with what it leaves out taken from
/// the image's config as podman does. A given entrypoint drops the image's command;
/// environment and labels merge, the spec's win. An `Entrypoint` given, even empty
/// (podman's `--entrypoint ""`), replaces the image's.
struct Process {
    command: Vec<String>,
    entrypoint: Vec<String>,
    env: Vec<String>,
    labels: BTreeMap<String, String>,
    working_dir: String,
    user: String,
}

impl Process {
    fn of(request: &mut CreateRequest, suggested: ImageConfig) -> Result<Process> {
        let command = match (request.command.is_empty(), &request.entrypoint) {
            (false, _) => std::mem::take(&mut request.command),
            (true, Some(_)) => Vec::new(),
            (true, None) => suggested.cmd,
        };
        let entrypoint = request.entrypoint.take().unwrap_or(suggested.entrypoint);
        if command.is_empty() && entrypoint.is_empty() {
            return Err(invalid(
                "Command: neither the spec nor the image gives a command",
            ));
        }
        let mut env = suggested.env;
        env.append(&mut request.env);
        let mut labels = suggested.labels;
        labels.append(&mut request.labels);
        let working_dir = request
            .working_dir
            .take()
            .or(Some(suggested.working_dir).filter(|dir| !dir.is_empty()))
            .unwrap_or_else(|| "/".to_string());
        Ok(Process {
            command,
            entrypoint,
            env,
            labels,
            working_dir,
            user: request.user.take().unwrap_or(suggested.user),
        })
    }
}

fn stop_signal(requested: Option<&str>) -> Result<String> {
    match requested {
        None => Ok("TERM".to_string()),
        Some(text) => Ok(parse_signal(text)
            .ok_or_else(|| invalid(format!("StopSignal: unknown signal {text:?}")))?
            .1),
    }
}

/// The `RestartPolicy` key; `no` by default.
fn restart_policy(requested: Option<&str>) -> Result<RestartPolicy> {
    match requested {
        None => Ok(RestartPolicy::No),
        Some(text) => RestartPolicy::parse(text)
            .ok_or_else(|| invalid(format!("RestartPolicy: unknown policy {text:?}"))),
    }
}

/// The `LogDriver` key: `k8s-file` (the default) or `none`.
fn log_driver(requested: Option<&str>) -> Result<String> {
    match requested {
        None | Some("k8s-file") => Ok("k8s-file".to_string()),
        Some("none") => Ok("none".to_string()),
        Some(other) => Err(invalid(format!(
            "LogDriver: unknown driver {other:?} (k8s-file or none)"
        ))),
    }
}

/// `Env` entries are `K=V`; mounts have an absolute destination, a known type, and a bind
/// source that exists.
fn check_env_and_mounts(request: &CreateRequest) -> Result<()> {
    if let Some(bad) = request
        .env
        .iter()
        .find(|e| !e.contains('=') || e.starts_with('='))
    {
        return Err(invalid(format!("Env: {bad:?} is not K=V")));
    }
    for mount in &request.mounts {
        if !mount.destination.starts_with('/') {
            return Err(invalid(format!(
                "Mounts: destination {:?} is not absolute",
                mount.destination
            )));
        }
        match mount.kind.as_str() {
            "bind"
                if !Path::new(&mount.source).is_absolute()
                    || !Path::new(&mount.source).exists() =>
            {
                return Err(invalid(format!(
                    "Mounts: bind source {:?} does not exist",
                    mount.source
                )))
            }
            "bind" | "tmpfs" | "volume" => {}
            other => {
                return Err(invalid(format!(
                    "Mounts: unknown type {other:?} (bind, tmpfs or volume)"
                )))
            }
        }
    }
    Ok(())
}

/// Capabilities, `PidsMax`, `SeccompProfile` and `CpuQuota` as the runtime can take them.
fn check_confinement_and_limits(request: &CreateRequest) -> Result<()> {
    capability_set(request.privileged, &request.cap_add, &request.cap_drop)
        .map_err(|e| invalid(format!("CapAdd/CapDrop: {e}")))?;
    if request.pids_max == Some(0) {
        return Err(invalid(
            "PidsMax: 0 would forbid every process (leave it out for no limit)",
        ));
    }
    if let Some(profile) = request
        .seccomp_profile
        .as_deref()
        .filter(|p| *p != crate::runtime::seccomp::UNCONFINED)
    {
        if !Path::new(profile).is_absolute() {
            return Err(invalid(format!(
                "SeccompProfile: {profile:?} is neither \"unconfined\" nor an absolute path"
            )));
        }
        crate::runtime::seccomp::check(Path::new(profile))
            .map_err(|e| invalid(format!("SeccompProfile: {e}")))?;
    }
    if let Some(cpus) = request.cpu_quota {
        if !(cpus > 0.0 && cpus.is_finite()) {
            return Err(invalid(format!(
                "CpuQuota: {cpus} is not a positive number of CPUs"
            )));
        }
    }
    Ok(())
}
