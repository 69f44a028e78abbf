//! The D-Bus face of the engine: objects, signals, authorization, error mapping.
//!
//! `serve` owns the connection. Objects are served before the name is requested, so no call
//! is lost; engine notifications are turned into `PropertiesChanged`, `Event`, `Exited` and
//! ObjectManager signals by one publisher task, in commit order.

pub mod auth;
pub mod call;
pub mod container;
pub mod error;
pub mod exec;
pub mod image;
pub mod job;
pub mod manager;
pub mod network;
pub mod property;
mod publisher;
pub mod spec;
pub mod volume;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use zbus::fdo::{ObjectManager, RequestNameFlags, RequestNameReply};
use zbus::Connection;

use crate::engine::{Engine, Notification};
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
    let publisher = publisher::Publisher {
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
    call: call::Call<'_>,
    caller: crate::engine::Caller,
    name: &str,
    force: bool,
) -> Result<(), error::BusError> {
    let result = call.engine().remove_network(caller, name, force).await;
    if result.is_ok() {
        connection
            .object_server()
            .remove::<network::NetworkObject, _>(network::path(name))
            .await?;
    }
    call.reply(result).await
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
