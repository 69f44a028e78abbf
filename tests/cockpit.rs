//! The Cockpit page (`cockpit/`) in a real browser: berthd on a private system-type bus, a
//! real `cockpit-ws --local-session=cockpit-bridge` whose bridge talks to that bus, and
//! headless Chromium driven by `tests/cockpit_page.py` (Selenium), which checks the page
//! against busctl.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{harness, wait_until};

const COCKPIT_WS: &str = "/usr/lib/cockpit/cockpit-ws";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const PYTHON: &str = "/usr/bin/python3";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What this test needs beyond the harness (scripts/test installs it), if something is missing.
fn missing_browser_requirement() -> Option<String> {
    for program in [COCKPIT_WS, CHROMEDRIVER, "/usr/bin/chromium"] {
        if !Path::new(program).exists() {
            return Some(format!("{program} is not installed"));
        }
    }
    for program in ["cockpit-bridge", "dbus-monitor"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {program}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{program} is not installed"));
        }
    }
    let has_selenium = Command::new(PYTHON)
        .args(["-c", "import selenium"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_selenium {
        return Some("python3-selenium is not installed".into());
    }
    None
}

/// cockpit-ws serving the repository's `cockpit/` as the package `berth`, its bridge on the
/// harness's bus. Killed (by pid) when dropped; its bridge exits with it.
struct CockpitWs {
    child: Child,
    port: u16,
}

impl CockpitWs {
    fn start(dir: &Path, bus_address: &str) -> CockpitWs {
        // Cockpit finds packages in $XDG_DATA_DIRS/cockpit/: ours first, then the system's
        // base1 (cockpit.js) and static files.
        let packages = dir.join("share/cockpit");
        std::fs::create_dir_all(&packages).unwrap();
        std::os::unix::fs::symlink(repo().join("cockpit"), packages.join("berth")).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("cockpit-ws.log")).unwrap();
        let child = Command::new(COCKPIT_WS)
            .args(["--local-session=cockpit-bridge", "--address", "127.0.0.1"])
            .arg("--port")
            .arg(port.to_string())
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
            .env(
                "XDG_DATA_DIRS",
                format!(
                    "{}:/usr/local/share:/usr/share",
                    dir.join("share").display()
                ),
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        CockpitWs { child, port }
    }

    fn page_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/cockpit/@localhost/berth/index.html",
            self.port
        )
    }
}

impl Drop for CockpitWs {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The page end to end: live rows from another client's create and start, Stop and
/// Remove from the page, following logs, create-and-run, a refused action's D-Bus error, no
/// method calls while idle, and a screenshot (written to `target/cockpit-screenshot.png`, or
/// to `$BERTH_SCREENSHOT`: the README's picture is `BERTH_SCREENSHOT=cockpit/screenshot.png`).
#[test]
fn the_cockpit_page_follows_and_drives_berth_in_a_real_browser() {
    let name = "the_cockpit_page_follows_and_drives_berth_in_a_real_browser";
    let Some(mut h) = harness(name) else {
        return;
    };
    if let Some(reason) = missing_browser_requirement() {
        eprintln!("SKIP {name}: {reason}");
        return;
    }
    h.start_berthd(&[]);
    let tar = h.rootfs_tar();
    let imported = h.berthctl(&[
        "import",
        &tar.display().to_string(),
        "--reference",
        "busybox",
    ]);
    assert!(
        imported.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let ws = CockpitWs::start(h.dir.path(), &h.address);
    let work = h.dir.path().join("browser");
    std::fs::create_dir_all(&work).unwrap();
    let screenshot = std::env::var_os("BERTH_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/cockpit-screenshot.png"));
    let output = Command::new("timeout")
        .arg("600")
        .arg(PYTHON)
        .arg(repo().join("tests/cockpit_page.py"))
        .arg(&h.address)
        .arg(ws.page_url())
        .arg(&h.rootfs)
        .arg("busybox")
        .arg(&work)
        .arg(&screenshot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    let log = std::fs::read_to_string(h.dir.path().join("cockpit-ws.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "{stdout}\n{}\ncockpit-ws: {log}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("cockpit page: all points hold"), "{stdout}");
    drop(ws);
}
