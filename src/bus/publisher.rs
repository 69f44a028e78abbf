//! Turns the engine's notifications into signals, in commit order: objects served and
//! removed (ObjectManager announces them), `PropertiesChanged` from the property tables,
//! `Event` and `Exited`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

use super::container::{self, ContainerObject, ContainerView};
use super::property::{announce, changes};
use super::{exec, image, volume, Shared};
use crate::engine::{ContainerStatus, Engine, Notification};

pub(super) struct Publisher {
    pub connection: Connection,
    pub engine: Engine,
    pub shared: Arc<Shared>,
    /// What each container's last `PropertiesChanged` was computed from.
    pub last: HashMap<String, ContainerView>,
}

impl Publisher {
    pub async fn run(mut self, mut notifications: mpsc::UnboundedReceiver<Notification>) {
        while let Some(notification) = notifications.recv().await {
            if let Err(error) = self.publish(notification).await {
                tracing::warn!(%error, "emitting a signal failed");
            }
            self.shared.published.send_modify(|count| *count += 1);
        }
    }

    async fn publish(&mut self, notification: Notification) -> zbus::Result<()> {
        match notification {
            Notification::Added { id } => self.container_added(id).await,
            Notification::Removed { id } => self.container_removed(&id).await,
            Notification::Status { id, status } => self.container_changed(id, *status).await,
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
                let path = container::path(&record.container_id);
                let emitter = SignalEmitter::new(&self.connection, path)?;
                let attributes: HashMap<String, String> = record.attributes.into_iter().collect();
                let (seq, timestamp) = (record.seq, record.timestamp);
                ContainerObject::event(&emitter, seq, timestamp, &record.kind, attributes).await
            }
            Notification::Exited { id, exit_code } => {
                let emitter = SignalEmitter::new(&self.connection, container::path(&id))?;
                ContainerObject::exited(&emitter, exit_code).await
            }
            Notification::ImageAdded { id } => {
                super::add_image(&self.connection, &self.engine, &self.shared, &id).await
            }
            Notification::ImageChanged { id } => self.image_changed(&id).await,
            Notification::ImageRemoved { id } => {
                self.connection
                    .object_server()
                    .remove::<image::ImageObject, _>(image::path(&id))
                    .await?;
                Ok(())
            }
            Notification::VolumeAdded { name } => {
                super::add_volume(&self.connection, &self.engine, &self.shared, &name).await
            }
            Notification::VolumeChanged { name } => self.volume_changed(&name).await,
            Notification::VolumeRemoved { name } => {
                self.connection
                    .object_server()
                    .remove::<volume::VolumeObject, _>(volume::path(&name))
                    .await?;
                Ok(())
            }
        }
    }

    async fn container_added(&mut self, id: String) -> zbus::Result<()> {
        super::add_container(&self.connection, &self.engine, &self.shared, &id).await?;
        if let Ok(view) = ContainerView::of(&self.engine, &id) {
            self.last.insert(id, view);
        }
        Ok(())
    }

    async fn container_removed(&mut self, id: &str) -> zbus::Result<()> {
        if let Some(last) = self.last.remove(id) {
            for session in last.status.exec_sessions.keys() {
                // One not served (an earlier failure) must not keep the container's object
                // on the bus.
                let _ = self
                    .connection
                    .object_server()
                    .remove::<exec::ExecSessionObject, _>(exec::path(id, session))
                    .await;
            }
        }
        self.connection
            .object_server()
            .remove::<ContainerObject, _>(container::path(id))
            .await?;
        Ok(())
    }

    /// Announces what changed on the container and its exec sessions.
    async fn container_changed(&mut self, id: String, status: ContainerStatus) -> zbus::Result<()> {
        let before = self.last.remove(&id);
        // The configuration does not change: what the first view read of it stays true.
        let configured_ports = match &before {
            Some(before) => before.configured_ports.clone(),
            None => self
                .engine
                .config(&id)
                .map(|config| config.network_options.port_mappings)
                .unwrap_or_default(),
        };
        let after = ContainerView {
            id: id.clone(),
            status,
            configured_ports,
        };
        let changed = changes(container::ANNOUNCED, before.as_ref(), &after);
        let previous = before.as_ref().map(|before| &before.status);
        let sessions = self.publish_sessions(&id, previous, &after.status).await;
        self.last.insert(id.clone(), after);
        sessions?;
        let emitter = SignalEmitter::new(&self.connection, container::path(&id))?;
        announce(&emitter, container::INTERFACE, changed).await
    }

    /// Serves new exec sessions, drops removed ones and announces their changes and exits.
    async fn publish_sessions(
        &self,
        id: &str,
        before: Option<&ContainerStatus>,
        after: &ContainerStatus,
    ) -> zbus::Result<()> {
        let none = BTreeMap::new();
        let old = before.map_or(&none, |status| &status.exec_sessions);
        for (session, record) in &after.exec_sessions {
            let previous = old.get(session);
            if previous.is_none() {
                super::add_session(&self.connection, &self.engine, &self.shared, id, session)
                    .await?;
            }
            let emitter = SignalEmitter::new(&self.connection, exec::path(id, session))?;
            if let Some(previous) = previous {
                let changed = changes(exec::ANNOUNCED, Some(previous), record);
                announce(&emitter, exec::INTERFACE, changed).await?;
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

    /// An image's names changed: both announced properties go out with their values.
    async fn image_changed(&self, id: &str) -> zbus::Result<()> {
        let Ok(record) = self.engine.image(id) else {
            return Ok(());
        };
        let emitter = SignalEmitter::new(&self.connection, image::path(id))?;
        announce(
            &emitter,
            image::INTERFACE,
            changes(image::ANNOUNCED, None, &record),
        )
        .await
    }

    async fn volume_changed(&self, name: &str) -> zbus::Result<()> {
        if self.engine.volume(name).is_err() {
            return Ok(());
        }
        let emitter = SignalEmitter::new(&self.connection, volume::path(name))?;
        let users = self.engine.volume_containers(name);
        let changed = changes(volume::ANNOUNCED, None, &users);
        announce(&emitter, volume::INTERFACE, changed).await
    }
}
