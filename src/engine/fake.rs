//! Fakes of the runtime, the monitor launcher and the mounter, for fast engine tests without
//! root. Exits still travel the real way: the fake writes an exit file and the engine's
//! inotify watch picks it up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::clock::now_micros;
use crate::monitor::control::{ControlError, Reply, Request};
use crate::monitor::launcher::{AttachEnds, LaunchError, LaunchRequest, Launched, MonitorLauncher};
use crate::monitor::protocol::{write_exit_file, ExitRecord};
use crate::runtime::{CheckpointOptions, OciRuntime, RuntimeError, RuntimeStatus};
use crate::storage::rootfs::Mounter;

#[derive(Debug, Clone)]
struct Process {
    pid: u32,
    status: RuntimeStatus,
    exit_file: PathBuf,
}

/// One fake machine shared by the three fakes.
#[derive(Default)]
pub struct FakeWorld {
    processes: Mutex<HashMap<String, Process>>,
    next_pid: Mutex<u32>,
    /// Signals the fake process ignores (as a PID 1 without handlers does).
    pub ignored_signals: Mutex<Vec<i32>>,
    /// Makes `delete` fail (to hold a container in `stopped`).
    pub fail_delete: Mutex<bool>,
    pub mounts: Mutex<Vec<PathBuf>>,
    /// Makes `unmount` fail (a busy mount).
    pub fail_unmount: Mutex<bool>,
    /// Containers whose monitor has been killed.
    pub dead_monitors: Mutex<Vec<String>>,
    /// Exec sessions started: session id → (pid, exit file).
    sessions: Mutex<HashMap<String, (u32, PathBuf)>>,
    pub network: Arc<crate::network::fake::FakeNetwork>,
}

impl FakeWorld {
    pub fn new() -> Arc<FakeWorld> {
        Arc::new(FakeWorld {
            next_pid: Mutex::new(1000),
            ..Default::default()
        })
    }

    pub fn backends(self: &Arc<Self>) -> super::Backends {
        super::Backends {
            runtime: Arc::new(FakeRuntime(self.clone())),
            launcher: Arc::new(FakeLauncher(self.clone())),
            mounter: Arc::new(FakeMounter(self.clone())),
            network: self.network.clone(),
        }
    }

    /// The container's process exits by itself with `code`.
    pub fn exit(&self, id: &str, code: i32) {
        let mut processes = self.processes.lock().unwrap();
        if let Some(process) = processes.get_mut(id) {
            if process.status != RuntimeStatus::Stopped {
                process.status = RuntimeStatus::Stopped;
                let record = ExitRecord {
                    pid: process.pid,
                    exit_code: code,
                    exited_at: now_micros(),
                    oom_killed: false,
                    checkpointed: false,
                };
                write_exit_file(&process.exit_file, &record).unwrap();
            }
        }
    }

    /// The process exits, but its monitor has not written the exit file yet.
    pub fn exit_silently(&self, id: &str) {
        if let Some(process) = self.processes.lock().unwrap().get_mut(id) {
            process.status = RuntimeStatus::Stopped;
        }
    }

    /// The monitor writes the exit file of a process that exited silently.
    pub fn deliver_exit(&self, id: &str, code: i32) {
        let processes = self.processes.lock().unwrap();
        let process = &processes[id];
        let record = ExitRecord {
            pid: process.pid,
            exit_code: code,
            exited_at: now_micros(),
            oom_killed: false,
            checkpointed: false,
        };
        write_exit_file(&process.exit_file, &record).unwrap();
    }

    /// A fresh fake pid.
    fn next_pid(&self) -> u32 {
        let mut next = self.next_pid.lock().unwrap();
        *next += 1;
        *next
    }

    /// An exec session's process exits with `code` (its monitor writes the exit file).
    pub fn exec_exit(&self, session: &str, code: i32) {
        let sessions = self.sessions.lock().unwrap();
        let (pid, exit_file) = &sessions[session];
        let record = ExitRecord {
            pid: *pid,
            exit_code: code,
            exited_at: now_micros(),
            oom_killed: false,
            checkpointed: false,
        };
        write_exit_file(exit_file, &record).unwrap();
    }

    pub fn runtime_status(&self, id: &str) -> Option<RuntimeStatus> {
        self.processes.lock().unwrap().get(id).map(|p| p.status)
    }

    pub fn pid(&self, id: &str) -> Option<u32> {
        self.processes.lock().unwrap().get(id).map(|p| p.pid)
    }
}

pub struct FakeRuntime(Arc<FakeWorld>);
pub struct FakeLauncher(Arc<FakeWorld>);
pub struct FakeMounter(Arc<FakeWorld>);

fn failed(command: &str, id: &str, stderr: &str) -> RuntimeError {
    RuntimeError::Failed {
        command: command.into(),
        id: id.into(),
        stderr: stderr.into(),
    }
}

impl OciRuntime for FakeRuntime {
    fn name(&self) -> String {
        "fake".into()
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut processes = self.0.processes.lock().unwrap();
        let process = processes
            .get_mut(id)
            .ok_or_else(|| failed("start", id, "does not exist"))?;
        match process.status {
            RuntimeStatus::Created => {
                process.status = RuntimeStatus::Running;
                Ok(())
            }
            _ => Err(failed(
                "start",
                id,
                "cannot start a container that is not created",
            )),
        }
    }

    fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let ignored = self.0.ignored_signals.lock().unwrap().contains(&signal);
        let status = self
            .0
            .runtime_status(id)
            .ok_or_else(|| failed("kill", id, "does not exist"))?;
        if status == RuntimeStatus::Stopped {
            return Err(failed("kill", id, "container not running"));
        }
        if !ignored && status != RuntimeStatus::Paused {
            self.0.exit(id, 128 + signal);
        }
        Ok(())
    }

    fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        let mut processes = self.0.processes.lock().unwrap();
        let process = processes
            .get_mut(id)
            .ok_or_else(|| failed("pause", id, "does not exist"))?;
        process.status = RuntimeStatus::Paused;
        Ok(())
    }

    fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        let mut processes = self.0.processes.lock().unwrap();
        let process = processes
            .get_mut(id)
            .ok_or_else(|| failed("resume", id, "does not exist"))?;
        process.status = RuntimeStatus::Running;
        Ok(())
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        if *self.0.fail_delete.lock().unwrap() {
            return Err(failed("delete", id, "injected failure"));
        }
        let status = self.0.runtime_status(id);
        if matches!(
            status,
            Some(RuntimeStatus::Created | RuntimeStatus::Running | RuntimeStatus::Paused)
        ) {
            if !force {
                return Err(failed("delete", id, "container is running"));
            }
            self.0.exit(id, 137);
        }
        self.0.processes.lock().unwrap().remove(id);
        Ok(())
    }

    fn state(&self, id: &str) -> Result<Option<RuntimeStatus>, RuntimeError> {
        Ok(self.0.runtime_status(id))
    }

    fn checkpoint(&self, id: &str, _options: &CheckpointOptions) -> Result<(), RuntimeError> {
        Err(failed("checkpoint", id, "the fake runtime has no CRIU"))
    }
}

impl MonitorLauncher for FakeLauncher {
    fn launch(
        &self,
        request: &LaunchRequest,
        _attach: Option<AttachEnds>,
    ) -> Result<Launched, LaunchError> {
        let pid = self.0.next_pid();
        self.0.processes.lock().unwrap().insert(
            request.id.clone(),
            Process {
                pid,
                status: if request.start {
                    RuntimeStatus::Running
                } else {
                    RuntimeStatus::Created
                },
                exit_file: request.exit_file.clone(),
            },
        );
        Ok(Launched {
            pid,
            monitor_pid: pid + 100_000,
        })
    }

    fn is_alive(&self, _monitor_pid: u32, id: &str) -> bool {
        !self
            .0
            .dead_monitors
            .lock()
            .unwrap()
            .iter()
            .any(|dead| dead == id)
            && self
                .0
                .runtime_status(id)
                .is_some_and(|s| s != RuntimeStatus::Stopped)
    }

    fn export(&self, root: &Path, destination: std::fs::File) -> Result<(), LaunchError> {
        let mut builder = tar::Builder::new(destination);
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", root)
            .and_then(|()| builder.finish())
            .map_err(|e| LaunchError::Create(e.to_string()))
    }

    fn control(
        &self,
        _bundle: &Path,
        request: &Request,
        _fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(Reply, Vec<std::os::fd::OwnedFd>), ControlError> {
        match request {
            Request::Exec {
                session, exit_file, ..
            } => {
                let pid = self.0.next_pid();
                self.0
                    .sessions
                    .lock()
                    .unwrap()
                    .insert(session.clone(), (pid, exit_file.clone()));
                Ok((Reply::ExecStarted { pid }, Vec::new()))
            }
            _ => Ok((Reply::Ok, Vec::new())),
        }
    }
}

impl Mounter for FakeMounter {
    fn mount_overlay(
        &self,
        _lowers: &[PathBuf],
        _upper: &Path,
        _work: &Path,
        target: &Path,
    ) -> std::io::Result<()> {
        self.0.mounts.lock().unwrap().push(target.to_path_buf());
        Ok(())
    }

    fn unmount(&self, target: &Path) -> std::io::Result<()> {
        if *self.0.fail_unmount.lock().unwrap() {
            return Err(std::io::Error::from_raw_os_error(
                nix::errno::Errno::EBUSY as i32,
            ));
        }
        self.0.mounts.lock().unwrap().retain(|m| m != target);
        Ok(())
    }
}
