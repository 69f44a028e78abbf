//! The OCI runtime seam: a trait the engine drives, the runc/crun CLI driver behind it, and
//! the builder of the bundle's `config.json`.

mod runc;
pub mod seccomp;
pub mod signal;
pub mod spec;

pub use runc::{NewContainer, RuncCli, RuncCommand};

/// What the runtime reports for a container (`runc state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeStatus {
    Created,
    Running,
    Paused,
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime ran and failed; the text carries its stderr.
    #[error("{command} {id}: {stderr}")]
    Failed {
        command: String,
        id: String,
        stderr: String,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// The runtime operations berthd performs itself. `create` is not here: the container's
/// monitor runs it, so that the monitor is the container's parent (see `monitor`).
pub trait OciRuntime: Send + Sync {
    /// Program path or name, shown as the Manager's `Runtime` property.
    fn name(&self) -> String;
    fn start(&self, id: &str) -> Result<(), RuntimeError>;
    fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError>;
    fn pause(&self, id: &str) -> Result<(), RuntimeError>;
    fn resume(&self, id: &str) -> Result<(), RuntimeError>;
    /// Deletes the container from the runtime; `force` also kills a live one.
    /// Deleting an unknown container is not an error.
    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError>;
    /// `None` when the runtime does not know the container.
    fn state(&self, id: &str) -> Result<Option<RuntimeStatus>, RuntimeError>;
    /// Dumps the container with CRIU into `options.image_path`.
    fn checkpoint(&self, id: &str, options: &CheckpointOptions) -> Result<(), RuntimeError>;
}

/// `runc checkpoint` options.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    pub image_path: std::path::PathBuf,
    /// CRIU's work files and `dump.log`.
    pub work_path: std::path::PathBuf,
    pub leave_running: bool,
    pub tcp_established: bool,
}
