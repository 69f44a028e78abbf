//! What berthd and a monitor exchange: the start-up report and the exit file.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The monitor's one-line JSON report on its stdout once `runc create` is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartReport {
    Created { pid: u32, monitor_pid: u32 },
    Failed { error: String },
}

/// The exit file: what the monitor learned when the container's main process ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Host pid of the process that exited: an exit file names the run it belongs to.
    pub pid: u32,
    /// Exit status, or 128 + signal number when killed by a signal.
    pub exit_code: i32,
    /// Microseconds since the Unix epoch.
    pub exited_at: u64,
    #[serde(default)]
    pub oom_killed: bool,
    /// The process ended because it was checkpointed (CRIU dumped and killed it): not a
    /// death, so no `died`, no `Exited`, no restart policy.
    #[serde(default)]
    pub checkpointed: bool,
}

/// Writes `record` to `path` atomically: a temporary file in the same directory, fsync,
/// rename. A reader sees the whole record or nothing.
pub fn write_exit_file(path: &Path, record: &ExitRecord) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("exit");
    let temporary = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&serde_json::to_vec(record).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads an exit file; `Ok(None)` when there is none.
pub fn read_exit_file(path: &Path) -> std::io::Result<Option<ExitRecord>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_files_round_trip_and_leave_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        let record = ExitRecord {
            pid: 7,
            exit_code: 137,
            exited_at: 42,
            oom_killed: false,
            checkpointed: false,
        };
        write_exit_file(&path, &record).unwrap();
        assert_eq!(read_exit_file(&path).unwrap(), Some(record));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("abc")]);
    }

    #[test]
    fn a_missing_exit_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_exit_file(&dir.path().join("none")).unwrap(), None);
    }

    #[test]
    fn start_reports_are_one_json_line() {
        let report = StartReport::Created {
            pid: 5,
            monitor_pid: 4,
        };
        let text = serde_json::to_string(&report).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(serde_json::from_str::<StartReport>(&text).unwrap(), report);
    }
}
