//! Where things are: the engine's directories under `--root` and `--runroot`, and one
//! [`ContainerPaths`] per container that every user of a container's files goes through
//! (the README's "Files" section lists the same layout).

use std::path::{Path, PathBuf};

use crate::monitor::process::CHECKPOINT_MARKER;

/// The engine's directories.
#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
    runroot: PathBuf,
}

impl Paths {
    pub fn new(root: &Path, runroot: &Path) -> Paths {
        Paths {
            root: root.to_path_buf(),
            runroot: runroot.to_path_buf(),
        }
    }

    /// The paths of container `id`.
    pub fn container(&self, id: &str) -> ContainerPaths {
        ContainerPaths {
            id: id.to_string(),
            dir: self.containers_dir().join(id),
            bundle: self.bundles_dir().join(id),
            runroot: self.runroot.clone(),
        }
    }

    /// `--root/containers`: one directory per container, removed with it.
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// `--runroot/containers`: the OCI bundles.
    pub fn bundles_dir(&self) -> PathBuf {
        self.runroot.join("containers")
    }

    /// runc's `--root`: one entry per container the runtime knows.
    pub fn runtime_root(&self) -> PathBuf {
        self.runroot.join("runtime")
    }

    /// The monitors' exit files: `<id>` for a container, `<id>.<session>` for an exec session.
    pub fn exits_dir(&self) -> PathBuf {
        self.runroot.join("exits")
    }

    /// The health/notify sidecars' state files.
    pub fn sidecar_dir(&self) -> PathBuf {
        self.runroot.join("sidecar")
    }

    /// The directories the engine needs before anything runs.
    pub fn dirs_to_create(&self) -> [PathBuf; 4] {
        [
            self.containers_dir(),
            self.exits_dir(),
            self.runtime_root(),
            self.bundles_dir(),
        ]
    }
}

/// Every file of one container, on the host.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    id: String,
    dir: PathBuf,
    bundle: PathBuf,
    runroot: PathBuf,
}

impl ContainerPaths {
    /// `--root/containers/<id>`: the container's own directory (storage, log, artifacts,
    /// checkpoints, name-resolution files), removed with it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The overlay's upper (the container's changes), work and merged (the mounted rootfs)
    /// directories.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    pub fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }

    /// The `k8s-file` log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("ctr.log")
    }

    pub fn artifacts(&self) -> PathBuf {
        self.dir.join("artifacts")
    }

    /// The last checkpoint's CRIU images, and CRIU's work directories.
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    pub fn checkpoint_work(&self) -> PathBuf {
        self.dir.join("checkpoint-work")
    }

    pub fn restore_work(&self) -> PathBuf {
        self.dir.join("restore-work")
    }

    /// A name-resolution file written for the container (`hosts`, `resolv.conf`,
    /// `hostname`), bind-mounted into it.
    pub fn network_file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `--runroot/containers/<id>`: the OCI bundle (config.json) and the monitor's files.
    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    /// runc's pid file of the main process.
    pub fn pid_file(&self) -> PathBuf {
        self.bundle.join("pid")
    }

    /// Present while a checkpoint dump that stops the process is under way: the monitor
    /// then records the exit as a checkpoint, not a death.
    pub fn checkpoint_marker(&self) -> PathBuf {
        self.bundle.join(CHECKPOINT_MARKER)
    }

    /// The OCI process of an exec session, read by `runc exec`.
    pub fn exec_process(&self, session: &str) -> PathBuf {
        self.bundle.join(format!("exec-{session}.json"))
    }

    /// The exit file of the container's main process.
    pub fn exit_file(&self) -> PathBuf {
        self.runroot.join("exits").join(&self.id)
    }

    /// The exit file of an exec session.
    pub fn exec_exit_file(&self, session: &str) -> PathBuf {
        self.runroot
            .join("exits")
            .join(format!("{}.{session}", self.id))
    }

    /// The network namespace of the current run.
    pub fn netns(&self) -> PathBuf {
        self.runroot
            .join("netns")
            .join(format!("netns-{}", self.id))
    }

    /// The sidecar's state file.
    pub fn sidecar_state(&self) -> PathBuf {
        self.runroot.join("sidecar").join(&self.id)
    }

    /// The container's cgroup, relative to a hierarchy's mount: a scope in `machine.slice`
    /// with runc's systemd driver, `berth/<id>` with its cgroupfs driver.
    pub fn cgroup(&self, systemd: bool) -> String {
        if systemd {
            format!("machine.slice/berth-{}.scope", self.id)
        } else {
            format!("berth/{}", self.id)
        }
    }

    /// The OCI spec's `cgroupsPath` for that cgroup: `slice:prefix:name` for the systemd
    /// driver, a path for cgroupfs.
    pub fn cgroups_path(&self, systemd: bool) -> String {
        if systemd {
            format!("machine.slice:berth:{}", self.id)
        } else {
            format!("/{}", self.cgroup(false))
        }
    }

    /// The container's OOM counter: `memory.events` on cgroup v2, the memory controller's
    /// `memory.oom_control` on v1.
    pub fn oom_file(&self, systemd: bool) -> PathBuf {
        let group = self.cgroup(systemd);
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            PathBuf::from(format!("/sys/fs/cgroup/{group}/memory.events"))
        } else {
            PathBuf::from(format!("/sys/fs/cgroup/memory/{group}/memory.oom_control"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containers_files_sit_under_root_and_runroot_by_its_id() {
        let paths = Paths::new(Path::new("/r"), Path::new("/run/b"));
        let container = paths.container("abc");
        assert_eq!(container.dir(), Path::new("/r/containers/abc"));
        assert_eq!(container.merged(), Path::new("/r/containers/abc/merged"));
        assert_eq!(container.log(), Path::new("/r/containers/abc/ctr.log"));
        assert_eq!(container.bundle(), Path::new("/run/b/containers/abc"));
        assert_eq!(container.exit_file(), paths.exits_dir().join("abc"));
        assert_eq!(
            container.exec_exit_file("s1"),
            paths.exits_dir().join("abc.s1")
        );
        assert_eq!(container.netns(), Path::new("/run/b/netns/netns-abc"));
        assert_eq!(container.sidecar_state(), paths.sidecar_dir().join("abc"));
        assert_eq!(container.cgroups_path(false), "/berth/abc");
        assert_eq!(container.cgroups_path(true), "machine.slice:berth:abc");
        assert_eq!(container.cgroup(true), "machine.slice/berth-abc.scope");
    }
}
