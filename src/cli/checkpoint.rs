//! `checkpoint` and `restore`.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};

use zbus::Variant;

use super::{container, explain};

/// `checkpoint` flags besides the export.
pub struct CheckpointFlags {
    pub keep: bool,
    pub leave_running: bool,
    pub tcp_established: bool,
}

pub async fn checkpoint(
    connection: &zbus::Connection,
    name: &str,
    flags: CheckpointFlags,
    export: Option<&str>,
) -> anyhow::Result<i32> {
    let proxy = container(connection, name).await?;
    let export: Option<OwnedFd> = match export {
        None => None,
        Some("-") => Some(std::io::stdout().as_fd().try_clone_to_owned()?),
        Some(path) => Some(
            std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("{path}: {e}"))?
                .into(),
        ),
    };
    let mut options: HashMap<&str, Variant<'_>> = HashMap::from([
        ("Keep", Variant::from(flags.keep)),
        ("KeepRunning", Variant::from(flags.leave_running)),
        ("TCPEstablished", Variant::from(flags.tcp_established)),
    ]);
    if let Some(fd) = &export {
        options.insert("Export", Variant::from(zbus::Fd::from(fd.as_fd())));
    }
    proxy.checkpoint(options).await.map_err(explain)?;
    // stdout may be carrying the checkpoint itself.
    eprintln!("{name}");
    Ok(0)
}

pub async fn restore(
    connection: &zbus::Connection,
    name: &str,
    keep: bool,
    tcp_established: bool,
    import: Option<&str>,
) -> anyhow::Result<i32> {
    let proxy = container(connection, name).await?;
    let import: Option<OwnedFd> = match import {
        None => None,
        Some("-") => Some(std::io::stdin().as_fd().try_clone_to_owned()?),
        Some(path) => Some(
            std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("{path}: {e}"))?
                .into(),
        ),
    };
    let mut options: HashMap<&str, Variant<'_>> = HashMap::from([
        ("Keep", Variant::from(keep)),
        ("TCPEstablished", Variant::from(tcp_established)),
    ]);
    if let Some(fd) = &import {
        options.insert("Import", Variant::from(zbus::Fd::from(fd.as_fd())));
    }
    proxy.restore(options).await.map_err(explain)?;
    println!("{name}");
    Ok(0)
}
