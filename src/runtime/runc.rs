//! The runc (or crun) command line — the program and its global flags, written once, with one
//! method per verb berth runs — and the driver berthd runs it through.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{CheckpointOptions, OciRuntime, RuntimeError, RuntimeStatus};

/// runc's command line for one berthd's containers: `runc --root <runroot>/runtime
/// [--systemd-cgroup] VERB …`. berthd's driver, the monitor and its sidecar all build their
/// runtime commands here. Each verb returns a `Command` whose stdio the caller sets up.
///
/// The fields are also the monitor's and the sidecar's `--runtime`, `--runtime-root` and
/// `--systemd-cgroup` options (see [`RuncCommand::to_args`]).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RuncCommand {
    /// The runtime program (`runc`, `crun` or a path).
    #[arg(long = "runtime")]
    pub program: String,
    /// runc's `--root`: where it keeps its containers' state.
    #[arg(long = "runtime-root")]
    pub root: PathBuf,
    /// runc's `--systemd-cgroup`: its systemd cgroup driver (where systemd is PID 1).
    #[arg(long)]
    pub systemd_cgroup: bool,
}

/// Where `create`, `run` and `restore` find a new container's bundle and put what they hand
/// back (relative paths are taken from the command's working directory).
#[derive(Debug, Clone, Copy)]
pub struct NewContainer<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub pid_file: &'a Path,
    /// runc sends the pty master of a terminal process over this socket.
    pub console_socket: Option<&'a Path>,
}

impl RuncCommand {
    pub fn new(program: impl Into<String>, root: PathBuf, systemd_cgroup: bool) -> RuncCommand {
        RuncCommand {
            program: program.into(),
            root,
            systemd_cgroup,
        }
    }

    /// The options clap parses back into this value: `--runtime P --runtime-root R
    /// [--systemd-cgroup]`.
    pub fn to_args(&self) -> Vec<OsString> {
        let RuncCommand {
            program,
            root,
            systemd_cgroup,
        } = self;
        let mut args = vec![
            "--runtime".into(),
            program.into(),
            "--runtime-root".into(),
            root.into(),
        ];
        if *systemd_cgroup {
            args.push("--systemd-cgroup".into());
        }
        args
    }

    /// The program with its global flags.
    fn global(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.arg("--root").arg(&self.root);
        if self.systemd_cgroup {
            command.arg("--systemd-cgroup");
        }
        command
    }

    /// `runc VERB`, the global flags before it.
    fn verb(&self, verb: &str) -> Command {
        let mut command = self.global();
        command.arg(verb);
        command
    }

    /// `OPTIONS… --bundle B --pid-file P [--console-socket S] ID` after a verb that makes a
    /// container.
    fn new_container(mut command: Command, new: &NewContainer<'_>) -> Command {
        command
            .arg("--bundle")
            .arg(new.bundle)
            .arg("--pid-file")
            .arg(new.pid_file);
        if let Some(socket) = new.console_socket {
            command.arg("--console-socket").arg(socket);
        }
        command.arg(new.id);
        command
    }

    /// `runc create`: the container waits for `start`.
    pub fn create(&self, new: &NewContainer<'_>) -> Command {
        Self::new_container(self.verb("create"), new)
    }

    /// `runc run --detach`: created and started in one invocation.
    pub fn run_detached(&self, new: &NewContainer<'_>) -> Command {
        let mut command = self.verb("run");
        command.arg("--detach");
        Self::new_container(command, new)
    }

    /// `runc restore --detach` from the CRIU images in `image_path`.
    pub fn restore_detached(
        &self,
        new: &NewContainer<'_>,
        image_path: &Path,
        work_path: &Path,
        tcp_established: bool,
    ) -> Command {
        let mut command = self.verb("restore");
        command
            .args(["--detach", "--image-path"])
            .arg(image_path)
            .arg("--work-path")
            .arg(work_path);
        if tcp_established {
            command.arg("--tcp-established");
        }
        Self::new_container(command, new)
    }

    pub fn start(&self, id: &str) -> Command {
        let mut command = self.verb("start");
        command.arg(id);
        command
    }

    pub fn kill(&self, id: &str, signal: i32) -> Command {
        let mut command = self.verb("kill");
        command.arg(id).arg(signal.to_string());
        command
    }

    pub fn pause(&self, id: &str) -> Command {
        let mut command = self.verb("pause");
        command.arg(id);
        command
    }

    pub fn resume(&self, id: &str) -> Command {
        let mut command = self.verb("resume");
        command.arg(id);
        command
    }

    /// `runc delete [--force]`: `force` also kills a live container.
    pub fn delete(&self, id: &str, force: bool) -> Command {
        let mut command = self.verb("delete");
        if force {
            command.arg("--force");
        }
        command.arg(id);
        command
    }

    /// `runc state`: the container's state as JSON on stdout.
    pub fn state(&self, id: &str) -> Command {
        let mut command = self.verb("state");
        command.arg(id);
        command
    }

    /// `runc checkpoint`: dumps the container with CRIU.
    pub fn checkpoint(&self, id: &str, options: &CheckpointOptions) -> Command {
        let mut command = self.verb("checkpoint");
        command
            .arg("--image-path")
            .arg(&options.image_path)
            .arg("--work-path")
            .arg(&options.work_path);
        if options.leave_running {
            command.arg("--leave-running");
        }
        if options.tcp_established {
            command.arg("--tcp-established");
        }
        command.arg(id);
        command
    }

    /// `runc exec ID COMMAND…`, attached: runs until the command ends.
    pub fn exec(&self, id: &str, process_args: &[String]) -> Command {
        let mut command = self.verb("exec");
        command.arg(id).args(process_args);
        command
    }

    /// `runc --log LOG --log-format json exec --detach --pid-file P --process F
    /// [--console-socket S] ID`: runs the process described by the JSON file `process` and
    /// returns once it has started; runc's own errors go to `log`.
    pub fn exec_detached(
        &self,
        id: &str,
        process: &Path,
        pid_file: &Path,
        log: &Path,
        console_socket: Option<&Path>,
    ) -> Command {
        let mut command = self.global();
        command
            .arg("--log")
            .arg(log)
            .args(["--log-format", "json", "exec", "--detach", "--pid-file"])
            .arg(pid_file)
            .arg("--process")
            .arg(process);
        if let Some(socket) = console_socket {
            command.arg("--console-socket").arg(socket);
        }
        command.arg(id);
        command
    }
}

/// Drives runc for every container of one berthd, failing with runc's stderr.
pub struct RuncCli {
    runc: RuncCommand,
}

impl RuncCli {
    pub fn new(runc: RuncCommand) -> RuncCli {
        RuncCli { runc }
    }

    /// Runs `command` (runc's `verb` on container `id`), failing with runc's stderr.
    fn run(&self, verb: &str, id: &str, mut command: Command) -> Result<Output, RuntimeError> {
        let started = std::time::Instant::now();
        let output =
            command
                .stdin(Stdio::null())
                .output()
                .map_err(|source| RuntimeError::Spawn {
                    program: self.runc.program.clone(),
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
                command: format!("{} {verb}", self.runc.program),
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
        self.runc.program.clone()
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("start", id, self.runc.start(id)).map(drop)
    }

    fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        self.run("kill", id, self.runc.kill(id, signal)).map(drop)
    }

    fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("pause", id, self.runc.pause(id)).map(drop)
    }

    fn checkpoint(&self, id: &str, options: &CheckpointOptions) -> Result<(), RuntimeError> {
        self.run("checkpoint", id, self.runc.checkpoint(id, options))
            .map(drop)
    }

    fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("resume", id, self.runc.resume(id)).map(drop)
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        match self.run("delete", id, self.runc.delete(id, force)) {
            Err(error) if is_unknown_container(&error) => Ok(()),
            result => result.map(drop),
        }
    }

    fn state(&self, id: &str) -> Result<Option<RuntimeStatus>, RuntimeError> {
        let output = match self.run("state", id, self.runc.state(id)) {
            Err(error) if is_unknown_container(&error) => return Ok(None),
            result => result?,
        };
        #[derive(serde::Deserialize)]
        struct StateJson {
            status: String,
        }
        let parsed: StateJson =
            serde_json::from_slice(&output.stdout).map_err(|error| RuntimeError::Failed {
                command: format!("{} state", self.runc.program),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(command: &Command) -> Vec<String> {
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn every_verb_starts_with_the_global_flags() {
        let runc = RuncCommand::new("runc", "/run/berth/runtime".into(), true);
        let new = NewContainer {
            id: "c1",
            bundle: Path::new("/b"),
            pid_file: Path::new("/b/pid"),
            console_socket: None,
        };
        let checkpoint = CheckpointOptions {
            image_path: "/i".into(),
            work_path: "/w".into(),
            leave_running: false,
            tcp_established: false,
        };
        let commands = [
            runc.create(&new),
            runc.run_detached(&new),
            runc.restore_detached(&new, Path::new("/i"), Path::new("/w"), false),
            runc.start("c1"),
            runc.kill("c1", 15),
            runc.pause("c1"),
            runc.resume("c1"),
            runc.delete("c1", false),
            runc.state("c1"),
            runc.checkpoint("c1", &checkpoint),
            runc.exec("c1", &["true".into()]),
            runc.exec_detached(
                "c1",
                Path::new("p.json"),
                Path::new("p"),
                Path::new("l"),
                None,
            ),
        ];
        for command in &commands {
            assert_eq!(
                argv(command)[..4],
                ["runc", "--root", "/run/berth/runtime", "--systemd-cgroup"],
                "{command:?}"
            );
        }
        let cgroupfs = RuncCommand::new("runc", "/r".into(), false);
        assert_eq!(
            argv(&cgroupfs.start("c1")),
            ["runc", "--root", "/r", "start", "c1"]
        );
    }

    #[test]
    fn verbs_put_their_options_before_the_container_id() {
        let runc = RuncCommand::new("runc", "/r".into(), false);
        let terminal = NewContainer {
            id: "c1",
            bundle: Path::new("/b"),
            pid_file: Path::new("/b/pid"),
            console_socket: Some(Path::new("console.sock")),
        };
        assert_eq!(
            argv(&runc.restore_detached(&terminal, Path::new("/i"), Path::new("/w"), true))[3..],
            [
                "restore",
                "--detach",
                "--image-path",
                "/i",
                "--work-path",
                "/w",
                "--tcp-established",
                "--bundle",
                "/b",
                "--pid-file",
                "/b/pid",
                "--console-socket",
                "console.sock",
                "c1"
            ]
        );
        assert_eq!(
            argv(&runc.delete("c1", true))[3..],
            ["delete", "--force", "c1"]
        );
        assert_eq!(argv(&runc.kill("c1", 9))[3..], ["kill", "c1", "9"]);
        let checkpoint = CheckpointOptions {
            image_path: "/i".into(),
            work_path: "/w".into(),
            leave_running: true,
            tcp_established: true,
        };
        assert_eq!(
            argv(&runc.checkpoint("c1", &checkpoint))[3..],
            [
                "checkpoint",
                "--image-path",
                "/i",
                "--work-path",
                "/w",
                "--leave-running",
                "--tcp-established",
                "c1"
            ]
        );
        assert_eq!(
            argv(&runc.exec_detached(
                "c1",
                Path::new("p.json"),
                Path::new("p"),
                Path::new("l"),
                Some(Path::new("s"))
            ))[3..],
            [
                "--log",
                "l",
                "--log-format",
                "json",
                "exec",
                "--detach",
                "--pid-file",
                "p",
                "--process",
                "p.json",
                "--console-socket",
                "s",
                "c1"
            ]
        );
    }
}
