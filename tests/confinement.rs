//! End to end: a container is confined as podman confines one. The same probe runs inside a
//! berth container and inside `podman run --rootfs` on a copy of the same busybox rootfs
//! (podman with its own `--root`/`--runroot` under the test's directory and `--network
//! none`), and every line it prints must be the same: `/proc/self/status` (seccomp,
//! no_new_privs, capabilities), the mounts under `/proc`, `/sys` and `/dev` with their
//! options (masked and read-only paths included), and the device nodes in `/dev`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{harness, Harness};

/// Prints what is compared, one fact a line, nothing that differs between two runs of the
/// same engine (no timestamps, ids or host paths).
const PROBE: &str = r#"
grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs|Cap[A-Za-z]+):' /proc/self/status
while read -r id parent devno root point options rest; do
    fstype=${rest#*- }; fstype=${fstype%% *}
    # Where the container's cgroup sits in the hierarchy is not confinement.
    [ "$fstype" = cgroup ] && root=CGROUP
    case $point in
        /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) echo "mount $point $options $fstype $root" ;;
    esac
done < /proc/self/mountinfo | sort
for path in /dev/* /dev/pts/*; do
    echo "dev $(stat -c '%n %F %a %t:%T' "$path")"
done
for path in /proc/kcore /proc/keys /proc/timer_list /sys/firmware /sys/dev/block /proc/acpi; do
    echo "masked $path $(cat "$path" 2>/dev/null | wc -c) $(ls -A "$path" 2>/dev/null | wc -l)"
done
"#;

fn podman_available() -> bool {
    Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the probe under podman on a copy of the harness's rootfs.
fn podman_probe(h: &Harness, extra: &[&str]) -> String {
    let dir = h.dir.path();
    let rootfs = dir.join("podman-rootfs");
    if !rootfs.exists() {
        copy_tree(&h.rootfs, &rootfs);
    }
    let (_, hard_nofile) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let (_, hard_nproc) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC).unwrap();
    let nproc = hard_nproc.min(4096);
    let output = Command::new("podman")
        .arg(format!("--root={}", dir.join("podman").display()))
        .arg(format!("--runroot={}", dir.join("podman-run").display()))
        .args([
            "--storage-driver=vfs",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
            "run",
            "--rm",
            "--network=none",
            "--runtime=runc",
        ])
        // Never above the hard limit (podman asks for 1048576 otherwise).
        .arg(format!("--ulimit=nofile={hard_nofile}:{hard_nofile}"))
        .arg(format!("--ulimit=nproc={nproc}:{nproc}"))
        .args(extra)
        .arg("--rootfs")
        .arg(&rootfs)
        .args(["sh", "-c", PROBE])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn berth_probe(h: &Harness, extra: &[&str]) -> String {
    let rootfs = h.rootfs.display().to_string();
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--rootfs", &rootfs, "sh", "-c", PROBE]);
    let output = h.berthctl(&args);
    assert!(
        output.status.success(),
        "berthctl run: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Lines that differ between the two, each marked with the side that has it.
fn differences(berth: &str, podman: &str) -> Vec<String> {
    let berth_lines: Vec<&str> = berth.lines().collect();
    let podman_lines: Vec<&str> = podman.lines().collect();
    let mut out: Vec<String> = berth_lines
        .iter()
        .filter(|l| !podman_lines.contains(l))
        .map(|l| format!("berth only:  {l}"))
        .collect();
    out.extend(
        podman_lines
            .iter()
            .filter(|l| !berth_lines.contains(l))
            .map(|l| format!("podman only: {l}")),
    );
    out
}

fn the_same(what: &str, berth: &str, podman: &str) {
    let diff = differences(berth, podman);
    assert!(
        diff.is_empty(),
        "{what}: berth and podman differ:\n{}\n--- berth:\n{berth}--- podman:\n{podman}",
        diff.join("\n")
    );
}

#[test]
fn a_container_is_confined_exactly_as_podman_confines_one() {
    let Some(mut h) = harness("a_container_is_confined_exactly_as_podman_confines_one") else {
        return;
    };
    if !podman_available() {
        common::skip(
            "a_container_is_confined_exactly_as_podman_confines_one",
            "podman is not installed (scripts/test installs it)",
        );
        return;
    }
    h.start_berthd(&[]);
    let berth = berth_probe(&h, &[]);
    let podman = podman_probe(&h, &[]);
    assert!(berth.contains("Seccomp:\t2"), "no seccomp filter:\n{berth}");
    assert!(
        berth.contains("mount /sys/dev/block "),
        "/sys/dev/block is not masked:\n{berth}"
    );
    assert!(
        berth.contains("mount /proc rw,nosuid,nodev,noexec"),
        "/proc is not nosuid,nodev,noexec:\n{berth}"
    );
    the_same("default confinement", &berth, &podman);
}

#[test]
fn privileged_and_unconfined_turn_seccomp_off_as_podman_does() {
    let Some(mut h) = harness("privileged_and_unconfined_turn_seccomp_off_as_podman_does") else {
        return;
    };
    if !podman_available() {
        common::skip(
            "privileged_and_unconfined_turn_seccomp_off_as_podman_does",
            "podman is not installed (scripts/test installs it)",
        );
        return;
    }
    h.start_berthd(&[]);
    let status_lines = |text: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with("Seccomp") || l.starts_with("NoNewPrivs") || l.starts_with("Cap")
            })
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    // Privileged: no filter, every capability, nothing masked — as podman --privileged.
    let berth = status_lines(&berth_probe(&h, &["--privileged"]));
    let podman = status_lines(&podman_probe(&h, &["--privileged"]));
    assert!(berth.contains("Seccomp:\t0"), "{berth}");
    the_same("privileged", &berth, &podman);
    // An unconfined profile: no filter, the default capabilities.
    let berth = status_lines(&berth_probe(&h, &["--security-opt", "seccomp=unconfined"]));
    let podman = status_lines(&podman_probe(&h, &["--security-opt", "seccomp=unconfined"]));
    assert!(berth.contains("Seccomp:\t0"), "{berth}");
    the_same("seccomp=unconfined", &berth, &podman);
}
