//! Exec sessions in the monitor: `runc exec --detach` runs as the monitor's child, so each
//! session's process is reparented to the monitor, which records its exit status in the
//! session's exit file the moment it is reaped, even before runc has reported its pid.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::control::Reply;
use super::event_loop::{answer, Monitor};
use super::process::{console_listener, read_pid_file, take_console, SESSION_LIMIT};
use super::protocol::{write_exit_file, ExitRecord};
use crate::clock::now_micros;

/// An exec session whose `runc exec --detach` is still running.
pub(super) struct PendingExec {
    pub(super) session: String,
    pub(super) runtime_pid: i32,
    /// The berthd connection waiting for the reply.
    pub(super) connection: OwnedFd,
    pub(super) console: Option<OwnedFd>,
    pub(super) master: Option<OwnedFd>,
    pub(super) exit_file: PathBuf,
}

/// An exec session whose process runs.
pub(super) struct LiveExec {
    pub(super) pid: i32,
    pub(super) master: Option<OwnedFd>,
    /// Someone took the pty master (`OpenPty`).
    pub(super) opened: bool,
    pub(super) exit_file: PathBuf,
}

impl Monitor<'_> {
    /// `runc exec --detach` has exited with `code`: reply to berthd with the session's pid or
    /// the runtime's error.
    pub(super) fn exec_started(&mut self, mut pending: PendingExec, code: i32) {
        let name = pending.session.clone();
        let reply = if code == 0 {
            match read_pid_file(Path::new(&format!("exec-{name}.pid"))) {
                Ok(pid) => {
                    if pending.master.is_none() {
                        if let Some(console) = &pending.console {
                            pending.master = take_console(console).ok().flatten();
                        }
                    }
                    let live = LiveExec {
                        pid,
                        master: pending.master.take(),
                        opened: false,
                        exit_file: pending.exit_file.clone(),
                    };
                    self.live_execs.insert(name.clone(), live);
                    Reply::ExecStarted { pid: pid as u32 }
                }
                Err(error) => Reply::ExecFailed { error },
            }
        } else {
            Reply::ExecFailed {
                error: runtime_log_error(Path::new(&format!("exec-{name}.log"))).unwrap_or_else(
                    || format!("{} exec exited with {code}", self.options.runc.program),
                ),
            }
        };
        answer(&pending.connection, &reply, None);
        for file in ["pid", "log", "json"] {
            let _ = std::fs::remove_file(format!("exec-{name}.{file}"));
        }
        let _ = std::fs::remove_file(format!("exec-{name}.sock"));
        if let Reply::ExecStarted { pid } = reply {
            // The process may have died before runc reported it.
            if let Some(code) = self.orphans.remove(&(pid as i32)) {
                self.session_exited(&name, code);
            }
        }
    }

    /// Records a session's exit in its exit file (berthd's watch picks it up).
    pub(super) fn session_exited(&mut self, session: &str, code: i32) {
        if let Some(mut live) = self.live_execs.remove(session) {
            if let (Some(master), false) = (live.master.take(), live.opened) {
                self.unopened_ptys.insert(session.to_string(), master);
            }
            let record = ExitRecord {
                pid: live.pid as u32,
                exit_code: code,
                exited_at: now_micros(),
                oom_killed: false,
                checkpointed: false,
            };
            let _ = write_exit_file(&live.exit_file, &record);
        }
    }

    /// Starts `runc exec --detach` for a session; the reply is sent when runc exits.
    pub(super) fn exec(
        &mut self,
        session: &str,
        process: &Path,
        terminal: bool,
        exit_file: PathBuf,
        fds: Vec<OwnedFd>,
        connection: OwnedFd,
    ) -> Result<(), (OwnedFd, String)> {
        let valid = !session.is_empty() && session.bytes().all(|b| b.is_ascii_alphanumeric());
        if self.exit_code.is_some() {
            answer(&connection, &Reply::NotRunning, None);
            return Ok(());
        }
        if !valid {
            return Err((connection, format!("bad session id {session:?}")));
        }
        let socket = terminal.then(|| PathBuf::from(format!("exec-{session}.sock")));
        let mut command = self.options.runc.exec_detached(
            &self.options.request.id,
            process,
            Path::new(&format!("exec-{session}.pid")),
            Path::new(&format!("exec-{session}.log")),
            socket.as_deref(),
        );
        let console = if let Some(socket) = &socket {
            let listener = match console_listener(socket) {
                Ok(listener) => listener,
                Err(error) => return Err((connection, error)),
            };
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            Some(listener)
        } else {
            let mut fds = fds.into_iter();
            match (fds.next(), fds.next(), fds.next()) {
                (Some(stdin), Some(stdout), Some(stderr)) => {
                    command
                        .stdin(Stdio::from(stdin))
                        .stdout(Stdio::from(stdout))
                        .stderr(Stdio::from(stderr));
                }
                _ => return Err((connection, "exec needs stdin, stdout and stderr".into())),
            }
            None
        };
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                return Err((
                    connection,
                    format!("cannot run {}: {error}", self.options.runc.program),
                ))
            }
        };
        // Reaped by `reap` through SIGCHLD like every other child.
        let runtime_pid = child.id() as i32;
        drop(child);
        self.pending_execs.push(PendingExec {
            session: session.to_string(),
            runtime_pid,
            connection,
            console,
            master: None,
            exit_file,
        });
        Ok(())
    }

    /// After the container's init is gone the kernel kills every session; wait (bounded) for
    /// them and for `runc exec`s still running, so each session's exit is on record before
    /// the container's.
    pub(super) fn end_sessions(&mut self) {
        let deadline = Instant::now() + SESSION_LIMIT;
        while !(self.live_execs.is_empty() && self.pending_execs.is_empty()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut fds = [PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            let timeout =
                PollTimeout::try_from(left.as_millis() as i32).unwrap_or(PollTimeout::ZERO);
            let _ = poll(&mut fds, timeout);
            while let Ok(Some(_)) = self.signals.read_signal() {}
            self.reap();
        }
        for pending in std::mem::take(&mut self.pending_execs) {
            answer(&pending.connection, &Reply::NotRunning, None);
        }
        // Sessions that outlived the limit: their exits are unknown.
        let sessions: Vec<String> = self.live_execs.keys().cloned().collect();
        for session in sessions {
            self.session_exited(&session, -1);
        }
    }
}

/// The last error runc wrote into its JSON `--log`.
fn runtime_log_error(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().rev().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        (value.get("level")?.as_str()? == "error")
            .then(|| value.get("msg")?.as_str().map(str::to_string))
            .flatten()
    })
}
