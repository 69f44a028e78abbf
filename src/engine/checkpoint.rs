//! Checkpoint and restore with CRIU, through `runc checkpoint` and `runc restore`.
//!
//! A checkpoint that stops the container is not a death: berthd leaves a marker in the bundle
//! while runc runs, the monitor writes `checkpointed` into the exit record, and the exit is
//! recorded as `checkpoint` (no `died`, no `Exited`, no restart policy) even if berthd was
//! away when it happened. A restore is a new run: a new monitor runs `runc restore --detach`
//! and adopts the process, which keeps its pid inside the container's namespace.

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::lifecycle::{create_in_runtime, Launch, RunStdio};
use super::{blocking, Caller, Engine, EngineError, Locked, Result, Verb};
use crate::clock::now_micros;
use crate::monitor::process::RestoreArgs;
use crate::runtime::CheckpointOptions;

/// How long the process may take to go once CRIU has dumped it.
const EXIT_AFTER_DUMP: Duration = Duration::from_secs(30);

/// `Checkpoint` options, as the Container interface's `Checkpoint` documents them.
#[derive(Debug, Default)]
pub struct CheckpointRequest {
    /// Keep CRIU's work files and log.
    pub keep: bool,
    /// Leave the container running after the dump.
    pub keep_running: bool,
    pub tcp_established: bool,
    /// Also write the checkpoint as a tar into this descriptor.
    pub export: Option<OwnedFd>,
}

/// `Restore` options.
#[derive(Debug, Default)]
pub struct RestoreRequest {
    pub keep: bool,
    pub tcp_established: bool,
    /// A checkpoint tar made by `Checkpoint` with `Export`, instead of the container's own.
    pub import: Option<OwnedFd>,
}

/// Why CRIU cannot checkpoint here, if it cannot: not installed, or `criu check` fails
/// (Debian 12's CRIU on newer kernels, for one).
pub fn criu_problem() -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let Some(criu) = std::env::split_paths(&path)
        .map(|dir| dir.join("criu"))
        .find(|candidate| candidate.is_file())
    else {
        return Some("CRIU is not installed (no criu in PATH)".into());
    };
    match std::process::Command::new(&criu)
        .arg("check")
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(output) if output.status.success() => None,
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stderr).to_string()
                + &String::from_utf8_lossy(&output.stdout);
            let reason = text
                .lines()
                .rev()
                .find(|line| line.contains("Error") || line.contains("fail"))
                .or_else(|| text.lines().last())
                .unwrap_or("no output")
                .trim()
                .to_string();
            Some(format!("{} check fails here: {reason}", criu.display()))
        }
        Err(error) => Some(format!("cannot run {}: {error}", criu.display())),
    }
}

impl Engine {
    /// Dumps a running container with CRIU; it stops unless `keep_running`.
    pub async fn checkpoint(
        &self,
        caller: Caller,
        id: &str,
        request: CheckpointRequest,
    ) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        locked.check(Verb::Checkpoint)?;
        let status = locked.status();
        if locked.config().terminal {
            return Err(EngineError::NotSupported(
                "checkpoint of a container with a terminal is not supported".into(),
            ));
        }
        if let Some(reason) = blocking(|| Ok(criu_problem())).await? {
            return Err(EngineError::NotSupported(reason));
        }
        let paths = locked.paths();
        let (image, work, marker) = (
            paths.checkpoint(),
            paths.checkpoint_work(),
            paths.checkpoint_marker(),
        );
        let options = CheckpointOptions {
            image_path: image.clone(),
            work_path: work.clone(),
            leave_running: request.keep_running,
            tcp_established: request.tcp_established,
        };
        let runtime = self.inner().backends.runtime.clone();
        let container = id.to_string();
        let keep_running = request.keep_running;
        blocking(move || {
            fresh_dir(&options.image_path)?;
            fresh_dir(&options.work_path)?;
            if !keep_running {
                std::fs::write(&marker, b"")
                    .map_err(|e| EngineError::Internal(format!("{}: {e}", marker.display())))?;
            }
            runtime.checkpoint(&container, &options).map_err(|error| {
                let _ = std::fs::remove_file(&marker);
                EngineError::Runtime(format!(
                    "{error}{}",
                    criu_log_errors(&options.work_path.join("dump.log"))
                ))
            })
        })
        .await?;
        crate::failpoint::hit("checkpoint.after-dump");
        if !request.keep {
            let _ = blocking(move || Ok(std::fs::remove_dir_all(&work))).await;
        }
        // The checkpoint is on record before its export is written: a slow or vanished
        // reader cannot leave a dumped container looking alive.
        if request.keep_running {
            let mut status = locked.status();
            status.checkpointed_at = now_micros();
            locked
                .commit(status, vec![super::exit::checkpoint_event(&locked, caller)])
                .await?;
        } else {
            // CRIU killed the process after the dump; its monitor marks the exit a
            // checkpoint.
            if !super::exit::exit_file_written(&locked.entry, status.pid, EXIT_AFTER_DUMP).await {
                return Err(EngineError::Runtime(format!(
                    "container {id} was checkpointed but its process did not exit"
                )));
            }
            super::exit::record_exit_locked(&locked, caller, Vec::new()).await?;
        }
        if let Some(fd) = request.export {
            blocking(move || write_tar(&image, std::fs::File::from(fd)))
                .await
                .map_err(|error| {
                    EngineError::Runtime(format!(
                        "the container was checkpointed, but its export failed: {error}"
                    ))
                })?;
        }
        Ok(())
    }

    /// Restores a stopped container from its last checkpoint, or from an imported one.
    pub async fn restore(&self, caller: Caller, id: &str, request: RestoreRequest) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        locked.check(Verb::Restore)?;
        if let Some(reason) = blocking(|| Ok(criu_problem())).await? {
            return Err(EngineError::NotSupported(reason));
        }
        let paths = locked.paths();
        let (image, work) = (paths.checkpoint(), paths.restore_work());
        {
            let (image, work) = (image.clone(), work.clone());
            let import = request.import;
            blocking(move || {
                if let Some(fd) = import {
                    fresh_dir(&image)?;
                    read_tar(std::fs::File::from(fd), &image)?;
                }
                if !image.join("inventory.img").is_file() {
                    return Err(EngineError::InvalidArgument(
                        "there is no checkpoint to restore: checkpoint first, or pass Import"
                            .into(),
                    ));
                }
                fresh_dir(&work)
            })
            .await?;
        }
        let args = RestoreArgs {
            image_path: image,
            work_path: work.clone(),
            tcp_established: request.tcp_established,
        };
        let restored = restore_locked(&locked, caller, args).await;
        if !request.keep && restored.is_ok() {
            let _ = blocking(move || Ok(std::fs::remove_dir_all(&work))).await;
        }
        restored
    }
}

async fn restore_locked(locked: &Locked<'_>, caller: Caller, args: RestoreArgs) -> Result<()> {
    let work = args.work_path.clone();
    match create_in_runtime(locked, caller, Launch::Restore(args), RunStdio::default()).await {
        Err(EngineError::Runtime(message)) => {
            let log = blocking(move || Ok(criu_log_errors(&work.join("restore.log")))).await?;
            Err(EngineError::Runtime(format!("{message}{log}")))
        }
        other => other,
    }
}

/// An empty directory at `path` (whatever was there is removed).
fn fresh_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(EngineError::Internal(format!(
                "remove {}: {error}",
                path.display()
            )))
        }
    }
    std::fs::create_dir_all(path)
        .map_err(|e| EngineError::Internal(format!("create {}: {e}", path.display())))
}

/// The error lines of a CRIU log, to append to runc's terse message.
fn criu_log_errors(log: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(log) else {
        return String::new();
    };
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("Error"))
        // CRIU's complaint about raising its own rlimit is harmless and always there.
        .filter(|line| !line.contains("RLIMIT_NOFILE"))
        .collect();
    if errors.is_empty() {
        return String::new();
    }
    let tail = &errors[errors.len().saturating_sub(3)..];
    format!(" (CRIU: {})", tail.join("; "))
}

/// Writes the checkpoint directory as a tar stream (regular files and directories only).
fn write_tar(dir: &Path, destination: std::fs::File) -> Result<()> {
    let mut builder = tar::Builder::new(destination);
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", dir)
        .and_then(|()| builder.into_inner().map(drop))
        .map_err(|e| EngineError::Runtime(format!("export the checkpoint: {e}")))
}

/// Unpacks a checkpoint tar into the empty directory `dir`. Archives are hostile: only
/// regular files and directories with plain relative names are accepted, so nothing can
/// land outside `dir` (it holds no symlink to follow).
fn read_tar(source: std::fs::File, dir: &Path) -> Result<()> {
    let invalid = |message: String| EngineError::InvalidArgument(format!("Import: {message}"));
    let mut archive = tar::Archive::new(source);
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| invalid(e.to_string()))?
            .into_owned();
        let mut relative = PathBuf::new();
        for component in name.components() {
            match component {
                Component::Normal(part) => relative.push(part),
                Component::CurDir => {}
                _ => {
                    return Err(invalid(format!(
                        "entry {} leaves the checkpoint",
                        name.display()
                    )))
                }
            }
        }
        let target = dir.join(&relative);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target)
                .map_err(|e| EngineError::Internal(format!("{}: {e}", target.display())))?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| EngineError::Internal(format!("{}: {e}", parent.display())))?;
            }
            let mut file = std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&target)
                .map_err(|e| invalid(format!("{}: {e}", name.display())))?;
            std::io::copy(&mut entry, &mut file)
                .map_err(|e| invalid(format!("{}: {e}", name.display())))?;
        } else {
            return Err(invalid(format!(
                "entry {} is neither a file nor a directory",
                name.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_tar_round_trips_and_hostile_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("image");
        std::fs::create_dir_all(source.join("sub")).unwrap();
        std::fs::write(source.join("inventory.img"), b"inv").unwrap();
        std::fs::write(source.join("sub/pages-1.img"), b"pages").unwrap();
        let tar_path = dir.path().join("c.tar");
        write_tar(&source, std::fs::File::create(&tar_path).unwrap()).unwrap();
        let target = dir.path().join("restored");
        std::fs::create_dir(&target).unwrap();
        read_tar(std::fs::File::open(&tar_path).unwrap(), &target).unwrap();
        assert_eq!(
            std::fs::read(target.join("sub/pages-1.img")).unwrap(),
            b"pages"
        );

        // A symlink entry, and a name climbing out.
        let hostile = dir.path().join("hostile.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&hostile).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, "link", "/etc").unwrap();
        builder.finish().unwrap();
        let target = dir.path().join("refused");
        std::fs::create_dir(&target).unwrap();
        let error = read_tar(std::fs::File::open(&hostile).unwrap(), &target).unwrap_err();
        assert!(matches!(error, EngineError::InvalidArgument(_)), "{error}");
        assert!(!target.join("link").exists());
    }
}
