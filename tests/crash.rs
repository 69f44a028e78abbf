//! End to end: crash consistency — lost monitors, a wiped runroot, and verbs that must get
//! through while a `Restart` waits.

mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::harness;

/// The exit code recorded when nobody can know the real one (see the README).
const UNKNOWN_EXIT_CODE: i32 = -1;

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_killed_with_sigkill_settles_the_container_within_a_second() {
    let Some(mut h) = harness("a_monitor_killed_with_sigkill_settles_the_container") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = h.create(&connection, "lost", &["sleep", "1000"]).await;
    container.start(false).await.unwrap();
    let process = container.pid().await.unwrap();
    let mut exited = container.receive_exited().await.unwrap();
    let waiter = {
        let container = container.clone();
        tokio::spawn(async move { container.wait().await })
    };
    // The Wait call is pending before the monitor goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "Wait answered while running");
    let monitors = h.monitors();
    assert_eq!(monitors.len(), 1, "one monitor: {monitors:?}");

    let killed_at = Instant::now();
    kill(Pid::from_raw(monitors[0] as i32), Signal::SIGKILL).unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("Wait answered within 1 s")
        .unwrap()
        .unwrap();
    assert_eq!(waited, UNKNOWN_EXIT_CODE);
    let remaining = Duration::from_secs(1).saturating_sub(killed_at.elapsed());
    let signal = tokio::time::timeout(remaining + Duration::from_millis(50), exited.next())
        .await
        .expect("Exited sent within 1 s")
        .unwrap();
    assert_eq!(signal.args().unwrap().exit_code, UNKNOWN_EXIT_CODE);
    // `stopped` at the exit, then `exited` once cleaned up: both within the second.
    while container.state().await.unwrap() != "exited"
        && killed_at.elapsed() < Duration::from_secs(1)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        container.state().await.unwrap(),
        "exited",
        "error {:?}; berthd log:\n{}",
        container.error().await,
        std::fs::read_to_string(h.dir.path().join("berthd.log")).unwrap_or_default()
    );
    assert_eq!(container.exit_code().await.unwrap(), UNKNOWN_EXIT_CODE);

    common::wait_until(Duration::from_secs(5), || !process_exists(process));
    assert!(!process_exists(process), "the container process was left");
    assert!(h.mounts().is_empty(), "mounts left: {:?}", h.mounts());
    let manager = berth::cli::proxy::ManagerProxy::new(&connection)
        .await
        .unwrap();
    let id = container.id().await.unwrap();
    let events = manager.get_events(0, 0).await.unwrap();
    let died = events
        .iter()
        .find(|e| e.2 == id && e.3 == "died")
        .expect("a died event");
    assert_eq!(died.4.get("exitCode").map(String::as_str), Some("-1"));

    // Usable again: it starts, and goes.
    container.start(false).await.unwrap();
    assert_eq!(container.state().await.unwrap(), "running");
    container.remove(true).await.unwrap();
    assert!(h.monitors().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_remove_get_through_a_long_restart() {
    let Some(mut h) = harness("kill_and_remove_get_through_a_long_restart") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    // PID 1 without a TERM handler: the restart's stop waits out its whole timeout.
    let container = h.create(&connection, "slow", &["sleep", "1000"]).await;
    container.start(false).await.unwrap();
    let first_pid = container.pid().await.unwrap();

    let restart = {
        let container = container.clone();
        tokio::spawn(async move { container.restart(60).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(container.state().await.unwrap(), "stopping");
    let asked = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), container.kill("KILL"))
        .await
        .expect("Kill answered during the restart")
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(3));
    // The killed process ends the restart's wait: it starts the container again.
    tokio::time::timeout(Duration::from_secs(10), restart)
        .await
        .expect("the restart finished after the kill")
        .unwrap()
        .unwrap();
    assert_eq!(container.state().await.unwrap(), "running");
    assert_ne!(container.pid().await.unwrap(), first_pid);

    let restart = {
        let container = container.clone();
        tokio::spawn(async move { container.restart(60).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(container.state().await.unwrap(), "stopping");
    tokio::time::timeout(Duration::from_secs(5), container.remove(true))
        .await
        .expect("Remove(force) answered during the restart")
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), restart)
        .await
        .expect("the restart answered after the remove")
        .unwrap();
    let error = outcome.expect_err("a restart of a removed container cannot succeed");
    let name = common::error_name(&error);
    assert!(
        name.ends_with("Removed") || name.ends_with("NoSuchContainer"),
        "{name}"
    );
    assert!(h.mounts().is_empty(), "mounts left: {:?}", h.mounts());
    common::wait_until(Duration::from_secs(5), || h.monitors().is_empty());
    assert!(h.monitors().is_empty());
}

/// A reboot wipes `--runroot` (tmpfs) and every process and mount: simulated here by killing
/// berthd, the monitors and the containers, unmounting and emptying the runroot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reboot_every_container_is_exited_and_unmounted() {
    let Some(mut h) = harness("after_a_reboot_every_container_is_exited_and_unmounted") else {
        return;
    };
    h.start_berthd(&[]);
    let (paths, processes) = {
        let connection = h.connection().await;
        let running = h.create(&connection, "running", &["sleep", "1000"]).await;
        running.start(false).await.unwrap();
        let created = h.create(&connection, "created", &["sleep", "1000"]).await;
        created.init().await.unwrap();
        let mounted = h.create(&connection, "mounted", &["true"]).await;
        mounted.start(false).await.unwrap();
        mounted.wait().await.unwrap();
        let processes = vec![running.pid().await.unwrap(), created.pid().await.unwrap()];
        let paths: Vec<_> = [&running, &created, &mounted]
            .iter()
            .map(|c| c.inner().path().to_owned())
            .collect();
        (paths, processes)
    };
    h.kill_berthd();
    simulate_reboot(&h, &processes);

    h.start_berthd(&[]);
    let connection = h.connection().await;
    for path in &paths {
        let container = common::proxy_at(&connection, path.clone().into()).await;
        let name = container.name().await.unwrap();
        assert_eq!(container.state().await.unwrap(), "exited", "{name}");
        assert_eq!(container.pid().await.unwrap(), 0, "{name}");
    }
    assert!(h.mounts().is_empty(), "mounts left: {:?}", h.mounts());
    for path in &paths {
        let container = common::proxy_at(&connection, path.clone().into()).await;
        container.start(false).await.unwrap();
        container.remove(true).await.unwrap();
    }
    assert!(h.mounts().is_empty(), "mounts left: {:?}", h.mounts());
}

fn simulate_reboot(h: &common::Harness, processes: &[u32]) {
    for pid in h.monitors().into_iter().chain(processes.iter().copied()) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let runtime_root = h.runroot().join("runtime");
    for entry in std::fs::read_dir(&runtime_root).unwrap() {
        let id = entry.unwrap().file_name();
        let status = std::process::Command::new("runc")
            .arg("--root")
            .arg(&runtime_root)
            .arg("delete")
            .arg("--force")
            .arg(&id)
            .status()
            .unwrap();
        assert!(status.success(), "runc delete {id:?}");
    }
    for line in h.mounts().iter().rev() {
        let target = line.split_whitespace().nth(1).unwrap();
        let status = std::process::Command::new("umount")
            .arg(target)
            .status()
            .unwrap();
        assert!(status.success(), "umount {target}");
    }
    std::fs::remove_dir_all(h.runroot()).unwrap();
}

/// The states in which a container has a runtime process, a monitor and a mounted rootfs.
fn is_live(state: &str) -> bool {
    matches!(state, "created" | "running" | "paused" | "stopping")
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What runc says of container `id` under the harness's runtime root ("" when it has none).
fn runc_status(h: &common::Harness, id: &str) -> String {
    let output = std::process::Command::new("runc")
        .arg("--root")
        .arg(h.runroot().join("runtime"))
        .args(["state", id])
        .output()
        .unwrap();
    if !output.status.success() {
        return String::new();
    }
    let state: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    state["status"].as_str().unwrap_or_default().to_string()
}

/// Everything berthd reports after a restart matches reality, and nothing is left that no
/// container owns; returns the anomalies found (empty when consistent).
async fn anomalies(h: &common::Harness, connection: &zbus::Connection) -> Vec<String> {
    let mut found = Vec::new();
    let database = rusqlite::Connection::open(h.root().join("berth.db")).unwrap();
    let integrity: String = database
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    if integrity != "ok" {
        found.push(format!("integrity_check: {integrity}"));
    }
    let manager = berth::cli::proxy::ManagerProxy::new(connection)
        .await
        .unwrap();
    let containers = manager.list_containers().await.unwrap();
    let ids: Vec<&str> = containers.iter().map(|c| c.0.as_str()).collect();
    let live: Vec<&str> = containers
        .iter()
        .filter(|c| is_live(&c.2))
        .map(|c| c.0.as_str())
        .collect();
    for (id, name, state, _) in &containers {
        let runc = runc_status(h, id);
        let expected = match state.as_str() {
            "running" | "stopping" => "running",
            "created" => "created",
            "paused" => "paused",
            _ => "",
        };
        if runc != expected {
            found.push(format!("{name} is {state} but runc says {runc:?}"));
        }
        for controller in ["pids", "memory", "freezer"] {
            let cgroup =
                std::path::PathBuf::from(format!("/sys/fs/cgroup/{controller}/berth/{id}"));
            if !is_live(state) && cgroup.exists() {
                found.push(format!("{name} is {state} but has {}", cgroup.display()));
            }
        }
    }
    for id in names_in(&h.runroot().join("runtime")) {
        if !live.contains(&id.as_str()) {
            found.push(format!("runc container {id} without a live container"));
        }
    }
    let monitors = h.monitors();
    if monitors.len() != live.len() {
        found.push(format!(
            "{} monitors for {} live containers",
            monitors.len(),
            live.len()
        ));
    }
    for mount in h.mounts() {
        if !live
            .iter()
            .any(|id| mount.contains(&format!("containers/{id}/")))
        {
            found.push(format!("mount without a live container: {mount}"));
        }
    }
    for id in &live {
        if !h
            .mounts()
            .iter()
            .any(|m| m.contains(&format!("containers/{id}/")))
        {
            found.push(format!("live container {id} has no mounted rootfs"));
        }
    }
    for dir in [h.root().join("containers"), h.runroot().join("containers")] {
        for name in names_in(&dir) {
            if !ids.contains(&name.as_str()) {
                found.push(format!("{} of no container", dir.join(name).display()));
            }
        }
    }
    found
}

/// Every container can be started and removed normally afterwards, leaving nothing behind.
async fn start_and_remove_all(h: &common::Harness, connection: &zbus::Connection) {
    let manager = berth::cli::proxy::ManagerProxy::new(connection)
        .await
        .unwrap();
    for (_, name, state, path) in manager.list_containers().await.unwrap() {
        let container = common::proxy_at(connection, path).await;
        if state == "paused" {
            container.unpause().await.unwrap();
        }
        container
            .start(false)
            .await
            .unwrap_or_else(|e| panic!("start {name} ({state}): {e}"));
        assert_eq!(container.state().await.unwrap(), "running", "{name}");
        container
            .remove(true)
            .await
            .unwrap_or_else(|e| panic!("remove {name}: {e}"));
    }
    assert!(h.mounts().is_empty(), "mounts left: {:?}", h.mounts());
    common::wait_until(Duration::from_secs(5), || h.monitors().is_empty());
    assert!(h.monitors().is_empty(), "monitors left");
    assert!(
        names_in(&h.runroot().join("runtime")).is_empty(),
        "runc state left"
    );
}

/// Drives berthd into the failpoint `step`; returns whether the step could be reached here.
async fn run_into(h: &common::Harness, connection: &zbus::Connection, step: &str) -> bool {
    use std::collections::HashMap;
    let manager = berth::cli::proxy::ManagerProxy::new(connection)
        .await
        .unwrap();
    let result = match step {
        "create.after-directory" => {
            let mut spec: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
            spec.insert(
                "Rootfs",
                zbus::Variant::from(h.rootfs.display().to_string()),
            );
            spec.insert("Name", zbus::Variant::from("crashed"));
            spec.insert("Command", zbus::Variant::from(vec!["true".to_string()]));
            manager.create_container(spec).await.map(drop)
        }
        "import.after-unpack" => {
            let fd: std::os::fd::OwnedFd = std::fs::File::open(h.rootfs_tar()).unwrap().into();
            let mut options: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
            options.insert("Reference", zbus::Variant::from("crashed:latest"));
            manager
                .import_image(zbus::Fd::from(fd), options)
                .await
                .map(drop)
        }
        "checkpoint.after-dump" => return false,
        _ => {
            let container = h.create(connection, "crashed", &["sleep", "1000"]).await;
            let verb = step.split('.').next().unwrap();
            match verb {
                "init" | "start" | "stop" | "kill" | "restart" | "pause" | "unpause" | "exec"
                | "remove" => {}
                other => panic!("no scenario for {other}"),
            }
            if step == "start.after-runc-start" {
                container.init().await.unwrap();
            } else if !matches!(verb, "init" | "start") {
                container.start(false).await.unwrap();
            }
            if verb == "unpause" {
                container.pause().await.unwrap();
            }
            match verb {
                "init" => container.init().await,
                "start" => container.start(false).await,
                "stop" => container.stop(1).await,
                "kill" => container.kill("KILL").await,
                "restart" => container.restart(1).await,
                "pause" => container.pause().await,
                "unpause" => container.unpause().await,
                "exec" => container
                    .exec(&["sleep", "1000"], HashMap::new())
                    .await
                    .map(drop),
                _ => container.remove(true).await,
            }
        }
    };
    assert!(result.is_err(), "{step}: the call succeeded");
    let address = h.address.clone();
    let asked = Instant::now();
    while common::name_has_owner(&address) && asked.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !common::name_has_owner(&h.address),
        "{step}: berthd did not crash ({result:?})"
    );
    true
}

/// berthd aborted at every named step, then started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_failpoint_is_reconciled_at_the_next_start() {
    let Some(mut h) = harness("a_crash_at_every_failpoint_is_reconciled") else {
        return;
    };
    let mut skipped = Vec::new();
    for step in berth::failpoint::STEPS {
        h.start_berthd_with_env(&[], &[("BERTH_FAILPOINT", step)]);
        let reached = {
            let connection = h.connection().await;
            run_into(&h, &connection, step).await
        };
        if !reached {
            skipped.push(*step);
            h.kill_berthd();
            continue;
        }
        h.kill_berthd();
        h.start_berthd(&[]);
        let connection = h.connection().await;
        let found = anomalies(&h, &connection).await;
        assert!(found.is_empty(), "after a crash at {step}: {found:#?}");
        if *step == "import.after-unpack" {
            let manager = berth::cli::proxy::ManagerProxy::new(&connection)
                .await
                .unwrap();
            let fd: std::os::fd::OwnedFd = std::fs::File::open(h.rootfs_tar()).unwrap().into();
            let image = manager
                .import_image(zbus::Fd::from(fd), std::collections::HashMap::new())
                .await
                .unwrap();
            assert!(!image.as_str().is_empty());
        }
        start_and_remove_all(&h, &connection).await;
        h.kill_berthd();
    }
    if !skipped.is_empty() {
        eprintln!("failpoints not reached here (CRIU needed): {skipped:?}");
    }
}

/// A count from the environment (the long form of a test), else `short`.
fn rounds(variable: &str, short: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(short)
}

/// One ordinary cycle (create, start, stop, remove) that stops at the first failure: berthd
/// is killed somewhere in it.
async fn cycle(h: &common::Harness, connection: &zbus::Connection, round: usize) {
    use std::collections::HashMap;
    let Ok(manager) = berth::cli::proxy::ManagerProxy::new(connection).await else {
        return;
    };
    let mut spec: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
    spec.insert(
        "Rootfs",
        zbus::Variant::from(h.rootfs.display().to_string()),
    );
    spec.insert("Name", zbus::Variant::from(format!("cycle{round}")));
    spec.insert(
        "Command",
        zbus::Variant::from(vec!["sleep".to_string(), "1000".to_string()]),
    );
    let Ok(path) = manager.create_container(spec).await else {
        return;
    };
    let Ok(container) = berth::cli::proxy::ContainerProxy::builder(connection)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
    else {
        return;
    };
    if container.start(false).await.is_err() || container.stop(0).await.is_err() {
        return;
    }
    let _ = container.remove(false).await;
}

/// Kills berthd (the harness's) with SIGKILL after `delay`.
async fn kill_after(pid: u32, delay: Duration) {
    tokio::time::sleep(delay).await;
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// berthd killed at random moments of ordinary cycles. The short form
/// runs in `scripts/test`; `BERTH_CRASH_KILLS=200` is the long one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_kills_during_ordinary_cycles_leave_no_anomaly() {
    let Some(mut h) = harness("randomized_kills_during_ordinary_cycles") else {
        return;
    };
    let kills = rounds("BERTH_CRASH_KILLS", 10);
    let mut all = Vec::new();
    for round in 0..kills {
        h.start_berthd(&[]);
        let pid = h.berthd_pid().unwrap();
        {
            let connection = h.connection().await;
            // A whole cycle takes ~300-600 ms here: the kill lands anywhere in it.
            let delay = Duration::from_millis(rand::random_range(0..600));
            tokio::join!(cycle(&h, &connection, round), kill_after(pid, delay));
        }
        h.kill_berthd();
        h.start_berthd(&[]);
        let connection = h.connection().await;
        for anomaly in anomalies(&h, &connection).await {
            all.push(format!("kill {round}: {anomaly}"));
        }
        // Remove(force) works on whatever the crash left.
        let manager = berth::cli::proxy::ManagerProxy::new(&connection)
            .await
            .unwrap();
        for (id, name, state, _) in manager.list_containers().await.unwrap() {
            if let Err(error) = manager.remove_container(&id, true).await {
                all.push(format!(
                    "kill {round}: Remove(force) of {name} ({state}): {error}"
                ));
            }
        }
        h.kill_berthd();
    }
    eprintln!(
        "randomized kill loop: {} anomalies over {kills} kills",
        all.len()
    );
    assert!(all.is_empty(), "{all:#?}");
}

/// A fresh `Start` killed in flight, again and again: each container ends
/// running (adopted) or not started, as runc says, and `Remove(force)` works on each.
/// `BERTH_CRASH_STARTS=50` is the long form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_start_killed_in_flight_ends_as_reality_says() {
    let Some(mut h) = harness("a_fresh_start_killed_in_flight") else {
        return;
    };
    let starts = rounds("BERTH_CRASH_STARTS", 10);
    let mut adopted = 0;
    for round in 0..starts {
        h.start_berthd(&[]);
        let pid = h.berthd_pid().unwrap();
        let path = {
            let connection = h.connection().await;
            let container = h
                .create(&connection, &format!("fresh{round}"), &["sleep", "1000"])
                .await;
            // A fresh start takes ~50-150 ms here.
            let delay = Duration::from_millis(rand::random_range(0..150));
            let (started, ()) = tokio::join!(container.start(false), kill_after(pid, delay));
            let _ = started;
            container.inner().path().to_owned()
        };
        h.kill_berthd();
        h.start_berthd(&[]);
        let connection = h.connection().await;
        let found = anomalies(&h, &connection).await;
        assert!(found.is_empty(), "start {round}: {found:#?}");
        let container = common::proxy_at(&connection, path.into()).await;
        let state = container.state().await.unwrap();
        assert!(
            matches!(state.as_str(), "running" | "exited" | "configured"),
            "start {round}: {state}"
        );
        if state == "running" {
            adopted += 1;
        }
        container.remove(true).await.unwrap();
        h.kill_berthd();
    }
    eprintln!("fresh starts killed in flight: {starts}, of which {adopted} found running");
    assert!(h.mounts().is_empty(), "mounts left: {:?}", h.mounts());
}
