//! Parses `a{sv}` arguments (the `CreateContainer` spec, `Batch` options) into engine types.
//! An unknown key or a value of the wrong type is `InvalidArgs` naming the key.

use std::collections::{BTreeMap, HashMap};

use zbus::OwnedVariant;

use super::error::{BusError, BusResult};
use crate::engine::{
    AttachOptions, BatchOp, CheckpointRequest, CreateRequest, ExecRequest, ImportOptions,
    LogOptions, MountSpec, RestoreRequest,
};

/// Takes one value of type `T` out of a variant, naming `key` on a type mismatch.
fn take<T>(key: &str, value: &OwnedVariant, expected: &str) -> BusResult<T>
where
    T: TryFrom<OwnedVariant>,
{
    // The signature is compared first: zbus converts some values of another type (an
    // `a{sv}` holding strings into a map of strings), and the spec is checked as declared.
    if value.value_signature().to_string() != expected {
        return Err(BusError::invalid_args(format!(
            "{key}: expected type {expected}, got {}",
            value.value_signature()
        )));
    }
    let copy = value
        .try_clone()
        .map_err(|e| BusError::invalid_args(format!("{key}: {e}")))?;
    T::try_from(copy).map_err(|_| {
        BusError::invalid_args(format!(
            "{key}: expected type {expected}, got {}",
            value.value_signature()
        ))
    })
}

fn strings(key: &str, value: &OwnedVariant) -> BusResult<Vec<String>> {
    take::<Vec<String>>(key, value, "as")
}

fn string_map(key: &str, value: &OwnedVariant) -> BusResult<BTreeMap<String, String>> {
    Ok(take::<HashMap<String, String>>(key, value, "a{ss}")?
        .into_iter()
        .collect())
}

/// The `CreateContainer` spec (its keys are listed in the README).
pub fn create_request(spec: HashMap<String, OwnedVariant>) -> BusResult<CreateRequest> {
    let mut request = CreateRequest::default();
    for (key, value) in &spec {
        let key = key.as_str();
        match key {
            "Image" => request.image = Some(take(key, value, "s")?),
            "Rootfs" => request.rootfs = Some(take(key, value, "s")?),
            "Name" => request.name = Some(take(key, value, "s")?),
            "Command" => request.command = strings(key, value)?,
            "Entrypoint" => request.entrypoint = Some(strings(key, value)?),
            "Env" => request.env = strings(key, value)?,
            "WorkingDir" => request.working_dir = Some(take(key, value, "s")?),
            "User" => request.user = Some(take(key, value, "s")?),
            "Hostname" => request.hostname = Some(take(key, value, "s")?),
            "Terminal" => request.terminal = take(key, value, "b")?,
            "Stdin" => request.stdin = take(key, value, "b")?,
            "Labels" => request.labels = string_map(key, value)?,
            "Annotations" => request.annotations = string_map(key, value)?,
            "StopSignal" => request.stop_signal = Some(take(key, value, "s")?),
            "StopTimeout" => request.stop_timeout = Some(take(key, value, "u")?),
            "Mounts" => request.mounts = mounts(value)?,
            "Network" => request.network = Some(take(key, value, "s")?),
            "Networks" => request.networks = strings(key, value)?,
            "PortMappings" => request.port_mappings = port_mappings(value)?,
            "NetworkAliases" => request.network_aliases = strings(key, value)?,
            "DnsServers" => request.dns_servers = strings(key, value)?,
            "Dependencies" => request.dependencies = strings(key, value)?,
            "RestartPolicy" => request.restart_policy = Some(take(key, value, "s")?),
            "AutoRemove" => request.auto_remove = take(key, value, "b")?,
            "MemoryMax" => request.memory_max = Some(take(key, value, "t")?),
            "PidsMax" => request.pids_max = Some(take(key, value, "t")?),
            "CpuQuota" => request.cpu_quota = Some(take(key, value, "d")?),
            "ReadOnlyRootfs" => request.read_only_rootfs = take(key, value, "b")?,
            "Init" => request.init = take(key, value, "b")?,
            "Privileged" => request.privileged = take(key, value, "b")?,
            "CapAdd" => request.cap_add = strings(key, value)?,
            "CapDrop" => request.cap_drop = strings(key, value)?,
            "LogDriver" => request.log_driver = Some(take(key, value, "s")?),
            "Notify" => request.notify = take(key, value, "b")?,
            "HealthCmd" => request.health.command = strings(key, value)?,
            "HealthInterval" => request.health.interval = Some(take(key, value, "t")?),
            "HealthTimeout" => request.health.timeout = Some(take(key, value, "t")?),
            "HealthRetries" => request.health.retries = Some(take(key, value, "u")?),
            "HealthStartPeriod" => request.health.start_period = Some(take(key, value, "t")?),
            "SeccompProfile" => request.seccomp_profile = Some(take(key, value, "s")?),
            other => return Err(BusError::invalid_args(format!("{other}: unknown spec key"))),
        }
    }
    Ok(request)
}

fn mounts(value: &OwnedVariant) -> BusResult<Vec<MountSpec>> {
    let entries: Vec<HashMap<String, OwnedVariant>> = take("Mounts", value, "aa{sv}")?;
    entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let mut mount = MountSpec {
                kind: "bind".into(),
                source: String::new(),
                destination: String::new(),
                options: Vec::new(),
                read_only: false,
            };
            for (key, value) in &entry {
                let label = format!("Mounts[{index}].{key}");
                match key.as_str() {
                    "Type" => mount.kind = take(&label, value, "s")?,
                    "Source" => mount.source = take(&label, value, "s")?,
                    "Destination" => mount.destination = take(&label, value, "s")?,
                    "Options" => mount.options = strings(&label, value)?,
                    "ReadOnly" => mount.read_only = take(&label, value, "b")?,
                    _ => {
                        return Err(BusError::invalid_args(format!(
                            "{label}: unknown mount key"
                        )))
                    }
                }
            }
            Ok(mount)
        })
        .collect()
}

/// `PortMappings` a(sqqs): (host ip or "", host port, container port, `tcp`|`udp`).
fn port_mappings(value: &OwnedVariant) -> BusResult<Vec<crate::network::PortMapping>> {
    let entries: Vec<(String, u16, u16, String)> = take("PortMappings", value, "a(sqqs)")?;
    Ok(entries
        .into_iter()
        .map(
            |(host_ip, host_port, container_port, protocol)| crate::network::PortMapping {
                host_ip,
                host_port,
                container_port,
                protocol,
            },
        )
        .collect())
}

/// `CreateNetwork` options: `Subnet` s, `Gateway` s, `Internal` b, `Isolate` b,
/// `DnsEnabled` b, `Interface` s.
pub fn network_request(
    options: &HashMap<String, OwnedVariant>,
) -> BusResult<crate::engine::NetworkRequest> {
    let mut request = crate::engine::NetworkRequest::default();
    for (key, value) in options {
        let key = key.as_str();
        match key {
            "Subnet" => request.subnet = Some(take(key, value, "s")?),
            "Gateway" => request.gateway = Some(take(key, value, "s")?),
            "Internal" => request.internal = take(key, value, "b")?,
            "Isolate" => request.isolate = take(key, value, "b")?,
            "DnsEnabled" => request.dns_enabled = Some(take(key, value, "b")?),
            "Interface" => request.interface = Some(take(key, value, "s")?),
            other => {
                return Err(BusError::invalid_args(format!(
                    "{other}: unknown CreateNetwork option"
                )))
            }
        }
    }
    Ok(request)
}

/// `ImportImage` options: `Reference` names the image; a plain rootfs tar takes its config
/// from `Command`, `Entrypoint`, `Env`, `WorkingDir`, `User`, `Labels`, `Volumes`; `MaxSize` t bounds
/// the uncompressed bytes accepted.
pub fn import_options(options: &HashMap<String, OwnedVariant>) -> BusResult<ImportOptions> {
    let mut parsed = ImportOptions::default();
    for (key, value) in options {
        let key = key.as_str();
        match key {
            "Reference" => parsed.reference = Some(take(key, value, "s")?),
            "Command" => parsed.config.cmd = strings(key, value)?,
            "Entrypoint" => parsed.config.entrypoint = strings(key, value)?,
            "Env" => parsed.config.env = strings(key, value)?,
            "WorkingDir" => parsed.config.working_dir = take(key, value, "s")?,
            "User" => parsed.config.user = take(key, value, "s")?,
            "Labels" => parsed.config.labels = string_map(key, value)?,
            "Volumes" => parsed.config.volumes = strings(key, value)?,
            "MaxSize" => parsed.limits.max_bytes = take(key, value, "t")?,
            other => {
                return Err(BusError::invalid_args(format!(
                    "{other}: unknown ImportImage option"
                )))
            }
        }
    }
    Ok(parsed)
}

/// `CreateVolume` options: `Labels` a{ss}.
pub fn volume_labels(
    options: &HashMap<String, OwnedVariant>,
) -> BusResult<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for (key, value) in options {
        match key.as_str() {
            "Labels" => labels = string_map(key, value)?,
            other => {
                return Err(BusError::invalid_args(format!(
                    "{other}: unknown CreateVolume option"
                )))
            }
        }
    }
    Ok(labels)
}

/// `Logs` options.
pub fn log_options(options: &HashMap<String, OwnedVariant>) -> BusResult<LogOptions> {
    let mut parsed = LogOptions::default();
    for (key, value) in options {
        match key.as_str() {
            "Follow" => parsed.follow = take(key, value, "b")?,
            "Tail" => parsed.tail = Some(u64::from(take::<u32>(key, value, "u")?)),
            "Since" => parsed.since = take(key, value, "t")?,
            "Until" => parsed.until = take(key, value, "t")?,
            "Timestamps" => parsed.timestamps = take(key, value, "b")?,
            other => {
                return Err(BusError::invalid_args(format!(
                    "{other}: unknown Logs option"
                )))
            }
        }
    }
    Ok(parsed)
}

/// One `Batch` operation: a verb name and its options.
pub fn batch_op(verb: &str, options: &HashMap<String, OwnedVariant>) -> BusResult<BatchOp> {
    let allowed: &[&str] = match verb {
        "Start" => &["Recursive"],
        "Stop" | "Restart" => &["Timeout"],
        "Kill" => &["Signal"],
        _ => &[],
    };
    if let Some(unknown) = options.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(BusError::invalid_args(format!(
            "{verb}: unknown option {unknown}"
        )));
    }
    let get = |key: &str| options.get(key);
    Ok(match verb {
        "Init" => BatchOp::Init,
        "Start" => BatchOp::Start {
            recursive: get("Recursive")
                .map(|v| take(verb, v, "b"))
                .transpose()?
                .unwrap_or(false),
        },
        "Stop" => BatchOp::Stop {
            timeout: get("Timeout").map(|v| take(verb, v, "u")).transpose()?,
        },
        "Restart" => BatchOp::Restart {
            timeout: get("Timeout").map(|v| take(verb, v, "u")).transpose()?,
        },
        "Kill" => BatchOp::Kill {
            signal: get("Signal")
                .map(|v| take(verb, v, "s"))
                .transpose()?
                .unwrap_or_else(|| "KILL".into()),
        },
        "Pause" => BatchOp::Pause,
        "Unpause" => BatchOp::Unpause,
        "Cleanup" => BatchOp::Cleanup,
        "Sync" => BatchOp::Sync,
        "Refresh" => BatchOp::Refresh,
        other => {
            return Err(BusError::invalid_args(format!(
                "Batch: unknown verb {other:?}"
            )))
        }
    })
}

/// A descriptor passed as a method argument, duplicated close-on-exec so it outlives the
/// message; `name` names the argument in the error.
pub fn owned_fd(name: &str, fd: &zbus::Fd<'_>) -> BusResult<std::os::fd::OwnedFd> {
    std::os::fd::AsFd::as_fd(fd)
        .try_clone_to_owned()
        .map_err(|e| BusError::invalid_args(format!("{name}: {e}")))
}

/// A descriptor passed in an options dictionary (`h`), duplicated close-on-exec.
fn fd(key: &str, value: &OwnedVariant) -> BusResult<std::os::fd::OwnedFd> {
    match &**value {
        zbus::Variant::Fd(fd) => owned_fd(key, fd),
        other => Err(BusError::invalid_args(format!(
            "{key}: expected type h, got {}",
            other.value_signature()
        ))),
    }
}

/// A terminal size option `(qq)`: rows, cols.
fn terminal_size(key: &str, value: &OwnedVariant) -> BusResult<(u16, u16)> {
    let (rows, cols) = take::<(u16, u16)>(key, value, "(qq)")?;
    if rows == 0 || cols == 0 {
        return Err(BusError::invalid_args(format!(
            "{key}: rows and cols must be > 0"
        )));
    }
    Ok((rows, cols))
}

/// `Attach`/`StartAndAttach` options: `Stdin` b, `TerminalSize` (qq).
pub fn attach_options(options: &HashMap<String, OwnedVariant>) -> BusResult<AttachOptions> {
    let mut parsed = AttachOptions::default();
    for (key, value) in options {
        match key.as_str() {
            "Stdin" => parsed.stdin = Some(take(key, value, "b")?),
            "TerminalSize" => parsed.console_size = Some(terminal_size(key, value)?),
            other => {
                return Err(BusError::invalid_args(format!(
                    "{other}: unknown Attach option"
                )))
            }
        }
    }
    Ok(parsed)
}

/// `Exec` options (`Env`, `User`, `WorkingDir`, `Terminal`, `Privileged`, stdio fds) and the
/// command.
pub fn exec_request(
    command: Vec<String>,
    options: &HashMap<String, OwnedVariant>,
) -> BusResult<ExecRequest> {
    let mut request = ExecRequest {
        command,
        ..Default::default()
    };
    for (key, value) in options {
        match key.as_str() {
            "Env" => request.env = strings(key, value)?,
            "User" => request.user = Some(take(key, value, "s")?),
            "WorkingDir" => request.working_dir = Some(take(key, value, "s")?),
            "Terminal" => request.terminal = take(key, value, "b")?,
            "Privileged" => request.privileged = take(key, value, "b")?,
            "TerminalSize" => request.console_size = Some(terminal_size(key, value)?),
            "Stdin" => request.stdio[0] = Some(fd(key, value)?),
            "Stdout" => request.stdio[1] = Some(fd(key, value)?),
            "Stderr" => request.stdio[2] = Some(fd(key, value)?),
            other => {
                return Err(BusError::invalid_args(format!(
                    "{other}: unknown Exec option"
                )))
            }
        }
    }
    Ok(request)
}

/// `Checkpoint` options: `Keep` b, `KeepRunning` b, `TCPEstablished` b, `Export` h.
pub fn checkpoint_request(options: &HashMap<String, OwnedVariant>) -> BusResult<CheckpointRequest> {
    let mut request = CheckpointRequest::default();
    for (key, value) in options {
        match key.as_str() {
            "Keep" => request.keep = take(key, value, "b")?,
            "KeepRunning" => request.keep_running = take(key, value, "b")?,
            "TCPEstablished" => request.tcp_established = take(key, value, "b")?,
            "Export" => request.export = Some(fd(key, value)?),
            other => {
                return Err(BusError::invalid_args(format!(
                    "{other}: unknown Checkpoint option"
                )))
            }
        }
    }
    Ok(request)
}

/// `Restore` options: `Keep` b, `TCPEstablished` b, `Import` h.
pub fn restore_request(options: &HashMap<String, OwnedVariant>) -> BusResult<RestoreRequest> {
    let mut request = RestoreRequest::default();
    for (key, value) in options {
        match key.as_str() {
            "Keep" => request.keep = take(key, value, "b")?,
            "TCPEstablished" => request.tcp_established = take(key, value, "b")?,
            "Import" => request.import = Some(fd(key, value)?),
            other => {
                return Err(BusError::invalid_args(format!(
                    "{other}: unknown Restore option"
                )))
            }
        }
    }
    Ok(request)
}

/// `PullImage` options (see `dbus/org.berth.Engine1.Manager.xml`).
pub fn pull_options(
    options: &HashMap<String, OwnedVariant>,
) -> BusResult<crate::engine::PullOptions> {
    let mut parsed = crate::engine::PullOptions::default();
    for (key, value) in options {
        let key = key.as_str();
        match key {
            "Credentials" => parsed.credentials = Some(take(key, value, "s")?),
            "AuthFile" => parsed.auth_file = Some(take::<String>(key, value, "s")?.into()),
            "TlsVerify" => parsed.tls_verify = take(key, value, "b")?,
            "CertDir" => parsed.cert_dir = Some(take::<String>(key, value, "s")?.into()),
            "Platform" => parsed.platform = Some(take(key, value, "s")?),
            "Policy" => {
                let policy: String = take(key, value, "s")?;
                parsed.policy = crate::engine::PullPolicy::parse(&policy).ok_or_else(|| {
                    BusError::invalid_args(format!(
                        "Policy: {policy:?} is not missing, always or newer"
                    ))
                })?;
            }
            other => {
                return Err(BusError::invalid_args(format!(
                    "{other}: unknown PullImage option"
                )))
            }
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::Variant;

    fn variant<'a>(value: impl Into<Variant<'a>>) -> OwnedVariant {
        value.into().try_to_owned().unwrap()
    }

    #[test]
    fn known_keys_fill_the_request() {
        let spec = HashMap::from([
            ("Rootfs".to_string(), variant("/srv/rootfs")),
            (
                "Command".to_string(),
                variant(vec!["/bin/sh", "-c", "exit 3"]),
            ),
            ("StopTimeout".to_string(), variant(1u32)),
            ("Labels".to_string(), variant(HashMap::from([("a", "b")]))),
        ]);
        let request = create_request(spec).unwrap();
        assert_eq!(request.rootfs.as_deref(), Some("/srv/rootfs"));
        assert_eq!(request.command, vec!["/bin/sh", "-c", "exit 3"]);
        assert_eq!(request.stop_timeout, Some(1));
        assert_eq!(request.labels.get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn an_unknown_key_is_named() {
        let spec = HashMap::from([("Bogus".to_string(), variant(true))]);
        let error = create_request(spec).unwrap_err();
        assert_eq!(error.error_name(), "org.freedesktop.DBus.Error.InvalidArgs");
        assert!(error.to_string().contains("Bogus"));
    }

    #[test]
    fn a_wrong_type_is_named_with_both_types() {
        let spec = HashMap::from([("StopTimeout".to_string(), variant("ten"))]);
        let error = create_request(spec).unwrap_err().to_string();
        assert!(
            error.contains("StopTimeout") && error.contains('u') && error.contains('s'),
            "{error}"
        );
    }

    #[test]
    fn a_map_of_variants_is_not_a_map_of_strings() {
        let labels: HashMap<&str, Variant<'_>> = HashMap::from([("a", Variant::from("b"))]);
        let spec = HashMap::from([("Labels".to_string(), variant(labels))]);
        let error = create_request(spec).unwrap_err();
        assert_eq!(error.error_name(), "org.freedesktop.DBus.Error.InvalidArgs");
        assert!(error.to_string().contains("a{sv}"), "{error}");
    }

    #[test]
    fn batch_verbs_take_only_their_options() {
        let timeout = HashMap::from([("Timeout".to_string(), variant(2u32))]);
        assert_eq!(
            batch_op("Stop", &timeout).unwrap(),
            BatchOp::Stop { timeout: Some(2) }
        );
        assert!(batch_op("Pause", &timeout).is_err());
        assert!(batch_op("Remove", &HashMap::new()).is_err());
    }
}
