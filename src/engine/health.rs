//! Readiness and health: the `Notify` and `Health*` spec keys, the sidecar the monitor runs
//! for them (`monitor::sidecar`), and what berthd makes of the sidecar's state file —
//! properties `Ready`, `StatusText`, `Health`, `HealthFailingStreak` and `health_status`
//! events, recorded in order also for what happened while berthd was away.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::paths::ContainerPaths;
use std::time::Duration;

use tokio::sync::mpsc;

use super::config::{ContainerConfig, HealthRequest};
use super::{Caller, Engine, EngineError, Result};
use crate::db::NewEvent;
use crate::monitor::sidecar::{
    self, HealthConfig, SidecarConfig, SidecarState, CONFIG_FILE, NOTIFY_DIR,
    NOTIFY_DIR_IN_CONTAINER, NOTIFY_SOCKET_NAME,
};

/// Validates the `Health*` keys: a command is needed for any of the others.
pub(crate) fn health_config(request: &HealthRequest) -> Result<Option<HealthConfig>> {
    if request.command.is_empty() {
        let others = request.interval.is_some()
            || request.timeout.is_some()
            || request.retries.is_some()
            || request.start_period.is_some();
        return if others {
            Err(EngineError::InvalidArgument(
                "HealthCmd: the other Health keys need a HealthCmd".into(),
            ))
        } else {
            Ok(None)
        };
    }
    let mut health = HealthConfig::new(request.command.clone());
    if let Some(interval) = request.interval {
        health.interval = interval;
    }
    if let Some(timeout) = request.timeout {
        if timeout == 0 {
            return Err(EngineError::InvalidArgument(
                "HealthTimeout: must be more than 0".into(),
            ));
        }
        health.timeout = timeout;
    }
    if let Some(retries) = request.retries {
        health.retries = retries;
    }
    if let Some(start_period) = request.start_period {
        health.start_period = start_period;
    }
    Ok(Some(health))
}

/// Prepares the bundle for the sidecar before the monitor starts: its config file and,
/// with `Notify`, the socket directory bind-mounted at /run/notify and `NOTIFY_SOCKET` in
/// the process's environment (podman's layout). Without either, no sidecar runs.
pub(crate) fn prepare(
    config: &ContainerConfig,
    spec: &mut oci_spec::runtime::Spec,
    paths: &ContainerPaths,
) -> Result<()> {
    let internal =
        |what: &str, e: &dyn std::fmt::Display| EngineError::Internal(format!("{what}: {e}"));
    let bundle = paths.bundle();
    let config_file = bundle.join(CONFIG_FILE);
    let state = paths.sidecar_state();
    let _ = std::fs::remove_file(&state);
    if !config.notify && config.health.is_none() {
        let _ = std::fs::remove_file(&config_file);
        return Ok(());
    }
    if let Some(dir) = state.parent() {
        std::fs::create_dir_all(dir).map_err(|e| internal("sidecar dir", &e))?;
    }
    let sidecar = SidecarConfig {
        notify: config.notify,
        health: config.health.clone(),
        state_file: state,
    };
    let json = serde_json::to_vec(&sidecar).map_err(|e| internal("sidecar config", &e))?;
    std::fs::write(&config_file, json).map_err(|e| internal("sidecar config", &e))?;
    let notify_dir = bundle.join(NOTIFY_DIR);
    std::fs::create_dir_all(&notify_dir).map_err(|e| internal("notify dir", &e))?;
    if config.notify {
        let mount = oci_spec::runtime::MountBuilder::default()
            .destination(PathBuf::from(NOTIFY_DIR_IN_CONTAINER))
            .typ("bind")
            .source(notify_dir)
            .options(vec!["bind".into(), "nosuid".into(), "nodev".into()])
            .build()
            .map_err(|e| internal("notify mount", &e))?;
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        mounts.push(mount);
        spec.set_mounts(Some(mounts));
        if let Some(process) = spec.process_mut() {
            let mut env = process.env().clone().unwrap_or_default();
            env.retain(|e| !e.starts_with("NOTIFY_SOCKET="));
            env.push(format!(
                "NOTIFY_SOCKET={NOTIFY_DIR_IN_CONTAINER}/{NOTIFY_SOCKET_NAME}"
            ));
            process.set_env(Some(env));
        }
    }
    Ok(())
}

/// The status fields the sidecar's state sets, with the `health_status` events of the
/// transitions not recorded yet (those after `recorded_up_to`), in order.
pub(crate) fn apply(status: &mut super::ContainerStatus, state: &SidecarState) -> Vec<NewEvent> {
    status.ready = state.ready;
    status.status_text = state.status_text.clone();
    status.health = state.health.clone();
    status.health_failing_streak = state.failing_streak;
    let mut events = Vec::new();
    for transition in &state.transitions {
        if transition.at <= status.health_recorded_at {
            continue;
        }
        status.health_recorded_at = transition.at;
        events.push(NewEvent {
            kind: "health_status",
            attributes: BTreeMap::from([
                ("health_status".to_string(), transition.status.clone()),
                (
                    "failing_streak".to_string(),
                    transition.failing_streak.to_string(),
                ),
            ]),
        });
    }
    events
}

/// podman inspect's `State.Health` and `Config.Healthcheck` (durations in nanoseconds, as
/// podman prints them).
pub(crate) fn inspect_into(
    document: &mut serde_json::Value,
    config: &ContainerConfig,
    status: &super::ContainerStatus,
) {
    let Some(health) = &config.health else {
        return;
    };
    document["State"]["Health"] = serde_json::json!({
        "Status": status.health,
        "FailingStreak": status.health_failing_streak,
    });
    document["Config"]["Healthcheck"] = serde_json::json!({
        "Test": health.command,
        "Interval": health.interval * 1000,
        "Timeout": health.timeout * 1000,
        "Retries": health.retries,
        "StartPeriod": health.start_period * 1000,
    });
}

impl Engine {
    /// Follows the sidecars' state files (inotify), and reads those written while berthd
    /// was away.
    pub(crate) async fn follow_sidecars(&self) -> Result<()> {
        let dir = self.inner().paths.sidecar_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| EngineError::Internal(format!("create {}: {e}", dir.display())))?;
        let mut changes: mpsc::UnboundedReceiver<String> = crate::monitor::exits::watch(&dir)
            .map_err(|e| EngineError::Internal(format!("watch sidecars: {e}")))?;
        let existing: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|name| !name.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        for id in existing {
            self.sidecar_changed(&id).await;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            while let Some(id) = changes.recv().await {
                engine.sidecar_changed(&id).await;
            }
        });
        Ok(())
    }

    async fn sidecar_changed(&self, id: &str) {
        let _busy = self.busy();
        let path = self.inner().paths.container(id).sidecar_state();
        let Some(state) = SidecarState::read(&path) else {
            return;
        };
        let inner = self.inner().clone();
        let locked = match inner.lock(id).await {
            Ok(locked) => locked,
            Err(EngineError::NoSuchContainer(_) | EngineError::Removed(_)) => {
                // Its container is gone: so is the point of the file.
                let _ = std::fs::remove_file(&path);
                return;
            }
            Err(_) => return,
        };
        let mut status = locked.status();
        let before = status.clone();
        let events = apply(&mut status, &state);
        if status == before {
            return;
        }
        if let Err(error) = locked.commit(status, events).await {
            tracing::warn!(%id, %error, "recording the sidecar's state failed");
        }
    }

    /// Runs the health check now (`podman healthcheck run`): `healthy` when this check
    /// passed, else `unhealthy` (the `Health` property counts it toward the retries).
    pub async fn healthcheck(&self, _caller: Caller, id: &str) -> Result<String> {
        let config = self.config(id)?;
        let Some(health) = config.health else {
            return Err(EngineError::InvalidArgument(format!(
                "container {} has no health check",
                config.name
            )));
        };
        let status = self.status(id)?;
        super::Verb::Healthcheck.check(id, status.state)?;
        let paths = self.inner().paths.container(id);
        let path = paths.sidecar_state();
        let checks_before = SidecarState::read(&path).map_or(0, |s| s.checks);
        sidecar::send(paths.bundle(), sidecar::RUN_CHECK)
            .map_err(|e| EngineError::Internal(format!("reach the health checker: {e}")))?;
        // The sidecar runs it at once; it writes its state when done.
        let deadline = tokio::time::Instant::now()
            + Duration::from_micros(health.timeout)
            + Duration::from_secs(5);
        loop {
            if let Some(state) = SidecarState::read(&path) {
                if state.checks > checks_before {
                    self.sidecar_changed(id).await;
                    let passed = state.last_exit_code == 0;
                    return Ok(if passed { "healthy" } else { "unhealthy" }.to_string());
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(EngineError::Internal(
                    "the health check did not finish".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::sidecar::HealthTransition;

    fn transition(at: u64, status: &str) -> HealthTransition {
        HealthTransition {
            at,
            status: status.into(),
            failing_streak: 0,
            exit_code: 0,
            output: String::new(),
        }
    }

    #[test]
    fn transitions_are_recorded_once_and_in_order() {
        let mut status = super::super::ContainerStatus::new();
        let mut state = SidecarState {
            health: "healthy".into(),
            transitions: vec![transition(10, "unhealthy"), transition(20, "healthy")],
            ..SidecarState::default()
        };
        let events = apply(&mut status, &state);
        let kinds: Vec<_> = events
            .iter()
            .map(|e| e.attributes["health_status"].clone())
            .collect();
        assert_eq!(kinds, ["unhealthy", "healthy"]);
        assert_eq!(status.health, "healthy");
        assert!(apply(&mut status, &state).is_empty());
        state.transitions.push(transition(30, "unhealthy"));
        assert_eq!(apply(&mut status, &state).len(), 1);
    }

    #[test]
    fn other_health_keys_need_a_command() {
        let request = HealthRequest {
            retries: Some(3),
            ..HealthRequest::default()
        };
        assert!(health_config(&request).is_err());
        assert_eq!(health_config(&HealthRequest::default()).unwrap(), None);
        let request = HealthRequest {
            command: vec!["true".into()],
            interval: Some(1_000_000),
            ..HealthRequest::default()
        };
        let health = health_config(&request).unwrap().unwrap();
        assert_eq!((health.interval, health.retries), (1_000_000, 3));
    }
}
