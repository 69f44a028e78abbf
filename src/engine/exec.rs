//! Exec sessions: a process run inside a running container by its monitor.
//!
//! The monitor runs `runc exec --detach` as its own child, so the session's process is
//! reparented to it and its exit status lands in an exit file (`exits/<id>.<session>`) the
//! moment it exits, whatever berthd is doing. That is what makes exec exit codes impossible
//! to lose, even for sessions that end before runc has reported their pid. Sessions live in
//! the container's status (one transaction with their `exec`/`exec_died` events) until
//! removed.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::state::ExecSession;
use super::{
    blocking, control, event, Caller, ContainerConfig, ContainerStatus, Engine, EngineError,
};
use super::{Locked, NewEvent, Result, Verb};
use crate::clock::now_micros;
use crate::monitor::control::{Reply, Request};
use crate::monitor::protocol::{read_exit_file, ExitRecord};
use crate::runtime::signal::parse_signal;
use crate::storage::users;

/// What `Exec` asks for: the command and its options (the Container interface's `Exec` in
/// `dbus/org.berth.Engine1.Container.xml`).
#[derive(Debug, Default)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// `K=V`, over the container's environment.
    pub env: Vec<String>,
    /// Name or uid[:gid], looked up inside the container.
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub terminal: bool,
    /// Window size (rows, cols) of the terminal at start.
    pub console_size: Option<(u16, u16)>,
    pub privileged: bool,
    /// The process's stdin, stdout and stderr; `None` is /dev/null. Unused with a terminal.
    pub stdio: [Option<OwnedFd>; 3],
}

/// The exit status `podman exec` gives when the runtime could not run the command.
fn exit_code_of_failure(error: &str) -> Option<i32> {
    let error = error.to_ascii_lowercase();
    if error.contains("executable file not found") || error.contains("no such file or directory") {
        Some(127)
    } else if error.contains("permission denied") {
        Some(126)
    } else {
        None
    }
}

fn new_session_id() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Engine {
    /// Starts a session; returns its id once its process runs (or has already failed to: a
    /// command not found is a session with exit code 127, as podman reports it).
    pub async fn exec(&self, caller: Caller, id: &str, request: ExecRequest) -> Result<String> {
        if request.command.is_empty() || request.command[0].is_empty() {
            return Err(EngineError::InvalidArgument(
                "Exec: the command is empty".into(),
            ));
        }
        let locked = self.inner().lock(id).await?;
        locked.check(Verb::Exec)?;
        let session = new_session_id();
        let paths = locked.paths();
        let mut request = request;
        // The descriptors go to the monitor; the rest makes the session's process file.
        let stdio = std::mem::take(&mut request.stdio);
        let (command, terminal) = (request.command.clone(), request.terminal);
        let process_file = prepare_process(&locked, &session, request).await?;
        let request = Request::Exec {
            session: session.clone(),
            process: process_file.clone(),
            terminal,
            exit_file: paths.exec_exit_file(&session),
        };
        let fds = move || {
            if terminal {
                return Vec::new();
            }
            stdio
                .into_iter()
                .map(|fd| fd.or_else(|| open_null().ok()))
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default()
        };
        let reply = control(&locked, request, fds).await;
        crate::failpoint::hit("exec.after-launch");
        let _ = std::fs::remove_file(&process_file);
        let started = now_micros();
        let mut record = ExecSession::starting(command.clone(), terminal, started);
        let exec_event = |config: &ContainerConfig| {
            event(
                "exec",
                config,
                caller,
                &[("execID", session.clone()), ("command", command.join(" "))],
            )
        };
        let mut events = vec![exec_event(locked.config())];
        match reply? {
            Some((Reply::ExecStarted { pid }, _)) => record.pid = pid,
            Some((Reply::ExecFailed { error }, _)) => match exit_code_of_failure(&error) {
                Some(code) => {
                    record.running = false;
                    record.exit_code = code;
                    record.finished_at = started;
                    events.push(exec_died(locked.config(), &session, code));
                }
                None => return Err(EngineError::Runtime(error)),
            },
            Some((Reply::NotRunning, _)) | None => return Err(locked.refused(Verb::Exec)),
            Some((other, _)) => {
                return Err(EngineError::Runtime(format!(
                    "unexpected monitor reply {other:?}"
                )))
            }
        }
        let running = record.running;
        let mut status = locked.status();
        status.exec_sessions.insert(session.clone(), record);
        if let Err(error) = locked.commit(status, events).await {
            if running {
                abandon_session(&locked, &session).await;
            }
            return Err(error);
        }
        Ok(session)
    }

    /// A session's record.
    pub fn exec_session(&self, id: &str, session: &str) -> Result<ExecSession> {
        self.status(id)?
            .exec_sessions
            .get(session)
            .cloned()
            .ok_or_else(|| EngineError::NoSuchExecSession(session.to_string()))
    }

    /// Replies with the session's exit code once it has exited (event-driven, no lock).
    pub async fn exec_wait(&self, id: &str, session: &str) -> Result<i32> {
        let entry = self.inner().entry(id)?;
        let mut receiver = entry.status.subscribe();
        let mut result = None;
        let _ = receiver
            .wait_for(|status| match status.exec_sessions.get(session) {
                None => {
                    result = Some(Err(EngineError::NoSuchExecSession(session.to_string())));
                    true
                }
                Some(record) if !record.running => {
                    result = Some(Ok(record.exit_code));
                    true
                }
                Some(_) => false,
            })
            .await;
        result.unwrap_or_else(|| Err(EngineError::NoSuchExecSession(session.to_string())))
    }

    /// Records a session's exit file (the exit watcher calls this).
    pub(crate) async fn handle_exec_exit(&self, id: &str, session: &str) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        let mut status = locked.status();
        if !status.exec_sessions.contains_key(session) {
            // A session whose Exec failed after the monitor started it (a lost reply): no
            // record to update, and its exit file must not linger.
            let path = locked.paths().exec_exit_file(session);
            return blocking(move || {
                let _ = std::fs::remove_file(path);
                Ok(())
            })
            .await;
        }
        let events = apply_exec_exits(&locked, &mut status, Some(session)).await?;
        if !events.is_empty() {
            locked.commit(status, events).await?;
        }
        Ok(())
    }

    /// The pty master of a terminal session. A session that ended before anyone opened
    /// it still gives it once, with its output inside.
    pub async fn exec_open_pty(&self, id: &str, session: &str) -> Result<OwnedFd> {
        let locked = self.inner().lock(id).await?;
        match locked.status().exec_sessions.get(session) {
            None => return Err(EngineError::NoSuchExecSession(session.to_string())),
            Some(record) if !record.terminal => {
                return Err(EngineError::InvalidArgument(format!(
                    "exec session {session} has no terminal"
                )))
            }
            Some(_) => {}
        }
        let request = Request::OpenPty {
            session: session.to_string(),
        };
        match control(&locked, request, Vec::new).await {
            Ok(Some((Reply::Ok, mut fds))) if !fds.is_empty() => Ok(fds.swap_remove(0)),
            Ok(_) | Err(EngineError::Runtime(_)) => Err(EngineError::InvalidArgument(format!(
                "the terminal of exec session {session} is gone (opened already, or its \
                 container stopped)"
            ))),
            Err(error) => Err(error),
        }
    }

    pub async fn exec_resize(&self, id: &str, session: &str, rows: u16, cols: u16) -> Result<()> {
        super::config::check_window_size(rows, cols)?;
        let locked = self.live_session(id, session).await?;
        let request = Request::ResizeExec {
            session: session.to_string(),
            rows,
            cols,
        };
        control(&locked, request, Vec::new).await.map(|_| ())
    }

    pub async fn exec_kill(
        &self,
        caller: Caller,
        id: &str,
        session: &str,
        signal: &str,
    ) -> Result<()> {
        let (number, name) = parse_signal(signal)
            .ok_or_else(|| EngineError::InvalidArgument(format!("unknown signal {signal:?}")))?;
        let locked = self.live_session(id, session).await?;
        let request = Request::KillExec {
            session: session.to_string(),
            signal: number,
        };
        match control(&locked, request, Vec::new).await? {
            Some((Reply::Ok, _)) => {}
            // It ended meanwhile; its exit is on the way.
            Some((Reply::NotRunning, _)) | None => {
                return Err(EngineError::InvalidArgument(format!(
                    "exec session {session} has exited"
                )))
            }
            Some((other, _)) => {
                return Err(EngineError::Runtime(format!(
                    "unexpected monitor reply {other:?}"
                )))
            }
        }
        let attributes = [("execID", session.to_string()), ("signal", name)];
        locked
            .record(vec![event("kill", locked.config(), caller, &attributes)])
            .await
    }

    /// Forgets an exited session (a running one must end first).
    pub async fn exec_remove(&self, id: &str, session: &str) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        let mut status = locked.status();
        match status.exec_sessions.get(session) {
            None => return Err(EngineError::NoSuchExecSession(session.to_string())),
            Some(record) if record.running => {
                return Err(EngineError::InvalidArgument(format!(
                    "exec session {session} is running; kill it or wait for it first"
                )))
            }
            Some(_) => {}
        }
        status.exec_sessions.remove(session);
        locked.commit(status, Vec::new()).await
    }

    /// The container locked, with `session` running in it.
    async fn live_session(&self, id: &str, session: &str) -> Result<Locked<'_>> {
        let locked = self.inner().lock(id).await?;
        match locked.status().exec_sessions.get(session) {
            None => Err(EngineError::NoSuchExecSession(session.to_string())),
            Some(record) if !record.running => Err(EngineError::InvalidArgument(format!(
                "exec session {session} has exited"
            ))),
            Some(_) => Ok(locked),
        }
    }
}

/// A session whose process runs but could not be recorded (a full disk under `--root`) is
/// killed, so that nothing is left half-made: the caller got an error, and the exit file its
/// monitor writes belongs to no session and is removed when it comes.
async fn abandon_session(locked: &Locked<'_>, session: &str) {
    tracing::warn!(id = %locked.id(), %session, "an exec session that could not be recorded is killed");
    let request = Request::KillExec {
        session: session.to_string(),
        signal: nix::sys::signal::Signal::SIGKILL as i32,
    };
    if let Err(error) = control(locked, request, Vec::new).await {
        tracing::warn!(id = %locked.id(), %session, %error, "killing an unrecorded exec session failed");
    }
}

fn exec_died(config: &ContainerConfig, session: &str, code: i32) -> NewEvent {
    event(
        "exec_died",
        config,
        Caller::ENGINE,
        &[
            ("execID", session.to_string()),
            ("exitCode", code.to_string()),
        ],
    )
}

/// Applies the exit files of running sessions (all, or `only`) to `status` and returns their
/// `exec_died` events. Exit files are consumed: the status holds the truth from then on.
pub(crate) async fn apply_exec_exits(
    locked: &Locked<'_>,
    status: &mut ContainerStatus,
    only: Option<&str>,
) -> Result<Vec<NewEvent>> {
    let paths = locked.paths();
    let id = locked.id().to_string();
    let running: Vec<(String, u32)> = status
        .exec_sessions
        .iter()
        .filter(|(session, record)| record.running && only.is_none_or(|only| only == *session))
        .map(|(session, record)| (session.clone(), record.pid))
        .collect();
    if running.is_empty() {
        return Ok(Vec::new());
    }
    let records: BTreeMap<String, ExitRecord> = blocking(move || {
        let mut records = BTreeMap::new();
        for (session, pid) in running {
            let path = paths.exec_exit_file(&session);
            match read_exit_file(&path) {
                Ok(Some(record)) if record.pid == pid => {
                    records.insert(session, record);
                    let _ = std::fs::remove_file(&path);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%id, %session, %error, "unreadable exec exit file"),
            }
        }
        Ok(records)
    })
    .await?;
    let mut events = Vec::new();
    for (session, record) in records {
        if let Some(entry) = status.exec_sessions.get_mut(&session) {
            entry.running = false;
            entry.exit_code = record.exit_code;
            entry.finished_at = record.exited_at;
            events.push(exec_died(locked.config(), &session, record.exit_code));
        }
    }
    Ok(events)
}

/// After the container's exit: sessions the monitor did not report (it was lost) end with
/// an unknown exit code (-1), so no `Wait` on them hangs.
pub(crate) fn end_unreported_sessions(
    config: &ContainerConfig,
    status: &mut ContainerStatus,
    finished_at: u64,
) -> Vec<NewEvent> {
    let mut events = Vec::new();
    for (session, record) in status.exec_sessions.iter_mut() {
        if record.running {
            record.running = false;
            record.exit_code = -1;
            record.finished_at = finished_at;
            events.push(exec_died(config, session, -1));
        }
    }
    events
}

/// Writes the session's OCI process file beside the bundle; returns its path.
async fn prepare_process(
    locked: &Locked<'_>,
    session: &str,
    options: ExecRequest,
) -> Result<PathBuf> {
    let paths = locked.paths();
    let bundle = paths.bundle().to_path_buf();
    let rootfs = PathBuf::from(&locked.status().mountpoint);
    let process_file = paths.exec_process(session);
    let destination = process_file.clone();
    blocking(move || write_process(&bundle, &rootfs, &options, &destination)).await?;
    Ok(process_file)
}

/// Writes the session's OCI process: the container's, with the session's command and
/// options over it.
fn write_process(
    bundle: &Path,
    rootfs: &Path,
    options: &ExecRequest,
    destination: &Path,
) -> Result<()> {
    use crate::runtime::spec::{capability_set, console_box};
    let config = bundle.join("config.json");
    let spec = oci_spec::runtime::Spec::load(&config)
        .map_err(|e| EngineError::Internal(format!("read {}: {e}", config.display())))?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| EngineError::Internal("config.json has no process".into()))?;
    process.set_args(Some(options.command.clone()));
    let mut env = process.env().clone().unwrap_or_default();
    if let Some(user) = &options.user {
        let user = users::lookup(rootfs, user)
            .map_err(|e| EngineError::InvalidArgument(format!("User: {e}")))?;
        let spec_user = oci_spec::runtime::UserBuilder::default()
            .uid(user.uid)
            .gid(user.gid)
            .additional_gids(user.additional_gids.clone())
            .build()
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        process.set_user(spec_user);
        override_env(&mut env, &format!("HOME={}", user.home));
    }
    for variable in &options.env {
        if !variable.contains('=') || variable.starts_with('=') {
            return Err(EngineError::InvalidArgument(format!(
                "Env: {variable:?} is not KEY=VALUE"
            )));
        }
        override_env(&mut env, variable);
    }
    process.set_env(Some(env));
    if let Some(dir) = &options.working_dir {
        if !dir.starts_with('/') {
            return Err(EngineError::InvalidArgument(format!(
                "WorkingDir: {dir:?} is not absolute"
            )));
        }
        process.set_cwd(PathBuf::from(dir));
    }
    process.set_terminal(Some(options.terminal));
    process.set_console_size(match (options.terminal, options.console_size) {
        (true, Some((rows, cols))) => {
            Some(console_box(rows, cols).map_err(|e| EngineError::Internal(e.to_string()))?)
        }
        _ => None,
    });
    if options.privileged {
        let all =
            capability_set(true, &[], &[]).map_err(|e| EngineError::Internal(e.to_string()))?;
        let capabilities = oci_spec::runtime::LinuxCapabilitiesBuilder::default()
            .bounding(all.clone())
            .effective(all.clone())
            .permitted(all)
            .inheritable(std::collections::HashSet::new())
            .ambient(std::collections::HashSet::new())
            .build()
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        process.set_capabilities(Some(capabilities));
        process.set_no_new_privileges(Some(false));
    }
    let json = serde_json::to_vec(&process).map_err(|e| EngineError::Internal(e.to_string()))?;
    std::fs::write(destination, json)
        .map_err(|e| EngineError::Internal(format!("write {}: {e}", destination.display())))
}

/// Sets `KEY=VALUE`, replacing an earlier value of KEY.
fn override_env(env: &mut Vec<String>, variable: &str) {
    let key = variable.split('=').next().unwrap_or_default();
    env.retain(|existing| existing.split('=').next() != Some(key));
    env.push(variable.to_string());
}

fn open_null() -> std::io::Result<OwnedFd> {
    Ok(OwnedFd::from(
        std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_failures_map_to_podman_exit_codes() {
        let not_found = "exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH";
        assert_eq!(exit_code_of_failure(not_found), Some(127));
        let denied = "exec failed: unable to start container process: exec: \"/etc/passwd\": permission denied";
        assert_eq!(exit_code_of_failure(denied), Some(126));
        assert_eq!(exit_code_of_failure("cgroup join failed"), None);
    }

    #[test]
    fn session_env_overrides_the_container_env() {
        let mut env = vec!["PATH=/bin".to_string(), "FOO=old".to_string()];
        override_env(&mut env, "FOO=new");
        assert_eq!(env, vec!["PATH=/bin", "FOO=new"]);
    }
}
