//! Podman's seccomp profiles (`/usr/share/containers/seccomp.json`, from Debian's
//! `golang-github-containers-common`) turned into the OCI spec's `linux.seccomp`, filtered
//! as containers/common's `setupSeccomp` does: by the native architecture, the container's
//! bounding capabilities and the running kernel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oci_spec::runtime::LinuxSeccomp;
use serde::Deserialize;
use serde_json::{json, Value};

/// Where podman's default profile is installed.
pub const DEFAULT_PROFILE: &str = "/usr/share/containers/seccomp.json";

/// The `SeccompProfile` value that turns the filter off, as podman's
/// `--security-opt seccomp=unconfined`.
pub const UNCONFINED: &str = "unconfined";

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile {path}: {reason}")]
    Profile { path: String, reason: String },
}

/// A profile in podman's format (containers/common `pkg/seccomp/types.go`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Rule>,
    #[serde(default)]
    flags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    name: String,
    #[serde(default)]
    names: Vec<String>,
    action: String,
    #[serde(default)]
    args: Option<Vec<Value>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
    errno_ret: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

/// The machine's architecture as Go names it (the `arches` of a rule) and as libseccomp
/// does (the `archMap`).
fn native_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "x86" => ("386", "SCMP_ARCH_X86"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "arm" => ("arm", "SCMP_ARCH_ARM"),
        "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
        "s390x" => ("s390x", "SCMP_ARCH_S390X"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        other => (other, ""),
    }
}

/// The running kernel's (major, minor).
fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse_version(release.trim())
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// The sub-architectures of the profile that the running kernel cannot run: x32 where the
/// kernel was built without it (`# CONFIG_X86_X32_ABI is not set` in `/proc/config.gz` or
/// `/boot/config-<release>`). runc compiles the filter for every architecture it names, at
/// every start and exec (about a third of the cost with x86_64, x86 and x32); an x32 system
/// call cannot run on such a kernel anyway (it is refused with SIGSYS instead of ENOSYS).
/// Where the configuration cannot be read, nothing is left out.
fn architectures_the_kernel_lacks() -> &'static [&'static str] {
    static LACKS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    LACKS.get_or_init(|| {
        let unset = "# CONFIG_X86_X32_ABI is not set";
        match kernel_config() {
            Some(config) if config.lines().any(|line| line == unset) => vec!["SCMP_ARCH_X32"],
            _ => Vec::new(),
        }
    })
}

/// The running kernel's build configuration, where the system keeps one.
fn kernel_config() -> Option<String> {
    use std::io::Read;
    if let Ok(file) = std::fs::File::open("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some(text);
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()
}

fn kernel_at_least(min: &str, kernel: Option<(u32, u32)>) -> bool {
    match (parse_version(min), kernel) {
        (Some(min), Some(kernel)) => kernel >= min,
        _ => false,
    }
}

/// Reads the profile at `path` and returns the filter for a container whose bounding set is
/// `capabilities` (names as `CAP_CHOWN`).
pub fn load(path: &Path, capabilities: &[String]) -> Result<LinuxSeccomp, SeccompError> {
    let error = |reason: String| SeccompError::Profile {
        path: path.display().to_string(),
        reason,
    };
    let profile = parsed(path).map_err(error)?;
    let kernel = Kernel {
        version: kernel_version(),
        lacks: architectures_the_kernel_lacks(),
    };
    convert(&profile, capabilities, native_arch(), &kernel).map_err(error)
}

/// What the running kernel has, as far as a profile's rules ask.
struct Kernel<'a> {
    /// (major, minor).
    version: Option<(u32, u32)>,
    /// Sub-architectures it cannot run (libseccomp names).
    lacks: &'a [&'a str],
}

/// What identifies one version of a profile file: inode, size, modification time.
type Stamp = (u64, u64, Option<std::time::SystemTime>);

/// The profile at `path`, parsed once and kept while its file stays the same: every create
/// and start asks for it, and podman's is 30 KB of JSON.
fn parsed(path: &Path) -> Result<Arc<Profile>, String> {
    use std::os::unix::fs::MetadataExt;
    static PARSED: Mutex<BTreeMap<PathBuf, (Stamp, Arc<Profile>)>> = Mutex::new(BTreeMap::new());
    let metadata = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let stamp = (metadata.ino(), metadata.len(), metadata.modified().ok());
    let cached = |parsed: &BTreeMap<PathBuf, (Stamp, Arc<Profile>)>| {
        parsed
            .get(path)
            .filter(|(seen, _)| *seen == stamp)
            .map(|(_, profile)| profile.clone())
    };
    if let Some(profile) = cached(&PARSED.lock().unwrap_or_else(|e| e.into_inner())) {
        return Ok(profile);
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let profile: Arc<Profile> = Arc::new(serde_json::from_str(&text).map_err(|e| e.to_string())?);
    PARSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path.to_path_buf(), (stamp, profile.clone()));
    Ok(profile)
}

/// Checks that `path` holds a profile berth can use (at create, so that a bad one is
/// refused then rather than at start).
pub fn check(path: &Path) -> Result<(), SeccompError> {
    load(path, &[]).map(|_| ())
}

/// The profile a container gets: `None` for no filter. `setting` is the `SeccompProfile`
/// spec key; without one, podman's default (none for a privileged container, as podman;
/// none where podman's profile is not installed, which berthd warns about at start-up).
pub fn profile_path(setting: Option<&str>, privileged: bool) -> Option<PathBuf> {
    match setting {
        Some(UNCONFINED) => None,
        Some(path) => Some(PathBuf::from(path)),
        None if privileged => None,
        None => Some(PathBuf::from(DEFAULT_PROFILE)).filter(|path| path.exists()),
    }
}

fn convert(
    profile: &Profile,
    capabilities: &[String],
    (go_arch, seccomp_arch): (&str, &str),
    running: &Kernel<'_>,
) -> Result<LinuxSeccomp, String> {
    let kernel = running.version;
    if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
        return Err("both architectures and archMap are given".into());
    }
    let mut architectures = profile.architectures.clone();
    if let Some(entry) = profile
        .arch_map
        .iter()
        .find(|entry| entry.architecture == seccomp_arch)
    {
        architectures.push(entry.architecture.clone());
        architectures.extend(
            entry
                .sub_architectures
                .iter()
                .filter(|sub| !running.lacks.contains(&sub.as_str()))
                .cloned(),
        );
    }
    let has = |cap: &String| capabilities.contains(cap);
    let mut syscalls = Vec::new();
    for rule in &profile.syscalls {
        let excluded = rule.excludes.arches.iter().any(|a| a == go_arch)
            || rule.excludes.caps.iter().any(has)
            || rule
                .excludes
                .min_kernel
                .as_deref()
                .is_some_and(|min| kernel_at_least(min, kernel));
        let included = (rule.includes.arches.is_empty()
            || rule.includes.arches.iter().any(|a| a == go_arch))
            && rule.includes.caps.iter().all(has)
            && rule
                .includes
                .min_kernel
                .as_deref()
                .is_none_or(|min| kernel_at_least(min, kernel));
        if excluded || !included {
            continue;
        }
        let names = if rule.name.is_empty() {
            rule.names.clone()
        } else {
            vec![rule.name.clone()]
        };
        let mut syscall = json!({ "names": names, "action": rule.action });
        if let Some(errno) = rule.errno_ret {
            syscall["errnoRet"] = json!(errno);
        }
        if let Some(args) = rule.args.as_ref().filter(|args| !args.is_empty()) {
            syscall["args"] = json!(args);
        }
        syscalls.push(syscall);
    }
    let mut seccomp = json!({
        "defaultAction": profile.default_action,
        "architectures": architectures,
        "syscalls": syscalls,
    });
    if let Some(errno) = profile.default_errno_ret {
        seccomp["defaultErrnoRet"] = json!(errno);
    }
    if !profile.flags.is_empty() {
        seccomp["flags"] = json!(profile.flags);
    }
    serde_json::from_value(seccomp).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Arch, LinuxSeccompAction};

    const PROFILE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
        ],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "", "includes": {}, "excludes": {}},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {"caps": ["CAP_SYS_ADMIN"]}, "excludes": {}},
            {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "args": [], "includes": {}, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {"arches": ["amd64"]}, "excludes": {}},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}], "includes": {}, "excludes": {}},
            {"names": ["future"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {"minKernel": "9.9"}, "excludes": {}}
        ]
    }"#;

    fn names(seccomp: &LinuxSeccomp) -> Vec<String> {
        seccomp
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn rules_are_kept_by_architecture_capability_and_kernel() {
        let profile: Profile = serde_json::from_str(PROFILE).unwrap();
        let kernel = Kernel {
            version: Some((6, 1)),
            lacks: &[],
        };
        let seccomp = convert(&profile, &[], ("amd64", "SCMP_ARCH_X86_64"), &kernel).unwrap();
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(seccomp.default_errno_ret(), Some(38));
        assert_eq!(
            seccomp.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        assert_eq!(
            names(&seccomp),
            ["read", "write", "bpf", "arch_prctl", "personality"]
        );
        let admin = vec!["CAP_SYS_ADMIN".to_string()];
        let seccomp = convert(&profile, &admin, ("arm64", "SCMP_ARCH_AARCH64"), &kernel).unwrap();
        assert_eq!(names(&seccomp), ["read", "write", "mount", "personality"]);
    }

    #[test]
    fn a_sub_architecture_the_kernel_lacks_is_left_out() {
        let profile: Profile = serde_json::from_str(PROFILE).unwrap();
        let kernel = Kernel {
            version: Some((6, 1)),
            lacks: &["SCMP_ARCH_X32"],
        };
        let seccomp = convert(&profile, &[], ("amd64", "SCMP_ARCH_X86_64"), &kernel).unwrap();
        assert_eq!(
            seccomp.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86]
        );
    }

    #[test]
    fn the_unconfined_setting_and_privilege_turn_the_filter_off() {
        assert_eq!(profile_path(Some(UNCONFINED), false), None);
        assert_eq!(profile_path(None, true), None);
        assert_eq!(
            profile_path(None, false).is_some(),
            Path::new(DEFAULT_PROFILE).exists()
        );
        assert_eq!(
            profile_path(Some("/etc/p.json"), true),
            Some(PathBuf::from("/etc/p.json"))
        );
    }

    #[test]
    fn a_profile_is_parsed_again_only_when_its_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seccomp.json");
        std::fs::write(&path, PROFILE).unwrap();
        let first = parsed(&path).unwrap();
        assert!(Arc::ptr_eq(&first, &parsed(&path).unwrap()));
        let changed = PROFILE.replace("\"defaultErrnoRet\": 38", "\"defaultErrnoRet\": 1");
        std::fs::write(&path, changed).unwrap();
        let seccomp = load(&path, &[]).unwrap();
        assert_eq!(seccomp.default_errno_ret(), Some(1));
        std::fs::write(&path, "not json").unwrap();
        assert!(load(&path, &[]).is_err());
    }

    #[test]
    fn kernel_versions_compare_by_major_then_minor() {
        assert_eq!(parse_version("6.18.44-fc-v595"), Some((6, 18)));
        assert!(kernel_at_least("5.8", Some((6, 1))));
        assert!(!kernel_at_least("6.2", Some((6, 1))));
    }
}
