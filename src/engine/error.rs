//! Engine errors: one variant per condition a caller can tell apart (DESIGN §2.4).

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

/// What the C library says of ENOSPC, as it appears in wrapped I/O errors and in runc's and
/// SQLite's messages.
const NO_SPACE_TEXT: [&str; 3] = [
    "No space left on device",
    "database or disk is full",
    "Disk quota exceeded",
];

impl EngineError {
    /// A failure whose cause is a full disk becomes [`EngineError::NoSpace`], whatever layer
    /// wrapped it (an unpacker's archive error, runc's stderr, SQLite's `SQLITE_FULL`).
    pub fn classify(self) -> EngineError {
        match &self {
            EngineError::Internal(text)
            | EngineError::Runtime(text)
            | EngineError::InvalidArgument(text)
                if NO_SPACE_TEXT.iter().any(|needle| text.contains(needle)) =>
            {
                EngineError::NoSpace(text.clone())
            }
            _ => self,
        }
    }
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
            other => EngineError::Internal(other.to_string()).classify(),
        }
    }
}

impl From<RuntimeError> for EngineError {
    fn from(error: RuntimeError) -> Self {
        EngineError::Runtime(error.to_string())
    }
}

impl From<LaunchError> for EngineError {
    fn from(error: LaunchError) -> Self {
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
            ArtifactError::Io { .. } => EngineError::Internal(error.to_string()),
        }
    }
}
