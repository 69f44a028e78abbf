//! Builds the OCI runtime spec (`config.json`) of a container with `oci-spec`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{
    Capability, Linux, LinuxCpu, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids,
    LinuxResources, Mount, PosixRlimitType, Process, Spec,
};

/// Podman's default capability set for a container process.
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Every capability the kernel knows, in its numbering (`CAP_CHOWN` is 0), for `Privileged`
/// and `CapAdd ALL`.
const ALL_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The paths podman masks (containers/common `DefaultMaskedPaths`): runc hides each that
/// exists behind `/dev/null` or an empty read-only tmpfs.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/fs/selinux",
    "/sys/dev/block",
];

/// The paths podman makes read-only (containers/common `DefaultReadOnlyPaths`).
const READ_ONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Where the `Init` binary is bind-mounted inside the container (podman uses
/// `/run/podman-init`).
pub const INIT_PATH_IN_CONTAINER: &str = "/run/berth-init";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("cannot build the runtime spec: {0}")]
    Build(String),
    #[error(transparent)]
    Seccomp(#[from] super::seccomp::SeccompError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: oci_spec::OciSpecError,
    },
}

/// One entry of the `Mounts` spec key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountSpec {
    /// `bind` or `tmpfs`.
    pub kind: String,
    pub source: String,
    pub destination: String,
    pub options: Vec<String>,
    pub read_only: bool,
}

/// Everything the spec is built from.
#[derive(Debug, Clone, Default)]
pub struct SpecInput {
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub terminal: bool,
    /// Initial window size (rows, cols) of the terminal.
    pub console_size: Option<(u16, u16)>,
    pub host_network: bool,
    pub read_only_rootfs: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub memory_max: Option<u64>,
    pub pids_max: Option<u64>,
    pub cpu_quota: Option<f64>,
    pub cgroups_path: String,
    pub mounts: Vec<MountSpec>,
    /// Host path of a tiny init to run as PID 1 (`Init` spec key).
    pub init_binary: Option<PathBuf>,
    pub annotations: std::collections::HashMap<String, String>,
    /// podman's seccomp profile to apply (`None`: no filter).
    pub seccomp_profile: Option<PathBuf>,
    /// A network namespace file to join instead of a new namespace (bridge networks).
    pub network_namespace: Option<PathBuf>,
}

fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare).map_err(|_| SpecError::UnknownCapability(name.to_string()))
}

/// Every capability berthd itself may pass on (its bounding set, `CapBnd` in
/// `/proc/self/status`), as podman gives a privileged container: runc cannot grant more.
fn bounding_capabilities() -> Vec<&'static str> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapBnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The capability set after `CapAdd`/`CapDrop` (both accept `ALL`).
pub fn capability_set(
    privileged: bool,
    add: &[String],
    drop: &[String],
) -> Result<HashSet<Capability>, SpecError> {
    let wants_all = |list: &[String]| list.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let mut names: Vec<&str> = if privileged || wants_all(add) {
        bounding_capabilities()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    };
    let mut set = HashSet::new();
    for name in names.drain(..) {
        set.insert(parse_capability(name)?);
    }
    for name in add.iter().filter(|c| !c.eq_ignore_ascii_case("ALL")) {
        set.insert(parse_capability(name)?);
    }
    if wants_all(drop) {
        set.clear();
    }
    for name in drop.iter().filter(|c| !c.eq_ignore_ascii_case("ALL")) {
        set.remove(&parse_capability(name)?);
    }
    Ok(set)
}

/// An OCI `consoleSize`.
pub fn console_box(rows: u16, cols: u16) -> Result<oci_spec::runtime::Box, SpecError> {
    oci_spec::runtime::BoxBuilder::default()
        .height(u32::from(rows))
        .width(u32::from(cols))
        .build()
        .map_err(|error| SpecError::Build(error.to_string()))
}

/// Clamps a wanted rlimit to the hard limit berthd itself has: an unprivileged raise would
/// make `runc create` fail (no CAP_SYS_RESOURCE on this machine).
fn clamped_nofile(wanted: u64) -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| wanted.min(hard))
        .unwrap_or(wanted)
}

fn build_error(error: oci_spec::OciSpecError) -> SpecError {
    SpecError::Build(error.to_string())
}

/// Builds the spec.
pub fn build(input: &SpecInput) -> Result<Spec, SpecError> {
    let mut spec = Spec::default();
    spec.set_hostname(Some(input.hostname.clone()));
    if !input.annotations.is_empty() {
        spec.set_annotations(Some(input.annotations.clone()));
    }
    let root = oci_spec::runtime::RootBuilder::default()
        .path(input.rootfs.clone())
        .readonly(input.read_only_rootfs)
        .build()
        .map_err(build_error)?;
    spec.set_root(Some(root));

    let capabilities = capability_set(input.privileged, &input.cap_add, &input.cap_drop)?;
    let seccomp = match &input.seccomp_profile {
        Some(path) => Some(super::seccomp::load(
            path,
            &capability_names(&capabilities),
        )?),
        None => None,
    };
    spec.set_process(Some(process(input, capabilities)?));
    let defaults = spec.mounts().clone().unwrap_or_default();
    spec.set_mounts(Some(mounts(input, defaults)?));

    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    set_namespaces(linux, input);
    if input.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    } else {
        linux.set_masked_paths(Some(MASKED_PATHS.iter().map(|p| p.to_string()).collect()));
        linux.set_readonly_paths(Some(
            READ_ONLY_PATHS.iter().map(|p| p.to_string()).collect(),
        ));
    }
    linux.set_seccomp(seccomp);
    linux.set_cgroups_path(Some(PathBuf::from(&input.cgroups_path)));
    set_resources(
        linux.resources_mut().get_or_insert_with(Default::default),
        input,
    );
    Ok(spec)
}

/// The container's process: its command (behind the init when there is one), environment,
/// user, `capabilities`, rlimits and terminal.
fn process(input: &SpecInput, capabilities: HashSet<Capability>) -> Result<Process, SpecError> {
    let mut args = input.args.clone();
    if input.init_binary.is_some() {
        args.splice(0..0, [INIT_PATH_IN_CONTAINER.to_string(), "--".to_string()]);
    }
    let capabilities = oci_spec::runtime::LinuxCapabilitiesBuilder::default()
        .bounding(capabilities.clone())
        .effective(capabilities.clone())
        .permitted(capabilities)
        // Podman leaves these empty; the builder's defaults name capabilities outside the
        // bounding set, which runc refuses.
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(build_error)?;
    let user = oci_spec::runtime::UserBuilder::default()
        .uid(input.uid)
        .gid(input.gid)
        .additional_gids(input.additional_gids.clone())
        .build()
        .map_err(build_error)?;
    let nofile = clamped_nofile(1_048_576);
    let rlimit = oci_spec::runtime::PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .hard(nofile)
        .soft(nofile)
        .build()
        .map_err(build_error)?;
    let mut process = oci_spec::runtime::ProcessBuilder::default();
    if let (true, Some((rows, cols))) = (input.terminal, input.console_size) {
        process = process.console_size(console_box(rows, cols)?);
    }
    process
        .terminal(input.terminal)
        .args(args)
        .env(input.env.clone())
        .cwd(input.cwd.clone())
        .user(user)
        .capabilities(capabilities)
        .rlimits(vec![rlimit])
        // As podman (containers.conf `no_new_privileges = false`): setuid programs in the
        // image keep working; the seccomp filter and the capability set confine instead.
        .no_new_privileges(false)
        .build()
        .map_err(build_error)
}

/// The default mounts (confined as podman's), then the container's own, then the init.
fn mounts(input: &SpecInput, defaults: Vec<Mount>) -> Result<Vec<Mount>, SpecError> {
    let mut mounts: Vec<Mount> = defaults.into_iter().map(confined_mount).collect();
    for extra in &input.mounts {
        let mut options = extra.options.clone();
        if extra.kind == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
            options.push("rbind".into());
        }
        if extra.read_only && !options.iter().any(|o| o == "ro") {
            options.push("ro".into());
        }
        let mount = oci_spec::runtime::MountBuilder::default()
            .destination(PathBuf::from(&extra.destination))
            .typ(extra.kind.clone())
            .source(PathBuf::from(if extra.kind == "tmpfs" {
                "tmpfs"
            } else {
                &extra.source
            }))
            .options(options)
            .build()
            .map_err(build_error)?;
        mounts.push(mount);
    }
    if let Some(init) = &input.init_binary {
        mounts.push(bind_mount(init, INIT_PATH_IN_CONTAINER, true).map_err(build_error)?);
    }
    Ok(mounts)
}

/// The host's network namespace (none of its own), or the one berth prepared.
fn set_namespaces(linux: &mut Linux, input: &SpecInput) {
    if input.host_network {
        let namespaces: Vec<LinuxNamespace> = linux
            .namespaces()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|ns| ns.typ() != LinuxNamespaceType::Network)
            .collect();
        linux.set_namespaces(Some(namespaces));
    }
    if let Some(path) = &input.network_namespace {
        let namespaces: Vec<LinuxNamespace> = linux
            .namespaces()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|mut ns| {
                if ns.typ() == LinuxNamespaceType::Network {
                    ns.set_path(Some(path.clone()));
                }
                ns
            })
            .collect();
        linux.set_namespaces(Some(namespaces));
    }
}

/// Memory, pids and CPU limits.
fn set_resources(resources: &mut LinuxResources, input: &SpecInput) {
    if let Some(limit) = input.memory_max {
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(limit as i64));
        resources.set_memory(Some(memory));
    }
    if let Some(limit) = input.pids_max {
        let mut pids = LinuxPids::default();
        pids.set_limit(limit as i64);
        resources.set_pids(Some(pids));
    }
    if let Some(cpus) = input.cpu_quota {
        // Podman's --cpus: a 100 ms period, quota = cpus × period.
        let period: u64 = 100_000;
        let mut cpu = LinuxCpu::default();
        cpu.set_period(Some(period));
        cpu.set_quota(Some((cpus * period as f64).round() as i64));
        resources.set_cpu(Some(cpu));
    }
}

/// The options podman gives the default mounts: `/proc` without setuid, devices or
/// executables; `/dev` without setuid or executables.
fn confined_mount(mut mount: Mount) -> Mount {
    let options: &[&str] = match mount.destination().to_str() {
        Some("/proc") => &["nosuid", "noexec", "nodev"],
        Some("/dev") => &["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"],
        _ => return mount,
    };
    mount.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    mount
}

/// Capability names as seccomp profiles spell them (`CAP_CHOWN`).
fn capability_names(capabilities: &HashSet<Capability>) -> Vec<String> {
    capabilities
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn bind_mount(
    source: &Path,
    destination: &str,
    read_only: bool,
) -> Result<Mount, oci_spec::OciSpecError> {
    let mut options = vec![
        "bind".to_string(),
        "nosuid".to_string(),
        "nodev".to_string(),
    ];
    if read_only {
        options.push("ro".into());
    }
    oci_spec::runtime::MountBuilder::default()
        .destination(PathBuf::from(destination))
        .typ("bind")
        .source(source.to_path_buf())
        .options(options)
        .build()
}

/// Writes `config.json` into `bundle`.
pub fn write(spec: &Spec, bundle: &Path) -> Result<(), SpecError> {
    let path = bundle.join("config.json");
    spec.save(&path).map_err(|source| SpecError::Write {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SpecInput {
        SpecInput {
            rootfs: "/r".into(),
            args: vec!["/bin/sh".into()],
            cwd: "/".into(),
            hostname: "h".into(),
            cgroups_path: "/berth/x".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_default_spec_has_podmans_capabilities_and_its_own_netns() {
        let spec = build(&input()).unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(
            caps.bounding().as_ref().unwrap().len(),
            DEFAULT_CAPABILITIES.len()
        );
        let namespaces = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(namespaces
            .iter()
            .any(|ns| ns.typ() == LinuxNamespaceType::Network));
    }

    #[test]
    fn host_network_drops_the_network_namespace() {
        let spec = build(&SpecInput {
            host_network: true,
            ..input()
        })
        .unwrap();
        let namespaces = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(!namespaces
            .iter()
            .any(|ns| ns.typ() == LinuxNamespaceType::Network));
    }

    #[test]
    fn capabilities_can_be_added_and_dropped_by_either_spelling() {
        let set = capability_set(false, &["CAP_NET_ADMIN".into()], &["chown".into()]).unwrap();
        assert!(set.contains(&Capability::NetAdmin));
        assert!(!set.contains(&Capability::Chown));
        assert!(capability_set(false, &["BOGUS".into()], &[]).is_err());
        assert!(capability_set(false, &[], &["ALL".into()])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn init_runs_first_and_is_mounted_read_only() {
        let spec = build(&SpecInput {
            init_binary: Some("/usr/bin/catatonit".into()),
            ..input()
        })
        .unwrap();
        let args = spec.process().as_ref().unwrap().args().clone().unwrap();
        assert_eq!(args, vec![INIT_PATH_IN_CONTAINER, "--", "/bin/sh"]);
        let mounts = spec.mounts().clone().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.destination() == Path::new(INIT_PATH_IN_CONTAINER)));
    }

    #[test]
    fn nofile_never_exceeds_the_hard_limit() {
        let spec = build(&input()).unwrap();
        let rlimits = spec.process().as_ref().unwrap().rlimits().clone().unwrap();
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert!(rlimits
            .iter()
            .all(|r| r.hard() <= hard && r.soft() <= r.hard()));
    }

    #[test]
    fn cpus_become_a_quota_over_a_100ms_period() {
        let spec = build(&SpecInput {
            cpu_quota: Some(1.5),
            ..input()
        })
        .unwrap();
        let cpu = spec
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .cpu()
            .clone()
            .unwrap();
        assert_eq!(cpu.quota(), Some(150_000));
        assert_eq!(cpu.period(), Some(100_000));
    }
}
