//! The real driver: Debian's netavark, called as podman calls it (JSON on stdin, the result
//! as JSON on stdout), and network namespaces made with `unshare` and a bind mount.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::driver::{NetworkDriver, NetworkError, NetworkOptions, StatusBlock};

/// Where Debian installs netavark and aardvark-dns (netavark's built-in aardvark path,
/// `/usr/libexec/podman/aardvark-dns`, does not exist there).
pub const NETAVARK: &str = "/usr/lib/podman/netavark";
pub const AARDVARK_DNS: &str = "/usr/lib/podman/aardvark-dns";

pub struct Netavark {
    pub binary: PathBuf,
    pub aardvark: PathBuf,
    /// netavark's `--config`: aardvark-dns's configuration and pid live beneath it (a tmpfs,
    /// as podman's `/run/containers/networks`).
    pub config_dir: PathBuf,
}

impl Netavark {
    pub fn new(config_dir: PathBuf) -> Netavark {
        Netavark {
            binary: PathBuf::from(NETAVARK),
            aardvark: PathBuf::from(AARDVARK_DNS),
            config_dir,
        }
    }

    fn run(
        &self,
        command: &str,
        netns: &Path,
        options: &NetworkOptions,
    ) -> Result<String, NetworkError> {
        let failed = |message: String| NetworkError::Netavark {
            command: command.to_string(),
            message,
        };
        std::fs::create_dir_all(&self.config_dir)
            .map_err(|e| failed(format!("create {}: {e}", self.config_dir.display())))?;
        let input = serde_json::to_vec(options).map_err(|e| failed(e.to_string()))?;
        let mut child = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config_dir)
            .arg("--aardvark-binary")
            .arg(&self.aardvark)
            .arg(command)
            .arg(netns)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("{}: {e}", self.binary.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&input)
                .map_err(|e| failed(format!("writing its input: {e}")))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| failed(e.to_string()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(failed(error_message(&stdout, &stderr)));
        }
        Ok(stdout)
    }
}

/// netavark reports a failure as `{"error": "..."}`; fall back to the raw text.
fn error_message(stdout: &str, stderr: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Failure {
        error: String,
    }
    for text in [stdout, stderr] {
        if let Ok(failure) = serde_json::from_str::<Failure>(text.trim()) {
            return failure.error;
        }
    }
    format!("{} {}", stdout.trim(), stderr.trim())
        .trim()
        .to_string()
}

impl NetworkDriver for Netavark {
    fn create_namespace(&self, path: &Path) -> Result<(), NetworkError> {
        super::netns::create(path)
    }

    fn remove_namespace(&self, path: &Path) -> Result<(), NetworkError> {
        super::netns::remove(path)
    }

    fn setup(
        &self,
        netns: &Path,
        options: &NetworkOptions,
    ) -> Result<BTreeMap<String, StatusBlock>, NetworkError> {
        let (by_id, names) = by_id(options);
        let stdout = self.run("setup", netns, &by_id)?;
        let answer: BTreeMap<String, StatusBlock> =
            serde_json::from_str(&stdout).map_err(|e| NetworkError::Netavark {
                command: "setup".into(),
                message: format!("unreadable answer {stdout:?}: {e}"),
            })?;
        Ok(answer
            .into_iter()
            .map(|(id, block)| (names.get(&id).cloned().unwrap_or(id), block))
            .collect())
    }

    fn teardown(&self, netns: &Path, options: &NetworkOptions) -> Result<(), NetworkError> {
        self.run("teardown", netns, &by_id(options).0).map(|_| ())
    }
}

/// netavark names a network's firewall chains after the network's name, which is unique only
/// within one engine: berth's `berth`, a network podman also has, or the default network of a
/// second berthd on the host would share chains, and the teardown of one would remove rules
/// (or the chain) the other is using. netavark is given each network under its id instead;
/// returns the options so renamed and the names by id, to map netavark's answer back.
fn by_id(options: &NetworkOptions) -> (NetworkOptions, BTreeMap<String, String>) {
    let mut renamed = options.clone();
    renamed.networks.clear();
    renamed.network_info.clear();
    let mut names = BTreeMap::new();
    for (name, info) in &options.network_info {
        let id = info.id.clone();
        if let Some(per_network) = options.networks.get(name) {
            renamed.networks.insert(id.clone(), per_network.clone());
        }
        let mut info = info.clone();
        info.name = id.clone();
        renamed.network_info.insert(id.clone(), info);
        names.insert(id, name.clone());
    }
    (renamed, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_netavark_failure_is_reported_by_its_error_text() {
        assert_eq!(
            error_message("", "{\"error\":\"IO error: bad netns\"}\n"),
            "IO error: bad netns"
        );
        assert_eq!(error_message("", "boom\n"), "boom");
    }

    #[test]
    fn netavark_sees_each_network_under_its_id() {
        use crate::network::driver::{NetworkInfo, PerNetworkOptions};
        let info = |name: &str, id: &str| NetworkInfo {
            name: name.into(),
            id: id.into(),
            driver: "bridge".into(),
            network_interface: Some(format!("{name}0")),
            subnets: None,
            ipv6_enabled: false,
            internal: false,
            dns_enabled: true,
            options: None,
            ipam_options: None,
        };
        let per_network = |interface: &str| PerNetworkOptions {
            aliases: Some(vec!["web".into()]),
            interface_name: interface.into(),
            static_ips: Some(vec!["10.90.0.2".into()]),
            static_mac: None,
        };
        let options = NetworkOptions {
            container_id: "c".into(),
            container_name: "web".into(),
            networks: BTreeMap::from([
                ("berth".to_string(), per_network("eth0")),
                ("backend".to_string(), per_network("eth1")),
            ]),
            network_info: BTreeMap::from([
                ("berth".to_string(), info("berth", "aaa")),
                ("backend".to_string(), info("backend", "bbb")),
            ]),
            port_mappings: None,
            dns_servers: None,
        };
        let (renamed, names) = by_id(&options);
        assert_eq!(
            renamed.networks.keys().collect::<Vec<_>>(),
            ["aaa", "bbb"],
            "{renamed:?}"
        );
        assert_eq!(renamed.networks["bbb"], per_network("eth1"));
        assert_eq!(renamed.network_info["aaa"].name, "aaa");
        assert_eq!(
            renamed.network_info["aaa"].network_interface.as_deref(),
            Some("berth0")
        );
        assert_eq!(names["aaa"], "berth");
        assert_eq!(names["bbb"], "backend");
        assert_eq!(renamed.container_name, "web");
    }
}
