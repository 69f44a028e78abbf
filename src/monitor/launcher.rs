//! berthd's side of starting a monitor: the `MonitorLauncher` seam and its real process form.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::control::{self, ControlError, Reply, Request};
use super::process::{MonitorOptions, RestoreArgs};
use super::protocol::StartReport;
use crate::runtime::RuncCommand;

/// The monitor's ends of an attached client's streams (pipes whose other ends the client has).
#[derive(Debug)]
pub struct AttachEnds {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub stdin: Option<OwnedFd>,
}

/// What a monitor needs to create one container: the engine's part of the monitor's
/// command line ([`MonitorOptions`]; the launcher adds the runtime and the bus).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LaunchRequest {
    /// The container's id (also how berthd finds a monitor it has no record of).
    #[arg(long)]
    pub id: String,
    /// Holds `config.json`; also the monitor's working directory.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Where the monitor records the container's exit.
    #[arg(long)]
    pub exit_file: PathBuf,
    /// The k8s-file log; none for `LogDriver none`.
    #[arg(long = "log")]
    pub log_path: Option<PathBuf>,
    /// A cgroup file with an `oom_kill N` line (v1 `memory.oom_control`, v2 `memory.events`).
    #[arg(long)]
    pub oom_file: Option<PathBuf>,
    /// Also start the process (`runc run --detach` instead of `runc create`).
    #[arg(long)]
    pub start: bool,
    /// The process has a terminal (runc hands its pty master over a console socket).
    #[arg(long)]
    pub terminal: bool,
    /// Its stdin stays open for attached clients (`Stdin`).
    #[arg(long)]
    pub stdin: bool,
    /// Restore from a checkpoint instead of creating (`runc restore --detach`).
    #[command(flatten)]
    pub restore: Option<RestoreArgs>,
}

impl LaunchRequest {
    /// The options clap parses back into this value.
    pub fn to_args(&self) -> Vec<OsString> {
        let LaunchRequest {
            id,
            bundle,
            exit_file,
            log_path,
            oom_file,
            start,
            terminal,
            stdin,
            restore,
        } = self;
        let mut args: Vec<OsString> = vec![
            "--id".into(),
            id.into(),
            "--bundle".into(),
            bundle.into(),
            "--exit-file".into(),
            exit_file.into(),
        ];
        if let Some(log) = log_path {
            args.extend(["--log".into(), log.into()]);
        }
        if let Some(oom) = oom_file {
            args.extend(["--oom-file".into(), oom.into()]);
        }
        for (set, flag) in [
            (start, "--start"),
            (terminal, "--terminal"),
            (stdin, "--stdin"),
        ] {
            if *set {
                args.push(flag.into());
            }
        }
        if let Some(restore) = restore {
            args.extend(restore.to_args());
        }
        args
    }
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
    /// says `start`); returns once the container exists or creating it failed. `attach` is a
    /// client attached before the process runs (`StartAndAttach`).
    fn launch(
        &self,
        request: &LaunchRequest,
        attach: Option<AttachEnds>,
    ) -> Result<Launched, LaunchError>;

    /// Whether `monitor_pid` is still the monitor of container `id` (pids are reused).
    fn is_alive(&self, monitor_pid: u32, id: &str) -> bool;

    /// The pid of a live monitor of container `id`, found without a record of it (a run
    /// berthd started but died before recording).
    fn find(&self, _id: &str) -> Option<u32> {
        None
    }

    /// Every live monitor, by the id of its container, from one look at the processes:
    /// start-up recovery asks about every container at once.
    fn find_all(&self) -> HashMap<String, u32> {
        HashMap::new()
    }

    /// A pidfd on the monitor of container `id` (readable once it exits), or `None` when it is
    /// already gone or cannot be watched. A monitor is not berthd's child (it forks away), so
    /// a pidfd is how its death is learned at once.
    fn watch(&self, _monitor_pid: u32, _id: &str) -> Option<OwnedFd> {
        None
    }

    /// Writes the tree at `root` as a tar into `destination`, from a process chrooted into
    /// `root`, so no symlink in it can lead the walk out.
    fn export(&self, root: &Path, destination: std::fs::File) -> Result<(), LaunchError>;

    /// Sends a request to the running monitor of the container whose bundle is `bundle`.
    fn control(
        &self,
        bundle: &Path,
        request: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Reply, Vec<OwnedFd>), ControlError>;
}

/// Runs the `berth-monitor` binary.
pub struct ProcessLauncher {
    pub monitor_binary: PathBuf,
    /// The runtime the monitors run. With its systemd cgroup driver (systemd is PID 1), each
    /// monitor also starts in a transient scope of its own in `machine.slice`
    /// (`systemd-run --scope`, a `StartTransientUnit` before the monitor runs): stopping
    /// berthd's unit then never touches a container.
    pub runc: RuncCommand,
    /// The bus berthd serves, for the monitors to ping when a container exits.
    pub notify_bus: Option<String>,
}

impl ProcessLauncher {
    /// `berth-monitor`, inside a transient scope when systemd manages the cgroups.
    fn monitor_command(&self, id: &str) -> Command {
        if !self.runc.systemd_cgroup {
            return Command::new(&self.monitor_binary);
        }
        let mut scoped = Command::new("systemd-run");
        scoped
            .args(["--scope", "--quiet", "--collect", "--slice=machine.slice"])
            .arg(format!(
                "--unit=berth-monitor-{}-{}",
                &id[..id.len().min(12)],
                crate::clock::now_micros()
            ))
            .arg(format!("--description=berth monitor of {id}"))
            .arg("--")
            .arg(&self.monitor_binary);
        scoped
    }
}

/// Reads the monitor's start-up report. The first process forks the real monitor and exits;
/// the monitor writes one report line and closes its stdout, so reading to the end never
/// waits on the container.
fn read_report(mut child: std::process::Child, program: &str) -> Result<Launched, LaunchError> {
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_string(&mut output)
            .map_err(|source| LaunchError::Spawn {
                program: program.to_string(),
                source,
            })?;
    }
    let _ = child.wait();
    let line = output.lines().last().unwrap_or("");
    match serde_json::from_str::<StartReport>(line) {
        Ok(StartReport::Created { pid, monitor_pid }) => Ok(Launched { pid, monitor_pid }),
        Ok(StartReport::Failed { error }) => Err(LaunchError::Create(error)),
        Err(_) => Err(LaunchError::Create(format!(
            "monitor {program} gave no report (output {output:?})"
        ))),
    }
}

impl MonitorLauncher for ProcessLauncher {
    fn launch(
        &self,
        request: &LaunchRequest,
        attach: Option<AttachEnds>,
    ) -> Result<Launched, LaunchError> {
        let program = self.monitor_binary.display().to_string();
        let started = std::time::Instant::now();
        let options = MonitorOptions {
            runc: self.runc.clone(),
            request: request.clone(),
            attach: attach.is_some(),
            attach_stdin: attach.as_ref().is_some_and(|ends| ends.stdin.is_some()),
            notify_bus: self.notify_bus.clone(),
        };
        let mut command = self.monitor_command(&request.id);
        command.args(options.to_args());
        if let Some(attach) = &attach {
            let stdin = attach.stdin.as_ref().map_or(-1, |fd| fd.as_raw_fd());
            pass_fds(
                &mut command,
                [attach.stdout.as_raw_fd(), attach.stderr.as_raw_fd(), stdin],
            );
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                program: program.clone(),
                source,
            })?;
        let launched = read_report(child, &program);
        tracing::debug!(id = %request.id, elapsed_us = started.elapsed().as_micros() as u64, "monitor launched");
        launched
    }

    fn is_alive(&self, monitor_pid: u32, id: &str) -> bool {
        process_mentions(monitor_pid, "berth-monitor") && process_mentions(monitor_pid, id)
    }

    fn watch(&self, monitor_pid: u32, id: &str) -> Option<OwnedFd> {
        let pidfd = pidfd_open(monitor_pid)?;
        // Checked after opening: the pidfd then refers to the process seen here, not to a
        // later one that reused the pid.
        self.is_alive(monitor_pid, id).then_some(pidfd)
    }

    fn find(&self, id: &str) -> Option<u32> {
        let wanted = format!("\0--id\0{id}\0");
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|bytes| {
                    let text = String::from_utf8_lossy(&bytes);
                    text.contains("berth-monitor") && text.contains(&wanted)
                })
            })
    }

    fn find_all(&self) -> HashMap<String, u32> {
        let Ok(processes) = std::fs::read_dir("/proc") else {
            return HashMap::new();
        };
        processes
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let text = String::from_utf8_lossy(&bytes);
                if !text.contains("berth-monitor") {
                    return None;
                }
                let mut args = text.split('\0');
                args.find(|arg| *arg == "--id")?;
                Some((args.next()?.to_string(), pid))
            })
            .collect()
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

    fn control(
        &self,
        bundle: &Path,
        request: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Reply, Vec<OwnedFd>), ControlError> {
        control::call(bundle, request, fds)
    }
}

/// Gives the child `sources` as descriptors 3, 4, 5… (the monitor's `--attach` ends).
#[allow(unsafe_code)]
/// A source of -1 is skipped.
fn pass_fds(command: &mut Command, sources: [i32; 3]) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec; it allocates nothing and calls only
    // fcntl and dup2, which are async-signal-safe. Every source is first copied above the
    // targets, so placing one cannot overwrite another; dup2 leaves the targets without
    // close-on-exec, the copies keep it and vanish at exec.
    unsafe {
        command.pre_exec(move || {
            let mut copies = [-1i32; 3];
            for (copy, source) in copies.iter_mut().zip(sources) {
                if source < 0 {
                    continue;
                }
                *copy = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, 10);
                if *copy < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (index, copy) in copies.into_iter().enumerate() {
                if copy >= 0 && libc::dup2(copy, 3 + index as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when process `pid` exits.
#[allow(unsafe_code)]
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = libc::pid_t::try_from(pid).ok().filter(|pid| *pid > 0)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; nothing
    // is borrowed. A non-negative result is a descriptor nobody else owns.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::O_NONBLOCK) };
    if fd < 0 {
        return None;
    }
    // SAFETY: see above: `fd` is new and ours.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether `/proc/<pid>/cmdline` contains `needle`.
pub fn process_mentions(pid: u32, needle: &str) -> bool {
    pid != 0
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|bytes| String::from_utf8_lossy(&bytes).contains(needle))
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn every_live_monitor_is_found_by_its_container_id_in_one_scan() {
        let id = format!("find-all-test-{}", std::process::id());
        // A process whose command line reads as a monitor's (`sh` keeps running itself,
        // as `sleep` is not its last command).
        let mut child = Command::new("sh")
            .arg0("berth-monitor")
            .args(["-c", "sleep 30; true", "--id", &id])
            .spawn()
            .unwrap();
        let launcher = ProcessLauncher {
            monitor_binary: PathBuf::from("berth-monitor"),
            runc: crate::runtime::RuncCommand::new("runc", PathBuf::from("/nonexistent"), false),
            notify_bus: None,
        };
        // Read until it shows (bounded), so a slow exec on a loaded machine is no failure.
        let mut found = None;
        for _ in 0..100 {
            found = launcher.find_all().get(&id).copied();
            if found.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, Some(child.id()));
        assert_eq!(launcher.find_all().get(&id), None);
    }
}
