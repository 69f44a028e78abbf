//! `org.berth.Engine1.Container`: one object per container, holding only the engine handle
//! and the id (stratisd's shape). Every method: authorize, parse, one engine call, map.

use std::collections::HashMap;
use std::sync::Arc;

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::OwnedObjectPath;
use zbus::{interface, OwnedVariant};

use super::auth::Action;
use super::call::Served;
use super::error::{BusError, BusResult};
use super::property::{Property, Table};
use super::spec;
use super::Shared;
use crate::engine::{ContainerConfig, ContainerStatus, Engine, EngineError};
use crate::network::PortMapping;

pub const INTERFACE: &str = "org.berth.Engine1.Container";

/// The object path of a container.
pub fn path(id: &str) -> OwnedObjectPath {
    super::object_path("container", id)
}

pub struct ContainerObject {
    pub engine: Engine,
    pub shared: Arc<Shared>,
    pub id: String,
}

impl ContainerObject {
    /// The current value of an announced property.
    fn read<T>(&self, property: &Property<ContainerView, T>) -> BusResult<T> {
        Ok(property.read(&ContainerView::of(&self.engine, &self.id)?))
    }

    /// A value of the container's configuration, read in place (a property read does not
    /// copy the whole configuration).
    fn config<T>(&self, read: impl FnOnce(&ContainerConfig) -> T) -> Result<T, BusError> {
        Ok(self.engine.with_config(&self.id, read)?)
    }
}

impl Served for ContainerObject {
    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }
}

/// What a container's announced properties are read from.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub id: String,
    pub status: ContainerStatus,
    /// The published ports asked for at create, shown while no run holds any.
    pub configured_ports: Vec<PortMapping>,
}

impl ContainerView {
    pub fn of(engine: &Engine, id: &str) -> Result<ContainerView, EngineError> {
        Ok(ContainerView {
            id: id.to_string(),
            status: engine.status(id)?,
            configured_ports: engine
                .with_config(id, |c| c.network_options.port_mappings.clone())?,
        })
    }
}

/// A property of the Container interface announced with `PropertiesChanged`.
type Announced<T> = Property<ContainerView, T>;

const STATE: Announced<String> = Property::new("State", |v| v.status.state.as_str().into());
const PID: Announced<u32> = Property::new("Pid", |v| v.status.pid);
const EXIT_CODE: Announced<i32> = Property::new("ExitCode", |v| v.status.exit_code);
const OOM_KILLED: Announced<bool> = Property::new("OOMKilled", |v| v.status.oom_killed);
const STARTED_AT: Announced<u64> = Property::new("StartedAt", |v| v.status.started_at);
const FINISHED_AT: Announced<u64> = Property::new("FinishedAt", |v| v.status.finished_at);
const RESTART_COUNT: Announced<u32> = Property::new("RestartCount", |v| v.status.restart_count);
const MOUNTED: Announced<bool> = Property::new("Mounted", |v| v.status.mounted());
const MOUNTPOINT: Announced<String> = Property::new("Mountpoint", |v| v.status.mountpoint.clone());
const EXEC_SESSIONS: Announced<Vec<OwnedObjectPath>> =
    Property::new("ExecSessions", |v| session_paths(&v.id, &v.status));
const CHECKPOINTED: Announced<bool> = Property::new("Checkpointed", |v| v.status.checkpointed);
const CHECKPOINTED_AT: Announced<u64> =
    Property::new("CheckpointedAt", |v| v.status.checkpointed_at);
const RESTORED_AT: Announced<u64> = Property::new("RestoredAt", |v| v.status.restored_at);
const ERROR: Announced<String> = Property::new("Error", |v| v.status.error.clone());
const READY: Announced<bool> = Property::new("Ready", |v| v.status.ready);
const STATUS_TEXT: Announced<String> =
    Property::new("StatusText", |v| v.status.status_text.clone());
const HEALTH: Announced<String> = Property::new("Health", |v| v.status.health.clone());
const HEALTH_FAILING_STREAK: Announced<u32> =
    Property::new("HealthFailingStreak", |v| v.status.health_failing_streak);
const IP_ADDRESS: Announced<String> = Property::new("IPAddress", |v| v.status.network.ip_address());
const PORTS: Announced<Vec<(String, u16, u16, String)>> = Property::new("Ports", ports);

/// Every property of the Container interface announced with `PropertiesChanged` (all but
/// the `const` ones and `Labels`): the getters of the interface below read the same entries.
pub const ANNOUNCED: &Table<ContainerView> = &[
    &STATE,
    &PID,
    &EXIT_CODE,
    &OOM_KILLED,
    &STARTED_AT,
    &FINISHED_AT,
    &RESTART_COUNT,
    &MOUNTED,
    &MOUNTPOINT,
    &EXEC_SESSIONS,
    &CHECKPOINTED,
    &CHECKPOINTED_AT,
    &RESTORED_AT,
    &ERROR,
    &READY,
    &STATUS_TEXT,
    &HEALTH,
    &HEALTH_FAILING_STREAK,
    &IP_ADDRESS,
    &PORTS,
];

/// Published ports (host ip, host port, container port, protocol): the host ports the run
/// took, the ones asked for while no run holds any.
fn ports(view: &ContainerView) -> Vec<(String, u16, u16, String)> {
    let ports = if view.status.network.ports.is_empty() {
        &view.configured_ports
    } else {
        &view.status.network.ports
    };
    ports
        .iter()
        .map(|p| {
            (
                p.host_ip.clone(),
                p.host_port,
                p.container_port,
                p.protocol.clone(),
            )
        })
        .collect()
}

#[interface(name = "org.berth.Engine1.Container")]
impl ContainerObject {
    /// Creates the container in the runtime (monitor + runtime create) → `created`.
    async fn init(&self, #[zbus(header)] header: Header<'_>) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.init(caller, &self.id).await).await
    }

    /// Starts the container; `recursive` starts its dependencies first.
    async fn start(
        &self,
        #[zbus(header)] header: Header<'_>,
        recursive: bool,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.start(caller, &self.id, recursive).await)
            .await
    }

    /// Stop signal, then SIGKILL after `timeout_sec`; returns once the process is gone.
    async fn stop(
        &self,
        #[zbus(header)] header: Header<'_>,
        timeout_sec: u32,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.stop(caller, &self.id, timeout_sec).await)
            .await
    }

    async fn restart(
        &self,
        #[zbus(header)] header: Header<'_>,
        timeout_sec: u32,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.restart(caller, &self.id, timeout_sec).await)
            .await
    }

    /// Sends a signal, by name (`TERM`, `SIGTERM`) or number.
    async fn kill(&self, #[zbus(header)] header: Header<'_>, signal: &str) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.kill(caller, &self.id, signal).await)
            .await
    }

    async fn pause(&self, #[zbus(header)] header: Header<'_>) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.pause(caller, &self.id).await).await
    }

    async fn unpause(&self, #[zbus(header)] header: Header<'_>) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.unpause(caller, &self.id).await)
            .await
    }

    /// Replies with the exit code once the container is not running.
    async fn wait(&self, #[zbus(header)] header: Header<'_>) -> Result<i32, BusError> {
        let call = self.call(&header);
        call.reply(self.engine.wait(&self.id).await).await
    }

    /// Mounts the rootfs on the host and returns the mountpoint.
    async fn mount(&self, #[zbus(header)] header: Header<'_>) -> Result<String, BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Filesystem).await?;
        call.reply(self.engine.mount(caller, &self.id).await).await
    }

    async fn unmount(
        &self,
        #[zbus(header)] header: Header<'_>,
        force: bool,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Filesystem).await?;
        call.reply(self.engine.unmount(caller, &self.id, force).await)
            .await
    }

    /// The container as JSON, shaped like `podman inspect`; `Config.Env` only for callers
    /// allowed org.berth.engine1.exec.
    async fn inspect(
        &self,
        #[zbus(header)] header: Header<'_>,
        size: bool,
    ) -> Result<String, BusError> {
        let call = self.call(&header);
        let environment = call.permits(Action::Exec).await;
        call.reply(self.engine.inspect(&self.id, size, environment).await)
            .await
    }

    /// The container's stdin, stdout and stderr as fds leading to its monitor (never through
    /// berthd). Closing them detaches; a terminal's output comes on stdout.
    async fn attach(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(zbus::OwnedFd, zbus::OwnedFd, zbus::OwnedFd), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Exec).await?;
        let options = spec::attach_options(&options)?;
        let result = self.engine.attach(caller, &self.id, options).await;
        Ok(handles(call.reply(result).await?))
    }

    /// Attaches before the process runs (no output lost), then starts it.
    async fn start_and_attach(
        &self,
        #[zbus(header)] header: Header<'_>,
        recursive: bool,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(zbus::OwnedFd, zbus::OwnedFd, zbus::OwnedFd), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.authorize(Action::Exec).await?;
        let options = spec::attach_options(&options)?;
        let result = self
            .engine
            .start_and_attach(caller, &self.id, recursive, options)
            .await;
        Ok(handles(call.reply(result).await?))
    }

    /// Sets the terminal's window size; the process gets SIGWINCH.
    async fn resize(
        &self,
        #[zbus(header)] header: Header<'_>,
        rows: u16,
        cols: u16,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        call.authorize(Action::Exec).await?;
        call.reply(self.engine.resize(&self.id, rows, cols).await)
            .await
    }

    /// Runs a command in the running container; returns the ExecSession object. Options:
    /// `Env` as, `User` s, `WorkingDir` s, `Terminal` b, `TerminalSize` (qq), `Privileged` b,
    /// and the process's `Stdin`, `Stdout`, `Stderr` as h (otherwise /dev/null).
    async fn exec(
        &self,
        #[zbus(header)] header: Header<'_>,
        command: Vec<String>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, BusError> {
        let call = self.call(&header);
        let command_line = ("command_line", command.join(" "));
        let caller = call.authorize_with(Action::Exec, &[command_line]).await?;
        let request = spec::exec_request(command, &options)?;
        let result = self.engine.exec(caller, &self.id, request).await;
        let session = call.reply(result).await?;
        Ok(super::exec::path(&self.id, &session))
    }

    /// Dumps the running container with CRIU (`NotSupported` where CRIU cannot work):
    /// `Keep`, `KeepRunning`, `TCPEstablished`, `Export` h (the checkpoint as a tar).
    async fn checkpoint(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Filesystem).await?;
        let request = spec::checkpoint_request(&options)?;
        call.reply(self.engine.checkpoint(caller, &self.id, request).await)
            .await
    }

    /// Restores the container from its last checkpoint, or `Import` h (a checkpoint tar).
    async fn restore(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Filesystem).await?;
        let request = spec::restore_request(&options)?;
        call.reply(self.engine.restore(caller, &self.id, request).await)
            .await
    }

    /// The log as a stream into a pipe: `Follow` b, `Tail` u, `Since` t, `Until` t,
    /// `Timestamps` b.
    async fn logs(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<zbus::OwnedFd, BusError> {
        let call = self.call(&header);
        call.authorize(Action::Exec).await?;
        let options = spec::log_options(&options)?;
        Ok(zbus::OwnedFd::from(
            self.engine.logs(&self.id, options).await?,
        ))
    }

    /// Writes the root filesystem as a tar stream into the fd.
    async fn export(
        &self,
        #[zbus(header)] header: Header<'_>,
        destination: zbus::Fd<'_>,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Filesystem).await?;
        let destination = spec::owned_fd("destination", &destination)?;
        let destination = std::fs::File::from(destination);
        call.reply(self.engine.export(caller, &self.id, destination).await)
            .await
    }

    async fn cleanup(&self, #[zbus(header)] header: Header<'_>) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.cleanup(caller, &self.id).await)
            .await
    }

    /// Runs the health check now; `healthy` if it passed, else `unhealthy`.
    async fn healthcheck(&self, #[zbus(header)] header: Header<'_>) -> Result<String, BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.healthcheck(caller, &self.id).await)
            .await
    }

    async fn sync(&self, #[zbus(header)] header: Header<'_>) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.sync(caller, &self.id).await).await
    }

    async fn refresh(&self, #[zbus(header)] header: Header<'_>) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.refresh(caller, &self.id).await)
            .await
    }

    /// Runs the verbs in order under the container's lock; the first failure is returned
    /// with its index.
    async fn batch(
        &self,
        #[zbus(header)] header: Header<'_>,
        ops: Vec<(String, HashMap<String, OwnedVariant>)>,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        let parsed = ops
            .iter()
            .enumerate()
            .map(|(index, (verb, options))| {
                spec::batch_op(verb, options).map_err(|e| e.context(&format!("operation {index}")))
            })
            .collect::<BusResult<Vec<_>>>()?;
        let outcome =
            self.engine
                .batch(caller, &self.id, parsed)
                .await
                .map_err(|(index, error)| {
                    BusError::from(error).context(&format!("operation {index} ({})", ops[index].0))
                });
        // Signals of the operations that ran go out before the reply, failure or not.
        call.reply(Ok(())).await?;
        outcome
    }

    /// Removes the container; `force` kills a running one.
    async fn remove(
        &self,
        #[zbus(header)] header: Header<'_>,
        force: bool,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.remove(caller, &self.id, force).await)
            .await
    }

    async fn add_artifact(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: String,
        data: Vec<u8>,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        call.authorize(Action::Filesystem).await?;
        call.reply(self.engine.add_artifact(&self.id, name, data).await)
            .await
    }

    async fn get_artifact(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: String,
    ) -> Result<Vec<u8>, BusError> {
        let call = self.call(&header);
        call.authorize(Action::Filesystem).await?;
        call.reply(self.engine.get_artifact(&self.id, name).await)
            .await
    }

    async fn remove_artifact(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: String,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        call.authorize(Action::Filesystem).await?;
        call.reply(self.engine.remove_artifact(&self.id, name).await)
            .await
    }

    async fn list_artifacts(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<String>, BusError> {
        let call = self.call(&header);
        call.reply(self.engine.list_artifacts(&self.id).await).await
    }

    /// Every event of this container, with the sequence number of the durable log.
    #[zbus(signal)]
    pub async fn event(
        emitter: &SignalEmitter<'_>,
        seq: u64,
        timestamp: u64,
        r#type: &str,
        attributes: HashMap<String, String>,
    ) -> zbus::Result<()>;

    /// The container's main process exited with this code (128+signal when killed), or -1
    /// when nobody can know it: its monitor died (killed, or a reboot) before recording it.
    #[zbus(signal)]
    pub async fn exited(emitter: &SignalEmitter<'_>, exit_code: i32) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> String {
        self.id.clone()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> Result<String, BusError> {
        self.config(|c| c.name.clone())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn image(&self) -> Result<String, BusError> {
        self.config(|c| c.image.clone())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn image_id(&self) -> Result<String, BusError> {
        self.config(|c| c.image_id.clone())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn command(&self) -> Result<Vec<String>, BusError> {
        self.config(ContainerConfig::process_args)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn created_at(&self) -> Result<u64, BusError> {
        self.config(|c| c.created_at)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn terminal(&self) -> Result<bool, BusError> {
        self.config(|c| c.terminal)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn stop_timeout(&self) -> Result<u32, BusError> {
        self.config(|c| c.stop_timeout)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn stop_signal(&self) -> Result<String, BusError> {
        self.config(|c| c.stop_signal.clone())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn restart_policy(&self) -> Result<String, BusError> {
        self.config(|c| c.restart_policy.to_string())
    }

    #[zbus(property(emits_changed_signal = "invalidates"))]
    fn labels(&self) -> Result<HashMap<String, String>, BusError> {
        self.config(|c| {
            c.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    #[zbus(property)]
    fn state(&self) -> Result<String, BusError> {
        self.read(&STATE)
    }

    #[zbus(property)]
    fn pid(&self) -> Result<u32, BusError> {
        self.read(&PID)
    }

    /// Exit status of the last run; 128+signal when killed; -1 when it is unknown (the
    /// monitor was lost).
    #[zbus(property)]
    fn exit_code(&self) -> Result<i32, BusError> {
        self.read(&EXIT_CODE)
    }

    #[zbus(property, name = "OOMKilled")]
    fn oom_killed(&self) -> Result<bool, BusError> {
        self.read(&OOM_KILLED)
    }

    #[zbus(property)]
    fn started_at(&self) -> Result<u64, BusError> {
        self.read(&STARTED_AT)
    }

    #[zbus(property)]
    fn finished_at(&self) -> Result<u64, BusError> {
        self.read(&FINISHED_AT)
    }

    #[zbus(property)]
    fn restart_count(&self) -> Result<u32, BusError> {
        self.read(&RESTART_COUNT)
    }

    #[zbus(property)]
    fn mounted(&self) -> Result<bool, BusError> {
        self.read(&MOUNTED)
    }

    #[zbus(property)]
    fn mountpoint(&self) -> Result<String, BusError> {
        self.read(&MOUNTPOINT)
    }

    #[zbus(property)]
    fn exec_sessions(&self) -> Result<Vec<OwnedObjectPath>, BusError> {
        self.read(&EXEC_SESSIONS)
    }

    #[zbus(property)]
    fn checkpointed(&self) -> Result<bool, BusError> {
        self.read(&CHECKPOINTED)
    }

    #[zbus(property)]
    fn checkpointed_at(&self) -> Result<u64, BusError> {
        self.read(&CHECKPOINTED_AT)
    }

    #[zbus(property)]
    fn restored_at(&self) -> Result<u64, BusError> {
        self.read(&RESTORED_AT)
    }

    #[zbus(property)]
    fn error(&self) -> Result<String, BusError> {
        self.read(&ERROR)
    }

    /// The container sent `READY=1` on its `NOTIFY_SOCKET` (spec key `Notify`).
    #[zbus(property)]
    fn ready(&self) -> Result<bool, BusError> {
        self.read(&READY)
    }

    /// The last `STATUS=` it sent.
    #[zbus(property)]
    fn status_text(&self) -> Result<String, BusError> {
        self.read(&STATUS_TEXT)
    }

    /// `""` (no health check), `starting`, `healthy` or `unhealthy`.
    #[zbus(property)]
    fn health(&self) -> Result<String, BusError> {
        self.read(&HEALTH)
    }

    #[zbus(property)]
    fn health_failing_streak(&self) -> Result<u32, BusError> {
        self.read(&HEALTH_FAILING_STREAK)
    }

    /// The address on the first network, "" when none.
    #[zbus(property, name = "IPAddress")]
    fn ip_address(&self) -> Result<String, BusError> {
        self.read(&IP_ADDRESS)
    }

    /// Published ports (host ip, host port, container port, protocol); the host ports
    /// actually taken while the container runs, the ones asked for otherwise.
    #[zbus(property)]
    fn ports(&self) -> Result<Vec<(String, u16, u16, String)>, BusError> {
        self.read(&PORTS)
    }
}

/// The caller's ends of an attach, as D-Bus handles.
fn handles(attached: crate::engine::Attached) -> (zbus::OwnedFd, zbus::OwnedFd, zbus::OwnedFd) {
    (
        zbus::OwnedFd::from(attached.stdin),
        zbus::OwnedFd::from(attached.stdout),
        zbus::OwnedFd::from(attached.stderr),
    )
}

/// The object paths of a container's exec sessions.
pub fn session_paths(id: &str, status: &ContainerStatus) -> Vec<OwnedObjectPath> {
    status
        .exec_sessions
        .keys()
        .map(|session| super::exec::path(id, session))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_announced_property_of_the_xml_is_in_the_change_table() {
        let sample = ContainerView {
            id: "0".repeat(64),
            status: ContainerStatus::default(),
            configured_ports: Vec::new(),
        };
        super::super::property::tests::assert_table_matches_xml(INTERFACE, ANNOUNCED, &sample);
    }
}
