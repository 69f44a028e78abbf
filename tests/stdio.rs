//! Issue 4 end to end: attach, start-and-attach, exec sessions and terminals over file
//! descriptors, with real runc, a real dbus-daemon running the shipped policy and berthd.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use berth::cli::proxy::{ContainerProxy, ExecSessionProxy};
use common::{error_name, harness, Harness};
use zbus::Variant;

fn read_all(fd: zbus::OwnedFd) -> String {
    let mut text = String::new();
    std::fs::File::from(OwnedFd::from(fd))
        .read_to_string(&mut text)
        .unwrap();
    text
}

async fn session_proxy<'a>(
    connection: &zbus::Connection,
    path: zbus::OwnedObjectPath,
) -> ExecSessionProxy<'a> {
    ExecSessionProxy::builder(connection)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

async fn running(
    h: &Harness,
    connection: &zbus::Connection,
    name: &str,
) -> ContainerProxy<'static> {
    let container = h.create(connection, name, &["sleep", "600"]).await;
    container.start(false).await.unwrap();
    container
}

/// Issue 4, point 1 (Rust client): the first output of a container is on the attached
/// stdout and stderr every time, and `Wait` gives the exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_attach_never_loses_the_first_output() {
    let Some(mut h) = harness("start_and_attach_never_loses_the_first_output") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = h
        .create(
            &connection,
            "first",
            &["/bin/sh", "-c", "echo first; echo err >&2; exit 4"],
        )
        .await;
    for run in 0..20 {
        let (stdin, stdout, stderr) = container
            .start_and_attach(false, HashMap::new())
            .await
            .unwrap();
        drop(stdin);
        let (out, err) = (read_all(stdout), read_all(stderr));
        assert_eq!(
            (out.as_str(), err.as_str()),
            ("first\n", "err\n"),
            "run {run}"
        );
        assert_eq!(container.wait().await.unwrap(), 4, "run {run}");
    }
    // The log got everything too.
    let log = read_all(
        container
            .logs(HashMap::from([("Tail", Variant::from(2u32))]))
            .await
            .unwrap(),
    );
    assert_eq!(log.lines().count(), 2, "{log}");
}

/// Issue 4, point 1 as a desktop app does it: GDBus from Python, 200 runs in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gdbus_client_reads_first_output_200_times() {
    let Some(mut h) = harness("a_gdbus_client_reads_first_output_200_times") else {
        return;
    };
    let python = "/usr/bin/python3";
    let has_gi = std::process::Command::new(python)
        .args(["-c", "import gi; gi.require_version('Gio', '2.0')"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_gi {
        eprintln!("SKIP a_gdbus_client_reads_first_output_200_times: python3-gi is not installed");
        return;
    }
    h.start_berthd(&[]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/gdbus_start_and_attach.py"
    );
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(&h.address)
        .arg(&h.rootfs)
        .arg("200")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("200 runs: first/err/4 every time"),
        "{stdout}"
    );
}

/// Issue 4, point 2: two clients see every line; one detaching leaves the other alone;
/// stdin reaches `cat` and EOF ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_attached_clients_share_output_and_stdin_reaches_cat() {
    let Some(mut h) = harness("two_attached_clients_share_output") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = h
        .create_with(
            &connection,
            "cat",
            &["cat"],
            vec![("Stdin", Variant::from(true))],
        )
        .await;
    container.init().await.unwrap();
    let (writer_in, writer_out, _writer_err) = container
        .start_and_attach(false, HashMap::new())
        .await
        .unwrap();
    // The second client only watches.
    let (_, watcher_out, _) = container
        .attach(HashMap::from([("Stdin", Variant::from(false))]))
        .await
        .unwrap();
    let mut input = std::fs::File::from(OwnedFd::from(writer_in));
    let mut writer_lines = std::io::BufReader::new(std::fs::File::from(OwnedFd::from(writer_out)));
    let mut watcher_lines =
        std::io::BufReader::new(std::fs::File::from(OwnedFd::from(watcher_out)));
    use std::io::BufRead;
    for n in 0..50 {
        writeln!(input, "line {n}").unwrap();
        for reader in [&mut writer_lines, &mut watcher_lines] {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert_eq!(line, format!("line {n}\n"));
        }
    }
    // The watcher detaches; the writer goes on undisturbed.
    drop(watcher_lines);
    for n in 50..60 {
        writeln!(input, "line {n}").unwrap();
        let mut line = String::new();
        writer_lines.read_line(&mut line).unwrap();
        assert_eq!(line, format!("line {n}\n"));
    }
    assert_eq!(container.state().await.unwrap(), "running");
    // EOF on stdin ends cat.
    drop(input);
    assert_eq!(container.wait().await.unwrap(), 0);
    let mut rest = String::new();
    writer_lines.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");
}

/// Issue 4, point 3: Exec with Env and User writes into the caller's pipe and its session
/// reports exit code 5; not found is 127.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_writes_into_the_callers_pipe_and_keeps_its_exit_code() {
    let Some(mut h) = harness("exec_writes_into_the_callers_pipe") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = running(&h, &connection, "exec").await;
    let (read, write) = nix::unistd::pipe().unwrap();
    let path = container
        .exec(
            &["/bin/sh", "-c", "echo $FOO; id -u; exit 5"],
            HashMap::from([
                ("Env", Variant::from(vec!["FOO=bar"])),
                ("User", Variant::from("nobody")),
                ("Stdout", Variant::from(zbus::Fd::from(write.as_fd()))),
            ]),
        )
        .await
        .unwrap();
    drop(write);
    let mut output = String::new();
    std::fs::File::from(read)
        .read_to_string(&mut output)
        .unwrap();
    assert_eq!(output, "bar\n65534\n");
    let session = session_proxy(&connection, path.clone()).await;
    assert_eq!(session.wait().await.unwrap(), 5);
    assert_eq!(session.exit_code().await.unwrap(), 5);
    assert_eq!(session.state().await.unwrap(), "exited");
    assert_eq!(container.exec_sessions().await.unwrap(), vec![path]);
    session.remove().await.unwrap();
    assert!(container.exec_sessions().await.unwrap().is_empty());

    let missing = container
        .exec(&["/no/such/command"], HashMap::new())
        .await
        .unwrap();
    let missing = session_proxy(&connection, missing).await;
    assert_eq!(missing.wait().await.unwrap(), 127);

    let empty = container.exec(&[], HashMap::new()).await.unwrap_err();
    assert_eq!(error_name(&empty), "org.freedesktop.DBus.Error.InvalidArgs");

    // exec and exec_died carry the session and its code in the durable log.
    let manager = berth::cli::proxy::ManagerProxy::new(&connection)
        .await
        .unwrap();
    let events = manager.get_events(0, 0).await.unwrap();
    let died: Vec<_> = events
        .iter()
        .filter(|e| e.3 == "exec_died")
        .map(|e| e.4["exitCode"].clone())
        .collect();
    assert_eq!(died, vec!["5", "127"]);
}

/// Issue 4, point 3, the race that lost Podman's exec exit codes: 500 sessions that exit at
/// once, back to back, each with its own code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_instant_exec_sessions_keep_their_exit_codes() {
    let Some(mut h) = harness("five_hundred_instant_exec_sessions") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = running(&h, &connection, "many").await;
    for n in 0..500u32 {
        let code = (n % 250) as i32;
        let path = container
            .exec(&["/bin/sh", "-c", &format!("exit {code}")], HashMap::new())
            .await
            .unwrap();
        let session = session_proxy(&connection, path).await;
        assert_eq!(session.wait().await.unwrap(), code, "session {n}");
        session.remove().await.unwrap();
    }
    container.stop(0).await.unwrap();
}

/// Stopping the container ends its sessions: their exits are recorded before its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_container_ends_its_sessions() {
    let Some(mut h) = harness("stopping_the_container_ends_its_sessions") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = running(&h, &connection, "ends").await;
    let path = container
        .exec(&["sleep", "600"], HashMap::new())
        .await
        .unwrap();
    let session = session_proxy(&connection, path).await;
    assert_eq!(session.state().await.unwrap(), "running");
    assert!(session.pid().await.unwrap() > 0);
    container.stop(1).await.unwrap();
    assert_eq!(session.wait().await.unwrap(), 137);
    let manager = berth::cli::proxy::ManagerProxy::new(&connection)
        .await
        .unwrap();
    let kinds: Vec<String> = manager
        .get_events(0, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.3)
        .filter(|k| k == "exec_died" || k == "died")
        .collect();
    assert_eq!(kinds, vec!["exec_died", "died"]);
}

/// A terminal session: the pty master comes from OpenPTY, Resize reaches the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_exec_session_has_a_pty_that_resizes() {
    let Some(mut h) = harness("a_terminal_exec_session_has_a_pty") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = running(&h, &connection, "tty").await;
    let path = container
        .exec(
            &["/bin/sh"],
            HashMap::from([
                ("Terminal", Variant::from(true)),
                ("TerminalSize", Variant::from((24u16, 80u16))),
            ]),
        )
        .await
        .unwrap();
    let session = session_proxy(&connection, path).await;
    let master = std::fs::File::from(OwnedFd::from(session.open_pty().await.unwrap()));
    let mut writer = master.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut master = master;
        let mut buffer = [0u8; 4096];
        while let Ok(n) = master.read(&mut buffer) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
            if seen.contains("size=40x100") {
                break;
            }
        }
        seen
    });
    writer
        .write_all(b"echo size=$(stty size | tr ' ' x)\n")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    session.resize(40, 100).await.unwrap();
    writer
        .write_all(b"echo size=$(stty size | tr ' ' x)\n")
        .unwrap();
    let seen = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert!(seen.contains("size=24x80"), "{seen}");
    assert!(seen.contains("size=40x100"), "{seen}");
    writer.write_all(b"exit 3\n").unwrap();
    assert_eq!(session.wait().await.unwrap(), 3);
}
