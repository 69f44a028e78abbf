//! `berth-monitor`: the per-container monitor (see `berth::monitor`). Started by berthd only.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

use berth::monitor::process::{run, MonitorOptions, RestoreArgs};
use berth::monitor::stdio::Client;
use clap::Parser;

/// Where berthd puts an attached client's ends (`--attach`): stdout, stderr, then stdin.
const ATTACH_FDS: [i32; 3] = [3, 4, 5];

#[derive(Parser)]
#[command(version, about = "berth's per-container monitor (started by berthd)")]
struct Args {
    #[arg(long)]
    id: String,
    #[arg(long)]
    runtime: String,
    #[arg(long)]
    runtime_root: PathBuf,
    #[arg(long)]
    bundle: PathBuf,
    #[arg(long)]
    exit_file: PathBuf,
    #[arg(long)]
    log: Option<PathBuf>,
    #[arg(long)]
    oom_file: Option<PathBuf>,
    /// Create and start (`runc run --detach`).
    #[arg(long)]
    start: bool,
    /// The process has a terminal (runc hands its pty master over a console socket).
    #[arg(long)]
    terminal: bool,
    /// Keep the process's stdin open for attached clients.
    #[arg(long)]
    stdin: bool,
    /// A client is attached from the start: its stdout and stderr ends are fds 3 and 4.
    #[arg(long)]
    attach: bool,
    /// The attached client also sends input, on fd 5.
    #[arg(long, requires = "attach")]
    attach_stdin: bool,
    /// Restore from the checkpoint in this directory instead of creating.
    #[arg(long, requires = "restore_work")]
    restore_image: Option<PathBuf>,
    /// CRIU's work directory for the restore.
    #[arg(long)]
    restore_work: Option<PathBuf>,
    /// Restore established TCP connections.
    #[arg(long)]
    tcp_established: bool,
    /// runc uses its systemd cgroup driver.
    #[arg(long)]
    systemd_cgroup: bool,
    /// Ping berthd on this bus (`system` or an address) after the exit is recorded.
    #[arg(long)]
    notify_bus: Option<String>,
}

/// Takes an inherited descriptor.
fn inherited(fd: i32) -> OwnedFd {
    // SAFETY: berthd placed this descriptor for us (`--attach`) and nothing else in this
    // process refers to it. It is made close-on-exec so the runtime does not inherit it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    fd
}

fn main() {
    // Nothing berthd's parent leaked may reach runc or the container (the `--attach` ends
    // are taken below and stay open).
    berth::fds::close_inherited_on_exec();
    // `berth-monitor export DIR`: the chrooted tar writer berthd's Export uses.
    let mut raw = std::env::args_os().skip(1);
    if raw.next().as_deref() == Some(std::ffi::OsStr::new("export")) {
        let root = raw.next().map(PathBuf::from).unwrap_or_default();
        std::process::exit(berth::monitor::export::run(&root));
    }
    // `berth-monitor sidecar …`: the notify relay and health checker the monitor starts.
    if std::env::args().nth(1).as_deref() == Some("sidecar") {
        let arguments: Vec<String> = std::env::args().skip(2).collect();
        std::process::exit(berth::monitor::sidecar::run(&arguments));
    }
    let args = Args::parse();
    let attach = args.attach.then(|| {
        let stdin = args.attach_stdin.then(|| inherited(ATTACH_FDS[2]));
        Client::new(
            inherited(ATTACH_FDS[0]),
            Some(inherited(ATTACH_FDS[1])),
            stdin,
        )
    });
    std::process::exit(run(MonitorOptions {
        id: args.id,
        runtime: args.runtime,
        runtime_root: args.runtime_root,
        bundle: args.bundle,
        exit_file: args.exit_file,
        log_path: args.log,
        oom_file: args.oom_file,
        start: args.start,
        terminal: args.terminal,
        stdin: args.stdin,
        attach,
        restore: args.restore_image.map(|image_path| RestoreArgs {
            image_path,
            work_path: args.restore_work.unwrap_or_default(),
            tcp_established: args.tcp_established,
        }),
        systemd_cgroup: args.systemd_cgroup,
        notify_bus: args.notify_bus,
    }));
}
