//! Measurements for `scripts/bench`, from a client that stays connected.
//! Prints `name value` lines; the script puts them next to runc and podman.
//!
//! Usage: bench MODE N [ADDRESS ROOTFS] [-- COMMAND…]
//!   exec N -- CMD       runs CMD N times (ms per run): bare runc, podman
//!   lifecycle N A R [-- CMD]  create+start+wait+remove of /bin/true, N times (ms per
//!                       run, and each call's share), alternating with CMD when given
//!                       (`{n}`: the run number)
//!   roundtrip N A R     Get State vs a bare zbus echo method on the same bus (µs per call)
//!   exit N A R          exit → Exited signal latency (ms)
//!   execrt N A R        Exec of /bin/true to its exit code in one running container (ms)
//!   populate N A R      creates N configured containers
//!   monitors N A R      PSS of N running containers' monitors (KiB)
//!   startup 1 A R -- BERTHD…  spawn to name owned (ms); leaves berthd running
//!
//! `BERTH_BENCH_SECCOMP=unconfined` (or a profile path) sets the containers' `SeccompProfile`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth::cli::proxy::{ContainerProxy, ExecSessionProxy, ManagerProxy};
use futures_util::StreamExt;
use zbus::Variant;

struct Echo;

#[zbus::interface(name = "org.berth.Bench.Echo")]
impl Echo {
    fn echo(&self, text: String) -> String {
        text
    }
}

#[zbus::proxy(interface = "org.berth.Bench.Echo", default_path = "/echo")]
trait EchoClient {
    fn echo(&self, text: &str) -> zbus::Result<String>;
}

fn stats(name: &str, unit: &str, mut samples: Vec<f64>) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!("{name}_median_{unit} {:.3}", at(0.5));
    println!("{name}_p95_{unit} {:.3}", at(0.95));
}

/// Reads a descriptor to its end; returns how many bytes came.
fn read_to_end(fd: std::os::fd::OwnedFd) -> u64 {
    use std::io::Read;
    let mut file = std::fs::File::from(fd);
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => panic!("read: {error}"),
        }
    }
}

/// A container of `command` on `rootfs`; with `BERTH_BENCH_SECCOMP` set, its `SeccompProfile`
/// (`unconfined` measures berth without the filter runc compiles at every start and exec).
fn spec<'a>(rootfs: &str, command: &[&str]) -> HashMap<&'a str, Variant<'a>> {
    let mut spec = HashMap::from([
        ("Rootfs", Variant::from(rootfs.to_string())),
        (
            "Command",
            Variant::from(command.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        ),
    ]);
    if let Ok(profile) = std::env::var("BERTH_BENCH_SECCOMP") {
        spec.insert("SeccompProfile", Variant::from(profile));
    }
    spec
}

async fn container<'a>(
    connection: &zbus::Connection,
    manager: &ManagerProxy<'_>,
    rootfs: &str,
    command: &[&str],
) -> ContainerProxy<'a> {
    let path = manager
        .create_container(spec(rootfs, command))
        .await
        .expect("create");
    ContainerProxy::builder(connection)
        .path(path)
        .build()
        .await
        .expect("proxy")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args[1].as_str();
    let count: usize = args[2].parse().expect("N");
    let command: Vec<String> = args
        .iter()
        .skip_while(|a| *a != "--")
        .skip(1)
        .cloned()
        .collect();
    if mode == "exec" {
        let mut samples = Vec::new();
        for _ in 0..count + 2 {
            let started = Instant::now();
            let status = std::process::Command::new(&command[0])
                .args(&command[1..])
                .status()
                .expect("run");
            assert!(status.success(), "{command:?} failed");
            samples.push(started.elapsed().as_secs_f64() * 1e3);
        }
        stats("exec", "ms", samples[2..].to_vec());
        return;
    }
    let (address, rootfs) = (&args[3], &args[4]);
    let connection = zbus::connection::Builder::address(address.as_str())
        .build()
        .await
        .expect("connect");
    let manager = ManagerProxy::new(&connection).await.expect("manager");
    match mode {
        "lifecycle" => {
            // With a command after `--` (bare `runc run`), the two alternate run by run, so a
            // noisy machine weighs on both alike.
            let mut samples = Vec::new();
            let mut compared = Vec::new();
            // Each call's share: CreateContainer, Start, Wait, Remove.
            let mut phases: [Vec<f64>; 4] = Default::default();
            for run in 0..count + 2 {
                if !command.is_empty() {
                    // `{n}` in the command becomes the run number (unique container names).
                    let args: Vec<String> = command
                        .iter()
                        .map(|a| a.replace("{n}", &run.to_string()))
                        .collect();
                    let started = Instant::now();
                    let status = std::process::Command::new(&args[0])
                        .args(&args[1..])
                        .status()
                        .expect("run");
                    assert!(status.success(), "{command:?} failed");
                    compared.push(started.elapsed().as_secs_f64() * 1e3);
                }
                let started = Instant::now();
                let c = container(&connection, &manager, rootfs, &["/bin/true"]).await;
                let created = Instant::now();
                c.start(false).await.expect("start");
                let running = Instant::now();
                assert_eq!(c.wait().await.expect("wait"), 0);
                let waited = Instant::now();
                c.remove(false).await.expect("remove");
                let ms = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1e3;
                phases[0].push(ms(started, created));
                phases[1].push(ms(created, running));
                phases[2].push(ms(running, waited));
                phases[3].push(ms(waited, Instant::now()));
                samples.push(started.elapsed().as_secs_f64() * 1e3);
            }
            stats("berth_lifecycle", "ms", samples[2..].to_vec());
            for (name, phase) in ["create", "start", "wait", "remove"].iter().zip(phases) {
                stats(&format!("berth_phase_{name}"), "ms", phase[2..].to_vec());
            }
            if !compared.is_empty() {
                stats("runc", "ms", compared[2..].to_vec());
            }
        }
        "network" => {
            // `/bin/true` on the default bridge network with one published port (host port 0:
            // a free one), next to the same on `none`, and the command after `--` (podman on
            // its bridge), all three interleaved run by run.
            let mut bridge = Vec::new();
            let mut none = Vec::new();
            let mut compared = Vec::new();
            for _ in 0..count + 2 {
                if !command.is_empty() {
                    let started = Instant::now();
                    let status = std::process::Command::new(&command[0])
                        .args(&command[1..])
                        .status()
                        .expect("run");
                    assert!(status.success(), "{command:?} failed");
                    compared.push(started.elapsed().as_secs_f64() * 1e3);
                }
                for (network, samples) in [("bridge", &mut bridge), ("none", &mut none)] {
                    let mut spec = spec(rootfs, &["/bin/true"]);
                    spec.insert("Network", Variant::from(network));
                    if network == "bridge" {
                        spec.insert(
                            "PortMappings",
                            Variant::from(vec![(
                                "127.0.0.1".to_string(),
                                0u16,
                                80u16,
                                "tcp".to_string(),
                            )]),
                        );
                    }
                    let started = Instant::now();
                    let path = manager.create_container(spec).await.expect("create");
                    let c = ContainerProxy::builder(&connection)
                        .path(path)
                        .build()
                        .await
                        .expect("proxy");
                    c.start(false).await.expect("start");
                    assert_eq!(c.wait().await.expect("wait"), 0);
                    c.remove(false).await.expect("remove");
                    samples.push(started.elapsed().as_secs_f64() * 1e3);
                }
            }
            stats("berth_bridge", "ms", bridge[2..].to_vec());
            stats("berth_none", "ms", none[2..].to_vec());
            if !compared.is_empty() {
                stats("podman_bridge", "ms", compared[2..].to_vec());
            }
        }
        "roundtrip" => {
            let echo = zbus::connection::Builder::address(address.as_str())
                .serve_at("/echo", Echo)
                .build()
                .await
                .expect("echo connection");
            let echo_name = echo.unique_name().expect("unique name").to_string();
            let client = EchoClientProxy::builder(&connection)
                .destination(echo_name)
                .build()
                .await
                .expect("proxy");
            let c = container(&connection, &manager, rootfs, &["/bin/true"]).await;
            let properties = zbus::fdo::PropertiesProxy::builder(&connection)
                .destination("org.berth.Engine1")
                .path(c.inner().path().to_owned())
                .build()
                .await
                .expect("properties");
            let interface = zbus::names::InterfaceName::from_static_str_unchecked(
                "org.berth.Engine1.Container",
            );
            let (mut get, mut echoed) = (Vec::new(), Vec::new());
            for _ in 0..count {
                let started = Instant::now();
                properties
                    .get(interface.clone(), "State")
                    .await
                    .expect("get");
                get.push(started.elapsed().as_secs_f64() * 1e6);
                let started = Instant::now();
                client.echo("running").await.expect("echo");
                echoed.push(started.elapsed().as_secs_f64() * 1e6);
            }
            stats("get_state", "us", get);
            stats("zbus_echo", "us", echoed);
            c.remove(true).await.expect("remove");
        }
        "exit" => {
            let mut samples = Vec::new();
            for _ in 0..count {
                let c = container(&connection, &manager, rootfs, &["/bin/true"]).await;
                let mut exited = c.receive_exited().await.expect("subscribe");
                c.start(false).await.expect("start");
                exited.next().await.expect("exited");
                let received = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_micros() as f64;
                let finished: u64 = c
                    .inner()
                    .get_property("FinishedAt")
                    .await
                    .expect("FinishedAt");
                samples.push((received - finished as f64) / 1e3);
                c.remove(true).await.expect("remove");
            }
            stats("exit_to_signal", "ms", samples);
        }
        "startup" => {
            let dbus = zbus::fdo::DBusProxy::new(&connection).await.expect("dbus");
            let mut owners = dbus
                .receive_name_owner_changed_with_args(&[(0, "org.berth.Engine1")])
                .await
                .expect("subscribe");
            let started = Instant::now();
            // berthd is left running for the script, which stops it by pid.
            #[allow(clippy::zombie_processes)]
            let child = std::process::Command::new(&command[0])
                .args(&command[1..])
                .spawn()
                .expect("spawn berthd");
            loop {
                let change = owners.next().await.expect("owner change");
                if !change.args().expect("args").new_owner().is_none() {
                    break;
                }
            }
            println!("startup_ms {:.3}", started.elapsed().as_secs_f64() * 1e3);
            println!("startup_pid {}", child.id());
        }
        "populate" => {
            for _ in 0..count {
                manager
                    .create_container(spec(rootfs, &["/bin/true"]))
                    .await
                    .expect("create");
            }
        }
        "monitors" => {
            let mut containers = Vec::new();
            for _ in 0..count {
                let c = container(&connection, &manager, rootfs, &["sleep", "1000"]).await;
                c.start(false).await.expect("start");
                containers.push(c);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut samples = Vec::new();
            for c in &containers {
                let json: serde_json::Value =
                    serde_json::from_str(&c.inspect(false).await.expect("inspect")).expect("json");
                let pid = json["State"]["MonitorPid"].as_u64().unwrap_or(0);
                let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                    .unwrap_or_default();
                let pss: f64 = rollup
                    .lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(f64::NAN);
                samples.push(pss);
            }
            stats("monitor_pss", "kib", samples);
            for c in &containers {
                c.remove(true).await.expect("remove");
            }
        }
        "execrt" => {
            // Exec of /bin/true to its exit code, on one running container.
            let c = container(&connection, &manager, rootfs, &["sleep", "1000"]).await;
            c.start(false).await.expect("start");
            let mut samples = Vec::new();
            for _ in 0..count + 2 {
                let started = Instant::now();
                let path = c.exec(&["/bin/true"], HashMap::new()).await.expect("exec");
                let session = ExecSessionProxy::builder(&connection)
                    .path(path)
                    .build()
                    .await
                    .expect("session");
                assert_eq!(session.wait().await.expect("wait"), 0);
                samples.push(started.elapsed().as_secs_f64() * 1e3);
                session.remove().await.expect("remove");
            }
            stats("berth_exec", "ms", samples[2..].to_vec());
            c.remove(true).await.expect("remove");
        }
        "attach" => {
            // `count` MiB of zeros through an attached stdout, from StartAndAttach to EOF,
            // with the container's log on (k8s-file) and off; then the same bytes through a
            // plain pipe from the same busybox.
            let bytes = (count as u64) << 20;
            let produce = format!("head -c {bytes} /dev/zero");
            let mut figures = Vec::new();
            for (label, log) in [("attach_logged", "k8s-file"), ("attach", "none")] {
                let mut spec = spec(rootfs, &["sh", "-c", &produce]);
                spec.insert("LogDriver", Variant::from(log));
                let path = manager.create_container(spec).await.expect("create");
                let c = ContainerProxy::builder(&connection)
                    .path(path)
                    .build()
                    .await
                    .expect("proxy");
                let started = Instant::now();
                let (_, stdout, _) = c
                    .start_and_attach(false, HashMap::new())
                    .await
                    .expect("start and attach");
                let read = read_to_end(std::os::fd::OwnedFd::from(stdout));
                let elapsed = started.elapsed().as_secs_f64();
                assert_eq!(read, bytes);
                figures.push((label, bytes as f64 / elapsed / 1e6));
                c.wait().await.expect("wait");
                c.remove(true).await.expect("remove");
            }
            let started = Instant::now();
            let mut child = std::process::Command::new("busybox")
                .args(["head", "-c", &bytes.to_string(), "/dev/zero"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("busybox");
            let read = read_to_end(std::os::fd::OwnedFd::from(child.stdout.take().unwrap()));
            let elapsed = started.elapsed().as_secs_f64();
            let _ = child.wait();
            assert_eq!(read, bytes);
            figures.push(("pipe", bytes as f64 / elapsed / 1e6));
            for (label, mbs) in figures {
                println!("{label}_mbs {mbs:.1}");
            }
        }
        "checkpoint" => {
            // A process holding `count` MB of dirty memory: checkpoint (stop) and restore.
            if let Some(reason) = berth::engine::criu_problem() {
                println!("# checkpoint skipped: {reason}");
                return;
            }
            let hold = format!(
                "x=$(head -c {} /dev/zero | tr '\\0' a); echo ready; sleep 1000",
                count * 1_000_000
            );
            let c = container(&connection, &manager, rootfs, &["sh", "-c", &hold]).await;
            let (_, stdout, _) = c
                .start_and_attach(false, HashMap::new())
                .await
                .expect("start");
            let mut ready = [0u8; 6];
            std::io::Read::read_exact(
                &mut std::fs::File::from(std::os::fd::OwnedFd::from(stdout)),
                &mut ready,
            )
            .expect("ready");
            let (mut dumps, mut restores) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                let started = Instant::now();
                c.checkpoint(HashMap::new()).await.expect("checkpoint");
                dumps.push(started.elapsed().as_secs_f64() * 1e3);
                let started = Instant::now();
                c.restore(HashMap::new()).await.expect("restore");
                restores.push(started.elapsed().as_secs_f64() * 1e3);
            }
            stats("berth_checkpoint", "ms", dumps);
            stats("berth_restore", "ms", restores);
            c.remove(true).await.expect("remove");
        }
        other => panic!("unknown mode {other}"),
    }
}
