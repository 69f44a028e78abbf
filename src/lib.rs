//! berth: a container engine that is a D-Bus system service.
//!
//! - `engine`: the domain — containers, the state machine, verbs, events. No zbus.
//! - `db`: SQLite state; each transition is one transaction with its events.
//! - `runtime`: the OCI runtime seam (runc/crun CLI) and the `config.json` builder.
//! - `monitor`: `berth-monitor`, one per container, outliving berthd; it runs
//!   `runc create`, logs the output, fans it out to attached clients, runs exec sessions,
//!   waits with a pidfd and writes the exit files.
//! - `storage`: images and their layer store, safe unpacking, overlay rootfs, paths
//!   resolved beneath a root, users, artifacts, named volumes.
//! - `registry`: pulls from OCI/Docker registries (references, short names, auth files,
//!   the transfer); the engine runs them as jobs.
//! - `network`: bridge networks through netavark — namespaces, IP leases, published ports,
//!   the container's `/etc/hosts` and `/etc/resolv.conf`.
//! - `bus`: the zbus objects (Manager, Container), authorization and error mapping.
//! - `cli`: `berthctl`, a D-Bus client only.
//! - `units`: Quadlet `.container` files to systemd units (`berth-generator`), no D-Bus.
//!
//! Dependencies point one way: bus → engine → {runtime, storage, db, monitor, network}.
#![deny(unsafe_code)]

pub mod bus;
pub mod cli;
pub mod clock;
pub mod db;
pub mod engine;
pub mod failpoint;
pub mod fds;
mod inotify;
pub mod monitor;
pub mod names;
pub mod network;
pub mod registry;
pub mod runtime;
pub mod storage;
pub mod terminal;
pub mod units;
