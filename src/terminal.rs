//! Window sizes of terminals (the `TIOCGWINSZ`/`TIOCSWINSZ` ioctls nix does not wrap).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

/// Sets the window size of the terminal behind `fd` (a pty master or a tty); the foreground
/// process group of the terminal gets `SIGWINCH`.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The window size (rows, cols) of the terminal behind `fd`.
pub fn window_size(fd: BorrowedFd<'_>) -> std::io::Result<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((size.ws_row, size.ws_col))
}
