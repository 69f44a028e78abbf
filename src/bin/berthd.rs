//! `berthd`: the berth service. Argument parsing and wiring only.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth::bus::{serve, BusAddress};
use berth::engine::{Backends, Engine, EngineOptions};
use berth::monitor::launcher::ProcessLauncher;
use berth::runtime::{RuncCli, RuncCommand};
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
    /// `systemd`: monitors in transient scopes, runc's systemd cgroup driver; `cgroupfs`:
    /// `berth/<id>` cgroups. `auto` is systemd where systemd is PID 1 and berthd serves the
    /// system bus.
    #[arg(long, default_value = "auto", value_parser = ["auto", "systemd", "cgroupfs"])]
    cgroup_manager: String,
    /// The most events the durable log keeps (0 = no bound): the oldest events of removed
    /// containers are trimmed beyond it.
    #[arg(long, default_value_t = 10_000)]
    max_events: u64,
}

/// Whether stderr is the journal (systemd sets `JOURNAL_STREAM` to its device:inode).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream == format!("{}:{}", stderr.dev(), stderr.ino())
}

/// Structured journal entries when stderr is the journal (fields such as `CONTAINER_ID`
/// and `EVENT`), plain text otherwise.
fn init_logging(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::new(level);
    if stderr_is_journal() {
        if let Ok(journald) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter)
                .with(
                    journald
                        .with_field_prefix(None)
                        .with_syslog_identifier("berthd".into()),
                )
                .init();
            return;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
    init_logging(&args.log_level);

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
    let systemd = match args.cgroup_manager.as_str() {
        "systemd" => true,
        "cgroupfs" => false,
        _ => bus == BusAddress::System && std::path::Path::new("/run/systemd/system").exists(),
    };
    let notify_bus = match &bus {
        BusAddress::System => "system".to_string(),
        BusAddress::Session => "session".to_string(),
        BusAddress::Address(address) => address.clone(),
    };
    let paths = berth::engine::Paths::new(&args.root, &args.runroot);
    let runc = RuncCommand::new(runtime, paths.runtime_root(), systemd);
    let backends = Backends {
        runtime: Arc::new(RuncCli::new(runc.clone())),
        launcher: Arc::new(ProcessLauncher {
            monitor_binary: monitor,
            runc,
            notify_bus: Some(notify_bus),
        }),
        mounter: Arc::new(OverlayMounter {
            copy_only: args.storage_driver == "vfs",
        }),
        network: Arc::new(berth::network::netavark::Netavark::new(
            args.runroot.join("networks"),
        )),
    };
    let options = EngineOptions {
        root: args.root,
        runroot: args.runroot,
        init_binary,
        storage_driver: args.storage_driver.clone(),
        systemd_cgroups: systemd,
    };
    let (engine, notifications) = Engine::open(options, backends).context("open the engine")?;
    engine
        .bound_event_log(args.max_events)
        .context("bound the event log")?;
    if !std::path::Path::new(berth::runtime::seccomp::DEFAULT_PROFILE).exists() {
        tracing::warn!(
            profile = berth::runtime::seccomp::DEFAULT_PROFILE,
            "podman's seccomp profile is not installed (golang-github-containers-common): \
             containers get no seccomp filter"
        );
    }
    let idle = (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout));
    serve(engine, notifications, &bus, idle)
        .await
        .context("serve on the bus")?;
    Ok(())
}
