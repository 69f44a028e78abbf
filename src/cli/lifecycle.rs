//! `start`, `stop`, `kill`, `pause`, `unpause`, `restart`, `wait`, `rm`.

use std::future::Future;

use super::proxy::ContainerProxy;
use super::{container, explain, ManagerProxy};

/// Runs `verb` on each container, printing its name as podman does; fails on the first error.
pub async fn each<'c, F, Fut>(
    connection: &zbus::Connection,
    names: &[String],
    verb: F,
) -> anyhow::Result<i32>
where
    F: Fn(ContainerProxy<'c>) -> Fut,
    Fut: Future<Output = zbus::Result<()>>,
{
    anyhow::ensure!(!names.is_empty(), "name at least one container");
    for name in names {
        let proxy = container(connection, name).await?;
        verb(proxy).await.map_err(explain)?;
        println!("{name}");
    }
    Ok(0)
}

/// The stop timeout to use: the one given, or the container's own `StopTimeout`.
pub async fn timeout(proxy: &ContainerProxy<'_>, time: Option<u32>) -> zbus::Result<u32> {
    match time {
        Some(time) => Ok(time),
        None => proxy.stop_timeout().await,
    }
}

/// Prints the exit code and returns it as berthctl's own status.
pub async fn wait(connection: &zbus::Connection, name: &str) -> anyhow::Result<i32> {
    let proxy = container(connection, name).await?;
    let code = proxy.wait().await.map_err(explain)?;
    println!("{code}");
    Ok(code)
}

pub async fn remove(
    connection: &zbus::Connection,
    names: &[String],
    force: bool,
) -> anyhow::Result<i32> {
    let manager = ManagerProxy::new(connection).await?;
    for name in names {
        manager
            .remove_container(name, force)
            .await
            .map_err(explain)?;
        println!("{name}");
    }
    Ok(0)
}
