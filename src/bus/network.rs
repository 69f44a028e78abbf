//! `org.berth.Engine1.Network`: one object per network, holding the engine handle and the
//! network's name.

use std::sync::Arc;

use zbus::message::Header;
use zbus::{interface, OwnedObjectPath};

use super::auth::Action;
use super::call::Served;
use super::error::BusError;
use super::Shared;
use crate::engine::Engine;
use crate::network::NetworkRecord;

pub const INTERFACE: &str = "org.berth.Engine1.Network";

/// A name as a path element, as systemd's `bus_label_escape`: ASCII letters and digits as
/// they are, every other byte as `_` and two hex digits (`my-net` → `my_2dnet`).
pub fn escape(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("_{b:02x}")
            }
        })
        .collect()
}

/// The object path of a network.
pub fn path(name: &str) -> OwnedObjectPath {
    super::object_path("network", &escape(name))
}

pub struct NetworkObject {
    pub engine: Engine,
    pub shared: Arc<Shared>,
    pub name: String,
}

impl NetworkObject {
    fn record(&self) -> Result<NetworkRecord, BusError> {
        Ok(self.engine.network(&self.name)?)
    }
}

impl Served for NetworkObject {
    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }
}

/// `podman network inspect`'s shape, with the containers on it.
pub fn inspect_json(engine: &Engine, record: &NetworkRecord) -> String {
    let containers: serde_json::Map<String, serde_json::Value> = engine
        .network_containers(&record.name)
        .into_iter()
        .filter_map(|id| {
            let config = engine.config(&id).ok()?;
            let status = engine.status(&id).ok()?;
            let endpoint = status
                .network
                .endpoints
                .iter()
                .find(|e| e.network == record.name)
                .cloned();
            Some((
                id,
                serde_json::json!({
                    "name": config.name,
                    "interfaces": endpoint.map(|e| serde_json::json!({
                        e.interface: {
                            "subnets": [{"ipnet": format!("{}/{}", e.address, e.prefix_length), "gateway": e.gateway}],
                            "mac_address": e.mac_address,
                        }
                    })).unwrap_or_default(),
                }),
            ))
        })
        .collect();
    let mut options = serde_json::Map::new();
    if record.isolate {
        options.insert("isolate".into(), "true".into());
    }
    let document = serde_json::json!({
        "name": record.name,
        "id": record.id,
        "driver": record.driver,
        "network_interface": record.interface,
        "created": crate::clock::rfc3339_micros(record.created_at),
        "subnets": [{"subnet": record.subnet, "gateway": record.gateway}],
        "ipv6_enabled": false,
        "internal": record.internal,
        "dns_enabled": record.dns_enabled,
        "options": options,
        "ipam_options": {"driver": "host-local"},
        "containers": containers,
    });
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

#[interface(name = "org.berth.Engine1.Network")]
impl NetworkObject {
    /// JSON shaped like `podman network inspect`.
    async fn inspect(&self, #[zbus(header)] header: Header<'_>) -> Result<String, BusError> {
        let _call = self.call(&header);
        Ok(inspect_json(&self.engine, &self.record()?))
    }

    /// As `Manager.RemoveNetwork`.
    async fn remove(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        force: bool,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Manage).await?;
        super::remove_network(connection, call, caller, &self.name, force).await
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> Result<String, BusError> {
        Ok(self.record()?.id)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn driver(&self) -> Result<String, BusError> {
        Ok(self.record()?.driver)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn interface(&self) -> Result<String, BusError> {
        Ok(self.record()?.interface)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn subnet(&self) -> Result<String, BusError> {
        Ok(self.record()?.subnet)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn gateway(&self) -> Result<String, BusError> {
        Ok(self.record()?.gateway)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn internal(&self) -> Result<bool, BusError> {
        Ok(self.record()?.internal)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn dns_enabled(&self) -> Result<bool, BusError> {
        Ok(self.record()?.dns_enabled)
    }

    /// The containers configured on this network (read it again when you need it: it is not
    /// announced).
    #[zbus(property(emits_changed_signal = "false"))]
    fn containers(&self) -> Vec<OwnedObjectPath> {
        self.engine
            .network_containers(&self.name)
            .iter()
            .map(|id| super::container::path(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_as_systemd_escapes_bus_labels() {
        assert_eq!(escape("berth"), "berth");
        assert_eq!(escape("my-net"), "my_2dnet");
        assert_eq!(escape("a_b.c"), "a_5fb_2ec");
        assert_eq!(
            path("my-net").as_str(),
            "/org/berth/Engine1/network/my_2dnet"
        );
    }
}
