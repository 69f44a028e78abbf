//! End-to-end harness: a private dbus-daemon with the shipped policy, a real berthd on it,
//! real runc, and a busybox rootfs, all under one temporary directory that is cleaned up
//! (containers removed, processes killed by pid, mounts checked) when the harness drops.
#![allow(dead_code)]

pub mod sandbox;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth::cli::proxy::{ContainerProxy, ExecSessionProxy, ManagerProxy};

pub const BERTHD: &str = env!("CARGO_BIN_EXE_berthd");
pub const BERTHCTL: &str = env!("CARGO_BIN_EXE_berthctl");
pub const MONITOR: &str = env!("CARGO_BIN_EXE_berth-monitor");

/// The repository's top directory.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why end-to-end tests cannot run here, if they cannot.
pub fn missing_requirement() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    for program in ["runc", "dbus-daemon", "busybox", "busctl"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {program}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{program} is not installed"));
        }
    }
    None
}

/// Returns a harness, or prints why the test is skipped and returns None. With
/// `BERTH_E2E=1` (set by `scripts/test` in CI and as root) a test that cannot run fails
/// instead of passing as skipped.
pub fn harness(test: &str) -> Option<Harness> {
    if let Some(reason) = missing_requirement() {
        skip(test, &reason);
        return None;
    }
    Some(Harness::new())
}

/// Says why `test` is skipped, or fails it when `BERTH_E2E=1` requires end-to-end tests to run.
pub fn skip(test: &str, reason: &str) {
    if std::env::var("BERTH_E2E").is_ok_and(|v| v == "1") {
        panic!("{test} cannot run and BERTH_E2E=1 requires it: {reason}");
    }
    eprintln!("SKIP {test}: {reason}");
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub address: String,
    pub rootfs: PathBuf,
    bus: Child,
    berthd: Option<Child>,
}

impl Harness {
    pub fn new() -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-")
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        let status = Command::new(repo().join("scripts/make-busybox-rootfs"))
            .arg(&rootfs)
            .status()
            .unwrap();
        assert!(status.success(), "make-busybox-rootfs failed");
        std::fs::create_dir_all(dir.path().join("services")).unwrap();
        let config = std::fs::read_to_string(repo().join("tests/bus.conf.in"))
            .unwrap()
            .replace("@DIR@", &dir.path().display().to_string())
            .replace(
                "@POLICY@",
                &repo()
                    .join("dbus/org.berth.Engine1.conf")
                    .display()
                    .to_string(),
            );
        std::fs::write(dir.path().join("bus.conf"), config).unwrap();
        let bus = Command::new("dbus-daemon")
            .arg("--nofork")
            .arg(format!(
                "--config-file={}",
                dir.path().join("bus.conf").display()
            ))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let socket = dir.path().join("bus.sock");
        wait_until(Duration::from_secs(5), || socket.exists());
        let address = format!("unix:path={}", socket.display());
        Harness {
            dir,
            address,
            rootfs,
            bus,
            berthd: None,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn runroot(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The berthd command line this harness uses (also for bus activation files).
    pub fn berthd_args(&self) -> Vec<String> {
        vec![
            format!("--bus={}", self.address),
            format!("--root={}", self.root().display()),
            format!("--runroot={}", self.runroot().display()),
            "--log-level=info".into(),
        ]
    }

    /// Starts berthd and waits until it owns its name.
    pub fn start_berthd(&mut self, extra: &[&str]) {
        self.start_berthd_with_env(extra, &[]);
    }

    /// As `start_berthd`, with extra environment variables.
    pub fn start_berthd_with_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))
            .unwrap();
        let child = Command::new(BERTHD)
            .args(self.berthd_args())
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.berthd = Some(child);
        let address = self.address.clone();
        wait_until(Duration::from_secs(10), || name_has_owner(&address));
    }

    /// SIGKILLs berthd (only the one this harness started).
    pub fn kill_berthd(&mut self) {
        if let Some(mut child) = self.berthd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let address = self.address.clone();
        wait_until(Duration::from_secs(5), || !name_has_owner(&address));
    }

    pub fn berthd_pid(&self) -> Option<u32> {
        self.berthd.as_ref().map(|c| c.id())
    }

    pub async fn connection(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .unwrap()
    }

    pub fn busctl(&self, args: &[&str]) -> Output {
        Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args(args)
            .output()
            .unwrap()
    }

    pub fn berthctl(&self, args: &[&str]) -> Output {
        Command::new(BERTHCTL)
            .arg(format!("--bus={}", self.address))
            .args(args)
            .output()
            .unwrap()
    }

    /// `busctl call` on the service; returns stdout, panics with stderr on failure.
    pub fn call(&self, path: &str, interface: &str, method: &str, args: &[&str]) -> String {
        let output = self.try_call(path, interface, method, args);
        assert!(
            output.status.success(),
            "{method} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    pub fn try_call(&self, path: &str, interface: &str, method: &str, args: &[&str]) -> Output {
        let mut all = vec!["--", "call", "org.berth.Engine1", path, interface, method];
        all.extend_from_slice(args);
        self.busctl(&all)
    }

    /// Creates a container from the busybox rootfs running `command`; returns its proxy.
    pub async fn create<'a>(
        &self,
        connection: &zbus::Connection,
        name: &str,
        command: &[&str],
    ) -> ContainerProxy<'a> {
        self.create_with(connection, name, command, Vec::new())
            .await
    }

    pub async fn create_with<'a>(
        &self,
        connection: &zbus::Connection,
        name: &str,
        command: &[&str],
        extra: Vec<(&'static str, zbus::Variant<'static>)>,
    ) -> ContainerProxy<'a> {
        let manager = ManagerProxy::new(connection).await.unwrap();
        let mut spec: std::collections::HashMap<&str, zbus::Variant<'_>> =
            std::collections::HashMap::new();
        spec.insert(
            "Rootfs",
            zbus::Variant::from(self.rootfs.display().to_string()),
        );
        spec.insert("Name", zbus::Variant::from(name.to_string()));
        spec.insert(
            "Command",
            zbus::Variant::from(command.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        );
        spec.extend(extra);
        let path = manager.create_container(spec).await.unwrap();
        proxy_at(connection, path).await
    }

    /// The busybox rootfs as a plain tar (an image archive of the simplest kind).
    pub fn rootfs_tar(&self) -> PathBuf {
        let tar = self.dir.path().join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&self.rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success(), "tar of the rootfs failed");
        tar
    }

    /// Processes whose command line mentions this harness's directory (monitors, berthd).
    pub fn processes_under(&self) -> Vec<u32> {
        let needle = self.dir.path().display().to_string();
        let own = std::process::id();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != own)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Monitors still alive under this harness.
    pub fn monitors(&self) -> Vec<u32> {
        self.processes_under()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("berth-monitor"))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Mounts under this harness's directory.
    pub fn mounts(&self) -> Vec<String> {
        let needle = self.dir.path().display().to_string();
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Remove every container through the service, so monitors, mounts and cgroups go
        // (starting berthd again if it idled out or a test stopped it).
        if self.berthd.is_some() && !name_has_owner(&self.address) {
            self.start_berthd(&[]);
        }
        if self.berthd.is_some() {
            let listing = self.berthctl(&["ps", "-q"]);
            for id in String::from_utf8_lossy(&listing.stdout).lines() {
                let _ = self.berthctl(&["rm", "-f", id]);
            }
            self.kill_berthd();
        }
        // Anything left (a test that failed midway): kill what we started, by pid.
        for pid in self.processes_under() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let runtime_root = self.runroot().join("runtime");
        if let Ok(entries) = std::fs::read_dir(&runtime_root) {
            for entry in entries.flatten() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runtime_root)
                    .args(["delete", "--force"])
                    .arg(entry.file_name())
                    .output();
            }
        }
        for line in self.mounts() {
            if let Some(target) = line.split(' ').nth(1) {
                let _ = nix::mount::umount2(Path::new(target), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

pub fn name_has_owner(address: &str) -> bool {
    Command::new("busctl")
        .arg(format!("--address={address}"))
        .args([
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            "s",
            "org.berth.Engine1",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("true"))
        .unwrap_or(false)
}

/// Waits (bounded) for a condition that an event makes true; panics on timeout.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An uncached proxy of a container by name.
pub async fn container_proxy<'a>(connection: &zbus::Connection, name: &str) -> ContainerProxy<'a> {
    let manager = ManagerProxy::new(connection).await.unwrap();
    let path = manager.get_container(name).await.unwrap();
    proxy_at(connection, path).await
}

/// An uncached proxy of the container at `path`: every property read asks berthd, so a test
/// sees the state as of its read.
pub async fn proxy_at<'a>(
    connection: &zbus::Connection,
    path: zbus::OwnedObjectPath,
) -> ContainerProxy<'a> {
    ContainerProxy::builder(connection)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

/// An uncached proxy of the exec session at `path`.
pub async fn session_proxy<'a>(
    connection: &zbus::Connection,
    path: zbus::OwnedObjectPath,
) -> ExecSessionProxy<'a> {
    ExecSessionProxy::builder(connection)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

/// The D-Bus error name of a failed call.
pub fn error_name(error: &zbus::Error) -> String {
    match error {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        zbus::Error::FDO(error) => zbus::DBusError::name(error.as_ref()).to_string(),
        other => format!("{other:?}"),
    }
}

/// Asserts that `dbus/<interface>.xml` equals the live introspection of the object at
/// `path`; with `BERTH_UPDATE_XML=1` the file is rewritten from the live interface first.
pub fn assert_shipped_introspection(h: &Harness, path: &str, interface: &str) {
    let live = h.busctl(&["introspect", "--xml-interface", "org.berth.Engine1", path]);
    let live = interface_element(&String::from_utf8(live.stdout).unwrap(), interface);
    let file = repo().join(format!("dbus/{interface}.xml"));
    if std::env::var_os("BERTH_UPDATE_XML").is_some() {
        let document = format!(
            "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n{}\n</node>\n",
            indent_element(&live)
        );
        std::fs::write(&file, document).unwrap();
    }
    let shipped =
        std::fs::read_to_string(&file).unwrap_or_else(|_| panic!("{} is missing", file.display()));
    assert_eq!(
        interface_element(&shipped, interface),
        live,
        "{} is stale: run with BERTH_UPDATE_XML=1",
        file.display()
    );
}

/// The `<interface name="…">…</interface>` element of an introspection document, each line
/// trimmed.
fn interface_element(xml: &str, name: &str) -> String {
    let start = xml
        .find(&format!("<interface name=\"{name}\">"))
        .unwrap_or_else(|| panic!("no {name} in {xml}"));
    let end = start + xml[start..].find("</interface>").unwrap() + "</interface>".len();
    xml[start..end]
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Re-indents a trimmed element for the shipped file (depth from its tags).
fn indent_element(element: &str) -> String {
    let mut depth = 1usize;
    let mut out = Vec::new();
    let mut in_comment = false;
    for line in element.lines() {
        let closing = line.starts_with("</");
        if closing {
            depth = depth.saturating_sub(1);
        }
        out.push(format!(
            "{}{}",
            "  ".repeat(depth + usize::from(in_comment && !line.starts_with("-->"))),
            line
        ));
        if line.starts_with("<!--") {
            in_comment = !line.ends_with("-->");
        } else if line.starts_with("-->") {
            in_comment = false;
        } else if !closing && line.starts_with('<') && !line.ends_with("/>") && !line.contains("</")
        {
            depth += 1;
        }
    }
    out.join("\n")
}
