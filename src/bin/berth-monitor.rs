//! `berth-monitor`: the per-container monitor (see `berth::monitor`). Started by berthd only.

use std::path::PathBuf;

use berth::monitor::process::{run, MonitorOptions};
use clap::Parser;

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
}

fn main() {
    // `berth-monitor export DIR`: the chrooted tar writer berthd's Export uses.
    let mut raw = std::env::args_os().skip(1);
    if raw.next().as_deref() == Some(std::ffi::OsStr::new("export")) {
        let root = raw.next().map(PathBuf::from).unwrap_or_default();
        std::process::exit(berth::monitor::export::run(&root));
    }
    let args = Args::parse();
    std::process::exit(run(MonitorOptions {
        id: args.id,
        runtime: args.runtime,
        runtime_root: args.runtime_root,
        bundle: args.bundle,
        exit_file: args.exit_file,
        log_path: args.log,
        oom_file: args.oom_file,
        start: args.start,
    }));
}
