//! The lifecycle verbs: Init, Start, Stop, Restart, Kill, Pause, Unpause, Wait; and what
//! follows an exit (`AutoRemove`, the restart policy).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::exit::{await_exit_or_kill, send_signal};
use super::{
    blocking, event, Caller, ContainerStatus, Engine, EngineError, Locked, Result, State, Verb,
};
use crate::clock::now_micros;
use crate::monitor::launcher::{AttachEnds, LaunchRequest};
use crate::runtime::signal::parse_signal;
use crate::runtime::spec::{self, SpecInput};
use crate::storage::users;

impl Engine {
    pub async fn init(&self, caller: Caller, id: &str) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        init_locked(&locked, caller).await
    }

    pub async fn start(&self, caller: Caller, id: &str, recursive: bool) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        start_locked(&locked, caller, recursive).await
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout` seconds. The lock is
    /// not held while waiting, so `Kill`, `Inspect` and properties answer during a stop.
    pub async fn stop(&self, caller: Caller, id: &str, timeout: u32) -> Result<()> {
        let inner = self.inner().clone();
        let (entry, pid) = {
            let locked = inner.lock(id).await?;
            let Some(pid) = begin_stop(&locked).await? else {
                return Ok(());
            };
            (locked.entry.clone(), pid)
        };
        await_exit_or_kill(&self.inner().backends, &entry, pid, timeout).await?;
        match inner.lock(id).await {
            Ok(locked) => finish_stop(&locked, caller, true).await,
            // The exit watcher recorded the exit first and AutoRemove took the container.
            Err(EngineError::Removed(_) | EngineError::NoSuchContainer(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Restarts a container. As with `Stop`, the lock is not held while the stop waits for
    /// the process, so `Kill` and `Remove(force)` get through during a long restart; if one
    /// of them took the container meanwhile, the restart answers what happened to it.
    pub async fn restart(&self, caller: Caller, id: &str, timeout: u32) -> Result<()> {
        let inner = self.inner().clone();
        let waited = {
            let locked = inner.lock(id).await?;
            let state = locked.check(Verb::Restart)?;
            if !Verb::Stop.accepts(state) {
                return restart_locked(&locked, caller, timeout).await;
            }
            let restarting = Restarting::mark(locked.entry.clone());
            begin_stop(&locked).await?.map(|pid| (restarting, pid))
        };
        if let Some((restarting, pid)) = &waited {
            await_exit_or_kill(&inner.backends, &restarting.0, *pid, timeout).await?;
        }
        let locked = inner.lock(id).await?;
        // Held until the start is done: the exit it caused is not followed by AutoRemove.
        let _restarting = waited;
        finish_stop(&locked, caller, false).await?;
        crate::failpoint::hit("restart.after-stop");
        if !Verb::Start.accepts(locked.status().state) {
            return Err(locked.refused(Verb::Restart));
        }
        start_locked(&locked, caller, false).await?;
        locked
            .record(vec![event("restart", locked.config(), caller, &[])])
            .await
    }

    pub async fn kill(&self, caller: Caller, id: &str, signal: &str) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        kill_locked(&locked, caller, signal).await
    }

    pub async fn pause(&self, caller: Caller, id: &str) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        pause_locked(&locked, caller).await
    }

    pub async fn unpause(&self, caller: Caller, id: &str) -> Result<()> {
        let locked = self.inner().lock(id).await?;
        unpause_locked(&locked, caller).await
    }

    /// Replies once the container is not running (at once if it is not) and the cleanup of
    /// its exit is done, so that a verb sent right after the reply finds it `exited`:
    /// event-driven, holding no lock. Returns the exit code.
    ///
    /// Records nothing: `Wait` is open to every caller, and a durable event per call would
    /// let anyone grow the database without bound.
    pub async fn wait(&self, id: &str) -> Result<i32> {
        let entry = self.inner().entry(id)?;
        let mut receiver = entry.status.subscribe();
        receiver
            .wait_for(ContainerStatus::is_settled)
            .await
            .map(|status| status.exit_code)
            .map_err(|_| EngineError::Removed(id.to_string()))
    }
}

/// Marks a container as being restarted for as long as it lives.
struct Restarting(std::sync::Arc<super::Entry>);

impl Restarting {
    fn mark(entry: std::sync::Arc<super::Entry>) -> Restarting {
        entry
            .restarting
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Restarting(entry)
    }
}

impl Drop for Restarting {
    fn drop(&mut self) {
        self.0
            .restarting
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Dependencies must be running; `recursive` starts them first.
pub(crate) async fn check_dependencies(
    locked: &Locked<'_>,
    caller: Caller,
    recursive: bool,
) -> Result<()> {
    for dependency in &locked.config().dependencies {
        let entry = locked.engine().entry(dependency)?;
        if entry.status().state == State::Running {
            continue;
        }
        if !recursive {
            return Err(EngineError::DependencyNotRunning {
                id: locked.id().to_string(),
                dependency: entry.config.name.clone(),
            });
        }
        let dependency_locked = locked.engine().lock(dependency).await?;
        Box::pin(start_locked(&dependency_locked, caller, true)).await?;
    }
    Ok(())
}

pub(crate) async fn init_locked(locked: &Locked<'_>, caller: Caller) -> Result<()> {
    create_in_runtime(locked, caller, Launch::Create, RunStdio::default()).await
}

/// What the monitor does with a new run.
#[derive(Debug)]
pub(crate) enum Launch {
    /// `runc create`: the container waits in `created`.
    Create,
    /// `runc run --detach`: created and started in one runtime invocation.
    Run,
    /// `runc restore --detach` from a checkpoint.
    Restore(crate::monitor::process::RestoreArgs),
}

/// How a new run's stdio starts out.
#[derive(Debug, Default)]
pub(crate) struct RunStdio {
    /// A client attached before the process runs (`StartAndAttach`).
    pub attach: Option<AttachEnds>,
    /// The terminal's window size (rows, cols) at start.
    pub console_size: Option<(u16, u16)>,
}

/// Init; with `Launch::Run` the runtime also starts the process in the same command
/// (`runc run --detach`, one runtime invocation instead of two), and the container passes
/// through `created` to `running` with both transitions and events recorded. A restore goes
/// to `running` with its `restore` event.
pub(crate) async fn create_in_runtime(
    locked: &Locked<'_>,
    caller: Caller,
    launch: Launch,
    stdio: RunStdio,
) -> Result<()> {
    let (starting, restoring) = (
        matches!(launch, Launch::Run),
        matches!(launch, Launch::Restore(_)),
    );
    let state = locked.check(if restoring { Verb::Restore } else { Verb::Init })?;
    check_dependencies(locked, caller, false).await?;
    if state != State::Configured {
        // A previous run: make sure the runtime and storage are clean before re-creating.
        super::exit::release_runtime(locked, caller).await?;
    }
    let mut status = locked.status();
    let mountpoint = super::filesystem::acquire_mount_into(locked, &mut status).await?;
    let network = match super::networking::attach(locked, &mut status).await {
        Ok(network) => network,
        Err(error) => return abandon_setup(locked, status, error).await,
    };
    let launched = match launch_monitor(locked, launch, stdio, mountpoint, network).await {
        Ok(launched) => launched,
        Err(error) => {
            super::networking::detach_into(locked, &mut status).await;
            return abandon_setup(locked, status, error).await;
        }
    };
    crate::failpoint::hit(if starting {
        "start.after-launch"
    } else {
        "init.after-launch"
    });
    Engine {
        inner: locked.engine().clone(),
    }
    .watch_monitor(locked.id(), launched.monitor_pid);
    status.launched(launched.pid, launched.monitor_pid)?;
    record_launch(locked, caller, status, starting, restoring).await
}

/// A run that failed before its monitor was launched: the storage reference taken for it is
/// dropped and the failure recorded in `Error`; `error` is returned.
async fn abandon_setup(
    locked: &Locked<'_>,
    mut status: ContainerStatus,
    error: EngineError,
) -> Result<()> {
    status.error = error.to_string();
    if let Err(unmount) = super::filesystem::release_mount_into(locked, &mut status).await {
        tracing::warn!(id = %locked.id(), error = %unmount, "unmount after a failed init failed");
    }
    locked.commit(status, Vec::new()).await?;
    Err(error)
}

/// Writes the bundle (the OCI spec over `mountpoint`, the sidecar's files) and launches the
/// monitor, which runs the runtime's `create` (`run`, `restore`).
async fn launch_monitor(
    locked: &Locked<'_>,
    launch: Launch,
    stdio: RunStdio,
    mountpoint: String,
    network: Option<super::networking::Prepared>,
) -> Result<crate::monitor::launcher::Launched> {
    let inner = locked.engine().clone();
    let config = locked.config().clone();
    let paths = locked.paths();
    let systemd_cgroups = inner.options.systemd_cgroups;
    let init_binary = if config.init {
        inner.options.init_binary.clone()
    } else {
        None
    };
    let launcher = inner.backends.launcher.clone();
    let mountpoint = PathBuf::from(&mountpoint);
    blocking(move || {
        let user = users::lookup(&mountpoint, &config.user)
            .map_err(|e| EngineError::InvalidArgument(format!("User: {e}")))?;
        let mut input = spec_input(&config, &mountpoint, &user, init_binary);
        input.mounts = inner.runtime_mounts(&config, &mountpoint)?;
        input.cgroups_path = paths.cgroups_path(systemd_cgroups);
        input.console_size = stdio.console_size;
        if let Some(network) = network {
            input.network_namespace = Some(network.netns);
            input.mounts.extend(network.mounts);
        }
        let mut built = spec::build(&input).map_err(|e| EngineError::Runtime(e.to_string()))?;
        let bundle = paths.bundle().to_path_buf();
        std::fs::create_dir_all(&bundle)
            .map_err(|e| EngineError::io(format_args!("create {}", bundle.display()), e))?;
        super::health::prepare(&config, &mut built, &paths)?;
        spec::write(&built, &bundle).map_err(|e| EngineError::Internal(e.to_string()))?;
        let exit_file = paths.exit_file();
        let _ = std::fs::remove_file(&exit_file);
        let _ = std::fs::remove_file(paths.pid_file());
        let request = LaunchRequest {
            id: config.id.clone(),
            bundle,
            exit_file,
            log_path: (config.log_driver == "k8s-file").then(|| paths.log()),
            oom_file: Some(paths.oom_file(systemd_cgroups)),
            start: matches!(launch, Launch::Run),
            terminal: config.terminal,
            stdin: config.stdin,
            restore: match launch {
                Launch::Restore(args) => Some(args),
                Launch::Create | Launch::Run => None,
            },
        };
        Ok(launcher.launch(&request, stdio.attach)?)
    })
    .await
}

/// Records a launched run — `created` with `init`, then `running` with `start` when it was
/// started; `running` with `restore` for a restore. A run that cannot be recorded is taken
/// down again.
async fn record_launch(
    locked: &Locked<'_>,
    caller: Caller,
    mut status: ContainerStatus,
    starting: bool,
    restoring: bool,
) -> Result<()> {
    if restoring {
        status.restored(now_micros())?;
        let restored = locked
            .commit(
                status.clone(),
                vec![event("restore", locked.config(), caller, &[])],
            )
            .await;
        if restored.is_err() {
            undo_launch(locked, status).await;
        }
        return restored;
    }
    let initialised = locked
        .commit(
            status.clone(),
            vec![event("init", locked.config(), caller, &[])],
        )
        .await;
    if let Err(error) = initialised {
        undo_launch(locked, status).await;
        return Err(error);
    }
    if starting {
        status.started(now_micros())?;
        locked
            .commit(status, vec![event("start", locked.config(), caller, &[])])
            .await?;
    }
    Ok(())
}

/// A run that could not be recorded (a full disk under `--root`) is taken down again, so the
/// container stays as recorded: the runtime container deleted (its monitor then exits), the
/// mount reference taken for it dropped.
async fn undo_launch(locked: &Locked<'_>, mut status: ContainerStatus) {
    tracing::warn!(id = %locked.id(), "a run that could not be recorded is taken down");
    let runtime = locked.engine().backends.runtime.clone();
    let id = locked.id().to_string();
    if let Err(error) = blocking(move || Ok(runtime.delete(&id, true)?)).await {
        tracing::warn!(id = %locked.id(), %error, "deleting an unrecorded run failed");
    }
    if let Err(error) = super::filesystem::release_mount_into(locked, &mut status).await {
        tracing::warn!(id = %locked.id(), %error, "unmounting after an unrecorded run failed");
    }
}

fn spec_input(
    config: &super::ContainerConfig,
    rootfs: &std::path::Path,
    user: &users::ExecUser,
    init_binary: Option<PathBuf>,
) -> SpecInput {
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "TERM=xterm".to_string(),
        format!("HOSTNAME={}", config.hostname),
        format!("HOME={}", user.home),
        "container=berth".to_string(),
    ];
    for variable in &config.env {
        let key = variable.split('=').next().unwrap_or_default();
        env.retain(|existing| existing.split('=').next() != Some(key));
        env.push(variable.clone());
    }
    SpecInput {
        rootfs: rootfs.to_path_buf(),
        args: config.process_args(),
        env,
        cwd: config.working_dir.clone(),
        uid: user.uid,
        gid: user.gid,
        additional_gids: user.additional_gids.clone(),
        hostname: config.hostname.clone(),
        terminal: config.terminal,
        console_size: None,
        host_network: config.network == super::config::Network::Host,
        read_only_rootfs: config.read_only_rootfs,
        privileged: config.privileged,
        cap_add: config.cap_add.clone(),
        cap_drop: config.cap_drop.clone(),
        memory_max: config.memory_max,
        pids_max: config.pids_max,
        cpu_quota: config.cpu_quota,
        // Set by the caller from the container's paths.
        cgroups_path: String::new(),
        mounts: config.mounts.clone(),
        init_binary,
        annotations: config.annotations.clone().into_iter().collect(),
        seccomp_profile: crate::runtime::seccomp::profile_path(
            config.seccomp_profile.as_deref(),
            config.privileged,
        ),
        network_namespace: None,
    }
}

pub(crate) async fn start_locked(
    locked: &Locked<'_>,
    caller: Caller,
    recursive: bool,
) -> Result<()> {
    start_with(locked, caller, recursive, RunStdio::default()).await
}

/// Start; a container not yet created in the runtime starts with `stdio`.
pub(crate) async fn start_with(
    locked: &Locked<'_>,
    caller: Caller,
    recursive: bool,
    stdio: RunStdio,
) -> Result<()> {
    let state = locked.check(Verb::Start)?;
    if state == State::Running {
        return Ok(());
    }
    check_dependencies(locked, caller, recursive).await?;
    // The user's start supersedes a restart the policy had scheduled.
    locked
        .entry
        .restart_pending
        .store(false, std::sync::atomic::Ordering::SeqCst);
    if state != State::Created {
        return create_in_runtime(locked, caller, Launch::Run, stdio).await;
    }
    let runtime = locked.engine().backends.runtime.clone();
    let id = locked.id().to_string();
    if let Err(error) = blocking(move || Ok(runtime.start(&id)?)).await {
        let mut status = locked.status();
        status.error = error.to_string();
        locked.commit(status, Vec::new()).await?;
        return Err(error);
    }
    crate::failpoint::hit("start.after-runc-start");
    let mut status = locked.status();
    status.started(now_micros())?;
    locked
        .commit(status, vec![event("start", locked.config(), caller, &[])])
        .await
}

/// First half of `Stop`: checks the state, marks it `stopping`, sends the stop signal.
/// Returns the main pid whose exit to wait for, or `None` when there is nothing to wait for
/// (an exited container whose pending policy restart the stop cancelled).
async fn begin_stop(locked: &Locked<'_>) -> Result<Option<u32>> {
    let before = locked.status();
    if let Err(refused) = locked.check(Verb::Stop) {
        if matches!(refused, EngineError::ContainerStopped(_))
            && locked
                .entry
                .restart_pending
                .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(None);
        }
        return Err(refused);
    }
    // A created process never ran the user's command; it has no handler for anything.
    let signal = if before.state == State::Created {
        nix::sys::signal::Signal::SIGKILL as i32
    } else {
        parse_signal(&locked.config().stop_signal)
            .map(|(n, _)| n)
            .unwrap_or(15)
    };
    let mut stopping = before.clone();
    stopping.stopping()?;
    locked.commit(stopping, Vec::new()).await?;
    if let Err(error) = send_signal(locked, signal).await {
        locked.commit(before, Vec::new()).await?;
        return Err(error);
    }
    crate::failpoint::hit("stop.after-signal");
    Ok(Some(before.pid))
}

/// Last half of `Stop`: records the exit with the `stop` event in one transaction (unless
/// the exit watcher recorded it first). `after_exit` runs AutoRemove/restart handling, which
/// a composite verb must not do midway.
async fn finish_stop(locked: &Locked<'_>, caller: Caller, after_exit: bool) -> Result<()> {
    let stop = event("stop", locked.config(), caller, &[]);
    if super::exit::record_exit_locked(locked, caller, vec![stop.clone()]).await? {
        if after_exit {
            after_exit_locked(locked).await?;
        }
        return Ok(());
    }
    locked.record(vec![stop]).await
}

/// `Stop` with the lock held throughout (Restart, Batch, Refresh): the exit is awaited on
/// the exit file, which needs no lock, and then recorded here.
pub(crate) async fn stop_locked(locked: &Locked<'_>, caller: Caller, timeout: u32) -> Result<()> {
    if let Some(pid) = begin_stop(locked).await? {
        await_exit_or_kill(&locked.engine().backends, &locked.entry, pid, timeout).await?;
        finish_stop(locked, caller, false).await?;
    }
    Ok(())
}

pub(crate) async fn restart_locked(
    locked: &Locked<'_>,
    caller: Caller,
    timeout: u32,
) -> Result<()> {
    let state = locked.check(Verb::Restart)?;
    if Verb::Stop.accepts(state) {
        stop_locked(locked, caller, timeout).await?;
    }
    start_locked(locked, caller, false).await?;
    locked
        .record(vec![event("restart", locked.config(), caller, &[])])
        .await
}

pub(crate) async fn kill_locked(locked: &Locked<'_>, caller: Caller, signal: &str) -> Result<()> {
    let (number, name) = parse_signal(signal)
        .ok_or_else(|| EngineError::InvalidArgument(format!("unknown signal {signal:?}")))?;
    locked.check(Verb::Kill)?;
    send_signal(locked, number).await?;
    crate::failpoint::hit("kill.after-signal");
    locked
        .record(vec![event(
            "kill",
            locked.config(),
            caller,
            &[("signal", name)],
        )])
        .await
}

pub(crate) async fn pause_locked(locked: &Locked<'_>, caller: Caller) -> Result<()> {
    locked.check(Verb::Pause)?;
    let runtime = locked.engine().backends.runtime.clone();
    let id = locked.id().to_string();
    blocking(move || Ok(runtime.pause(&id)?)).await?;
    crate::failpoint::hit("pause.after-runc-pause");
    let mut status = locked.status();
    status.paused()?;
    locked
        .commit(status, vec![event("pause", locked.config(), caller, &[])])
        .await
}

pub(crate) async fn unpause_locked(locked: &Locked<'_>, caller: Caller) -> Result<()> {
    locked.check(Verb::Unpause)?;
    let runtime = locked.engine().backends.runtime.clone();
    let id = locked.id().to_string();
    blocking(move || Ok(runtime.resume(&id)?)).await?;
    crate::failpoint::hit("unpause.after-runc-resume");
    let mut status = locked.status();
    status.resumed()?;
    locked
        .commit(status, vec![event("unpause", locked.config(), caller, &[])])
        .await
}

/// After an exit has been recorded: `AutoRemove`, or the restart policy. Runs once per exit,
/// from whoever recorded it (the exit watcher or a plain `Stop`), never inside a composite
/// verb such as `Restart`.
pub(crate) async fn after_exit_locked(locked: &Locked<'_>) -> Result<()> {
    let status = locked.status();
    if status.state != State::Exited || locked.entry.restarting.load(Ordering::SeqCst) {
        return Ok(());
    }
    let config = locked.config();
    if config.auto_remove {
        return super::create::remove_locked(locked, Caller::ENGINE, false).await;
    }
    if !config.restart_policy.wants_restart(
        status.exit_code,
        status.restart_count,
        status.stopped_by_user,
    ) {
        return Ok(());
    }
    // Back off as Docker does (100 ms doubling, at most ~25 s) so a crash loop cannot spin.
    let delay = Duration::from_millis(100 << status.restart_count.min(8));
    let engine = Engine {
        inner: locked.engine().clone(),
    };
    let id = locked.id().to_string();
    let busy = engine.busy();
    locked.entry.restart_pending.store(true, Ordering::SeqCst);
    tokio::spawn(async move {
        let _busy = busy;
        tokio::time::sleep(delay).await;
        let Ok(locked) = engine.inner().lock(&id).await else {
            return;
        };
        // A `Stop`, `Start` or `Remove` meanwhile cancels the pending restart.
        if !locked.entry.restart_pending.swap(false, Ordering::SeqCst)
            || locked.status().state != State::Exited
        {
            return;
        }
        let mut counted = locked.status();
        counted.restart_count += 1;
        if locked.commit(counted, Vec::new()).await.is_err() {
            return;
        }
        match super::lifecycle::start_locked(&locked, Caller::ENGINE, false).await {
            Ok(()) => {
                let _ = locked
                    .record(vec![event("restart", locked.config(), Caller::ENGINE, &[])])
                    .await;
            }
            Err(error) => {
                tracing::warn!(id = %id, %error, "restart policy could not start the container")
            }
        }
    });
    Ok(())
}
