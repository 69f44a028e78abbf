//! End to end: named volumes on real runc — data that outlives containers and berthd,
//! copy-up, anonymous volumes, removal rules, export/import against hostile archives,
//! read-only mounts, names, crash safety, berthctl and the shipped introspection XML.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth::cli::proxy::{ContainerProxy, ManagerProxy, VolumeProxy};
use common::{error_name, harness, Harness};
use futures_util::StreamExt;
use zbus::{OwnedVariant, Variant};

type Mount = HashMap<String, OwnedVariant>;

fn owned(value: Variant<'_>) -> OwnedVariant {
    value.try_to_owned().unwrap()
}

/// A `Mounts` entry of type volume.
fn volume_mount(name: &str, destination: &str, options: &[&str], read_only: bool) -> Mount {
    let mut mount = HashMap::from([
        ("Type".to_string(), owned(Variant::from("volume"))),
        ("Source".to_string(), owned(Variant::from(name))),
        ("Destination".to_string(), owned(Variant::from(destination))),
    ]);
    if !options.is_empty() {
        let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        mount.insert("Options".into(), owned(Variant::from(options)));
    }
    if read_only {
        mount.insert("ReadOnly".into(), owned(Variant::from(true)));
    }
    mount
}

fn mounts(list: Vec<Mount>) -> Vec<(&'static str, Variant<'static>)> {
    vec![("Mounts", Variant::from(list))]
}

/// Creates, starts and waits for a busybox container running `script`; returns its exit
/// code and the container (not removed).
async fn run<'a>(
    h: &Harness,
    connection: &zbus::Connection,
    name: &str,
    script: &str,
    list: Vec<Mount>,
) -> (i32, ContainerProxy<'a>) {
    let container = h
        .create_with(connection, name, &["sh", "-c", script], mounts(list))
        .await;
    container.start(false).await.unwrap();
    let code = container.wait().await.unwrap();
    (code, container)
}

async fn volume_proxy<'a>(connection: &zbus::Connection, name: &str) -> VolumeProxy<'a> {
    let manager = ManagerProxy::new(connection).await.unwrap();
    let path = manager.get_volume(name).await.unwrap();
    VolumeProxy::builder(connection)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

async fn mountpoint(connection: &zbus::Connection, name: &str) -> PathBuf {
    PathBuf::from(
        volume_proxy(connection, name)
            .await
            .mountpoint()
            .await
            .unwrap(),
    )
}

/// A directory in the busybox rootfs with a file of a given owner and mode.
fn seed(h: &Harness) {
    let seed = h.rootfs.join("seed");
    std::fs::create_dir_all(seed.join("sub")).unwrap();
    std::fs::write(seed.join("file"), b"seeded\n").unwrap();
    std::os::unix::fs::chown(seed.join("file"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(seed.join("file"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(seed.join("sub"), std::fs::Permissions::from_mode(0o711)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_outlives_containers_and_berthd_and_is_shared_by_running_containers() {
    let Some(mut h) = harness("volumes_data_outlives") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    manager
        .create_volume("pg-data", HashMap::new())
        .await
        .unwrap();
    let volume = vec![volume_mount("pg-data", "/data", &[], false)];

    let (code, writer) = run(
        &h,
        &connection,
        "writer",
        "echo hello > /data/f",
        volume.clone(),
    )
    .await;
    assert_eq!(code, 0);
    writer.remove(false).await.unwrap();
    let read = "test \"$(cat /data/f)\" = hello";
    let (code, reader) = run(&h, &connection, "reader", read, volume.clone()).await;
    assert_eq!(code, 0, "the next container reads what the first wrote");
    reader.remove(false).await.unwrap();

    h.kill_berthd();
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let (code, _) = run(&h, &connection, "after-restart", read, volume.clone()).await;
    assert_eq!(code, 0, "the data is still there after berthd restarts");

    // Two running containers share the volume: one waits for what the other writes.
    let waiter = h
        .create_with(
            &connection,
            "waiter",
            &[
                "sh",
                "-c",
                "i=0; while [ ! -f /data/ping ]; do i=$((i+1)); [ $i -gt 300 ] && exit 9; \
                 sleep 0.1; done; cat /data/ping > /data/pong",
            ],
            mounts(volume.clone()),
        )
        .await;
    waiter.start(false).await.unwrap();
    assert_eq!(waiter.state().await.unwrap(), "running");
    let (code, pinger) = run(&h, &connection, "pinger", "echo ping > /data/ping", volume).await;
    assert_eq!(code, 0);
    assert_eq!(waiter.wait().await.unwrap(), 0);
    let data = mountpoint(&connection, "pg-data").await;
    assert_eq!(
        std::fs::read_to_string(data.join("pong")).unwrap(),
        "ping\n"
    );
    assert_eq!(
        data,
        h.root().join("volumes/pg-data/_data"),
        "podman's local layout"
    );

    // The volume lists the containers that use it; inspect shows the mount as podman does.
    let volume = volume_proxy(&connection, "pg-data").await;
    let users = volume.containers().await.unwrap();
    for user in [&waiter, &pinger] {
        assert!(users
            .iter()
            .any(|p| p.as_str() == user.inner().path().as_str()));
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&waiter.inspect(false).await.unwrap()).unwrap();
    let mount = &inspect["Mounts"][0];
    assert_eq!(mount["Type"], "volume");
    assert_eq!(mount["Name"], "pg-data");
    assert_eq!(mount["Source"], data.display().to_string());
    assert_eq!(mount["Destination"], "/data");
    assert_eq!(mount["Driver"], "local");
    assert_eq!(mount["RW"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_volume_is_filled_from_the_image_unless_nocopy_and_missing_ones_are_created() {
    let Some(mut h) = harness("volumes_copy_up") else {
        return;
    };
    seed(&h);
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    assert_eq!(
        error_name(&manager.get_volume("fresh").await.unwrap_err()),
        "org.berth.Engine1.Error.NoSuchVolume"
    );

    let fresh = vec![volume_mount("fresh", "/seed", &[], false)];
    let container = h
        .create_with(
            &connection,
            "copy",
            &["cat", "/seed/file"],
            mounts(fresh.clone()),
        )
        .await;
    // A missing named volume is created when a container names it.
    let data = mountpoint(&connection, "fresh").await;
    assert!(data.is_dir());
    container.start(false).await.unwrap();
    assert_eq!(container.wait().await.unwrap(), 0);
    let file = std::fs::metadata(data.join("file")).unwrap();
    assert_eq!(std::fs::read(data.join("file")).unwrap(), b"seeded\n");
    assert_eq!((file.uid(), file.gid()), (1234, 5678), "owners kept");
    assert_eq!(file.mode() & 0o7777, 0o640, "mode kept");
    assert_eq!(
        std::fs::metadata(data.join("sub")).unwrap().mode() & 0o7777,
        0o711
    );

    // Only the first use copies: what a container deletes stays deleted.
    let (code, _) = run(&h, &connection, "delete", "rm /seed/file", fresh.clone()).await;
    assert_eq!(code, 0);
    let (code, _) = run(&h, &connection, "again", "test ! -e /seed/file", fresh).await;
    assert_eq!(code, 0, "copy-up happens once");

    let nocopy = vec![volume_mount("empty", "/seed", &["nocopy"], false)];
    let (code, _) = run(
        &h,
        &connection,
        "nocopy",
        "test -z \"$(ls -A /seed)\"",
        nocopy,
    )
    .await;
    assert_eq!(code, 0, "nocopy leaves the volume empty");
    let empty = mountpoint(&connection, "empty").await;
    assert_eq!(std::fs::read_dir(empty).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_in_use_are_kept_and_anonymous_ones_go_with_their_container() {
    let Some(mut h) = harness("volumes_in_use") else {
        return;
    };
    seed(&h);
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();

    let busy = manager.create_volume("busy", HashMap::new()).await.unwrap();
    // A cached proxy, as a desktop client keeps: it learns of new users by PropertiesChanged.
    let watcher = VolumeProxy::builder(&connection)
        .path(busy)
        .build()
        .await
        .unwrap();
    assert!(watcher.containers().await.unwrap().is_empty());
    let mut changes = watcher.receive_containers_changed().await;
    let user = h
        .create_with(
            &connection,
            "user",
            &["true"],
            mounts(vec![volume_mount("busy", "/data", &[], false)]),
        )
        .await;
    let users = loop {
        let change = tokio::time::timeout(Duration::from_secs(5), changes.next())
            .await
            .expect("Containers changed")
            .unwrap();
        let users = change.get().await.unwrap();
        if !users.is_empty() {
            break users;
        }
    };
    assert_eq!(users[0].as_str(), user.inner().path().as_str());
    let error = manager.remove_volume("busy", false).await.unwrap_err();
    assert_eq!(error_name(&error), "org.berth.Engine1.Error.VolumeInUse");
    let path = manager.get_volume("busy").await.unwrap();
    assert_eq!(path.as_str(), "/org/berth/Engine1/volume/busy");
    user.remove(false).await.unwrap();
    assert!(volume_proxy(&connection, "busy")
        .await
        .containers()
        .await
        .unwrap()
        .is_empty());
    manager.remove_volume("busy", false).await.unwrap();
    assert_eq!(
        error_name(&manager.get_volume("busy").await.unwrap_err()),
        "org.berth.Engine1.Error.NoSuchVolume"
    );
    let objects = zbus::fdo::ObjectManagerProxy::builder(&connection)
        .destination("org.berth.Engine1")
        .path("/org/berth/Engine1")
        .build()
        .await
        .unwrap()
        .get_managed_objects()
        .await
        .unwrap();
    assert!(
        !objects.keys().any(|p| p.as_str() == path.as_str()),
        "the object went away"
    );
    assert!(!h.root().join("volumes/busy").exists());

    // Force removes the containers that use the volume, as podman volume rm -f.
    manager
        .create_volume("forced", HashMap::new())
        .await
        .unwrap();
    let forced = h
        .create_with(
            &connection,
            "forced-user",
            &["sleep", "600"],
            mounts(vec![volume_mount("forced", "/data", &[], false)]),
        )
        .await;
    forced.start(false).await.unwrap();
    manager.remove_volume("forced", true).await.unwrap();
    assert_eq!(
        error_name(&manager.get_container("forced-user").await.unwrap_err()),
        "org.berth.Engine1.Error.NoSuchContainer"
    );

    // An image's declared volume: an anonymous volume, filled from the image, gone with
    // the container.
    let tar = h.rootfs_tar();
    let fd: std::os::fd::OwnedFd = std::fs::File::open(&tar).unwrap().into();
    let options = HashMap::from([
        ("Reference", Variant::from("localhost/declares:1")),
        ("Volumes", Variant::from(vec!["/seed".to_string()])),
    ]);
    manager
        .import_image(zbus::Fd::from(fd), options)
        .await
        .unwrap();
    let mut spec: HashMap<&str, Variant<'_>> = HashMap::new();
    spec.insert("Image", Variant::from("localhost/declares:1"));
    spec.insert("Name", Variant::from("declared"));
    spec.insert(
        "Command",
        Variant::from(vec!["sh".to_string(), "-c".into(), "cat /seed/file".into()]),
    );
    let declared =
        common::proxy_at(&connection, manager.create_container(spec).await.unwrap()).await;
    let inspect: serde_json::Value =
        serde_json::from_str(&declared.inspect(false).await.unwrap()).unwrap();
    let anonymous = inspect["Mounts"][0]["Name"].as_str().unwrap().to_string();
    assert_eq!(inspect["Mounts"][0]["Destination"], "/seed");
    assert_eq!(anonymous.len(), 64);
    assert!(volume_proxy(&connection, &anonymous)
        .await
        .anonymous()
        .await
        .unwrap());
    declared.start(false).await.unwrap();
    assert_eq!(declared.wait().await.unwrap(), 0);
    let data = mountpoint(&connection, &anonymous).await;
    assert_eq!(std::fs::read(data.join("file")).unwrap(), b"seeded\n");
    declared.remove(false).await.unwrap();
    assert_eq!(
        error_name(&manager.get_volume(&anonymous).await.unwrap_err()),
        "org.berth.Engine1.Error.NoSuchVolume"
    );
    assert!(!data.exists());

    // Prune takes what nothing uses and leaves what is used.
    manager
        .create_volume("spare", HashMap::new())
        .await
        .unwrap();
    manager.create_volume("kept", HashMap::new()).await.unwrap();
    let _keeper = h
        .create_with(
            &connection,
            "keeper",
            &["true"],
            mounts(vec![volume_mount("kept", "/data", &[], false)]),
        )
        .await;
    let pruned = manager.prune_volumes().await.unwrap();
    assert_eq!(pruned, vec!["spare".to_string()]);
    manager.get_volume("kept").await.unwrap();
}

/// A tar whose entry names and link targets are written raw, so hostile ones survive.
fn raw_tar(entries: &[(&str, tar::EntryType, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_mode(0o644);
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        if let Some(link) = link {
            let raw = &mut header.as_old_mut().linkname;
            raw[..link.len()].copy_from_slice(link.as_bytes());
        }
        if *kind == tar::EntryType::Char {
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
        }
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn fd_of(bytes: &[u8], dir: &Path, name: &str) -> zbus::Fd<'static> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let fd: std::os::fd::OwnedFd = std::fs::File::open(&path).unwrap().into();
    zbus::Fd::from(fd)
}

/// Every file under `dir` with its content and mode, for comparing trees.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            let relative = entry
                .path()
                .strip_prefix(dir)
                .unwrap()
                .display()
                .to_string();
            let content = if meta.is_file() {
                std::fs::read(entry.path()).unwrap()
            } else {
                Vec::new()
            };
            found.push((relative, content, meta.mode()));
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_round_trips_and_hostile_imports_are_refused() {
    let Some(mut h) = harness("volumes_export_import") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    manager
        .create_volume("source", HashMap::new())
        .await
        .unwrap();
    manager.create_volume("copy", HashMap::new()).await.unwrap();
    let (code, _) = run(
        &h,
        &connection,
        "filler",
        "mkdir -p /data/dir && echo one > /data/dir/a && echo two > /data/b && \
         chmod 600 /data/b && ln -s dir/a /data/link",
        vec![volume_mount("source", "/data", &[], false)],
    )
    .await;
    assert_eq!(code, 0);

    let archive = h.dir.path().join("export.tar");
    let fd: std::os::fd::OwnedFd = std::fs::File::create(&archive).unwrap().into();
    volume_proxy(&connection, "source")
        .await
        .export(zbus::Fd::from(fd))
        .await
        .unwrap();
    let fd: std::os::fd::OwnedFd = std::fs::File::open(&archive).unwrap().into();
    let copy = volume_proxy(&connection, "copy").await;
    copy.import(zbus::Fd::from(fd)).await.unwrap();
    let source_data = mountpoint(&connection, "source").await;
    let copy_data = mountpoint(&connection, "copy").await;
    assert_eq!(tree(&copy_data), tree(&source_data));
    assert!(!tree(&copy_data).is_empty());
    assert_eq!(
        std::fs::read_link(copy_data.join("link")).unwrap(),
        Path::new("dir/a")
    );

    let outside = h.dir.path().join("outside");
    let absolute = format!("{}/absolute-escape", h.dir.path().display());
    let outside_name = outside.display().to_string();
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        (
            "dot-dot",
            raw_tar(&[("../../../escape", tar::EntryType::Regular, None, b"x")]),
        ),
        (
            "absolute",
            raw_tar(&[(&absolute, tar::EntryType::Regular, None, b"x")]),
        ),
        (
            "symlink",
            raw_tar(&[
                ("link", tar::EntryType::Symlink, Some(&outside_name), b""),
                ("link/escaped", tar::EntryType::Regular, None, b"x"),
            ]),
        ),
        (
            "device",
            raw_tar(&[("null", tar::EntryType::Char, None, b"")]),
        ),
    ];
    std::fs::create_dir(&outside).unwrap();
    let before = tree(&copy_data);
    for (label, bytes) in hostile {
        let error = copy
            .import(fd_of(&bytes, h.dir.path(), label))
            .await
            .unwrap_err();
        assert_eq!(
            error_name(&error),
            "org.freedesktop.DBus.Error.InvalidArgs",
            "{label}"
        );
        assert_eq!(tree(&copy_data), before, "{label} changed the volume");
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!Path::new(&absolute).exists());
    assert!(!h.root().join("escape").exists() && !h.dir.path().join("escape").exists());
    let leftovers: Vec<_> = std::fs::read_dir(h.root().join("volumes/copy"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("_data")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mounts_refuse_writes_and_names_are_checked() {
    let Some(mut h) = harness("volumes_read_only") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let (code, _) = run(
        &h,
        &connection,
        "readonly",
        "echo x > /data/f",
        vec![volume_mount("locked", "/data", &[], true)],
    )
    .await;
    assert_ne!(code, 0, "a write to a read-only volume fails");
    let data = mountpoint(&connection, "locked").await;
    assert!(!data.join("f").exists());
    let (code, _) = run(
        &h,
        &connection,
        "writable",
        "echo x > /data/f",
        vec![volume_mount("locked", "/data", &[], false)],
    )
    .await;
    assert_eq!(code, 0);
    assert!(data.join("f").exists());

    for bad in ["-dash", "a/b", "..", ".hidden", "sp ace", &"x".repeat(129)] {
        let error = manager
            .create_volume(bad, HashMap::new())
            .await
            .unwrap_err();
        assert_eq!(
            error_name(&error),
            "org.freedesktop.DBus.Error.InvalidArgs",
            "{bad:?}"
        );
    }
    let mut spec: HashMap<&str, Variant<'_>> = HashMap::new();
    spec.insert("Rootfs", Variant::from(h.rootfs.display().to_string()));
    spec.insert("Command", Variant::from(vec!["true".to_string()]));
    spec.insert(
        "Mounts",
        Variant::from(vec![volume_mount("../escape", "/data", &[], false)]),
    );
    let error = manager.create_container(spec).await.unwrap_err();
    assert_eq!(error_name(&error), "org.freedesktop.DBus.Error.InvalidArgs");

    manager.create_volume("dup", HashMap::new()).await.unwrap();
    let error = manager
        .create_volume("dup", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(error_name(&error), "org.berth.Engine1.Error.NameInUse");
    let generated = manager.create_volume("", HashMap::new()).await.unwrap();
    assert!(generated.as_str().starts_with("/org/berth/Engine1/volume/"));
}

/// Every volume row has its directory and every directory its row; no staging leftovers.
async fn assert_consistent(h: &Harness, connection: &zbus::Connection) -> usize {
    let manager = ManagerProxy::new(connection).await.unwrap();
    let rows: Vec<String> = manager
        .list_volumes()
        .await
        .unwrap()
        .into_iter()
        .map(|(name, mountpoint, _)| {
            assert!(Path::new(&mountpoint).is_dir(), "{name} has no directory");
            name
        })
        .collect();
    let mut dirs: Vec<String> = std::fs::read_dir(h.root().join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut sorted = rows.clone();
    sorted.sort();
    assert_eq!(dirs, sorted, "directories and rows differ");
    rows.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berthd_killed_during_creates_and_removes_leaves_no_half_made_volume() {
    let Some(mut h) = harness("volumes_crash") else {
        return;
    };
    for round in 0..4u64 {
        h.start_berthd(&[]);
        let connection = h.connection().await;
        assert_consistent(&h, &connection).await;
        let churn = {
            let connection = connection.clone();
            tokio::spawn(async move {
                let manager = ManagerProxy::new(&connection).await.unwrap();
                for i in 0..500 {
                    let name = format!("crash{round}-{i}");
                    if manager.create_volume(&name, HashMap::new()).await.is_err() {
                        return;
                    }
                    if i % 2 == 1 {
                        let previous = format!("crash{round}-{}", i - 1);
                        if manager.remove_volume(&previous, false).await.is_err() {
                            return;
                        }
                    }
                }
            })
        };
        // Once this round's churn has made a volume, kill at a moment that differs by round.
        let manager = ManagerProxy::new(&connection).await.unwrap();
        let prefix = format!("crash{round}-");
        let started = std::time::Instant::now();
        while !manager
            .list_volumes()
            .await
            .unwrap()
            .iter()
            .any(|(name, ..)| name.starts_with(&prefix))
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no volume made"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20 + 37 * round)).await;
        assert!(
            !churn.is_finished(),
            "the kill lands while volumes are being made"
        );
        let berthd = h.berthd_pid().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(berthd as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        h.kill_berthd();
        let _ = churn.await;
        h.start_berthd(&[]);
        let connection = h.connection().await;
        let count = assert_consistent(&h, &connection).await;
        assert!(count > 0, "round {round}: the churn made volumes");
        h.kill_berthd();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berthctl_volume_commands_and_run_v_work_as_podmans() {
    let Some(mut h) = harness("volumes_berthctl") else {
        return;
    };
    h.start_berthd(&[]);
    let ok = |output: std::process::Output| {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(
        ok(h.berthctl(&["volume", "create", "--label", "app=db", "web-data"])).trim(),
        "web-data"
    );
    let rootfs = h.rootfs.display().to_string();
    let out = ok(h.berthctl(&[
        "run",
        "--rm",
        "--rootfs",
        &rootfs,
        "-v",
        "web-data:/srv",
        "sh",
        "-c",
        "echo saved > /srv/x; cat /srv/x",
    ]));
    assert_eq!(out, "saved\n");
    let refused = h.berthctl(&[
        "run",
        "--rm",
        "--rootfs",
        &rootfs,
        "-v",
        "web-data:/srv:ro",
        "sh",
        "-c",
        "echo again > /srv/x",
    ]);
    assert!(!refused.status.success(), "ro is honoured");
    // A host directory, as podman's -v /host:/path.
    let host = h.dir.path().join("host-dir");
    std::fs::create_dir(&host).unwrap();
    let bind = format!("{}:/mnt", host.display());
    ok(h.berthctl(&[
        "run",
        "--rm",
        "--rootfs",
        &rootfs,
        "-v",
        &bind,
        "sh",
        "-c",
        "echo bound > /mnt/y",
    ]));
    assert_eq!(std::fs::read_to_string(host.join("y")).unwrap(), "bound\n");

    assert!(ok(h.berthctl(&["volume", "ls"])).contains("web-data"));
    assert_eq!(ok(h.berthctl(&["volume", "ls", "-q"])), "web-data\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(h.berthctl(&["volume", "inspect", "web-data"]))).unwrap();
    assert_eq!(inspect[0]["Name"], "web-data");
    assert_eq!(inspect[0]["Driver"], "local");
    assert_eq!(inspect[0]["Labels"]["app"], "db");

    let archive = h.dir.path().join("web.tar");
    let archive_name = archive.display().to_string();
    ok(h.berthctl(&["volume", "export", "-o", &archive_name, "web-data"]));
    ok(h.berthctl(&["volume", "create", "restored"]));
    ok(h.berthctl(&["volume", "import", "restored", &archive_name]));
    let restored = h.root().join("volumes/restored/_data/x");
    assert_eq!(std::fs::read_to_string(restored).unwrap(), "saved\n");

    ok(h.berthctl(&["volume", "rm", "restored"]));
    assert_eq!(ok(h.berthctl(&["volume", "prune"])), "web-data\n");
    assert_eq!(ok(h.berthctl(&["volume", "ls", "-q"])), "");
    let missing = h.berthctl(&["volume", "rm", "web-data"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NoSuchVolume"));
}

/// `dbus/org.berth.Engine1.Volume.xml` equals the live introspection;
/// `BERTH_UPDATE_XML=1` rewrites it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_volume_introspection_xml_equals_the_live_interface() {
    let Some(mut h) = harness("volumes_xml") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let path = manager.create_volume("xml", HashMap::new()).await.unwrap();
    common::assert_shipped_introspection(&h, path.as_str(), "org.berth.Engine1.Volume");
}
