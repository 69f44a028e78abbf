//! The monitor process (`berth-monitor`): conmon's job, in one small single-threaded loop.
//!
//! Order matters and follows conmon-rs: fork away from berthd before anything else, become a
//! session leader and a subreaper, then run `runc create`; the container's init is reparented
//! to us when runc exits, so we can wait for it and read its status.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, ForkResult, Pid};

use super::protocol::{write_exit_file, ExitRecord, StartReport};
use crate::clock::{now_micros, rfc3339_nanos};

/// How long output is still drained after the main process has gone.
const DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// What the monitor is told on its command line.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub id: String,
    pub runtime: String,
    pub runtime_root: PathBuf,
    pub bundle: PathBuf,
    pub exit_file: PathBuf,
    /// k8s-file log; `None` for `LogDriver none`.
    pub log_path: Option<PathBuf>,
    /// A cgroup file with an `oom_kill N` line (v1 `memory.oom_control`, v2 `memory.events`).
    pub oom_file: Option<PathBuf>,
    /// `run --detach` (create and start) instead of `create`.
    pub start: bool,
}

/// Runs the monitor. Returns only in the short-lived first process, which exits at once so
/// berthd can reap it; the forked monitor ends with `std::process::exit`.
pub fn run(options: MonitorOptions) -> i32 {
    // SAFETY: called from `main` before any thread exists, so the child is a full copy of a
    // single-threaded process and may run arbitrary code.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(error) => {
            report(&StartReport::Failed {
                error: format!("monitor fork: {error}"),
            });
            return 1;
        }
    }
    let code = match monitor(&options) {
        Ok(()) => 0,
        Err(error) => {
            report(&StartReport::Failed { error });
            1
        }
    };
    std::process::exit(code)
}

/// Writes the start-up report on stdout (berthd reads it to EOF).
fn report(report: &StartReport) {
    let mut stdout = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut stdout, report);
    let _ = stdout.write_all(b"\n");
    let _ = stdout.flush();
}

fn monitor(options: &MonitorOptions) -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "become subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Termination signals are blocked and read (and dropped) from a signalfd rather than
    // ignored: an ignored signal would stay ignored in the container across exec, while a
    // blocked one does not (the child's mask is reset when the runtime is spawned).
    // SIGCHLD arrives the same way, to reap what is reparented to us.
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGTERM,
    ] {
        mask.add(signal);
    }
    mask.thread_block()
        .map_err(|e| format!("block signals: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;

    let (stdout_read, stdout_write) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (stderr_read, stderr_write) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let pid_file = options.bundle.join("pid");
    let status = Command::new(&options.runtime)
        .arg("--root")
        .arg(&options.runtime_root)
        .args(if options.start {
            &["run", "--detach"][..]
        } else {
            &["create"][..]
        })
        .arg("--bundle")
        .arg(&options.bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&options.id)
        .current_dir(&options.bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout_write))
        .stderr(Stdio::from(stderr_write))
        .status()
        .map_err(|e| format!("cannot run {}: {e}", options.runtime))?;
    // The Command and its copies of the write ends are gone: only the container holds them.
    if !status.success() {
        let mut message = read_available(&stderr_read);
        message.push_str(&read_available(&stdout_read));
        let verb = if options.start { "run" } else { "create" };
        return Err(format!("{} {verb}: {}", options.runtime, message.trim()));
    }
    let watched = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("read {}: {e}", pid_file.display()))
        .and_then(|text| {
            text.trim()
                .parse::<i32>()
                .map_err(|e| format!("pid file {}: {e}", pid_file.display()))
        })
        .and_then(|pid| {
            Ok((
                pid,
                pidfd_open(pid).map_err(|e| format!("pidfd_open {pid}: {e}"))?,
            ))
        });
    let (pid, pidfd) = match watched {
        Ok(watched) => watched,
        Err(error) => {
            // The runtime made a container we cannot watch: take it away again rather than
            // leave it running with nobody to record its exit.
            let _ = Command::new(&options.runtime)
                .arg("--root")
                .arg(&options.runtime_root)
                .args(["delete", "--force", &options.id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            return Err(error);
        }
    };

    report(&StartReport::Created {
        pid: pid as u32,
        monitor_pid: std::process::id(),
    });
    detach_stdio();

    let mut log = LogWriter::open(options.log_path.as_ref());
    let exit_code = copy_until_exit(pid, &pidfd, &signals, [stdout_read, stderr_read], &mut log);
    let record = ExitRecord {
        pid: pid as u32,
        exit_code,
        exited_at: now_micros(),
        oom_killed: options.oom_file.as_ref().is_some_and(oom_killed),
    };
    write_exit_file(&options.exit_file, &record).map_err(|e| format!("write exit file: {e}"))
}

/// Points stdin/stdout/stderr at /dev/null: berthd has read the report and may go away.
fn detach_stdio() {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for target in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors, which this process owns.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: the syscall takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whatever a failed `runc create` left in a pipe (without blocking).
fn read_available(fd: &OwnedFd) -> String {
    let _ = nix::fcntl::fcntl(
        fd.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut buffer = vec![0u8; 65536];
    let length = nix::unistd::read(fd, &mut buffer).unwrap_or(0);
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

fn exit_code_of(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Reaps every dead child; returns the main process's exit code if it was among them.
fn reap_children(main: Pid) -> Option<i32> {
    let mut main_code = None;
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        match status.pid() {
            Some(pid) if pid == main => main_code = exit_code_of(status),
            Some(_) => {}
            None => break,
        }
    }
    main_code
}

/// Copies the container's output into the log until its main process exits and its pipes
/// are drained; returns the exit code.
fn copy_until_exit(
    pid: i32,
    pidfd: &OwnedFd,
    signals: &SignalFd,
    pipes: [OwnedFd; 2],
    log: &mut LogWriter,
) -> i32 {
    let main = Pid::from_raw(pid);
    let mut open = [true, true];
    let mut exit_code: Option<i32> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut buffer = vec![0u8; 65536];
    loop {
        if let Some(deadline) = drain_deadline {
            if open == [false, false] || Instant::now() >= deadline {
                break;
            }
        }
        let mut fds = Vec::with_capacity(4);
        let mut owners = Vec::with_capacity(4);
        for (index, pipe) in pipes.iter().enumerate() {
            if open[index] {
                fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
                owners.push(index);
            }
        }
        if exit_code.is_none() {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
            owners.push(2);
            fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
            owners.push(3);
        }
        let timeout = match drain_deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis() as i32).unwrap_or(PollTimeout::ZERO)
            }
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            // Never give up on a live container (that would write a false exit code); a
            // transient failure (ENOMEM) is retried after a pause.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let ready: Vec<(usize, PollFlags)> = fds
            .iter()
            .zip(&owners)
            .filter_map(|(fd, owner)| fd.revents().filter(|r| !r.is_empty()).map(|r| (*owner, r)))
            .collect();
        drop(fds);
        for (owner, revents) in ready {
            match owner {
                0 | 1 => match nix::unistd::read(&pipes[owner], &mut buffer) {
                    Ok(0) => open[owner] = false,
                    Ok(length) => log.write(owner, &buffer[..length]),
                    Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                    Err(_) => open[owner] = false,
                },
                2 | 3 => {
                    if owner == 3 {
                        while let Ok(Some(_)) = signals.read_signal() {}
                    }
                    let _ = revents;
                    if let Some(code) = reap_children(main) {
                        exit_code = Some(code);
                        drain_deadline = Some(Instant::now() + DRAIN_LIMIT);
                    }
                }
                _ => {}
            }
        }
    }
    // Anything still reparented to us is reaped before we go.
    reap_children(main);
    exit_code.unwrap_or(255)
}

/// Reads `oom_kill N` from a cgroup file.
fn oom_killed(path: &PathBuf) -> bool {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines().any(|line| {
                line.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
        .unwrap_or(false)
}

/// Writes container output in the k8s-file format podman and CRI-O use:
/// `<RFC 3339 time> <stdout|stderr> <F|P> <text>`, `P` marking a line cut short.
pub struct LogWriter {
    file: Option<File>,
}

impl LogWriter {
    pub fn open(path: Option<&PathBuf>) -> LogWriter {
        let file = path.and_then(|path| File::options().create(true).append(true).open(path).ok());
        LogWriter { file }
    }

    pub fn write(&mut self, stream: usize, bytes: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let stream = if stream == 0 { "stdout" } else { "stderr" };
        let time = rfc3339_nanos(SystemTime::now());
        let mut out = Vec::with_capacity(bytes.len() + 64);
        let mut rest = bytes;
        while !rest.is_empty() {
            let (line, tag, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(end) => (&rest[..end], "F", &rest[end + 1..]),
                None => (rest, "P", &rest[rest.len()..]),
            };
            out.extend_from_slice(format!("{time} {stream} {tag} ").as_bytes());
            out.extend_from_slice(line);
            out.push(b'\n');
            rest = next;
        }
        let _ = file.write_all(&out);
    }
}

/// Reads a log written by [`LogWriter`] back into its text lines (used by tests and `Logs`).
pub fn read_log_lines(path: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut text = String::new();
    File::open(path)?.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter_map(|line| line.splitn(4, ' ').nth(3).map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_tagged_full_or_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr.log");
        let mut log = LogWriter::open(Some(&path));
        log.write(0, b"hello\nwor");
        log.write(1, b"oops\n");
        let text = std::fs::read_to_string(&path).unwrap();
        let fields: Vec<Vec<&str>> = text.lines().map(|l| l.splitn(4, ' ').collect()).collect();
        assert_eq!(fields.len(), 3);
        assert_eq!(&fields[0][1..], ["stdout", "F", "hello"]);
        assert_eq!(&fields[1][1..], ["stdout", "P", "wor"]);
        assert_eq!(&fields[2][1..], ["stderr", "F", "oops"]);
        assert_eq!(read_log_lines(&path).unwrap(), vec!["hello", "wor", "oops"]);
    }

    #[test]
    fn oom_kills_are_read_from_either_cgroup_version() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("memory.oom_control");
        std::fs::write(&v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n").unwrap();
        assert!(oom_killed(&v1));
        let v2 = dir.path().join("memory.events");
        std::fs::write(&v2, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n").unwrap();
        assert!(!oom_killed(&v2));
        assert!(!oom_killed(&dir.path().join("missing")));
    }
}
