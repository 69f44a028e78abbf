//! `Logs`: the container's k8s-file log streamed into a pipe, optionally followed until the
//! container stops. Bytes go through the fd, never through a D-Bus message.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sys::inotify::AddWatchFlags;
use tokio::io::AsyncWriteExt;

use super::{Engine, EngineError, Result};

/// `Logs` options, as the Container interface's `Logs` documents them.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    /// Only the last N lines (None = all).
    pub tail: Option<u64>,
    /// Microseconds since the epoch; 0 = no bound.
    pub since: u64,
    pub until: u64,
    pub timestamps: bool,
}

/// One parsed log line.
struct LogLine {
    timestamp: String,
    micros: u64,
    full: bool,
    /// The container's bytes, which need not be UTF-8.
    text: Vec<u8>,
}

/// `<time> <stream> <F|P> <bytes>` (the line without its newline).
fn parse_line(line: &[u8]) -> Option<LogLine> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let timestamp = String::from_utf8(fields.next()?.to_vec()).ok()?;
    let _stream = fields.next()?;
    let tag = fields.next()?;
    let text = fields.next().unwrap_or_default().to_vec();
    Some(LogLine {
        micros: crate::clock::parse_rfc3339_micros(&timestamp).unwrap_or(0),
        timestamp,
        full: tag == b"F",
        text,
    })
}

/// Reads the next whole line (without its newline); a line still being written is left for
/// the next read.
fn next_line(reader: &mut BufReader<std::fs::File>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        reader.seek(SeekFrom::Current(-(line.len() as i64)))?;
        return Ok(None);
    }
    line.pop();
    Ok(Some(line))
}

fn render(line: &LogLine, options: &LogOptions) -> Option<Vec<u8>> {
    if options.since != 0 && line.micros < options.since
        || options.until != 0 && line.micros > options.until
    {
        return None;
    }
    let mut out = Vec::new();
    if options.timestamps {
        out.extend_from_slice(line.timestamp.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&line.text);
    if line.full {
        out.push(b'\n');
    }
    Some(out)
}

impl Engine {
    /// Returns the read end of a pipe that carries the log.
    pub async fn logs(&self, id: &str, options: LogOptions) -> Result<OwnedFd> {
        let entry = self.inner().entry(id)?;
        if entry.config.log_driver != "k8s-file" {
            return Err(EngineError::NotSupported(format!(
                "container {id} has log driver {}",
                entry.config.log_driver
            )));
        }
        let path = self.inner().paths.container(id).log();
        // Only our end is non-blocking; the client reads its end however it likes.
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| EngineError::Internal(format!("pipe: {e}")))?;
        nix::fcntl::fcntl(
            &writer,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| EngineError::Internal(format!("pipe: {e}")))?;
        let writer = tokio::net::unix::pipe::Sender::from_owned_fd(writer)
            .map_err(|e| EngineError::Internal(format!("pipe: {e}")))?;
        let status = entry.status.subscribe();
        let busy = self.busy();
        // A stream in progress is a call in flight: berthd does not idle out under a reader.
        tokio::spawn(async move {
            let _busy = busy;
            if let Err(error) = stream_log(path, options, writer, status).await {
                tracing::debug!(%error, "log stream ended");
            }
        });
        Ok(reader)
    }
}

async fn stream_log(
    path: PathBuf,
    options: LogOptions,
    mut writer: tokio::net::unix::pipe::Sender,
    mut status: tokio::sync::watch::Receiver<super::ContainerStatus>,
) -> std::io::Result<()> {
    // Watch before reading, so nothing written in between is missed.
    // The directory, not the file: the log may not exist yet (a container just created).
    let inotify = if options.follow {
        let inotify = crate::inotify::new()?;
        let dir = path.parent().unwrap_or(&path);
        inotify.add_watch(dir, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE)?;
        Some(inotify)
    } else {
        None
    };
    let mut reader = match std::fs::File::open(&path) {
        Ok(file) => Some(BufReader::new(file)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    // What is there already: streamed as read, or only the last `Tail` lines kept.
    let mut last = std::collections::VecDeque::new();
    if let Some(reader) = reader.as_mut() {
        while let Some(line) = next_line(reader)? {
            let Some(rendered) = parse_line(&line).and_then(|l| render(&l, &options)) else {
                continue;
            };
            match options.tail {
                None => writer.write_all(&rendered).await?,
                Some(0) => {}
                Some(keep) => {
                    if last.len() as u64 == keep {
                        last.pop_front();
                    }
                    last.push_back(rendered);
                }
            }
        }
    }
    for chunk in last {
        writer.write_all(&chunk).await?;
    }
    let Some(inotify) = inotify else {
        return Ok(());
    };
    // Follow: new lines as they come, until the container is no longer running.
    let inotify = crate::inotify::register(inotify)?;
    let hangup = hangup_watch(&writer)?;
    loop {
        let running = status.borrow_and_update().state.is_running()
            || status.borrow().state == super::State::Created;
        if let Some(reader) = reader.as_mut() {
            while let Some(line) = next_line(reader)? {
                if let Some(rendered) = parse_line(&line).and_then(|l| render(&l, &options)) {
                    writer.write_all(&rendered).await?;
                }
            }
        }
        if !running {
            return Ok(());
        }
        tokio::select! {
            // The reader went away: stop following, even if the container stays silent.
            _ = hangup.ready(tokio::io::Interest::ERROR) => return Ok(()),
            ready = inotify.readable() => {
                let mut guard = ready?;
                let _ = guard.get_inner().0.read_events();
                guard.clear_ready();
            }
            changed = status.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
        if reader.is_none() {
            reader = std::fs::File::open(&path).ok().map(BufReader::new);
        }
    }
}

/// Becomes ready when the pipe's read end is closed (EPOLLERR on the write end).
fn hangup_watch(
    writer: &tokio::net::unix::pipe::Sender,
) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    use std::os::fd::AsFd;
    let duplicate = writer.as_fd().try_clone_to_owned()?;
    // SAFETY: the AsyncFd owns the duplicate, so the descriptor stays open for as long as it
    // is registered.
    #[allow(unsafe_code)]
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(duplicate, tokio::io::Interest::ERROR)
    };
    registered.map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_timestamps_parse_back_to_micros() {
        let micros = 1_795_921_862_123_456u64;
        let text = crate::clock::rfc3339_nanos(
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros),
        );
        assert_eq!(crate::clock::parse_rfc3339_micros(&text), Some(micros));
    }

    #[test]
    fn lines_render_with_optional_timestamps_and_partial_tags() {
        let line = parse_line(b"2026-11-29T03:11:02.000000000Z stdout F hello").unwrap();
        assert_eq!(render(&line, &LogOptions::default()).unwrap(), b"hello\n");
        let options = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            render(&line, &options).unwrap(),
            b"2026-11-29T03:11:02.000000000Z hello\n"
        );
        let partial = parse_line(b"2026-11-29T03:11:02.000000000Z stdout P wor").unwrap();
        assert_eq!(render(&partial, &LogOptions::default()).unwrap(), b"wor");
        let binary = parse_line(b"2026-11-29T03:11:02.000000000Z stdout F \xff\xfe").unwrap();
        assert_eq!(
            render(&binary, &LogOptions::default()).unwrap(),
            b"\xff\xfe\n"
        );
        let late = LogOptions {
            since: line.micros + 1,
            ..Default::default()
        };
        assert!(render(&line, &late).is_none());
    }
}
