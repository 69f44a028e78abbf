//! End to end: images imported from podman's own archives, containers from them, export.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth::cli::proxy::{ImageProxy, ManagerProxy};
use common::{error_name, harness, Harness};
use zbus::Variant;

/// podman's archives of one busybox image: (rootfs tar, OCI archive, docker-archive).
fn podman_archives(h: &Harness) -> Option<(PathBuf, PathBuf, PathBuf)> {
    if Command::new("podman").arg("--version").output().is_err() {
        common::skip(
            "image tests",
            "podman is not installed (scripts/test installs it)",
        );
        return None;
    }
    let dir = h.dir.path();
    let rootfs_tar = h.rootfs_tar();
    let podman = |args: &[&str]| {
        let output = Command::new("podman")
            .arg(format!("--root={}", dir.join("podman").display()))
            .arg(format!("--runroot={}", dir.join("podman-run").display()))
            .args([
                "--storage-driver=vfs",
                "--cgroup-manager=cgroupfs",
                "--events-backend=file",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let rootfs = rootfs_tar.display().to_string();
    podman(&[
        "import",
        "--change",
        r#"CMD ["/bin/sh","-c","echo default command"]"#,
        &rootfs,
        "localhost/bb:1",
    ]);
    let oci = dir.join("oci.tar");
    let docker = dir.join("docker.tar");
    podman(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        &oci.display().to_string(),
        "localhost/bb:1",
    ]);
    podman(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        &docker.display().to_string(),
        "localhost/bb:1",
    ]);
    Some((rootfs_tar, oci, docker))
}

async fn import(
    manager: &ManagerProxy<'_>,
    file: &Path,
    options: HashMap<&str, Variant<'_>>,
) -> zbus::Result<zbus::OwnedObjectPath> {
    let fd: std::os::fd::OwnedFd = std::fs::File::open(file).unwrap().into();
    manager.import_image(zbus::Fd::from(fd), options).await
}

fn layer_dirs(h: &Harness) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(h.root().join("layers"))
        .map(|e| {
            e.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read_all(fd: std::os::fd::OwnedFd) -> Vec<u8> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut bytes).unwrap();
    bytes
}

/// Archives podman wrote are imported with shared layers, run, exported, and removed when unused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_archives_import_share_layers_run_export_and_are_removed_when_unused() {
    let Some(mut h) = harness("podman_archives") else {
        return;
    };
    let Some((_, oci, docker)) = podman_archives(&h) else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();

    // 1. Both archives import; the second reuses the layer.
    let from_oci = import(&manager, &oci, HashMap::new()).await.unwrap();
    let layers = layer_dirs(&h);
    assert_eq!(layers.len(), 1, "{layers:?}");
    let busybox = h.root().join("layers").join(&layers[0]).join("bin/busybox");
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&busybox);
    let from_docker = import(&manager, &docker, HashMap::new()).await.unwrap();
    assert_eq!(from_oci, from_docker, "the same image");
    assert_eq!(layer_dirs(&h), layers, "no second copy of the layer");
    assert_eq!(inode(&busybox), before);
    let images = manager.list_images().await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].1, "localhost/bb:1");
    assert!(images[0].2 > 1 << 20, "size {}", images[0].2);
    let image = ImageProxy::builder(&connection)
        .path(from_oci.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(image.names().await.unwrap(), ["localhost/bb:1"]);
    let tree = String::from_utf8(h.busctl(&["tree", "org.berth.Engine1"]).stdout).unwrap();
    assert!(
        tree.contains(&format!("/org/berth/Engine1/image/{}", images[0].0)),
        "{tree}"
    );

    // 2. Its default command and another one; Export carries what the container wrote.
    let rootfs = h.rootfs.display().to_string();
    let _ = rootfs;
    let run = h.berthctl(&["run", "--rm", "bb:1"]);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "default command\n");
    let run = h.berthctl(&[
        "run",
        "--rm",
        "localhost/bb:1",
        "/bin/sh",
        "-c",
        "echo other; exit 2",
    ]);
    assert_eq!(
        (
            run.status.code(),
            String::from_utf8_lossy(&run.stdout).to_string()
        ),
        (Some(2), "other\n".to_string())
    );

    // 3. Two containers share the layer and do not see each other's writes.
    let one = h.berthctl(&[
        "run",
        "--name",
        "one",
        "bb:1",
        "/bin/sh",
        "-c",
        "echo one > /mine; ls /theirs 2>&1",
    ]);
    let two = h.berthctl(&[
        "run",
        "--name",
        "two",
        "bb:1",
        "/bin/sh",
        "-c",
        "echo two > /theirs; cat /mine 2>&1",
    ]);
    assert!(
        String::from_utf8_lossy(&one.stdout).contains("No such file"),
        "{:?}",
        one
    );
    assert!(
        String::from_utf8_lossy(&two.stdout).contains("No such file"),
        "{:?}",
        two
    );

    let (reader, writer) = std::io::pipe().unwrap();
    let collector = std::thread::spawn(move || read_all(reader.into()));
    let container = common::container_proxy(&connection, "one").await;
    container
        .export(zbus::Fd::from(std::os::fd::OwnedFd::from(writer)))
        .await
        .unwrap();
    let tar = collector.join().unwrap();
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("./") == "bin/busybox"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.trim_start_matches("./") == "mine"),
        "{names:?}"
    );

    // 5. In use → ImageInUse; unused → removed with its layer.
    let error = manager.remove_image("bb:1", false).await.unwrap_err();
    assert_eq!(error_name(&error), "org.berth.Engine1.Error.ImageInUse");
    for name in ["one", "two"] {
        manager.remove_container(name, false).await.unwrap();
    }
    manager.remove_image("bb:1", false).await.unwrap();
    assert!(manager.list_images().await.unwrap().is_empty());
    assert!(layer_dirs(&h).is_empty(), "{:?}", layer_dirs(&h));
    assert!(h.mounts().is_empty());
}

/// Through the bus, a hostile archive is refused with InvalidArgs naming
/// the problem, and neither the host nor the store changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_are_refused_and_change_nothing() {
    let Some(mut h) = harness("hostile_archives") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let victim = h.dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();

    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    let name = "../../../victim";
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(5);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    builder.append(&header, &b"pwned"[..]).unwrap();
    let traversal = h.dir.path().join("traversal.tar");
    std::fs::write(&traversal, builder.into_inner().unwrap()).unwrap();

    let zeros = h.dir.path().join("zeros.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&zeros).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros").unwrap();
    header.set_size(100 << 20);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    builder
        .append(&header, std::io::Read::take(std::io::repeat(0), 100 << 20))
        .unwrap();
    builder.finish().unwrap();

    // A symlink to the host, then a write through it; a hard link to a host file.
    let entry = |builder: &mut tar::Builder<Vec<u8>>,
                 name: &str,
                 kind: tar::EntryType,
                 link: &str,
                 data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    };
    let host_dir = h.dir.path().display().to_string();
    let mut builder = tar::Builder::new(Vec::new());
    entry(
        &mut builder,
        "escape",
        tar::EntryType::Symlink,
        &host_dir,
        b"",
    );
    entry(
        &mut builder,
        "escape/victim",
        tar::EntryType::Regular,
        "",
        b"pwned",
    );
    let symlink_escape = h.dir.path().join("symlink.tar");
    std::fs::write(&symlink_escape, builder.into_inner().unwrap()).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    entry(
        &mut builder,
        "stolen",
        tar::EntryType::Link,
        &victim.display().to_string(),
        b"",
    );
    let hard_link = h.dir.path().join("hardlink.tar");
    std::fs::write(&hard_link, builder.into_inner().unwrap()).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    entry(
        &mut builder,
        "big",
        tar::EntryType::Regular,
        "",
        &[7u8; 4096],
    );
    let truncated = h.dir.path().join("truncated.tar");
    std::fs::write(&truncated, &builder.into_inner().unwrap()[..1500]).unwrap();

    let cases: Vec<(PathBuf, HashMap<&str, Variant<'_>>, &str)> = vec![
        (traversal, HashMap::new(), "leaves the layer"),
        (symlink_escape, HashMap::new(), "through the symlink"),
        (hard_link, HashMap::new(), "hard link"),
        (truncated, HashMap::new(), "not a valid tar stream"),
        (
            zeros,
            HashMap::from([("MaxSize", Variant::from(1u64 << 20))]),
            "larger than",
        ),
    ];
    for (file, options, says) in cases {
        let error = import(&manager, &file, options).await.unwrap_err();
        assert_eq!(
            error_name(&error),
            "org.freedesktop.DBus.Error.InvalidArgs",
            "{error:?}"
        );
        assert!(format!("{error:?}").contains(says), "{error:?}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(layer_dirs(&h).is_empty(), "{:?}", layer_dirs(&h));
    assert!(manager.list_images().await.unwrap().is_empty());
}

/// Where overlayfs is not wanted (or cannot mount), the copy-based storage runs the same
/// image: the container sees the image, keeps its writes across a restart, and nothing is
/// mounted on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_based_storage_runs_images_without_mounts() {
    let Some(mut h) = harness("copy_based_storage") else {
        return;
    };
    h.start_berthd(&["--storage-driver=vfs"]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let tar = h.rootfs_tar();
    import(
        &manager,
        &tar,
        HashMap::from([("Reference", Variant::from("localhost/copy"))]),
    )
    .await
    .unwrap();
    let run = h.berthctl(&[
        "run",
        "--name",
        "c",
        "copy",
        "/bin/sh",
        "-c",
        "echo kept > /state; cat /etc/passwd | head -1",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "root:x:0:0:root:/root:/bin/sh\n",
        "{run:?}"
    );
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    let again = h.berthctl(&["start", "c"]);
    assert!(again.status.success(), "{again:?}");
    let wait = h.berthctl(&["wait", "c"]);
    assert_eq!(wait.status.code(), Some(0));
    let export = Command::new(common::BERTHCTL)
        .arg(format!("--bus={}", h.address))
        .args(["export", "c"])
        .output()
        .unwrap();
    let names: Vec<String> = tar::Archive::new(&export.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.trim_start_matches("./") == "state"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("copied")),
        "berth's own marker leaked: {names:?}"
    );
    let driver: String = manager.inner().get_property("StorageDriver").await.unwrap();
    assert_eq!(driver, "vfs");
}
