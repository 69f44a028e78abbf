//! Container networks the podman way: berth owns each container's network namespace (a
//! bind-mounted nsfs file), keeps the IP leases (IPAM) in SQLite, and lets `netavark` do the
//! rest (bridge, veth, firewall rules, aardvark-dns) — podman's `libnetwork/netavark` split.
//!
//! - `driver`: the [`NetworkDriver`] seam and netavark's JSON; `netavark`: the real driver;
//!   `fake`: a recording driver for engine tests.
//! - `address`: IPv4 subnets, lease allocation and the choice of a free subnet.
//! - `netns`: network namespace files.
//! - `files`: `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` as podman writes them.
//! - `ports`: the host ports berthd holds open while a container runs.

pub mod address;
pub mod driver;
pub mod fake;
pub mod files;
pub mod netavark;
pub mod netns;
pub mod ports;

use serde::{Deserialize, Serialize};

pub use driver::{NetworkDriver, NetworkError};

/// The name of the network that always exists (`Network bridge`).
pub const DEFAULT_NETWORK: &str = "berth";

/// A bridge network as stored in the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    /// 64 hex digits; netavark names its firewall chains after it.
    pub id: String,
    /// Always `bridge`.
    pub driver: String,
    /// The bridge's interface name on the host.
    pub interface: String,
    /// IPv4 CIDR, `10.90.0.0/24`.
    pub subnet: String,
    pub gateway: String,
    /// No NAT and no route out (netavark's `internal`).
    pub internal: bool,
    /// aardvark-dns answers container names and aliases on the gateway.
    pub dns_enabled: bool,
    /// No traffic to or from other networks (netavark's `isolate` option).
    pub isolate: bool,
    pub created_at: u64,
}

/// One published port: `PortMappings` entry `(host ip, host port, container port, protocol)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// "" for every address.
    pub host_ip: String,
    /// 0 before start: a free port is picked then.
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl PortMapping {
    /// `127.0.0.1:8080/tcp`, as errors name it.
    pub fn host_side(&self) -> String {
        let ip = if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        };
        format!("{ip}:{}/{}", self.host_port, self.protocol)
    }
}

/// A container's interface on one network, as netavark reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    /// The interface inside the container (`eth0`, `eth1`…).
    pub interface: String,
    pub address: String,
    pub prefix_length: u8,
    pub gateway: String,
    pub mac_address: String,
    pub aliases: Vec<String>,
}

/// What a running container holds of the network: kept in its status so that teardown
/// (also after a berthd restart) knows exactly what to undo.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Attachment {
    /// The bind-mounted namespace file; "" when nothing is set up.
    pub netns: String,
    pub endpoints: Vec<Endpoint>,
    /// Published ports with the host ports actually taken.
    pub ports: Vec<PortMapping>,
}

impl Attachment {
    pub fn is_empty(&self) -> bool {
        self.netns.is_empty()
    }

    /// The address on the first network, "" when none (the `IPAddress` property).
    pub fn ip_address(&self) -> String {
        self.endpoints
            .first()
            .map(|endpoint| endpoint.address.clone())
            .unwrap_or_default()
    }
}
