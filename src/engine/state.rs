//! The container state machine: libpod's states and which verbs each one accepts.

use std::fmt;
use std::str::FromStr;

/// A container's lifecycle state, as libpod names them (DESIGN §2.2).
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

    pub fn can_init(self) -> bool {
        matches!(self, State::Configured | State::Stopped | State::Exited)
    }

    /// `Start` on a running container is a no-op, not an error (DESIGN §2.2).
    pub fn can_start(self) -> bool {
        matches!(
            self,
            State::Configured | State::Created | State::Stopped | State::Exited | State::Running
        )
    }

    pub fn can_stop(self) -> bool {
        matches!(self, State::Created | State::Running | State::Stopping)
    }

    /// `Stop` on an already stopped container answers `ContainerStopped`, not `InvalidState`.
    pub fn is_stopped(self) -> bool {
        matches!(self, State::Stopped | State::Exited)
    }

    pub fn can_restart(self) -> bool {
        !matches!(self, State::Paused | State::Unknown | State::Removing)
    }

    pub fn can_kill(self) -> bool {
        matches!(self, State::Running | State::Stopping)
    }

    pub fn can_pause(self) -> bool {
        self == State::Running
    }

    pub fn can_unpause(self) -> bool {
        self == State::Paused
    }

    pub fn can_mount(self) -> bool {
        self != State::Removing
    }

    /// libpod's Cleanup refuses running and paused containers.
    pub fn can_cleanup(self) -> bool {
        !matches!(
            self,
            State::Running | State::Paused | State::Stopping | State::Removing
        )
    }

    pub fn can_checkpoint(self) -> bool {
        self == State::Running
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

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    /// The DESIGN §2.2 table, one row per verb: the states it accepts.
    #[test]
    fn each_predicate_accepts_exactly_the_designed_states() {
        type Row<'a> = (&'a str, fn(State) -> bool, &'a [State]);
        let table: [Row; 10] = [
            ("init", State::can_init, &[Configured, Stopped, Exited]),
            (
                "start",
                State::can_start,
                &[Configured, Created, Stopped, Exited, Running],
            ),
            ("stop", State::can_stop, &[Created, Running, Stopping]),
            (
                "restart",
                State::can_restart,
                &[Configured, Created, Running, Stopping, Stopped, Exited],
            ),
            ("kill", State::can_kill, &[Running, Stopping]),
            ("pause", State::can_pause, &[Running]),
            ("unpause", State::can_unpause, &[Paused]),
            (
                "mount",
                State::can_mount,
                &[
                    Configured, Created, Running, Stopping, Paused, Stopped, Exited, Unknown,
                ],
            ),
            (
                "cleanup",
                State::can_cleanup,
                &[Configured, Created, Stopped, Exited, Unknown],
            ),
            ("checkpoint", State::can_checkpoint, &[Running]),
        ];
        for (verb, accepts, expected) in table {
            for state in State::ALL {
                assert_eq!(
                    accepts(state),
                    expected.contains(&state),
                    "{verb} in state {state}"
                );
            }
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
        }
        assert!("bogus".parse::<State>().is_err());
    }
}
