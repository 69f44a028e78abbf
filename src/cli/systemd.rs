//! berthctl under systemd: `run --sdnotify=…` as a unit's main process (what
//! `berth-generator` writes), the flags it needs (`--replace`, `--env-file`, health
//! checks) and `healthcheck run`.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use futures_util::StreamExt;
use tokio::signal::unix::{signal, SignalKind};
use zbus::Variant;

use super::explain;
use super::proxy::{ContainerProxy, ManagerProxy, Spec};

/// When `run` tells systemd `READY=1` (podman's `--sdnotify` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SdNotify {
    /// As soon as the container runs.
    Conmon,
    /// When the container sends READY=1 on its own NOTIFY_SOCKET.
    Container,
    /// When its health check passes.
    Healthy,
    /// Never (the unit is not Type=notify).
    Ignore,
}

/// `create`/`run` flags for units and health checks.
#[derive(Args, Clone, Default)]
pub struct SystemdArgs {
    /// Remove a container of the same name first (with force).
    #[arg(long)]
    pub replace: bool,
    /// Stay in the foreground as a systemd service's main process: READY=1 as chosen,
    /// STATUS= forwarded, SIGTERM stops the container, exit with its exit code.
    #[arg(long, value_enum)]
    pub sdnotify: Option<SdNotify>,
    /// Read KEY=VALUE lines (`#` comments) into the environment; `--env` wins.
    #[arg(long = "env-file")]
    pub env_file: Vec<String>,
    /// A shell command (run with /bin/sh -c), or a JSON array to exec.
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// How often (`30s`, `1m`; `disable` for never).
    #[arg(long)]
    pub health_interval: Option<String>,
    #[arg(long)]
    pub health_retries: Option<u32>,
    #[arg(long)]
    pub health_timeout: Option<String>,
    /// Failures in this first period do not count.
    #[arg(long)]
    pub health_start_period: Option<String>,
}

/// The environment: each `--env-file` in order, then `--env`.
pub fn environment(args: &SystemdArgs, env: &[String]) -> anyhow::Result<Vec<String>> {
    let mut all = Vec::new();
    for file in &args.env_file {
        let text =
            std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("--env-file {file}: {e}"))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            anyhow::ensure!(
                line.contains('='),
                "--env-file {file}: line {}: expected KEY=VALUE",
                number + 1
            );
            all.push(line.to_string());
        }
    }
    all.extend(env.iter().cloned());
    Ok(all)
}

/// Puts the health-check flags into the spec.
pub fn add_to_spec(args: &SystemdArgs, spec: &mut Spec<'static>) -> anyhow::Result<()> {
    if let Some(command) = &args.health_cmd {
        // podman: a JSON array is exec'd as is, anything else runs in a shell (CMD-SHELL).
        let argv: Vec<String> = if command.trim_start().starts_with('[') {
            serde_json::from_str(command)
                .map_err(|e| anyhow::anyhow!("--health-cmd: not a JSON array of strings: {e}"))?
        } else {
            vec!["/bin/sh".into(), "-c".into(), command.clone()]
        };
        spec.insert("HealthCmd", Variant::from(argv));
    }
    let duration = |flag: &str, text: &str| {
        crate::units::parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
    };
    if let Some(interval) = &args.health_interval {
        let micros = if interval == "disable" {
            0
        } else {
            duration("health-interval", interval)?
        };
        spec.insert("HealthInterval", Variant::from(micros));
    }
    if let Some(timeout) = &args.health_timeout {
        spec.insert(
            "HealthTimeout",
            Variant::from(duration("health-timeout", timeout)?),
        );
    }
    if let Some(period) = &args.health_start_period {
        spec.insert(
            "HealthStartPeriod",
            Variant::from(duration("health-start-period", period)?),
        );
    }
    if let Some(retries) = args.health_retries {
        spec.insert("HealthRetries", Variant::from(retries));
    }
    if args.sdnotify == Some(SdNotify::Container) {
        spec.insert("Notify", Variant::from(true));
    }
    Ok(())
}

/// `--replace`: removes the stale container of that name, if there is one.
pub async fn replace(manager: &ManagerProxy<'_>, name: Option<&str>) -> anyhow::Result<()> {
    let Some(name) = name else {
        return Ok(());
    };
    match manager.remove_container(name, true).await {
        Ok(()) => Ok(()),
        Err(zbus::Error::MethodError(error, _, _))
            if error.as_str() == "org.berth.Engine1.Error.NoSuchContainer" =>
        {
            Ok(())
        }
        Err(error) => Err(explain(error)),
    }
}

/// Sends one message to systemd's `NOTIFY_SOCKET` (sd_notify(3)); nothing without one.
fn sd_notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|address| socket.send_to_addr(message.as_bytes(), &address))
        }
        None => socket.send_to(message.as_bytes(), &path),
    };
    if let Err(error) = sent {
        eprintln!("berthctl: sd_notify: {error}");
    }
}

/// Whether an error comes from berthd itself, rather than from its going away (a restart or
/// an idle exit, after which the next call activates it again).
fn from_berthd(error: &zbus::Error) -> bool {
    matches!(error, zbus::Error::MethodError(name, _, _) if name.as_str().starts_with("org.berth."))
}

/// What readiness looks at.
struct Snapshot {
    ready: bool,
    status_text: String,
    health: String,
}

async fn snapshot(container: &ContainerProxy<'_>) -> zbus::Result<Snapshot> {
    Ok(Snapshot {
        ready: container.ready().await?,
        status_text: container.status_text().await?,
        health: container.health().await?,
    })
}

/// Runs a started-here container as a systemd service's main process; returns the exit
/// status for berthctl.
pub async fn serve(
    connection: &zbus::Connection,
    container: &ContainerProxy<'_>,
    mode: SdNotify,
) -> anyhow::Result<i32> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    // Output goes to berthctl's stdout and stderr (the journal); the fds lead to the
    // monitor, so they outlive berthd.
    let options: HashMap<&str, Variant<'_>> = HashMap::from([("Stdin", Variant::from(false))]);
    let (_stdin, stdout, stderr) = container
        .start_and_attach(false, options)
        .await
        .map_err(explain)?;
    for (source, to_stderr) in [(stdout, false), (stderr, true)] {
        let source: std::os::fd::OwnedFd = source.into();
        std::thread::spawn(move || {
            let mut source = std::fs::File::from(source);
            let _ = if to_stderr {
                std::io::copy(&mut source, &mut std::io::stderr())
            } else {
                std::io::copy(&mut source, &mut std::io::stdout())
            };
        });
    }
    let properties = zbus::fdo::PropertiesProxy::builder(connection)
        .destination("org.berth.Engine1")
        .path(container.inner().path().clone())
        .build()
        .await?;
    let mut changes = properties.receive_properties_changed().await?;
    let stop_timeout = container.stop_timeout().await.unwrap_or(10);
    let mut ready_sent = false;
    let mut status_sent = String::new();
    let mut stop_asked = false;
    let mut stopped = false;
    // One Wait call at a time (each is an event in the log); a new one only after berthd
    // went away under it.
    let mut wait = Box::pin(container.wait());
    let code = loop {
        if let Ok(now) = snapshot(container).await {
            let ready = match mode {
                SdNotify::Conmon => true,
                SdNotify::Container => now.ready,
                SdNotify::Healthy => now.health == "healthy",
                SdNotify::Ignore => false,
            };
            let status = if now.status_text.is_empty() && !now.health.is_empty() {
                format!("health: {}", now.health)
            } else {
                now.status_text
            };
            if mode != SdNotify::Ignore && status != status_sent {
                sd_notify(&format!("STATUS={status}"));
                status_sent = status;
            }
            if ready && !ready_sent && !stop_asked {
                sd_notify("READY=1");
                ready_sent = true;
            }
        }
        if stop_asked && !stopped {
            match container.stop(stop_timeout).await {
                Ok(()) => stopped = true,
                Err(error) if from_berthd(&error) => stopped = true,
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
            continue;
        }
        tokio::select! {
            result = &mut wait => match result {
                Ok(code) => break code,
                Err(error) if from_berthd(&error) => return Err(explain(error)),
                // berthd went away under the call: the next one activates it again.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    wait = Box::pin(container.wait());
                }
            },
            _ = changes.next() => {}
            _ = terminate.recv() => stop_asked = true,
            _ = interrupt.recv() => stop_asked = true,
            // A berthd restart may cost a signal: look again now and then.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        if stop_asked {
            sd_notify("STOPPING=1");
        }
    };
    // systemd asked for the stop, and it happened: that is a clean end of the service.
    Ok(if stop_asked { 0 } else { code })
}

#[derive(Subcommand)]
pub enum HealthcheckCommand {
    /// Run the container's health check now; prints the health status, exits 1 unless
    /// healthy.
    Run { container: String },
}

pub async fn healthcheck(
    connection: &zbus::Connection,
    command: HealthcheckCommand,
) -> anyhow::Result<i32> {
    let HealthcheckCommand::Run { container } = command;
    let proxy = super::container(connection, &container).await?;
    let status = proxy.healthcheck().await.map_err(explain)?;
    println!("{status}");
    Ok(if status == "healthy" { 0 } else { 1 })
}
