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

pub async fn start(connection: &zbus::Connection, names: &[String]) -> anyhow::Result<i32> {
    each(connection, names, |c| async move { c.start(false).await }).await
}

/// Stops each container, after `time` seconds or its own `StopTimeout` with SIGKILL.
pub async fn stop(
    connection: &zbus::Connection,
    names: &[String],
    time: Option<u32>,
) -> anyhow::Result<i32> {
    each(connection, names, |c| async move {
        let timeout = timeout(&c, time).await?;
        c.stop(timeout).await
    })
    .await
}

pub async fn kill(
    connection: &zbus::Connection,
    names: &[String],
    signal: &str,
) -> anyhow::Result<i32> {
    each(connection, names, |c| async move { c.kill(signal).await }).await
}

pub async fn pause(connection: &zbus::Connection, names: &[String]) -> anyhow::Result<i32> {
    each(connection, names, |c| async move { c.pause().await }).await
}

pub async fn unpause(connection: &zbus::Connection, names: &[String]) -> anyhow::Result<i32> {
    each(connection, names, |c| async move { c.unpause().await }).await
}

/// Restarts each container, stopping it as `stop` does.
pub async fn restart(
    connection: &zbus::Connection,
    names: &[String],
    time: Option<u32>,
) -> anyhow::Result<i32> {
    each(connection, names, |c| async move {
        let timeout = timeout(&c, time).await?;
        c.restart(timeout).await
    })
    .await
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
