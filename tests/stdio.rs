//! Stdio end to end: attach, start-and-attach, exec sessions and terminals over file
//! descriptors, with real runc, a real dbus-daemon running the shipped policy and berthd.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use berth::cli::proxy::ContainerProxy;
use common::{error_name, harness, session_proxy, Harness};
use zbus::Variant;

fn read_all(fd: zbus::OwnedFd) -> String {
    let mut text = String::new();
    std::fs::File::from(OwnedFd::from(fd))
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// Runs blocking reads with a bound: a test that waits on output fails, never hangs.
async fn bounded<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(Duration::from_secs(60), tokio::task::spawn_blocking(work))
        .await
        .expect("no output within 60s")
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

/// From a Rust client: the first output of a container is on the attached
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

/// The same as a desktop app does it: GDBus from Python, 200 runs in a row.
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
        common::skip(
            "a_gdbus_client_reads_first_output_200_times",
            "python3-gi is not installed",
        );
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

/// Two clients see every line; one detaching leaves the other alone;
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

/// Exec with Env and User writes into the caller's pipe and its session
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

/// The race that lost Podman's exec exit codes: 500 sessions that exit at
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
    let seen = bounded(move || reader.join().unwrap()).await;
    assert!(seen.contains("size=24x80"), "{seen}");
    assert!(seen.contains("size=40x100"), "{seen}");
    writer.write_all(b"exit 3\n").unwrap();
    assert_eq!(session.wait().await.unwrap(), 3);
}

/// A tmux server under the harness directory, for driving berthctl in a real terminal.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn start(h: &Harness, command: &str) -> Option<Tmux> {
        let found = std::process::Command::new("sh")
            .args(["-c", "command -v tmux"])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return None;
        }
        // A server of its own each time: one being killed must not race the next.
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tmux = Tmux {
            socket: h.dir.path().join(format!("tmux-{n}.sock")),
        };
        let shell = format!("{command}; echo EXIT=$?; sleep 600");
        tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            "-s",
            "berth",
            "sh",
            "-c",
            &shell,
        ]);
        tmux.run(&["set-option", "-g", "status", "off"]);
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> String {
        let output = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "tmux {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "berth"])
    }

    /// Waits (bounded) until the screen contains `text`.
    fn expect(&self, text: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{text:?} never appeared on:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send(&self, keys: &str) {
        self.run(&["send-keys", "-t", "berth", keys, "Enter"]);
    }

    fn pane_size(&self) -> String {
        self.run(&[
            "display-message",
            "-p",
            "-t",
            "berth",
            "#{pane_height} #{pane_width}",
        ])
        .trim()
        .to_string()
    }

    /// Checks the prompt, `stty size` before and after a resize, and `exit 3` as berthctl's
    /// status.
    fn drive_shell(&self) {
        self.expect("/ #");
        self.send("echo rows cols $(stty size)");
        self.expect(&format!("rows cols {}", self.pane_size()));
        self.run(&["resize-window", "-t", "berth", "-x", "72", "-y", "20"]);
        let size = self.pane_size();
        assert_eq!(size, "20 72");
        self.send("clear; echo rows cols $(stty size)");
        self.expect("rows cols 20 72");
        self.send("exit 3");
        self.expect("EXIT=3");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

/// `berthctl exec -it` and `berthctl run -it` in a real terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berthctl_exec_and_run_give_real_interactive_terminals() {
    let Some(mut h) = harness("berthctl_exec_and_run_give_real_interactive_terminals") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let _container = running(&h, &connection, "box").await;
    let berthctl = format!("env BERTH_BUS='{}' {}", h.address, common::BERTHCTL);
    let Some(tmux) = Tmux::start(&h, &format!("{berthctl} exec -it box sh")) else {
        common::skip(
            "berthctl_exec_and_run_give_real_interactive_terminals",
            "no tmux",
        );
        return;
    };
    tmux.drive_shell();
    drop(tmux);
    let run = format!("{berthctl} run -it --rm --rootfs {} sh", h.rootfs.display());
    let tmux = Tmux::start(&h, &run).unwrap();
    tmux.drive_shell();
    // Ctrl-C reaches the process inside, not berthctl.
    drop(tmux);
    let tmux = Tmux::start(&h, &format!("{berthctl} exec -it box sh")).unwrap();
    tmux.expect("/ #");
    tmux.send("trap 'echo got INT' INT; sleep 30");
    std::thread::sleep(Duration::from_millis(300));
    tmux.run(&["send-keys", "-t", "berth", "C-c"]);
    tmux.expect("got INT");
    tmux.send("exit 0");
    tmux.expect("EXIT=0");
}

/// A process's open descriptors, and those of them that are not close-on-exec (besides the
/// standard three, which a daemon keeps pointing somewhere by design).
fn descriptors(pid: u32) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut inheritable = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let fd: u32 = entry.file_name().to_str().unwrap().parse().unwrap();
        count += 1;
        let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap_or(0);
        if fd > 2 && flags & libc::O_CLOEXEC as u32 == 0 {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            inheritable.push(format!("{fd} -> {}", target.display()));
        }
    }
    (count, inheritable)
}

/// 1,000 attach and exec cycles leave berthd's and the monitor's
/// descriptor counts where they were, and every descriptor they hold is close-on-exec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_attach_and_exec_cycles_leak_no_descriptors() {
    let Some(mut h) = harness("a_thousand_attach_and_exec_cycles_leak_no_descriptors") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = h
        .create_with(
            &connection,
            "fds",
            &["sh", "-c", "while :; do echo tick; sleep 0.05; done"],
            vec![("Stdin", Variant::from(true))],
        )
        .await;
    container.start(false).await.unwrap();
    let berthd = h.berthd_pid().unwrap();
    let monitor = h.monitors()[0];
    // Warm up once (lazily opened files, thread pools) before taking the baseline.
    let warm = container.exec(&["true"], HashMap::new()).await.unwrap();
    let warm = session_proxy(&connection, warm).await;
    warm.wait().await.unwrap();
    warm.remove().await.unwrap();
    // The first client's end of input closes the container's stdin (podman's default
    // without --leave-stdin-open): that descriptor goes once, before the baseline.
    let with_stdin = descriptors(monitor).0;
    let first = container
        .attach(HashMap::from([("Stdin", Variant::from(true))]))
        .await
        .unwrap();
    drop(first);
    let start = std::time::Instant::now();
    while descriptors(monitor).0 != with_stdin - 1 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = (descriptors(berthd).0, descriptors(monitor).0);
    for cycle in 0..500 {
        let (stdin, stdout, stderr) = container
            .attach(HashMap::from([("Stdin", Variant::from(false))]))
            .await
            .unwrap();
        let mut stdout = std::fs::File::from(OwnedFd::from(stdout));
        if cycle % 50 == 0 {
            // Now and then read some output first, through the real path.
            let mut byte = [0u8; 1];
            stdout.read_exact(&mut byte).unwrap();
        }
        drop((stdin, stdout, stderr));
        let (read, write) = nix::unistd::pipe().unwrap();
        let path = container
            .exec(
                &["echo", "x"],
                HashMap::from([("Stdout", Variant::from(zbus::Fd::from(write.as_fd())))]),
            )
            .await
            .unwrap();
        drop((read, write));
        let session = session_proxy(&connection, path).await;
        session.wait().await.unwrap();
        session.remove().await.unwrap();
    }
    // Detached clients are noticed at the monitor's next wake-up (the ticking output).
    let counts = || (descriptors(berthd).0, descriptors(monitor).0);
    let start = std::time::Instant::now();
    while counts() != before && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        counts(),
        before,
        "(berthd, monitor) descriptors before and after"
    );
    for (who, pid) in [("berthd", berthd), ("monitor", monitor)] {
        let (_, inheritable) = descriptors(pid);
        assert!(
            inheritable.is_empty(),
            "{who} holds descriptors without close-on-exec: {inheritable:?}"
        );
    }
    container.stop(0).await.unwrap();
}

/// An exec session that ends while berthd is down keeps its exit code: the monitor wrote it,
/// and the next berthd records it with its `exec_died` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_exit_while_berthd_is_down_is_recorded_at_its_next_start() {
    let Some(mut h) = harness("an_exec_exit_while_berthd_is_down") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = running(&h, &connection, "away").await;
    let (read, write) = nix::unistd::pipe().unwrap();
    let path = container
        .exec(
            &["sh", "-c", "read line; exit 7"],
            HashMap::from([("Stdin", Variant::from(zbus::Fd::from(read.as_fd())))]),
        )
        .await
        .unwrap();
    drop(read);
    let session_id = path.as_str().rsplit('/').next().unwrap().to_string();
    let exit_file = h
        .runroot()
        .join("exits")
        .join(format!("{}.{session_id}", container.id().await.unwrap()));
    h.kill_berthd();
    // The session ends while nobody listens.
    drop(write);
    common::wait_until(Duration::from_secs(10), || exit_file.exists());
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let session = session_proxy(&connection, path).await;
    assert_eq!(session.wait().await.unwrap(), 7);
    let manager = berth::cli::proxy::ManagerProxy::new(&connection)
        .await
        .unwrap();
    let died: Vec<String> = manager
        .get_events(0, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.3 == "exec_died")
        .map(|e| e.4["exitCode"].clone())
        .collect();
    assert_eq!(died, vec!["7"]);
}

/// A terminal container: output comes on stdout, stderr is at end of file, input reaches the
/// shell and `Resize` changes what `stty size` says inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaching_to_a_terminal_container_gives_its_pty_and_resizes_it() {
    let Some(mut h) = harness("attaching_to_a_terminal_container") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = h
        .create_with(
            &connection,
            "term",
            &["sh"],
            vec![("Terminal", Variant::from(true))],
        )
        .await;
    assert!(container.terminal().await.unwrap());
    container.start(false).await.unwrap();
    let (stdin, stdout, stderr) = container
        .attach(HashMap::from([("Stdin", Variant::from(true))]))
        .await
        .unwrap();
    assert_eq!(
        read_all(stderr),
        "",
        "a terminal's stderr fd is at end of file"
    );
    let mut input = std::fs::File::from(OwnedFd::from(stdin));
    container.resize(30, 90).await.unwrap();
    input
        .write_all(b"echo size=$(stty size | tr ' ' x)\n")
        .unwrap();
    let mut output = std::fs::File::from(OwnedFd::from(stdout));
    let seen = bounded(move || {
        let mut seen = String::new();
        let mut buffer = [0u8; 4096];
        while !seen.contains("size=30x90") {
            let n = output.read(&mut buffer).unwrap();
            assert!(n > 0, "output ended early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
        seen
    })
    .await;
    assert!(seen.contains("size=30x90"));
    input.write_all(b"exit 6\n").unwrap();
    assert_eq!(container.wait().await.unwrap(), 6);
    let other = h.create(&connection, "plain", &["true"]).await;
    let refused = other.resize(10, 10).await.unwrap_err();
    assert_eq!(
        error_name(&refused),
        "org.freedesktop.DBus.Error.InvalidArgs"
    );
}

/// A terminal session that ends before anyone opens its pty still gives its output to the
/// first OpenPTY (as `berthctl exec -t CTR ls` needs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_terminal_session_keeps_its_output_for_the_first_open() {
    let Some(mut h) = harness("a_short_terminal_session_keeps_its_output") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let container = running(&h, &connection, "short").await;
    let path = container
        .exec(
            &["echo", "short-lived"],
            HashMap::from([("Terminal", Variant::from(true))]),
        )
        .await
        .unwrap();
    let session = session_proxy(&connection, path).await;
    assert_eq!(session.wait().await.unwrap(), 0);
    let master = std::fs::File::from(OwnedFd::from(session.open_pty().await.unwrap()));
    let output = bounded(move || {
        let mut master = master;
        let mut seen = String::new();
        let mut buffer = [0u8; 1024];
        // The slave side is gone: the data, then EIO.
        while let Ok(n) = master.read(&mut buffer) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
        seen
    })
    .await;
    assert!(output.contains("short-lived"), "{output:?}");
    // Once only.
    let again = session.open_pty().await.unwrap_err();
    assert_eq!(error_name(&again), "org.freedesktop.DBus.Error.InvalidArgs");
    // A session without a terminal has none to open.
    let plain = container.exec(&["true"], HashMap::new()).await.unwrap();
    let plain = session_proxy(&connection, plain).await;
    let refused = plain.open_pty().await.unwrap_err();
    assert_eq!(
        error_name(&refused),
        "org.freedesktop.DBus.Error.InvalidArgs"
    );
}
