//! The monitor process (`berth-monitor`): conmon's job, in one small single-threaded loop.
//!
//! Order matters and follows conmon-rs: fork away from berthd before anything else, become a
//! session leader and a subreaper, then run `runc create`; the container's init is reparented
//! to us when runc exits, so we can wait for it and read its status. The same holds for exec
//! sessions: `runc exec --detach` runs as our child, so each session's process is reparented
//! to us and its exit status is ours to record, whenever it comes.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{accept4, SockFlag};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, ForkResult, Pid};

use super::control;
use super::event_loop::Monitor;
use super::launcher::LaunchRequest;
use super::log::LogWriter;
use super::protocol::{write_exit_file, ExitRecord, StartReport};
use super::stdio::{set_nonblocking, Client, Input};
use crate::clock::now_micros;
use crate::runtime::{NewContainer, RuncCommand};

/// How long output is still drained after the main process has gone.
pub(super) const DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// How long exec sessions may take to die after the container's init (the kernel kills them).
pub(super) const SESSION_LIMIT: Duration = Duration::from_secs(5);

/// How long attached clients get to read the last output once the container is gone.
pub(super) const FLUSH_LIMIT: Duration = Duration::from_secs(30);

/// Pipe capacity for the container's output: fewer wake-ups under heavy output.
const PIPE_SIZE: i32 = 1024 * 1024;

/// The file berthd creates in the bundle while it checkpoints the container.
pub const CHECKPOINT_MARKER: &str = "checkpointing";

/// The console socket runc hands the main process's pty master through.
const CONSOLE_SOCKET: &str = "console.sock";

/// What `berth-monitor` is told on its command line, in one type: berthd's launcher writes it
/// out with [`MonitorOptions::to_args`] and the monitor parses it back with clap. The engine
/// fills in the container's part ([`LaunchRequest`]), the launcher the runtime and the bus.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(
    name = "berth-monitor",
    version,
    about = "berth's per-container monitor (started by berthd)"
)]
pub struct MonitorOptions {
    #[command(flatten)]
    pub runc: RuncCommand,
    #[command(flatten)]
    pub request: LaunchRequest,
    /// A client is attached from the start (`StartAndAttach`): its stdout and stderr ends are
    /// descriptors 3 and 4.
    #[arg(long)]
    pub attach: bool,
    /// The attached client also sends input, on descriptor 5.
    #[arg(long, requires = "attach")]
    pub attach_stdin: bool,
    /// After the exit is recorded, ping `org.berth.Engine1` on this bus (`system` or an
    /// address), which starts berthd if it has idled out.
    #[arg(long)]
    pub notify_bus: Option<String>,
}

impl MonitorOptions {
    /// The command line clap parses back into this value.
    pub fn to_args(&self) -> Vec<OsString> {
        let MonitorOptions {
            runc,
            request,
            attach,
            attach_stdin,
            notify_bus,
        } = self;
        let mut args = runc.to_args();
        args.extend(request.to_args());
        if *attach {
            args.push("--attach".into());
        }
        if *attach_stdin {
            args.push("--attach-stdin".into());
        }
        if let Some(bus) = notify_bus {
            args.extend(["--notify-bus".into(), bus.into()]);
        }
        args
    }
}

/// Where a restore's checkpoint is and how to restore it (`runc restore`). On the command line
/// the group is optional as a whole (`Option<RestoreArgs>`), complete when given: clap would
/// otherwise require its paths of every monitor.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RestoreArgs {
    /// Restore from the checkpoint in this directory instead of creating.
    #[arg(long = "restore-image", required = false, requires = "work_path")]
    pub image_path: PathBuf,
    /// CRIU's work directory for the restore.
    #[arg(long = "restore-work", required = false, requires = "image_path")]
    pub work_path: PathBuf,
    /// Restore established TCP connections.
    #[arg(long, requires = "image_path")]
    pub tcp_established: bool,
}

impl RestoreArgs {
    /// The options clap parses back into this value.
    pub fn to_args(&self) -> Vec<OsString> {
        let RestoreArgs {
            image_path,
            work_path,
            tcp_established,
        } = self;
        let mut args = vec![
            "--restore-image".into(),
            image_path.into(),
            "--restore-work".into(),
            work_path.into(),
        ];
        if *tcp_established {
            args.push("--tcp-established".into());
        }
        args
    }
}

/// Runs the monitor. Returns only in the short-lived first process, which exits at once so
/// berthd can reap it; the forked monitor ends with `std::process::exit`.
/// `attach` is the client attached from the start (`--attach`), if any.
pub fn run(options: MonitorOptions, attach: Option<Client>) -> i32 {
    // SAFETY: called from `main` before any thread exists, so the child is a full copy of a
    // single-threaded process and may run arbitrary code.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(error) => {
            report(&StartReport::Failed {
                error: format!("monitor fork: {error}"),
            });
            return 1;
        }
    }
    let code = match monitor(options, attach) {
        Ok(()) => 0,
        Err(error) => {
            report(&StartReport::Failed { error });
            1
        }
    };
    std::process::exit(code)
}

/// Writes the start-up report on stdout (berthd reads it to EOF).
fn report(report: &StartReport) {
    let mut stdout = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut stdout, report);
    let _ = stdout.write_all(b"\n");
    let _ = stdout.flush();
}

fn monitor(options: MonitorOptions, attached: Option<Client>) -> Result<(), String> {
    let request = &options.request;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "become subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Sockets are bound by short relative names in the bundle.
    std::env::set_current_dir(&request.bundle)
        .map_err(|e| format!("enter {}: {e}", request.bundle.display()))?;
    // Termination signals are blocked and read (and dropped) from a signalfd rather than
    // ignored: an ignored signal would stay ignored in the container across exec, while a
    // blocked one does not (the child's mask is reset when the runtime is spawned).
    // SIGCHLD arrives the same way, to reap what is reparented to us.
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGTERM,
    ] {
        mask.add(signal);
    }
    mask.thread_block()
        .map_err(|e| format!("block signals: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    let control = control::listen(Path::new(control::SOCKET_NAME))
        .map_err(|e| format!("control socket: {e}"))?;

    // Notify relay and health checks, when berthd asked for them (a file in the bundle).
    super::sidecar::spawn(&super::sidecar::SidecarArgs {
        id: request.id.clone(),
        runc: options.runc.clone(),
    })?;
    let (pid, pidfd, stdio) = create_container(&options)?;
    report(&StartReport::Created {
        pid: pid as u32,
        monitor_pid: std::process::id(),
    });
    detach_stdio();

    let mut state = Monitor {
        options: &options,
        main: Pid::from_raw(pid),
        pidfd,
        signals,
        control: Some(control),
        sources: stdio.sources,
        master: stdio.master,
        input: stdio.input,
        clients: attached.into_iter().collect(),
        log: LogWriter::open(request.log_path.as_ref()),
        exit_code: None,
        pending_execs: Vec::new(),
        live_execs: HashMap::new(),
        unopened_ptys: HashMap::new(),
        orphans: HashMap::new(),
    };
    if state.master.is_some() {
        // A terminal has one output stream: a client's stderr end stays at EOF.
        for client in &mut state.clients {
            client.outputs[1] = None;
        }
    }
    state.run();
    let exit_code = state.exit_code.unwrap_or(255);
    // No more requests (a caller sees the monitor gone at once rather than wait on a
    // backlog nobody serves); a restarted container's new monitor binds the socket anew.
    state.control = None;
    let _ = std::fs::remove_file(control::SOCKET_NAME);
    state.end_sessions();
    let record = ExitRecord {
        pid: pid as u32,
        exit_code,
        exited_at: now_micros(),
        oom_killed: request.oom_file.as_ref().is_some_and(oom_killed),
        // berthd leaves this marker while `runc checkpoint` runs: CRIU ended the process.
        checkpointed: std::fs::remove_file(CHECKPOINT_MARKER).is_ok(),
    };
    let written =
        write_exit_file(&request.exit_file, &record).map_err(|e| format!("write exit file: {e}"));
    state.flush_clients();
    if let Some(bus) = &options.notify_bus {
        notify_berthd(bus);
    }
    written
}

/// Pings berthd over the bus so that bus activation starts it if it has idled out: it then
/// records the exit (and runs the restart policy) at once, not at some later call.
fn notify_berthd(bus: &str) {
    let mut command = Command::new("dbus-send");
    match bus {
        "system" => command.arg("--system"),
        "session" => command.arg("--session"),
        address => command.arg(format!("--bus={address}")),
    };
    let status = command
        .args([
            "--dest=org.berth.Engine1",
            "--type=method_call",
            "--print-reply",
            "--reply-timeout=30000",
            "/org/berth/Engine1",
            "org.freedesktop.DBus.Peer.Ping",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    // Nothing more to do either way: a berthd that cannot be reached finds the exit file at
    // its next start.
    let _ = status;
}

/// The container's stdio as the monitor holds it.
struct ContainerStdio {
    /// Output to copy: (read end, stream 0 stdout / 1 stderr), or the pty master as stdout.
    sources: Vec<(OwnedFd, usize)>,
    /// The pty master of a terminal container (for resizing).
    master: Option<OwnedFd>,
    /// Where clients' input goes.
    input: Option<Input>,
}

impl ContainerStdio {
    /// A terminal container's stdio: the pty master is its output, its input, and what is
    /// resized.
    fn take_terminal(&mut self, master: OwnedFd) -> Result<(), String> {
        let input = master.try_clone().map_err(|e| format!("dup: {e}"))?;
        let output = master.try_clone().map_err(|e| format!("dup: {e}"))?;
        set_nonblocking(&output);
        self.input = Some(Input::new(input));
        self.sources = vec![(output, 0)];
        self.master = Some(master);
        Ok(())
    }
}

/// Runs `runc create` (or `run --detach`, or `restore --detach`) and returns the container's
/// pid, a pidfd on it and its stdio. A container made but not watchable is deleted again.
fn create_container(options: &MonitorOptions) -> Result<(i32, OwnedFd, ContainerStdio), String> {
    let request = &options.request;
    let pid_file = request.bundle.join("pid");
    let new = NewContainer {
        id: &request.id,
        bundle: &request.bundle,
        pid_file: &pid_file,
        console_socket: request.terminal.then_some(Path::new(CONSOLE_SOCKET)),
    };
    let (mut command, verb) = match &request.restore {
        Some(restore) => (
            options.runc.restore_detached(
                &new,
                &restore.image_path,
                &restore.work_path,
                restore.tcp_established,
            ),
            "restore",
        ),
        None if request.start => (options.runc.run_detached(&new), "run"),
        None => (options.runc.create(&new), "create"),
    };
    let (errors, mut stdio, console) = container_stdio(&mut command, request)?;
    let child = command
        .current_dir(&request.bundle)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", options.runc.program))?;
    // The Command and its copies of the write ends are gone: only the container holds them.
    drop(command);
    let master = wait_for_runtime(
        child,
        console.as_ref(),
        &errors,
        &options.runc.program,
        verb,
    )?;
    drop(errors);
    if let Some(master) = master {
        stdio.take_terminal(master)?;
    }
    let (pid, pidfd) = watch_created(options, &pid_file)?;
    Ok((pid, pidfd, stdio))
}

/// Wires the runtime's stdio for a new container: pipes (and stdin when it stays open), or
/// a console socket for a terminal. Returns the read end runc's own errors come on, the
/// container's stdio, and the console socket's listener.
fn container_stdio(
    command: &mut Command,
    request: &LaunchRequest,
) -> Result<(OwnedFd, ContainerStdio, Option<OwnedFd>), String> {
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    if request.terminal {
        // What runc says when it fails comes on its own stderr.
        let console = console_listener(Path::new(CONSOLE_SOCKET))?;
        let (errors_read, errors_write) = pipe()?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(errors_write));
        let stdio = ContainerStdio {
            sources: Vec::new(),
            master: None,
            input: None,
        };
        return Ok((errors_read, stdio, Some(console)));
    }
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    for fd in [&stdout_read, &stderr_read] {
        let _ = fcntl(fd.as_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }
    // What runc says when it fails comes on the container's stderr pipe.
    let errors = stderr_read.try_clone().map_err(|e| format!("dup: {e}"))?;
    let input = if request.stdin {
        let (stdin_read, stdin_write) = pipe()?;
        command.stdin(Stdio::from(stdin_read));
        Some(Input::new(stdin_write))
    } else {
        command.stdin(Stdio::null());
        None
    };
    command
        .stdout(Stdio::from(stdout_write))
        .stderr(Stdio::from(stderr_write));
    let stdio = ContainerStdio {
        sources: vec![(stdout_read, 0), (stderr_read, 1)],
        master: None,
        input,
    };
    Ok((errors, stdio, None))
}

/// Waits for `runtime VERB` to finish, taking the pty master it sends over `console` first;
/// fails with what the runtime wrote on `errors`.
fn wait_for_runtime(
    mut child: std::process::Child,
    console: Option<&OwnedFd>,
    errors: &OwnedFd,
    runtime: &str,
    verb: &str,
) -> Result<Option<OwnedFd>, String> {
    let master = match console {
        Some(listener) => match receive_console(listener, child.id() as i32) {
            Ok(master) => Some(master),
            Err(error) => {
                let _ = child.wait();
                return Err(format!("{error}: {}", read_available(errors).trim()));
            }
        },
        None => None,
    };
    let status = child
        .wait()
        .map_err(|e| format!("wait for {runtime}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{runtime} {verb}: {}",
            read_available(errors).trim()
        ));
    }
    Ok(master)
}

/// Reads the new container's pid and opens a pidfd on it. A container the runtime made but
/// we cannot watch is deleted again rather than left running with nobody to record its exit.
fn watch_created(options: &MonitorOptions, pid_file: &Path) -> Result<(i32, OwnedFd), String> {
    let watched = read_pid_file(pid_file).and_then(|pid| {
        Ok((
            pid,
            pidfd_open(pid).map_err(|e| format!("pidfd_open {pid}: {e}"))?,
        ))
    });
    if watched.is_err() {
        let _ = options
            .runc
            .delete(&options.request.id, true)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    watched
}

pub(super) fn read_pid_file(path: &Path) -> Result<i32, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("read {}: {e}", path.display()))
        .and_then(|text| {
            text.trim()
                .parse::<i32>()
                .map_err(|e| format!("pid file {}: {e}", path.display()))
        })
}

/// A listening stream socket for runc's `--console-socket` (non-blocking, close-on-exec).
pub(super) fn console_listener(path: &Path) -> Result<OwnedFd, String> {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockType, UnixAddr};
    let socket = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| format!("console socket: {e}"))?;
    let _ = std::fs::remove_file(path);
    let address = UnixAddr::new(path).map_err(|e| format!("console socket: {e}"))?;
    bind(socket.as_raw_fd(), &address).map_err(|e| format!("console socket: {e}"))?;
    listen(
        &socket,
        Backlog::new(1).map_err(|e| format!("console socket: {e}"))?,
    )
    .map_err(|e| format!("console socket: {e}"))?;
    Ok(socket)
}

/// Waits until runc (pid `runtime`) connects to the console socket and takes the pty master
/// it sends; fails if runc exits first.
fn receive_console(listener: &OwnedFd, runtime: i32) -> Result<OwnedFd, String> {
    let runtime_fd = pidfd_open(runtime).map_err(|e| format!("pidfd_open {runtime}: {e}"))?;
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(runtime_fd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(error) => return Err(format!("console socket: {e}", e = error)),
            Ok(_) => {}
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            if let Some(master) = take_console(listener)? {
                return Ok(master);
            }
            continue;
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            // runc may have connected just before exiting.
            return take_console(listener)?
                .ok_or_else(|| "the runtime exited without sending a terminal".to_string());
        }
    }
}

/// Accepts one connection on a console socket and receives the pty master on it; `None` when
/// nobody is connecting.
pub(super) fn take_console(listener: &OwnedFd) -> Result<Option<OwnedFd>, String> {
    let connection = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(Errno::EAGAIN | Errno::EINTR) => return Ok(None),
        Err(error) => return Err(format!("console socket: {error}")),
    };
    let _ = fcntl(connection.as_fd(), FcntlArg::F_SETFL(OFlag::empty()));
    match control::receive(connection.as_fd()) {
        Ok(Some((_, mut fds))) if !fds.is_empty() => Ok(Some(fds.swap_remove(0))),
        Ok(_) => Err("the runtime sent no terminal".to_string()),
        Err(error) => Err(format!("console socket: {error}")),
    }
}

/// Points stdin/stdout/stderr at /dev/null: berthd has read the report and may go away.
fn detach_stdio() {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for target in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors, which this process owns.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: the syscall takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whatever a failed runtime command left in a pipe (without blocking).
fn read_available(fd: &OwnedFd) -> String {
    let _ = fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let mut buffer = vec![0u8; 65536];
    let length = nix::unistd::read(fd, &mut buffer).unwrap_or(0);
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

fn exit_code_of(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Reaps every dead child: (pid, exit code).
pub(super) fn reap_children() -> Vec<(i32, i32)> {
    let mut reaped = Vec::new();
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        match (status.pid(), exit_code_of(status)) {
            (Some(pid), Some(code)) => reaped.push((pid.as_raw(), code)),
            (Some(_), None) => {}
            (None, _) => break,
        }
    }
    reaped
}

/// Reads `oom_kill N` from a cgroup file.
fn oom_killed(path: &PathBuf) -> bool {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines().any(|line| {
                line.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parsed(options: &MonitorOptions) -> MonitorOptions {
        let argv = std::iter::once(OsString::from("berth-monitor")).chain(options.to_args());
        MonitorOptions::try_parse_from(argv).unwrap()
    }

    #[test]
    fn monitor_options_parse_back_from_their_command_line() {
        let every_field = MonitorOptions {
            runc: RuncCommand::new("/usr/bin/runc", "/run/berth/runtime".into(), true),
            request: LaunchRequest {
                id: "0123abcd".into(),
                bundle: "/run/berth/bundles/0123abcd".into(),
                exit_file: "/run/berth/exits/0123abcd".into(),
                log_path: Some("/var/lib/berth/containers/0123abcd/ctr.log".into()),
                oom_file: Some("/sys/fs/cgroup/memory/berth/0123abcd/memory.oom_control".into()),
                start: true,
                terminal: true,
                stdin: true,
                restore: Some(RestoreArgs {
                    image_path: "/var/lib/berth/checkpoints/0123abcd".into(),
                    work_path: "/var/lib/berth/checkpoints/0123abcd.work".into(),
                    tcp_established: true,
                }),
            },
            attach: true,
            attach_stdin: true,
            notify_bus: Some("unix:path=/tmp/bus socket".into()),
        };
        assert_eq!(parsed(&every_field), every_field);

        let fewest_fields = MonitorOptions {
            runc: RuncCommand::new("runc", "/run/berth/runtime".into(), false),
            request: LaunchRequest {
                log_path: None,
                oom_file: None,
                start: false,
                terminal: false,
                stdin: false,
                restore: None,
                ..every_field.request.clone()
            },
            attach: false,
            attach_stdin: false,
            notify_bus: None,
        };
        assert_eq!(parsed(&fewest_fields), fewest_fields);

        let restore_without_tcp = MonitorOptions {
            request: LaunchRequest {
                restore: Some(RestoreArgs {
                    tcp_established: false,
                    ..every_field.request.restore.clone().unwrap()
                }),
                ..fewest_fields.request.clone()
            },
            ..fewest_fields.clone()
        };
        assert_eq!(parsed(&restore_without_tcp), restore_without_tcp);
    }

    #[test]
    fn the_monitor_refuses_incomplete_options() {
        let parse = |args: &[&str]| MonitorOptions::try_parse_from(args).is_ok();
        let required = [
            "berth-monitor",
            "--runtime",
            "runc",
            "--runtime-root",
            "/r",
            "--id",
            "a",
            "--bundle",
            "/b",
            "--exit-file",
            "/e",
        ];
        assert!(parse(&required));
        assert!(!parse(&required[..required.len() - 2]));
        assert!(!parse(&[&required[..], &["--attach-stdin"]].concat()));
        assert!(!parse(
            &[&required[..], &["--restore-image", "/i"]].concat()
        ));
        assert!(!parse(&[&required[..], &["--tcp-established"]].concat()));
    }

    #[test]
    fn oom_kills_are_read_from_either_cgroup_version() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("memory.oom_control");
        std::fs::write(&v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n").unwrap();
        assert!(oom_killed(&v1));
        let v2 = dir.path().join("memory.events");
        std::fs::write(&v2, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n").unwrap();
        assert!(!oom_killed(&v2));
        assert!(!oom_killed(&dir.path().join("missing")));
    }
}
