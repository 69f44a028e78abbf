//! The D-Bus face of the engine: objects, signals, authorization, error mapping.
//!
//! `serve` owns the connection. Objects are served before the name is requested, so no call
//! is lost; engine notifications are turned into `PropertiesChanged`, `Event`, `Exited` and
//! ObjectManager signals by one publisher task, in commit order.

pub mod auth;
pub mod container;
pub mod error;
pub mod exec;
pub mod image;
pub mod job;
pub mod manager;
pub mod network;
pub mod spec;
pub mod volume;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use zbus::fdo::{ObjectManager, RequestNameFlags, RequestNameReply};
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

use crate::engine::{ContainerStatus, Engine, Notification};
use auth::Authorizer;
use container::ContainerObject;
use manager::Manager;

/// The well-known name berthd owns.
pub const BUS_NAME: &str = "org.berth.Engine1";

/// What every object shares: the authorizer and the publisher's progress.
pub struct Shared {
    pub auth: Authorizer,
    /// How many engine notifications the publisher has turned into signals.
    published: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    /// Maps an engine result to the reply, once every signal the call produced has been
    /// sent: a client sees `PropertiesChanged` before the reply, and a cached property read
    /// right after the reply is current.
    pub async fn reply<T>(
        &self,
        engine: &Engine,
        result: Result<T, crate::engine::EngineError>,
    ) -> Result<T, error::BusError> {
        let target = engine.notifications_sent();
        let mut published = self.published.subscribe();
        let _ = published.wait_for(|count| *count >= target).await;
        Ok(result?)
    }
}

/// `/org/berth/Engine1/<collection>/<id>`. Ids are 64 hex digits, always a valid path
/// element; anything else falls back to the collection's own path rather than panic.
fn object_path(collection: &str, id: &str) -> zbus::OwnedObjectPath {
    zbus::OwnedObjectPath::try_from(format!("/org/berth/Engine1/{collection}/{id}"))
        .or_else(|_| zbus::OwnedObjectPath::try_from(format!("/org/berth/Engine1/{collection}")))
        .unwrap_or_else(|_| {
            zbus::OwnedObjectPath::from(zbus::ObjectPath::from_static_str_unchecked(
                "/org/berth/Engine1",
            ))
        })
}

/// Which bus to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusAddress {
    System,
    Session,
    Address(String),
}

impl BusAddress {
    /// `system`, `session` or a D-Bus address.
    pub fn parse(text: &str) -> BusAddress {
        match text {
            "system" => BusAddress::System,
            "session" => BusAddress::Session,
            address => BusAddress::Address(address.to_string()),
        }
    }

    pub fn builder(&self) -> zbus::connection::Builder<'static> {
        match self {
            BusAddress::System => zbus::connection::Builder::system(),
            BusAddress::Session => zbus::connection::Builder::session(),
            BusAddress::Address(address) => zbus::connection::Builder::address(address.as_str()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("d-bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("the name {BUS_NAME} is already owned on this bus")]
    NameTaken,
    #[error("{0}")]
    Engine(#[from] crate::engine::EngineError),
}

/// Serves the engine on `address` until the idle timeout (if any) expires.
pub async fn serve(
    engine: Engine,
    notifications: mpsc::UnboundedReceiver<Notification>,
    address: &BusAddress,
    idle_timeout: Option<Duration>,
) -> Result<(), ServeError> {
    let connection = address.builder().build().await?;
    // On a session or private bus, the bus's owner is trusted like root (see auth.rs).
    let trusted_uid = (*address != BusAddress::System).then(|| nix::unistd::geteuid().as_raw());
    let shared = Arc::new(Shared {
        auth: Authorizer::new(connection.clone(), trusted_uid),
        published: tokio::sync::watch::Sender::new(0),
    });
    let server = connection.object_server();
    server.at(manager::PATH, ObjectManager).await?;
    server
        .at(
            manager::PATH,
            Manager {
                engine: engine.clone(),
                shared: shared.clone(),
            },
        )
        .await?;
    for id in engine.container_ids() {
        add_container(&connection, &engine, &shared, &id).await?;
    }
    for image in engine.images() {
        add_image(&connection, &engine, &shared, &image.id).await?;
    }
    for volume in engine.volumes() {
        add_volume(&connection, &engine, &shared, &volume.name).await?;
    }
    for network in engine.networks() {
        add_network(&connection, &engine, &shared, &network.name).await?;
    }
    let publisher = Publisher {
        connection: connection.clone(),
        engine: engine.clone(),
        shared: shared.clone(),
        last: HashMap::new(),
    };
    tokio::spawn(publisher.run(notifications));
    engine.start_up().await?;

    let reply = connection
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await?;
    if reply != RequestNameReply::PrimaryOwner {
        return Err(ServeError::NameTaken);
    }
    tracing::info!(
        containers = engine.container_ids().len(),
        "serving {BUS_NAME}"
    );

    match idle_timeout {
        Some(timeout) => {
            engine.wait_idle(timeout).await;
            tracing::info!(
                "idle for {}s, exiting; containers keep running",
                timeout.as_secs()
            );
            let _ = connection.release_name(BUS_NAME).await;
        }
        None => std::future::pending::<()>().await,
    }
    Ok(())
}

async fn add_container(
    connection: &Connection,
    engine: &Engine,
    shared: &Arc<Shared>,
    id: &str,
) -> zbus::Result<()> {
    let object = ContainerObject {
        engine: engine.clone(),
        shared: shared.clone(),
        id: id.to_string(),
    };
    connection
        .object_server()
        .at(container::path(id), object)
        .await?;
    if let Ok(status) = engine.status(id) {
        for session in status.exec_sessions.keys() {
            add_session(connection, engine, shared, id, session).await?;
        }
    }
    Ok(())
}

async fn add_session(
    connection: &Connection,
    engine: &Engine,
    shared: &Arc<Shared>,
    id: &str,
    session: &str,
) -> zbus::Result<()> {
    let object = exec::ExecSessionObject {
        engine: engine.clone(),
        shared: shared.clone(),
        id: id.to_string(),
        session: session.to_string(),
    };
    connection
        .object_server()
        .at(exec::path(id, session), object)
        .await?;
    Ok(())
}

/// Serves an image's object (a no-op if it is already served).
async fn add_image(
    connection: &Connection,
    engine: &Engine,
    shared: &Arc<Shared>,
    id: &str,
) -> zbus::Result<()> {
    let object = image::ImageObject {
        engine: engine.clone(),
        shared: shared.clone(),
        id: id.to_string(),
    };
    connection
        .object_server()
        .at(image::path(id), object)
        .await?;
    Ok(())
}

/// Serves a network's object.
pub(crate) async fn add_network(
    connection: &Connection,
    engine: &Engine,
    shared: &Arc<Shared>,
    name: &str,
) -> zbus::Result<()> {
    let object = network::NetworkObject {
        engine: engine.clone(),
        shared: shared.clone(),
        name: name.to_string(),
    };
    connection
        .object_server()
        .at(network::path(name), object)
        .await?;
    Ok(())
}

/// `RemoveNetwork` (Manager's and the Network's own): the engine removes it, then its object
/// goes.
pub(crate) async fn remove_network(
    connection: &Connection,
    engine: &Engine,
    shared: &Arc<Shared>,
    caller: crate::engine::Caller,
    name: &str,
    force: bool,
) -> Result<(), error::BusError> {
    let result = engine.remove_network(caller, name, force).await;
    if result.is_ok() {
        connection
            .object_server()
            .remove::<network::NetworkObject, _>(network::path(name))
            .await?;
    }
    shared.reply(engine, result).await
}

/// Serves a volume's object (a no-op if it is already served).
async fn add_volume(
    connection: &Connection,
    engine: &Engine,
    shared: &Arc<Shared>,
    name: &str,
) -> zbus::Result<()> {
    let object = volume::VolumeObject {
        engine: engine.clone(),
        shared: shared.clone(),
        name: name.to_string(),
    };
    connection
        .object_server()
        .at(volume::path(name), object)
        .await?;
    Ok(())
}

/// Turns engine notifications into signals, in order.
struct Publisher {
    connection: Connection,
    engine: Engine,
    shared: Arc<Shared>,
    /// What each container's last `PropertiesChanged` said.
    last: HashMap<String, ContainerStatus>,
}

impl Publisher {
    /// Serves new exec sessions, drops removed ones and announces their changes and exits.
    async fn publish_sessions(
        &self,
        id: &str,
        before: Option<&ContainerStatus>,
        after: &ContainerStatus,
    ) -> zbus::Result<()> {
        let none = std::collections::BTreeMap::new();
        let old = before.map_or(&none, |status| &status.exec_sessions);
        for (session, record) in &after.exec_sessions {
            let previous = old.get(session);
            if previous.is_none() {
                add_session(&self.connection, &self.engine, &self.shared, id, session).await?;
            }
            let emitter = SignalEmitter::new(&self.connection, exec::path(id, session))?;
            if let Some(previous) = previous.filter(|previous| *previous != record) {
                let mut changed: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
                if previous.running != record.running {
                    changed.insert("State", zbus::Variant::from(record.state()));
                }
                if previous.pid != record.pid {
                    changed.insert("Pid", zbus::Variant::from(record.pid));
                }
                if previous.exit_code != record.exit_code {
                    changed.insert("ExitCode", zbus::Variant::from(record.exit_code));
                }
                if !changed.is_empty() {
                    zbus::fdo::Properties::properties_changed(
                        &emitter,
                        InterfaceName::from_static_str_unchecked(exec::INTERFACE),
                        changed,
                        std::borrow::Cow::Borrowed(&[]),
                    )
                    .await?;
                }
            }
            if !record.running && previous.is_none_or(|previous| previous.running) {
                exec::ExecSessionObject::exited(&emitter, record.exit_code).await?;
            }
        }
        for session in old.keys() {
            if !after.exec_sessions.contains_key(session) {
                self.connection
                    .object_server()
                    .remove::<exec::ExecSessionObject, _>(exec::path(id, session))
                    .await?;
            }
        }
        Ok(())
    }

    async fn run(mut self, mut notifications: mpsc::UnboundedReceiver<Notification>) {
        while let Some(notification) = notifications.recv().await {
            if let Err(error) = self.publish(notification).await {
                tracing::warn!(%error, "emitting a signal failed");
            }
            self.shared.published.send_modify(|count| *count += 1);
        }
    }

    async fn publish(&mut self, notification: Notification) -> zbus::Result<()> {
        match notification {
            Notification::Added { id } => {
                add_container(&self.connection, &self.engine, &self.shared, &id).await?;
                if let Ok(status) = self.engine.status(&id) {
                    self.last.insert(id, status);
                }
            }
            Notification::Removed { id } => {
                if let Some(last) = self.last.remove(&id) {
                    for session in last.exec_sessions.keys() {
                        // One not served (an earlier failure) must not keep the container's
                        // object on the bus.
                        let _ = self
                            .connection
                            .object_server()
                            .remove::<exec::ExecSessionObject, _>(exec::path(&id, session))
                            .await;
                    }
                }
                self.connection
                    .object_server()
                    .remove::<ContainerObject, _>(container::path(&id))
                    .await?;
            }
            Notification::Status { id, status } => {
                let before = self.last.remove(&id);
                let changed = container::changed_properties(&id, before.as_ref(), &status);
                let sessions = self.publish_sessions(&id, before.as_ref(), &status).await;
                self.last.insert(id.clone(), *status);
                sessions?;
                if !changed.is_empty() {
                    let emitter = SignalEmitter::new(&self.connection, container::path(&id))?;
                    let changed: HashMap<&str, zbus::Variant<'_>> = changed.into_iter().collect();
                    zbus::fdo::Properties::properties_changed(
                        &emitter,
                        InterfaceName::from_static_str_unchecked(container::INTERFACE),
                        changed,
                        std::borrow::Cow::Borrowed(&[]),
                    )
                    .await?;
                }
            }
            Notification::Event(record) => {
                // The lifecycle in the log (structured fields in the journal).
                tracing::info!(
                    container_id = %record.container_id,
                    event = %record.kind,
                    seq = record.seq,
                    "{} {}",
                    record.kind,
                    record.attributes.get("name").map_or("", String::as_str)
                );
                let emitter =
                    SignalEmitter::new(&self.connection, container::path(&record.container_id))?;
                let attributes: HashMap<String, String> = record.attributes.into_iter().collect();
                ContainerObject::event(
                    &emitter,
                    record.seq,
                    record.timestamp,
                    &record.kind,
                    attributes,
                )
                .await?;
            }
            Notification::ImageAdded { id } => {
                add_image(&self.connection, &self.engine, &self.shared, &id).await?;
            }
            Notification::ImageChanged { id } => {
                if let Ok(image) = self.engine.image(&id) {
                    let emitter = SignalEmitter::new(&self.connection, image::path(&id))?;
                    let changed = HashMap::from([
                        ("Names", zbus::Variant::from(image.names)),
                        ("RepoDigests", zbus::Variant::from(image.repo_digests)),
                    ]);
                    zbus::fdo::Properties::properties_changed(
                        &emitter,
                        InterfaceName::from_static_str_unchecked(image::INTERFACE),
                        changed,
                        std::borrow::Cow::Borrowed(&[]),
                    )
                    .await?;
                }
            }
            Notification::ImageRemoved { id } => {
                self.connection
                    .object_server()
                    .remove::<image::ImageObject, _>(image::path(&id))
                    .await?;
            }
            Notification::VolumeAdded { name } => {
                add_volume(&self.connection, &self.engine, &self.shared, &name).await?;
            }
            Notification::VolumeChanged { name } => {
                if self.engine.volume(&name).is_ok() {
                    let emitter = SignalEmitter::new(&self.connection, volume::path(&name))?;
                    let containers = volume::containers_property(&self.engine, &name);
                    let changed = HashMap::from([("Containers", zbus::Variant::from(containers))]);
                    zbus::fdo::Properties::properties_changed(
                        &emitter,
                        InterfaceName::from_static_str_unchecked(volume::INTERFACE),
                        changed,
                        std::borrow::Cow::Borrowed(&[]),
                    )
                    .await?;
                }
            }
            Notification::VolumeRemoved { name } => {
                self.connection
                    .object_server()
                    .remove::<volume::VolumeObject, _>(volume::path(&name))
                    .await?;
            }
            Notification::Exited { id, exit_code } => {
                let emitter = SignalEmitter::new(&self.connection, container::path(&id))?;
                ContainerObject::exited(&emitter, exit_code).await?;
            }
        }
        Ok(())
    }
}
