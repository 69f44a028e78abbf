//! `ps` and `inspect`.

use super::proxy::ContainerProxy;
use super::{container, explain, ManagerProxy};

pub async fn ps(connection: &zbus::Connection, quiet: bool) -> anyhow::Result<i32> {
    let manager = ManagerProxy::new(connection).await?;
    let rows = manager.list_containers().await.map_err(explain)?;
    if quiet {
        for (id, ..) in rows {
            println!("{}", &id[..12.min(id.len())]);
        }
        return Ok(0);
    }
    println!(
        "{:<12}  {:<20}  {:<10}  {:>6}  {:>4}  COMMAND",
        "CONTAINER ID", "NAME", "STATE", "PID", "EXIT"
    );
    for (id, name, state, path) in rows {
        let proxy = ContainerProxy::builder(connection)
            .path(path)
            .build()
            .await?;
        let pid = proxy.pid().await.unwrap_or(0);
        let exit = proxy.exit_code().await.unwrap_or(0);
        let command = proxy.command().await.unwrap_or_default().join(" ");
        let pid = if pid == 0 {
            "-".to_string()
        } else {
            pid.to_string()
        };
        let exit = if state == "exited" || state == "stopped" {
            exit.to_string()
        } else {
            "-".to_string()
        };
        println!(
            "{:<12}  {:<20}  {:<10}  {:>6}  {:>4}  {}",
            &id[..12.min(id.len())],
            name,
            state,
            pid,
            exit,
            command
        );
    }
    Ok(0)
}

pub async fn inspect(connection: &zbus::Connection, name: &str, size: bool) -> anyhow::Result<i32> {
    let proxy = container(connection, name).await?;
    println!("{}", proxy.inspect(size).await.map_err(explain)?);
    Ok(0)
}
