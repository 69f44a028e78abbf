//! berth-generator: a systemd system generator that turns `.container` files (Quadlet's
//! format) into `.service` units running `berthctl`. As every generator: no D-Bus, nothing
//! that blocks, logs to /dev/kmsg.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Logs one line to the kernel log (where generator output belongs: the journal may not run
/// yet), or to stderr when /dev/kmsg cannot be opened.
fn log(priority: u8, message: &str) {
    let line = format!(
        "<{priority}>berth-generator[{}]: {message}\n",
        std::process::id()
    );
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut kmsg| kmsg.write_all(line.as_bytes()));
    if written.is_err() {
        eprintln!("berth-generator: {message}");
    }
}

/// The berthctl installed beside this binary (scripts/install links the generator to
/// `$PREFIX/bin/berth-generator`), else the usual places; `BERTHCTL` overrides.
fn berthctl() -> PathBuf {
    if let Some(path) = std::env::var_os("BERTHCTL") {
        return PathBuf::from(path);
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("berthctl")));
    sibling
        .into_iter()
        .chain(["/usr/local/bin/berthctl", "/usr/bin/berthctl"].map(PathBuf::from))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/berthctl"))
}

fn main() {
    // systemd passes normal-dir [early-dir late-dir]; the units go to the normal one.
    let Some(output) = std::env::args_os().nth(1) else {
        log(3, "usage: berth-generator NORMAL-DIR [EARLY-DIR LATE-DIR]");
        std::process::exit(1);
    };
    // BERTH_GENERATOR_DIRS (colon-separated) replaces the search path, for tests.
    let dirs: Vec<PathBuf> = match std::env::var("BERTH_GENERATOR_DIRS") {
        Ok(list) => list.split(':').map(PathBuf::from).collect(),
        Err(_) => berth::units::SEARCH_DIRS
            .iter()
            .map(PathBuf::from)
            .collect(),
    };
    let report = berth::units::generate_all(&dirs, Path::new(&output), &berthctl());
    for failure in &report.failures {
        log(3, failure);
    }
}
