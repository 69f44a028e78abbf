//! The container state machine: libpod's states, the one guard per verb (which states it
//! accepts, and the typed error otherwise), and the transitions — the only place a
//! container's state is written.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A container's lifecycle state, as libpod names them (the `State` property in
/// `dbus/org.berth.Engine1.Container.xml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Exists in the database only; nothing in the runtime.
    Configured,
    /// Created in the runtime (monitor + `runc create`), process not yet started.
    Created,
    Running,
    /// `Stop` is waiting for the process to go.
    Stopping,
    Paused,
    /// The process exited; the runtime still knows the container.
    Stopped,
    /// Cleaned up after an exit: deleted from the runtime, storage unmounted.
    Exited,
    /// Being removed.
    Removing,
    /// berthd could not tell.
    Unknown,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Configured,
        State::Created,
        State::Running,
        State::Stopping,
        State::Paused,
        State::Stopped,
        State::Exited,
        State::Removing,
        State::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Configured => "configured",
            State::Created => "created",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Exited => "exited",
            State::Removing => "removing",
            State::Unknown => "unknown",
        }
    }

    /// A runtime process exists (or may exist) for the container.
    pub fn has_process(self) -> bool {
        matches!(
            self,
            State::Created | State::Running | State::Stopping | State::Paused
        )
    }

    /// "Running" in the sense of `Wait`: the main process has been started and not yet exited.
    pub fn is_running(self) -> bool {
        matches!(self, State::Running | State::Stopping | State::Paused)
    }

    /// What the state becomes once the runtime lets the container go (libpod's
    /// cleanupRuntime): `None` for the states the runtime does not know.
    pub fn released(self) -> Option<State> {
        match self {
            State::Stopped => Some(State::Exited),
            State::Created | State::Unknown => Some(State::Configured),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// The mutable half of a container, rewritten by every transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub state: State,
    /// Host pid of the container's main process (0 when none).
    pub pid: u32,
    /// Host pid of its berth-monitor (0 when none).
    pub monitor_pid: u32,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub started_at: u64,
    pub finished_at: u64,
    pub restart_count: u32,
    /// Mount references: one for the runtime while created/running, one per `Mount` call.
    pub mount_count: u32,
    pub mountpoint: String,
    pub error: String,
    /// The last exit was asked for (`Stop`, `Kill`); the restart policy leaves it alone.
    pub stopped_by_user: bool,
    /// `Mount()` calls not yet matched by `Unmount`.
    pub user_mounts: u32,
    /// Exec sessions by id, kept after they exit until removed (libpod keeps them in the
    /// container's state the same way).
    #[serde(default)]
    pub exec_sessions: BTreeMap<String, ExecSession>,
    /// Stopped by a checkpoint that has not been restored yet.
    #[serde(default)]
    pub checkpointed: bool,
    #[serde(default)]
    pub checkpointed_at: u64,
    #[serde(default)]
    pub restored_at: u64,
    /// The container sent `READY=1` (`Notify`).
    #[serde(default)]
    pub ready: bool,
    /// Its last `STATUS=` text.
    #[serde(default)]
    pub status_text: String,
    /// `""`, `starting`, `healthy` or `unhealthy`.
    #[serde(default)]
    pub health: String,
    #[serde(default)]
    pub health_failing_streak: u32,
    /// Health transitions up to this time (µs) have their `health_status` event.
    #[serde(default)]
    pub health_recorded_at: u64,
    /// What the current run holds of the network (namespace, addresses, host ports).
    #[serde(default)]
    pub network: crate::network::Attachment,
    /// The run's exit is recorded and its cleanup (to `exited`) is under way: `Wait`
    /// answers once it is done.
    #[serde(default)]
    pub cleanup_pending: bool,
}

/// One exec session of a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecSession {
    pub command: Vec<String>,
    pub terminal: bool,
    pub running: bool,
    /// Host pid of the session's process (0 before it ran).
    pub pid: u32,
    pub exit_code: i32,
    pub started_at: u64,
    pub finished_at: u64,
}

impl ExecSession {
    /// A session whose process is being started now.
    pub fn starting(command: Vec<String>, terminal: bool, started_at: u64) -> ExecSession {
        ExecSession {
            command,
            terminal,
            running: true,
            pid: 0,
            exit_code: 0,
            started_at,
            finished_at: 0,
        }
    }

    pub fn state(&self) -> &'static str {
        if self.running {
            "running"
        } else {
            "exited"
        }
    }
}

impl ContainerStatus {
    pub fn new() -> ContainerStatus {
        ContainerStatus {
            state: State::Configured,
            pid: 0,
            monitor_pid: 0,
            exit_code: 0,
            oom_killed: false,
            started_at: 0,
            finished_at: 0,
            restart_count: 0,
            mount_count: 0,
            mountpoint: String::new(),
            error: String::new(),
            stopped_by_user: false,
            user_mounts: 0,
            exec_sessions: BTreeMap::new(),
            checkpointed: false,
            checkpointed_at: 0,
            restored_at: 0,
            ready: false,
            status_text: String::new(),
            health: String::new(),
            health_failing_streak: 0,
            health_recorded_at: 0,
            network: crate::network::Attachment::default(),
            cleanup_pending: false,
        }
    }

    pub fn mounted(&self) -> bool {
        self.mount_count > 0
    }
}

impl Default for ContainerStatus {
    fn default() -> Self {
        ContainerStatus::new()
    }
}

/// A verb, for its guard: the table of the `Container` methods in
/// `dbus/org.berth.Engine1.Container.xml` and the README, one row each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Init,
    /// `Start` on a running container is a no-op, not an error: it is accepted.
    Start,
    Stop,
    Restart,
    Kill,
    Pause,
    Unpause,
    Mount,
    Export,
    /// libpod's Cleanup refuses running and paused containers.
    Cleanup,
    Checkpoint,
    Restore,
    Exec,
    Attach,
    Resize,
    Healthcheck,
    /// libpod's Refresh: anything but a container being removed.
    Refresh,
    /// `Remove` without force: nothing may be running.
    Remove,
    /// `Remove(force)` kills whatever runs first.
    ForceRemove,
}

impl Verb {
    pub const ALL: [Verb; 19] = [
        Verb::Init,
        Verb::Start,
        Verb::Stop,
        Verb::Restart,
        Verb::Kill,
        Verb::Pause,
        Verb::Unpause,
        Verb::Mount,
        Verb::Export,
        Verb::Cleanup,
        Verb::Checkpoint,
        Verb::Restore,
        Verb::Exec,
        Verb::Attach,
        Verb::Resize,
        Verb::Healthcheck,
        Verb::Refresh,
        Verb::Remove,
        Verb::ForceRemove,
    ];

    /// The verb as `InvalidState` messages name it ("container … is paused: cannot stop").
    pub fn name(self) -> &'static str {
        match self {
            Verb::Init => "init",
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::Kill => "kill",
            Verb::Pause => "pause",
            Verb::Unpause => "unpause",
            Verb::Mount => "mount",
            Verb::Export => "export",
            Verb::Cleanup => "clean up",
            Verb::Checkpoint => "checkpoint",
            Verb::Restore => "restore",
            Verb::Exec => "exec",
            Verb::Attach => "attach",
            Verb::Resize => "resize",
            Verb::Healthcheck => "healthcheck",
            Verb::Refresh => "refresh",
            Verb::Remove => "remove (use force)",
            Verb::ForceRemove => "remove",
        }
    }

    /// Whether the verb may run on a container in `state`.
    pub fn accepts(self, state: State) -> bool {
        use State::*;
        match self {
            Verb::Init | Verb::Restore => matches!(state, Configured | Stopped | Exited),
            Verb::Start => matches!(state, Configured | Created | Stopped | Exited | Running),
            Verb::Stop => matches!(state, Created | Running | Stopping),
            Verb::Restart => !matches!(state, Paused | Unknown | Removing),
            Verb::Kill => matches!(state, Running | Stopping),
            Verb::Pause | Verb::Checkpoint | Verb::Exec | Verb::Healthcheck => state == Running,
            Verb::Unpause => state == Paused,
            Verb::Mount | Verb::Export | Verb::Refresh => state != Removing,
            Verb::Cleanup => !matches!(state, Running | Paused | Stopping | Removing),
            Verb::Attach => matches!(
                state,
                Created | Running | Stopping | Paused | Stopped | Exited
            ),
            Verb::Resize => state.has_process(),
            Verb::Remove => !state.has_process() && state != Unknown,
            Verb::ForceRemove => true,
        }
    }

    /// The guard: `Ok` when the verb accepts `state`, else why not — `Stop` of a stopped
    /// container is [`Refused::AlreadyStopped`], anything else [`Refused::InvalidState`]
    /// (the engine's typed errors `ContainerStopped` and `InvalidState`).
    pub fn check(self, id: &str, state: State) -> Result<(), Refused> {
        if self.accepts(state) {
            return Ok(());
        }
        if self == Verb::Stop && matches!(state, State::Stopped | State::Exited) {
            return Err(Refused::AlreadyStopped { id: id.to_string() });
        }
        Err(self.refused(id, state))
    }

    /// This verb refused in `state` (also for a refusal found later, e.g. the process ended
    /// while the verb ran).
    pub fn refused(self, id: &str, state: State) -> Refused {
        Refused::InvalidState {
            id: id.to_string(),
            state,
            verb: self.name(),
        }
    }
}

/// Why a verb's guard refused it.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `Stop` of a container that is already stopped.
    AlreadyStopped { id: String },
    /// The verb does not run in the container's state.
    InvalidState {
        id: String,
        state: State,
        verb: &'static str,
    },
}

/// A transition the state machine does not have. The guards keep users from asking for one,
/// so this is a bug in the engine, never a caller's mistake.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("illegal state transition from {from} to {to}")]
pub struct IllegalTransition {
    pub from: State,
    pub to: State,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunEnd {
    /// The process exited: its status, or 128+signal when a signal killed it; -1 when
    /// nobody can know (its monitor was lost).
    Exit { code: i32, oom_killed: bool },
    /// A checkpoint took the process at `at` (µs): not a death.
    Checkpoint { at: u64 },
}

/// The transitions. Each checks that it is legal from the current state and changes nothing
/// when it is not; the caller commits the result with its events (`Locked::commit`).
impl ContainerStatus {
    fn enter(&mut self, to: State, from: &[State]) -> Result<(), IllegalTransition> {
        if !from.contains(&self.state) {
            return Err(IllegalTransition {
                from: self.state,
                to,
            });
        }
        self.state = to;
        Ok(())
    }

    /// A new run is in the runtime (`runc create`, or the first half of `run`/`restore`):
    /// `created`, with what an earlier run left behind (exit, error, sessions) cleared.
    pub fn launched(&mut self, pid: u32, monitor_pid: u32) -> Result<(), IllegalTransition> {
        use State::*;
        self.enter(Created, &[Configured, Stopped, Exited])?;
        self.pid = pid;
        self.monitor_pid = monitor_pid;
        self.exit_code = 0;
        self.oom_killed = false;
        self.finished_at = 0;
        self.error.clear();
        self.stopped_by_user = false;
        self.cleanup_pending = false;
        // Sessions of an earlier run are history now, and so is a checkpoint once it runs.
        self.exec_sessions.clear();
        self.checkpointed = false;
        Ok(())
    }

    /// The created process was started at `at` (µs).
    pub fn started(&mut self, at: u64) -> Result<(), IllegalTransition> {
        self.enter(State::Running, &[State::Created])?;
        self.started_at = at;
        self.error.clear();
        Ok(())
    }

    /// The created run was restored from a checkpoint at `at` (µs): running again.
    pub fn restored(&mut self, at: u64) -> Result<(), IllegalTransition> {
        self.started(at)?;
        self.restored_at = at;
        Ok(())
    }

    /// `Stop` sent the stop signal and waits for the process; the restart policy will leave
    /// the exit alone.
    pub fn stopping(&mut self) -> Result<(), IllegalTransition> {
        use State::*;
        self.enter(Stopping, &[Created, Running, Stopping])?;
        self.stopped_by_user = true;
        Ok(())
    }

    /// A `Stop` that berthd did not live to finish: the process is still running.
    pub fn stop_abandoned(&mut self) -> Result<(), IllegalTransition> {
        self.enter(State::Running, &[State::Stopping])
    }

    pub fn paused(&mut self) -> Result<(), IllegalTransition> {
        self.enter(State::Paused, &[State::Running, State::Stopping])
    }

    pub fn resumed(&mut self) -> Result<(), IllegalTransition> {
        self.enter(State::Running, &[State::Paused])
    }

    /// The run ended at `finished_at` (µs): `stopped`, with its cleanup still to come (the
    /// container is not settled until [`ContainerStatus::released`] or
    /// [`ContainerStatus::cleanup_failed`]).
    pub fn stopped(&mut self, end: RunEnd, finished_at: u64) -> Result<(), IllegalTransition> {
        use State::*;
        self.enter(Stopped, &[Created, Running, Stopping, Paused])?;
        match end {
            RunEnd::Exit { code, oom_killed } => {
                self.exit_code = code;
                self.oom_killed = oom_killed;
            }
            RunEnd::Checkpoint { at } => {
                self.checkpointed = true;
                self.checkpointed_at = at;
                // What the user asked for: the restart policy leaves it alone.
                self.stopped_by_user = true;
            }
        }
        self.finished_at = finished_at;
        self.pid = 0;
        self.monitor_pid = 0;
        self.cleanup_pending = true;
        Ok(())
    }

    /// The runtime let the container go (deleted, its mount reference dropped): `stopped`
    /// becomes `exited` and `created` becomes `configured`.
    pub fn released(&mut self) -> Result<(), IllegalTransition> {
        let Some(to) = self.state.released() else {
            return Err(IllegalTransition {
                from: self.state,
                to: State::Exited,
            });
        };
        self.state = to;
        self.pid = 0;
        self.monitor_pid = 0;
        self.error.clear();
        self.cleanup_pending = false;
        Ok(())
    }

    /// The cleanup after an exit failed: the container stays `stopped`, with the failure in
    /// `Error`, settled until someone retries (Cleanup, Start, Remove).
    pub fn cleanup_failed(&mut self, error: String) -> Result<(), IllegalTransition> {
        self.enter(State::Stopped, &[State::Stopped])?;
        self.error = error;
        self.cleanup_pending = false;
        Ok(())
    }

    /// Removal has begun: nothing runs any more, and a berthd that dies from here on finishes
    /// the removal at its next start.
    pub fn removing(&mut self) -> Result<(), IllegalTransition> {
        use State::*;
        self.enter(Removing, &[Configured, Exited, Removing])
    }

    /// libpod's Refresh unwinds a container with no run to `configured`.
    pub fn refreshed(&mut self) -> Result<(), IllegalTransition> {
        use State::*;
        self.enter(Configured, &[Configured, Stopped, Exited, Unknown])?;
        self.error.clear();
        self.cleanup_pending = false;
        Ok(())
    }

    /// Nothing more will happen to this run without a new verb: not running, and not an exit
    /// whose cleanup is still under way. What `Wait` waits for.
    pub fn is_settled(&self) -> bool {
        !self.state.is_running() && !self.cleanup_pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    /// The verbs' table, one row per verb: the states it accepts.
    #[test]
    fn each_guard_accepts_exactly_the_designed_states() {
        let every = &State::ALL[..];
        let table: [(Verb, &[State]); 19] = [
            (Verb::Init, &[Configured, Stopped, Exited]),
            (
                Verb::Start,
                &[Configured, Created, Stopped, Exited, Running],
            ),
            (Verb::Stop, &[Created, Running, Stopping]),
            (
                Verb::Restart,
                &[Configured, Created, Running, Stopping, Stopped, Exited],
            ),
            (Verb::Kill, &[Running, Stopping]),
            (Verb::Pause, &[Running]),
            (Verb::Unpause, &[Paused]),
            (
                Verb::Mount,
                &[
                    Configured, Created, Running, Stopping, Paused, Stopped, Exited, Unknown,
                ],
            ),
            (
                Verb::Export,
                &[
                    Configured, Created, Running, Stopping, Paused, Stopped, Exited, Unknown,
                ],
            ),
            (
                Verb::Cleanup,
                &[Configured, Created, Stopped, Exited, Unknown],
            ),
            (Verb::Checkpoint, &[Running]),
            (Verb::Restore, &[Configured, Stopped, Exited]),
            (Verb::Exec, &[Running]),
            (
                Verb::Attach,
                &[Created, Running, Stopping, Paused, Stopped, Exited],
            ),
            (Verb::Resize, &[Created, Running, Stopping, Paused]),
            (Verb::Healthcheck, &[Running]),
            (
                Verb::Refresh,
                &[
                    Configured, Created, Running, Stopping, Paused, Stopped, Exited, Unknown,
                ],
            ),
            (Verb::Remove, &[Configured, Stopped, Exited, Removing]),
            (Verb::ForceRemove, every),
        ];
        assert_eq!(table.map(|(verb, _)| verb), Verb::ALL);
        for (verb, expected) in table {
            for state in State::ALL {
                assert_eq!(
                    verb.accepts(state),
                    expected.contains(&state),
                    "{verb:?} in state {state}"
                );
                assert_eq!(verb.check("c", state).is_ok(), expected.contains(&state));
            }
        }
    }

    #[test]
    fn a_refused_verb_names_the_state_and_stop_of_a_stopped_container_is_its_own_refusal() {
        assert_eq!(
            Verb::Stop.check("c", Exited),
            Err(Refused::AlreadyStopped { id: "c".into() })
        );
        assert_eq!(
            Verb::Stop.check("c", Paused),
            Err(Refused::InvalidState {
                id: "c".into(),
                state: Paused,
                verb: "stop"
            })
        );
    }

    fn in_state(state: State) -> ContainerStatus {
        ContainerStatus {
            state,
            ..ContainerStatus::new()
        }
    }

    type Transition = fn(&mut ContainerStatus) -> Result<(), IllegalTransition>;

    /// Every transition from every state: legal exactly from the states listed, and an
    /// illegal one changes nothing.
    #[test]
    fn each_transition_is_legal_exactly_from_its_states() {
        let table: [(&str, Transition, &[State], State); 11] = [
            (
                "launched",
                |s| s.launched(10, 11),
                &[Configured, Stopped, Exited],
                Created,
            ),
            ("started", |s| s.started(5), &[Created], Running),
            ("restored", |s| s.restored(5), &[Created], Running),
            (
                "stopping",
                ContainerStatus::stopping,
                &[Created, Running, Stopping],
                Stopping,
            ),
            (
                "stop_abandoned",
                ContainerStatus::stop_abandoned,
                &[Stopping],
                Running,
            ),
            (
                "paused",
                ContainerStatus::paused,
                &[Running, Stopping],
                Paused,
            ),
            ("resumed", ContainerStatus::resumed, &[Paused], Running),
            (
                "stopped",
                |s| {
                    s.stopped(
                        RunEnd::Exit {
                            code: 1,
                            oom_killed: false,
                        },
                        7,
                    )
                },
                &[Created, Running, Stopping, Paused],
                Stopped,
            ),
            (
                "cleanup_failed",
                |s| s.cleanup_failed("busy".into()),
                &[Stopped],
                Stopped,
            ),
            (
                "removing",
                ContainerStatus::removing,
                &[Configured, Exited, Removing],
                Removing,
            ),
            (
                "refreshed",
                ContainerStatus::refreshed,
                &[Configured, Stopped, Exited, Unknown],
                Configured,
            ),
        ];
        for (name, transition, from, to) in table {
            for state in State::ALL {
                let mut status = in_state(state);
                let result = transition(&mut status);
                if from.contains(&state) {
                    assert_eq!(result, Ok(()), "{name} from {state}");
                    assert_eq!(status.state, to, "{name} from {state}");
                } else {
                    assert_eq!(result, Err(IllegalTransition { from: state, to }), "{name}");
                    assert_eq!(status, in_state(state), "{name} from {state} changed it");
                }
            }
        }
    }

    #[test]
    fn released_ends_the_runs_the_runtime_knows() {
        for state in State::ALL {
            let mut status = in_state(state);
            let expected = match state {
                Stopped => Some(Exited),
                Created | Unknown => Some(Configured),
                _ => None,
            };
            assert_eq!(status.released().is_ok(), expected.is_some(), "{state}");
            assert_eq!(status.state, expected.unwrap_or(state));
        }
    }

    #[test]
    fn an_exit_is_settled_once_its_cleanup_is_done_or_has_failed() {
        let mut status = in_state(Running);
        status.pid = 42;
        assert!(!status.is_settled());
        let exit = RunEnd::Exit {
            code: 3,
            oom_killed: true,
        };
        status.stopped(exit, 99).unwrap();
        assert_eq!(
            (status.exit_code, status.oom_killed, status.pid),
            (3, true, 0)
        );
        assert!(!status.is_settled(), "stopped, cleanup still to come");
        let mut failed = status.clone();
        failed.cleanup_failed("device busy".into()).unwrap();
        assert!(failed.is_settled());
        status.released().unwrap();
        assert_eq!(status.state, Exited);
        assert!(status.is_settled());
    }

    #[test]
    fn a_checkpoint_stops_the_run_without_an_exit_code_and_out_of_the_restart_policy() {
        let mut status = in_state(Running);
        status.exit_code = 0;
        status.stopped(RunEnd::Checkpoint { at: 50 }, 60).unwrap();
        assert!(status.checkpointed && status.stopped_by_user);
        assert_eq!((status.checkpointed_at, status.finished_at), (50, 60));
        assert_eq!(status.exit_code, 0);
    }

    #[test]
    fn a_new_run_forgets_what_the_last_one_left() {
        let mut status = in_state(Exited);
        status.exit_code = 137;
        status.error = "boom".into();
        status.checkpointed = true;
        status.stopped_by_user = true;
        status.launched(10, 11).unwrap();
        assert_eq!(
            (status.pid, status.monitor_pid, status.exit_code),
            (10, 11, 0)
        );
        assert!(status.error.is_empty() && !status.checkpointed && !status.stopped_by_user);
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
        }
        assert!("bogus".parse::<State>().is_err());
    }
}
