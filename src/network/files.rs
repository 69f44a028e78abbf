//! The name-resolution files a networked container gets, as podman writes them: bind-mounted
//! over `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.

use super::Endpoint;

/// `/etc/hosts`: localhost, the container's own address under its hostname and name, and the
/// host as `host.containers.internal` (podman's entries).
pub fn hosts(hostname: &str, name: &str, endpoints: &[Endpoint]) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost localhost.localdomain localhost4 localhost4.localdomain4\n\
         ::1\tlocalhost localhost.localdomain localhost6 localhost6.localdomain6\n",
    );
    if let Some(first) = endpoints.first() {
        let names = if hostname == name {
            name.to_string()
        } else {
            format!("{hostname} {name}")
        };
        text.push_str(&format!("{}\t{names}\n", first.address));
        if !first.gateway.is_empty() {
            text.push_str(&format!("{}\thost.containers.internal\n", first.gateway));
        }
    }
    text
}

/// `/etc/resolv.conf`: the `DnsServers` given, else aardvark-dns on the gateways of the
/// networks with DNS (search domain `dns.podman`), else the host's resolvers without
/// loopback ones (which mean nothing inside the container).
pub fn resolv_conf(custom: &[String], aardvark: &[String], host_resolv_conf: &str) -> String {
    let mut text = String::new();
    if !custom.is_empty() {
        for server in custom {
            text.push_str(&format!("nameserver {server}\n"));
        }
        return text;
    }
    if !aardvark.is_empty() {
        text.push_str("search dns.podman\n");
        for server in aardvark {
            text.push_str(&format!("nameserver {server}\n"));
        }
    }
    for line in host_resolv_conf.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("nameserver"), Some(server)) if !aardvark.is_empty() || is_loopback(server) => {}
            (Some("nameserver" | "options"), Some(_)) => text.push_str(&format!("{line}\n")),
            (Some("search"), Some(_)) if aardvark.is_empty() => text.push_str(&format!("{line}\n")),
            _ => {}
        }
    }
    text
}

fn is_loopback(server: &str) -> bool {
    server
        .parse::<std::net::IpAddr>()
        .is_ok_and(|address| address.is_loopback())
}

/// `/etc/hostname`.
pub fn hostname(hostname: &str) -> String {
    format!("{hostname}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint {
            network: "berth".into(),
            interface: "eth0".into(),
            address: "10.90.0.2".into(),
            prefix_length: 24,
            gateway: "10.90.0.1".into(),
            mac_address: "aa:bb:cc:dd:ee:ff".into(),
            aliases: vec![],
        }
    }

    #[test]
    fn hosts_names_the_container_and_the_host() {
        let text = hosts("3f0c2a9b1d4e", "web", &[endpoint()]);
        assert!(text.starts_with("127.0.0.1\tlocalhost"));
        assert!(text.contains("10.90.0.2\t3f0c2a9b1d4e web\n"));
        assert!(text.contains("10.90.0.1\thost.containers.internal\n"));
    }

    #[test]
    fn resolv_conf_prefers_custom_servers_then_aardvark_then_the_host() {
        let host =
            "nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example.org\noptions edns0\n";
        assert_eq!(
            resolv_conf(&["192.0.2.9".into()], &[], host),
            "nameserver 192.0.2.9\n"
        );
        assert_eq!(
            resolv_conf(&[], &["10.90.0.1".into()], host),
            "search dns.podman\nnameserver 10.90.0.1\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf(&[], &[], host),
            "nameserver 192.0.2.53\nsearch example.org\noptions edns0\n"
        );
    }
}
