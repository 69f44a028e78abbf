//! The monitor's sidecar: one small process per container with `Notify` or health checks,
//! started by the monitor (so it lives in the monitor's scope and outlives berthd). It
//! relays the container's `sd_notify` datagrams (`READY=1`, `STATUS=…`) and runs the health
//! checks (`runc exec`) on their schedule, and writes what it learned to a state file that
//! berthd follows with inotify — also after a restart or an idle exit, in order.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

use crate::clock::now_micros;
use crate::runtime::RuncCommand;

/// The sidecar's configuration, written by berthd into the bundle.
pub const CONFIG_FILE: &str = "sidecar.json";
/// The directory bind-mounted into the container at [`NOTIFY_DIR_IN_CONTAINER`].
pub const NOTIFY_DIR: &str = "notify";
/// Where the container finds its notify socket (podman's path).
pub const NOTIFY_DIR_IN_CONTAINER: &str = "/run/notify";
pub const NOTIFY_SOCKET_NAME: &str = "notify.sock";
/// A datagram that asks for a health check now (`Healthcheck()`); it is not an sd_notify
/// field, so it means nothing to systemd.
pub const RUN_CHECK: &str = "BERTH_HEALTHCHECK=1";
/// Transitions kept in the state file for berthd to catch up on.
const KEPT_TRANSITIONS: usize = 64;

/// A health check as podman configures one (times in microseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    pub command: Vec<String>,
    /// 0 = no scheduled checks (podman's `--health-interval disable`).
    pub interval: u64,
    pub timeout: u64,
    pub retries: u32,
    pub start_period: u64,
}

impl HealthConfig {
    /// podman's defaults: every 30 s, 30 s timeout, 3 retries, no start period.
    pub fn new(command: Vec<String>) -> HealthConfig {
        HealthConfig {
            command,
            interval: 30_000_000,
            timeout: 30_000_000,
            retries: 3,
            start_period: 0,
        }
    }
}

/// What berthd tells the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarConfig {
    pub notify: bool,
    pub health: Option<HealthConfig>,
    /// Where to write [`SidecarState`] (atomically: a dot-file, then a rename).
    pub state_file: PathBuf,
}

/// A change of the health status, with the check that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthTransition {
    /// Microseconds since the epoch; strictly increasing within a sidecar's life.
    pub at: u64,
    pub status: String,
    pub failing_streak: u32,
    pub exit_code: i32,
    pub output: String,
}

/// What the sidecar knows, rewritten whole on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarState {
    pub ready: bool,
    pub status_text: String,
    /// `""`, `starting`, `healthy`, `unhealthy`.
    pub health: String,
    pub failing_streak: u32,
    /// Checks run so far (`Healthcheck()` waits for this to move).
    pub checks: u64,
    /// The exit code of the last check (-1: timed out).
    #[serde(default)]
    pub last_exit_code: i32,
    pub transitions: Vec<HealthTransition>,
}

impl SidecarState {
    /// Reads a state file; `None` when there is none (yet).
    pub fn read(path: &Path) -> Option<SidecarState> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    fn write(&self, path: &Path) {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
        let temporary = dir.join(format!(".{name}.tmp"));
        let written = serde_json::to_vec(self)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, path));
        if let Err(error) = written {
            eprintln!("berth-monitor sidecar: write {}: {error}", path.display());
        }
    }

    /// Applies one sd_notify datagram; true when something changed. Returns whether it
    /// asked for a health check.
    fn apply_notify(&mut self, message: &str) -> (bool, bool) {
        let mut changed = false;
        let mut run_check = false;
        for line in message.lines() {
            if line == "READY=1" && !self.ready {
                self.ready = true;
                changed = true;
            } else if let Some(text) = line.strip_prefix("STATUS=") {
                if self.status_text != text {
                    self.status_text = text.to_string();
                    changed = true;
                }
            } else if line == RUN_CHECK {
                run_check = true;
            }
        }
        (changed, run_check)
    }

    /// Records one check's result by podman's rules: a pass is healthy; failures count
    /// toward `retries` (not during the start period) and then make it unhealthy.
    fn record_check(
        &mut self,
        health: &HealthConfig,
        in_start_period: bool,
        exit_code: i32,
        output: String,
    ) {
        self.checks += 1;
        self.last_exit_code = exit_code;
        let before = (self.health.clone(), self.failing_streak);
        if exit_code == 0 {
            self.health = "healthy".into();
            self.failing_streak = 0;
        } else if !in_start_period {
            self.failing_streak += 1;
            if self.failing_streak >= health.retries.max(1) {
                self.health = "unhealthy".into();
            }
        }
        if before.0 != self.health {
            let last = self.transitions.last().map_or(0, |t| t.at);
            self.transitions.push(HealthTransition {
                at: now_micros().max(last + 1),
                status: self.health.clone(),
                failing_streak: self.failing_streak,
                exit_code,
                output,
            });
            if self.transitions.len() > KEPT_TRANSITIONS {
                self.transitions.remove(0);
            }
        }
    }
}

/// `berth-monitor sidecar ID --runtime … --runtime-root … [--systemd-cgroup]`: the container
/// the sidecar watches and the runtime that runs it (from the monitor's own options).
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(name = "sidecar")]
pub struct SidecarArgs {
    /// The container's id (positional: only the monitor itself has `--id ID` on its
    /// command line, which is how berthd finds a monitor it has no record of).
    pub id: String,
    #[command(flatten)]
    pub runc: RuncCommand,
}

impl SidecarArgs {
    /// The command line clap parses back into this value (after `sidecar`).
    pub fn to_args(&self) -> Vec<OsString> {
        let SidecarArgs { id, runc } = self;
        let mut args = vec![OsString::from(id)];
        args.extend(runc.to_args());
        args
    }

    /// runc's view of the container: `created`, `running`, `paused`, `stopped`, or `None`
    /// when it is gone.
    fn status(&self) -> Option<String> {
        let output = self
            .runc
            .state(&self.id)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let state: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        state["status"].as_str().map(str::to_string)
    }

    /// Runs the check with `runc exec`; a timeout is a failure (exit code -1, as podman).
    fn check(&self, health: &HealthConfig) -> (i32, String) {
        let child = self
            .runc
            .exec(&self.id, &health.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(error) => return (125, format!("cannot run the check: {error}")),
        };
        let deadline = Instant::now() + Duration::from_micros(health.timeout.max(1_000_000));
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return (-1, "the health check timed out".into());
                }
            }
        }
        match child.wait_with_output() {
            Ok(output) => {
                let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stderr));
                text.truncate(4096);
                (output.status.code().unwrap_or(-1), text)
            }
            Err(error) => (125, error.to_string()),
        }
    }
}

/// Called by the monitor in the bundle directory before the container is created: when
/// berthd asked for a sidecar, binds the notify socket and starts `berth-monitor sidecar`
/// with it as stdin. The socket exists before the container can send to it.
pub fn spawn(args: &SidecarArgs) -> Result<(), String> {
    if !Path::new(CONFIG_FILE).exists() {
        return Ok(());
    }
    std::fs::create_dir_all(NOTIFY_DIR).map_err(|e| format!("create {NOTIFY_DIR}: {e}"))?;
    let socket_path = Path::new(NOTIFY_DIR).join(NOTIFY_SOCKET_NAME);
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path)
        .map_err(|e| format!("bind {}: {e}", socket_path.display()))?;
    // Any user inside the container may notify, as with podman's socket.
    let _ = std::fs::set_permissions(
        &socket_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    );
    let binary = std::env::current_exe().map_err(|e| format!("own binary: {e}"))?;
    let mut command = Command::new(binary);
    command
        .arg("sidecar")
        .args(args.to_args())
        .stdin(Stdio::from(OwnedFd::from(socket)))
        .stdout(Stdio::null());
    // Nothing of berthd's pipes may stay open in it: its complaints go to a file.
    match std::fs::File::create("sidecar.log") {
        Ok(log) => command.stderr(Stdio::from(log)),
        Err(_) => command.stderr(Stdio::null()),
    };
    command
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("start the sidecar: {e}"))
}

/// `berth-monitor sidecar …` ([`SidecarArgs`]), in the bundle, with the notify socket as
/// stdin. Runs until the container is gone.
pub fn run(args: SidecarArgs) -> i32 {
    // Ends with the monitor, which ends with the container.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let config: SidecarConfig = match std::fs::read(CONFIG_FILE)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(error) => {
            eprintln!("berth-monitor sidecar: {CONFIG_FILE}: {error}");
            return 1;
        }
    };
    let socket = std::io::stdin().as_fd().try_clone_to_owned().ok();
    Sidecar {
        state: SidecarState {
            health: if config.health.is_some() {
                "starting".into()
            } else {
                String::new()
            },
            ..SidecarState::default()
        },
        config,
        container: args,
        socket: socket.map(UnixDatagram::from),
    }
    .run();
    0
}

struct Sidecar {
    config: SidecarConfig,
    state: SidecarState,
    container: SidecarArgs,
    socket: Option<UnixDatagram>,
}

impl Sidecar {
    fn run(mut self) {
        self.state.write(&self.config.state_file);
        let interval = self
            .config
            .health
            .as_ref()
            .map(|h| Duration::from_micros(h.interval))
            .filter(|i| !i.is_zero());
        // Started when the container is first seen running.
        let mut running_since: Option<Instant> = None;
        let mut next_check = interval.map(|_| Instant::now() + Duration::from_secs(1));
        let mut buffer = vec![0u8; 4096];
        loop {
            let wait = next_check
                .map(|at| at.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            let mut run_check = false;
            if let Some(socket) = &self.socket {
                let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
                let timeout = PollTimeout::try_from(wait.as_millis().min(60_000) as i32)
                    .unwrap_or(PollTimeout::MAX);
                let _ = poll(&mut fds, timeout);
                let mut changed = false;
                while let Ok(length) = recv_nonblocking(socket, &mut buffer) {
                    let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
                    let (c, r) = self.state.apply_notify(&message);
                    changed |= c;
                    run_check |= r;
                }
                if changed {
                    self.state.write(&self.config.state_file);
                }
            } else {
                std::thread::sleep(wait.min(Duration::from_secs(60)));
            }
            let due = next_check.is_some_and(|at| Instant::now() >= at);
            if !(due || run_check) {
                continue;
            }
            if let Some(interval) = interval {
                next_check = Some(Instant::now() + interval);
            }
            let Some(health) = self.config.health.clone() else {
                continue;
            };
            match self.container.status().as_deref() {
                Some("running") => {}
                Some("created") | Some("paused") => continue,
                _ => return,
            }
            let since = *running_since.get_or_insert_with(Instant::now);
            let in_start_period = since.elapsed() < Duration::from_micros(health.start_period);
            let (exit_code, output) = self.container.check(&health);
            if exit_code != 0 && self.container.status().as_deref() != Some("running") {
                // The container went away under the check: not the check's failure.
                return;
            }
            self.state
                .record_check(&health, in_start_period, exit_code, output);
            self.state.write(&self.config.state_file);
        }
    }
}

fn recv_nonblocking(socket: &UnixDatagram, buffer: &mut [u8]) -> std::io::Result<usize> {
    let received = nix::sys::socket::recv(
        socket.as_raw_fd(),
        buffer,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    Ok(received)
}

/// Sends one datagram to a container's sidecar (berthd's `Healthcheck()`). The socket is
/// reached through an open descriptor of its directory: bundle paths can be longer than a
/// socket address allows.
pub fn send(bundle: &Path, message: &str) -> std::io::Result<()> {
    let dir = std::fs::File::open(bundle.join(NOTIFY_DIR))?;
    let socket = UnixDatagram::unbound()?;
    socket.send_to(
        message.as_bytes(),
        format!("/proc/self/fd/{}/{NOTIFY_SOCKET_NAME}", dir.as_raw_fd()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn sidecar_arguments_parse_back_from_their_command_line() {
        for systemd_cgroup in [false, true] {
            let args = SidecarArgs {
                id: "0123abcd".into(),
                runc: RuncCommand::new("crun", "/run/berth/runtime".into(), systemd_cgroup),
            };
            let argv = std::iter::once(OsString::from("sidecar")).chain(args.to_args());
            assert_eq!(SidecarArgs::try_parse_from(argv).unwrap(), args);
        }
    }

    fn health(retries: u32) -> HealthConfig {
        HealthConfig {
            retries,
            ..HealthConfig::new(vec!["true".into()])
        }
    }

    #[test]
    fn failures_turn_unhealthy_after_the_retries_and_a_pass_heals() {
        let mut state = SidecarState {
            health: "starting".into(),
            ..SidecarState::default()
        };
        let config = health(3);
        state.record_check(&config, false, 1, "no".into());
        state.record_check(&config, false, 1, "no".into());
        assert_eq!(
            (state.health.as_str(), state.failing_streak),
            ("starting", 2)
        );
        state.record_check(&config, false, 1, "no".into());
        assert_eq!(
            (state.health.as_str(), state.failing_streak),
            ("unhealthy", 3)
        );
        state.record_check(&config, false, 0, "ok".into());
        assert_eq!(
            (state.health.as_str(), state.failing_streak),
            ("healthy", 0)
        );
        let statuses: Vec<_> = state
            .transitions
            .iter()
            .map(|t| t.status.as_str())
            .collect();
        assert_eq!(statuses, ["unhealthy", "healthy"]);
        assert!(state.transitions[0].at < state.transitions[1].at);
        assert_eq!(state.checks, 4);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let mut state = SidecarState {
            health: "starting".into(),
            ..SidecarState::default()
        };
        state.record_check(&health(1), true, 1, String::new());
        assert_eq!(
            (state.health.as_str(), state.failing_streak),
            ("starting", 0)
        );
        state.record_check(&health(1), true, 0, String::new());
        assert_eq!(state.health, "healthy");
    }

    #[test]
    fn notify_datagrams_set_ready_and_status() {
        let mut state = SidecarState::default();
        assert_eq!(state.apply_notify("STATUS=warming up"), (true, false));
        assert_eq!(state.apply_notify("READY=1\nSTATUS=serving"), (true, false));
        assert!(state.ready);
        assert_eq!(state.status_text, "serving");
        assert_eq!(state.apply_notify("READY=1"), (false, false));
        assert_eq!(state.apply_notify(RUN_CHECK), (false, true));
    }
}
