//! `berthctl`: the human CLI, a D-Bus client only (it never names an engine type).

mod attach;
mod checkpoint;
mod create;
mod events;
mod exec;
mod images;
mod lifecycle;
mod list;
mod logs;
mod network;
pub mod network_proxy;
pub mod proxy;
mod pull;
mod systemd;
mod volume;

use anyhow::Context;
use clap::{Parser, Subcommand};

use proxy::{ContainerProxy, ManagerProxy};

#[derive(Parser)]
#[command(
    name = "berthctl",
    version,
    about = "Control berth containers over D-Bus"
)]
pub struct Cli {
    /// `system`, `session` or a D-Bus address.
    #[arg(long, env = "BERTH_BUS", default_value = "system", global = true)]
    pub bus: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a container (prints its id).
    Create(create::CreateArgs),
    /// Create and start a container, wait for it and print its output.
    Run(create::RunArgs),
    /// Start containers.
    Start {
        containers: Vec<String>,
    },
    /// Stop containers: stop signal, then SIGKILL after the timeout.
    Stop {
        #[arg(short, long)]
        time: Option<u32>,
        containers: Vec<String>,
    },
    /// Send a signal to containers.
    Kill {
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        containers: Vec<String>,
    },
    Pause {
        containers: Vec<String>,
    },
    Unpause {
        containers: Vec<String>,
    },
    Restart {
        #[arg(short, long)]
        time: Option<u32>,
        containers: Vec<String>,
    },
    /// Wait for a container to stop; exits with its exit code.
    Wait {
        container: String,
    },
    /// Remove containers.
    #[command(alias = "remove")]
    Rm {
        #[arg(short, long)]
        force: bool,
        containers: Vec<String>,
    },
    /// List containers.
    #[command(alias = "ls")]
    Ps {
        /// Only ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show a container as JSON.
    Inspect {
        #[arg(short, long)]
        size: bool,
        container: String,
    },
    /// Print a container's log.
    Logs {
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        tail: Option<u32>,
        #[arg(short, long)]
        timestamps: bool,
        container: String,
    },
    /// Import an image archive (OCI archive, docker-archive, rootfs tar; `-` for stdin).
    Import {
        file: String,
        /// Name the image.
        #[arg(long)]
        reference: Option<String>,
    },
    /// Manage networks.
    Network {
        #[command(subcommand)]
        command: network::NetworkCommand,
    },
    /// List images.
    Images {
        #[arg(short, long)]
        quiet: bool,
        /// Show the repository digests the images were pulled by.
        #[arg(long)]
        digests: bool,
    },
    /// Pull an image from a registry, with a progress bar per layer.
    Pull(pull::PullArgs),
    /// Remove images.
    Rmi {
        #[arg(short, long)]
        force: bool,
        images: Vec<String>,
    },
    /// Add a name to an image.
    Tag {
        image: String,
        name: String,
    },
    /// Write a container's root filesystem as a tar to stdout.
    Export {
        container: String,
    },
    /// Mount a container's root filesystem and print where.
    Mount {
        container: String,
    },
    /// Undo `mount`.
    #[command(alias = "umount")]
    Unmount {
        #[arg(short, long)]
        force: bool,
        container: String,
    },
    /// Run a command in a running container; exits with the command's status.
    Exec(exec::ExecArgs),
    /// Attach to a container's stdio (and terminal); exits with its exit code.
    Attach {
        /// Do not send berthctl's stdin.
        #[arg(long)]
        no_stdin: bool,
        container: String,
    },
    /// Checkpoint a running container with CRIU (it stops unless --leave-running).
    Checkpoint {
        /// Keep CRIU's work files and log.
        #[arg(long)]
        keep: bool,
        #[arg(short = 'R', long)]
        leave_running: bool,
        #[arg(long)]
        tcp_established: bool,
        /// Also write the checkpoint as a tar to FILE (`-` for stdout).
        #[arg(short, long)]
        export: Option<String>,
        container: String,
    },
    /// Restore a container from its checkpoint, or from a tar made by `checkpoint --export`.
    Restore {
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        tcp_established: bool,
        /// The checkpoint tar (`-` for stdin).
        #[arg(short, long)]
        import: Option<String>,
        container: String,
    },
    /// Manage named volumes.
    Volume {
        #[command(subcommand)]
        command: volume::VolumeCommand,
    },
    /// Health checks (`healthcheck run NAME`).
    Healthcheck {
        #[command(subcommand)]
        command: systemd::HealthcheckCommand,
    },
    /// Follow events; `--since SEQ` replays the log after SEQ first.
    Events {
        #[arg(long)]
        since: Option<u64>,
        /// Replay only, do not follow.
        #[arg(long)]
        no_follow: bool,
    },
}

/// Connects to the bus named by `--bus`.
pub async fn connect(bus: &str) -> anyhow::Result<zbus::Connection> {
    let builder = match bus {
        "system" => zbus::connection::Builder::system(),
        "session" => zbus::connection::Builder::session(),
        address => zbus::connection::Builder::address(address),
    };
    builder.build().await.with_context(|| {
        format!(
            "cannot connect to the {bus} bus (is dbus running? --bus or BERTH_BUS picks another)"
        )
    })
}

/// The proxy of a container given by name, id or id prefix.
pub async fn container<'a>(
    connection: &zbus::Connection,
    name: &str,
) -> anyhow::Result<ContainerProxy<'a>> {
    let manager = ManagerProxy::new(connection).await?;
    let path = manager.get_container(name).await.map_err(explain)?;
    Ok(ContainerProxy::builder(connection)
        .path(path)
        .build()
        .await?)
}

/// Turns a D-Bus error into a sentence for people, keeping its name for scripts.
pub fn explain(error: zbus::Error) -> anyhow::Error {
    match &error {
        zbus::Error::MethodError(name, Some(message), _) => {
            let short = name.rsplit('.').next().unwrap_or(name.as_str());
            if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown" {
                anyhow::anyhow!(
                    "berthd is not running on this bus and cannot be activated: is berth \
                     installed (scripts/install)? ({message})"
                )
            } else if matches!(
                name.as_str(),
                "org.freedesktop.DBus.Error.AccessDenied"
                    | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
            ) {
                anyhow::anyhow!(
                    "permission denied: {message}. Run it as root, or have polkit allow you \
                     (the README's rule for a `berth` group) [{short}]"
                )
            } else {
                anyhow::anyhow!("{message} [{short}]")
            }
        }
        _ => anyhow::Error::new(error),
    }
}

/// Runs the command; returns the process exit status.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let connection = connect(&cli.bus).await?;
    match cli.command {
        Command::Create(args) => create::create(&connection, args).await,
        Command::Run(args) => create::run(&connection, args).await,
        Command::Start { containers } => lifecycle::start(&connection, &containers).await,
        Command::Stop { time, containers } => lifecycle::stop(&connection, &containers, time).await,
        Command::Kill { signal, containers } => {
            lifecycle::kill(&connection, &containers, &signal).await
        }
        Command::Pause { containers } => lifecycle::pause(&connection, &containers).await,
        Command::Unpause { containers } => lifecycle::unpause(&connection, &containers).await,
        Command::Restart { time, containers } => {
            lifecycle::restart(&connection, &containers, time).await
        }
        Command::Wait { container } => lifecycle::wait(&connection, &container).await,
        Command::Rm { force, containers } => {
            lifecycle::remove(&connection, &containers, force).await
        }
        Command::Ps { quiet } => list::ps(&connection, quiet).await,
        Command::Inspect { size, container } => list::inspect(&connection, &container, size).await,
        Command::Logs {
            follow,
            tail,
            timestamps,
            container,
        } => logs::logs(&connection, &container, follow, tail, timestamps).await,
        Command::Import { file, reference } => images::import(&connection, &file, reference).await,
        Command::Network { command } => network::run(&connection, command).await,
        Command::Images { quiet, digests } => images::images(&connection, quiet, digests).await,
        Command::Pull(args) => pull::pull(&connection, args).await,
        Command::Rmi {
            force,
            images: names,
        } => images::remove(&connection, &names, force).await,
        Command::Tag { image, name } => images::tag(&connection, &image, &name).await,
        Command::Export { container } => images::export(&connection, &container).await,
        Command::Mount { container } => images::mount(&connection, &container).await,
        Command::Unmount { force, container } => {
            images::unmount(&connection, &container, force).await
        }
        Command::Exec(args) => exec::exec(&connection, args).await,
        Command::Checkpoint {
            keep,
            leave_running,
            tcp_established,
            export,
            container,
        } => {
            let options = checkpoint::CheckpointFlags {
                keep,
                leave_running,
                tcp_established,
            };
            checkpoint::checkpoint(&connection, &container, options, export.as_deref()).await
        }
        Command::Restore {
            keep,
            tcp_established,
            import,
            container,
        } => {
            checkpoint::restore(
                &connection,
                &container,
                keep,
                tcp_established,
                import.as_deref(),
            )
            .await
        }
        Command::Attach {
            no_stdin,
            container,
        } => exec::attach(&connection, &container, !no_stdin).await,
        Command::Volume { command } => volume::run(&connection, command).await,
        Command::Healthcheck { command } => systemd::healthcheck(&connection, command).await,
        Command::Events { since, no_follow } => {
            events::events(&connection, since, !no_follow).await
        }
    }
}
