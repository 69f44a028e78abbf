//! The monitor's loop: one `poll` over the container's output, its pidfd, the signalfd,
//! the control socket and the attached clients; output goes to the log and every client,
//! client input to the container, control requests are served as they come.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{accept4, SockFlag};
use nix::unistd::Pid;

use super::control::{self, Reply, Request};
use super::log::LogWriter;
use super::process::{reap_children, take_console, MonitorOptions, DRAIN_LIMIT, FLUSH_LIMIT};
use super::sessions::{LiveExec, PendingExec};
use super::stdio::{Client, Input, HIGH_WATER};

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

pub(super) struct Monitor<'a> {
    pub(super) options: &'a MonitorOptions,
    pub(super) main: Pid,
    pub(super) pidfd: OwnedFd,
    pub(super) signals: SignalFd,
    pub(super) control: Option<OwnedFd>,
    pub(super) sources: Vec<(OwnedFd, usize)>,
    pub(super) master: Option<OwnedFd>,
    pub(super) input: Option<Input>,
    pub(super) clients: Vec<Client>,
    pub(super) log: LogWriter,
    pub(super) exit_code: Option<i32>,
    pub(super) pending_execs: Vec<PendingExec>,
    pub(super) live_execs: HashMap<String, LiveExec>,
    /// Pty masters of terminal sessions that ended before anyone opened them: their output
    /// waits there for the first `OpenPty`.
    pub(super) unopened_ptys: HashMap<String, OwnedFd>,
    /// Exits of processes not (yet) known as sessions, kept while a `runc exec` runs: its
    /// process may die before runc has told us its pid.
    pub(super) orphans: HashMap<i32, i32>,
}

impl Monitor<'_> {
    /// Copies output to the log and to clients, serves requests and records session exits
    /// until the main process has exited and its output is drained.
    pub(super) fn run(&mut self) {
        let mut drain_deadline: Option<Instant> = None;
        let mut buffer = vec![0u8; 65536];
        loop {
            if let Some(deadline) = drain_deadline {
                if self.sources.is_empty() || Instant::now() >= deadline {
                    break;
                }
            }
            let timeout = match drain_deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left.as_millis() as i32).unwrap_or(PollTimeout::ZERO)
                }
                None => PollTimeout::NONE,
            };
            let Some(ready) = self.wait_ready(timeout) else {
                continue;
            };
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
                    Slot::ClientOutput(index, stream) => self.flush_client(index, stream, revents),
                    Slot::Input => self.flush_input(),
                    Slot::Console(index) => self.take_exec_console(index),
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

    /// One `poll` over everything watched now: the slots that are ready, or `None` when none
    /// is (a timeout, a signal, a transient failure).
    fn wait_ready(&self, timeout: PollTimeout) -> Option<Vec<(Slot, PollFlags)>> {
        let (mut fds, slots) = self.poll_set();
        match poll(&mut fds, timeout) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(Errno::EINTR) => return None,
            // Never give up on a live container (that would write a false exit code); a
            // transient failure (ENOMEM) is retried after a pause.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                return None;
            }
        }
        let ready = fds
            .iter()
            .zip(&slots)
            .filter_map(|(fd, slot)| fd.revents().filter(|r| !r.is_empty()).map(|r| (*slot, r)))
            .collect();
        Some(ready)
    }

    /// What to watch now, each descriptor with the slot it stands for.
    fn poll_set(&self) -> (Vec<PollFd<'_>>, Vec<Slot>) {
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
        (fds, slots)
    }

    /// A client's output end is writable (or its reader has gone): sends what is pending, and
    /// drops the end once it fails.
    fn flush_client(&mut self, index: usize, stream: usize, revents: PollFlags) {
        let client = &mut self.clients[index];
        let failed = revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)
            || client.outputs[stream]
                .as_mut()
                .is_some_and(|sink| sink.flush().is_err());
        if failed {
            client.outputs[stream] = None;
        }
    }

    /// The container's stdin is writable: sends clients' pending input, and drops it once it
    /// fails.
    fn flush_input(&mut self) {
        if let Some(input) = self.input.as_mut() {
            if input.flush().is_err() {
                self.input = None;
            }
        }
    }

    /// runc connected to a pending terminal session's console socket: takes its pty master.
    fn take_exec_console(&mut self, index: usize) {
        let pending = &mut self.pending_execs[index];
        if let Some(console) = &pending.console {
            if let Ok(Some(master)) = take_console(console) {
                pending.master = Some(master);
                pending.console = None;
            }
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
    pub(super) fn reap(&mut self) {
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
                    // libc's kill, not nix's: nix's `Signal` has no real-time signals.
                    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
                    match unsafe { libc::kill(live.pid, signal) } {
                        0 => Reply::Ok,
                        _ => Reply::Error {
                            message: format!("kill {signal}: {}", std::io::Error::last_os_error()),
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

    /// Gives attached clients the output they have not read yet (bounded), then closes them.
    pub(super) fn flush_clients(&mut self) {
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
pub(super) fn answer(connection: &OwnedFd, reply: &Reply, fd: Option<&OwnedFd>) {
    let _ = fcntl(connection.as_fd(), FcntlArg::F_SETFL(OFlag::empty()));
    if let Ok(bytes) = serde_json::to_vec(reply) {
        let fds: Vec<_> = fd.map(|fd| fd.as_fd()).into_iter().collect();
        let _ = control::send(connection.as_fd(), &bytes, &fds);
    }
}
