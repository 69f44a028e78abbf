//! An inotify instance registered with tokio's reactor (exit files, followed logs).

use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::inotify::{InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

/// The inotify instance as tokio's reactor wants it.
pub struct InotifyFd(pub Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A non-blocking inotify instance, ready to add watches to.
pub fn new() -> std::io::Result<Inotify> {
    Ok(Inotify::init(
        InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK,
    )?)
}

/// Registers `inotify` with the reactor.
pub fn register(inotify: Inotify) -> std::io::Result<AsyncFd<InotifyFd>> {
    // SAFETY: the AsyncFd owns the Inotify, which owns the descriptor, so the descriptor
    // stays open for as long as it is registered.
    #[allow(unsafe_code)]
    let registered = unsafe { AsyncFd::register(InotifyFd(inotify)) };
    registered.map_err(std::io::Error::from)
}
