//! Engine tests on the fakes: the whole state table, exits, restart policy, events.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::fake::FakeWorld;
use super::*;

const ROOT: Caller = Caller { uid: 0 };

struct Setup {
    engine: Engine,
    world: Arc<FakeWorld>,
    rootfs: tempfile::TempDir,
    _dir: tempfile::TempDir,
    _notifications: mpsc::UnboundedReceiver<Notification>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let world = FakeWorld::new();
    let options = EngineOptions {
        root: dir.path().join("root"),
        runroot: dir.path().join("run"),
        init_binary: None,
        storage_driver: "overlay".into(),
        systemd_cgroups: false,
    };
    let (engine, notifications) = Engine::open(options, world.backends()).unwrap();
    engine.start_up().await.unwrap();
    Setup {
        engine,
        world,
        rootfs,
        _dir: dir,
        _notifications: notifications,
    }
}

fn request(setup: &Setup, name: &str) -> CreateRequest {
    CreateRequest {
        name: Some(name.to_string()),
        rootfs: Some(setup.rootfs.path().display().to_string()),
        command: vec!["/bin/true".into()],
        ..Default::default()
    }
}

async fn create(setup: &Setup, name: &str) -> String {
    setup
        .engine
        .create(ROOT, request(setup, name))
        .await
        .unwrap()
}

/// Waits (bounded) until the container reaches `state`.
async fn reach(engine: &Engine, id: &str, state: State) {
    let entry = engine.inner().entry(id).unwrap();
    let mut receiver = entry.status.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        receiver.wait_for(|s| s.state == state),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "container never reached {state}; it is {}",
            entry.status().state
        )
    })
    .unwrap();
}

/// Drives a new container into `state` through the verbs.
async fn container_in(setup: &Setup, name: &str, state: State) -> String {
    let id = create(setup, name).await;
    let engine = &setup.engine;
    match state {
        State::Configured => {}
        State::Created => engine.init(ROOT, &id).await.unwrap(),
        State::Running => engine.start(ROOT, &id, false).await.unwrap(),
        State::Paused => {
            engine.start(ROOT, &id, false).await.unwrap();
            engine.pause(ROOT, &id).await.unwrap();
        }
        State::Stopped => {
            engine.start(ROOT, &id, false).await.unwrap();
            *setup.world.fail_delete.lock().unwrap() = true;
            setup.world.exit(&id, 1);
            reach(engine, &id, State::Stopped).await;
            // Let the failed cleanup finish before the runtime heals.
            tokio::time::sleep(Duration::from_millis(50)).await;
            *setup.world.fail_delete.lock().unwrap() = false;
        }
        State::Exited => {
            engine.start(ROOT, &id, false).await.unwrap();
            setup.world.exit(&id, 0);
            reach(engine, &id, State::Exited).await;
        }
        other => panic!("{other} is not reachable through verbs"),
    }
    assert_eq!(engine.status(&id).unwrap().state, state);
    id
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Ok,
    InvalidState,
    ContainerStopped,
}

fn outcome(result: Result<()>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(EngineError::InvalidState { .. }) => Outcome::InvalidState,
        Err(EngineError::ContainerStopped(_)) => Outcome::ContainerStopped,
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

/// Which state each verb accepts, as the Container interface documents each verb, written out
/// independently of `State`'s predicates.
fn expected(verb: &str, state: State) -> Outcome {
    use State::*;
    let accepted = match verb {
        "init" => matches!(state, Configured | Stopped | Exited),
        "start" => matches!(state, Configured | Created | Stopped | Exited | Running),
        "stop" if matches!(state, Stopped | Exited) => return Outcome::ContainerStopped,
        "stop" => matches!(state, Created | Running | Stopping),
        "restart" => !matches!(state, Paused | Unknown | Removing),
        "kill" => matches!(state, Running | Stopping),
        "pause" => state == Running,
        "unpause" => state == Paused,
        "cleanup" => !matches!(state, Running | Paused | Stopping | Removing),
        "mount" => state != Removing,
        "remove" => !matches!(state, Created | Running | Paused | Stopping),
        other => panic!("no row for {other}"),
    };
    if accepted {
        Outcome::Ok
    } else {
        Outcome::InvalidState
    }
}

async fn apply(engine: &Engine, verb: &str, id: &str) -> Result<()> {
    match verb {
        "init" => engine.init(ROOT, id).await,
        "start" => engine.start(ROOT, id, false).await,
        "stop" => engine.stop(ROOT, id, 1).await,
        "restart" => engine.restart(ROOT, id, 1).await,
        "kill" => engine.kill(ROOT, id, "TERM").await,
        "pause" => engine.pause(ROOT, id).await,
        "unpause" => engine.unpause(ROOT, id).await,
        "cleanup" => engine.cleanup(ROOT, id).await,
        "mount" => engine.mount(ROOT, id).await.map(drop),
        "remove" => engine.remove(ROOT, id, false).await,
        other => panic!("unknown verb {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_accepts_exactly_the_states_of_the_design_table() {
    let setup = setup().await;
    let verbs = [
        "init", "start", "stop", "restart", "kill", "pause", "unpause", "cleanup", "mount",
        "remove",
    ];
    let states = [
        State::Configured,
        State::Created,
        State::Running,
        State::Paused,
        State::Stopped,
        State::Exited,
    ];
    let mut mismatches = Vec::new();
    for (n, state) in states.into_iter().enumerate() {
        for (m, verb) in verbs.iter().enumerate() {
            let id = container_in(&setup, &format!("c{n}-{m}"), state).await;
            let got = outcome(apply(&setup.engine, verb, &id).await);
            let want = expected(verb, state);
            if got != want {
                mismatches.push(format!("{verb} in {state}: got {got:?}, want {want:?}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_verb_changes_neither_state_nor_the_event_log() {
    let setup = setup().await;
    let id = container_in(&setup, "paused", State::Paused).await;
    let before = setup.engine.events(0, 0).await.unwrap().len();
    let error = setup.engine.stop(ROOT, &id, 1).await.unwrap_err();
    assert!(matches!(
        error,
        EngineError::InvalidState {
            state: State::Paused,
            ..
        }
    ));
    assert_eq!(setup.engine.status(&id).unwrap().state, State::Paused);
    assert_eq!(setup.engine.events(0, 0).await.unwrap().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_is_recorded_with_its_code_and_events_in_order() {
    let setup = setup().await;
    let id = container_in(&setup, "x", State::Running).await;
    let waiter = {
        let engine = setup.engine.clone();
        let id = id.clone();
        tokio::spawn(async move { engine.wait(&id).await })
    };
    setup.world.exit(&id, 3);
    assert_eq!(waiter.await.unwrap().unwrap(), 3);
    reach(&setup.engine, &id, State::Exited).await;
    let status = setup.engine.status(&id).unwrap();
    assert_eq!(
        (status.exit_code, status.pid, status.mount_count),
        (3, 0, 0)
    );
    let kinds: Vec<String> = setup
        .engine
        .events(0, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    let position = |kind: &str| kinds.iter().position(|k| k == kind).unwrap();
    assert!(position("create") < position("init"));
    assert!(position("init") < position("start"));
    assert!(position("start") < position("died"));
    assert!(position("died") < position("cleanup"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_escalates_to_sigkill_after_the_timeout() {
    let setup = setup().await;
    let id = container_in(&setup, "stubborn", State::Running).await;
    setup.world.ignored_signals.lock().unwrap().push(15);
    let started = std::time::Instant::now();
    setup.engine.stop(ROOT, &id, 1).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(setup.engine.status(&id).unwrap().exit_code, 137);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_answers_while_stop_waits_out_its_timeout() {
    let setup = setup().await;
    let id = container_in(&setup, "stubborn", State::Running).await;
    setup.world.ignored_signals.lock().unwrap().push(15);
    let stopper = {
        let engine = setup.engine.clone();
        let id = id.clone();
        tokio::spawn(async move { engine.stop(ROOT, &id, 30).await })
    };
    reach(&setup.engine, &id, State::Stopping).await;
    tokio::time::timeout(Duration::from_secs(2), setup.engine.kill(ROOT, &id, "KILL"))
        .await
        .expect("kill blocked behind stop")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), stopper)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(setup.engine.status(&id).unwrap().exit_code, 137);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_a_failing_container_and_counts_it() {
    let setup = setup().await;
    let mut request = request(&setup, "flaky");
    request.restart_policy = Some("on-failure:1".into());
    let id = setup.engine.create(ROOT, request).await.unwrap();
    setup.engine.start(ROOT, &id, false).await.unwrap();
    let first_pid = setup.engine.status(&id).unwrap().pid;
    setup.world.exit(&id, 1);
    let entry = setup.engine.inner().entry(&id).unwrap();
    let mut receiver = entry.status.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        receiver.wait_for(|s| s.state == State::Running && s.pid != first_pid),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(setup.engine.status(&id).unwrap().restart_count, 1);
    // The limit is reached: the next failure stays exited.
    setup.world.exit(&id, 1);
    reach(&setup.engine, &id, State::Exited).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(setup.engine.status(&id).unwrap().state, State::Exited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_answers_once_the_exit_is_cleaned_up() {
    let setup = setup().await;
    let id = container_in(&setup, "waited", State::Running).await;
    let engine = setup.engine.clone();
    let waiting = {
        let id = id.clone();
        tokio::spawn(async move { engine.wait(&id).await })
    };
    setup.world.exit(&id, 3);
    let code = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code, 3);
    // A verb sent right after the answer finds the container cleaned up, not `stopped`.
    assert_eq!(setup.engine.status(&id).unwrap().state, State::Exited);
    setup.engine.start(ROOT, &id, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_answers_when_the_cleanup_after_an_exit_fails() {
    let setup = setup().await;
    let id = container_in(&setup, "stuck", State::Running).await;
    *setup.world.fail_delete.lock().unwrap() = true;
    let engine = setup.engine.clone();
    let waiting = {
        let id = id.clone();
        tokio::spawn(async move { engine.wait(&id).await })
    };
    setup.world.exit(&id, 4);
    let code = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("Wait answers although the cleanup failed")
        .unwrap()
        .unwrap();
    assert_eq!(code, 4);
    let status = setup.engine.status(&id).unwrap();
    assert_eq!(status.state, State::Stopped);
    assert!(!status.error.is_empty());
}

async fn inspect_state(engine: &Engine, id: &str) -> serde_json::Value {
    let json = engine.inspect(id, false, false).await.unwrap();
    serde_json::from_str::<serde_json::Value>(&json).unwrap()["State"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_restarting_while_the_restart_policy_backs_off() {
    let setup = setup().await;
    let mut request = request(&setup, "backoff");
    request.restart_policy = Some("always".into());
    let id = setup.engine.create(ROOT, request).await.unwrap();
    setup.engine.start(ROOT, &id, false).await.unwrap();
    assert_eq!(inspect_state(&setup.engine, &id).await["Restarting"], false);
    let first_pid = setup.engine.status(&id).unwrap().pid;
    setup.world.exit(&id, 1);
    reach(&setup.engine, &id, State::Exited).await;
    // The policy's first delay is 100 ms: Restarting shows within it, before the new run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut seen = inspect_state(&setup.engine, &id).await;
    while seen["Restarting"] != true && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
        seen = inspect_state(&setup.engine, &id).await;
    }
    assert_eq!(seen["Restarting"], true, "{seen}");
    assert_eq!(seen["Status"], "exited");
    let entry = setup.engine.inner().entry(&id).unwrap();
    let mut receiver = entry.status.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        receiver.wait_for(|s| s.state == State::Running && s.pid != first_pid),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(inspect_state(&setup.engine, &id).await["Restarting"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_dead_for_a_removal_that_could_not_finish() {
    let setup = setup().await;
    let id = container_in(&setup, "busy", State::Exited).await;
    setup.engine.mount(ROOT, &id).await.unwrap();
    assert_eq!(inspect_state(&setup.engine, &id).await["Dead"], false);
    *setup.world.fail_unmount.lock().unwrap() = true;
    setup.engine.remove(ROOT, &id, true).await.unwrap_err();
    let state = inspect_state(&setup.engine, &id).await;
    assert_eq!(
        (&state["Status"], &state["Dead"]),
        (&"removing".into(), &true.into())
    );
    // Once the mount is free, the removal finishes.
    *setup.world.fail_unmount.lock().unwrap() = false;
    setup.engine.remove(ROOT, &id, true).await.unwrap();
    assert!(matches!(
        setup.engine.status(&id),
        Err(EngineError::NoSuchContainer(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_container_is_not_restarted_by_its_policy() {
    let setup = setup().await;
    let mut request = request(&setup, "always");
    request.restart_policy = Some("always".into());
    let id = setup.engine.create(ROOT, request).await.unwrap();
    setup.engine.start(ROOT, &id, false).await.unwrap();
    setup.engine.stop(ROOT, &id, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(setup.engine.status(&id).unwrap().state, State::Exited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_start_starts_dependencies_first() {
    let setup = setup().await;
    let database = create(&setup, "db").await;
    let mut web = request(&setup, "web");
    web.dependencies = vec!["db".into()];
    let web = setup.engine.create(ROOT, web).await.unwrap();
    let error = setup.engine.start(ROOT, &web, false).await.unwrap_err();
    assert!(matches!(error, EngineError::DependencyNotRunning { .. }));
    setup.engine.start(ROOT, &web, true).await.unwrap();
    assert_eq!(
        setup.engine.status(&database).unwrap().state,
        State::Running
    );
    assert_eq!(setup.engine.status(&web).unwrap().state, State::Running);
    // The dependency cannot go while web names it, and the refusal says who does.
    let refused = setup
        .engine
        .remove(ROOT, &database, true)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("web depend"), "{refused}");
    assert!(matches!(refused, EngineError::HasDependents { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_are_reference_counted() {
    let setup = setup().await;
    let id = container_in(&setup, "m", State::Running).await;
    let error = setup.engine.unmount(ROOT, &id, false).await.unwrap_err();
    assert!(matches!(error, EngineError::InvalidState { .. }));
    setup.engine.mount(ROOT, &id).await.unwrap();
    assert_eq!(setup.engine.status(&id).unwrap().mount_count, 2);
    setup.engine.unmount(ROOT, &id, false).await.unwrap();
    assert_eq!(setup.engine.status(&id).unwrap().mount_count, 1);
    setup.engine.mount(ROOT, &id).await.unwrap();
    setup.world.exit(&id, 0);
    reach(&setup.engine, &id, State::Exited).await;
    // The user's mount outlives the run.
    let status = setup.engine.status(&id).unwrap();
    assert!(status.mounted() && status.user_mounts == 1);
    setup.engine.unmount(ROOT, &id, false).await.unwrap();
    assert!(!setup.engine.status(&id).unwrap().mounted());
    assert!(setup.world.mounts.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_create_requests_are_refused_before_anything_is_written() {
    let setup = setup().await;
    create(&setup, "taken").await;
    let before = setup.engine.events(0, 0).await.unwrap().len();
    let bad: Vec<(CreateRequest, &str)> = vec![
        (request(&setup, "taken"), "NameInUse"),
        (
            CreateRequest {
                name: Some("../x".into()),
                ..request(&setup, "")
            },
            "InvalidArgument",
        ),
        (
            CreateRequest {
                stop_signal: Some("SIGBOGUS".into()),
                ..request(&setup, "a")
            },
            "InvalidArgument",
        ),
        (
            CreateRequest {
                restart_policy: Some("sometimes".into()),
                ..request(&setup, "b")
            },
            "InvalidArgument",
        ),
        (
            CreateRequest {
                rootfs: Some("/nonexistent".into()),
                ..request(&setup, "c")
            },
            "InvalidArgument",
        ),
        (
            CreateRequest {
                dependencies: vec!["ghost".into()],
                ..request(&setup, "d")
            },
            "NoSuchContainer",
        ),
        (
            CreateRequest {
                env: vec!["NOEQUALS".into()],
                ..request(&setup, "e")
            },
            "InvalidArgument",
        ),
    ];
    for (request, kind) in bad {
        let error = setup.engine.create(ROOT, request).await.unwrap_err();
        assert!(
            format!("{error:?}").starts_with(kind),
            "{error:?} is not {kind}"
        );
    }
    assert_eq!(setup.engine.list().len(), 1);
    assert_eq!(setup.engine.events(0, 0).await.unwrap().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_takes_names_ids_and_unique_prefixes() {
    let setup = setup().await;
    let id = create(&setup, "named").await;
    assert_eq!(setup.engine.lookup("named").unwrap(), id);
    assert_eq!(setup.engine.lookup(&id).unwrap(), id);
    assert_eq!(setup.engine.lookup(&id[..10]).unwrap(), id);
    assert!(matches!(
        setup.engine.lookup("nope"),
        Err(EngineError::NoSuchContainer(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_runs_in_order_and_reports_the_failing_index() {
    let setup = setup().await;
    let id = create(&setup, "b").await;
    let ops = vec![
        BatchOp::Init,
        BatchOp::Start { recursive: false },
        BatchOp::Pause,
        BatchOp::Pause,
    ];
    let (index, error) = setup.engine.batch(ROOT, &id, ops).await.unwrap_err();
    assert_eq!(index, 3);
    assert!(matches!(
        error,
        EngineError::InvalidState {
            state: State::Paused,
            ..
        }
    ));
    let ops = vec![BatchOp::Unpause, BatchOp::Stop { timeout: Some(1) }];
    setup.engine.batch(ROOT, &id, ops).await.unwrap();
    assert_eq!(setup.engine.status(&id).unwrap().state, State::Exited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_records_exits_it_missed_and_adopts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let world = FakeWorld::new();
    let options = EngineOptions {
        root: dir.path().join("root"),
        runroot: dir.path().join("run"),
        init_binary: None,
        storage_driver: "overlay".into(),
        systemd_cgroups: false,
    };
    let request = |name: &str| CreateRequest {
        name: Some(name.into()),
        rootfs: Some(rootfs.path().display().to_string()),
        command: vec!["x".into()],
        ..Default::default()
    };
    // The first berthd runs on its own runtime, dropped with all its tasks: it is down.
    let (alive, gone) = {
        let (options, world) = (options.clone(), world.clone());
        let (alive, gone) = (request("alive"), request("gone"));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let (engine, _notes) = Engine::open(options, world.backends()).unwrap();
                engine.start_up().await.unwrap();
                let alive = engine.create(ROOT, alive).await.unwrap();
                let gone = engine.create(ROOT, gone).await.unwrap();
                engine.start(ROOT, &alive, false).await.unwrap();
                engine.start(ROOT, &gone, false).await.unwrap();
                (alive, gone)
            })
        })
        .join()
        .unwrap()
    };
    // berthd is "down" (the engine is dropped); one container exits meanwhile.
    let alive_pid = world.pid(&alive).unwrap();
    world.exit(&gone, 7);
    let (engine, _notes) = Engine::open(options, world.backends()).unwrap();
    engine.start_up().await.unwrap();
    let status = engine.status(&alive).unwrap();
    assert_eq!((status.state, status.pid), (State::Running, alive_pid));
    let status = engine.status(&gone).unwrap();
    assert_eq!((status.state, status.exit_code), (State::Exited, 7));
    let events = engine.events(0, 0).await.unwrap();
    let start = events
        .iter()
        .position(|e| e.container_id == gone && e.kind == "start")
        .unwrap();
    let died = events
        .iter()
        .position(|e| e.container_id == gone && e.kind == "died")
        .unwrap();
    assert!(start < died);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_an_auto_remove_container_succeeds_and_removes_it() {
    let setup = setup().await;
    let request = CreateRequest {
        auto_remove: true,
        ..request(&setup, "temporary")
    };
    let id = setup.engine.create(ROOT, request).await.unwrap();
    setup.engine.start(ROOT, &id, false).await.unwrap();
    setup.engine.stop(ROOT, &id, 1).await.unwrap();
    let entry = setup.engine.inner().entry(&id);
    assert!(entry.is_err(), "AutoRemove left the container");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_an_auto_remove_container_keeps_it() {
    let setup = setup().await;
    let request = CreateRequest {
        auto_remove: true,
        ..request(&setup, "kept")
    };
    let id = setup.engine.create(ROOT, request).await.unwrap();
    setup.engine.start(ROOT, &id, false).await.unwrap();
    setup.engine.restart(ROOT, &id, 1).await.unwrap();
    assert_eq!(setup.engine.status(&id).unwrap().state, State::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_racing_a_natural_exit_reports_the_real_exit_code() {
    let setup = setup().await;
    let id = container_in(&setup, "racer", State::Running).await;
    // The process is gone; its monitor writes the exit file a little later.
    setup.world.exit_silently(&id);
    let world = setup.world.clone();
    let late = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        world.deliver_exit(&late, 3);
    });
    setup.engine.stop(ROOT, &id, 5).await.unwrap();
    let status = setup.engine.status(&id).unwrap();
    assert_eq!((status.state, status.exit_code), (State::Exited, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_stops_a_container_whose_monitor_is_lost() {
    let setup = setup().await;
    let id = container_in(&setup, "orphan", State::Running).await;
    setup.world.dead_monitors.lock().unwrap().push(id.clone());
    let waiter = {
        let engine = setup.engine.clone();
        let id = id.clone();
        tokio::spawn(async move { engine.wait(&id).await })
    };
    setup.engine.sync(ROOT, &id).await.unwrap();
    let status = setup.engine.status(&id).unwrap();
    assert_eq!((status.state, status.exit_code), (State::Exited, -1));
    assert!(status.error.contains("monitor"), "{}", status.error);
    let code = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code, -1, "Wait must not hang on a lost monitor");
    assert!(
        setup.world.runtime_status(&id).is_none(),
        "the orphan was left in the runtime"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_cancels_a_pending_policy_restart() {
    let setup = setup().await;
    let request = CreateRequest {
        restart_policy: Some("always".into()),
        ..request(&setup, "loop")
    };
    let id = setup.engine.create(ROOT, request).await.unwrap();
    setup.engine.start(ROOT, &id, false).await.unwrap();
    setup.world.exit(&id, 1);
    reach(&setup.engine, &id, State::Exited).await;
    setup.engine.stop(ROOT, &id, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(setup.engine.status(&id).unwrap().state, State::Exited);
    let error = setup.engine.stop(ROOT, &id, 1).await.unwrap_err();
    assert!(matches!(error, EngineError::ContainerStopped(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sessions_keep_their_exit_codes_and_end_with_the_container() {
    let setup = setup().await;
    let id = container_in(&setup, "x", State::Running).await;
    let exec = |command: &str| super::ExecRequest {
        command: vec![command.to_string()],
        ..Default::default()
    };
    let first = setup.engine.exec(ROOT, &id, exec("/bin/a")).await.unwrap();
    let second = setup.engine.exec(ROOT, &id, exec("/bin/b")).await.unwrap();
    assert!(setup.engine.exec_session(&id, &first).unwrap().running);
    setup.world.exec_exit(&first, 7);
    assert_eq!(setup.engine.exec_wait(&id, &first).await.unwrap(), 7);
    // A running session cannot be removed; an exited one can, once.
    assert!(setup.engine.exec_remove(&id, &second).await.is_err());
    setup.engine.exec_remove(&id, &first).await.unwrap();
    assert!(matches!(
        setup.engine.exec_wait(&id, &first).await,
        Err(EngineError::NoSuchExecSession(_))
    ));
    // The container exits; the session its monitor never reported ends as unknown (-1),
    // recorded before the container's own exit.
    setup.world.exit(&id, 0);
    assert_eq!(setup.engine.exec_wait(&id, &second).await.unwrap(), -1);
    reach(&setup.engine, &id, State::Exited).await;
    let kinds: Vec<String> = setup
        .engine
        .events(0, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("exec") || k == "died")
        .collect();
    assert_eq!(kinds, ["exec", "exec", "exec_died", "exec_died", "died"]);
    let refused = setup.engine.exec(ROOT, &id, exec("/bin/c")).await;
    assert!(matches!(refused, Err(EngineError::InvalidState { .. })));
}
