//! The container's log in the k8s-file format podman and CRI-O use.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use crate::clock::rfc3339_nanos;

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
}
