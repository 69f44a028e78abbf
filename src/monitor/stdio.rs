//! The monitor's side of attach: attached clients, the output fan-out to them and the input
//! they send to the container.
//!
//! Every client end is non-blocking. Output a client cannot take at once waits in that
//! client's buffer; while any buffer is over [`HIGH_WATER`] the monitor stops reading the
//! container (backpressure, as a pipe would give), so a fast container never outruns a
//! reader and nothing is dropped. A client whose reader is gone is detached.

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// Buffered output per client above which the container is not read.
pub const HIGH_WATER: usize = 1024 * 1024;

pub fn set_nonblocking(fd: &OwnedFd) {
    if let Ok(flags) = fcntl(fd.as_fd(), FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        let _ = fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags));
    }
}

/// A write end with what it could not take yet.
pub struct Sink {
    pub fd: OwnedFd,
    pending: Vec<u8>,
}

impl Sink {
    pub fn new(fd: OwnedFd) -> Sink {
        set_nonblocking(&fd);
        Sink {
            fd,
            pending: Vec::new(),
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Queues `bytes` after what is pending and writes what the reader takes now.
    /// `Err` when the reader is gone.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Errno> {
        if self.pending.is_empty() {
            let written = write_some(&self.fd, bytes)?;
            self.pending.extend_from_slice(&bytes[written..]);
            Ok(())
        } else {
            self.pending.extend_from_slice(bytes);
            self.flush()
        }
    }

    /// Writes what is pending, as far as the reader takes it.
    pub fn flush(&mut self) -> Result<(), Errno> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = write_some(&self.fd, &self.pending)?;
        self.pending.drain(..written);
        Ok(())
    }
}

/// Writes until the descriptor would block; returns how much it took.
fn write_some(fd: &OwnedFd, bytes: &[u8]) -> Result<usize, Errno> {
    let mut written = 0;
    while written < bytes.len() {
        match nix::unistd::write(fd, &bytes[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => break,
            Err(error) => return Err(error),
        }
    }
    Ok(written)
}

/// One attached client: where its stdout and stderr go, and its stdin if it sends any.
pub struct Client {
    pub outputs: [Option<Sink>; 2],
    pub stdin: Option<OwnedFd>,
}

impl Client {
    pub fn new(stdout: OwnedFd, stderr: Option<OwnedFd>, stdin: Option<OwnedFd>) -> Client {
        if let Some(stdin) = &stdin {
            set_nonblocking(stdin);
        }
        Client {
            outputs: [Some(Sink::new(stdout)), stderr.map(Sink::new)],
            stdin,
        }
    }

    /// Nothing left to serve: every end is closed.
    pub fn is_gone(&self) -> bool {
        self.outputs.iter().all(Option::is_none) && self.stdin.is_none()
    }

    pub fn pending(&self) -> usize {
        self.outputs.iter().flatten().map(Sink::pending).sum()
    }

    /// Sends container output of `stream` (0 stdout, 1 stderr); a reader that has gone
    /// loses its end.
    pub fn send(&mut self, stream: usize, bytes: &[u8]) {
        if let Some(sink) = self.outputs[stream].as_mut() {
            if sink.push(bytes).is_err() {
                self.outputs[stream] = None;
            }
        }
    }
}

/// The container's stdin (a pipe's write end, or the pty master) and what clients sent
/// that it has not taken yet.
pub struct Input {
    pub fd: OwnedFd,
    pending: Vec<u8>,
    /// Close once flushed: a client ended its stdin (pipes only; a terminal stays open).
    closing: bool,
}

impl Input {
    pub fn new(fd: OwnedFd) -> Input {
        set_nonblocking(&fd);
        Input {
            fd,
            pending: Vec::new(),
            closing: false,
        }
    }

    /// Whether it can take more from clients now.
    pub fn is_ready(&self) -> bool {
        self.pending.is_empty() && !self.closing
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Errno> {
        self.pending.extend_from_slice(bytes);
        self.flush()
    }

    pub fn flush(&mut self) -> Result<(), Errno> {
        let written = write_some(&self.fd, &self.pending)?;
        self.pending.drain(..written);
        Ok(())
    }

    pub fn close_when_flushed(&mut self) {
        self.closing = true;
    }

    /// Whether it should be closed now (asked to, and everything was written).
    pub fn is_done(&self) -> bool {
        self.closing && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_keeps_what_the_reader_cannot_take_and_writes_it_later() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let mut sink = Sink::new(write);
        let chunk = vec![7u8; 256 * 1024];
        sink.push(&chunk).unwrap();
        assert!(sink.pending() > 0, "a pipe holds less than 256 KiB");
        let mut drained = 0;
        let mut buffer = vec![0u8; 65536];
        while drained < chunk.len() {
            let n = nix::unistd::read(&read, &mut buffer).unwrap();
            drained += n;
            sink.flush().unwrap();
        }
        assert_eq!(sink.pending(), 0);
        drop(read);
        assert!(sink.push(b"x").is_err(), "a closed reader is an error");
    }

    #[test]
    fn a_client_loses_an_end_whose_reader_is_gone_and_keeps_the_other() {
        let (out_read, out_write) = nix::unistd::pipe().unwrap();
        let (err_read, err_write) = nix::unistd::pipe().unwrap();
        let mut client = Client::new(out_write, Some(err_write), None);
        drop(out_read);
        client.send(0, b"lost");
        client.send(1, b"kept");
        assert!(client.outputs[0].is_none());
        assert!(!client.is_gone());
        let mut buffer = [0u8; 4];
        nix::unistd::read(&err_read, &mut buffer).unwrap();
        assert_eq!(&buffer, b"kept");
    }
}
