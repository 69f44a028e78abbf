//! End to end: the shipped introspection XML, bus activation, idle exit, berthctl.

mod common;

use std::time::Duration;

use common::harness;

/// `dbus/<interface>.xml` equals the live introspection; `BERTH_UPDATE_XML=1` rewrites it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_introspection_xml_equals_the_live_interfaces() {
    let Some(mut h) = harness("shipped_introspection_xml") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = h.create(&connection, "xml", &["sleep", "600"]).await;
    let container_path = container.inner().path().to_string();
    container.start(false).await.unwrap();
    let session_path = container
        .exec(&["true"], Default::default())
        .await
        .unwrap()
        .to_string();
    // An image object, from a rootfs tar of the test's busybox tree.
    let tar = h.rootfs_tar();
    let manager = berth::cli::proxy::ManagerProxy::new(&connection)
        .await
        .unwrap();
    let fd: std::os::fd::OwnedFd = std::fs::File::open(&tar).unwrap().into();
    let image_path = manager
        .import_image(zbus::Fd::from(fd), Default::default())
        .await
        .unwrap()
        .to_string();
    for (interface, path) in [
        ("org.berth.Engine1.Manager", "/org/berth/Engine1"),
        ("org.berth.Engine1.Container", container_path.as_str()),
        ("org.berth.Engine1.Image", image_path.as_str()),
        ("org.berth.Engine1.ExecSession", session_path.as_str()),
        (
            "org.berth.Engine1.Network",
            "/org/berth/Engine1/network/berth",
        ),
    ] {
        common::assert_shipped_introspection(&h, path, interface);
    }
}

/// The shipped activation file, its `Exec=` pointed at the build, starts berthd on the first
/// call; with `--idle-timeout` berthd exits when idle, the container keeps running, and the
/// next call activates berthd again, which adopts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_activation_starts_berthd_and_idle_exit_leaves_containers_running() {
    let Some(h) = harness("bus_activation") else {
        return;
    };
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.berth.Engine1.service"),
    )
    .unwrap();
    let exec = format!(
        "Exec={} {} --idle-timeout=2",
        common::BERTHD,
        h.berthd_args().join(" ")
    );
    let service: String = shipped
        .lines()
        .map(|line| {
            if line.starts_with("Exec=") {
                exec.clone()
            } else {
                line.to_string()
            }
        })
        .filter(|line| !line.starts_with("User="))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        h.dir.path().join("services/org.berth.Engine1.service"),
        service + "\n",
    )
    .unwrap();
    assert!(!common::name_has_owner(&h.address));

    // The first call activates berthd.
    let listed = h.call(
        "/org/berth/Engine1",
        "org.berth.Engine1.Manager",
        "ListContainers",
        &[],
    );
    assert_eq!(listed, "a(ssso) 0");
    assert!(common::name_has_owner(&h.address));

    let rootfs = h.rootfs.display().to_string();
    let created = h.call(
        "/org/berth/Engine1",
        "org.berth.Engine1.Manager",
        "CreateContainer",
        &[
            "a{sv}", "2", "Rootfs", "s", &rootfs, "Command", "as", "2", "sleep", "100",
        ],
    );
    let path = created.split('"').nth(1).unwrap().to_string();
    h.call(
        &path,
        "org.berth.Engine1.Container",
        "Start",
        &["b", "false"],
    );
    let pid = h.call(
        &path,
        "org.freedesktop.DBus.Properties",
        "Get",
        &["ss", "org.berth.Engine1.Container", "Pid"],
    );

    // Idle: berthd exits by itself, the container does not.
    common::wait_until(Duration::from_secs(15), || {
        !common::name_has_owner(&h.address)
    });
    let pid_number: u32 = pid.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        std::path::Path::new(&format!("/proc/{pid_number}")).exists(),
        "the container died with berthd"
    );

    // The next call activates it again and it has adopted the container.
    let state = h.call(
        &path,
        "org.freedesktop.DBus.Properties",
        "Get",
        &["ss", "org.berth.Engine1.Container", "State"],
    );
    assert_eq!(state, "v s \"running\"");
    let again = h.call(
        &path,
        "org.freedesktop.DBus.Properties",
        "Get",
        &["ss", "org.berth.Engine1.Container", "Pid"],
    );
    assert_eq!(again, pid);
    h.call(
        "/org/berth/Engine1",
        "org.berth.Engine1.Manager",
        "RemoveContainer",
        &["sb", &path.rsplit('/').next().unwrap()[..12], "true"],
    );
    assert!(h.mounts().is_empty());
    // berthd was started by the bus, not by the harness: let it idle out before cleanup.
    common::wait_until(Duration::from_secs(15), || {
        !common::name_has_owner(&h.address)
    });
}

/// `berthctl run` prints the container's output and exits with its status; `wait` mirrors
/// it too; `inspect` is JSON; `events --since` replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berthctl_runs_waits_inspects_and_replays_events() {
    let Some(mut h) = harness("berthctl") else {
        return;
    };
    h.start_berthd(&[]);
    let rootfs = h.rootfs.display().to_string();
    let run = h.berthctl(&[
        "run",
        "--rm",
        "--name",
        "once",
        "--rootfs",
        &rootfs,
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; exit 4",
    ]);
    assert_eq!(run.status.code(), Some(4));
    // Attached before the start, as `podman run` is: each stream to its own.
    assert_eq!(String::from_utf8_lossy(&run.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&run.stderr), "err\n");
    let listing = h.berthctl(&["ps", "-q"]);
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout).trim(),
        "",
        "--rm left the container"
    );

    let detached = h.berthctl(&[
        "run",
        "-d",
        "--name",
        "bg",
        "--rootfs",
        &rootfs,
        "/bin/sh",
        "-c",
        "sleep 0.3; exit 9",
    ]);
    assert!(detached.status.success());
    let wait = h.berthctl(&["wait", "bg"]);
    assert_eq!(wait.status.code(), Some(9));
    assert_eq!(String::from_utf8_lossy(&wait.stdout).trim(), "9");
    let inspect = h.berthctl(&["inspect", "bg"]);
    let json: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(json["State"]["ExitCode"], 9);
    assert_eq!(json["Name"], "bg");
    // Wait answers once the exit is cleaned up: the container is `exited` already.
    let table = String::from_utf8(h.berthctl(&["ps"]).stdout).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.contains("bg") && l.contains("exited")),
        "{table}"
    );
    let events = String::from_utf8(
        h.berthctl(&["events", "--since", "0", "--no-follow"])
            .stdout,
    )
    .unwrap();
    let kinds: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("name=bg"))
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    assert_eq!(&kinds[..4], ["create", "init", "start", "died"], "{events}");
    let missing = h.berthctl(&["stop", "ghost"]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NoSuchContainer"));
}
