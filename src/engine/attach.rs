//! Attach, StartAndAttach and Resize: the client's stdio goes straight to the monitor.
//!
//! berthd makes a pipe per stream, hands the monitor its ends over the control socket (or at
//! launch, before the process runs) and returns the other ends to the caller. Output never
//! passes through berthd, and nothing is lost: a client attached at launch is registered
//! before the monitor reads the first byte.

use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;

use super::config::check_window_size;
use super::lifecycle::{check_dependencies, start_with, RunStdio};
use super::{control, event, Caller, Engine, EngineError, Locked, Result, State, Verb};
use crate::monitor::control::Request;
use crate::monitor::launcher::AttachEnds;

/// `Attach`/`StartAndAttach` options.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// Send this client's input to the container (default: for `StartAndAttach`, when the
    /// container keeps stdin open or has a terminal; for `Attach`, when it keeps stdin open,
    /// as `podman attach`). Its end of stream closes a pipe stdin.
    pub stdin: Option<bool>,
    /// The terminal's window size (rows, cols) for a process not yet started.
    pub console_size: Option<(u16, u16)>,
}

/// The caller's ends: it writes `stdin` and reads `stdout` and `stderr`.
#[derive(Debug)]
pub struct Attached {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Both halves of an attach before they are handed out.
fn streams(with_stdin: bool) -> Result<(Attached, AttachEnds)> {
    let pipe = || {
        nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| EngineError::Internal(format!("pipe: {e}")))
    };
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let (client_stdin, monitor_stdin) = if with_stdin {
        let (read, write) = pipe()?;
        (write, Some(read))
    } else {
        // Input nobody reads: accepted and dropped, never an error for the client.
        let null = std::fs::File::options()
            .write(true)
            .open("/dev/null")
            .map_err(|e| EngineError::Internal(format!("open /dev/null: {e}")))?;
        (OwnedFd::from(null), None)
    };
    Ok((
        Attached {
            stdin: client_stdin,
            stdout: stdout_read,
            stderr: stderr_read,
        },
        AttachEnds {
            stdout: stdout_write,
            stderr: stderr_write,
            stdin: monitor_stdin,
        },
    ))
}

impl Engine {
    /// Attaches to a container's stdio. With no process (stopped, exited) the streams are at
    /// end of file at once.
    pub async fn attach(
        &self,
        caller: Caller,
        id: &str,
        options: AttachOptions,
    ) -> Result<Attached> {
        let locked = self.inner().lock(id).await?;
        let state = locked.check(Verb::Attach)?;
        let (attached, ends) = streams(wants_stdin(&locked, &options, false))?;
        if state.has_process() {
            send_ends(&locked, ends).await?;
        }
        locked
            .record(vec![event("attach", locked.config(), caller, &[])])
            .await?;
        Ok(attached)
    }

    /// Attaches, then starts: the client is registered with the monitor before the process
    /// runs, so it sees the very first byte. Attaching to a running container is `Attach`.
    pub async fn start_and_attach(
        &self,
        caller: Caller,
        id: &str,
        recursive: bool,
        options: AttachOptions,
    ) -> Result<Attached> {
        let locked = self.inner().lock(id).await?;
        let state = locked.check(Verb::Start)?;
        let (attached, ends) = streams(wants_stdin(&locked, &options, true))?;
        match state {
            State::Running => send_ends(&locked, ends).await?,
            State::Created => {
                // A start that cannot happen must not leave this client's ends behind.
                check_dependencies(&locked, caller, recursive).await?;
                send_ends(&locked, ends).await?;
                if let (true, Some((rows, cols))) = (locked.config().terminal, options.console_size)
                {
                    // Before the process runs, so it starts with the right size.
                    let _ = resize_locked(&locked, rows, cols).await;
                }
                start_with(&locked, caller, recursive, RunStdio::default()).await?;
            }
            _ => {
                let stdio = RunStdio {
                    attach: Some(ends),
                    console_size: options.console_size,
                };
                start_with(&locked, caller, recursive, stdio).await?;
            }
        }
        locked
            .record(vec![event("attach", locked.config(), caller, &[])])
            .await?;
        Ok(attached)
    }

    /// Sets the window size of a terminal container; its process gets SIGWINCH.
    pub async fn resize(&self, id: &str, rows: u16, cols: u16) -> Result<()> {
        check_window_size(rows, cols)?;
        let locked = self.inner().lock(id).await?;
        if !locked.config().terminal {
            return Err(EngineError::InvalidArgument(format!(
                "container {id} has no terminal"
            )));
        }
        locked.check(Verb::Resize)?;
        resize_locked(&locked, rows, cols).await
    }
}

/// Whether this client's input goes to the container: only where it has an input to
/// take. By default it does for `StartAndAttach` (the client that runs it) and, as with
/// `podman attach`, for `Attach` to a container that keeps stdin open (`Stdin`); the
/// `Stdin` option false opts out.
fn wants_stdin(locked: &Locked<'_>, options: &AttachOptions, by_default: bool) -> bool {
    let config = locked.config();
    let open = config.stdin || config.terminal;
    open && options.stdin.unwrap_or(by_default || config.stdin)
}

/// Hands a client's ends to the container's monitor. A monitor that is already gone (the
/// process just ended) leaves the client at end of file, which is what it would have seen.
async fn send_ends(locked: &Locked<'_>, ends: AttachEnds) -> Result<()> {
    let request = Request::Attach {
        stdin: ends.stdin.is_some(),
    };
    let reply = control(locked, request, move || {
        let mut fds = vec![ends.stdout, ends.stderr];
        fds.extend(ends.stdin);
        fds
    })
    .await?;
    if reply.is_none() {
        tracing::debug!(id = %locked.id(), "attach: the monitor is gone; the client is at EOF");
    }
    Ok(())
}

async fn resize_locked(locked: &Locked<'_>, rows: u16, cols: u16) -> Result<()> {
    match control(locked, Request::Resize { rows, cols }, Vec::new).await? {
        Some(_) => Ok(()),
        None => Err(locked.refused(Verb::Resize)),
    }
}
