//! Client proxies for the network parts of berth's interfaces (what `berthctl network` and
//! tests call).

use std::collections::HashMap;

use zbus::{proxy, OwnedObjectPath, Variant};

/// The network methods of `org.berth.Engine1.Manager`.
#[proxy(
    interface = "org.berth.Engine1.Manager",
    default_service = "org.berth.Engine1",
    default_path = "/org/berth/Engine1"
)]
pub trait NetworkManager {
    fn create_network(
        &self,
        name: &str,
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn get_network(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn list_networks(&self) -> zbus::Result<Vec<(String, String, String, OwnedObjectPath)>>;
    fn remove_network(&self, name: &str, force: bool) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.berth.Engine1.Network",
    default_service = "org.berth.Engine1"
)]
pub trait Network {
    fn inspect(&self) -> zbus::Result<String>;
    fn remove(&self, force: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn driver(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn interface(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn subnet(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn gateway(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn internal(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn dns_enabled(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn containers(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
}

/// The network properties of `org.berth.Engine1.Container`.
#[proxy(
    interface = "org.berth.Engine1.Container",
    default_service = "org.berth.Engine1"
)]
pub trait ContainerNetwork {
    #[zbus(property, name = "IPAddress")]
    fn ip_address(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn ports(&self) -> zbus::Result<Vec<(String, u16, u16, String)>>;
}
