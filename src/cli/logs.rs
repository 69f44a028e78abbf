//! `logs`: copies the fd `Logs` returns to stdout.

use std::collections::HashMap;

use tokio::io::AsyncWriteExt;
use zbus::Variant;

use super::{container, explain};

/// Copies everything from the log fd to stdout.
async fn copy_to_stdout(fd: zbus::OwnedFd) -> anyhow::Result<()> {
    let fd: std::os::fd::OwnedFd = fd.into();
    let mut file = tokio::fs::File::from_std(std::fs::File::from(fd));
    let mut stdout = tokio::io::stdout();
    tokio::io::copy(&mut file, &mut stdout).await?;
    stdout.flush().await?;
    Ok(())
}

pub async fn logs(
    connection: &zbus::Connection,
    name: &str,
    follow: bool,
    tail: Option<u32>,
    timestamps: bool,
) -> anyhow::Result<i32> {
    let proxy = container(connection, name).await?;
    let mut options: HashMap<&str, Variant<'_>> = HashMap::new();
    options.insert("Follow", Variant::from(follow));
    options.insert("Timestamps", Variant::from(timestamps));
    if let Some(tail) = tail {
        options.insert("Tail", Variant::from(tail));
    }
    let fd = proxy.logs(options).await.map_err(explain)?;
    copy_to_stdout(fd).await?;
    Ok(0)
}
