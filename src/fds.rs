//! Descriptor hygiene for long-lived processes.

use std::os::fd::BorrowedFd;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// Marks every descriptor above stderr close-on-exec: whatever a parent leaked into us
/// (a jobserver pipe, a terminal) must not reach runc or a container.
pub fn close_inherited_on_exec() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: the descriptor is only borrowed for the fcntl call and not closed; one
        // that closed meanwhile (the directory listing's own) makes fcntl fail, no more.
        #[allow(unsafe_code)]
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Ok(flags) = fcntl(borrowed, FcntlArg::F_GETFD) {
            let flags = FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC;
            let _ = fcntl(borrowed, FcntlArg::F_SETFD(flags));
        }
    }
}
