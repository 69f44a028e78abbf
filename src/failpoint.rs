//! Crash points for tests: with `BERTH_FAILPOINT=<step>` in its environment, berthd kills
//! itself with SIGKILL when it reaches that named step. `tests/crash.rs` crashes
//! berthd at each step in [`STEPS`] and checks that the next start-up reconciles everything.
//! Unset, a failpoint costs one comparison.

use std::sync::OnceLock;

/// Every named step, in the order of the verbs they belong to.
pub const STEPS: &[&str] = &[
    "create.after-directory",
    "init.after-launch",
    "start.after-launch",
    "start.after-runc-start",
    "stop.after-signal",
    "kill.after-signal",
    "restart.after-stop",
    "pause.after-runc-pause",
    "unpause.after-runc-resume",
    "exec.after-launch",
    "remove.after-runtime-release",
    "remove.after-unmount",
    "import.after-unpack",
    "checkpoint.after-dump",
];

/// Kills the process if `step` is the failpoint chosen in `BERTH_FAILPOINT`.
pub fn hit(step: &'static str) {
    static CHOSEN: OnceLock<Option<String>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| std::env::var("BERTH_FAILPOINT").ok());
    if chosen.as_deref() == Some(step) {
        debug_assert!(STEPS.contains(&step), "unlisted failpoint {step}");
        eprintln!("berthd: failpoint {step}: killing itself");
        // SIGKILL, as `kill -9` would: no unwinding, no destructor, no core file.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}
