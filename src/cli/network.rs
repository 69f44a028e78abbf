//! `network create|ls|inspect|rm`, and the network flags of `create`/`run` (`--network`,
//! `-p`) as podman spells them.

use std::collections::HashMap;

use clap::Subcommand;
use zbus::Variant;

use super::explain;
use super::network_proxy::{NetworkManagerProxy, NetworkProxy};
use super::proxy::Spec;

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network (prints its name).
    Create {
        /// IPv4 CIDR; a free 10.90–10.99 /24 when not given.
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        /// No NAT and no route out.
        #[arg(long)]
        internal: bool,
        /// No traffic to or from other isolated networks.
        #[arg(long)]
        isolate: bool,
        /// No aardvark-dns for container names.
        #[arg(long)]
        disable_dns: bool,
        /// The bridge's name on the host.
        #[arg(long = "interface-name")]
        interface: Option<String>,
        name: String,
    },
    /// List networks.
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print networks as JSON (podman's shape).
    Inspect { names: Vec<String> },
    /// Remove networks; -f removes the containers on them first.
    Rm {
        #[arg(short, long)]
        force: bool,
        names: Vec<String>,
    },
}

/// `--network` (berthctl's default is `bridge`, as podman's; comma-separated names join
/// several networks) and `-p` into the spec.
pub fn put_network(
    spec: &mut Spec<'static>,
    network: Option<&str>,
    publish: &[String],
) -> anyhow::Result<()> {
    let network = network.unwrap_or("bridge");
    let names: Vec<String> = network.split(',').map(str::to_string).collect();
    if names.len() == 1 {
        spec.insert("Network", Variant::from(network.to_string()));
    } else {
        spec.insert("Networks", Variant::from(names));
    }
    if !publish.is_empty() {
        let mappings = publish
            .iter()
            .map(|text| parse_publish(text))
            .collect::<anyhow::Result<Vec<_>>>()?;
        spec.insert("PortMappings", Variant::from(mappings));
    }
    Ok(())
}

/// `[ip:][host:]container[/tcp|udp]`; a missing or empty host port is 0 (a free one).
pub fn parse_publish(text: &str) -> anyhow::Result<(String, u16, u16, String)> {
    let bad = || anyhow::anyhow!("-p {text:?}: expected [IP:]HOST:CONTAINER[/udp]");
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, protocol)) => (ports, protocol.to_string()),
        None => (text, "tcp".to_string()),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [container] => ("", "", *container),
        [host, container] => ("", *host, *container),
        [ip, host, container] => (*ip, *host, *container),
        _ => return Err(bad()),
    };
    let host: u16 = if host.is_empty() {
        0
    } else {
        host.parse().map_err(|_| bad())?
    };
    let container: u16 = container.parse().map_err(|_| bad())?;
    Ok((ip.to_string(), host, container, protocol))
}

async fn network_proxy<'a>(
    connection: &zbus::Connection,
    name: &str,
) -> anyhow::Result<NetworkProxy<'a>> {
    let manager = NetworkManagerProxy::new(connection).await?;
    let path = manager.get_network(name).await.map_err(explain)?;
    Ok(NetworkProxy::builder(connection).path(path).build().await?)
}

pub async fn run(connection: &zbus::Connection, command: NetworkCommand) -> anyhow::Result<i32> {
    let manager = NetworkManagerProxy::new(connection).await?;
    match command {
        NetworkCommand::Create {
            subnet,
            gateway,
            internal,
            isolate,
            disable_dns,
            interface,
            name,
        } => {
            let mut options: HashMap<&str, Variant<'_>> = HashMap::new();
            for (key, value) in [
                ("Subnet", subnet),
                ("Gateway", gateway),
                ("Interface", interface),
            ] {
                if let Some(value) = value {
                    options.insert(key, Variant::from(value));
                }
            }
            options.insert("Internal", Variant::from(internal));
            options.insert("Isolate", Variant::from(isolate));
            options.insert("DnsEnabled", Variant::from(!disable_dns));
            manager
                .create_network(&name, options)
                .await
                .map_err(explain)?;
            println!("{name}");
        }
        NetworkCommand::Ls { quiet } => {
            let networks = manager.list_networks().await.map_err(explain)?;
            if !quiet {
                println!("{:<24} {:<8} SUBNET", "NAME", "DRIVER");
            }
            for (name, driver, subnet, _) in networks {
                if quiet {
                    println!("{name}");
                } else {
                    println!("{name:<24} {driver:<8} {subnet}");
                }
            }
        }
        NetworkCommand::Inspect { names } => {
            let mut documents = Vec::new();
            for name in &names {
                let network = network_proxy(connection, name).await?;
                let text = network.inspect().await.map_err(explain)?;
                documents.push(serde_json::from_str::<serde_json::Value>(&text)?);
            }
            println!("{}", serde_json::to_string_pretty(&documents)?);
        }
        NetworkCommand::Rm { force, names } => {
            for name in &names {
                manager.remove_network(name, force).await.map_err(explain)?;
                println!("{name}");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_flags_parse_as_podman_spells_them() {
        assert_eq!(
            parse_publish("127.0.0.1:8080:80").unwrap(),
            ("127.0.0.1".into(), 8080, 80, "tcp".into())
        );
        assert_eq!(
            parse_publish("5353:53/udp").unwrap(),
            (String::new(), 5353, 53, "udp".into())
        );
        assert_eq!(
            parse_publish("80").unwrap(),
            (String::new(), 0, 80, "tcp".into())
        );
        assert_eq!(
            parse_publish("127.0.0.1::80").unwrap(),
            ("127.0.0.1".into(), 0, 80, "tcp".into())
        );
        assert!(parse_publish("a:b").is_err());
    }
}
