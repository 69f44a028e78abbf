//! The per-container monitor: the process itself (`process`, run by `berth-monitor`), what
//! it and berthd exchange (`protocol`), and berthd's side (`launcher`, `exits`).
//!
//! Life of a container process: berthd starts `berth-monitor`, which forks away from berthd
//! (so it outlives it), becomes a subreaper, runs `runc create` with pipes as the container's
//! stdio and reports the container pid on its stdout. It then copies the output into the log,
//! waits for the process with a pidfd and writes the exit file atomically into
//! `<runroot>/exits/`, where berthd's inotify watch sees it at once, or its next start does.

pub mod control;
pub mod exits;
pub mod export;
pub mod launcher;
pub mod process;
pub mod protocol;
pub mod stdio;
