//! `create` and `run`: podman's flags, turned into a `CreateContainer` spec.

use std::collections::HashMap;

use clap::Args;
use zbus::Variant;

use super::explain;
use super::proxy::{ContainerProxy, ManagerProxy, Spec};

#[derive(Args, Clone)]
pub struct CreateArgs {
    #[arg(long)]
    name: Option<String>,
    /// Host directory used read-only as the container's root filesystem (instead of IMAGE).
    #[arg(long)]
    rootfs: Option<String>,
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(short, long = "workdir")]
    workdir: Option<String>,
    #[arg(short, long)]
    user: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    /// KEY=VALUE
    #[arg(short, long = "label")]
    label: Vec<String>,
    /// KEY=VALUE
    #[arg(long = "annotation")]
    annotation: Vec<String>,
    #[arg(long)]
    stop_signal: Option<String>,
    #[arg(long)]
    stop_timeout: Option<u32>,
    /// type=bind|tmpfs|volume,source=…,destination=…[,ro][,OPTION…]
    #[arg(long = "mount")]
    mount: Vec<String>,
    /// SOURCE:DESTINATION[:OPTIONS] as podman's: SOURCE is a host path (starting with `/`
    /// or `.`) or a volume name (created if missing); DESTINATION alone is an anonymous
    /// volume. OPTIONS: ro, rw, nocopy and mount options, comma-separated.
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// bridge (default: the network `berth`), none, host, or a network's name;
    /// comma-separated names join several.
    #[arg(long)]
    network: Option<String>,
    /// Publish a port: [IP:]HOST:CONTAINER[/udp] (HOST empty or 0: a free port).
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// A further name the container answers to on its networks (DNS).
    #[arg(long = "network-alias")]
    network_alias: Vec<String>,
    /// A DNS server for the container's /etc/resolv.conf.
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// Containers that must run first.
    #[arg(long = "requires")]
    requires: Vec<String>,
    /// no, on-failure[:N], always, unless-stopped.
    #[arg(long)]
    restart: Option<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Memory limit in bytes.
    #[arg(long)]
    memory: Option<u64>,
    #[arg(long)]
    pids_limit: Option<u64>,
    #[arg(long)]
    cpus: Option<f64>,
    #[arg(long)]
    read_only: bool,
    /// Run a tiny init (catatonit) as PID 1.
    #[arg(long)]
    init: bool,
    #[arg(long)]
    privileged: bool,
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    #[arg(long)]
    log_driver: Option<String>,
    /// `seccomp=unconfined` or `seccomp=PROFILE.json` (the `SeccompProfile` spec key), as podman.
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    #[arg(long)]
    entrypoint: Option<String>,
    /// Keep stdin open (and, for `run`, send berthctl's stdin).
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    tty: bool,
    #[command(flatten)]
    systemd: super::systemd::SystemdArgs,
    /// IMAGE (unless --rootfs), then the command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct RunArgs {
    /// Print the id and return at once.
    #[arg(short, long)]
    detach: bool,
    /// Pull the image first: `missing` (when not here), `always`, `newer`, `never`.
    #[arg(long, default_value = "missing")]
    pull: String,
    #[command(flatten)]
    registry: super::pull::RegistryArgs,
    #[command(flatten)]
    create: CreateArgs,
}

fn pairs(key: &str, values: &[String]) -> anyhow::Result<HashMap<String, String>> {
    values
        .iter()
        .map(|v| {
            v.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--{key} {v:?}: expected KEY=VALUE"))
        })
        .collect()
}

fn mount_spec(text: &str) -> anyhow::Result<HashMap<String, zbus::OwnedVariant>> {
    let mut spec: HashMap<String, zbus::OwnedVariant> = HashMap::new();
    let mut options = Vec::new();
    let owned = |v: Variant<'_>| v.try_to_owned().map_err(anyhow::Error::from);
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => spec.insert("Type".into(), owned(Variant::from(v))?),
            Some(("source" | "src", v)) => spec.insert("Source".into(), owned(Variant::from(v))?),
            Some(("destination" | "dst" | "target", v)) => {
                spec.insert("Destination".into(), owned(Variant::from(v))?)
            }
            None if part == "ro" || part == "readonly" => {
                spec.insert("ReadOnly".into(), owned(Variant::from(true))?)
            }
            _ => {
                options.push(part.to_string());
                None
            }
        };
    }
    if !options.is_empty() {
        spec.insert("Options".into(), owned(Variant::from(options))?);
    }
    Ok(spec)
}

/// One `-v/--volume` argument as a `Mounts` entry.
fn volume_spec(text: &str) -> anyhow::Result<HashMap<String, zbus::OwnedVariant>> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, destination, options) = match parts.as_slice() {
        [destination] => ("", *destination, ""),
        [destination, options] if !options.starts_with('/') => ("", *destination, *options),
        [source, destination] => (*source, *destination, ""),
        [source, destination, options] => (*source, *destination, *options),
        _ => anyhow::bail!("--volume {text:?}: expected SOURCE:DESTINATION[:OPTIONS]"),
    };
    if !destination.starts_with('/') {
        anyhow::bail!("--volume {text:?}: the destination {destination:?} is not absolute");
    }
    let (kind, source) = if source.starts_with('/') {
        ("bind", source.to_string())
    } else if source.starts_with('.') {
        let absolute = std::path::absolute(source)
            .map_err(|e| anyhow::anyhow!("--volume {text:?}: {source}: {e}"))?;
        ("bind", absolute.display().to_string())
    } else {
        ("volume", source.to_string())
    };
    let owned = |v: Variant<'_>| v.try_to_owned().map_err(anyhow::Error::from);
    let mut spec: HashMap<String, zbus::OwnedVariant> = HashMap::from([
        ("Type".to_string(), owned(Variant::from(kind))?),
        ("Source".to_string(), owned(Variant::from(source))?),
        (
            "Destination".to_string(),
            owned(Variant::from(destination))?,
        ),
    ]);
    let mut rest = Vec::new();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => {
                spec.insert("ReadOnly".into(), owned(Variant::from(true))?);
            }
            // SELinux relabelling: nothing to do without SELinux (podman ignores it too).
            "rw" | "z" | "Z" => {}
            other => rest.push(other.to_string()),
        }
    }
    if !rest.is_empty() {
        spec.insert("Options".into(), owned(Variant::from(rest))?);
    }
    Ok(spec)
}

fn spec(args: &CreateArgs) -> anyhow::Result<Spec<'static>> {
    let mut spec: Spec<'static> = HashMap::new();
    let command = put_image(&mut spec, args)?;
    put_process(&mut spec, args, command)?;
    put_lists(&mut spec, args)?;
    put_limits_and_flags(&mut spec, args);
    super::systemd::add_to_spec(&args.systemd, &mut spec)?;
    Ok(spec)
}

/// `Image` (the first word of the command) or `Rootfs`; returns the command that is left.
fn put_image(spec: &mut Spec<'static>, args: &CreateArgs) -> anyhow::Result<Vec<String>> {
    let command = match &args.rootfs {
        Some(rootfs) => {
            spec.insert("Rootfs", Variant::from(rootfs.clone()));
            args.command.clone()
        }
        None => {
            let (image, command) = args
                .command
                .split_first()
                .ok_or_else(|| anyhow::anyhow!("name an IMAGE (or give --rootfs DIR)"))?;
            spec.insert("Image", Variant::from(image.clone()));
            command.to_vec()
        }
    };
    Ok(command)
}

/// The process (command, entrypoint, user, directory) and the container's name, hostname,
/// stop signal, restart policy, log driver and seccomp profile.
fn put_process(
    spec: &mut Spec<'static>,
    args: &CreateArgs,
    command: Vec<String>,
) -> anyhow::Result<()> {
    let mut put_string = |key: &'static str, value: &Option<String>| {
        if let Some(value) = value {
            spec.insert(key, Variant::from(value.clone()));
        }
    };
    put_string("Name", &args.name);
    put_string("WorkingDir", &args.workdir);
    put_string("User", &args.user);
    put_string("Hostname", &args.hostname);
    put_string("StopSignal", &args.stop_signal);
    put_string("RestartPolicy", &args.restart);
    put_string("LogDriver", &args.log_driver);
    for option in &args.security_opt {
        let profile = option
            .strip_prefix("seccomp=")
            .ok_or_else(|| anyhow::anyhow!("--security-opt {option}: only seccomp=… is known"))?;
        spec.insert("SeccompProfile", Variant::from(profile.to_string()));
    }
    if !command.is_empty() {
        spec.insert("Command", Variant::from(command));
    }
    if let Some(entrypoint) = &args.entrypoint {
        // podman's `--entrypoint ""` clears the image's entrypoint.
        let entrypoint: Vec<String> = if entrypoint.is_empty() {
            Vec::new()
        } else {
            vec![entrypoint.clone()]
        };
        spec.insert("Entrypoint", Variant::from(entrypoint));
    }
    Ok(())
}

/// Environment, dependencies, capabilities, network, labels, annotations and mounts.
fn put_lists(spec: &mut Spec<'static>, args: &CreateArgs) -> anyhow::Result<()> {
    let env = super::systemd::environment(&args.systemd, &args.env)?;
    for (key, list) in [
        ("Env", &env),
        ("Dependencies", &args.requires),
        ("CapAdd", &args.cap_add),
        ("CapDrop", &args.cap_drop),
        ("NetworkAliases", &args.network_alias),
        ("DnsServers", &args.dns),
    ] {
        if !list.is_empty() {
            spec.insert(key, Variant::from(list.clone()));
        }
    }
    super::network::put_network(spec, args.network.as_deref(), &args.publish)?;
    if !args.label.is_empty() {
        spec.insert("Labels", Variant::from(pairs("label", &args.label)?));
    }
    if !args.annotation.is_empty() {
        spec.insert(
            "Annotations",
            Variant::from(pairs("annotation", &args.annotation)?),
        );
    }
    if !args.mount.is_empty() || !args.volume.is_empty() {
        let mut mounts = args
            .mount
            .iter()
            .map(|m| mount_spec(m))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for volume in &args.volume {
            mounts.push(volume_spec(volume)?);
        }
        spec.insert("Mounts", Variant::from(mounts));
    }
    Ok(())
}

/// Resource limits and the boolean options.
fn put_limits_and_flags(spec: &mut Spec<'static>, args: &CreateArgs) {
    if let Some(timeout) = args.stop_timeout {
        spec.insert("StopTimeout", Variant::from(timeout));
    }
    if let Some(memory) = args.memory {
        spec.insert("MemoryMax", Variant::from(memory));
    }
    if let Some(pids) = args.pids_limit {
        spec.insert("PidsMax", Variant::from(pids));
    }
    if let Some(cpus) = args.cpus {
        spec.insert("CpuQuota", Variant::from(cpus));
    }
    for (key, flag) in [
        ("AutoRemove", args.rm),
        ("ReadOnlyRootfs", args.read_only),
        ("Init", args.init),
        ("Privileged", args.privileged),
        ("Stdin", args.interactive),
        ("Terminal", args.tty),
    ] {
        if flag {
            spec.insert(key, Variant::from(true));
        }
    }
}

async fn create_container<'a>(
    connection: &zbus::Connection,
    args: &CreateArgs,
) -> anyhow::Result<ContainerProxy<'a>> {
    let manager = ManagerProxy::new(connection).await?;
    let spec = spec(args)?;
    if args.systemd.replace {
        super::systemd::replace(&manager, args.name.as_deref()).await?;
    }
    let path = manager.create_container(spec).await.map_err(explain)?;
    Ok(ContainerProxy::builder(connection)
        .path(path)
        .build()
        .await?)
}

pub async fn create(connection: &zbus::Connection, args: CreateArgs) -> anyhow::Result<i32> {
    let container = create_container(connection, &args).await?;
    println!("{}", container.id().await?);
    Ok(0)
}

/// Create, start, wait; the exit status is the container's.
pub async fn run(connection: &zbus::Connection, args: RunArgs) -> anyhow::Result<i32> {
    // In the foreground berthctl removes the container itself, after printing its output;
    // detached, berthd does (AutoRemove).
    let mut create = args.create.clone();
    create.rm = args.detach && args.create.rm;
    if let (None, Some(image)) = (&create.rootfs, create.command.first()) {
        super::pull::ensure(connection, image, &args.pull, &args.registry).await?;
    }
    if let Some(mode) = args.create.systemd.sdnotify {
        // A systemd service's main process: in the foreground whatever -d says.
        create.rm = false;
        let container = create_container(connection, &create).await?;
        let code = super::systemd::serve(connection, &container, mode).await;
        if args.create.rm {
            let _ = container.remove(true).await;
        }
        return code;
    }
    let container = create_container(connection, &create).await?;
    let id = container.id().await?;
    if args.detach {
        if let Err(error) = container.start(false).await {
            if args.create.rm {
                let _ = container.remove(true).await;
            }
            return Err(explain(error));
        }
        println!("{id}");
        return Ok(0);
    }
    // Attached before the process runs, as `podman run` is: no output is lost.
    let tty = args.create.tty;
    let mut options: HashMap<&str, Variant<'_>> =
        HashMap::from([("Stdin", Variant::from(args.create.interactive))]);
    if let (true, Some(size)) = (tty, super::attach::local_size()) {
        options.insert("TerminalSize", Variant::from(size));
    }
    let (stdin, stdout, stderr) = match container.start_and_attach(false, options).await {
        Ok(streams) => streams,
        Err(error) => {
            if args.create.rm {
                let _ = container.remove(true).await;
            }
            return Err(explain(error));
        }
    };
    let streams = super::attach::Streams {
        stdin: args.create.interactive.then(|| stdin.into()),
        stdout: stdout.into(),
        stderr: (!tty).then(|| stderr.into()),
    };
    super::attach::pump(streams, tty, super::attach::Resizer::Container(&container)).await?;
    let code = container.wait().await.map_err(explain)?;
    if args.create.rm {
        container.remove(true).await.map_err(explain)?;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(spec: &HashMap<String, zbus::OwnedVariant>, key: &str) -> String {
        String::try_from(spec[key].try_clone().unwrap()).unwrap()
    }

    #[test]
    fn volume_flags_read_as_podman_reads_them() {
        let named = volume_spec("pgdata:/var/lib/db:ro,nocopy").unwrap();
        assert_eq!(text(&named, "Type"), "volume");
        assert_eq!(text(&named, "Source"), "pgdata");
        assert_eq!(text(&named, "Destination"), "/var/lib/db");
        assert!(bool::try_from(named["ReadOnly"].try_clone().unwrap()).unwrap());
        let options = Vec::<String>::try_from(named["Options"].try_clone().unwrap()).unwrap();
        assert_eq!(options, ["nocopy"]);

        let bind = volume_spec("/srv/www:/usr/share/www").unwrap();
        assert_eq!(text(&bind, "Type"), "bind");
        assert_eq!(text(&bind, "Source"), "/srv/www");
        assert!(!bind.contains_key("ReadOnly"));

        let anonymous = volume_spec("/cache").unwrap();
        assert_eq!(text(&anonymous, "Type"), "volume");
        assert_eq!(text(&anonymous, "Source"), "");

        let relabelled = volume_spec("/srv:/srv:Z").unwrap();
        assert!(!relabelled.contains_key("Options"));

        let relative = volume_spec("./here:/x:rw").unwrap();
        assert_eq!(text(&relative, "Type"), "bind");
        assert!(text(&relative, "Source").starts_with('/'));

        assert!(volume_spec("data:relative").is_err());
        assert!(volume_spec("a:/b:ro:extra").is_err());
    }
}
