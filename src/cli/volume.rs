//! `volume create|ls|inspect|rm|prune|export|import`, as podman's `volume` commands.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};

use clap::Subcommand;
use zbus::Variant;

use super::explain;
use super::proxy::{ManagerProxy, VolumeProxy};

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a name is generated if none is given); prints its name.
    Create {
        /// KEY=VALUE
        #[arg(short, long = "label")]
        label: Vec<String>,
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes as JSON.
    Inspect { names: Vec<String> },
    /// Remove volumes; --force also removes the containers that use them.
    #[command(alias = "remove")]
    Rm {
        #[arg(short, long)]
        force: bool,
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune {
        /// Accepted for podman compatibility (berthctl never asks).
        #[arg(short, long)]
        force: bool,
    },
    /// Write a volume's content as a tar to stdout or --output FILE.
    Export {
        #[arg(short, long)]
        output: Option<String>,
        name: String,
    },
    /// Replace a volume's content with a tar from FILE (`-` for stdin).
    Import { name: String, file: String },
}

async fn volume<'a>(connection: &zbus::Connection, name: &str) -> anyhow::Result<VolumeProxy<'a>> {
    let manager = ManagerProxy::new(connection).await?;
    let path = manager.get_volume(name).await.map_err(explain)?;
    Ok(VolumeProxy::builder(connection).path(path).build().await?)
}

pub async fn run(connection: &zbus::Connection, command: VolumeCommand) -> anyhow::Result<i32> {
    let manager = ManagerProxy::new(connection).await?;
    match command {
        VolumeCommand::Create { label, name } => {
            let mut options: HashMap<&str, Variant<'_>> = HashMap::new();
            if !label.is_empty() {
                let labels = label
                    .iter()
                    .map(|l| {
                        l.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .ok_or_else(|| anyhow::anyhow!("--label {l:?}: expected KEY=VALUE"))
                    })
                    .collect::<anyhow::Result<HashMap<String, String>>>()?;
                options.insert("Labels", Variant::from(labels));
            }
            let path = manager
                .create_volume(name.as_deref().unwrap_or(""), options)
                .await
                .map_err(explain)?;
            let created = VolumeProxy::builder(connection).path(path).build().await?;
            println!("{}", created.name().await?);
        }
        VolumeCommand::Ls { quiet } => {
            let rows = manager.list_volumes().await.map_err(explain)?;
            if !quiet {
                println!("{:<8}  VOLUME NAME", "DRIVER");
            }
            for (name, ..) in rows {
                if quiet {
                    println!("{name}");
                } else {
                    println!("{:<8}  {name}", "local");
                }
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut documents = Vec::new();
            for name in &names {
                let text = volume(connection, name)
                    .await?
                    .inspect()
                    .await
                    .map_err(explain)?;
                documents.push(serde_json::from_str::<serde_json::Value>(&text)?);
            }
            println!("{}", serde_json::to_string_pretty(&documents)?);
        }
        VolumeCommand::Rm { force, names } => {
            let mut status = 0;
            for name in &names {
                match manager.remove_volume(name, force).await {
                    Ok(()) => println!("{name}"),
                    Err(error) => {
                        eprintln!("{name}: {}", explain(error));
                        status = 1;
                    }
                }
            }
            return Ok(status);
        }
        VolumeCommand::Prune { force: _ } => {
            for name in manager.prune_volumes().await.map_err(explain)? {
                println!("{name}");
            }
        }
        VolumeCommand::Export { output, name } => {
            let proxy = volume(connection, &name).await?;
            let fd: OwnedFd = match output.as_deref() {
                None | Some("-") => std::io::stdout().as_fd().try_clone_to_owned()?,
                Some(path) => std::fs::File::create(path)
                    .map_err(|e| anyhow::anyhow!("{path}: {e}"))?
                    .into(),
            };
            proxy.export(zbus::Fd::from(fd)).await.map_err(explain)?;
        }
        VolumeCommand::Import { name, file } => {
            let proxy = volume(connection, &name).await?;
            let fd: OwnedFd = if file == "-" {
                std::io::stdin().as_fd().try_clone_to_owned()?
            } else {
                std::fs::File::open(&file)
                    .map_err(|e| anyhow::anyhow!("{file}: {e}"))?
                    .into()
            };
            proxy.import(zbus::Fd::from(fd)).await.map_err(explain)?;
        }
    }
    Ok(0)
}
