//! Networks end to end, on real netavark, iptables and aardvark-dns: published ports, name
//! resolution, isolation, teardown. Traffic goes only to 127.0.0.1 and to the containers
//! each test made; each test uses a network, subnet and bridge of its own.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use berth::cli::network_proxy::{ContainerNetworkProxy, NetworkManagerProxy, NetworkProxy};
use berth::cli::proxy::ContainerProxy;
use common::{error_name, wait_until, Harness};
use zbus::Variant;

const NETAVARK: &str = "/usr/lib/podman/netavark";

/// A harness, or None (printing SKIP) where netavark or iptables is missing.
fn network_harness(test: &str) -> Option<Harness> {
    for program in [NETAVARK, "/usr/lib/podman/aardvark-dns", "/usr/sbin/iptables"] {
        if !std::path::Path::new(program).exists() && common::missing_requirement().is_none() {
            eprintln!("SKIP {test}: {program} is not installed");
            return None;
        }
    }
    let mut harness = common::harness(test)?;
    harness.start_berthd(&[]);
    Some(harness)
}

fn routes() -> String {
    let output = Command::new("ip").args(["-4", "route"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A /24 in 10.97–10.98 that no route uses, starting from `seed` (each test its own), and
/// a bridge name of the test's own.
fn free_subnet(seed: u8) -> String {
    let used = routes();
    for third in (seed..=255).chain(0..seed) {
        for second in [97, 98] {
            let subnet = format!("10.{second}.{third}.0/24");
            if !used.contains(&format!("10.{second}.{third}.")) {
                return subnet;
            }
        }
    }
    panic!("no free subnet for the test");
}

fn bridge_name(tag: &str) -> String {
    format!("bt{}{tag}", std::process::id() % 100_000)
}

async fn create_network<'a>(
    connection: &zbus::Connection,
    name: &str,
    options: Vec<(&'static str, Variant<'static>)>,
) -> NetworkProxy<'a> {
    let manager = NetworkManagerProxy::new(connection).await.unwrap();
    let options: HashMap<&str, Variant<'_>> = options.into_iter().collect();
    let path = manager.create_network(name, options).await.unwrap();
    NetworkProxy::builder(connection)
        .path(path)
        .build()
        .await
        .unwrap()
}

async fn network_of<'a>(connection: &zbus::Connection, container: &ContainerProxy<'_>) -> ContainerNetworkProxy<'a> {
    ContainerNetworkProxy::builder(connection)
        .path(container.inner().path().to_owned())
        .build()
        .await
        .unwrap()
}

/// An HTTP GET to `address` (127.0.0.1 or a test container); the body, or None.
fn http_get(address: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\nHost: test\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

/// busybox httpd serving `body` on port 80.
fn web_command(body: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www"),
    ]
}

fn strings(items: &[String]) -> Vec<&str> {
    items.iter().map(String::as_str).collect()
}

/// Runs a busybox command in a new container on `network` through berthctl; (status, stdout).
fn run_on(harness: &Harness, network: &str, command: &[&str]) -> (i32, String) {
    let rootfs = harness.rootfs.display().to_string();
    let mut args = vec!["run", "--rm", "--network", network, "--rootfs", &rootfs];
    args.extend_from_slice(command);
    let output = harness.berthctl(&args);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `iptables-save` without counters, comments about time, or anything not ours to compare.
fn iptables() -> String {
    let output = Command::new("iptables-save").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn links() -> Vec<String> {
    let mut links: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    links.sort();
    links
}

fn leases(harness: &Harness) -> i64 {
    let db = rusqlite::Connection::open(harness.root().join("berth.db")).unwrap();
    db.query_row("SELECT count(*) FROM network_leases", [], |r| r.get(0))
        .unwrap()
}

fn netns_mounts(harness: &Harness) -> Vec<String> {
    harness
        .mounts()
        .into_iter()
        .filter(|m| m.contains("netns"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_published_web_server_answers_on_localhost_and_by_name_and_alias() {
    let Some(harness) = network_harness("published_web_server") else {
        return;
    };
    let connection = harness.connection().await;
    let subnet = free_subnet(11);
    let bridge = bridge_name("a");
    let network = create_network(
        &connection,
        "webnet",
        vec![
            ("Subnet", Variant::from(subnet.clone())),
            ("Interface", Variant::from(bridge.clone())),
        ],
    )
    .await;
    assert!(network.dns_enabled().await.unwrap());
    let port = free_port();
    let command = web_command("hello-from-web");
    let web = harness
        .create_with(
            &connection,
            "web",
            &strings(&command),
            vec![
                ("Network", Variant::from("webnet")),
                ("NetworkAliases", Variant::from(vec!["www".to_string()])),
                (
                    "PortMappings",
                    Variant::from(vec![("127.0.0.1".to_string(), port, 80u16, "tcp".to_string())]),
                ),
            ],
        )
        .await;
    web.start(false).await.unwrap();
    let web_network = network_of(&connection, &web).await;
    let address = web_network.ip_address().await.unwrap();
    assert!(address.starts_with(&subnet[..subnet.len() - 4]), "{address} in {subnet}");
    assert_eq!(
        web_network.ports().await.unwrap(),
        vec![("127.0.0.1".to_string(), port, 80, "tcp".to_string())]
    );
    let mut body = None;
    wait_until(Duration::from_secs(10), || {
        body = http_get(&format!("127.0.0.1:{port}"));
        body.is_some()
    });
    assert_eq!(body.as_deref(), Some("hello-from-web\n"));

    for name in ["web", "www"] {
        let (status, output) = run_on(
            &harness,
            "webnet",
            &["wget", "-q", "-O", "-", &format!("http://{name}/index.html")],
        );
        assert_eq!((status, output.as_str()), (0, "hello-from-web\n"), "by {name}");
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&web.inspect(false).await.unwrap()).unwrap();
    let settings = &inspect["NetworkSettings"];
    assert_eq!(settings["IPAddress"], address.as_str());
    assert_eq!(
        settings["Ports"]["80/tcp"][0]["HostPort"],
        port.to_string().as_str()
    );
    assert_eq!(settings["Networks"]["webnet"]["IPAddress"], address.as_str());

    web.remove(true).await.unwrap();
    network.remove(false).await.unwrap();
    assert!(!links().contains(&bridge), "the bridge went with its network");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_network_input_is_invalid_args_naming_the_problem() {
    let Some(harness) = network_harness("bad_network_input") else {
        return;
    };
    let connection = harness.connection().await;
    let manager = NetworkManagerProxy::new(&connection).await.unwrap();
    let subnet = free_subnet(21);
    let bridge = bridge_name("i");
    let attempt = |name: &'static str, options: Vec<(&'static str, Variant<'static>)>| {
        let manager = manager.clone();
        async move {
            let options: HashMap<&str, Variant<'_>> = options.into_iter().collect();
            manager.create_network(name, options).await.unwrap_err()
        }
    };
    for (options, needle) in [
        (vec![("Subnet", Variant::from("10.97.0.1/24"))], "host bits"),
        (vec![("Subnet", Variant::from("not-a-subnet"))], "CIDR"),
        (
            vec![
                ("Subnet", Variant::from(subnet.clone())),
                ("Gateway", Variant::from("192.0.2.99")),
            ],
            "outside the subnet",
        ),
    ] {
        let error = attempt("bad", options).await;
        assert_eq!(error_name(&error), "org.freedesktop.DBus.Error.InvalidArgs");
        assert!(error.to_string().contains(needle), "{error}");
    }
    let _good = create_network(
        &connection,
        "good",
        vec![
            ("Subnet", Variant::from(subnet.clone())),
            ("Interface", Variant::from(bridge.clone())),
        ],
    )
    .await;
    let overlapping = attempt("other", vec![("Subnet", Variant::from(subnet.clone()))]).await;
    assert_eq!(error_name(&overlapping), "org.freedesktop.DBus.Error.InvalidArgs");
    assert!(overlapping.to_string().contains("overlaps"), "{overlapping}");

    let spec_error = |extra: Vec<(&'static str, Variant<'static>)>| {
        let connection = connection.clone();
        let rootfs = harness.rootfs.display().to_string();
        async move {
            let manager = berth::cli::proxy::ManagerProxy::new(&connection).await.unwrap();
            let mut spec: HashMap<&str, Variant<'_>> = HashMap::new();
            spec.insert("Rootfs", Variant::from(rootfs));
            spec.insert("Command", Variant::from(vec!["true".to_string()]));
            spec.extend(extra);
            manager.create_container(spec).await.unwrap_err()
        }
    };
    let port = |container: u16| {
        Variant::from(vec![(String::new(), 8080u16, container, "tcp".to_string())])
    };
    for (extra, needle) in [
        (
            vec![("Network", Variant::from("good")), ("PortMappings", port(0))],
            "container port 0",
        ),
        (vec![("Network", Variant::from("none")), ("PortMappings", port(80))], "none"),
        (vec![("Network", Variant::from("host")), ("PortMappings", port(80))], "host"),
        (vec![("Network", Variant::from("nosuchnet"))], "nosuchnet"),
    ] {
        let error = spec_error(extra).await;
        assert_eq!(error_name(&error), "org.freedesktop.DBus.Error.InvalidArgs");
        assert!(error.to_string().contains(needle), "{error}");
    }
    manager.remove_network("good", false).await.unwrap();
}
