//! End to end: berthd crashes, concurrency, authorization.

mod common;

use std::time::Duration;

use berth::cli::proxy::{ContainerProxy, ManagerProxy};
use common::harness;

/// `kill -9` of berthd while three containers run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_outlive_a_killed_berthd_and_missed_exits_are_recorded() {
    let Some(mut h) = harness("containers_outlive_a_killed_berthd") else {
        return;
    };
    h.start_berthd(&[]);
    let (paths, pids) = {
        let connection = h.connection().await;
        let first = h.create(&connection, "first", &["sleep", "1000"]).await;
        let second = h.create(&connection, "second", &["sleep", "1000"]).await;
        // Exits 7 once the file appears: the test decides when, while berthd is down.
        let third = h
            .create(
                &connection,
                "third",
                &[
                    "/bin/sh",
                    "-c",
                    "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 7",
                ],
            )
            .await;
        let mut pids = Vec::new();
        let mut paths = Vec::new();
        for container in [&first, &second, &third] {
            container.start(false).await.unwrap();
            pids.push(container.pid().await.unwrap());
            paths.push(container.inner().path().to_owned());
        }
        (paths, pids)
    };
    let monitors_before = h.monitors();
    assert_eq!(monitors_before.len(), 3, "one monitor per container");

    h.kill_berthd();
    for pid in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "container {pid} died with berthd"
        );
    }
    // The third exits while berthd is down.
    let third_id = paths[2].as_str().rsplit('/').next().unwrap().to_string();
    // Through the host's view of its mounted rootfs.
    std::fs::write(
        h.root()
            .join("containers")
            .join(&third_id)
            .join("merged/tmp/go"),
        b"",
    )
    .unwrap();
    let exit_file = h.runroot().join("exits").join(&third_id);
    common::wait_until(Duration::from_secs(10), || exit_file.exists());

    h.start_berthd(&[]);
    let connection = h.connection().await;
    let mut proxies: Vec<ContainerProxy<'_>> = Vec::new();
    for path in &paths {
        proxies.push(common::proxy_at(&connection, path.clone().into()).await);
    }
    for (proxy, pid) in proxies.iter().zip(&pids).take(2) {
        assert_eq!(proxy.state().await.unwrap(), "running");
        assert_eq!(
            proxy.pid().await.unwrap(),
            *pid,
            "the adopted container keeps its pid"
        );
    }
    assert_eq!(proxies[2].state().await.unwrap(), "exited");
    assert_eq!(proxies[2].exit_code().await.unwrap(), 7);
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let events = manager.get_events(0, 0).await.unwrap();
    let position = |kind: &str| events.iter().position(|e| e.2 == third_id && e.3 == kind);
    let (start, died) = (position("start").unwrap(), position("died").unwrap());
    assert!(start < died, "died must follow start");
    assert_eq!(
        events[died].4.get("exitCode").map(String::as_str),
        Some("7")
    );

    // The adopted ones still stop and report.
    proxies[0].stop(1).await.unwrap();
    assert_eq!(proxies[0].exit_code().await.unwrap(), 137);
    for proxy in &proxies {
        proxy.remove(true).await.unwrap();
    }
    assert!(h.mounts().is_empty(), "mounts left: {:?}", h.mounts());
    common::wait_until(Duration::from_secs(5), || h.monitors().is_empty());
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "container process {pid} leaked"
        );
    }
    assert!(
        std::fs::read_dir(h.runroot().join("runtime"))
            .unwrap()
            .next()
            .is_none(),
        "runc state left"
    );
}

/// 32 clients at once, each create/start/wait/remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_clients_all_get_their_exit_codes() {
    let Some(mut h) = harness("thirty_two_concurrent_clients") else {
        return;
    };
    h.start_berthd(&[]);
    let h = std::sync::Arc::new(h);
    let mut tasks = Vec::new();
    for n in 0..32u32 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            // Each client has its own connection, as 32 processes would.
            let connection = h.connection().await;
            let command = format!("exit {}", n + 1);
            let container = h
                .create(&connection, &format!("c{n}"), &["/bin/sh", "-c", &command])
                .await;
            container
                .start(false)
                .await
                .map_err(|e| format!("start {n}: {e}"))?;
            let code = container
                .wait()
                .await
                .map_err(|e| format!("wait {n}: {e}"))?;
            container
                .remove(false)
                .await
                .map_err(|e| format!("remove {n}: {e}"))?;
            Ok::<(u32, i32), String>((n, code))
        }));
    }
    for task in tasks {
        let (n, code) = task.await.unwrap().unwrap();
        assert_eq!(code, n as i32 + 1);
    }
    let log = std::fs::read_to_string(h.dir.path().join("berthd.log")).unwrap();
    assert!(!log.contains("database is locked"));
    assert!(h.mounts().is_empty());
}

/// polkit: anyone may read; only the privileged may act.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_caller_reads_but_may_not_start() {
    let Some(mut h) = harness("a_non_root_caller") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = h.create(&connection, "guarded", &["sleep", "100"]).await;
    let path = container.inner().path().to_string();
    // The socket directory must be reachable for uid 65534.
    std::fs::set_permissions(
        h.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "busctl"])
            .arg(format!("--address={}", h.address))
            .args(args)
            .output()
            .unwrap()
    };
    let read = as_nobody(&[
        "get-property",
        "org.berth.Engine1",
        &path,
        "org.berth.Engine1.Container",
        "State",
    ]);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "s \"configured\""
    );
    let list = as_nobody(&[
        "call",
        "org.berth.Engine1",
        "/org/berth/Engine1",
        "org.berth.Engine1.Manager",
        "ListContainers",
    ]);
    assert!(list.status.success());
    let start = as_nobody(&[
        "call",
        "org.berth.Engine1",
        &path,
        "org.berth.Engine1.Container",
        "Start",
        "b",
        "false",
    ]);
    assert!(!start.status.success());
    let stderr = String::from_utf8_lossy(&start.stderr);
    assert!(
        stderr.contains("not authorized") || stderr.contains("Access denied"),
        "{stderr}"
    );
    assert_eq!(container.state().await.unwrap(), "configured");
    // The event log says who did what.
    container.start(false).await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let events = manager.get_events(0, 0).await.unwrap();
    let start = events.iter().find(|e| e.3 == "start").unwrap();
    assert_eq!(start.4.get("uid").map(String::as_str), Some("0"));
}
