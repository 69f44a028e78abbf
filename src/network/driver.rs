//! The network seam: what berth asks of netavark (or the fake), in netavark's own JSON.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("netavark {command}: {message}")]
    Netavark { command: String, message: String },
    #[error("network namespace {path}: {message}")]
    Namespace { path: String, message: String },
    #[error("{0}")]
    Io(String),
}

/// Creates namespaces and wires containers into networks.
pub trait NetworkDriver: Send + Sync {
    /// Creates a new network namespace, bind-mounted on `path` (with loopback up).
    fn create_namespace(&self, path: &Path) -> Result<(), NetworkError>;
    /// Unmounts and deletes a namespace file; a missing one is not an error.
    fn remove_namespace(&self, path: &Path) -> Result<(), NetworkError>;
    /// `netavark setup`: interfaces, routes, firewall rules, DNS entries.
    fn setup(
        &self,
        netns: &Path,
        options: &NetworkOptions,
    ) -> Result<BTreeMap<String, StatusBlock>, NetworkError>;
    /// `netavark teardown` of what `setup` made with the same options.
    fn teardown(&self, netns: &Path, options: &NetworkOptions) -> Result<(), NetworkError>;
}

/// netavark's `NetworkOptions` (what podman's libnetwork sends on stdin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkOptions {
    pub container_id: String,
    pub container_name: String,
    pub networks: BTreeMap<String, PerNetworkOptions>,
    pub network_info: BTreeMap<String, NetworkInfo>,
    pub port_mappings: Option<Vec<PortMappingOptions>>,
    pub dns_servers: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerNetworkOptions {
    pub aliases: Option<Vec<String>>,
    pub interface_name: String,
    pub static_ips: Option<Vec<String>>,
    pub static_mac: Option<String>,
}

/// netavark's `Network`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub network_interface: Option<String>,
    pub subnets: Option<Vec<SubnetInfo>>,
    pub ipv6_enabled: bool,
    pub internal: bool,
    pub dns_enabled: bool,
    pub options: Option<BTreeMap<String, String>>,
    pub ipam_options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubnetInfo {
    pub subnet: String,
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortMappingOptions {
    pub host_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    pub range: u16,
    pub protocol: String,
}

/// netavark's answer per network.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StatusBlock {
    #[serde(default)]
    pub dns_search_domains: Option<Vec<String>>,
    #[serde(default)]
    pub dns_server_ips: Option<Vec<String>>,
    #[serde(default)]
    pub interfaces: Option<BTreeMap<String, NetInterface>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetInterface {
    pub mac_address: String,
    #[serde(default)]
    pub subnets: Option<Vec<NetAddress>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetAddress {
    /// The interface's address with the subnet's prefix: `10.90.0.2/24`.
    pub ipnet: String,
    #[serde(default)]
    pub gateway: Option<String>,
}

impl NetworkInfo {
    /// What netavark needs to know of a stored network.
    pub fn from_record(record: &super::NetworkRecord) -> NetworkInfo {
        let mut options = BTreeMap::new();
        if record.isolate {
            options.insert("isolate".to_string(), "true".to_string());
        }
        NetworkInfo {
            name: record.name.clone(),
            id: record.id.clone(),
            driver: record.driver.clone(),
            network_interface: Some(record.interface.clone()),
            subnets: Some(vec![SubnetInfo {
                subnet: record.subnet.clone(),
                gateway: Some(record.gateway.clone()),
            }]),
            ipv6_enabled: false,
            internal: record.internal,
            dns_enabled: record.dns_enabled,
            options: (!options.is_empty()).then_some(options),
            ipam_options: Some(BTreeMap::from([(
                "driver".to_string(),
                "host-local".to_string(),
            )])),
        }
    }
}
