//! Interactive stdio for `run`, `attach` and `exec`: berthctl's own stdin, stdout and stderr
//! joined to the descriptors berthd handed out (which lead to the container's monitor, or
//! to a pty master), with raw mode and window-size changes for terminals.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::termios::{self, SetArg, Termios};
use tokio::signal::unix::{signal, SignalKind};

use super::proxy::{ContainerProxy, ExecSessionProxy};

/// Where the remote side's streams are.
pub struct Streams {
    /// Its input; `None` when berthctl sends none (`-i` not given).
    pub stdin: Option<OwnedFd>,
    /// Its output (a terminal's only stream).
    pub stdout: OwnedFd,
    pub stderr: Option<OwnedFd>,
}

/// What to tell about window-size changes.
pub enum Resizer<'a> {
    Container(&'a ContainerProxy<'a>),
    Session(&'a ExecSessionProxy<'a>),
}

impl Resizer<'_> {
    async fn resize(&self, (rows, cols): (u16, u16)) {
        // A failed resize (the process just ended) is not worth stopping for.
        let _ = match self {
            Resizer::Container(container) => container.resize(rows, cols).await,
            Resizer::Session(session) => session.resize(rows, cols).await,
        };
    }
}

/// berthctl's terminal size, if its stdout (or stdin) is a terminal.
pub fn local_size() -> Option<(u16, u16)> {
    let size = crate::terminal::window_size(std::io::stdout().as_fd())
        .or_else(|_| crate::terminal::window_size(std::io::stdin().as_fd()))
        .ok()?;
    (size.0 > 0 && size.1 > 0).then_some(size)
}

/// Puts berthctl's stdin terminal in raw mode until dropped: every key, Ctrl-C included,
/// goes to the remote terminal.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Copies until the remote output ends: local stdin to the remote input (closing it at
/// local end of file), remote stdout and stderr to the local ones. With a terminal the
/// window size follows berthctl's.
pub async fn pump(streams: Streams, terminal: bool, resizer: Resizer<'_>) -> anyhow::Result<()> {
    let _raw = if terminal { RawMode::enter() } else { None };
    if let Some(input) = streams.stdin {
        // Not joined: a read of berthctl's stdin may block past the remote end.
        std::thread::spawn(move || copy(std::io::stdin().as_fd(), input));
    }
    let stdout = std::thread::spawn(move || copy_out(streams.stdout, false));
    let stderr = streams
        .stderr
        .map(|stderr| std::thread::spawn(move || copy_out(stderr, true)));
    let mut window_changes = signal(SignalKind::window_change())?;
    let outputs = tokio::task::spawn_blocking(move || {
        let _ = stdout.join();
        if let Some(stderr) = stderr {
            let _ = stderr.join();
        }
    });
    tokio::pin!(outputs);
    loop {
        tokio::select! {
            _ = &mut outputs => return Ok(()),
            Some(()) = window_changes.recv(), if terminal => {
                if let Some(size) = local_size() {
                    resizer.resize(size).await;
                }
            }
        }
    }
}

/// Copies `from` into `to` until end of file or an error (EIO ends a pty's output).
fn copy(from: std::os::fd::BorrowedFd<'_>, to: OwnedFd) {
    let mut to = std::fs::File::from(to);
    let mut buffer = vec![0u8; 65536];
    loop {
        match nix::unistd::read(from, &mut buffer) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

fn copy_out(from: OwnedFd, stderr: bool) {
    let mut buffer = vec![0u8; 65536];
    loop {
        let n = match nix::unistd::read(&from, &mut buffer) {
            Ok(0) => return,
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        };
        let written = if stderr {
            let mut out = std::io::stderr().lock();
            out.write_all(&buffer[..n]).and_then(|()| out.flush())
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(&buffer[..n]).and_then(|()| out.flush())
        };
        if written.is_err() {
            return;
        }
    }
}
