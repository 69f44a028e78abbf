//! `org.berth.Engine1.Manager` at `/org/berth/Engine1`.

use std::collections::HashMap;
use std::sync::Arc;

use zbus::message::Header;
use zbus::OwnedObjectPath;
use zbus::{interface, OwnedVariant};

use super::auth::Action;
use super::container;
use super::error::BusError;
use super::image;
use super::network;
use super::spec;
use super::volume;
use super::Shared;
use crate::engine::Engine;

pub const PATH: &str = "/org/berth/Engine1";

pub struct Manager {
    pub engine: Engine,
    pub shared: Arc<Shared>,
}

/// (seq, timestamp, container id, type, attributes), as `GetEvents` returns them.
type EventTuple = (u64, u64, String, String, HashMap<String, String>);

#[interface(name = "org.berth.Engine1.Manager")]
impl Manager {
    /// Stores a `configured` container from the spec; does not start it.
    async fn create_container(
        &self,
        #[zbus(header)] header: Header<'_>,
        spec: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, BusError> {
        let _busy = self.engine.busy();
        let caller = self.shared.auth.authorize(&header, Action::Manage).await?;
        let request = spec::create_request(spec)?;
        let id = self.engine.create(caller, request).await?;
        // The reply waits for the publisher, which serves the new object first: the caller's
        // next call finds it.
        self.shared
            .reply(&self.engine, Ok(container::path(&id)))
            .await
    }

    /// A name, full id, or unique id prefix.
    async fn get_container(&self, name_or_id: &str) -> Result<OwnedObjectPath, BusError> {
        let _busy = self.engine.busy();
        Ok(container::path(&self.engine.lookup(name_or_id)?))
    }

    /// (id, name, state, path) of every container, oldest first.
    async fn list_containers(&self) -> Vec<(String, String, String, OwnedObjectPath)> {
        let _busy = self.engine.busy();
        self.engine
            .list()
            .into_iter()
            .map(|(id, name, state)| {
                let path = container::path(&id);
                (id, name, state.as_str().to_string(), path)
            })
            .collect()
    }

    async fn remove_container(
        &self,
        #[zbus(header)] header: Header<'_>,
        name_or_id: &str,
        force: bool,
    ) -> Result<(), BusError> {
        let _busy = self.engine.busy();
        let caller = self.shared.auth.authorize(&header, Action::Manage).await?;
        let id = self.engine.lookup(name_or_id)?;
        self.shared
            .reply(&self.engine, self.engine.remove(caller, &id, force).await)
            .await
    }

    /// Reads an image archive (OCI archive, docker-archive or rootfs tar, optionally gzip or
    /// zstd compressed) from the fd, streaming.
    async fn import_image(
        &self,
        #[zbus(header)] header: Header<'_>,
        source: zbus::Fd<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, BusError> {
        let _busy = self.engine.busy();
        let caller = self.shared.auth.authorize(&header, Action::Images).await?;
        let options = spec::import_options(&options)?;
        let source = super::spec::owned_fd("source", &source)?;
        let id = self
            .engine
            .import_image(caller, std::fs::File::from(source), options)
            .await;
        self.shared
            .reply(&self.engine, id.map(|id| image::path(&id)))
            .await
    }

    /// A name, full id, or unique id prefix.
    async fn get_image(&self, reference_or_id: &str) -> Result<OwnedObjectPath, BusError> {
        let _busy = self.engine.busy();
        Ok(image::path(&self.engine.lookup_image(reference_or_id)?))
    }

    /// (id, first name or "", size, path) of every image, oldest first.
    async fn list_images(&self) -> Vec<(String, String, u64, OwnedObjectPath)> {
        let _busy = self.engine.busy();
        self.engine
            .images()
            .into_iter()
            .map(|i| {
                let path = image::path(&i.id);
                (
                    i.id,
                    i.names.first().cloned().unwrap_or_default(),
                    i.size,
                    path,
                )
            })
            .collect()
    }

    async fn remove_image(
        &self,
        #[zbus(header)] header: Header<'_>,
        reference_or_id: &str,
        force: bool,
    ) -> Result<(), BusError> {
        let _busy = self.engine.busy();
        let caller = self.shared.auth.authorize(&header, Action::Images).await?;
        let id = self.engine.lookup_image(reference_or_id)?;
        self.shared
            .reply(
                &self.engine,
                self.engine.remove_image(caller, &id, force).await,
            )
            .await
    }

    /// Starts a pull from a registry; returns its Job at once (the transfer runs on).
    async fn pull_image(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        reference: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, BusError> {
        let _busy = self.engine.busy();
        let caller = self.shared.auth.authorize(&header, Action::Images).await?;
        let options = spec::pull_options(&options)?;
        let job = self.engine.pull_image(caller, reference, options)?;
        let id = job.id;
        super::job::serve(connection, &self.engine, &self.shared, job).await?;
        Ok(super::job::path(id))
    }

    /// Jobs not yet gone (a finished one stays 60 s).
    async fn list_jobs(&self) -> Vec<OwnedObjectPath> {
        self.engine
            .job_ids()
            .into_iter()
            .map(super::job::path)
            .collect()
    }

    /// The durable event log after `after_seq` (at most `limit` events, 0 = all). The log is
    /// bounded (berthd --max-events): when events after `after_seq` were trimmed, the error
    /// org.berth.Engine1.Error.EventsTrimmed names the seq N through which they were
    /// ("events through seq N were trimmed …"); every event after N is kept.
    async fn get_events(&self, after_seq: u64, limit: u32) -> Result<Vec<EventTuple>, BusError> {
        let _busy = self.engine.busy();
        let events = self.engine.events(after_seq, limit).await?;
        Ok(events
            .into_iter()
            .map(|e| {
                (
                    e.seq,
                    e.timestamp,
                    e.container_id,
                    e.kind,
                    e.attributes.into_iter().collect(),
                )
            })
            .collect())
    }

    /// A bridge network (options `Subnet`, `Gateway`, `Internal`, `Isolate`, `DnsEnabled`,
    /// `Interface`).
    async fn create_network(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        name: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, BusError> {
        let _busy = self.engine.busy();
        let caller = self.shared.auth.authorize(&header, Action::Manage).await?;
        let request = spec::network_request(&options)?;
        let record = self.engine.create_network(caller, name, request).await?;
        super::add_network(connection, &self.engine, &self.shared, &record.name).await?;
        Ok(network::path(&record.name))
    }

    async fn get_network(&self, name: &str) -> Result<OwnedObjectPath, BusError> {
        let _busy = self.engine.busy();
        Ok(network::path(&self.engine.network(name)?.name))
    }

    /// (name, driver, subnet, path) of every network, by name.
    async fn list_networks(&self) -> Vec<(String, String, String, OwnedObjectPath)> {
        let _busy = self.engine.busy();
        self.engine
            .networks()
            .into_iter()
            .map(|n| {
                let path = network::path(&n.name);
                (n.name, n.driver, n.subnet, path)
            })
            .collect()
    }

    /// `NetworkInUse` while containers are on it, unless `force` (which removes them).
    async fn remove_network(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        name: &str,
        force: bool,
    ) -> Result<(), BusError> {
        let _busy = self.engine.busy();
        let caller = self.shared.auth.authorize(&header, Action::Manage).await?;
        super::remove_network(connection, &self.engine, &self.shared, caller, name, force).await
    }

    /// A named volume (podman's `local` driver); "" generates a name. Options: `Labels` a{ss}.
    async fn create_volume(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, BusError> {
        let _busy = self.engine.busy();
        let caller = self.shared.auth.authorize(&header, Action::Manage).await?;
        let labels = spec::volume_labels(&options)?;
        let name = self.engine.create_volume(caller, name, labels).await;
        self.shared
            .reply(&self.engine, name.map(|name| volume::path(&name)))
            .await
    }

    async fn get_volume(&self, name: &str) -> Result<OwnedObjectPath, BusError> {
        let _busy = self.engine.busy();
        self.engine.volume(name)?;
        Ok(volume::path(name))
    }

    /// (name, mountpoint, path) of every volume, oldest first.
    async fn list_volumes(&self) -> Vec<(String, String, OwnedObjectPath)> {
        let _busy = self.engine.busy();
        self.engine
            .volumes()
            .into_iter()
            .map(|v| {
                let mountpoint = self.engine.volume_mountpoint(&v.name);
                let path = volume::path(&v.name);
                (v.name, mountpoint.display().to_string(), path)
            })
            .collect()
    }

    /// `VolumeInUse` while a container uses it; `force` removes those containers first.
    async fn remove_volume(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: &str,
        force: bool,
    ) -> Result<(), BusError> {
        let _busy = self.engine.busy();
        let caller = self.shared.auth.authorize(&header, Action::Manage).await?;
        self.shared
            .reply(
                &self.engine,
                self.engine.remove_volume(caller, name, force).await,
            )
            .await
    }

    /// Removes every volume no container uses; returns their names.
    async fn prune_volumes(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<String>, BusError> {
        let _busy = self.engine.busy();
        let caller = self.shared.auth.authorize(&header, Action::Manage).await?;
        self.shared
            .reply(&self.engine, self.engine.prune_volumes(caller).await)
            .await
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn runtime(&self) -> String {
        self.engine.runtime_name()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn storage_driver(&self) -> String {
        self.engine.storage_driver().to_string()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn root(&self) -> String {
        self.engine.root().display().to_string()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn run_root(&self) -> String {
        self.engine.runroot().display().to_string()
    }
}
