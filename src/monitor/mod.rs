//! The per-container monitor: the process itself (`process` starts it, `event_loop` runs
//! it, `sessions` are its exec sessions, `stdio` its attached clients, `log` the k8s-file
//! log), what it and berthd exchange (`protocol`: start report and exit files; `control`:
//! the control socket), and berthd's side (`launcher`, `exits`).
//!
//! Life of a container process: berthd starts `berth-monitor`, which forks away from berthd
//! (so it outlives it), becomes a subreaper, runs `runc create` (or `run`, or `restore`) with
//! pipes or a pty as the container's stdio and reports the container pid on its stdout. It
//! then copies the output into the log and to attached clients, serves control requests
//! (attach, resize, exec), waits for the process with a pidfd and writes the exit file
//! atomically into `<runroot>/exits/`, where berthd's inotify watch sees it at once, or its
//! next start does.

pub mod control;
mod event_loop;
pub mod exits;
pub mod export;
pub mod launcher;
pub mod log;
pub mod process;
pub mod protocol;
mod sessions;
pub mod sidecar;
pub mod stdio;
