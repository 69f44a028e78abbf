//! A real systemd booted as PID 1 of private namespaces on an overlay of `/`
//! (tests/systemd-sandbox), for the tests that need systemd; never the host's own root.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const MANAGER: &str = "org.berth.Engine1 /org/berth/Engine1 org.berth.Engine1.Manager";

pub struct Sandbox {
    state: tempfile::TempDir,
}

impl Sandbox {
    /// Boots one, or says why it cannot: not root, or a program it needs (systemd's and
    /// `needs`, as (path, name)) is missing, or systemd does not boot here.
    pub fn boot(needs: &[(&str, &str)]) -> Result<Sandbox, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root".into());
        }
        let base = [
            ("/lib/systemd/systemd", "systemd"),
            ("/usr/bin/unshare", "unshare"),
            ("/usr/bin/nsenter", "nsenter"),
        ];
        for (path, what) in base.iter().chain(needs) {
            if !Path::new(path).exists() {
                return Err(format!("{what} is not installed"));
            }
        }
        let state = tempfile::Builder::new()
            .prefix("berth-systemd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let sandbox = Sandbox { state };
        let output = sandbox.script("start", &[]);
        if !output.status.success() {
            return Err(format!(
                "systemd cannot boot in namespaces here: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(sandbox)
    }

    /// A host directory of the sandbox's own (its state), seen at the same path inside.
    pub fn dir(&self) -> &Path {
        self.state.path()
    }

    fn script(&self, verb: &str, args: &[&str]) -> Output {
        Command::new(super::repo().join("tests/systemd-sandbox"))
            .arg(verb)
            .arg(self.state.path())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a shell command inside; returns (success, stdout, stderr).
    pub fn sh(&self, command: &str) -> (bool, String, String) {
        let output = self.script("exec", &["sh", "-c", command]);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        )
    }

    /// Runs a shell command inside that must succeed; returns its stdout.
    pub fn ok(&self, command: &str) -> String {
        let (success, stdout, stderr) = self.sh(command);
        assert!(success, "{command}: {stdout} {stderr}");
        stdout
    }

    /// As `sh`, as the unprivileged user alice.
    pub fn as_alice(&self, command: &str) -> (bool, String, String) {
        self.sh(&format!(
            "setpriv --reuid=alice --regid=alice --init-groups {command}"
        ))
    }

    /// Waits until `command` prints `expected`, for at most `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, command: &str, expected: &str) {
        let start = Instant::now();
        loop {
            let (_, stdout, _) = self.sh(command);
            if stdout == expected {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{what}: `{command}` said {stdout:?}, not {expected:?}, for {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The object path of a container, by name.
    pub fn container_path(&self, name: &str) -> String {
        let reply = self.ok(&format!("busctl call {MANAGER} GetContainer s {name}"));
        reply.split('"').nth(1).unwrap().to_string()
    }

    /// A property of the container of that name, as busctl prints it.
    pub fn property(&self, container: &str, name: &str) -> String {
        let path = self.container_path(container);
        self.ok(&format!(
            "busctl get-property org.berth.Engine1 {path} org.berth.Engine1.Container {name}"
        ))
    }

    pub fn unit_property(&self, unit: &str, name: &str) -> String {
        self.ok(&format!("systemctl show -P {name} {unit}"))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.script("stop", &[]);
    }
}
