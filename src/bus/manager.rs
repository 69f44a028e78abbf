//! `org.berth.Engine1.Manager` at `/org/berth/Engine1`.

use std::collections::HashMap;
use std::sync::Arc;

use zbus::message::Header;
use zbus::OwnedObjectPath;
use zbus::{interface, OwnedVariant};

use super::auth::Action;
use super::call::Served;
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

impl Served for Manager {
    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }
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
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        let request = spec::create_request(spec)?;
        let id = self.engine.create(caller, request).await?;
        // The reply waits for the publisher, which serves the new object first: the caller's
        // next call finds it.
        call.reply(Ok(container::path(&id))).await
    }

    /// A name, full id, or unique id prefix.
    async fn get_container(
        &self,
        #[zbus(header)] header: Header<'_>,
        name_or_id: &str,
    ) -> Result<OwnedObjectPath, BusError> {
        let _call = self.call(&header);
        Ok(container::path(&self.engine.lookup(name_or_id)?))
    }

    /// (id, name, state, path) of every container, oldest first.
    async fn list_containers(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<(String, String, String, OwnedObjectPath)>, BusError> {
        let _call = self.call(&header);
        let rows = self.engine.list().into_iter().map(|(id, name, state)| {
            let path = container::path(&id);
            (id, name, state.as_str().to_string(), path)
        });
        Ok(rows.collect())
    }

    async fn remove_container(
        &self,
        #[zbus(header)] header: Header<'_>,
        name_or_id: &str,
        force: bool,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        let id = self.engine.lookup(name_or_id)?;
        call.reply(self.engine.remove(caller, &id, force).await)
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
        let call = self.call(&header);
        let caller = call.authorize(Action::Images).await?;
        let options = spec::import_options(&options)?;
        let source = std::fs::File::from(spec::owned_fd("source", &source)?);
        let id = self.engine.import_image(caller, source, options).await;
        call.reply(id.map(|id| image::path(&id))).await
    }

    /// A name, full id, or unique id prefix.
    async fn get_image(
        &self,
        #[zbus(header)] header: Header<'_>,
        reference_or_id: &str,
    ) -> Result<OwnedObjectPath, BusError> {
        let _call = self.call(&header);
        Ok(image::path(&self.engine.lookup_image(reference_or_id)?))
    }

    /// (id, first name or "", size, path) of every image, oldest first.
    async fn list_images(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<(String, String, u64, OwnedObjectPath)>, BusError> {
        let _call = self.call(&header);
        let rows = self.engine.images().into_iter().map(|i| {
            let path = image::path(&i.id);
            let name = i.names.first().cloned().unwrap_or_default();
            (i.id, name, i.size, path)
        });
        Ok(rows.collect())
    }

    async fn remove_image(
        &self,
        #[zbus(header)] header: Header<'_>,
        reference_or_id: &str,
        force: bool,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Images).await?;
        let id = self.engine.lookup_image(reference_or_id)?;
        call.reply(self.engine.remove_image(caller, &id, force).await)
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
        let call = self.call(&header);
        let caller = call.authorize(Action::Images).await?;
        let options = spec::pull_options(&options)?;
        let job = self.engine.pull_image(caller, reference, options)?;
        let id = job.id;
        super::job::serve(connection, &self.engine, &self.shared, job).await?;
        Ok(super::job::path(id))
    }

    /// Jobs not yet gone (a finished one stays 60 s).
    async fn list_jobs(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<OwnedObjectPath>, BusError> {
        let _call = self.call(&header);
        let ids = self.engine.job_ids().into_iter();
        Ok(ids.map(super::job::path).collect())
    }

    /// The durable event log after `after_seq` (at most `limit` events, 0 = all). The log is
    /// bounded (berthd --max-events): when events after `after_seq` were trimmed, the error
    /// org.berth.Engine1.Error.EventsTrimmed names the seq N through which they were
    /// ("events through seq N were trimmed …"); every event after N is kept.
    async fn get_events(
        &self,
        #[zbus(header)] header: Header<'_>,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<EventTuple>, BusError> {
        let _call = self.call(&header);
        let events = self.engine.events(after_seq, limit).await?;
        let rows = events.into_iter().map(|e| {
            let attributes = e.attributes.into_iter().collect();
            (e.seq, e.timestamp, e.container_id, e.kind, attributes)
        });
        Ok(rows.collect())
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
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        let request = spec::network_request(&options)?;
        let record = self.engine.create_network(caller, name, request).await?;
        super::add_network(connection, &self.engine, &self.shared, &record.name).await?;
        Ok(network::path(&record.name))
    }

    async fn get_network(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: &str,
    ) -> Result<OwnedObjectPath, BusError> {
        let _call = self.call(&header);
        Ok(network::path(&self.engine.network(name)?.name))
    }

    /// (name, driver, subnet, path) of every network, by name.
    async fn list_networks(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<(String, String, String, OwnedObjectPath)>, BusError> {
        let _call = self.call(&header);
        let rows = self.engine.networks().into_iter().map(|n| {
            let path = network::path(&n.name);
            (n.name, n.driver, n.subnet, path)
        });
        Ok(rows.collect())
    }

    /// `NetworkInUse` while containers are on it, unless `force` (which removes them).
    async fn remove_network(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        name: &str,
        force: bool,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        super::remove_network(connection, call, caller, name, force).await
    }

    /// A named volume (podman's `local` driver); "" generates a name. Options: `Labels` a{ss}.
    async fn create_volume(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        let labels = spec::volume_labels(&options)?;
        let name = self.engine.create_volume(caller, name, labels).await;
        call.reply(name.map(|name| volume::path(&name))).await
    }

    async fn get_volume(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: &str,
    ) -> Result<OwnedObjectPath, BusError> {
        let _call = self.call(&header);
        self.engine.volume(name)?;
        Ok(volume::path(name))
    }

    /// (name, mountpoint, path) of every volume, oldest first.
    async fn list_volumes(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<(String, String, OwnedObjectPath)>, BusError> {
        let _call = self.call(&header);
        let rows = self.engine.volumes().into_iter().map(|v| {
            let mountpoint = self.engine.volume_mountpoint(&v.name);
            let path = volume::path(&v.name);
            (v.name, mountpoint.display().to_string(), path)
        });
        Ok(rows.collect())
    }

    /// `VolumeInUse` while a container uses it; `force` removes those containers first.
    async fn remove_volume(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: &str,
        force: bool,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.remove_volume(caller, name, force).await)
            .await
    }

    /// Removes every volume no container uses; returns their names.
    async fn prune_volumes(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<String>, BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        call.reply(self.engine.prune_volumes(caller).await).await
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
