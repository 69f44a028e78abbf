//! End to end: the API keeps its contract — attach sends input where podman's does, input
//! is checked as declared, what is open to everyone cannot hurt, the event log is bounded
//! and says when it was trimmed, and `Inspect` tells the truth.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use berth::cli::proxy::{ContainerProxy, ManagerProxy};
use common::{error_name, harness, session_proxy, wait_until, Harness};
use zbus::Variant;

const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";

fn read_all(fd: zbus::OwnedFd) -> String {
    let mut text = String::new();
    std::fs::File::from(OwnedFd::from(fd))
        .read_to_string(&mut text)
        .unwrap();
    text
}

async fn wait_for_state(container: &ContainerProxy<'_>, state: &str) {
    for _ in 0..200 {
        if container.state().await.unwrap() == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "container never became {state} (is {})",
        container.state().await.unwrap()
    );
}

/// Calls `method` on `path` with a body of another signature than declared.
async fn call_with(
    connection: &zbus::Connection,
    path: &str,
    interface: &str,
    method: &str,
    body: &(impl serde::Serialize + zbus::Type),
) -> zbus::Error {
    connection
        .call_method(
            Some("org.berth.Engine1"),
            path,
            Some(interface),
            method,
            body,
        )
        .await
        .expect_err("a call with the wrong signature was run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_sends_stdin_by_default_when_the_container_keeps_it_open() {
    let Some(mut h) = harness("attach_sends_stdin_by_default") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let stdin = vec![("Stdin", Variant::from(true))];
    let reader = h
        .create_with(
            &connection,
            "reader",
            &["sh", "-c", "read line; echo got:$line"],
            stdin.clone(),
        )
        .await;
    reader.start(false).await.unwrap();
    // No options: as `podman attach`, what the client writes goes in.
    let (input, output, _err) = reader.attach(HashMap::new()).await.unwrap();
    let mut input = std::fs::File::from(OwnedFd::from(input));
    writeln!(input, "hello").unwrap();
    drop(input);
    assert_eq!(read_all(output), "got:hello\n");
    assert_eq!(reader.wait().await.unwrap(), 0);

    // `Stdin` false opts out: the container does not see the client's input or its end.
    let watched = h
        .create_with(
            &connection,
            "watched",
            &["sh", "-c", "read line; echo got:$line"],
            stdin,
        )
        .await;
    watched.start(false).await.unwrap();
    let (input, _output, _err) = watched
        .attach(HashMap::from([("Stdin", Variant::from(false))]))
        .await
        .unwrap();
    let mut input = std::fs::File::from(OwnedFd::from(input));
    let _ = writeln!(input, "ignored");
    drop(input);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(watched.state().await.unwrap(), "running");
    watched.kill("KILL").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_is_checked_as_declared() {
    let Some(mut h) = harness("input_is_checked_as_declared") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let rootfs = h.rootfs.display().to_string();
    let spec_with = |key: &'static str, value: Variant<'static>| {
        HashMap::from([
            ("Rootfs", Variant::from(rootfs.clone())),
            ("Command", Variant::from(vec!["true".to_string()])),
            (key, value),
        ])
    };
    // A map of variants is not the declared map of strings.
    let labels: HashMap<String, Variant<'static>> =
        HashMap::from([("a".to_string(), Variant::from("b".to_string()))]);
    let error = manager
        .create_container(spec_with("Labels", Variant::from(labels)))
        .await
        .unwrap_err();
    assert_eq!(error_name(&error), INVALID_ARGS);
    assert!(error.to_string().contains("Labels"), "{error}");
    // PidsMax 0 is refused rather than meaning "no limit".
    let error = manager
        .create_container(spec_with("PidsMax", Variant::from(0u64)))
        .await
        .unwrap_err();
    assert_eq!(error_name(&error), INVALID_ARGS);
    assert!(error.to_string().contains("PidsMax"), "{error}");
    assert!(manager.list_containers().await.unwrap().is_empty());

    // A method called with another signature is refused and not run.
    let container = h
        .create(
            &connection,
            "signals",
            &["sh", "-c", "trap 'exit 7' 37; while :; do sleep 0.05; done"],
        )
        .await;
    let path = container.inner().path().to_string();
    let iface = "org.berth.Engine1.Container";
    let error = call_with(&connection, &path, iface, "Start", &(false, "extra")).await;
    assert_eq!(error_name(&error), INVALID_ARGS);
    assert_eq!(container.state().await.unwrap(), "configured");
    container.start(false).await.unwrap();
    for method in ["Pause", "Wait"] {
        let error = call_with(&connection, &path, iface, method, &("extra",)).await;
        assert_eq!(error_name(&error), INVALID_ARGS, "{method}");
    }
    assert_eq!(container.state().await.unwrap(), "running");
    let session = container
        .exec(&["sleep", "30"], HashMap::new())
        .await
        .unwrap();
    let error = call_with(
        &connection,
        session.as_str(),
        "org.berth.Engine1.ExecSession",
        "Wait",
        &("now",),
    )
    .await;
    assert_eq!(error_name(&error), INVALID_ARGS);
    let session = session_proxy(&connection, session).await;
    assert_eq!(session.state().await.unwrap(), "running");
    session.kill("KILL").await.unwrap();
    session.wait().await.unwrap();

    // Real-time signals, by name and by number, as podman accepts them; RTMIN+3 is 37.
    container.kill("34").await.unwrap();
    container.kill("RTMIN+3").await.unwrap();
    assert_eq!(container.wait().await.unwrap(), 7);
    let events = manager.get_events(0, 0).await.unwrap();
    let signals: Vec<&str> = events
        .iter()
        .filter(|e| e.3 == "kill" && !e.4.contains_key("execID"))
        .filter_map(|e| e.4.get("signal").map(String::as_str))
        .collect();
    assert_eq!(signals, ["RTMIN", "RTMIN+3"]);

    // A window of no rows or columns is refused, as the TerminalSize option is.
    let terminal = h
        .create_with(
            &connection,
            "tty",
            &["sleep", "30"],
            vec![("Terminal", Variant::from(true))],
        )
        .await;
    terminal.start(false).await.unwrap();
    for (rows, cols) in [(0, 0), (0, 80), (24, 0)] {
        let error = terminal.resize(rows, cols).await.unwrap_err();
        assert_eq!(error_name(&error), INVALID_ARGS, "{rows}x{cols}");
    }
    terminal.resize(24, 80).await.unwrap();
    terminal.kill("KILL").await.unwrap();
}

/// A busctl call made as uid 65534 (nobody); the socket directory must be reachable.
fn as_nobody(h: &Harness, args: &[&str]) -> std::process::Output {
    std::fs::set_permissions(
        h.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "busctl"])
        .arg(format!("--address={}", h.address))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_everyone_may_call_cannot_hurt() {
    let Some(mut h) = harness("what_everyone_may_call_cannot_hurt") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let container = h
        .create_with(
            &connection,
            "secret",
            &["true"],
            vec![(
                "Env",
                Variant::from(vec!["DB_PASSWORD=hunter2".to_string()]),
            )],
        )
        .await;
    let path = container.inner().path().to_string();

    // Root (allowed .exec) sees the environment; another user sees the rest without it.
    let inspect: serde_json::Value =
        serde_json::from_str(&container.inspect(false).await.unwrap()).unwrap();
    let env = inspect["Config"]["Env"].as_array().unwrap();
    assert!(env.iter().any(|e| e == "DB_PASSWORD=hunter2"), "{env:?}");
    let output = as_nobody(
        &h,
        &[
            "--json=short",
            "call",
            "org.berth.Engine1",
            &path,
            "org.berth.Engine1.Container",
            "Inspect",
            "b",
            "false",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let text = reply["data"][0].as_str().unwrap();
    assert!(!text.contains("hunter2"), "the environment leaked: {text}");
    let inspect: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(inspect["Name"], "secret");
    assert!(inspect["Config"].get("Env").is_none());

    // Wait records nothing, however often anyone calls it.
    container.start(false).await.unwrap();
    assert_eq!(container.wait().await.unwrap(), 0);
    wait_for_state(&container, "exited").await;
    let before = manager.get_events(0, 0).await.unwrap().len();
    for _ in 0..50 {
        let wait = as_nobody(
            &h,
            &[
                "call",
                "org.berth.Engine1",
                &path,
                "org.berth.Engine1.Container",
                "Wait",
            ],
        );
        assert_eq!(String::from_utf8_lossy(&wait.stdout).trim(), "i 0");
    }
    assert_eq!(manager.get_events(0, 0).await.unwrap().len(), before);

    // after_seq at or beyond 2^63 does not wrap around into a replay of the whole log.
    for after in [1u64 << 63, u64::MAX] {
        assert!(manager.get_events(after, 0).await.unwrap().is_empty());
    }

    // Export into a descriptor open for reading only is an error, not a silent success.
    let file = h.dir.path().join("export.tar");
    std::fs::write(&file, b"").unwrap();
    let read_only = std::fs::File::open(&file).unwrap();
    let error = container
        .export(zbus::Fd::from(read_only.as_fd()))
        .await
        .unwrap_err();
    assert_eq!(error_name(&error), INVALID_ARGS, "{error}");
    let writable = std::fs::File::options().write(true).open(&file).unwrap();
    container
        .export(zbus::Fd::from(writable.as_fd()))
        .await
        .unwrap();
    assert!(std::fs::metadata(&file).unwrap().len() > 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_is_bounded_and_says_what_was_trimmed() {
    let Some(mut h) = harness("the_event_log_is_bounded") else {
        return;
    };
    h.start_berthd(&["--max-events=20"]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    // A container that stays: its events are never trimmed.
    let kept = h.create(&connection, "kept", &["true"]).await;
    let kept_id = kept.id().await.unwrap();
    for n in 0..15 {
        let container = h.create(&connection, &format!("gone{n}"), &["true"]).await;
        container.remove(false).await.unwrap();
    }
    // 1 + 30 events were written; the oldest of removed containers went.
    let error = manager.get_events(0, 0).await.unwrap_err();
    assert_eq!(
        error_name(&error),
        "org.berth.Engine1.Error.EventsTrimmed",
        "{error}"
    );
    let message = error.to_string();
    let through: u64 = message
        .split("events through seq ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {message}"));
    assert!(through > 1, "{message}");
    let rest = manager.get_events(through, 0).await.unwrap();
    assert!(
        !rest.is_empty() && rest.len() <= 20,
        "{} events",
        rest.len()
    );
    assert!(rest.iter().all(|e| e.0 > through));
    assert_eq!(rest.last().unwrap().3, "remove");
    // After a restart the bound and the trim point hold.
    h.kill_berthd();
    h.start_berthd(&["--max-events=20"]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    assert_eq!(
        error_name(&manager.get_events(0, 0).await.unwrap_err()),
        "org.berth.Engine1.Error.EventsTrimmed"
    );
    assert_eq!(manager.get_events(through, 0).await.unwrap(), rest);
    // The container that stays is still there with its log: berthctl events replays what
    // is kept, saying what was trimmed.
    let replay = h.berthctl(&["events", "--since", "0", "--no-follow"]);
    assert!(replay.status.success());
    assert!(String::from_utf8_lossy(&replay.stderr).contains("trimmed"));
    assert!(manager.get_container(&kept_id).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_tells_the_truth_about_storage_and_state() {
    let Some(mut h) = harness("inspect_tells_the_truth") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let tar = h.rootfs_tar();
    let fd: OwnedFd = std::fs::File::open(&tar).unwrap().into();
    manager
        .import_image(
            zbus::Fd::from(fd),
            HashMap::from([("Reference", Variant::from("localhost/bb:1"))]),
        )
        .await
        .unwrap();
    let spec = HashMap::from([
        ("Image", Variant::from("localhost/bb:1")),
        ("Name", Variant::from("truth")),
        (
            "Command",
            Variant::from(vec![
                "sh".to_string(),
                "-c".to_string(),
                "head -c 300000 /dev/zero > /big; sleep 30".to_string(),
            ]),
        ),
    ]);
    let path = manager.create_container(spec).await.unwrap();
    let container = common::proxy_at(&connection, path).await;
    container.start(false).await.unwrap();
    wait_until(Duration::from_secs(5), || {
        std::fs::read_dir(h.root().join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|dir| {
                std::fs::metadata(dir.path().join("upper/big")).is_ok_and(|m| m.len() == 300_000)
            })
    });
    let inspect: serde_json::Value =
        serde_json::from_str(&container.inspect(true).await.unwrap()).unwrap();
    let driver = inspect["GraphDriver"]["Name"].as_str().unwrap();
    assert_eq!(inspect["Driver"], driver);
    let merged = h.root().join("containers");
    let copied = std::fs::read_dir(&merged)
        .unwrap()
        .flatten()
        .any(|dir| dir.path().join(".merged.copied").exists());
    assert_eq!(
        driver,
        if copied { "vfs" } else { "overlay" },
        "{inspect:#}"
    );
    // The image's layer, from the layer store, is the lower directory.
    let lower = inspect["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap();
    assert!(
        lower.starts_with(&h.root().join("layers").display().to_string()),
        "{lower}"
    );
    // SizeRootFs counts the layers (busybox alone is ~1 MB) and the changes.
    let size_rw = inspect["SizeRw"].as_u64().unwrap();
    let size_rootfs = inspect["SizeRootFs"].as_u64().unwrap();
    assert!(size_rw >= 300_000, "SizeRw {size_rw}");
    assert!(size_rootfs >= size_rw + 500_000, "SizeRootFs {size_rootfs}");
    assert_eq!(inspect["State"]["Restarting"], false);
    assert_eq!(inspect["State"]["Dead"], false);
    assert_eq!(inspect["State"]["Running"], true);
    container.kill("KILL").await.unwrap();
}

/// (method, signature of its arguments) of every method in the shipped introspection XML
/// of `interface` (equal to the live one: tests/interface.rs holds it so).
fn declared_methods(interface: &str) -> Vec<(String, String)> {
    let file = common::repo().join(format!("dbus/{interface}.xml"));
    let xml = std::fs::read_to_string(&file).unwrap();
    let attribute = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[start..start + line[start..].find('"')?].to_string())
    };
    let mut methods: Vec<(String, String)> = Vec::new();
    for line in xml.lines().map(str::trim) {
        if line.starts_with("<method ") {
            methods.push((attribute(line, "name").unwrap(), String::new()));
        } else if line.starts_with("<arg ") && line.contains("direction=\"in\"") {
            let (_, signature) = methods.last_mut().expect("an argument outside a method");
            signature.push_str(&attribute(line, "type").unwrap());
        }
    }
    assert!(!methods.is_empty(), "no method in {}", file.display());
    methods
}

/// Some value of the D-Bus type `signature` (empty arrays, zeros, "x", the fd for `h`).
fn some_value<'a>(signature: &zbus::Signature, fd: std::os::fd::BorrowedFd<'a>) -> Variant<'a> {
    use zbus::Signature as S;
    match signature {
        S::U8 => Variant::U8(0),
        S::Bool => Variant::Bool(false),
        S::I16 => Variant::I16(0),
        S::U16 => Variant::U16(0),
        S::I32 => Variant::I32(0),
        S::U32 => Variant::U32(0),
        S::I64 => Variant::I64(0),
        S::U64 => Variant::U64(0),
        S::F64 => Variant::F64(0.0),
        S::Str => Variant::from("x"),
        S::ObjectPath => Variant::ObjectPath(zbus::ObjectPath::from_static_str_unchecked("/")),
        S::Signature => Variant::Signature(S::Str),
        S::Variant => Variant::Variant(Box::new(Variant::from("x"))),
        S::Fd => Variant::Fd(zbus::Fd::from(fd)),
        S::Array(element) => Variant::Array(zbus::Array::new(element)),
        S::Dict { key, value } => Variant::Dict(zbus::Dict::new(key, value)),
        S::Structure(fields) => Variant::Structure(
            fields
                .iter()
                .fold(zbus::wire::StructureBuilder::new(), |builder, field| {
                    builder.append_field(some_value(field, fd))
                })
                .build()
                .unwrap(),
        ),
        other => panic!("no value for {other}"),
    }
}

/// A body of `signature` (one or more complete types), from [`some_value`].
fn arguments<'a>(signature: &str, fd: std::os::fd::BorrowedFd<'a>) -> zbus::Structure<'a> {
    let signature = zbus::Signature::try_from(format!("({signature})").as_str()).unwrap();
    let zbus::Signature::Structure(fields) = &signature else {
        unreachable!("a structure signature")
    };
    fields
        .iter()
        .fold(zbus::wire::StructureBuilder::new(), |builder, field| {
            builder.append_field(some_value(field, fd))
        })
        .build()
        .unwrap()
}

/// What `GetEvents` returns of one event.
type EventRow = (u64, u64, String, String, HashMap<String, String>);

/// Every object, interface and property berthd serves, and how many events it logged.
async fn everything(connection: &zbus::Connection) -> (zbus::fdo::ManagedObjects, usize) {
    let objects = zbus::fdo::ObjectManagerProxy::builder(connection)
        .destination("org.berth.Engine1")
        .path("/org/berth/Engine1")
        .build()
        .await
        .unwrap()
        .get_managed_objects()
        .await
        .unwrap();
    let manager = ManagerProxy::new(connection).await.unwrap();
    (objects, manager.get_events(0, 0).await.unwrap().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_called_with_an_extra_argument_is_refused_and_not_run() {
    let Some(mut h) = harness("every_method_refuses_an_extra_argument") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    // One object of each interface: a running container with a running exec session, an
    // image, a volume, the default network and a job.
    let container = h.create(&connection, "target", &["sleep", "60"]).await;
    container.start(false).await.unwrap();
    let session = container
        .exec(&["sleep", "60"], HashMap::new())
        .await
        .unwrap();
    let tar: OwnedFd = std::fs::File::open(h.rootfs_tar()).unwrap().into();
    let image = manager
        .import_image(zbus::Fd::from(tar), HashMap::new())
        .await
        .unwrap();
    let volume = manager.create_volume("data", HashMap::new()).await.unwrap();
    // A pull from a local port nothing listens on: the job fails at once and stays 60 s.
    let job = manager
        .pull_image("127.0.0.1:1/nothing:1", HashMap::new())
        .await
        .unwrap();
    let job_proxy = berth::cli::proxy::JobProxy::builder(&connection)
        .path(job.clone())
        .build()
        .await
        .unwrap();
    assert!(job_proxy.wait().await.is_err());
    let objects = [
        (
            "org.berth.Engine1.Manager",
            "/org/berth/Engine1".to_string(),
        ),
        (
            "org.berth.Engine1.Container",
            container.inner().path().to_string(),
        ),
        ("org.berth.Engine1.ExecSession", session.to_string()),
        ("org.berth.Engine1.Image", image.to_string()),
        ("org.berth.Engine1.Volume", volume.to_string()),
        (
            "org.berth.Engine1.Network",
            "/org/berth/Engine1/network/berth".to_string(),
        ),
        ("org.berth.Engine1.Job", job.to_string()),
    ];

    // Every interface berth ships is among them.
    let mut shipped: Vec<String> = std::fs::read_dir(common::repo().join("dbus"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let interface = name.strip_suffix(".xml")?;
            interface
                .starts_with("org.berth.")
                .then(|| interface.to_string())
        })
        .collect();
    shipped.sort();
    let mut covered: Vec<String> = objects.iter().map(|(i, _)| i.to_string()).collect();
    covered.sort();
    assert_eq!(covered, shipped);

    // The bodies built here are what the methods declare: without the extra argument, a
    // call that changes nothing is answered.
    let null = std::fs::File::open("/dev/null").unwrap();
    let reply = connection
        .call_method(
            Some("org.berth.Engine1"),
            "/org/berth/Engine1",
            Some("org.berth.Engine1.Manager"),
            "GetEvents",
            &arguments("tu", null.as_fd()),
        )
        .await
        .unwrap();
    let events: Vec<EventRow> = reply.body().deserialize().unwrap();
    assert_eq!(events, manager.get_events(0, 0).await.unwrap());

    let before = everything(&connection).await;
    for (interface, path) in &objects {
        for (method, declared) in declared_methods(interface) {
            let body = arguments(&format!("{declared}s"), null.as_fd());
            let call = connection.call_method(
                Some("org.berth.Engine1"),
                path.as_str(),
                Some(*interface),
                method.as_str(),
                &body,
            );
            let reply = tokio::time::timeout(Duration::from_secs(5), call)
                .await
                .unwrap_or_else(|_| panic!("{interface}.{method}({declared}s) ran"));
            let error = reply.expect_err(&format!("{interface}.{method}({declared}s) ran"));
            assert_eq!(
                error_name(&error),
                INVALID_ARGS,
                "{interface}.{method}({declared}s): {error}"
            );
        }
    }
    let after = everything(&connection).await;
    assert!(
        before.0 == after.0,
        "an object changed: {before:?}\n{after:?}"
    );
    assert_eq!(before.1, after.1, "events were logged");
    assert_eq!(container.state().await.unwrap(), "running");
    container.kill("KILL").await.unwrap();
}
