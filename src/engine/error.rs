//! Engine errors: one variant per condition a caller can tell apart (each a D-Bus error name,
//! listed in the README).

use super::state::{IllegalTransition, Refused, State};
use crate::db::DbError;
use crate::monitor::launcher::LaunchError;
use crate::runtime::RuntimeError;
use crate::storage::artifacts::ArtifactError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no such container {0:?}")]
    NoSuchContainer(String),
    #[error("no such exec session {0:?}")]
    NoSuchExecSession(String),
    #[error("no such image {0:?}")]
    NoSuchImage(String),
    #[error("{0}")]
    ImageInUse(String),
    #[error("no such volume {0:?}")]
    NoSuchVolume(String),
    #[error("{0}")]
    VolumeInUse(String),
    #[error("name {0:?} is already in use")]
    NameInUse(String),
    #[error("container {id} is {state}: cannot {verb}")]
    InvalidState {
        id: String,
        state: State,
        verb: &'static str,
    },
    /// Removal refused: other containers name this one in `Dependencies`.
    #[error("container {id} is {state}: cannot remove it while {} depend on it", dependents.join(", "))]
    HasDependents {
        id: String,
        state: State,
        dependents: Vec<String>,
    },
    #[error("container {0} is already stopped")]
    ContainerStopped(String),
    #[error("dependency {dependency} of container {id} is not running")]
    DependencyNotRunning { id: String, dependency: String },
    #[error("{0}")]
    Runtime(String),
    #[error("{0}")]
    NotSupported(String),
    #[error("container {0} has been removed")]
    Removed(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no such network {0:?}")]
    NoSuchNetwork(String),
    #[error("{0}")]
    NetworkInUse(String),
    #[error("{0}")]
    LimitsExceeded(String),
    #[error("{0}")]
    Internal(String),
    /// `GetEvents` after a sequence number the bounded log no longer holds.
    #[error("events through seq {through} were trimmed from the log: ask for events after seq {through}")]
    EventsTrimmed { through: u64 },
    /// The registry answered with an error or could not be reached.
    #[error("{0}")]
    RegistryError(String),
    #[error("{0}")]
    AuthenticationFailed(String),
    #[error("{0}")]
    Cancelled(String),
    /// The filesystem under `--root` (or `--runroot`) is full; nothing half-done is left.
    #[error("no space left: {0}")]
    NoSpace(String),
}

impl EngineError {
    /// An I/O failure of the engine's own files: [`EngineError::NoSpace`] when the disk is
    /// full, else `Internal` naming what failed.
    pub fn io(what: impl std::fmt::Display, error: std::io::Error) -> EngineError {
        if is_no_space(&error) {
            EngineError::NoSpace(format!("{what}: {error}"))
        } else {
            EngineError::Internal(format!("{what}: {error}"))
        }
    }
}

/// Whether `error`, or any error it wraps, is a full disk: ENOSPC or EDQUOT from the OS
/// (`ErrorKind::StorageFull`, `QuotaExceeded`), or SQLite's `SQLITE_FULL`. Decided by the
/// error's code, never by its text.
pub fn is_no_space(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) {
                return true;
            }
        }
        if let Some(rusqlite::Error::SqliteFailure(failure, _)) =
            error.downcast_ref::<rusqlite::Error>()
        {
            if failure.code == rusqlite::ErrorCode::DiskFull {
                return true;
            }
        }
        current = error.source();
    }
    false
}

impl From<Refused> for EngineError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::AlreadyStopped { id } => EngineError::ContainerStopped(id),
            Refused::InvalidState { id, state, verb } => {
                EngineError::InvalidState { id, state, verb }
            }
        }
    }
}

impl From<IllegalTransition> for EngineError {
    fn from(error: IllegalTransition) -> Self {
        EngineError::Internal(error.to_string())
    }
}

impl From<DbError> for EngineError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::NameInUse(name) => EngineError::NameInUse(name),
            DbError::EventsTrimmed { through } => EngineError::EventsTrimmed { through },
            other if is_no_space(&other) => EngineError::NoSpace(other.to_string()),
            other => EngineError::Internal(other.to_string()),
        }
    }
}

impl From<RuntimeError> for EngineError {
    fn from(error: RuntimeError) -> Self {
        if is_no_space(&error) {
            return EngineError::NoSpace(error.to_string());
        }
        EngineError::Runtime(error.to_string())
    }
}

impl From<LaunchError> for EngineError {
    fn from(error: LaunchError) -> Self {
        if is_no_space(&error) {
            return EngineError::NoSpace(error.to_string());
        }
        EngineError::Runtime(error.to_string())
    }
}

impl From<ArtifactError> for EngineError {
    fn from(error: ArtifactError) -> Self {
        match error {
            ArtifactError::InvalidName(_) | ArtifactError::NotFound(_) => {
                EngineError::InvalidArgument(error.to_string())
            }
            ArtifactError::TooLarge { .. } => EngineError::LimitsExceeded(error.to_string()),
            ArtifactError::Io { .. } if is_no_space(&error) => {
                EngineError::NoSpace(error.to_string())
            }
            ArtifactError::Io { .. } => EngineError::Internal(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::images::ImportError;
    use crate::storage::unpack::UnpackError;

    fn no_space() -> std::io::Error {
        std::io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32)
    }

    #[test]
    fn a_full_disk_is_recognized_by_its_code_through_the_error_chain() {
        let unpacking = ImportError::Unpack(UnpackError::Io {
            entry: "etc/passwd".into(),
            source: no_space(),
        });
        assert!(is_no_space(&unpacking));
        let quota = std::io::Error::from_raw_os_error(nix::errno::Errno::EDQUOT as i32);
        assert!(is_no_space(&quota));
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert!(matches!(
            EngineError::from(DbError::Sql(full)),
            EngineError::NoSpace(_)
        ));
        assert!(matches!(
            EngineError::io("create /r/containers/x", no_space()),
            EngineError::NoSpace(message) if message.starts_with("create /r/containers/x: ")
        ));
    }

    #[test]
    fn a_message_that_merely_mentions_a_full_disk_is_not_one() {
        let said = std::io::Error::other("No space left on device");
        assert!(!is_no_space(&said));
        assert!(matches!(
            EngineError::io("write x", said),
            EngineError::Internal(_)
        ));
        let runc = RuntimeError::Failed {
            command: "runc start".into(),
            id: "x".into(),
            stderr: "No space left on device".into(),
        };
        assert!(matches!(EngineError::from(runc), EngineError::Runtime(_)));
    }
}
