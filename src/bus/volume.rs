//! `org.berth.Engine1.Volume`: one object per named volume, holding the engine handle and
//! the name.

use std::collections::HashMap;
use std::sync::Arc;

use zbus::message::Header;
use zbus::{interface, OwnedObjectPath};

use super::auth::Action;
use super::call::Served;
use super::error::BusError;
use super::property::{Property, Table};
use super::Shared;
use crate::engine::{Engine, VolumeRecord};

pub const INTERFACE: &str = "org.berth.Engine1.Volume";

/// A name as one object path element, escaped as systemd's `bus_label_escape` does: ASCII
/// letters stay, digits stay except first, everything else is `_` and two hex digits
/// (`-` is `_2d`); "" is `_`.
pub fn escape_path_element(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    let mut escaped = String::with_capacity(name.len());
    for (index, byte) in name.bytes().enumerate() {
        if byte.is_ascii_alphabetic() || (index > 0 && byte.is_ascii_digit()) {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("_{byte:02x}"));
        }
    }
    escaped
}

/// The object path of a volume.
pub fn path(name: &str) -> OwnedObjectPath {
    super::object_path("volume", &escape_path_element(name))
}

pub struct VolumeObject {
    pub engine: Engine,
    pub shared: Arc<Shared>,
    pub name: String,
}

impl VolumeObject {
    fn volume(&self) -> Result<VolumeRecord, BusError> {
        Ok(self.engine.volume(&self.name)?)
    }
}

impl Served for VolumeObject {
    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }
}

/// The ids of the containers that use a volume: what its announced property is read from.
pub type Users = Vec<String>;

const CONTAINERS: Property<Users, Vec<OwnedObjectPath>> = Property::new("Containers", |ids| {
    ids.iter().map(|id| super::container::path(id)).collect()
});

/// Every property of the Volume interface announced with `PropertiesChanged`: the getter
/// reads the same entry.
pub const ANNOUNCED: &Table<Users> = &[&CONTAINERS];

#[interface(name = "org.berth.Engine1.Volume")]
impl VolumeObject {
    /// Writes the volume's content as a tar stream into the fd.
    async fn export(
        &self,
        #[zbus(header)] header: Header<'_>,
        destination: zbus::Fd<'_>,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        call.authorize(Action::Filesystem).await?;
        let destination = super::spec::owned_fd("destination", &destination)?;
        let destination = std::fs::File::from(destination);
        Ok(self.engine.export_volume(&self.name, destination).await?)
    }

    /// Replaces the volume's content from a tar stream read from the fd (hostile-safe:
    /// `..`, absolute names, writes through symlinks and device nodes are `InvalidArgs`).
    async fn import(
        &self,
        #[zbus(header)] header: Header<'_>,
        source: zbus::Fd<'_>,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        call.authorize(Action::Filesystem).await?;
        let source = super::spec::owned_fd("source", &source)?;
        let source = std::fs::File::from(source);
        Ok(self.engine.import_volume(&self.name, source).await?)
    }

    /// The volume as JSON, shaped like `podman volume inspect`.
    fn inspect(&self, #[zbus(header)] header: Header<'_>) -> Result<String, BusError> {
        let _call = self.call(&header);
        Ok(self.engine.inspect_volume(&self.name)?)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn driver(&self) -> Result<String, BusError> {
        Ok(self.volume()?.driver)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn mountpoint(&self) -> String {
        self.engine
            .volume_mountpoint(&self.name)
            .display()
            .to_string()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn created_at(&self) -> Result<u64, BusError> {
        Ok(self.volume()?.created_at)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn labels(&self) -> Result<HashMap<String, String>, BusError> {
        Ok(self.volume()?.labels.into_iter().collect())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn anonymous(&self) -> Result<bool, BusError> {
        Ok(self.volume()?.anonymous)
    }

    #[zbus(property)]
    fn containers(&self) -> Vec<OwnedObjectPath> {
        CONTAINERS.read(&self.engine.volume_containers(&self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_as_systemd_escapes_path_labels() {
        assert_eq!(escape_path_element("pg-data"), "pg_2ddata");
        assert_eq!(escape_path_element("a_b.c"), "a_5fb_2ec");
        assert_eq!(escape_path_element("1ab2"), "_31ab2");
        assert_eq!(escape_path_element(""), "_");
        assert_eq!(
            path("pg-data").as_str(),
            "/org/berth/Engine1/volume/pg_2ddata"
        );
    }

    #[test]
    fn every_announced_property_of_the_xml_is_in_the_change_table() {
        let sample = vec!["0".repeat(64)];
        super::super::property::tests::assert_table_matches_xml(INTERFACE, ANNOUNCED, &sample);
    }
}
