//! The monitor's control socket: how berthd hands a running monitor stream ends (attach),
//! asks for a pty master, resizes a terminal or starts an exec session.
//!
//! One `SOCK_SEQPACKET` connection per request: a JSON request with its file descriptors in
//! `SCM_RIGHTS`, one JSON reply (with a descriptor for `OpenPty`). The socket is `ctl` in the
//! container's bundle directory (root only); berthd reaches it through
//! `/proc/self/fd/<dir>/ctl`, which keeps the address short whatever the `--runroot`.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    connect, recvmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};
use serde::{Deserialize, Serialize};

/// The socket's name inside the bundle directory.
pub const SOCKET_NAME: &str = "ctl";

/// Largest request or reply (JSON; paths and ids only).
const MESSAGE_LIMIT: usize = 64 * 1024;

/// Most descriptors one message carries.
const FD_LIMIT: usize = 4;

/// How long berthd waits for a reply (an exec waits on `runc exec`).
const REPLY_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Adds a client. Descriptors: stdout and stderr write ends, then the stdin read end when
    /// `stdin` is set.
    Attach {
        stdin: bool,
    },
    /// Sets the container terminal's window size.
    Resize {
        rows: u16,
        cols: u16,
    },
    /// Starts `runc exec --detach` with `process` (an OCI process JSON). Without a terminal
    /// the descriptors are the process's stdin, stdout and stderr.
    Exec {
        session: String,
        process: PathBuf,
        terminal: bool,
        exit_file: PathBuf,
    },
    /// Replies with a descriptor of the session's pty master.
    OpenPty {
        session: String,
    },
    ResizeExec {
        session: String,
        rows: u16,
        cols: u16,
    },
    KillExec {
        session: String,
        signal: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Ok,
    Error {
        message: String,
    },
    ExecStarted {
        pid: u32,
    },
    /// `runc exec` failed; `error` is its message (it decides 126/127 against a failure).
    ExecFailed {
        error: String,
    },
    /// The container's process (or the session's) has ended: nothing to do it to.
    NotRunning,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No monitor listens: the container's process has ended (or never ran).
    #[error("the container's monitor is gone")]
    Gone,
    #[error("monitor control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("monitor control socket: {0}")]
    Sys(#[from] nix::errno::Errno),
    #[error("monitor reply: {0}")]
    Protocol(String),
}

/// Sends one request to the monitor of the container whose bundle is `bundle` and returns
/// its reply with any descriptor it carried.
pub fn call(
    bundle: &Path,
    request: &Request,
    fds: &[BorrowedFd<'_>],
) -> Result<(Reply, Vec<OwnedFd>), ControlError> {
    let dir = std::fs::File::open(bundle).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => ControlError::Gone,
        _ => ControlError::Io(error),
    })?;
    let socket = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let address =
        UnixAddr::new(format!("/proc/self/fd/{}/{SOCKET_NAME}", dir.as_raw_fd()).as_str())?;
    match connect(socket.as_raw_fd(), &address) {
        Ok(()) => {}
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ECONNREFUSED) => {
            return Err(ControlError::Gone)
        }
        Err(error) => return Err(error.into()),
    }
    drop(dir);
    setsockopt(&socket, sockopt::ReceiveTimeout, &timeval(REPLY_LIMIT))?;
    let body = serde_json::to_vec(request).map_err(|e| ControlError::Protocol(e.to_string()))?;
    // A monitor that closes the connection without a word is on its way out.
    let gone = |error: nix::errno::Errno| match error {
        nix::errno::Errno::ECONNRESET | nix::errno::Errno::EPIPE => ControlError::Gone,
        other => ControlError::Sys(other),
    };
    send(socket.as_fd(), &body, fds).map_err(gone)?;
    let Some((bytes, fds)) = receive(socket.as_fd()).map_err(gone)? else {
        return Err(ControlError::Gone);
    };
    let reply =
        serde_json::from_slice(&bytes).map_err(|e| ControlError::Protocol(e.to_string()))?;
    Ok((reply, fds))
}

fn timeval(duration: Duration) -> nix::sys::time::TimeVal {
    nix::sys::time::TimeVal::new(duration.as_secs() as i64, duration.subsec_micros() as i64)
}

/// Sends one message with descriptors.
pub fn send(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> nix::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let control: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &[IoSlice::new(bytes)],
            control,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map(|_| ()),
        }
    }
}

/// Receives one message and the descriptors that came with it (close-on-exec);
/// `None` at end of stream.
pub fn receive(socket: BorrowedFd<'_>) -> nix::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buffer = vec![0u8; MESSAGE_LIMIT];
    let mut space = nix::cmsg_space!([RawFd; FD_LIMIT]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let message = match recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => other?,
        };
        let length = message.bytes;
        let mut fds = Vec::new();
        // A truncated control message (too many descriptors) is refused below; the kernel
        // has already closed what did not fit.
        let truncated = message.flags.contains(MsgFlags::MSG_CTRUNC);
        if let Ok(cmsgs) = message.cmsgs() {
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(received) = cmsg {
                    for fd in received {
                        // SAFETY: SCM_RIGHTS just installed this descriptor in our table;
                        // nothing else refers to it.
                        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
        }
        if truncated {
            return Err(nix::errno::Errno::EMSGSIZE);
        }
        if length == 0 && fds.is_empty() {
            return Ok(None);
        }
        buffer.truncate(length);
        return Ok(Some((buffer, fds)));
    }
}

/// A listening control socket bound at `path` (close-on-exec, non-blocking).
pub fn listen(path: &Path) -> nix::Result<OwnedFd> {
    let socket = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let _ = std::fs::remove_file(path);
    nix::sys::socket::bind(socket.as_raw_fd(), &UnixAddr::new(path)?)?;
    nix::sys::socket::listen(&socket, nix::sys::socket::Backlog::new(64)?)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_tagged_json() {
        let request = Request::Attach { stdin: true };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(text, r#"{"op":"attach","stdin":true}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
        let reply = Reply::ExecStarted { pid: 9 };
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(serde_json::from_str::<Reply>(&text).unwrap(), reply);
    }

    #[test]
    fn a_message_carries_its_descriptors_close_on_exec() {
        let (a, b) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (read, write) = nix::unistd::pipe().unwrap();
        send(a.as_fd(), b"hello", &[write.as_fd()]).unwrap();
        drop(write);
        let (bytes, fds) = receive(b.as_fd()).unwrap().unwrap();
        assert_eq!(bytes, b"hello");
        assert_eq!(fds.len(), 1);
        let flags = nix::fcntl::fcntl(fds[0].as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        nix::unistd::write(&fds[0], b"x").unwrap();
        let mut byte = [0u8; 1];
        nix::unistd::read(&read, &mut byte).unwrap();
        assert_eq!(&byte, b"x");
        drop(a);
        assert!(receive(b.as_fd()).unwrap().is_none());
    }
}
