//! berthd's side of starting a monitor: the `MonitorLauncher` seam and its real process form.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::protocol::StartReport;

/// What a monitor needs to create one container.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub id: String,
    /// Holds `config.json`; also the monitor's working directory.
    pub bundle: PathBuf,
    pub exit_file: PathBuf,
    pub log_path: Option<PathBuf>,
    pub oom_file: Option<PathBuf>,
    /// Also start the process (`runc run --detach` instead of `runc create`).
    pub start: bool,
}

/// A container created in the runtime, with the monitor that watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launched {
    pub pid: u32,
    pub monitor_pid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start the monitor {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// The monitor ran; creating the container failed (the text carries runc's stderr).
    #[error("{0}")]
    Create(String),
}

/// Starts monitors and tells whether one is still alive.
pub trait MonitorLauncher: Send + Sync {
    /// Starts a monitor that runs the runtime's `create` (or `run --detach` when the request
    /// says `start`); returns once the container exists or creating it failed.
    fn launch(&self, request: &LaunchRequest) -> Result<Launched, LaunchError>;

    /// Whether `monitor_pid` is still the monitor of container `id` (pids are reused).
    fn is_alive(&self, monitor_pid: u32, id: &str) -> bool;

    /// Writes the tree at `root` as a tar into `destination`, from a process chrooted into
    /// `root`, so no symlink in it can lead the walk out.
    fn export(&self, root: &Path, destination: std::fs::File) -> Result<(), LaunchError>;
}

/// Runs the `berth-monitor` binary.
pub struct ProcessLauncher {
    pub monitor_binary: PathBuf,
    pub runtime: String,
    pub runtime_root: PathBuf,
}

impl MonitorLauncher for ProcessLauncher {
    fn launch(&self, request: &LaunchRequest) -> Result<Launched, LaunchError> {
        let program = self.monitor_binary.display().to_string();
        let started = std::time::Instant::now();
        let mut command = Command::new(&self.monitor_binary);
        command
            .arg("--id")
            .arg(&request.id)
            .arg("--runtime")
            .arg(&self.runtime)
            .arg("--runtime-root")
            .arg(&self.runtime_root)
            .arg("--bundle")
            .arg(&request.bundle)
            .arg("--exit-file")
            .arg(&request.exit_file);
        if let Some(log) = &request.log_path {
            command.arg("--log").arg(log);
        }
        if let Some(oom) = &request.oom_file {
            command.arg("--oom-file").arg(oom);
        }
        if request.start {
            command.arg("--start");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                program: program.clone(),
                source,
            })?;
        // The first process forks the real monitor and exits; the monitor writes one report
        // line and closes its stdout, so reading to the end never waits on the container.
        let mut output = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout
                .read_to_string(&mut output)
                .map_err(|source| LaunchError::Spawn {
                    program: program.clone(),
                    source,
                })?;
        }
        let _ = child.wait();
        tracing::debug!(id = %request.id, elapsed_us = started.elapsed().as_micros() as u64, "monitor launched");
        let line = output.lines().last().unwrap_or("");
        match serde_json::from_str::<StartReport>(line) {
            Ok(StartReport::Created { pid, monitor_pid }) => Ok(Launched { pid, monitor_pid }),
            Ok(StartReport::Failed { error }) => Err(LaunchError::Create(error)),
            Err(_) => Err(LaunchError::Create(format!(
                "monitor {program} gave no report (output {output:?})"
            ))),
        }
    }

    fn is_alive(&self, monitor_pid: u32, id: &str) -> bool {
        process_mentions(monitor_pid, "berth-monitor") && process_mentions(monitor_pid, id)
    }

    fn export(&self, root: &Path, destination: std::fs::File) -> Result<(), LaunchError> {
        let program = self.monitor_binary.display().to_string();
        let output = Command::new(&self.monitor_binary)
            .arg("export")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(destination))
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| LaunchError::Spawn { program, source })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(LaunchError::Create(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ))
        }
    }
}

/// Whether `/proc/<pid>/cmdline` contains `needle`.
pub fn process_mentions(pid: u32, needle: &str) -> bool {
    pid != 0
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|bytes| String::from_utf8_lossy(&bytes).contains(needle))
            .unwrap_or(false)
}
