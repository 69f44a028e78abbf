//! The engine's side of networks: the network records, validation of the network spec keys,
//! and the two hooks of a run — [`attach`] before the runtime creates the container (host
//! ports, leases, namespace, `netavark setup`, the name-resolution files) and [`detach_into`]
//! once its process is gone (the same undone, in reverse). The work itself is in
//! `crate::network`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{json, Value};

use super::config::{is_valid_name, ContainerNetworks, Network};
use super::{
    blocking, Caller, ContainerConfig, ContainerStatus, Engine, EngineError, Inner, Locked, Result,
};
use crate::clock::now_micros;
use crate::db::Db;
use crate::network::address::{self, Subnet};
use crate::network::driver::{
    NetworkInfo, NetworkOptions, PerNetworkOptions, PortMappingOptions, StatusBlock,
};
use crate::network::ports::{self, Reservation};
use crate::network::{
    files, Attachment, Endpoint, NetworkDriver, NetworkRecord, PortMapping, DEFAULT_NETWORK,
};
use crate::runtime::spec::MountSpec;

/// `CreateNetwork` options.
#[derive(Debug, Clone, Default)]
pub struct NetworkRequest {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub internal: bool,
    pub isolate: bool,
    /// Default true for created networks.
    pub dns_enabled: Option<bool>,
    pub interface: Option<String>,
}

/// Networks known to the engine and the host ports its running containers hold.
pub(crate) struct NetworkState {
    driver: Arc<dyn NetworkDriver>,
    records: RwLock<BTreeMap<String, NetworkRecord>>,
    /// Open sockets holding each running container's published ports, by container id.
    ports: Mutex<HashMap<String, Vec<Reservation>>>,
    /// Serialises network creation and removal.
    changes: tokio::sync::Mutex<()>,
}

impl NetworkState {
    /// Loads the stored networks, creating the default one on first use.
    pub(crate) fn load(db: &Db, driver: Arc<dyn NetworkDriver>, root: &Path) -> Result<Self> {
        let mut records = BTreeMap::new();
        for (name, record) in db.networks()? {
            let record: NetworkRecord = serde_json::from_str(&record)
                .map_err(|e| EngineError::Internal(format!("network {name}: {e}")))?;
            records.insert(name, record);
        }
        if !records.contains_key(DEFAULT_NETWORK) {
            let record = default_network(root, &records);
            let json =
                serde_json::to_string(&record).map_err(|e| EngineError::Internal(e.to_string()))?;
            db.insert_network(&record.name, &json)?;
            records.insert(record.name.clone(), record);
        }
        Ok(NetworkState {
            driver,
            records: RwLock::new(records),
            ports: Mutex::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    fn records(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, NetworkRecord>> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, name: &str) -> Result<NetworkRecord> {
        self.records()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NoSuchNetwork(name.to_string()))
    }

    fn hold_ports(&self, id: &str, reservations: Vec<Reservation>) {
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        if reservations.is_empty() {
            ports.remove(id);
        } else {
            ports.insert(id.to_string(), reservations);
        }
    }
}

fn random_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The default network: `berth0` on the first free 10.90.x.0/24 for the system's berthd
/// (`--root /var/lib/berth`); a berthd with another root gets a bridge and a starting point
/// of its own, derived from the root, so that several daemons (as in tests) do not share one
/// bridge.
fn default_network(root: &Path, existing: &BTreeMap<String, NetworkRecord>) -> NetworkRecord {
    use sha2::Digest;
    let system = root == Path::new("/var/lib/berth");
    let digest = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    let seed = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let mut used = address::host_routes();
    used.extend(
        existing
            .values()
            .filter_map(|record| Subnet::parse(&record.subnet).ok()),
    );
    let start = if system { 0 } else { seed as usize };
    let subnet = address::free_subnet(start, &used).unwrap_or(Subnet {
        network: Ipv4Addr::new(10, 90, 0, 0),
        prefix: 24,
    });
    NetworkRecord {
        name: DEFAULT_NETWORK.to_string(),
        id: random_id(),
        driver: "bridge".to_string(),
        interface: if system {
            "berth0".to_string()
        } else {
            format!("berth{seed:08x}")
        },
        subnet: subnet.to_string(),
        gateway: subnet.first_host().to_string(),
        internal: false,
        // As podman's default network.
        dns_enabled: false,
        isolate: false,
        created_at: now_micros(),
    }
}

/// A Linux interface name: 1–15 characters, no `/`, whitespace or `:`.
fn is_valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn host_has_interface(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

impl Engine {
    /// A new bridge network (`CreateNetwork`).
    pub async fn create_network(
        &self,
        _caller: Caller,
        name: &str,
        request: NetworkRequest,
    ) -> Result<NetworkRecord> {
        let state = &self.inner().networks;
        let _changes = state.changes.lock().await;
        check_new_network_name(state, name)?;
        let subnet = new_subnet(state, &request)?;
        let gateway = match &request.gateway {
            Some(text) => {
                let gateway: Ipv4Addr = text.parse().map_err(|_| {
                    invalid_network(format!("Gateway: {text:?} is not an IPv4 address"))
                })?;
                if !subnet.is_host(gateway) {
                    return Err(invalid_network(format!(
                        "Gateway: {gateway} is outside the subnet {subnet}"
                    )));
                }
                gateway
            }
            None => subnet.first_host(),
        };
        let record = NetworkRecord {
            name: name.to_string(),
            id: random_id(),
            driver: "bridge".to_string(),
            interface: new_interface(state, &request)?,
            subnet: subnet.to_string(),
            gateway: gateway.to_string(),
            internal: request.internal,
            dns_enabled: request.dns_enabled.unwrap_or(true),
            isolate: request.isolate,
            created_at: now_micros(),
        };
        let json =
            serde_json::to_string(&record).map_err(|e| EngineError::Internal(e.to_string()))?;
        let db = self.inner().db.clone();
        let stored_name = name.to_string();
        if !blocking(move || Ok(db.insert_network(&stored_name, &json)?)).await? {
            return Err(EngineError::NameInUse(name.to_string()));
        }
        state
            .records
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), record.clone());
        Ok(record)
    }

    pub fn network(&self, name: &str) -> Result<NetworkRecord> {
        self.inner().networks.record(name)
    }

    /// Every network, by name.
    pub fn networks(&self) -> Vec<NetworkRecord> {
        self.inner().networks.records().values().cloned().collect()
    }

    /// Ids of the containers configured on a network, oldest first.
    pub fn network_containers(&self, name: &str) -> Vec<String> {
        let containers = self.inner().read_containers();
        let mut users: Vec<(u64, String)> = containers
            .values()
            .filter(|entry| {
                entry
                    .config
                    .network_options
                    .networks
                    .iter()
                    .any(|n| n == name)
            })
            .map(|entry| (entry.config.created_at, entry.config.id.clone()))
            .collect();
        users.sort();
        users.into_iter().map(|(_, id)| id).collect()
    }

    /// `RemoveNetwork`: `NetworkInUse` while containers are on it, unless `force`, which
    /// removes them first (as `podman network rm -f`).
    pub async fn remove_network(&self, caller: Caller, name: &str, force: bool) -> Result<()> {
        let state = &self.inner().networks;
        let _changes = state.changes.lock().await;
        state.record(name)?;
        if name == DEFAULT_NETWORK {
            return Err(EngineError::InvalidArgument(format!(
                "the default network {DEFAULT_NETWORK} cannot be removed"
            )));
        }
        let users = self.network_containers(name);
        if !users.is_empty() && !force {
            let names: Vec<String> = users
                .iter()
                .filter_map(|id| self.config(id).ok().map(|c| c.name))
                .collect();
            return Err(EngineError::NetworkInUse(format!(
                "network {name} is used by containers {}",
                names.join(", ")
            )));
        }
        for id in users {
            match self.remove(caller, &id, true).await {
                Ok(()) | Err(EngineError::NoSuchContainer(_) | EngineError::Removed(_)) => {}
                Err(error) => return Err(error),
            }
        }
        let db = self.inner().db.clone();
        let stored_name = name.to_string();
        blocking(move || Ok(db.delete_network(&stored_name)?)).await?;
        state
            .records
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }

    /// Validates the network keys of a `CreateContainer` spec.
    /// `network` is the `Network` key, `names` the `Networks` key, `options` the rest.
    pub(crate) fn network_request(
        &self,
        network: Option<String>,
        mut names: Vec<String>,
        options: ContainerNetworks,
    ) -> Result<(Network, ContainerNetworks)> {
        let invalid = |message: String| EngineError::InvalidArgument(message);
        let mode = match network.as_deref() {
            None if names.is_empty() => Network::None,
            None => Network::Bridge,
            Some("none") => Network::None,
            Some("host") => Network::Host,
            Some(name) => {
                names.insert(0, name.to_string());
                Network::Bridge
            }
        };
        if mode != Network::Bridge {
            let mode = if mode == Network::Host {
                "host"
            } else {
                "none"
            };
            if !names.is_empty() {
                return Err(invalid(format!(
                    "Networks: a container on network {mode} joins no other network"
                )));
            }
            if !options.port_mappings.is_empty() {
                return Err(invalid(format!(
                    "PortMappings: a container on network {mode} cannot publish ports"
                )));
            }
            if !options.aliases.is_empty() {
                return Err(invalid(format!(
                    "NetworkAliases: a container on network {mode} has no network to be named on"
                )));
            }
        }
        let mut networks = Vec::new();
        for name in names {
            let name = if name == "bridge" {
                DEFAULT_NETWORK.to_string()
            } else {
                name
            };
            if matches!(name.as_str(), "none" | "host") {
                return Err(invalid(format!(
                    "Networks: {name} cannot be combined with other networks"
                )));
            }
            if self.inner().networks.record(&name).is_err() {
                return Err(invalid(format!("Network: no such network {name:?}")));
            }
            if !networks.contains(&name) {
                networks.push(name);
            }
        }
        check_network_options(&options)?;
        Ok((
            mode,
            ContainerNetworks {
                networks,
                ..options
            },
        ))
    }

    /// After a restart of berthd: the running containers' published ports are held again.
    pub(crate) fn hold_published_ports(&self) {
        for id in self.container_ids() {
            let Ok(entry) = self.inner().entry(&id) else {
                continue;
            };
            let status = entry.status();
            if !status.state.has_process() || status.network.ports.is_empty() {
                continue;
            }
            match ports::reserve(&status.network.ports) {
                Ok((_, reservations)) => self.inner().networks.hold_ports(&id, reservations),
                Err(error) => {
                    tracing::warn!(id = %id, %error, "holding a published port again failed")
                }
            }
        }
    }
}

/// What the runtime needs of a networked run.
pub(crate) struct Prepared {
    /// The namespace file for the spec's `linux.namespaces` network entry.
    pub netns: PathBuf,
    /// `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.
    pub mounts: Vec<MountSpec>,
}

/// Before the runtime creates a bridge-networked container: holds its host ports, leases
/// its addresses, makes its namespace and runs `netavark setup`, and writes its
/// name-resolution files. `status.network` records what was made. All or nothing.
pub(crate) async fn attach(
    locked: &Locked<'_>,
    status: &mut ContainerStatus,
) -> Result<Option<Prepared>> {
    if locked.config().network != Network::Bridge {
        return Ok(None);
    }
    if !status.network.is_empty() {
        // Left over from a run whose cleanup did not finish.
        detach_into(locked, status).await;
    }
    let inner = locked.engine().clone();
    let config = locked.config().clone();
    let (attachment, prepared) = blocking(move || setup(&inner, &config)).await?;
    status.network = attachment;
    Ok(Some(prepared))
}

fn setup(inner: &Inner, config: &ContainerConfig) -> Result<(Attachment, Prepared)> {
    let state = &inner.networks;
    let options = &config.network_options;
    let (ports, reservations) =
        ports::reserve(&options.port_mappings).map_err(EngineError::Runtime)?;
    let mut attachment = Attachment {
        netns: String::new(),
        endpoints: Vec::new(),
        ports,
    };
    let addresses = lease_addresses(inner, config)?;
    let netns = inner.paths.container(&config.id).netns();
    if let Err(error) = state.driver.create_namespace(&netns) {
        let _ = inner.db.release_leases(&config.id);
        return Err(EngineError::Runtime(error.to_string()));
    }
    attachment.netns = netns.display().to_string();
    let request = netavark_options(state, config, &addresses, &attachment.ports);
    let answer = match state.driver.setup(&netns, &request) {
        Ok(answer) => answer,
        Err(error) => {
            let _ = state.driver.remove_namespace(&netns);
            let _ = inner.db.release_leases(&config.id);
            return Err(EngineError::Runtime(error.to_string()));
        }
    };
    let aardvark = record_endpoints(&mut attachment, options, &answer);
    match write_files(inner, config, &attachment, &aardvark) {
        Ok(mounts) => {
            state.hold_ports(&config.id, reservations);
            Ok((
                attachment,
                Prepared {
                    netns: netns.clone(),
                    mounts,
                },
            ))
        }
        Err(error) => {
            teardown(inner, config, &attachment);
            Err(error)
        }
    }
}

/// An address on each of the container's networks, leased in the database; none is left
/// leased on failure.
fn lease_addresses(inner: &Inner, config: &ContainerConfig) -> Result<BTreeMap<String, Ipv4Addr>> {
    let state = &inner.networks;
    let mut addresses = BTreeMap::new();
    for name in &config.network_options.networks {
        let record = state.record(name)?;
        let subnet = Subnet::parse(&record.subnet).map_err(EngineError::Internal)?;
        let gateway: Ipv4Addr = record.gateway.parse().map_err(|_| {
            EngineError::Internal(format!("network {name}: bad gateway {}", record.gateway))
        })?;
        let leased = inner.db.lease(name, &config.id, |taken| {
            address::allocate(&subnet, gateway, taken)
        });
        match leased {
            Ok(Some(address)) => {
                addresses.insert(name.clone(), address);
            }
            Ok(None) => {
                let _ = inner.db.release_leases(&config.id);
                return Err(EngineError::Runtime(format!(
                    "network {name} has no free address left in {subnet}"
                )));
            }
            Err(error) => {
                let _ = inner.db.release_leases(&config.id);
                return Err(error.into());
            }
        }
    }
    Ok(addresses)
}

/// Records netavark's answer in the attachment, an endpoint per network (`eth0`, `eth1`…);
/// returns the DNS servers (aardvark-dns) the networks gave.
fn record_endpoints(
    attachment: &mut Attachment,
    options: &ContainerNetworks,
    answer: &BTreeMap<String, StatusBlock>,
) -> Vec<String> {
    let mut aardvark = Vec::new();
    for (index, name) in options.networks.iter().enumerate() {
        let interface = format!("eth{index}");
        let block = answer.get(name).cloned().unwrap_or_default();
        let reported = block
            .interfaces
            .as_ref()
            .and_then(|interfaces| interfaces.get(&interface))
            .cloned()
            .unwrap_or_default();
        let net = reported
            .subnets
            .as_ref()
            .and_then(|subnets| subnets.first())
            .cloned()
            .unwrap_or_default();
        let (address, prefix) = net.ipnet.split_once('/').unwrap_or((&net.ipnet, "0"));
        for server in block.dns_server_ips.unwrap_or_default() {
            if !aardvark.contains(&server) {
                aardvark.push(server);
            }
        }
        attachment.endpoints.push(Endpoint {
            network: name.clone(),
            interface,
            address: address.to_string(),
            prefix_length: prefix.parse().unwrap_or(0),
            gateway: net.gateway.unwrap_or_default(),
            mac_address: reported.mac_address,
            aliases: options.aliases.clone(),
        });
    }
    aardvark
}

/// Writes the three files into the container's directory; returns their bind mounts.
fn write_files(
    inner: &Inner,
    config: &ContainerConfig,
    attachment: &Attachment,
    aardvark: &[String],
) -> Result<Vec<MountSpec>> {
    let paths = inner.paths.container(&config.id);
    let host_resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let contents = [
        (
            "hosts",
            "/etc/hosts",
            files::hosts(&config.hostname, &config.name, &attachment.endpoints),
        ),
        (
            "resolv.conf",
            "/etc/resolv.conf",
            files::resolv_conf(
                &config.network_options.dns_servers,
                aardvark,
                &host_resolv_conf,
            ),
        ),
        (
            "hostname",
            "/etc/hostname",
            files::hostname(&config.hostname),
        ),
    ];
    let mut mounts = Vec::new();
    for (file, destination, text) in contents {
        let path = paths.network_file(file);
        std::fs::write(&path, text)
            .map_err(|e| EngineError::Internal(format!("write {}: {e}", path.display())))?;
        mounts.push(MountSpec {
            kind: "bind".to_string(),
            source: path.display().to_string(),
            destination: destination.to_string(),
            options: vec!["rbind".to_string(), "rprivate".to_string()],
            read_only: false,
        });
    }
    Ok(mounts)
}

/// netavark's input for a container with these addresses and published ports.
fn netavark_options(
    state: &NetworkState,
    config: &ContainerConfig,
    addresses: &BTreeMap<String, Ipv4Addr>,
    ports: &[PortMapping],
) -> NetworkOptions {
    let mut networks = BTreeMap::new();
    let mut network_info = BTreeMap::new();
    for (index, name) in config.network_options.networks.iter().enumerate() {
        let Ok(record) = state.record(name) else {
            continue;
        };
        // aardvark-dns answers the container's name and these (podman adds the short id).
        let mut aliases = config.network_options.aliases.clone();
        aliases.push(config.id[..12.min(config.id.len())].to_string());
        networks.insert(
            name.clone(),
            PerNetworkOptions {
                aliases: record.dns_enabled.then_some(aliases),
                interface_name: format!("eth{index}"),
                static_ips: addresses.get(name).map(|a| vec![a.to_string()]),
                static_mac: None,
            },
        );
        network_info.insert(name.clone(), NetworkInfo::from_record(&record));
    }
    let port_mappings: Vec<PortMappingOptions> = ports
        .iter()
        .map(|p| PortMappingOptions {
            host_ip: p.host_ip.clone(),
            container_port: p.container_port,
            host_port: p.host_port,
            range: 1,
            protocol: p.protocol.clone(),
        })
        .collect();
    NetworkOptions {
        container_id: config.id.clone(),
        container_name: config.name.clone(),
        networks,
        network_info,
        port_mappings: (!port_mappings.is_empty()).then_some(port_mappings),
        dns_servers: (!config.network_options.dns_servers.is_empty())
            .then(|| config.network_options.dns_servers.clone()),
    }
}

/// Undoes a run's network, each step on its own so that one failure does not leave the
/// rest behind; failures are logged.
fn teardown(inner: &Inner, config: &ContainerConfig, attachment: &Attachment) {
    let state = &inner.networks;
    state.hold_ports(&config.id, Vec::new());
    if !attachment.netns.is_empty() {
        let netns = Path::new(&attachment.netns);
        let addresses: BTreeMap<String, Ipv4Addr> = attachment
            .endpoints
            .iter()
            .filter_map(|e| e.address.parse().ok().map(|a| (e.network.clone(), a)))
            .collect();
        let request = netavark_options(state, config, &addresses, &attachment.ports);
        if let Err(error) = state.driver.teardown(netns, &request) {
            tracing::warn!(id = %config.id, %error, "network teardown failed");
        }
        if let Err(error) = state.driver.remove_namespace(netns) {
            tracing::warn!(id = %config.id, %error, "removing the network namespace failed");
        }
    }
    if let Err(error) = inner.db.release_leases(&config.id) {
        tracing::warn!(id = %config.id, %error, "releasing the leases failed");
    }
}

/// After the process is gone (and on every cleanup): tears the run's network down and
/// clears `status.network`. Never fails: what cannot be undone is logged.
pub(crate) async fn detach_into(locked: &Locked<'_>, status: &mut ContainerStatus) {
    if status.network.is_empty() && locked.config().network != Network::Bridge {
        return;
    }
    let inner = locked.engine().clone();
    let config = locked.config().clone();
    let attachment = std::mem::take(&mut status.network);
    let _ = blocking(move || {
        teardown(&inner, &config, &attachment);
        Ok(())
    })
    .await;
}

/// `HostConfig.NetworkMode` in Inspect.
pub(crate) fn network_mode(config: &ContainerConfig) -> String {
    match config.network {
        Network::None => "none".to_string(),
        Network::Host => "host".to_string(),
        Network::Bridge => match config.network_options.networks.as_slice() {
            [only] if only == DEFAULT_NETWORK => "bridge".to_string(),
            networks => networks.join(","),
        },
    }
}

/// podman's `Ports` map: `"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]`.
pub(crate) fn port_bindings(ports: &[PortMapping]) -> Value {
    let mut map = serde_json::Map::new();
    for port in ports {
        let key = format!("{}/{}", port.container_port, port.protocol);
        let binding = json!({"HostIp": port.host_ip, "HostPort": port.host_port.to_string()});
        match map.get_mut(&key) {
            Some(Value::Array(bindings)) => bindings.push(binding),
            _ => {
                map.insert(key, Value::Array(vec![binding]));
            }
        }
    }
    Value::Object(map)
}

/// Inspect's `NetworkSettings`, shaped like podman's.
pub(crate) fn network_settings(attachment: &Attachment) -> Value {
    let first = attachment.endpoints.first();
    let field = |f: fn(&Endpoint) -> Value| first.map(f).unwrap_or(Value::from(""));
    let networks: serde_json::Map<String, Value> = attachment
        .endpoints
        .iter()
        .map(|e| {
            (
                e.network.clone(),
                json!({
                    "EndpointID": "",
                    "Gateway": e.gateway,
                    "IPAddress": e.address,
                    "IPPrefixLen": e.prefix_length,
                    "IPv6Gateway": "",
                    "GlobalIPv6Address": "",
                    "GlobalIPv6PrefixLen": 0,
                    "MacAddress": e.mac_address,
                    "NetworkID": e.network,
                    "DriverOpts": null,
                    "IPAMConfig": null,
                    "Links": null,
                    "Aliases": e.aliases,
                }),
            )
        })
        .collect();
    json!({
        "EndpointID": "",
        "Gateway": field(|e| Value::from(e.gateway.clone())),
        "IPAddress": field(|e| Value::from(e.address.clone())),
        "IPPrefixLen": first.map_or(0, |e| e.prefix_length),
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": field(|e| Value::from(e.mac_address.clone())),
        "Bridge": "",
        "SandboxID": "",
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": port_bindings(&attachment.ports),
        "SandboxKey": attachment.netns,
        "Networks": networks,
    })
}

fn invalid_network(message: String) -> EngineError {
    EngineError::InvalidArgument(message)
}

/// A new network's name: valid, not a network mode, not taken.
fn check_new_network_name(state: &NetworkState, name: &str) -> Result<()> {
    if !is_valid_name(name) {
        return Err(invalid_network(format!(
            "network name {name:?} is not valid"
        )));
    }
    if matches!(name, "none" | "host" | "bridge") {
        return Err(invalid_network(format!(
            "network name {name:?} is reserved for a network mode"
        )));
    }
    if state.records().contains_key(name) {
        return Err(EngineError::NameInUse(name.to_string()));
    }
    Ok(())
}

/// The `Subnet` asked for, if it overlaps no other network and no host route; else the first
/// free one.
fn new_subnet(state: &NetworkState, request: &NetworkRequest) -> Result<Subnet> {
    let existing: Vec<(String, Subnet)> = state
        .records()
        .values()
        .filter_map(|r| Subnet::parse(&r.subnet).ok().map(|s| (r.name.clone(), s)))
        .collect();
    let routes = address::host_routes();
    let Some(text) = &request.subnet else {
        if request.gateway.is_some() {
            return Err(invalid_network("Gateway: needs a Subnet".to_string()));
        }
        let mut used = routes;
        used.extend(existing.iter().map(|(_, s)| *s));
        return address::free_subnet(0, &used)
            .ok_or_else(|| invalid_network("Subnet: no free subnet is left".to_string()));
    };
    let subnet = Subnet::parse(text).map_err(|e| invalid_network(format!("Subnet: {e}")))?;
    if let Some((other, taken)) = existing.iter().find(|(_, s)| s.overlaps(&subnet)) {
        return Err(invalid_network(format!(
            "Subnet: {subnet} overlaps {taken} of network {other}"
        )));
    }
    if let Some(route) = routes.iter().find(|route| route.overlaps(&subnet)) {
        return Err(invalid_network(format!(
            "Subnet: {subnet} overlaps the host's route to {route}"
        )));
    }
    Ok(subnet)
}

/// The bridge's `Interface` asked for, if valid and free; else the first free `berthN`.
fn new_interface(state: &NetworkState, request: &NetworkRequest) -> Result<String> {
    let interfaces: HashSet<String> = state
        .records()
        .values()
        .map(|r| r.interface.clone())
        .collect();
    match &request.interface {
        Some(interface) => {
            if !is_valid_interface(interface) {
                return Err(invalid_network(format!(
                    "Interface: {interface:?} is not a valid interface name"
                )));
            }
            if interfaces.contains(interface) || host_has_interface(interface) {
                return Err(invalid_network(format!(
                    "Interface: {interface:?} is already in use"
                )));
            }
            Ok(interface.clone())
        }
        None => Ok((1..)
            .map(|n| format!("berth{n}"))
            .find(|name| !interfaces.contains(name) && !host_has_interface(name))
            .unwrap_or_default()),
    }
}

/// `PortMappings` (a real container port, tcp or udp, an IPv4 host address, no host port
/// twice), `NetworkAliases` and `DnsServers`.
fn check_network_options(options: &ContainerNetworks) -> Result<()> {
    let mut published = HashSet::new();
    for mapping in &options.port_mappings {
        if mapping.container_port == 0 {
            return Err(invalid_network(
                "PortMappings: container port 0 is not a port".to_string(),
            ));
        }
        if !matches!(mapping.protocol.as_str(), "tcp" | "udp") {
            return Err(invalid_network(format!(
                "PortMappings: protocol {:?} is neither tcp nor udp",
                mapping.protocol
            )));
        }
        if !mapping.host_ip.is_empty() && mapping.host_ip.parse::<Ipv4Addr>().is_err() {
            return Err(invalid_network(format!(
                "PortMappings: host ip {:?} is not an IPv4 address",
                mapping.host_ip
            )));
        }
        if mapping.host_port != 0
            && !published.insert((mapping.host_port, mapping.protocol.clone()))
        {
            return Err(invalid_network(format!(
                "PortMappings: host port {} is published twice",
                mapping.host_side()
            )));
        }
    }
    if let Some(bad) = options.aliases.iter().find(|alias| !is_valid_name(alias)) {
        return Err(invalid_network(format!(
            "NetworkAliases: {bad:?} is not a valid name"
        )));
    }
    if let Some(bad) = options
        .dns_servers
        .iter()
        .find(|server| server.parse::<IpAddr>().is_err())
    {
        return Err(invalid_network(format!(
            "DnsServers: {bad:?} is not an IP address"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fake::FakeWorld;
    use super::super::{CreateRequest, EngineOptions, State};
    use super::*;

    const ROOT: Caller = Caller { uid: 0 };

    async fn engine() -> (Engine, Arc<FakeWorld>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs")).unwrap();
        let world = FakeWorld::new();
        let options = EngineOptions {
            root: dir.path().join("root"),
            runroot: dir.path().join("run"),
            init_binary: None,
            storage_driver: "overlay".into(),
            systemd_cgroups: false,
        };
        let (engine, notifications) = Engine::open(options, world.backends()).unwrap();
        // Nobody publishes in these tests; the receiver only has to stay open.
        std::mem::forget(notifications);
        engine.start_up().await.unwrap();
        (engine, world, dir)
    }

    fn bridged(dir: &tempfile::TempDir, name: &str) -> CreateRequest {
        CreateRequest {
            name: Some(name.to_string()),
            rootfs: Some(dir.path().join("rootfs").display().to_string()),
            command: vec!["/bin/true".into()],
            network: Some("bridge".into()),
            ..Default::default()
        }
    }

    async fn wait_for(engine: &Engine, id: &str, test: impl Fn(&ContainerStatus) -> bool) {
        let entry = engine.inner().entry(id).unwrap();
        let mut receiver = entry.status.subscribe();
        tokio::time::timeout(Duration::from_secs(5), receiver.wait_for(|s| test(s)))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_default_network_exists_and_avoids_podmans_subnets() {
        let (engine, _world, _dir) = engine().await;
        let default = engine.network(DEFAULT_NETWORK).unwrap();
        let subnet = Subnet::parse(&default.subnet).unwrap();
        for podman in ["10.88.0.0/16", "10.89.0.0/16"] {
            assert!(!subnet.overlaps(&Subnet::parse(podman).unwrap()));
        }
        assert!(!default.dns_enabled);
        let error = engine
            .remove_network(ROOT, DEFAULT_NETWORK, true)
            .await
            .unwrap_err();
        assert!(matches!(error, EngineError::InvalidArgument(_)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_run_under_a_restart_policy_is_set_up_and_torn_down() {
        let (engine, world, dir) = engine().await;
        let mut request = bridged(&dir, "flaky");
        request.restart_policy = Some("on-failure:1".into());
        let id = engine.create(ROOT, request).await.unwrap();
        engine.start(ROOT, &id, false).await.unwrap();
        let first = engine.status(&id).unwrap();
        assert!(!first.network.ip_address().is_empty());
        assert_eq!(world.network.namespaces().len(), 1);
        world.exit(&id, 1);
        wait_for(&engine, &id, |s| {
            s.state == State::Running && s.pid != first.pid
        })
        .await;
        assert_eq!(
            world.network.calls(),
            vec![
                format!("setup {id}"),
                format!("teardown {id}"),
                format!("setup {id}")
            ]
        );
        assert_eq!(world.network.namespaces().len(), 1);
        world.exit(&id, 1);
        wait_for(&engine, &id, |s| s.state == State::Exited).await;
        let status = engine.status(&id).unwrap();
        assert!(status.network.is_empty(), "{:?}", status.network);
        assert!(world.network.namespaces().is_empty());
        assert!(engine.inner().db.leases().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_containers_get_different_addresses_and_a_removed_network_goes_with_force() {
        let (engine, _world, dir) = engine().await;
        let request = NetworkRequest {
            subnet: Some("10.99.250.0/29".into()),
            interface: Some("berthtest0".into()),
            ..Default::default()
        };
        engine.create_network(ROOT, "small", request).await.unwrap();
        let mut ids = Vec::new();
        for name in ["one", "two"] {
            let mut request = bridged(&dir, name);
            request.network = Some("small".into());
            let id = engine.create(ROOT, request).await.unwrap();
            engine.start(ROOT, &id, false).await.unwrap();
            ids.push(id);
        }
        let addresses: Vec<String> = ids
            .iter()
            .map(|id| engine.status(id).unwrap().network.ip_address())
            .collect();
        assert_eq!(addresses, vec!["10.99.250.2", "10.99.250.3"]);
        let error = engine
            .remove_network(ROOT, "small", false)
            .await
            .unwrap_err();
        assert!(matches!(error, EngineError::NetworkInUse(_)), "{error}");
        engine.remove_network(ROOT, "small", true).await.unwrap();
        assert!(engine.container_ids().is_empty());
        assert!(matches!(
            engine.network("small"),
            Err(EngineError::NoSuchNetwork(_))
        ));
    }
}
