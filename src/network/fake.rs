//! A driver that records what it is asked and answers as netavark would, for engine tests
//! that need neither root nor netavark.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use super::driver::{
    NetAddress, NetInterface, NetworkDriver, NetworkError, NetworkOptions, StatusBlock,
};

#[derive(Default)]
pub struct FakeNetwork {
    /// `setup <container id>` / `teardown <container id>`, in order.
    pub calls: Mutex<Vec<String>>,
    /// Namespace files that exist now.
    pub namespaces: Mutex<Vec<String>>,
}

impl FakeNetwork {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn namespaces(&self) -> Vec<String> {
        self.namespaces
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
    }
}

impl NetworkDriver for FakeNetwork {
    fn create_namespace(&self, path: &Path) -> Result<(), NetworkError> {
        if let Ok(mut namespaces) = self.namespaces.lock() {
            namespaces.push(path.display().to_string());
        }
        Ok(())
    }

    fn remove_namespace(&self, path: &Path) -> Result<(), NetworkError> {
        if let Ok(mut namespaces) = self.namespaces.lock() {
            namespaces.retain(|existing| Path::new(existing) != path);
        }
        Ok(())
    }

    fn setup(
        &self,
        _netns: &Path,
        options: &NetworkOptions,
    ) -> Result<BTreeMap<String, StatusBlock>, NetworkError> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(format!("setup {}", options.container_id));
        }
        let mut answer = BTreeMap::new();
        for (name, per_network) in &options.networks {
            let info = &options.network_info[name];
            let subnet = info.subnets.as_ref().and_then(|s| s.first()).cloned();
            let prefix = subnet
                .as_ref()
                .and_then(|s| s.subnet.split_once('/').map(|(_, p)| p.to_string()))
                .unwrap_or_else(|| "24".into());
            let address = per_network
                .static_ips
                .as_ref()
                .and_then(|ips| ips.first())
                .cloned()
                .unwrap_or_default();
            let interface = NetInterface {
                mac_address: "02:00:00:00:00:01".into(),
                subnets: Some(vec![NetAddress {
                    ipnet: format!("{address}/{prefix}"),
                    gateway: subnet.and_then(|s| s.gateway),
                }]),
            };
            answer.insert(
                name.clone(),
                StatusBlock {
                    dns_search_domains: None,
                    dns_server_ips: None,
                    interfaces: Some(BTreeMap::from([(
                        per_network.interface_name.clone(),
                        interface,
                    )])),
                },
            );
        }
        Ok(answer)
    }

    fn teardown(&self, _netns: &Path, options: &NetworkOptions) -> Result<(), NetworkError> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(format!("teardown {}", options.container_id));
        }
        Ok(())
    }
}
