//! The systemd integration end to end, inside a real booted systemd: systemd runs as PID 1 of private
//! namespaces on an overlay of `/` (tests/systemd-sandbox), berth is installed there with
//! scripts/install, and everything is checked through the system bus, systemctl, polkitd
//! and the journal. Where the namespaces or systemd are not available, the test says SKIP
//! and why.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::sandbox::Sandbox;

const MANAGER: &str = "org.berth.Engine1 /org/berth/Engine1 org.berth.Engine1.Manager";

fn property(sandbox: &Sandbox, path: &str, name: &str) -> String {
    sandbox.ok(&format!(
        "busctl get-property org.berth.Engine1 {path} org.berth.Engine1.Container {name}"
    ))
}

#[test]
fn berth_is_a_system_service_under_a_real_systemd() {
    let sandbox = match Sandbox::boot(&[
        ("/usr/lib/polkit-1/polkitd", "polkitd"),
        ("/usr/bin/dbus-send", "dbus-send"),
    ]) {
        Ok(sandbox) => sandbox,
        Err(reason) => {
            eprintln!("SKIP berth_is_a_system_service_under_a_real_systemd: {reason}");
            return;
        }
    };
    let build = Path::new(common::BERTHD)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let repo = common::repo().display().to_string();
    sandbox.ok(&format!(
        "cd {repo} && BERTH_BUILD={build} scripts/install >/dev/null && systemctl daemon-reload"
    ));
    // Overlayfs cannot stack on the sandbox's own overlay: the state gets a tmpfs.
    sandbox.ok(&format!(
        "mkdir -p /var/lib/berth && mount -t tmpfs berth /var/lib/berth && \
         {repo}/scripts/make-busybox-rootfs /var/lib/berth-test/rootfs >/dev/null"
    ));

    // 6. The installed unit verifies cleanly.
    let (_, stdout, stderr) = sandbox
        .sh("systemd-analyze verify /usr/local/lib/systemd/system/berthd.service 2>&1; echo done");
    assert_eq!(stdout, "done", "systemd-analyze verify: {stdout} {stderr}");

    // 1. Not running until the first call, which D-Bus activation answers.
    assert_eq!(sandbox.sh("systemctl is-active berthd").1, "inactive");
    sandbox.ok(&format!("busctl call {MANAGER} ListContainers"));
    assert_eq!(sandbox.sh("systemctl is-active berthd").1, "active");

    // 2. A container survives restart and stop of the service, and is adopted again.
    let rootfs = "/var/lib/berth-test/rootfs";
    sandbox.ok(&format!(
        "berthctl run -d --name sleeper --rootfs {rootfs} sleep 1000"
    ));
    let path = sandbox.container_path("sleeper");
    let pid = property(&sandbox, &path, "Pid");
    assert_ne!(pid, "u 0");
    let pid_number = pid.trim_start_matches("u ").to_string();
    let cgroup = sandbox.ok(&format!("grep name=systemd /proc/{pid_number}/cgroup"));
    assert!(cgroup.contains("/machine.slice/berth-"), "{cgroup}");
    let monitor_scopes =
        sandbox.ok("systemctl list-units --no-legend 'berth-monitor-*.scope' | wc -l");
    assert_eq!(monitor_scopes, "1");
    sandbox.ok("systemctl restart berthd");
    sandbox.ok(&format!("kill -0 {pid_number}"));
    assert_eq!(property(&sandbox, &path, "Pid"), pid);
    assert_eq!(property(&sandbox, &path, "State"), "s \"running\"");
    sandbox.ok("systemctl stop berthd");
    assert_eq!(sandbox.sh("systemctl is-active berthd").1, "inactive");
    sandbox.ok(&format!("kill -0 {pid_number}"));
    sandbox.ok(&format!("busctl call {MANAGER} ListContainers"));
    assert_eq!(property(&sandbox, &path, "Pid"), pid);
    assert_eq!(property(&sandbox, &path, "State"), "s \"running\"");

    // 5. The journal has the lifecycle, with the container's id as a field.
    let id = path.rsplit('/').next().unwrap().to_string();
    let journal = sandbox.ok(&format!(
        "journalctl -u berthd -o verbose --no-pager CONTAINER_ID={id} | grep -E '^ +EVENT=' | sort -u"
    ));
    for event in ["EVENT=create", "EVENT=init", "EVENT=start"] {
        assert!(
            journal.contains(event),
            "{event} missing from the journal: {journal}"
        );
    }

    // 3. With --idle-timeout 5, berthd leaves while a container runs; the container's exit
    //    brings it back (the monitor pings it over the bus), and the exit is recorded with
    //    its `died` event while no client was there.
    sandbox.ok(
        "mkdir -p /etc/systemd/system/berthd.service.d && printf '[Service]\\nExecStart=\\n\
         ExecStart=/usr/local/bin/berthd --bus system --idle-timeout 5\\n' \
         > /etc/systemd/system/berthd.service.d/idle.conf && systemctl daemon-reload && \
         systemctl restart berthd",
    );
    sandbox.ok(&format!(
        "berthctl run -d --name nine --rootfs {rootfs} sh -c 'sleep 9; exit 9'"
    ));
    let nine = sandbox.container_path("nine");
    sandbox.wait_for(
        "berthd idles out",
        Duration::from_secs(10),
        "systemctl is-active berthd",
        "inactive",
    );
    sandbox.wait_for(
        "the exit activates berthd",
        Duration::from_secs(15),
        "systemctl is-active berthd",
        "active",
    );
    let recorded = sandbox.ok(&format!(
        "journalctl -u berthd -o verbose --no-pager EVENT=died CONTAINER_ID={} | grep -c EVENT=died",
        nine.rsplit('/').next().unwrap()
    ));
    assert_eq!(
        recorded, "1",
        "the died event was not recorded by the activated berthd"
    );
    assert_eq!(property(&sandbox, &nine, "ExitCode"), "i 9");

    // 4. polkit: an unprivileged user is refused the mutating verbs and may read; the
    //    README's rule lets the berth group in; without polkitd, calls fail closed; root is
    //    never asked.
    sandbox.ok("useradd -M alice && groupadd berth");
    let create = format!("busctl call {MANAGER} CreateContainer 'a{{sv}}' 1 Rootfs s {rootfs}");
    let start =
        format!("busctl call org.berth.Engine1 {nine} org.berth.Engine1.Container Start b false");
    let exec = format!(
        "busctl call org.berth.Engine1 {path} org.berth.Engine1.Container Exec 'asa{{sv}}' 1 true 0"
    );
    for call in [&create, &start, &exec] {
        let (success, stdout, stderr) = sandbox.as_alice(call);
        assert!(!success, "alice was allowed: {call}: {stdout}");
        assert!(stderr.contains("Access denied"), "{call}: {stderr}");
    }
    sandbox.ok("setpriv --reuid=alice --regid=alice --init-groups busctl call org.berth.Engine1 /org/berth/Engine1 org.berth.Engine1.Manager ListContainers");
    assert_eq!(
        sandbox
            .as_alice(&format!(
                "busctl get-property org.berth.Engine1 {path} org.berth.Engine1.Container State"
            ))
            .1,
        "s \"running\""
    );
    sandbox.ok(&format!(
        "usermod -aG berth alice && install -m 0644 {repo}/dbus/examples/50-berth.rules /etc/polkit-1/rules.d/50-berth.rules"
    ));
    // polkitd reloads its rules when the directory changes.
    let start_time = Instant::now();
    loop {
        let (success, _, stderr) = sandbox.as_alice(&start);
        if success {
            break;
        }
        assert!(
            start_time.elapsed() < Duration::from_secs(10),
            "the berth group rule did not take effect: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (success, stdout, stderr) = sandbox.as_alice(&exec);
    assert!(success, "alice in group berth may exec: {stdout} {stderr}");
    let events = sandbox.ok(&format!("busctl call {MANAGER} GetEvents tu 0 0"));
    assert!(
        events.contains("\"uid\" \"1"),
        "the caller's uid is in the events: {events}"
    );
    sandbox.ok(
        "systemctl mask --runtime polkit.service >/dev/null 2>&1; systemctl stop polkit.service",
    );
    for call in [&create, &start, &exec] {
        let (success, _, stderr) = sandbox.as_alice(call);
        assert!(!success, "with polkitd gone, {call} was allowed");
        assert!(stderr.contains("Access denied"), "{call}: {stderr}");
    }
    sandbox.ok(&format!(
        "busctl call org.berth.Engine1 {path} org.berth.Engine1.Container Kill s KILL"
    ));
    sandbox.ok("berthctl rm -f sleeper nine");
}
