#!/usr/bin/python3
"""berth's Cockpit page in headless Chromium, served by a real cockpit-ws whose
bridge talks to a private system-type bus with berthd on it (tests/cockpit.rs sets that up).

Every check is made two ways where it matters: what the page shows (through the data-*
hooks of the page) and what berthd says over D-Bus (busctl).

Usage: cockpit_page.py BUS-ADDRESS PAGE-URL ROOTFS IMAGE WORK-DIR SCREENSHOT
"""
import json
import os
import subprocess
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

SERVICE = "org.berth.Engine1"
ROOT = "/org/berth/Engine1"
MANAGER = "org.berth.Engine1.Manager"
CONTAINER = "org.berth.Engine1.Container"


class Bus:
    """busctl on the test's bus: the second client, beside the page."""

    def __init__(self, address):
        self.address = address

    def run(self, *args, check=True):
        result = subprocess.run(
            ["busctl", "--address=" + self.address, "--json=short", "--", *args],
            capture_output=True, text=True, timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError("busctl %s failed: %s" % (" ".join(args), result.stderr))
        return result

    def call(self, path, interface, method, *args, check=True):
        return self.run("call", SERVICE, path, interface, method, *args, check=check)

    def create(self, name, command, extra=()):
        """CreateContainer from the busybox rootfs; `extra` is a list of spec entries, each
        the busctl words of one key (key, signature, value words)."""
        spec = ["Rootfs", "s", ROOTFS, "Name", "s", name, "StopTimeout", "u", "2",
                "Command", "as", str(len(command)), *command]
        for entry in extra:
            spec.extend(entry)
        count = str(4 + len(extra))
        result = self.call(ROOT, MANAGER, "CreateContainer", "a{sv}", count, *spec)
        return json.loads(result.stdout)["data"][0]

    def container(self, name):
        result = self.call(ROOT, MANAGER, "GetContainer", "s", name, check=False)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)["data"][0]

    def property(self, path, name):
        result = self.run("get-property", SERVICE, path, CONTAINER, name)
        return json.loads(result.stdout)["data"]


ROOTFS = ""


def check(condition, message):
    if not condition:
        raise AssertionError(message)
    print("ok:", message, flush=True)


def wait_for(what, limit, condition):
    """Polls the page's DOM (not D-Bus) until `condition` holds; returns the seconds taken."""
    start = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - start
        except (NoSuchElementException, StaleElementReferenceException):
            pass
        if time.monotonic() - start > limit:
            raise AssertionError("%s: not within %.1f s" % (what, limit))
        time.sleep(0.02)


class Page:
    def __init__(self, driver):
        self.driver = driver

    def rows(self, selector):
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def container_row(self, container_id):
        rows = self.rows('tr[data-container-id="%s"]' % container_id)
        return rows[0] if rows else None

    def container_state(self, container_id):
        row = self.container_row(container_id)
        return row.get_attribute("data-state") if row else None

    def container_action(self, container_id, action):
        """Opens the row's menu and clicks `action` (again if a property change redrew the
        row in between)."""
        for _ in range(20):
            try:
                row = self.container_row(container_id)
                item = row.find_element(By.CSS_SELECTOR, '[data-action="%s"]' % action)
                if not item.is_displayed():
                    row.find_element(By.CSS_SELECTOR, '[data-action="menu"]').click()
                item.click()
                return
            except StaleElementReferenceException:
                time.sleep(0.05)
        raise AssertionError("the %s action of %s could not be clicked" % (action, container_id))

    def confirm(self):
        buttons = [b for b in self.rows('[data-action="confirm"]') if b.is_displayed()]
        check(len(buttons) == 1, "one confirmation button is shown")
        buttons[0].click()

    def error_text(self):
        shown = [e.text for e in self.rows('[data-role="error"] p') if e.is_displayed()]
        shown += [e.text for e in self.rows('p[data-role="error"]') if e.is_displayed()]
        return "\n".join(shown)

    def logs(self):
        return self.driver.find_element(By.CSS_SELECTOR, '[data-role="logs"]').text

    def field(self, name):
        return self.driver.find_element(By.CSS_SELECTOR, '[data-field="%s"]' % name)


def container_id(path):
    return path.rsplit("/", 1)[1]


def count_method_calls(address, seconds):
    """Method calls seen on the bus by a monitor during `seconds` of idling."""
    monitor = subprocess.Popen(
        ["dbus-monitor", "--address", address, "--monitor"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        # The monitor's own NameLost/NameAcquired signals tell it is in place.
        first = monitor.stdout.readline()
        check(first.startswith("signal"), "dbus-monitor is watching the bus")
        time.sleep(seconds)
    finally:
        monitor.terminate()
    output, _ = monitor.communicate(timeout=10)
    calls = [line for line in output.splitlines() if line.startswith("method call")]
    return calls


def main():
    global ROOTFS
    address, url, ROOTFS, image, work, screenshot = sys.argv[1:7]
    bus = Bus(address)

    options = webdriver.ChromeOptions()
    for argument in [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--window-size=1400,1000",
        "--user-data-dir=" + os.path.join(work, "chromium"),
    ]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    page = Page(driver)
    # A container whose create event happened before the page existed: only GetEvents has it.
    bus.create("configured-only", ["/bin/echo", "not yet"])
    try:
        driver.get(url)
        wait_for("the page loads berth's engine properties", 20,
                 lambda: driver.find_element(By.ID, "engine").text.startswith("berth "))
        wait_for("the event log so far is shown", 5.0, lambda: any(
            "configured-only" in row.text and "create" in row.text
            for row in page.rows("tr[data-event-seq]")))
        check(True, "the events table starts with the log from GetEvents")
        run_checks(bus, page, address, image, work)
        # The whole page in one picture, from the top.
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(max(height, 1000), 2400))
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.3)
        driver.save_screenshot(screenshot)
        check(os.path.getsize(screenshot) > 10000, "the screenshot is saved to " + screenshot)
    except Exception:
        print("page at failure:", driver.current_url, driver.page_source[:3000], flush=True)
        raise
    finally:
        for entry in driver.get_log("browser"):
            if entry.get("level") in ("SEVERE", "WARNING"):
                print("browser:", entry.get("message"), flush=True)
        driver.quit()
    print("cockpit page: all points hold", flush=True)


def check_parsers(page):
    """The create dialog's parsers, run in the page itself."""
    run = page.driver.execute_script
    words = run("""return splitCommandLine(arguments[0])""",
                """sh -c 'echo "a b"' x\\ y "q\\"z" '' """)
    check(words == ["sh", "-c", 'echo "a b"', "x y", 'q"z', ""],
          "a command line splits as a shell splits it: %r" % words)
    thrown = run("""try { splitCommandLine("echo 'open"); return ""; }
                    catch (e) { return e.message; }""")
    check("unterminated" in thrown, "an open quote is refused: " + thrown)
    cases = {
        "8080:80": ["", 8080, 80, "tcp"],
        "127.0.0.1:8080:80/udp": ["127.0.0.1", 8080, 80, "udp"],
        "[::1]:0:53/udp": ["::1", 0, 53, "udp"],
    }
    for text, expected in cases.items():
        parsed = run("return parsePortMapping(arguments[0])", text)
        check(parsed == expected, "published port %s reads as %r" % (text, parsed))
    for text in ["80", "8080:80/sctp", "99999:80", "a:b"]:
        thrown = run("""try { parsePortMapping(arguments[0]); return ""; }
                        catch (e) { return e.message; }""", text)
        check(thrown != "", "published port %s is refused: %s" % (text, thrown))


def check_rendering(page):
    """Rows for properties this engine may not have yet (networks, pull jobs), drawn from
    made-up proxies by the page's own functions."""
    run = page.driver.execute_script
    cell = run("""return networkCell({ data: { Ports: [["", 8080, 80, "tcp"]],
                                               IPAddress: "10.89.0.2" } })""")
    check(cell == "*:8080 → 80/tcp, 10.89.0.2", "ports and IP address read: " + cell)
    job = run("""renderJob({ path: "/test/job", data: { State: "running", Progress: 0.5,
                             Target: "example.test/a:1", Detail: "layer 1 of 2",
                             BytesDone: 500000, BytesTotal: 1000000 } });
                 const row = document.querySelector('[data-job="/test/job"]');
                 const bar = row.querySelector('[data-role="progress"]');
                 const text = [bar.dataset.value, bar.firstChild.style.width, row.textContent];
                 removeJob({ path: "/test/job" });
                 return text.concat([String(document.querySelector('[data-job]'))]);""")
    check(job[:2] == ["0.5", "50%"] and "layer 1 of 2" in job[2] and "500 kB of 1.0 MB" in job[2]
          and job[3] == "null",
          "a running Job's properties fill its progress bar: %r" % job)


def run_checks(bus, page, address, image, work):
    check_parsers(page)
    check_rendering(page)

    # Point 1: another client creates and starts a container; the row follows.
    path = bus.create("from-busctl", ["/bin/sh", "-c", "while true; do sleep 1; done"])
    ident = container_id(path)
    took = wait_for("the busctl-created container appears", 1.0,
                    lambda: page.container_row(ident) is not None)
    check(True, "a container created with busctl is in the table after %.2f s" % took)
    bus.call(path, CONTAINER, "Start", "b", "false")
    took = wait_for("the row turns running", 1.0,
                    lambda: page.container_state(ident) == "running")
    check(True, "Start from busctl turns the row running after %.2f s" % took)
    wait_for("the start event is listed", 1.0, lambda: any(
        "from-busctl" in row.text and "start" in row.text
        for row in page.rows("tr[data-event-seq]")))
    check(True, "the live Event signal of the start is in the events table")

    # Point 5: a refused action shows the D-Bus error text.
    refused = bus.call(path, CONTAINER, "Unpause", check=False)
    check(refused.returncode != 0, "Unpause of a running container is refused over D-Bus")
    expected = refused.stderr.strip().removeprefix("Call failed: ")
    page.container_action(ident, "unpause")
    wait_for("the refusal is shown", 2.0, lambda: expected in page.error_text())
    check("org.berth.Engine1.Error.InvalidState" in page.error_text(),
          "the page shows the refusal: " + page.error_text().replace("\n", " / "))

    # Point 2: Stop and Remove from the page, checked over D-Bus.
    page.container_action(ident, "stop")
    wait_for("the row shows the stop", 10.0,
             lambda: page.container_state(ident) in ("stopped", "exited"))
    state = bus.property(path, "State")
    check(state in ("stopped", "exited"), "Stop in the page stopped it (D-Bus State %s)" % state)
    page.container_action(ident, "remove")
    page.confirm()
    wait_for("the removed row goes away", 5.0, lambda: page.container_row(ident) is None)
    check(bus.container("from-busctl") is None,
          "Remove in the page removed it (GetContainer fails) and the row is gone")

    # Point 3: following logs; new output is on the page within 1 s.
    feed = os.path.join(work, "feed")
    os.makedirs(feed, exist_ok=True)
    talker = bus.create(
        "talker",
        ["/bin/sh", "-c",
         "echo talker up; while true; do if [ -e /feed/line ]; then cat /feed/line; "
         "rm /feed/line; fi; sleep 0.05; done"],
        [["Mounts", "aa{sv}", "1", "3", "Type", "s", "bind", "Source", "s", feed,
          "Destination", "s", "/feed"]],
    )
    bus.call(talker, CONTAINER, "Start", "b", "false")
    talker_id = container_id(talker)
    wait_for("the talker row is running", 2.0,
             lambda: page.container_state(talker_id) == "running")
    page.container_action(talker_id, "logs")
    wait_for("the logs view shows the first line", 3.0, lambda: "talker up" in page.logs())
    for n in range(3):
        marker = "marker-%d-%d" % (n, time.time_ns())
        with open(os.path.join(feed, "line.tmp"), "w") as f:
            f.write(marker + "\n")
        os.rename(os.path.join(feed, "line.tmp"), os.path.join(feed, "line"))
        took = wait_for("the new log line is shown", 1.0, lambda: marker in page.logs())
        check(True, "new output of a running container is in the logs view after %.2f s" % took)

    # Point 4: create and run from the page.
    page.driver.find_element(By.CSS_SELECTOR, '[data-action="create"]').click()
    page.field("image").send_keys(image)
    page.field("name").send_keys("made-in-page")
    page.field("command").send_keys("""sh -c 'echo "hello from the page: $GREETING"; sleep 600'""")
    page.field("env").send_keys("GREETING=hi there")
    page.confirm()
    made = None

    def created():
        nonlocal made
        made = bus.container("made-in-page")
        return made is not None
    wait_for("the container made in the page exists over D-Bus", 5.0, created)
    command = bus.property(made, "Command")
    check(command == ["sh", "-c", 'echo "hello from the page: $GREETING"; sleep 600'],
          "the page created it with the command line split as a shell does: %r" % command)
    wait_for("the made container runs", 5.0, lambda: bus.property(made, "State") == "running")
    check(True, "create-and-run started it (D-Bus State running)")
    page.container_action(container_id(made), "logs")
    wait_for("its output shows the environment", 3.0,
             lambda: "hello from the page: hi there" in page.logs())
    check(True, "its Env reached the process (the logs view shows it)")

    # Images: the imported image is a row with its size; pulling either starts a Job or
    # shows the D-Bus error (no PullImage on this engine). 127.0.0.1:9 refuses at once.
    rows = page.rows("tr[data-image-id]")
    check(any(image in row.text and "B" in row.text for row in rows),
          "the images table lists %s with its size" % image)
    page.field("pull-reference").send_keys("127.0.0.1:9/berth-test/none:latest")
    page.driver.find_element(By.CSS_SELECTOR, '[data-action="pull"]').click()
    wait_for("the pull reports", 20.0, lambda: page.error_text() != "" or any(
        job.get_attribute("data-state") in ("failed", "completed")
        for job in page.rows("[data-job]")))
    jobs = page.rows("[data-job]")
    if jobs:
        check(True, "the pull has a progress bar that ended %s: %s"
              % (jobs[0].get_attribute("data-state"), jobs[0].text.replace("\n", " / ")))
    else:
        check("org.berth.Engine1" in page.error_text() or "DBus" in page.error_text()
              or "PullImage" in page.error_text(),
              "the refused pull shows the D-Bus error: " + page.error_text().replace("\n", " / "))
        page.driver.find_element(By.ID, "error-close").click()

    # Point 7's states: paused, exited, configured, beside the running ones.
    paused = bus.create("paused-one", ["/bin/sh", "-c", "while true; do sleep 1; done"])
    bus.call(paused, CONTAINER, "Start", "b", "false")
    bus.call(paused, CONTAINER, "Pause")
    finished = bus.create("finished-job", ["/bin/sh", "-c", "echo done; exit 3"])
    bus.call(finished, CONTAINER, "Start", "b", "false")
    bus.call(finished, CONTAINER, "Wait")
    wait_for("the states show", 3.0, lambda: (
        page.container_state(container_id(paused)) == "paused"
        and page.container_state(container_id(finished)) in ("stopped", "exited")))
    wait_for("the exit code shows", 3.0,
             lambda: "exit 3" in page.container_row(container_id(finished)).text)
    check(True, "the table shows paused, exited (exit 3), running and configured containers")

    # Point 6: idle for 10 s (logs still following), no method calls on the bus.
    time.sleep(1)
    calls = count_method_calls(address, 10)
    check(calls == [], "no D-Bus method calls while the page idles 10 s (%d seen)" % len(calls))


if __name__ == "__main__":
    main()
