//! The runc (or crun) command-line driver.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::{CheckpointOptions, OciRuntime, RuntimeError, RuntimeStatus};

/// Drives `runc --root <runroot>/runtime …` for every container of one berthd.
pub struct RuncCli {
    program: String,
    state_root: PathBuf,
    /// `--systemd-cgroup`: runc's systemd cgroup driver (where systemd is PID 1).
    systemd_cgroup: bool,
}

impl RuncCli {
    pub fn new(program: impl Into<String>, state_root: PathBuf) -> RuncCli {
        RuncCli {
            program: program.into(),
            state_root,
            systemd_cgroup: false,
        }
    }

    /// Uses runc's systemd cgroup driver.
    pub fn with_systemd_cgroup(mut self, systemd_cgroup: bool) -> RuncCli {
        self.systemd_cgroup = systemd_cgroup;
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.arg("--root").arg(&self.state_root);
        if self.systemd_cgroup {
            command.arg("--systemd-cgroup");
        }
        command
    }

    fn run(&self, verb: &str, id: &str, options: &[&str]) -> Result<Output, RuntimeError> {
        self.run_with(verb, id, options, &[])
    }

    /// `runc VERB OPTIONS… ID ARGS…`, failing with runc's stderr.
    fn run_with(
        &self,
        verb: &str,
        id: &str,
        options: &[&str],
        args: &[&str],
    ) -> Result<Output, RuntimeError> {
        let started = std::time::Instant::now();
        let output = self
            .command()
            .arg(verb)
            .args(options)
            .arg(id)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        tracing::debug!(
            verb,
            id,
            elapsed_us = started.elapsed().as_micros() as u64,
            "runtime command"
        );
        if output.status.success() {
            Ok(output)
        } else {
            Err(RuntimeError::Failed {
                command: format!("{} {verb}", self.program),
                id: id.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }
}

/// runc says "does not exist" (or crun "not exist"/"No such file") for unknown containers.
fn is_unknown_container(error: &RuntimeError) -> bool {
    matches!(error, RuntimeError::Failed { stderr, .. }
        if stderr.contains("does not exist") || stderr.contains("not exist") || stderr.contains("No such file"))
}

impl OciRuntime for RuncCli {
    fn name(&self) -> String {
        self.program.clone()
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("start", id, &[]).map(drop)
    }

    fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        self.run_with("kill", id, &[], &[&signal.to_string()])
            .map(drop)
    }

    fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("pause", id, &[]).map(drop)
    }

    fn checkpoint(&self, id: &str, options: &CheckpointOptions) -> Result<(), RuntimeError> {
        let image = options.image_path.display().to_string();
        let work = options.work_path.display().to_string();
        let mut args = vec!["--image-path", &image, "--work-path", &work];
        if options.leave_running {
            args.push("--leave-running");
        }
        if options.tcp_established {
            args.push("--tcp-established");
        }
        self.run("checkpoint", id, &args).map(drop)
    }

    fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("resume", id, &[]).map(drop)
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let args: &[&str] = if force { &["--force"] } else { &[] };
        match self.run("delete", id, args) {
            Err(error) if is_unknown_container(&error) => Ok(()),
            result => result.map(drop),
        }
    }

    fn state(&self, id: &str) -> Result<Option<RuntimeStatus>, RuntimeError> {
        let output = match self.run("state", id, &[]) {
            Err(error) if is_unknown_container(&error) => return Ok(None),
            result => result?,
        };
        #[derive(serde::Deserialize)]
        struct StateJson {
            status: String,
        }
        let parsed: StateJson =
            serde_json::from_slice(&output.stdout).map_err(|error| RuntimeError::Failed {
                command: format!("{} state", self.program),
                id: id.to_string(),
                stderr: format!("unreadable output: {error}"),
            })?;
        Ok(match parsed.status.as_str() {
            "created" | "creating" => Some(RuntimeStatus::Created),
            "running" => Some(RuntimeStatus::Running),
            "paused" | "pausing" => Some(RuntimeStatus::Paused),
            _ => Some(RuntimeStatus::Stopped),
        })
    }
}
