//! `berth-monitor`: the per-container monitor (see `berth::monitor`). Started by berthd only.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

use berth::monitor::process::{run, MonitorOptions};
use berth::monitor::sidecar::SidecarArgs;
use berth::monitor::stdio::Client;
use clap::Parser;

/// Where berthd puts an attached client's ends (`--attach`): stdout, stderr, then stdin.
const ATTACH_FDS: [i32; 3] = [3, 4, 5];

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
        let args = SidecarArgs::parse_from(std::env::args_os().skip(1));
        std::process::exit(berth::monitor::sidecar::run(args));
    }
    let options = MonitorOptions::parse();
    let attach = options.attach.then(|| {
        let stdin = options.attach_stdin.then(|| inherited(ATTACH_FDS[2]));
        Client::new(
            inherited(ATTACH_FDS[0]),
            Some(inherited(ATTACH_FDS[1])),
            stdin,
        )
    });
    std::process::exit(run(options, attach));
}
