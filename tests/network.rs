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
    for program in [
        NETAVARK,
        "/usr/lib/podman/aardvark-dns",
        "/usr/sbin/iptables",
    ] {
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

async fn network_of<'a>(
    connection: &zbus::Connection,
    container: &ContainerProxy<'_>,
) -> ContainerNetworkProxy<'a> {
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

/// The rules of `iptables-save` that mention any of `needles` (this test's network name,
/// subnet, bridge or port): other tests may change the rest meanwhile.
fn iptables(needles: &[&str]) -> Vec<String> {
    let output = Command::new("iptables-save").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with("-A") && needles.iter().any(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// The bridge and the links enslaved to it (the host ends of the containers' veth pairs).
fn links_of(bridge: &str) -> Vec<String> {
    links()
        .into_iter()
        .filter(|link| {
            link == bridge
                || std::fs::read_link(format!("/sys/class/net/{link}/master"))
                    .is_ok_and(|master| master.ends_with(bridge))
        })
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
                    Variant::from(vec![(
                        "127.0.0.1".to_string(),
                        port,
                        80u16,
                        "tcp".to_string(),
                    )]),
                ),
            ],
        )
        .await;
    web.start(false).await.unwrap();
    let web_network = network_of(&connection, &web).await;
    let address = web_network.ip_address().await.unwrap();
    assert!(
        address.starts_with(&subnet[..subnet.len() - 4]),
        "{address} in {subnet}"
    );
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
            &[
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{name}/index.html"),
            ],
        );
        assert_eq!(
            (status, output.as_str()),
            (0, "hello-from-web\n"),
            "by {name}"
        );
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&web.inspect(false).await.unwrap()).unwrap();
    let settings = &inspect["NetworkSettings"];
    assert_eq!(settings["IPAddress"], address.as_str());
    assert_eq!(
        settings["Ports"]["80/tcp"][0]["HostPort"],
        port.to_string().as_str()
    );
    assert_eq!(
        settings["Networks"]["webnet"]["IPAddress"],
        address.as_str()
    );

    web.remove(true).await.unwrap();
    network.remove(false).await.unwrap();
    assert!(
        !links().contains(&bridge),
        "the bridge went with its network"
    );
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
    assert_eq!(
        error_name(&overlapping),
        "org.freedesktop.DBus.Error.InvalidArgs"
    );
    assert!(
        overlapping.to_string().contains("overlaps"),
        "{overlapping}"
    );

    let spec_error = |extra: Vec<(&'static str, Variant<'static>)>| {
        let connection = connection.clone();
        let rootfs = harness.rootfs.display().to_string();
        async move {
            let manager = berth::cli::proxy::ManagerProxy::new(&connection)
                .await
                .unwrap();
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
            vec![
                ("Network", Variant::from("good")),
                ("PortMappings", port(0)),
            ],
            "container port 0",
        ),
        (
            vec![
                ("Network", Variant::from("none")),
                ("PortMappings", port(80)),
            ],
            "none",
        ),
        (
            vec![
                ("Network", Variant::from("host")),
                ("PortMappings", port(80)),
            ],
            "host",
        ),
        (vec![("Network", Variant::from("nosuchnet"))], "nosuchnet"),
    ] {
        let error = spec_error(extra).await;
        assert_eq!(error_name(&error), "org.freedesktop.DBus.Error.InvalidArgs");
        assert!(error.to_string().contains(needle), "{error}");
    }
    manager.remove_network("good", false).await.unwrap();
}

async fn container<'a>(
    harness: &Harness,
    connection: &zbus::Connection,
    name: &str,
    command: &[&str],
    extra: Vec<(&'static str, Variant<'static>)>,
) -> ContainerProxy<'a> {
    harness.create_with(connection, name, command, extra).await
}

fn on(network: &str) -> Vec<(&'static str, Variant<'static>)> {
    vec![("Network", Variant::from(network.to_string()))]
}

fn publish(port: u16) -> (&'static str, Variant<'static>) {
    (
        "PortMappings",
        Variant::from(vec![(
            "127.0.0.1".to_string(),
            port,
            80u16,
            "tcp".to_string(),
        )]),
    )
}

/// wget from a new container on `network`; whether it got the page.
fn fetch_from(harness: &Harness, network: &str, url: &str) -> bool {
    let (status, output) = run_on(
        harness,
        network,
        &["timeout", "3", "wget", "-q", "-O", "-", url],
    );
    status == 0 && output == "isolated-page\n"
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_network_is_unreachable_from_others_and_an_internal_one_has_no_nat() {
    let Some(harness) = network_harness("isolation") else {
        return;
    };
    let connection = harness.connection().await;
    let (subnet_a, bridge_a) = (free_subnet(31), bridge_name("ia"));
    let isolated = create_network(
        &connection,
        "isolated",
        vec![
            ("Subnet", Variant::from(subnet_a.clone())),
            ("Interface", Variant::from(bridge_a.clone())),
            ("Isolate", Variant::from(true)),
        ],
    )
    .await;
    let (subnet_b, bridge_b) = (free_subnet(41), bridge_name("ib"));
    let internal = create_network(
        &connection,
        "inner",
        vec![
            ("Subnet", Variant::from(subnet_b.clone())),
            ("Interface", Variant::from(bridge_b.clone())),
            ("Internal", Variant::from(true)),
        ],
    )
    .await;
    assert!(internal.internal().await.unwrap());
    let (subnet_c, bridge_c) = (free_subnet(91), bridge_name("ic"));
    // netavark 1.4 (Debian 12) isolates isolated networks from each other (its `isolate`
    // before `strict` existed): the outsider's network is isolated too.
    let plain = create_network(
        &connection,
        "other",
        vec![
            ("Subnet", Variant::from(subnet_c.clone())),
            ("Interface", Variant::from(bridge_c.clone())),
            ("Isolate", Variant::from(true)),
        ],
    )
    .await;
    let inside = container(
        &harness,
        &connection,
        "inside",
        &["sleep", "1000"],
        on("inner"),
    )
    .await;
    inside.start(false).await.unwrap();
    let command = web_command("isolated-page");
    let server = container(
        &harness,
        &connection,
        "server",
        &strings(&command),
        on("isolated"),
    )
    .await;
    server.start(false).await.unwrap();
    let server_ip = network_of(&connection, &server)
        .await
        .ip_address()
        .await
        .unwrap();
    let url = format!("http://{server_ip}/index.html");

    let mut reached = false;
    wait_until(Duration::from_secs(10), || {
        reached = fetch_from(&harness, "isolated", &url);
        reached
    });
    assert!(
        reached,
        "a container on the same network reaches the server"
    );
    assert!(
        !fetch_from(&harness, "other", &url),
        "a container on another network does not reach an isolated one"
    );
    let prefix_b = &subnet_b[..subnet_b.len() - 5];
    let prefix_a = &subnet_a[..subnet_a.len() - 5];
    // netavark's NAT: `-A POSTROUTING -s SUBNET -j NETAVARK-…`, whose chain masquerades.
    let masquerade = |subnet: &str| {
        iptables(&[subnet])
            .iter()
            .any(|rule| rule.starts_with(&format!("-A POSTROUTING -s {subnet} -j NETAVARK")))
    };
    assert!(
        !masquerade(&subnet_b),
        "the internal network has a NAT rule: {:?}",
        iptables(&[prefix_b])
    );
    assert!(
        masquerade(&subnet_a),
        "the isolated (not internal) network has its NAT rule: {:?}",
        iptables(&[prefix_a])
    );

    server.remove(true).await.unwrap();
    inside.remove(true).await.unwrap();
    isolated.remove(false).await.unwrap();
    plain.remove(false).await.unwrap();
    internal.remove(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_port_in_use_fails_the_start_naming_it_and_leaks_nothing() {
    let Some(harness) = network_harness("port_in_use") else {
        return;
    };
    let connection = harness.connection().await;
    let (subnet, bridge) = (free_subnet(51), bridge_name("p"));
    let _network = create_network(
        &connection,
        "portnet",
        vec![
            ("Subnet", Variant::from(subnet.clone())),
            ("Interface", Variant::from(bridge.clone())),
        ],
    )
    .await;
    let occupant = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = occupant.local_addr().unwrap().port();
    let prefix = &subnet[..subnet.len() - 5];
    let port_text = format!("--dport {port} ");
    let rules_before = iptables(&[prefix, &bridge, &port_text, "portnet"]);
    let mut extra = on("portnet");
    extra.push(publish(port));
    let web = container(&harness, &connection, "web", &["sleep", "1000"], extra).await;
    let error = web.start(false).await.unwrap_err();
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "the error names the port: {error}"
    );
    let state = harness.busctl(&[
        "get-property",
        "org.berth.Engine1",
        web.inner().path().as_str(),
        "org.berth.Engine1.Container",
        "State",
    ]);
    let state = String::from_utf8_lossy(&state.stdout).into_owned();
    assert!(!state.contains("running"), "{state}");
    assert_eq!(leases(&harness), 0);
    assert_eq!(netns_mounts(&harness), Vec::<String>::new());
    assert!(!links().contains(&bridge), "no bridge was made");
    assert_eq!(
        iptables(&[prefix, &bridge, &port_text, "portnet"]),
        rules_before
    );

    // Host port 0 picks a free one.
    drop(occupant);
    let mut extra = on("portnet");
    extra.push(publish(0));
    let picked = container(&harness, &connection, "picked", &["sleep", "1000"], extra).await;
    picked.start(false).await.unwrap();
    let ports = network_of(&connection, &picked)
        .await
        .ports()
        .await
        .unwrap();
    assert_eq!(ports.len(), 1);
    assert_ne!(ports[0].1, 0, "a host port was picked");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", ports[0].1)).is_err(),
        "berthd holds the picked port"
    );
    picked.remove(true).await.unwrap();
    web.remove(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_cycles_with_a_published_port_leave_the_host_as_before() {
    let Some(harness) = network_harness("hundred_cycles") else {
        return;
    };
    let connection = harness.connection().await;
    let (subnet, bridge) = (free_subnet(61), bridge_name("c"));
    let network = create_network(
        &connection,
        "cyclenet",
        vec![
            ("Subnet", Variant::from(subnet.clone())),
            ("Interface", Variant::from(bridge.clone())),
        ],
    )
    .await;
    let port = free_port();
    let prefix = &subnet[..subnet.len() - 5];
    let port_text = format!("--dport {port} ");
    let needles = [prefix, bridge.as_str(), port_text.as_str(), "cyclenet"];
    let before = (
        iptables(&needles),
        links_of(&bridge),
        leases(&harness),
        netns_mounts(&harness),
    );
    for cycle in 0..100 {
        let mut extra = on("cyclenet");
        extra.push(publish(port));
        let proxy = container(&harness, &connection, "cycle", &["sleep", "1000"], extra).await;
        proxy.start(false).await.unwrap();
        if cycle == 0 {
            assert_eq!(
                links_of(&bridge).len(),
                2,
                "the bridge and a veth while it runs"
            );
            assert_eq!(leases(&harness), 1);
            assert_eq!(netns_mounts(&harness).len(), 1);
            assert!(
                !iptables(&[&port_text]).is_empty(),
                "the port's DNAT rule is there"
            );
        }
        proxy.stop(0).await.unwrap();
        proxy.remove(false).await.unwrap();
    }
    let after = (
        iptables(&needles),
        links_of(&bridge),
        leases(&harness),
        netns_mounts(&harness),
    );
    assert_eq!(after, before);
    network.remove(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn after_berthd_is_killed_running_containers_stay_reachable_and_exited_ones_are_torn_down() {
    let Some(mut harness) = network_harness("kill_berthd") else {
        return;
    };
    let connection = harness.connection().await;
    let (subnet, bridge) = (free_subnet(71), bridge_name("k"));
    let _network = create_network(
        &connection,
        "killnet",
        vec![
            ("Subnet", Variant::from(subnet.clone())),
            ("Interface", Variant::from(bridge.clone())),
        ],
    )
    .await;
    let port = free_port();
    let command = web_command("still-here");
    let mut extra = on("killnet");
    extra.push(publish(port));
    let web = container(&harness, &connection, "web", &strings(&command), extra).await;
    web.start(false).await.unwrap();
    let brief = container(
        &harness,
        &connection,
        "brief",
        &["sleep", "2"],
        on("killnet"),
    )
    .await;
    brief.start(false).await.unwrap();
    let brief_ip = network_of(&connection, &brief)
        .await
        .ip_address()
        .await
        .unwrap();
    assert_eq!(leases(&harness), 2);
    wait_until(Duration::from_secs(10), || {
        http_get(&format!("127.0.0.1:{port}")).is_some()
    });

    harness.kill_berthd();
    drop(connection);
    std::thread::sleep(Duration::from_secs(3));
    harness.start_berthd(&[]);
    let connection = harness.connection().await;
    let web = common::container_proxy(&connection, "web").await;
    let brief = common::container_proxy(&connection, "brief").await;
    assert_eq!(web.state().await.unwrap(), "running");
    assert_eq!(brief.state().await.unwrap(), "exited");
    assert_eq!(
        http_get(&format!("127.0.0.1:{port}")).as_deref(),
        Some("still-here\n"),
        "the adopted container still answers on its published port"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_err(),
        "the new berthd holds the published port again"
    );
    assert_eq!(
        network_of(&connection, &brief)
            .await
            .ip_address()
            .await
            .unwrap(),
        ""
    );
    assert_eq!(leases(&harness), 1, "the exited container's lease is gone");
    assert_eq!(
        netns_mounts(&harness).len(),
        1,
        "only the running one's namespace is left"
    );
    assert!(
        iptables(&[&format!("{brief_ip} ")]).is_empty()
            && iptables(&[&format!("{brief_ip}/")]).is_empty(),
        "no rule names the exited container's address"
    );
    web.remove(true).await.unwrap();
    brief.remove(true).await.unwrap();
    assert_eq!(leases(&harness), 0);
    let manager = NetworkManagerProxy::new(&connection).await.unwrap();
    manager.remove_network("killnet", false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_in_use_cannot_be_removed_until_its_containers_are_gone() {
    let Some(harness) = network_harness("network_in_use") else {
        return;
    };
    let connection = harness.connection().await;
    let (subnet, bridge) = (free_subnet(81), bridge_name("u"));
    let network = create_network(
        &connection,
        "busynet",
        vec![
            ("Subnet", Variant::from(subnet.clone())),
            ("Interface", Variant::from(bridge.clone())),
        ],
    )
    .await;
    let user = container(
        &harness,
        &connection,
        "user",
        &["sleep", "1000"],
        on("busynet"),
    )
    .await;
    user.start(false).await.unwrap();
    assert_eq!(
        network.containers().await.unwrap(),
        vec![user.inner().path().to_owned().into()]
    );
    assert!(links().contains(&bridge));
    let manager = NetworkManagerProxy::new(&connection).await.unwrap();
    let error = manager.remove_network("busynet", false).await.unwrap_err();
    assert_eq!(error_name(&error), "org.berth.Engine1.Error.NetworkInUse");
    assert!(error.to_string().contains("user"), "{error}");
    assert_eq!(user.state().await.unwrap(), "running");

    user.stop(0).await.unwrap();
    user.remove(false).await.unwrap();
    manager.remove_network("busynet", false).await.unwrap();
    assert!(!links().contains(&bridge), "the bridge is gone");
    let gone = manager.get_network("busynet").await.unwrap_err();
    assert_eq!(error_name(&gone), "org.berth.Engine1.Error.NoSuchNetwork");
}

/// Two engines on one host may both have a network of the same name (berth's `berth` in
/// every berthd, or a name podman also uses): netavark names firewall chains after the
/// network, so berth hands it the network's id, and one engine's teardown never touches the
/// other's rules.
#[tokio::test(flavor = "multi_thread")]
async fn networks_of_the_same_name_in_two_berthds_keep_their_own_firewall_chains() {
    let (Some(first), Some(second)) = (
        network_harness("same_name_first"),
        network_harness("same_name_second"),
    ) else {
        return;
    };
    // netavark's NAT: `-A POSTROUTING -s SUBNET -j NETAVARK-…`; the chain it jumps to.
    let chain_of = |subnet: &str| {
        iptables(&[subnet])
            .iter()
            .find_map(|rule| {
                rule.strip_prefix(&format!("-A POSTROUTING -s {subnet} -j "))
                    .map(str::to_string)
            })
            .unwrap_or_default()
    };
    let mut running = Vec::new();
    for (harness, seed, tag) in [(&first, 91, "sa"), (&second, 101, "sb")] {
        let connection = harness.connection().await;
        let subnet = free_subnet(seed);
        create_network(
            &connection,
            "shared",
            vec![
                ("Subnet", Variant::from(subnet.clone())),
                ("Interface", Variant::from(bridge_name(tag))),
            ],
        )
        .await;
        let user = container(
            harness,
            &connection,
            "user",
            &["sleep", "1000"],
            on("shared"),
        )
        .await;
        user.start(false).await.unwrap();
        running.push((subnet, user));
    }
    let (first_chain, second_chain) = (chain_of(&running[0].0), chain_of(&running[1].0));
    assert!(
        first_chain.starts_with("NETAVARK"),
        "{:?}",
        iptables(&[&running[0].0])
    );
    assert!(
        second_chain.starts_with("NETAVARK"),
        "{:?}",
        iptables(&[&running[1].0])
    );
    assert_ne!(
        first_chain, second_chain,
        "both engines' networks share one chain"
    );

    let (first_subnet, first_user) = running.remove(0);
    first_user.remove(true).await.unwrap();
    assert!(
        iptables(&[&first_subnet]).is_empty(),
        "{:?}",
        iptables(&[&first_subnet])
    );
    let (second_subnet, second_user) = running.remove(0);
    assert_eq!(chain_of(&second_subnet), second_chain);
    assert!(
        iptables(&[&second_chain])
            .iter()
            .any(|rule| rule.starts_with(&format!("-A {second_chain} -d {second_subnet}"))),
        "{:?}",
        iptables(&[&second_chain])
    );
    second_user.remove(true).await.unwrap();
}
