//! End to end: a full disk under `--root` is `NoSpace`, changes nothing, and every container
//! is usable again once space is freed.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::Command;

use berth::cli::proxy::ManagerProxy;
use common::harness;

const NO_SPACE: &str = "org.berth.Engine1.Error.NoSpace";

/// Fills the filesystem holding `dir` with one file; returns it.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 1 << 16];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

/// How many host processes run exactly `command`.
fn processes(command: &[&str]) -> usize {
    let wanted: Vec<u8> = command
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| *cmdline == wanted)
        .count()
}

fn rootfs_spec(h: &common::Harness, name: &str) -> HashMap<&'static str, zbus::Variant<'static>> {
    let mut spec = HashMap::new();
    spec.insert(
        "Rootfs",
        zbus::Variant::from(h.rootfs.display().to_string()),
    );
    spec.insert("Name", zbus::Variant::from(name.to_string()));
    spec.insert(
        "Command",
        zbus::Variant::from(vec!["sleep".to_string(), "1000".to_string()]),
    );
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_root_is_no_space_and_changes_nothing() {
    let Some(mut h) = harness("a_full_disk_under_root_is_no_space") else {
        return;
    };
    let root = h.root();
    std::fs::create_dir_all(&root).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs on --root");
    let tar = h.rootfs_tar();
    h.start_berthd(&[]);
    {
        let connection = h.connection().await;
        let manager = ManagerProxy::new(&connection).await.unwrap();
        let running = h.create(&connection, "running", &["sleep", "1000"]).await;
        running.start(false).await.unwrap();
        let waiting = h.create(&connection, "waiting", &["sleep", "1000"]).await;
        let events_before = manager.get_events(0, 0).await.unwrap().len();

        let filler = fill(&root);
        let created = manager.create_container(rootfs_spec(&h, "third")).await;
        assert_eq!(
            common::error_name(&created.expect_err("create on a full disk")),
            NO_SPACE
        );
        assert_eq!(manager.list_containers().await.unwrap().len(), 2);

        let started = waiting.start(false).await;
        assert_eq!(
            common::error_name(&started.expect_err("start on a full disk")),
            NO_SPACE
        );
        assert_eq!(waiting.state().await.unwrap(), "configured");
        assert_eq!(h.monitors().len(), 1, "the unrecorded run was taken down");

        // A session that would outlive the call: the monitor starts it, the commit fails.
        let executed = running.exec(&["sleep", "1001"], HashMap::new()).await;
        assert_eq!(
            common::error_name(&executed.expect_err("exec on a full disk")),
            NO_SPACE
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while processes(&["sleep", "1001"]) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(
            processes(&["sleep", "1001"]),
            0,
            "the unrecorded exec session was killed"
        );
        assert!(running.exec_sessions().await.unwrap().is_empty());

        let fd: std::os::fd::OwnedFd = std::fs::File::open(&tar).unwrap().into();
        let imported = manager
            .import_image(zbus::Fd::from(fd), HashMap::new())
            .await;
        let error = imported.expect_err("import on a full disk");
        assert_eq!(common::error_name(&error), NO_SPACE, "{error}");
        assert!(manager.list_images().await.unwrap().is_empty());
        assert_eq!(running.state().await.unwrap(), "running");
        assert_eq!(
            manager.get_events(0, 0).await.unwrap().len(),
            events_before,
            "no event recorded on a full disk"
        );

        // Space freed: everything works again.
        std::fs::remove_file(filler).unwrap();
        manager
            .create_container(rootfs_spec(&h, "third"))
            .await
            .unwrap();
        waiting.start(false).await.unwrap();
        assert_eq!(waiting.state().await.unwrap(), "running");
        let session = running.exec(&["true"], HashMap::new()).await.unwrap();
        assert!(!session.as_str().is_empty());
        let fd: std::os::fd::OwnedFd = std::fs::File::open(&tar).unwrap().into();
        manager
            .import_image(zbus::Fd::from(fd), HashMap::new())
            .await
            .unwrap();
        for (id, _, _, _) in manager.list_containers().await.unwrap() {
            manager.remove_container(&id, true).await.unwrap();
        }
        assert!(h.mounts().iter().all(|m| !m.contains("/merged")));
    }
    h.kill_berthd();
    let unmounted = Command::new("umount").arg(&root).status().unwrap();
    assert!(unmounted.success(), "umount --root");
}
