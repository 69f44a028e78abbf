//! Checkpoint and restore with a real CRIU through runc. Where CRIU
//! cannot work (`criu check` fails or there is none), the tests that need it say SKIP and
//! why, and the NotSupported path is checked instead.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use berth::cli::proxy::{ContainerProxy, ManagerProxy};
use common::{error_name, harness, Harness};
use futures_util::StreamExt;
use zbus::Variant;

/// Writes each count to a new file renamed over `/tmp/n`: a read (or a checkpoint) between
/// `>`'s truncation and the write would otherwise find the file empty.
const COUNTER: &str = "echo $$ > /tmp/pid; i=0; \
     while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.1; done";

/// Runs `command` in the container and returns its stdout.
async fn exec_output(
    connection: &zbus::Connection,
    container: &ContainerProxy<'_>,
    command: &[&str],
) -> String {
    let (read, write) = nix::unistd::pipe().unwrap();
    let path = container
        .exec(
            command,
            HashMap::from([("Stdout", Variant::from(zbus::Fd::from(write.as_fd())))]),
        )
        .await
        .unwrap();
    drop(write);
    let mut output = String::new();
    std::fs::File::from(read)
        .read_to_string(&mut output)
        .unwrap();
    let session = common::session_proxy(connection, path).await;
    assert_eq!(session.wait().await.unwrap(), 0);
    session.remove().await.unwrap();
    output.trim().to_string()
}

/// The counter as the container's loop last wrote it (waiting, bounded, for a first write).
async fn counter(connection: &zbus::Connection, container: &ContainerProxy<'_>) -> u64 {
    let read = ["sh", "-c", "cat /tmp/n 2>/dev/null || echo 0"];
    for _ in 0..100 {
        let value: u64 = exec_output(connection, container, &read)
            .await
            .parse()
            .unwrap();
        if value > 0 {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the counter never appeared in /tmp/n");
}

/// A harness with berthd, if CRIU works here; otherwise prints why the test is skipped.
fn criu_harness(test: &str) -> Option<Harness> {
    let mut h = harness(test)?;
    if let Some(reason) = berth::engine::criu_problem() {
        eprintln!("SKIP {test}: {reason} (scripts/install-criu provides one)");
        return None;
    }
    h.start_berthd(&[]);
    Some(h)
}

async fn counting(
    h: &Harness,
    connection: &zbus::Connection,
    name: &str,
) -> ContainerProxy<'static> {
    let container = h.create(connection, name, &["sh", "-c", COUNTER]).await;
    container.start(false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    container
}

/// `GetEvents` rows: (seq, timestamp, container id, type, attributes).
type Events = [(u64, u64, String, String, HashMap<String, String>)];

fn event_kinds(events: &Events, id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.2 == id)
        .map(|e| e.3.clone())
        .collect()
}

/// The counter continues after checkpoint and restore, the pid
/// inside is the same, and the checkpoint exit is no death: no `died`, no `Exited`, no
/// restart even with `RestartPolicy always`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_and_restore_continue_the_counter_with_no_death() {
    let Some(h) = criu_harness("checkpoint_and_restore_continue_the_counter") else {
        return;
    };
    let connection = h.connection().await;
    let container = h
        .create_with(
            &connection,
            "count",
            &["sh", "-c", COUNTER],
            vec![("RestartPolicy", Variant::from("always"))],
        )
        .await;
    container.start(false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let id = container.id().await.unwrap();
    let pid_inside = exec_output(&connection, &container, &["cat", "/tmp/pid"]).await;
    let mut exited = container.receive_exited().await.unwrap();

    container.checkpoint(HashMap::new()).await.unwrap();
    let at_checkpoint = counter_file(&h, &id);
    assert!(at_checkpoint > 0);
    assert_eq!(container.state().await.unwrap(), "exited");
    assert!(container.checkpointed().await.unwrap());
    assert!(container.checkpointed_at().await.unwrap() > 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        container.state().await.unwrap(),
        "exited",
        "no restart policy"
    );
    assert_eq!(container.restart_count().await.unwrap(), 0);

    container.restore(HashMap::new()).await.unwrap();
    assert_eq!(container.state().await.unwrap(), "running");
    assert!(!container.checkpointed().await.unwrap());
    assert!(container.restored_at().await.unwrap() > 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = counter(&connection, &container).await;
    assert!(
        after > at_checkpoint,
        "counter went from {at_checkpoint} to {after}"
    );
    assert!(
        after < at_checkpoint + 50,
        "counter restarted? {at_checkpoint} → {after}"
    );
    assert_eq!(
        exec_output(&connection, &container, &["cat", "/tmp/pid"]).await,
        pid_inside
    );

    let manager = ManagerProxy::new(&connection).await.unwrap();
    let kinds = event_kinds(&manager.get_events(0, 0).await.unwrap(), &id);
    assert!(kinds.contains(&"checkpoint".to_string()) && kinds.contains(&"restore".to_string()));
    assert!(!kinds.contains(&"died".to_string()), "{kinds:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), exited.next())
            .await
            .is_err(),
        "a checkpoint emitted Exited"
    );
    container.remove(true).await.unwrap();
}

/// The counter as the container's upper directory has it (the container is stopped).
fn counter_file(h: &Harness, id: &str) -> u64 {
    let path = h.root().join("containers").join(id).join("upper/tmp/n");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// `KeepRunning` leaves it running and the checkpoint still restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_running_leaves_it_running_with_a_restorable_checkpoint() {
    let Some(h) = criu_harness("keep_running_leaves_it_running") else {
        return;
    };
    let connection = h.connection().await;
    let container = counting(&h, &connection, "keep").await;
    container
        .checkpoint(HashMap::from([("KeepRunning", Variant::from(true))]))
        .await
        .unwrap();
    assert_eq!(container.state().await.unwrap(), "running");
    assert!(container.checkpointed_at().await.unwrap() > 0);
    let before = counter(&connection, &container).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        counter(&connection, &container).await > before,
        "still counting"
    );
    container.stop(0).await.unwrap();
    container.restore(HashMap::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restored = counter(&connection, &container).await;
    assert!(
        restored > 0 && restored < before + 40,
        "restored at {restored}, checkpoint near {before}"
    );
    container.remove(true).await.unwrap();
}

/// Export into a pipe, remove the container, restore the tar into a new
/// one from the same rootfs: the counter continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_checkpoint_restores_into_a_new_container() {
    let Some(h) = criu_harness("an_exported_checkpoint_restores_into_a_new_container") else {
        return;
    };
    let connection = h.connection().await;
    let container = counting(&h, &connection, "moving").await;
    let id = container.id().await.unwrap();
    let (read, write) = nix::unistd::pipe().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::fs::File::from(read).read_to_end(&mut bytes).unwrap();
        bytes
    });
    container
        .checkpoint(HashMap::from([(
            "Export",
            Variant::from(zbus::Fd::from(write.as_fd())),
        )]))
        .await
        .unwrap();
    drop(write);
    let tar = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert!(tar.len() > 10_000, "checkpoint tar of {} bytes", tar.len());
    let at_checkpoint = counter_file(&h, &id);
    container.remove(true).await.unwrap();

    let file = h.dir.path().join("checkpoint.tar");
    std::fs::write(&file, &tar).unwrap();
    let fresh = h.create(&connection, "moved", &["sh", "-c", COUNTER]).await;
    let fd: OwnedFd = std::fs::File::open(&file).unwrap().into();
    fresh
        .restore(HashMap::from([(
            "Import",
            Variant::from(zbus::Fd::from(fd)),
        )]))
        .await
        .unwrap();
    assert_eq!(fresh.state().await.unwrap(), "running");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = counter(&connection, &fresh).await;
    assert!(
        after > at_checkpoint && after < at_checkpoint + 40,
        "{at_checkpoint} → {after}"
    );
    fresh.remove(true).await.unwrap();
}

/// With no CRIU, or a broken one, `Checkpoint` answers NotSupported
/// naming the cause and the container keeps running untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_working_criu_checkpoint_is_not_supported_and_harmless() {
    let Some(mut h) = harness("without_a_working_criu_checkpoint_is_not_supported") else {
        return;
    };
    // PATH with no criu at all (runc given by its path).
    let empty = h.dir.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let runc = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v runc"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let runtime = format!("--runtime={}", runc.trim());
    h.start_berthd_with_env(&[&runtime], &[("PATH", empty.to_str().unwrap())]);
    let connection = h.connection().await;
    let container = counting(&h, &connection, "nocriu").await;
    let pid = container.pid().await.unwrap();
    let error = container.checkpoint(HashMap::new()).await.unwrap_err();
    assert_eq!(error_name(&error), "org.berth.Engine1.Error.NotSupported");
    assert!(
        error.to_string().contains("CRIU is not installed"),
        "{error}"
    );
    assert_eq!(container.state().await.unwrap(), "running");
    assert_eq!(container.pid().await.unwrap(), pid);
    let error = container.restore(HashMap::new()).await.unwrap_err();
    assert_eq!(error_name(&error), "org.berth.Engine1.Error.InvalidState");
    container.remove(true).await.unwrap();
    h.kill_berthd();

    // A criu that fails `criu check`.
    let broken = h.dir.path().join("broken-bin");
    std::fs::create_dir_all(&broken).unwrap();
    let fake = broken.join("criu");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'Error (criu/kerndat.c:1): vdso: not supported' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    h.start_berthd_with_env(&[&runtime], &[("PATH", broken.to_str().unwrap())]);
    let connection = h.connection().await;
    let container = counting(&h, &connection, "brokencriu").await;
    let error = container.checkpoint(HashMap::new()).await.unwrap_err();
    assert_eq!(error_name(&error), "org.berth.Engine1.Error.NotSupported");
    assert!(error.to_string().contains("vdso"), "{error}");
    assert_eq!(container.state().await.unwrap(), "running");
    container.remove(true).await.unwrap();
}

/// `berthctl checkpoint --export` and `restore --import` move a container between two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berthctl_checkpoints_to_a_file_and_restores_from_it() {
    let Some(h) = criu_harness("berthctl_checkpoints_to_a_file_and_restores_from_it") else {
        return;
    };
    let connection = h.connection().await;
    let _container = counting(&h, &connection, "cli").await;
    let file = h.dir.path().join("cli.tar");
    let file = file.to_str().unwrap();
    let done = h.berthctl(&["checkpoint", "--export", file, "cli"]);
    assert!(done.status.success(), "{done:?}");
    let rootfs = h.rootfs.display().to_string();
    let made = h.berthctl(&[
        "create", "--name", "cli2", "--rootfs", &rootfs, "sh", "-c", COUNTER,
    ]);
    assert!(made.status.success(), "{made:?}");
    let done = h.berthctl(&["restore", "--import", file, "cli2"]);
    assert!(done.status.success(), "{done:?}");
    let moved = common::container_proxy(&connection, "cli2").await;
    assert_eq!(moved.state().await.unwrap(), "running");
    // The new container's own /tmp/n appears with the restored loop's next write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(counter(&connection, &moved).await > 1);
    for name in ["cli", "cli2"] {
        assert!(h.berthctl(&["rm", "-f", name]).status.success());
    }
}
