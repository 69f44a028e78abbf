//! The monitor process (`berth-monitor`): conmon's job, in one small single-threaded loop.
//!
//! Order matters and follows conmon-rs: fork away from berthd before anything else, become a
//! session leader and a subreaper, then run `runc create`; the container's init is reparented
//! to us when runc exits, so we can wait for it and read its status. The same holds for exec
//! sessions: `runc exec --detach` runs as our child, so each session's process is reparented
//! to us and its exit status is ours to record, whenever it comes.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{accept4, SockFlag};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, ForkResult, Pid};

use super::control::{self, Reply, Request};
use super::protocol::{write_exit_file, ExitRecord, StartReport};
use super::stdio::{set_nonblocking, Client, Input, HIGH_WATER};
use crate::clock::{now_micros, rfc3339_nanos};

/// How long output is still drained after the main process has gone.
const DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// How long exec sessions may take to die after the container's init (the kernel kills them).
const SESSION_LIMIT: Duration = Duration::from_secs(5);

/// How long attached clients get to read the last output once the container is gone.
const FLUSH_LIMIT: Duration = Duration::from_secs(30);

/// Pipe capacity for the container's output: fewer wake-ups under heavy output.
const PIPE_SIZE: i32 = 1024 * 1024;

/// The file berthd creates in the bundle while it checkpoints the container.
pub const CHECKPOINT_MARKER: &str = "checkpointing";

/// The console socket runc hands the main process's pty master through.
const CONSOLE_SOCKET: &str = "console.sock";

/// What the monitor is told on its command line.
pub struct MonitorOptions {
    pub id: String,
    pub runtime: String,
    pub runtime_root: PathBuf,
    pub bundle: PathBuf,
    pub exit_file: PathBuf,
    /// k8s-file log; `None` for `LogDriver none`.
    pub log_path: Option<PathBuf>,
    /// A cgroup file with an `oom_kill N` line (v1 `memory.oom_control`, v2 `memory.events`).
    pub oom_file: Option<PathBuf>,
    /// `run --detach` (create and start) instead of `create`.
    pub start: bool,
    /// The process gets a pty (`process.terminal` in config.json).
    pub terminal: bool,
    /// Keep the process's stdin open for attached clients (`Stdin`).
    pub stdin: bool,
    /// A client attached from the start (`StartAndAttach`): its stdout, stderr and stdin ends.
    pub attach: Option<Client>,
    /// Restore from a checkpoint (`runc restore --detach`) instead of creating.
    pub restore: Option<RestoreArgs>,
    /// runc uses its systemd cgroup driver (`--systemd-cgroup`).
    pub systemd_cgroup: bool,
    /// After the exit is recorded, ping `org.berth.Engine1` on this bus (`system` or an
    /// address), which starts berthd if it has idled out.
    pub notify_bus: Option<String>,
}

impl MonitorOptions {
    /// The runtime with its global options.
    fn runtime_command(&self) -> Command {
        let mut command = Command::new(&self.runtime);
        command.arg("--root").arg(&self.runtime_root);
        if self.systemd_cgroup {
            command.arg("--systemd-cgroup");
        }
        command
    }
}

/// Where a restore's checkpoint is and how to restore it.
#[derive(Debug, Clone)]
pub struct RestoreArgs {
    pub image_path: PathBuf,
    pub work_path: PathBuf,
    pub tcp_established: bool,
}

/// Runs the monitor. Returns only in the short-lived first process, which exits at once so
/// berthd can reap it; the forked monitor ends with `std::process::exit`.
pub fn run(options: MonitorOptions) -> i32 {
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
    let code = match monitor(options) {
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

fn monitor(mut options: MonitorOptions) -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "become subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Sockets are bound by short relative names in the bundle.
    std::env::set_current_dir(&options.bundle)
        .map_err(|e| format!("enter {}: {e}", options.bundle.display()))?;
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

    let attached = options.attach.take();
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
        log: LogWriter::open(options.log_path.as_ref()),
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
        oom_killed: options.oom_file.as_ref().is_some_and(oom_killed),
        // berthd leaves this marker while `runc checkpoint` runs: CRIU ended the process.
        checkpointed: std::fs::remove_file(CHECKPOINT_MARKER).is_ok(),
    };
    let written =
        write_exit_file(&options.exit_file, &record).map_err(|e| format!("write exit file: {e}"));
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

/// Runs `runc create` (or `run --detach`) and returns the container's pid, a pidfd on it and
/// its stdio. A container made but not watchable is deleted again.
fn create_container(options: &MonitorOptions) -> Result<(i32, OwnedFd, ContainerStdio), String> {
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let mut command = options.runtime_command();
    match &options.restore {
        Some(restore) => {
            command
                .args(["restore", "--detach", "--image-path"])
                .arg(&restore.image_path)
                .arg("--work-path")
                .arg(&restore.work_path);
            if restore.tcp_established {
                command.arg("--tcp-established");
            }
        }
        None if options.start => {
            command.args(["run", "--detach"]);
        }
        None => {
            command.arg("create");
        }
    }
    command
        .arg("--bundle")
        .arg(&options.bundle)
        .arg("--pid-file")
        .arg(options.bundle.join("pid"));
    // What runc says when it fails: the container's stderr pipe, or its own for a terminal.
    let (errors, mut stdio, console) = if options.terminal {
        let console = console_listener(Path::new(CONSOLE_SOCKET))?;
        command.arg("--console-socket").arg(CONSOLE_SOCKET);
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
        (errors_read, stdio, Some(console))
    } else {
        let (stdout_read, stdout_write) = pipe()?;
        let (stderr_read, stderr_write) = pipe()?;
        for fd in [&stdout_read, &stderr_read] {
            let _ = fcntl(fd.as_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        }
        let errors = stderr_read.try_clone().map_err(|e| format!("dup: {e}"))?;
        let input = if options.stdin {
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
        (errors, stdio, None)
    };
    let mut child = command
        .arg(&options.id)
        .current_dir(&options.bundle)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", options.runtime))?;
    // The Command and its copies of the write ends are gone: only the container holds them.
    drop(command);
    let master = match console {
        Some(listener) => match receive_console(&listener, child.id() as i32) {
            Ok(master) => Some(master),
            Err(error) => {
                let _ = child.wait();
                let message = read_available(&errors);
                return Err(format!("{error}: {}", message.trim()));
            }
        },
        None => None,
    };
    let status = child
        .wait()
        .map_err(|e| format!("wait for {}: {e}", options.runtime))?;
    if !status.success() {
        let verb = match (&options.restore, options.start) {
            (Some(_), _) => "restore",
            (None, true) => "run",
            (None, false) => "create",
        };
        return Err(format!(
            "{} {verb}: {}",
            options.runtime,
            read_available(&errors).trim()
        ));
    }
    drop(errors);
    if let Some(master) = master {
        let input = master.try_clone().map_err(|e| format!("dup: {e}"))?;
        let output = master.try_clone().map_err(|e| format!("dup: {e}"))?;
        set_nonblocking(&output);
        stdio.input = Some(Input::new(input));
        stdio.sources = vec![(output, 0)];
        stdio.master = Some(master);
    }
    let pid_file = options.bundle.join("pid");
    let watched = read_pid_file(&pid_file).and_then(|pid| {
        Ok((
            pid,
            pidfd_open(pid).map_err(|e| format!("pidfd_open {pid}: {e}"))?,
        ))
    });
    match watched {
        Ok((pid, pidfd)) => Ok((pid, pidfd, stdio)),
        Err(error) => {
            // The runtime made a container we cannot watch: take it away again rather than
            // leave it running with nobody to record its exit.
            let _ = options
                .runtime_command()
                .args(["delete", "--force", &options.id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            Err(error)
        }
    }
}

fn read_pid_file(path: &Path) -> Result<i32, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("read {}: {e}", path.display()))
        .and_then(|text| {
            text.trim()
                .parse::<i32>()
                .map_err(|e| format!("pid file {}: {e}", path.display()))
        })
}

/// A listening stream socket for runc's `--console-socket` (non-blocking, close-on-exec).
fn console_listener(path: &Path) -> Result<OwnedFd, String> {
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
fn take_console(listener: &OwnedFd) -> Result<Option<OwnedFd>, String> {
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
fn reap_children() -> Vec<(i32, i32)> {
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

/// An exec session whose `runc exec --detach` is still running.
struct PendingExec {
    session: String,
    runtime_pid: i32,
    /// The berthd connection waiting for the reply.
    connection: OwnedFd,
    console: Option<OwnedFd>,
    master: Option<OwnedFd>,
    exit_file: PathBuf,
}

/// An exec session whose process runs.
struct LiveExec {
    pid: i32,
    master: Option<OwnedFd>,
    /// Someone took the pty master (`OpenPty`).
    opened: bool,
    exit_file: PathBuf,
}

/// What a poll slot stands for.
#[derive(Clone, Copy)]
enum Slot {
    Source(usize),
    Pidfd,
    Signals,
    Control,
    ClientStdin(usize),
    ClientOutput(usize, usize),
    Input,
    Console(usize),
}

struct Monitor<'a> {
    options: &'a MonitorOptions,
    main: Pid,
    pidfd: OwnedFd,
    signals: SignalFd,
    control: Option<OwnedFd>,
    sources: Vec<(OwnedFd, usize)>,
    master: Option<OwnedFd>,
    input: Option<Input>,
    clients: Vec<Client>,
    log: LogWriter,
    exit_code: Option<i32>,
    pending_execs: Vec<PendingExec>,
    live_execs: HashMap<String, LiveExec>,
    /// Pty masters of terminal sessions that ended before anyone opened them: their output
    /// waits there for the first `OpenPty`.
    unopened_ptys: HashMap<String, OwnedFd>,
    /// Exits of processes not (yet) known as sessions, kept while a `runc exec` runs: its
    /// process may die before runc has told us its pid.
    orphans: HashMap<i32, i32>,
}

impl Monitor<'_> {
    /// Copies output to the log and to clients, serves requests and records session exits
    /// until the main process has exited and its output is drained.
    fn run(&mut self) {
        let mut drain_deadline: Option<Instant> = None;
        let mut buffer = vec![0u8; 65536];
        loop {
            if let Some(deadline) = drain_deadline {
                if self.sources.is_empty() || Instant::now() >= deadline {
                    break;
                }
            }
            // Once the process has exited, its remaining output is read regardless, so the
            // log gets all of it before the drain ends.
            let backpressure =
                self.exit_code.is_none() && self.clients.iter().any(|c| c.pending() > HIGH_WATER);
            let mut fds = Vec::with_capacity(8 + 3 * self.clients.len());
            let mut slots = Vec::with_capacity(fds.capacity());
            if !backpressure {
                for (index, (fd, _)) in self.sources.iter().enumerate() {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    slots.push(Slot::Source(index));
                }
            }
            if self.exit_code.is_none() {
                fds.push(PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN));
                slots.push(Slot::Pidfd);
            }
            fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
            slots.push(Slot::Signals);
            if let Some(control) = &self.control {
                fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
                slots.push(Slot::Control);
            }
            let input_ready = self.input.as_ref().is_some_and(Input::is_ready);
            for (index, client) in self.clients.iter().enumerate() {
                if let (Some(stdin), true) = (&client.stdin, input_ready) {
                    fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
                    slots.push(Slot::ClientStdin(index));
                }
                for (stream, sink) in client.outputs.iter().enumerate() {
                    if let Some(sink) = sink {
                        // With nothing to write, still watch for the reader going away.
                        let events = if sink.pending() > 0 {
                            PollFlags::POLLOUT
                        } else {
                            PollFlags::empty()
                        };
                        fds.push(PollFd::new(sink.fd.as_fd(), events));
                        slots.push(Slot::ClientOutput(index, stream));
                    }
                }
            }
            if let Some(input) = self.input.as_ref().filter(|i| i.has_pending()) {
                fds.push(PollFd::new(input.fd.as_fd(), PollFlags::POLLOUT));
                slots.push(Slot::Input);
            }
            for (index, pending) in self.pending_execs.iter().enumerate() {
                if let Some(console) = &pending.console {
                    fds.push(PollFd::new(console.as_fd(), PollFlags::POLLIN));
                    slots.push(Slot::Console(index));
                }
            }
            let timeout = match drain_deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left.as_millis() as i32).unwrap_or(PollTimeout::ZERO)
                }
                None => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                // Never give up on a live container (that would write a false exit code); a
                // transient failure (ENOMEM) is retried after a pause.
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            let ready: Vec<(Slot, PollFlags)> = fds
                .iter()
                .zip(&slots)
                .filter_map(|(fd, slot)| fd.revents().filter(|r| !r.is_empty()).map(|r| (*slot, r)))
                .collect();
            drop(fds);
            let mut closed_sources = Vec::new();
            for (slot, revents) in ready {
                match slot {
                    Slot::Source(index) => {
                        if !self.copy_output(index, &mut buffer) {
                            closed_sources.push(index);
                        }
                    }
                    Slot::Pidfd | Slot::Signals => {
                        while let Ok(Some(_)) = self.signals.read_signal() {}
                        self.reap();
                        if self.exit_code.is_some() && drain_deadline.is_none() {
                            drain_deadline = Some(Instant::now() + DRAIN_LIMIT);
                        }
                    }
                    Slot::Control => self.accept_requests(),
                    Slot::ClientStdin(index) => self.forward_input(index, &mut buffer),
                    Slot::ClientOutput(index, stream) => {
                        let client = &mut self.clients[index];
                        let failed = revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)
                            || client.outputs[stream]
                                .as_mut()
                                .is_some_and(|sink| sink.flush().is_err());
                        if failed {
                            client.outputs[stream] = None;
                        }
                    }
                    Slot::Input => {
                        if let Some(input) = self.input.as_mut() {
                            if input.flush().is_err() {
                                self.input = None;
                            }
                        }
                    }
                    Slot::Console(index) => {
                        let pending = &mut self.pending_execs[index];
                        if let Some(console) = &pending.console {
                            if let Ok(Some(master)) = take_console(console) {
                                pending.master = Some(master);
                                pending.console = None;
                            }
                        }
                    }
                }
            }
            closed_sources.sort_unstable();
            for index in closed_sources.into_iter().rev() {
                self.sources.remove(index);
            }
            if self.input.as_ref().is_some_and(Input::is_done) {
                self.input = None;
            }
            self.clients.retain(|client| !client.is_gone());
        }
    }

    /// Reads one chunk of output into the log and every client; false at end of stream.
    fn copy_output(&mut self, index: usize, buffer: &mut [u8]) -> bool {
        let (fd, stream) = &self.sources[index];
        match nix::unistd::read(fd, buffer) {
            Ok(0) => false,
            Ok(length) => {
                let bytes = &buffer[..length];
                self.log.write(*stream, bytes);
                for client in &mut self.clients {
                    client.send(*stream, bytes);
                }
                true
            }
            Err(Errno::EINTR | Errno::EAGAIN) => true,
            // EIO: a pty whose last slave is closed.
            Err(_) => false,
        }
    }

    /// Moves what a client sent into the container's stdin; its end of stream closes the
    /// container's stdin (a pipe) or only detaches its input (a terminal).
    fn forward_input(&mut self, index: usize, buffer: &mut [u8]) {
        let client = &mut self.clients[index];
        let Some(stdin) = &client.stdin else {
            return;
        };
        match nix::unistd::read(stdin, buffer) {
            Ok(0) | Err(Errno::EBADF | Errno::EIO) => {
                client.stdin = None;
                if self.master.is_none() {
                    if let Some(input) = self.input.as_mut() {
                        input.close_when_flushed();
                    }
                }
            }
            Ok(length) => {
                if let Some(input) = self.input.as_mut() {
                    if input.push(&buffer[..length]).is_err() {
                        self.input = None;
                    }
                }
            }
            Err(_) => {}
        }
    }

    /// Reaps children and records what their exits mean: the container's, a session's, or a
    /// `runc exec` finishing.
    fn reap(&mut self) {
        let reaped = reap_children();
        if reaped.is_empty() {
            return;
        }
        let mut finished_runtimes = Vec::new();
        for (pid, code) in reaped {
            if pid == self.main.as_raw() {
                self.exit_code = Some(code);
            } else if let Some(index) = self.pending_execs.iter().position(|p| p.runtime_pid == pid)
            {
                finished_runtimes.push((index, code));
            } else if let Some(session) = self
                .live_execs
                .iter()
                .find(|(_, live)| live.pid == pid)
                .map(|(session, _)| session.clone())
            {
                self.session_exited(&session, code);
            } else if !self.pending_execs.is_empty() {
                self.orphans.insert(pid, code);
            }
        }
        finished_runtimes.sort_unstable();
        for (index, code) in finished_runtimes.into_iter().rev() {
            let pending = self.pending_execs.remove(index);
            self.exec_started(pending, code);
        }
        if self.pending_execs.is_empty() {
            self.orphans.clear();
        }
    }

    /// `runc exec --detach` has exited with `code`: reply to berthd with the session's pid or
    /// the runtime's error.
    fn exec_started(&mut self, mut pending: PendingExec, code: i32) {
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
                error: runtime_log_error(Path::new(&format!("exec-{name}.log")))
                    .unwrap_or_else(|| format!("{} exec exited with {code}", self.options.runtime)),
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
    fn session_exited(&mut self, session: &str, code: i32) {
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

    /// Serves every connection waiting on the control socket.
    fn accept_requests(&mut self) {
        loop {
            let Some(listener) = &self.control else {
                return;
            };
            let connection = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            // The request follows the connect at once; a client that sends nothing within a
            // second is dropped rather than stall the container's output.
            let _ = nix::sys::socket::setsockopt(
                &connection,
                nix::sys::socket::sockopt::ReceiveTimeout,
                &nix::sys::time::TimeVal::new(1, 0),
            );
            let Ok(Some((bytes, fds))) = control::receive(connection.as_fd()) else {
                continue;
            };
            match serde_json::from_slice::<Request>(&bytes) {
                Ok(request) => self.serve(request, fds, connection),
                Err(error) => answer(
                    &connection,
                    &Reply::Error {
                        message: format!("bad request: {error}"),
                    },
                    None,
                ),
            }
        }
    }

    fn serve(&mut self, request: Request, fds: Vec<OwnedFd>, connection: OwnedFd) {
        let reply = match request {
            Request::Attach { stdin } => self.attach(stdin, fds),
            Request::Resize { rows, cols } => match &self.master {
                Some(master) => {
                    resized(crate::terminal::set_window_size(master.as_fd(), rows, cols))
                }
                None => Reply::Error {
                    message: "the container has no terminal".into(),
                },
            },
            Request::Exec {
                session,
                process,
                terminal,
                exit_file,
            } => match self.exec(&session, &process, terminal, exit_file, fds, connection) {
                // The reply waits for `runc exec`.
                Ok(()) => return,
                Err((connection, error)) => {
                    answer(&connection, &Reply::ExecFailed { error }, None);
                    return;
                }
            },
            Request::OpenPty { session } => {
                if let Some(live) = self.live_execs.get_mut(&session) {
                    if let Some(master) = &live.master {
                        live.opened = true;
                        answer(&connection, &Reply::Ok, Some(master));
                        return;
                    }
                }
                // An ended session's output is still in its pty, for whoever opens it first.
                match self.unopened_ptys.remove(&session) {
                    Some(master) => {
                        answer(&connection, &Reply::Ok, Some(&master));
                        return;
                    }
                    None => Reply::Error {
                        message: format!("exec session {session} has no terminal to open"),
                    },
                }
            }
            Request::ResizeExec {
                session,
                rows,
                cols,
            } => match self
                .live_execs
                .get(&session)
                .and_then(|l| l.master.as_ref())
            {
                Some(master) => {
                    resized(crate::terminal::set_window_size(master.as_fd(), rows, cols))
                }
                None => Reply::Error {
                    message: format!("exec session {session} has no live terminal"),
                },
            },
            Request::KillExec { session, signal } => match self.live_execs.get(&session) {
                Some(live) => {
                    // The pid is still ours: a reaped session leaves `live_execs` at once.
                    match Signal::try_from(signal) {
                        Ok(signal) => match nix::sys::signal::kill(Pid::from_raw(live.pid), signal)
                        {
                            Ok(()) => Reply::Ok,
                            Err(error) => Reply::Error {
                                message: format!("kill: {error}"),
                            },
                        },
                        Err(error) => Reply::Error {
                            message: format!("signal {signal}: {error}"),
                        },
                    }
                }
                None => Reply::NotRunning,
            },
        };
        answer(&connection, &reply, None);
    }

    fn attach(&mut self, stdin: bool, fds: Vec<OwnedFd>) -> Reply {
        let expected = if stdin { 3 } else { 2 };
        if fds.len() != expected {
            return Reply::Error {
                message: format!("attach needs {expected} descriptors, got {}", fds.len()),
            };
        }
        let mut fds = fds.into_iter();
        let (Some(stdout), Some(stderr)) = (fds.next(), fds.next()) else {
            return Reply::Error {
                message: "attach needs stdout and stderr".into(),
            };
        };
        let stdin = fds.next().filter(|_| self.input.is_some());
        // A terminal has one output stream: the client's stderr end stays at EOF.
        let stderr = Some(stderr).filter(|_| self.master.is_none());
        self.clients.push(Client::new(stdout, stderr, stdin));
        Reply::Ok
    }

    /// Starts `runc exec --detach` for a session; the reply is sent when runc exits.
    fn exec(
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
        let mut command = self.options.runtime_command();
        command
            .arg("--log")
            .arg(format!("exec-{session}.log"))
            .args(["--log-format", "json", "exec", "--detach", "--pid-file"])
            .arg(format!("exec-{session}.pid"))
            .arg("--process")
            .arg(process);
        let console = if terminal {
            let socket = format!("exec-{session}.sock");
            let listener = match console_listener(Path::new(&socket)) {
                Ok(listener) => listener,
                Err(error) => return Err((connection, error)),
            };
            command
                .arg("--console-socket")
                .arg(&socket)
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
        let child = match command.arg(&self.options.id).spawn() {
            Ok(child) => child,
            Err(error) => {
                return Err((
                    connection,
                    format!("cannot run {}: {error}", self.options.runtime),
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
    fn end_sessions(&mut self) {
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

    /// Gives attached clients the output they have not read yet (bounded), then closes them.
    fn flush_clients(&mut self) {
        let deadline = Instant::now() + FLUSH_LIMIT;
        loop {
            for client in &mut self.clients {
                client.stdin = None;
                for sink in &mut client.outputs {
                    if sink
                        .as_mut()
                        .is_some_and(|s| s.flush().is_err() || s.pending() == 0)
                    {
                        *sink = None;
                    }
                }
            }
            self.clients.retain(|client| !client.is_gone());
            let left = deadline.saturating_duration_since(Instant::now());
            if self.clients.is_empty() || left.is_zero() {
                return;
            }
            let mut fds: Vec<PollFd<'_>> = self
                .clients
                .iter()
                .flat_map(|c| c.outputs.iter().flatten())
                .map(|sink| PollFd::new(sink.fd.as_fd(), PollFlags::POLLOUT))
                .collect();
            let timeout =
                PollTimeout::try_from(left.as_millis() as i32).unwrap_or(PollTimeout::ZERO);
            let _ = poll(&mut fds, timeout);
        }
    }
}

fn resized(result: std::io::Result<()>) -> Reply {
    match result {
        Ok(()) => Reply::Ok,
        Err(error) => Reply::Error {
            message: format!("resize: {error}"),
        },
    }
}

/// Sends a reply on a request's connection (best effort: berthd may have given up).
fn answer(connection: &OwnedFd, reply: &Reply, fd: Option<&OwnedFd>) {
    let _ = fcntl(connection.as_fd(), FcntlArg::F_SETFL(OFlag::empty()));
    if let Ok(bytes) = serde_json::to_vec(reply) {
        let fds: Vec<_> = fd.map(|fd| fd.as_fd()).into_iter().collect();
        let _ = control::send(connection.as_fd(), &bytes, &fds);
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

/// Writes container output in the k8s-file format podman and CRI-O use:
/// `<RFC 3339 time> <stdout|stderr> <F|P> <text>`, `P` marking a line cut short.
pub struct LogWriter {
    file: Option<File>,
}

impl LogWriter {
    pub fn open(path: Option<&PathBuf>) -> LogWriter {
        let file = path.and_then(|path| File::options().create(true).append(true).open(path).ok());
        LogWriter { file }
    }

    pub fn write(&mut self, stream: usize, bytes: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let stream = if stream == 0 { "stdout" } else { "stderr" };
        let time = rfc3339_nanos(SystemTime::now());
        let mut out = Vec::with_capacity(bytes.len() + 64);
        let mut rest = bytes;
        while !rest.is_empty() {
            let (line, tag, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(end) => (&rest[..end], "F", &rest[end + 1..]),
                None => (rest, "P", &rest[rest.len()..]),
            };
            out.extend_from_slice(format!("{time} {stream} {tag} ").as_bytes());
            out.extend_from_slice(line);
            out.push(b'\n');
            rest = next;
        }
        let _ = file.write_all(&out);
    }
}

/// Reads a log written by [`LogWriter`] back into its text lines (used by tests and `Logs`).
pub fn read_log_lines(path: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut text = String::new();
    File::open(path)?.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter_map(|line| line.splitn(4, ' ').nth(3).map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_tagged_full_or_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr.log");
        let mut log = LogWriter::open(Some(&path));
        log.write(0, b"hello\nwor");
        log.write(1, b"oops\n");
        let text = std::fs::read_to_string(&path).unwrap();
        let fields: Vec<Vec<&str>> = text.lines().map(|l| l.splitn(4, ' ').collect()).collect();
        assert_eq!(fields.len(), 3);
        assert_eq!(&fields[0][1..], ["stdout", "F", "hello"]);
        assert_eq!(&fields[1][1..], ["stdout", "P", "wor"]);
        assert_eq!(&fields[2][1..], ["stderr", "F", "oops"]);
        assert_eq!(read_log_lines(&path).unwrap(), vec!["hello", "wor", "oops"]);
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
