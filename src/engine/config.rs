//! What a container is made of: the immutable configuration chosen at create time and the
//! mutable status the engine keeps in step with the runtime.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{EngineError, Result};

pub use crate::names::is_valid_name;
pub use crate::runtime::spec::MountSpec;

/// `Network` spec key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Own network namespace with only loopback up.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// A namespace of berth's own, wired into the bridge networks named in
    /// [`ContainerNetworks::networks`] by netavark.
    Bridge,
}

/// The network keys of the spec, validated (`Networks`, `PortMappings`, `NetworkAliases`,
/// `DnsServers`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerNetworks {
    /// Network names, in interface order (`eth0` on the first).
    pub networks: Vec<String>,
    pub port_mappings: Vec<crate::network::PortMapping>,
    pub aliases: Vec<String>,
    pub dns_servers: Vec<String>,
}

/// `RestartPolicy` spec key, as podman spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max_retries` times (0 = no limit).
    OnFailure {
        max_retries: u32,
    },
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    pub fn parse(text: &str) -> Option<RestartPolicy> {
        match text {
            "" | "no" => Some(RestartPolicy::No),
            "always" => Some(RestartPolicy::Always),
            "unless-stopped" => Some(RestartPolicy::UnlessStopped),
            "on-failure" => Some(RestartPolicy::OnFailure { max_retries: 0 }),
            _ => {
                let count = text.strip_prefix("on-failure:")?;
                Some(RestartPolicy::OnFailure {
                    max_retries: count.parse().ok()?,
                })
            }
        }
    }

    /// Whether an exit with `exit_code` after `restarts` restarts calls for another start.
    /// A user's `Stop` or `Kill` never does (podman's rule).
    pub fn wants_restart(&self, exit_code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0 && (*max_retries == 0 || restarts < *max_retries)
            }
        }
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
            RestartPolicy::OnFailure { max_retries: 0 } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max_retries } => write!(f, "on-failure:{max_retries}"),
        }
    }
}

/// What the client asked for in `CreateContainer`; every field optional or defaulted.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: Option<String>,
    pub rootfs: Option<String>,
    pub image: Option<String>,
    pub command: Vec<String>,
    /// `Some` when given, even empty: it replaces the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub terminal: bool,
    pub stdin: bool,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<u32>,
    pub mounts: Vec<MountSpec>,
    pub network: Option<String>,
    pub networks: Vec<String>,
    pub port_mappings: Vec<crate::network::PortMapping>,
    pub network_aliases: Vec<String>,
    pub dns_servers: Vec<String>,
    pub dependencies: Vec<String>,
    pub restart_policy: Option<String>,
    pub auto_remove: bool,
    pub memory_max: Option<u64>,
    pub pids_max: Option<u64>,
    pub cpu_quota: Option<f64>,
    pub read_only_rootfs: bool,
    pub init: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub log_driver: Option<String>,
    /// `Notify`: the container gets a `NOTIFY_SOCKET`.
    pub notify: bool,
    pub health: HealthRequest,
    /// `unconfined` or the path of a seccomp profile in podman's format.
    pub seccomp_profile: Option<String>,
}

/// The validated, immutable configuration of a container, stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    pub name: String,
    /// Host directory used read-only as the lower layer.
    pub rootfs: String,
    pub image: String,
    pub image_id: String,
    /// The image's layers (diff ids, bottom first); empty for a `Rootfs` container.
    #[serde(default)]
    pub layers: Vec<String>,
    pub command: Vec<String>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    pub terminal: bool,
    pub stdin: bool,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Canonical signal name without `SIG` (`TERM`).
    pub stop_signal: String,
    pub stop_timeout: u32,
    pub mounts: Vec<MountSpec>,
    pub network: Network,
    #[serde(default)]
    pub network_options: ContainerNetworks,
    /// Ids of the containers that must run first.
    pub dependencies: Vec<String>,
    pub restart_policy: RestartPolicy,
    pub auto_remove: bool,
    pub memory_max: Option<u64>,
    pub pids_max: Option<u64>,
    pub cpu_quota: Option<f64>,
    pub read_only_rootfs: bool,
    pub init: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `k8s-file` or `none`.
    pub log_driver: String,
    pub created_at: u64,
    /// `Notify`: readiness comes from the container's sd_notify messages.
    #[serde(default)]
    pub notify: bool,
    #[serde(default)]
    pub health: Option<crate::monitor::sidecar::HealthConfig>,
    /// The `SeccompProfile` spec key: `unconfined`, a path, or `None` for podman's default.
    #[serde(default)]
    pub seccomp_profile: Option<String>,
}

/// The `Health*` spec keys as given (times in microseconds).
#[derive(Debug, Clone, Default)]
pub struct HealthRequest {
    pub command: Vec<String>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub retries: Option<u32>,
    pub start_period: Option<u64>,
}

impl ContainerConfig {
    /// The process arguments: entrypoint followed by command, as OCI image configs combine them.
    pub fn process_args(&self) -> Vec<String> {
        self.entrypoint
            .iter()
            .chain(&self.command)
            .cloned()
            .collect()
    }
}

/// A window of no rows or no columns is refused, as the `TerminalSize` option is.
pub(crate) fn check_window_size(rows: u16, cols: u16) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(EngineError::InvalidArgument(format!(
            "window size {rows}x{cols}: rows and cols must be > 0"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_as_podman_spells_them() {
        assert_eq!(RestartPolicy::parse("no"), Some(RestartPolicy::No));
        assert_eq!(
            RestartPolicy::parse("on-failure:3"),
            Some(RestartPolicy::OnFailure { max_retries: 3 })
        );
        assert_eq!(RestartPolicy::parse("on-failure:x"), None);
        assert_eq!(RestartPolicy::parse("sometimes"), None);
        assert_eq!(
            RestartPolicy::OnFailure { max_retries: 3 }.to_string(),
            "on-failure:3"
        );
    }

    #[test]
    fn on_failure_restarts_only_failures_up_to_its_limit() {
        let policy = RestartPolicy::OnFailure { max_retries: 2 };
        assert!(policy.wants_restart(1, 0, false));
        assert!(policy.wants_restart(1, 1, false));
        assert!(!policy.wants_restart(1, 2, false));
        assert!(!policy.wants_restart(0, 0, false));
        assert!(!RestartPolicy::Always.wants_restart(1, 0, true));
        assert!(RestartPolicy::Always.wants_restart(0, 100, false));
    }
}
