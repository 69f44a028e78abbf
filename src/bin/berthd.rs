//! `berthd`: the berth service. Argument parsing and wiring only.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth::bus::{serve, BusAddress};
use berth::engine::{Backends, Engine, EngineOptions};
use berth::monitor::launcher::ProcessLauncher;
use berth::monitor::protocol::RunPaths;
use berth::runtime::RuncCli;
use berth::storage::rootfs::OverlayMounter;
use clap::Parser;

#[derive(Parser)]
#[command(version, about = "berth: a container engine that is a D-Bus service")]
struct Args {
    /// `system`, `session` or a D-Bus address. Under bus activation, the activating bus.
    #[arg(long, env = "BERTH_BUS")]
    bus: Option<String>,
    #[arg(long, default_value = "/var/lib/berth")]
    root: PathBuf,
    #[arg(long, default_value = "/run/berth")]
    runroot: PathBuf,
    /// OCI runtime program (runc or crun).
    #[arg(long, default_value = "runc")]
    runtime: String,
    /// Exit after this many idle seconds (0 = never). Containers keep running.
    #[arg(long, default_value_t = 0)]
    idle_timeout: u64,
    #[arg(long, default_value = "info")]
    log_level: String,
    /// The berth-monitor binary (default: beside berthd).
    #[arg(long)]
    monitor: Option<PathBuf>,
    /// `overlay` (default; copies the layers where overlayfs cannot mount) or `vfs` (always
    /// copy, as podman's vfs driver).
    #[arg(long, default_value = "overlay", value_parser = ["overlay", "vfs"])]
    storage_driver: String,
    /// The init run as PID 1 for `Init` containers (default: catatonit, if installed).
    #[arg(long)]
    init_binary: Option<PathBuf>,
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(program))
        .find(|candidate| candidate.is_file())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    berth::fds::close_inherited_on_exec();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .with_writer(std::io::stderr)
        .init();

    let bus = match (&args.bus, std::env::var("DBUS_STARTER_ADDRESS")) {
        (Some(bus), _) => BusAddress::parse(bus),
        (None, Ok(starter)) => BusAddress::Address(starter),
        (None, Err(_)) => BusAddress::System,
    };
    let monitor = match args.monitor {
        Some(path) => path,
        None => std::env::current_exe()
            .context("find berthd's own path")?
            .with_file_name("berth-monitor"),
    };
    let runtime = find_in_path(&args.runtime)
        .map(|p| p.display().to_string())
        .unwrap_or(args.runtime.clone());
    let init_binary = args.init_binary.or_else(|| find_in_path("catatonit"));
    let paths = RunPaths::new(&args.runroot);
    let backends = Backends {
        runtime: Arc::new(RuncCli::new(runtime.clone(), paths.runtime_root())),
        launcher: Arc::new(ProcessLauncher {
            monitor_binary: monitor,
            runtime,
            runtime_root: paths.runtime_root(),
        }),
        mounter: Arc::new(OverlayMounter {
            copy_only: args.storage_driver == "vfs",
        }),
    };
    let options = EngineOptions {
        root: args.root,
        runroot: args.runroot,
        init_binary,
        storage_driver: args.storage_driver.clone(),
    };
    let (engine, notifications) = Engine::open(options, backends).context("open the engine")?;
    let idle = (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout));
    serve(engine, notifications, &bus, idle)
        .await
        .context("serve on the bus")?;
    Ok(())
}
