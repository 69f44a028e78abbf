//! End to end: real runc, real dbus-daemon with the shipped policy, real berthd.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth::cli::proxy::ManagerProxy;
use common::{error_name, harness};
use futures_util::StreamExt;
use zbus::{MatchRule, MessageStream, Variant};

/// busctl drives a container that prints `hello` and exits 3; the state
/// walks configured → created → running → stopped → exited with a PropertiesChanged for
/// each, Exited(3) arrives, and the log holds `hello`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busctl_runs_a_container_to_its_exit_code_with_every_signal() {
    let Some(mut h) = harness("busctl_runs_a_container") else {
        return;
    };
    h.start_berthd(&[]);
    let rootfs = h.rootfs.display().to_string();
    let created = h.call(
        "/org/berth/Engine1",
        "org.berth.Engine1.Manager",
        "CreateContainer",
        &[
            "a{sv}",
            "3",
            "Rootfs",
            "s",
            &rootfs,
            "Name",
            "s",
            "hello",
            "Command",
            "as",
            "3",
            "/bin/sh",
            "-c",
            "echo hello; exit 3",
        ],
    );
    let path = created.split('"').nth(1).unwrap().to_string();
    let interface = "org.berth.Engine1.Container";
    let state = |h: &common::Harness| {
        h.busctl(&[
            "get-property",
            "org.berth.Engine1",
            &path,
            interface,
            "State",
        ])
    };
    assert_eq!(
        String::from_utf8_lossy(&state(&h).stdout).trim(),
        "s \"configured\""
    );

    // Watch the object's signals as `busctl monitor` would.
    let connection = h.connection().await;
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .path(path.as_str())
        .build()
        .unwrap();
    let mut signals = MessageStream::for_match_rule(rule, &connection, None)
        .await
        .unwrap();

    h.call(&path, interface, "Start", &["b", "false"]);
    assert_eq!(h.call(&path, interface, "Wait", &[]), "i 3");

    let mut states = Vec::new();
    let mut exited = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while states.last().map(String::as_str) != Some("exited") || exited.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, signals.next())
            .await
            .expect("signals stopped")
            .unwrap()
            .unwrap();
        let header = message.header();
        match header.member().map(|m| m.as_str()) {
            Some("PropertiesChanged") => {
                let (_, changed, _): (String, HashMap<String, zbus::OwnedVariant>, Vec<String>) =
                    message.body().deserialize().unwrap();
                if let Some(value) = changed.get("State") {
                    states.push(String::try_from(value.try_clone().unwrap()).unwrap());
                }
            }
            Some("Exited") => exited = Some(message.body().deserialize::<i32>().unwrap()),
            _ => {}
        }
    }
    assert_eq!(states, ["created", "running", "stopped", "exited"]);
    assert_eq!(exited, Some(3));
    let code = h.busctl(&[
        "get-property",
        "org.berth.Engine1",
        &path,
        interface,
        "ExitCode",
    ]);
    assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "i 3");
    let id = path.rsplit('/').next().unwrap();
    let log =
        std::fs::read_to_string(h.root().join("containers").join(id).join("ctr.log")).unwrap();
    assert!(log.lines().any(|l| l.ends_with(" stdout F hello")), "{log}");
}

/// Stop, Kill, Pause and Restart act on real processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kill_pause_and_restart_act_on_real_processes() {
    let Some(mut h) = harness("stop_kill_pause_and_restart") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;

    // A process that ignores SIGTERM: Stop 1 ends it by SIGKILL after about a second.
    let stubborn = h
        .create(
            &connection,
            "stubborn",
            &["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"],
        )
        .await;
    stubborn.start(false).await.unwrap();
    let started = Instant::now();
    stubborn.stop(1).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "stop took {took:?}"
    );
    assert_eq!(stubborn.exit_code().await.unwrap(), 137);

    // TERM reaches sleep through the init (PID 1 ignores signals it has no handler for).
    let sleeper = h
        .create_with(
            &connection,
            "sleeper",
            &["sleep", "100"],
            vec![("Init", Variant::from(true))],
        )
        .await;
    sleeper.start(false).await.unwrap();
    sleeper.kill("TERM").await.unwrap();
    assert_eq!(sleeper.wait().await.unwrap(), 143);

    // Pause freezes it in the freezer cgroup; Unpause thaws it.
    let paused = h.create(&connection, "paused", &["sleep", "100"]).await;
    paused.start(false).await.unwrap();
    let id = paused.id().await.unwrap();
    paused.pause().await.unwrap();
    let freezer =
        std::path::PathBuf::from(format!("/sys/fs/cgroup/freezer/berth/{id}/freezer.state"));
    let v2 = std::path::PathBuf::from(format!("/sys/fs/cgroup/berth/{id}/cgroup.freeze"));
    let frozen = || {
        std::fs::read_to_string(&freezer)
            .map(|s| s.trim() == "FROZEN")
            .or_else(|_| std::fs::read_to_string(&v2).map(|s| s.trim() == "1"))
            .unwrap()
    };
    assert!(frozen(), "the freezer does not say FROZEN");
    assert_eq!(paused.state().await.unwrap(), "paused");
    paused.unpause().await.unwrap();
    assert!(!frozen());
    assert_eq!(paused.state().await.unwrap(), "running");

    // Restart gives a new pid.
    let before = paused.pid().await.unwrap();
    paused.restart(1).await.unwrap();
    let after = paused.pid().await.unwrap();
    assert_eq!(paused.state().await.unwrap(), "running");
    assert!(after != 0 && after != before, "{before} → {after}");
    paused.stop(0).await.unwrap();
}

/// Each wrong call answers its documented error (dbus/*.xml) and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_calls_answer_their_design_errors_and_change_nothing() {
    let Some(mut h) = harness("wrong_calls") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let container = h.create(&connection, "only", &["sleep", "100"]).await;

    let snapshot = |h: &common::Harness| {
        let mut files: Vec<String> = walk(&h.root());
        files.retain(|f| !f.contains("berth.db"));
        files
    };
    let before_files = snapshot(&h);
    let before_events = manager.get_events(0, 0).await.unwrap().len();

    let spec = |extra: Vec<(&'static str, Variant<'static>)>| {
        let mut spec: HashMap<&str, Variant<'_>> = HashMap::new();
        spec.insert("Rootfs", Variant::from(h.rootfs.display().to_string()));
        spec.insert("Command", Variant::from(vec!["true".to_string()]));
        spec.extend(extra);
        spec
    };
    let cases: Vec<(zbus::Error, &str)> = vec![
        (
            container.pause().await.unwrap_err(),
            "org.berth.Engine1.Error.InvalidState",
        ),
        (
            container.stop(1).await.unwrap_err(),
            "org.berth.Engine1.Error.InvalidState",
        ),
        (
            container.kill("TERM").await.unwrap_err(),
            "org.berth.Engine1.Error.InvalidState",
        ),
        (
            manager.get_container("no-such").await.unwrap_err(),
            "org.berth.Engine1.Error.NoSuchContainer",
        ),
        (
            manager
                .remove_container("no-such", false)
                .await
                .unwrap_err(),
            "org.berth.Engine1.Error.NoSuchContainer",
        ),
        (
            manager
                .create_container(spec(vec![("Name", Variant::from("only"))]))
                .await
                .unwrap_err(),
            "org.berth.Engine1.Error.NameInUse",
        ),
        (
            manager
                .create_container(spec(vec![("Bogus", Variant::from(true))]))
                .await
                .unwrap_err(),
            "org.freedesktop.DBus.Error.InvalidArgs",
        ),
        (
            manager
                .create_container(spec(vec![("StopSignal", Variant::from("SIGNOPE"))]))
                .await
                .unwrap_err(),
            "org.freedesktop.DBus.Error.InvalidArgs",
        ),
        (
            container.add_artifact("a/b", b"x").await.unwrap_err(),
            "org.freedesktop.DBus.Error.InvalidArgs",
        ),
        (
            container.add_artifact("..", b"x").await.unwrap_err(),
            "org.freedesktop.DBus.Error.InvalidArgs",
        ),
    ];
    for (error, expected) in &cases {
        assert_eq!(&error_name(error), expected, "{error:?}");
    }
    assert_eq!(snapshot(&h), before_files, "a refused call changed files");
    assert_eq!(
        manager.get_events(0, 0).await.unwrap().len(),
        before_events,
        "a refused call wrote events"
    );
    assert_eq!(container.state().await.unwrap(), "configured");
    // A bad signal name on a running container.
    container.start(false).await.unwrap();
    let after_start_events = manager.get_events(0, 0).await.unwrap().len();
    let error = container.kill("SIGNOPE").await.unwrap_err();
    assert_eq!(error_name(&error), "org.freedesktop.DBus.Error.InvalidArgs");
    assert_eq!(
        manager.get_events(0, 0).await.unwrap().len(),
        after_start_events
    );
    container.stop(0).await.unwrap();
    container.remove(false).await.unwrap();

    let error = container.start(false).await.unwrap_err();
    assert!(
        error_name(&error).ends_with("UnknownObject") || error_name(&error).ends_with("Removed"),
        "{error:?}"
    );
    assert_eq!(manager.list_containers().await.unwrap().len(), 0);
}

/// Every file under `dir`, relative, sorted.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&path) {
            for entry in entries.flatten() {
                let path = entry.path();
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(path);
                }
            }
        }
    }
    out.sort();
    out
}

/// The rootfs directory is only the lower layer: writes land in the container's upper
/// directory; `Mount` shows the merged tree on the host and is reference counted; `Remove`
/// leaves no mount, runtime state or cgroup behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rootfs_is_never_written_and_removal_leaves_nothing() {
    let Some(mut h) = harness("the_rootfs_is_never_written") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let before = walk(&h.rootfs);
    let container = h
        .create(
            &connection,
            "writer",
            &["/bin/sh", "-c", "echo data > /written; rm /bin/ls"],
        )
        .await;
    container.start(false).await.unwrap();
    assert_eq!(container.wait().await.unwrap(), 0);
    assert_eq!(
        walk(&h.rootfs),
        before,
        "the container wrote into its Rootfs directory"
    );
    let id = container.id().await.unwrap();

    let mountpoint = container.mount().await.unwrap();
    let merged = std::path::Path::new(&mountpoint);
    assert_eq!(
        std::fs::read_to_string(merged.join("written")).unwrap(),
        "data\n"
    );
    assert!(merged.join("bin/busybox").exists() && !merged.join("bin/ls").exists());
    assert!(container
        .inner()
        .get_property::<bool>("Mounted")
        .await
        .unwrap());
    container.unmount(false).await.unwrap();
    assert!(!container
        .inner()
        .get_property::<bool>("Mounted")
        .await
        .unwrap());
    assert!(h.mounts().is_empty());

    container.remove(false).await.unwrap();
    assert!(!h.root().join("containers").join(&id).exists());
    for controller in ["memory", "pids", "freezer", "cpu", "devices"] {
        let cgroup = std::path::PathBuf::from(format!("/sys/fs/cgroup/{controller}/berth/{id}"));
        assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    }
}

/// The maintenance verbs on a real container: artifacts, Batch, Sync, Refresh, Cleanup, Logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_batch_sync_refresh_cleanup_and_logs_work_on_real_containers() {
    let Some(mut h) = harness("maintenance_verbs") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = h
        .create_with(
            &connection,
            "kept",
            &["/bin/sh", "-c", "echo one; echo two; echo three; sleep 100"],
            vec![("StopTimeout", Variant::from(1u32))],
        )
        .await;

    container
        .add_artifact("notes.txt", b"hello artifact")
        .await
        .unwrap();
    assert_eq!(
        container.get_artifact("notes.txt").await.unwrap(),
        b"hello artifact"
    );
    assert_eq!(container.list_artifacts().await.unwrap(), ["notes.txt"]);
    container.remove_artifact("notes.txt").await.unwrap();
    assert!(container.list_artifacts().await.unwrap().is_empty());
    let too_big = vec![0u8; (1 << 20) + 1];
    let error = container.add_artifact("big", &too_big).await.unwrap_err();
    assert_eq!(
        error_name(&error),
        "org.freedesktop.DBus.Error.LimitsExceeded"
    );

    // Init, Start and Pause under one lock; the failing op is reported with its index.
    let none = HashMap::new;
    let error = container
        .batch(vec![
            ("Init", none()),
            ("Start", none()),
            ("Pause", none()),
            ("Pause", none()),
        ])
        .await
        .unwrap_err();
    assert_eq!(error_name(&error), "org.berth.Engine1.Error.InvalidState");
    assert!(format!("{error:?}").contains("operation 3"), "{error:?}");
    assert_eq!(container.state().await.unwrap(), "paused");
    container
        .batch(vec![("Unpause", none()), ("Sync", none())])
        .await
        .unwrap();
    assert_eq!(container.state().await.unwrap(), "running");

    // Logs with Tail 2 gives the last two lines.
    let log_file = h
        .root()
        .join("containers")
        .join(container.id().await.unwrap())
        .join("ctr.log");
    common::wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log_file).is_ok_and(|l| l.contains("three"))
    });
    let fd = container
        .logs(HashMap::from([("Tail", Variant::from(2u32))]))
        .await
        .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::fs::File::from(std::os::fd::OwnedFd::from(fd)),
        &mut text,
    )
    .unwrap();
    assert_eq!(text, "two\nthree\n");

    // Refresh brings it back to running with a new process.
    let before = container.pid().await.unwrap();
    container.refresh().await.unwrap();
    assert_eq!(container.state().await.unwrap(), "running");
    assert_ne!(container.pid().await.unwrap(), before);

    // Cleanup refuses a running container, then cleans up a stopped one.
    let error = container.cleanup().await.unwrap_err();
    assert_eq!(error_name(&error), "org.berth.Engine1.Error.InvalidState");
    container.stop(0).await.unwrap();
    container.cleanup().await.unwrap();
    assert_eq!(container.state().await.unwrap(), "exited");
    let error = container.stop(1).await.unwrap_err();
    assert_eq!(
        error_name(&error),
        "org.berth.Engine1.Error.ContainerStopped"
    );
}

/// The container starts with default signal dispositions (nothing the monitor does leaks
/// into it), and the monitor shrugs off SIGTERM/SIGHUP/SIGINT meant for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_get_default_signals_and_monitors_survive_stray_signals() {
    let Some(mut h) = harness("default_signals") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = h
        .create(
            &connection,
            "signals",
            &[
                "/bin/sh",
                "-c",
                "grep -E '^Sig(Ign|Blk)' /proc/self/status; sleep 100",
            ],
        )
        .await;
    container.start(false).await.unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&container.inspect(false).await.unwrap()).unwrap();
    let monitor = json["State"]["MonitorPid"].as_u64().unwrap() as i32;
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGINT,
    ] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor), signal).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        std::path::Path::new(&format!("/proc/{monitor}")).exists(),
        "the monitor died of a stray signal"
    );
    container.stop(0).await.unwrap();
    assert_eq!(
        container.exit_code().await.unwrap(),
        137,
        "the exit was still recorded by the monitor"
    );
    let fd = container.logs(HashMap::new()).await.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::fs::File::from(std::os::fd::OwnedFd::from(fd)),
        &mut text,
    )
    .unwrap();
    let mask = |name: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{text}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    // HUP, INT and TERM (bits 0, 1, 14) must reach the container's process as usual.
    let terminating = (1 << 0) | (1 << 1) | (1 << 14);
    assert_eq!(mask("SigIgn:") & terminating, 0, "{text}");
    assert_eq!(mask("SigBlk:"), 0, "{text}");
}

/// `Logs` with `Follow` streams lines as they are written and ends when the container exits;
/// a reader that goes away releases berthd, which can then idle out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_logs_stream_until_exit_and_a_closed_reader_lets_berthd_idle() {
    let Some(mut h) = harness("followed_logs") else {
        return;
    };
    h.start_berthd(&["--idle-timeout=2"]);
    let connection = h.connection().await;
    let talker = h
        .create(
            &connection,
            "talker",
            &[
                "/bin/sh",
                "-c",
                "for i in 1 2 3; do echo line $i; sleep 0.3; done",
            ],
        )
        .await;
    // Follow from before the first line exists.
    talker.init().await.unwrap();
    let fd = talker
        .logs(HashMap::from([("Follow", Variant::from(true))]))
        .await
        .unwrap();
    talker.start(false).await.unwrap();
    let started = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::fs::File::from(std::os::fd::OwnedFd::from(fd)),
            &mut text,
        )
        .unwrap();
        text
    });
    let text = reader.join().unwrap();
    assert_eq!(text, "line 1\nline 2\nline 3\n");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the stream did not follow the writes"
    );

    // A reader that closes a follow of a silent container does not keep berthd busy.
    let silent = h.create(&connection, "silent", &["sleep", "100"]).await;
    silent.start(false).await.unwrap();
    let fd = silent
        .logs(HashMap::from([("Follow", Variant::from(true))]))
        .await
        .unwrap();
    drop(fd);
    let address = h.address.clone();
    common::wait_until(Duration::from_secs(10), || {
        !common::name_has_owner(&address)
    });
}
