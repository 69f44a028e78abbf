//! `Inspect`: the container as JSON, shaped like `podman inspect` where the fields exist.

use serde_json::{json, Value};

use super::config::RestartPolicy;
use super::{blocking, ContainerConfig, ContainerStatus, Engine, Result, State};
use crate::clock::rfc3339_micros;

impl Engine {
    /// `environment`: whether `Config.Env` is shown (callers allowed `.exec`, as podman
    /// needs root for it); the rest is open to every caller.
    pub async fn inspect(&self, id: &str, size: bool, environment: bool) -> Result<String> {
        let entry = self.inner().entry(id)?;
        let config = entry.config.clone();
        let status = entry.status();
        let restarting = entry
            .restart_pending
            .load(std::sync::atomic::Ordering::SeqCst);
        let paths = self.inner().paths.container(id);
        let lowers = super::filesystem::lower_dirs(self.inner(), &config);
        let merged = paths.merged();
        // The driver really used: a copy of the layers (vfs, or overlay's fallback) or an
        // overlay mount.
        let driver = if crate::storage::rootfs::is_copy(&merged) {
            "vfs".to_string()
        } else {
            self.inner().options.storage_driver.clone()
        };
        let mounts = self.mounts_json(&config);
        blocking(move || {
            let lower_dir = lowers
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            let graph_data = if driver == "overlay" {
                json!({
                    "LowerDir": lower_dir,
                    "UpperDir": paths.upper().display().to_string(),
                    "WorkDir": paths.work().display().to_string(),
                    "MergedDir": merged.display().to_string(),
                })
            } else {
                json!({ "LowerDir": lower_dir, "Dir": merged.display().to_string() })
            };
            let args = config.process_args();
            let log_path = if config.log_driver == "k8s-file" {
                paths.log().display().to_string()
            } else {
                String::new()
            };
            let mut document = json!({
                "Id": config.id,
                "Created": rfc3339_micros(config.created_at),
                "Path": args.first().cloned().unwrap_or_default(),
                "Args": args.iter().skip(1).collect::<Vec<_>>(),
                "State": state_json(&status, restarting),
                "ExecIDs": status.exec_sessions.keys().collect::<Vec<_>>(),
                "Image": config.image_id,
                "ImageName": config.image,
                "Rootfs": config.rootfs,
                "Name": config.name,
                "RestartCount": status.restart_count,
                "Driver": driver,
                "Mounted": status.mounted(),
                "Mountpoint": status.mountpoint,
                "LogPath": log_path,
                "BundlePath": paths.bundle().display().to_string(),
                "Dependencies": config.dependencies,
                "NetworkSettings": super::networking::network_settings(&status.network),
                "GraphDriver": { "Name": driver, "Data": graph_data },
                "Mounts": mounts,
                "Config": config_json(&config),
                "HostConfig": host_config_json(&config),
            });
            super::health::inspect_into(&mut document, &config, &status);
            if !environment {
                if let Some(container_config) = document["Config"].as_object_mut() {
                    container_config.remove("Env");
                }
            }
            if size {
                // A copy holds the layers and the changes together; an overlay keeps the
                // changes in the upper directory over the layers.
                let (changes, layers) = if driver == "overlay" {
                    let layers = lowers.iter().map(|p| disk_usage(p)).sum::<u64>();
                    (disk_usage(&paths.upper()), layers)
                } else {
                    let layers = lowers.iter().map(|p| disk_usage(p)).sum::<u64>();
                    (disk_usage(&merged).saturating_sub(layers), layers)
                };
                document["SizeRw"] = Value::from(changes);
                document["SizeRootFs"] = Value::from(layers + changes);
            }
            Ok(serde_json::to_string_pretty(&document).unwrap_or_default())
        })
        .await
    }
}

/// `State`: the status as podman shows it; `restarting` while the restart policy waits to
/// start it again.
fn state_json(status: &ContainerStatus, restarting: bool) -> Value {
    json!({
        "Status": status.state.as_str(),
        "Running": status.state == State::Running,
        "Paused": status.state == State::Paused,
        "Restarting": restarting,
        "OOMKilled": status.oom_killed,
        // As docker: being removed, or in a state berth cannot tell.
        "Dead": matches!(status.state, State::Removing | State::Unknown),
        "Pid": status.pid,
        "MonitorPid": status.monitor_pid,
        "ExitCode": status.exit_code,
        "Error": status.error,
        "StartedAt": rfc3339_micros(status.started_at),
        "FinishedAt": rfc3339_micros(status.finished_at),
        "Checkpointed": status.checkpointed,
        "CheckpointedAt": rfc3339_micros(status.checkpointed_at),
        "RestoredAt": rfc3339_micros(status.restored_at),
    })
}

/// `Config`: what the container runs, as created.
fn config_json(config: &ContainerConfig) -> Value {
    json!({
        "Hostname": config.hostname,
        "User": config.user,
        "Env": config.env,
        "Cmd": config.command,
        "Entrypoint": config.entrypoint,
        "WorkingDir": config.working_dir,
        "Labels": config.labels,
        "Annotations": config.annotations,
        "StopSignal": config.stop_signal,
        "StopTimeout": config.stop_timeout,
        "Tty": config.terminal,
        "OpenStdin": config.stdin,
    })
}

/// `HostConfig`: what the host gives the container.
fn host_config_json(config: &ContainerConfig) -> Value {
    let (restart_name, retries) = match &config.restart_policy {
        RestartPolicy::OnFailure { max_retries } => ("on-failure".to_string(), *max_retries),
        other => (other.to_string(), 0),
    };
    json!({
        "RestartPolicy": { "Name": restart_name, "MaximumRetryCount": retries },
        "AutoRemove": config.auto_remove,
        "NetworkMode": super::networking::network_mode(config),
        "PortBindings": super::networking::port_bindings(&config.network_options.port_mappings),
        "Memory": config.memory_max.unwrap_or(0),
        "PidsLimit": config.pids_max.unwrap_or(0),
        "NanoCpus": config.cpu_quota.map(|c| (c * 1e9) as u64).unwrap_or(0),
        "ReadonlyRootfs": config.read_only_rootfs,
        "Privileged": config.privileged,
        "CapAdd": config.cap_add,
        "CapDrop": config.cap_drop,
        "Init": config.init,
        "LogConfig": { "Type": config.log_driver },
    })
}

/// Bytes of regular files under `path`, not following symlinks.
fn disk_usage(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| disk_usage(&e.path()))
                    .sum()
            })
            .unwrap_or(0)
    } else if meta.is_file() {
        meta.len()
    } else {
        0
    }
}
