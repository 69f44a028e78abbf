// berth's Cockpit page. Its model is berth's D-Bus objects (dbus/org.berth.Engine1.*.xml):
// proxies that Cockpit's bridge keeps current from ObjectManager (InterfacesAdded/Removed)
// and PropertiesChanged, plus the containers' Event signals. Nothing here polls: once the
// page has loaded, it makes a D-Bus call only when the person asks for something.
"use strict";

const SERVICE = "org.berth.Engine1";
const ROOT = "/org/berth/Engine1";
const MANAGER = "org.berth.Engine1.Manager";
const CONTAINER = "org.berth.Engine1.Container";
const IMAGE = "org.berth.Engine1.Image";
const JOB = "org.berth.Engine1.Job";
const EVENTS_SHOWN = 50;
const LOG_CHARACTERS_KEPT = 200000;
const CONTAINER_ACTIONS = ["start", "stop", "restart", "pause", "unpause", "logs", "remove"];

// With administrative access turned on in Cockpit, calls go as root; otherwise as the
// logged-in user, whom berthd checks with polkit.
const client = cockpit.dbus(SERVICE, { bus: "system", superuser: "try" });
const containers = client.proxies(CONTAINER, ROOT);
const images = client.proxies(IMAGE, ROOT);
const jobs = client.proxies(JOB, ROOT);

const byId = (id) => document.getElementById(id);

/* ---------- small helpers ---------- */

function element(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
        if (key === "class")
            node.className = value;
        else if (key.startsWith("data-"))
            node.setAttribute(key, value);
        else
            node[key] = value;
    }
    for (const child of children) {
        if (child === null || child === undefined)
            continue;
        node.append(child instanceof Node ? child : String(child));
    }
    return node;
}

/** A D-Bus `t` timestamp (microseconds since the epoch, 0 = never) as local time. */
function formatTime(microseconds) {
    if (!microseconds)
        return "";
    return new Date(Number(microseconds) / 1000).toLocaleString();
}

function formatSize(bytes) {
    const units = ["B", "kB", "MB", "GB", "TB"];
    let value = Number(bytes);
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
        value /= 1000;
        unit += 1;
    }
    return (unit > 0 && value < 10 ? value.toFixed(1) : Math.round(value)) + " " + units[unit];
}

/** Quotes a word the way a shell reads it back, for showing a command line. */
function quoteWord(word) {
    if (word !== "" && /^[A-Za-z0-9_@%+=:,./-]+$/.test(word))
        return word;
    return "'" + word.replaceAll("'", "'\\''") + "'";
}

/**
 * Splits a shell-style command line into words: blanks separate words, '…' keeps
 * everything, "…" keeps everything but \" \\ \$ \`, and a backslash outside quotes escapes
 * the next character. No expansion: the words go to the container as they are.
 */
function splitCommandLine(line) {
    const words = [];
    let word = null;
    let quote = null;
    for (let i = 0; i < line.length; i++) {
        const c = line[i];
        if (quote === "'") {
            if (c === "'")
                quote = null;
            else
                word += c;
        } else if (quote === '"') {
            if (c === '"')
                quote = null;
            else if (c === "\\" && i + 1 < line.length && '"\\$`'.includes(line[i + 1]))
                word += line[++i];
            else
                word += c;
        } else if (/\s/.test(c)) {
            if (word !== null)
                words.push(word);
            word = null;
        } else {
            if (word === null)
                word = "";
            if (c === "'" || c === '"')
                quote = c;
            else if (c === "\\" && i + 1 < line.length)
                word += line[++i];
            else
                word += c;
        }
    }
    if (quote)
        throw new Error("the command has an unterminated " + quote + " quote");
    if (word !== null)
        words.push(word);
    return words;
}

/** `[ip:]host:container[/tcp|udp]` as the `(sqqs)` of the PortMappings spec key. */
function parsePortMapping(text) {
    const [address, protocol = "tcp"] = text.trim().split("/");
    const parts = address.split(":");
    if (parts.length < 2 || !["tcp", "udp"].includes(protocol))
        throw new Error("a published port reads [ip:]host:container[/udp], not \"" + text + "\"");
    const containerPort = Number(parts.pop());
    const hostPort = Number(parts.pop());
    const hostIp = parts.join(":").replace(/^\[(.*)\]$/, "$1");
    const valid = (port, lowest) => Number.isInteger(port) && port >= lowest && port <= 65535;
    if (!valid(hostPort, 0) || !valid(containerPort, 1))
        throw new Error("ports are numbers up to 65535 in \"" + text + "\"");
    return [hostIp, hostPort, containerPort, protocol];
}

/** The text a person reads for a failed call: the D-Bus error's message and name. */
function errorText(error) {
    const message = error && error.message ? error.message : String(error);
    return error && error.name && error.name !== "Error" ? message + " (" + error.name + ")" : message;
}

function showError(title, error) {
    byId("error-title").textContent = title;
    byId("error-text").textContent = errorText(error);
    byId("error").hidden = false;
}

function clearError() {
    byId("error").hidden = true;
}

function call(path, iface, method, args) {
    return client.call(path, iface, method, args || []);
}

/* ---------- containers ---------- */

const STATE_COLOURS = {
    running: "green",
    paused: "orange",
    stopping: "orange",
    created: "blue",
    configured: "blue",
    stopped: "grey",
    exited: "grey",
    removing: "red",
    unknown: "red",
};

function stateLabel(state) {
    return element("span", { class: "pf-c-label pf-m-" + (STATE_COLOURS[state] || "grey") },
                   element("span", { class: "pf-c-label__content" }, state || "…"));
}

function processCell(proxy) {
    const c = proxy.data;
    if (["running", "paused", "stopping"].includes(c.State))
        return c.Pid ? "pid " + c.Pid : "";
    if (["stopped", "exited"].includes(c.State) && c.FinishedAt)
        return "exit " + c.ExitCode + (c.OOMKilled ? " (OOM)" : "");
    return "";
}

function networkCell(proxy) {
    const c = proxy.data;
    const parts = [];
    for (const [hostIp, hostPort, containerPort, protocol] of c.Ports || [])
        parts.push((hostIp || "*") + ":" + hostPort + " → " + containerPort + "/" + protocol);
    if (c.IPAddress)
        parts.push(c.IPAddress);
    return parts.join(", ");
}

function actionMenu(actions, label) {
    const items = actions.map(action =>
        element("li", {},
                element("button", { class: "pf-c-dropdown__menu-item", type: "button", "data-action": action },
                        action[0].toUpperCase() + action.slice(1))));
    return element("div", { class: "pf-c-dropdown pf-m-align-right" },
                   element("button", {
                       class: "pf-c-dropdown__toggle pf-m-plain", type: "button",
                       "data-action": "menu", ariaLabel: label
                   }, "⋮"),
                   element("ul", { class: "pf-c-dropdown__menu", hidden: true }, ...items));
}

const containerRows = new Map();

function renderContainer(proxy) {
    const c = proxy.data;
    if (!c.Id)
        return;
    const attributes = {
        "data-container-id": c.Id,
        "data-state": c.State || "",
        "data-path": proxy.path,
        "data-created": String(c.CreatedAt || 0),
    };
    const image = c.Image || element("span", { class: "berth-secondary" }, "host rootfs");
    const error = c.Error ? element("div", { class: "berth-secondary berth-danger" }, c.Error) : null;
    const row = element("tr", attributes,
                        element("td", { class: "berth-name" },
                                element("strong", {}, c.Name),
                                element("div", { class: "berth-secondary" }, c.Id.slice(0, 12))),
                        element("td", {}, image),
                        element("td", { class: "berth-command" }, (c.Command || []).map(quoteWord).join(" ")),
                        element("td", { "data-role": "state" }, stateLabel(c.State), error),
                        element("td", {}, processCell(proxy)),
                        element("td", {}, formatTime(c.StartedAt)),
                        element("td", {}, formatTime(c.FinishedAt)),
                        element("td", {}, networkCell(proxy)),
                        element("td", { class: "berth-actions" }, actionMenu(CONTAINER_ACTIONS, "Actions for " + c.Name)));
    const old = containerRows.get(proxy.path);
    if (old) {
        // Keep an open menu open across a property change.
        const menuWasOpen = !old.querySelector(".pf-c-dropdown__menu").hidden;
        row.querySelector(".pf-c-dropdown__menu").hidden = !menuWasOpen;
        old.replaceWith(row);
    } else {
        insertSorted(byId("containers"), row, c.CreatedAt || 0);
    }
    containerRows.set(proxy.path, row);
    updateContainerSummary();
}

/** Newest first, by CreatedAt. */
function insertSorted(body, row, created) {
    for (const other of body.children) {
        if (Number(other.dataset.created) < created) {
            body.insertBefore(row, other);
            return;
        }
    }
    body.append(row);
}

function removeContainer(proxy) {
    const row = containerRows.get(proxy.path);
    if (row)
        row.remove();
    containerRows.delete(proxy.path);
    if (logs.path === proxy.path)
        logs.append("\n[the container was removed]\n");
    updateContainerSummary();
}

function updateContainerSummary() {
    const counts = {};
    for (const proxy of Object.values(containers))
        counts[proxy.data.State] = (counts[proxy.data.State] || 0) + 1;
    const total = containerRows.size;
    byId("containers-empty").hidden = total > 0;
    byId("containers-summary").textContent = total === 0
        ? ""
        : total + " in all" + Object.entries(counts).map(([state, n]) => ", " + n + " " + state).join("");
}

function verb(action, proxy) {
    const timeout = proxy.data.StopTimeout === undefined ? 10 : proxy.data.StopTimeout;
    switch (action) {
    case "start": return call(proxy.path, CONTAINER, "Start", [false]);
    case "stop": return call(proxy.path, CONTAINER, "Stop", [timeout]);
    case "restart": return call(proxy.path, CONTAINER, "Restart", [timeout]);
    case "pause": return call(proxy.path, CONTAINER, "Pause");
    case "unpause": return call(proxy.path, CONTAINER, "Unpause");
    }
    return Promise.reject(new Error("unknown action " + action));
}

function onContainerAction(action, proxy) {
    clearError();
    if (action === "logs") {
        logs.open(proxy);
    } else if (action === "remove") {
        confirmRemoval("Remove container " + proxy.data.Name + "?",
                       "Its writable layer and logs go with it.",
                       force => call(proxy.path, CONTAINER, "Remove", [force]),
                       "Removing " + proxy.data.Name + " failed");
    } else {
        verb(action, proxy).catch(error => showError(action[0].toUpperCase() + action.slice(1) + " of " + proxy.data.Name + " failed", error));
    }
}

/* ---------- menus and dialogs ---------- */

function closeMenus(except) {
    for (const menu of document.querySelectorAll(".pf-c-dropdown__menu")) {
        if (menu !== except)
            menu.hidden = true;
    }
}

document.addEventListener("click", event => {
    const control = event.target.closest("[data-action]");
    if (!control || control.dataset.action !== "menu")
        closeMenus(null);
    if (!control)
        return;
    const action = control.dataset.action;
    const containerRow = control.closest("tr[data-container-id]");
    const imageRow = control.closest("tr[data-image-id]");
    if (action === "menu") {
        const menu = control.parentElement.querySelector(".pf-c-dropdown__menu");
        closeMenus(menu);
        menu.hidden = !menu.hidden;
    } else if (containerRow) {
        const proxy = containers[containerRow.dataset.path];
        if (proxy)
            onContainerAction(action, proxy);
    } else if (imageRow && action === "remove") {
        const proxy = images[imageRow.dataset.path];
        if (proxy) {
            clearError();
            confirmRemoval("Remove image " + (proxy.data.Names[0] || proxy.data.Id.slice(0, 12)) + "?",
                           "Containers created from it keep working only if it is not in use.",
                           force => call(proxy.path, IMAGE, "Remove", [force]),
                           "Removing the image failed");
        }
    }
});

let pendingRemoval = null;

function confirmRemoval(title, text, remove, failure) {
    byId("confirm-title").textContent = title;
    byId("confirm-text").textContent = text;
    byId("confirm-force").checked = false;
    pendingRemoval = { remove, failure };
    byId("confirm-dialog").hidden = false;
}

byId("confirm-ok").addEventListener("click", () => {
    const removal = pendingRemoval;
    pendingRemoval = null;
    byId("confirm-dialog").hidden = true;
    if (removal)
        removal.remove(byId("confirm-force").checked).catch(error => showError(removal.failure, error));
});

byId("confirm-cancel").addEventListener("click", () => {
    pendingRemoval = null;
    byId("confirm-dialog").hidden = true;
});

byId("error-close").addEventListener("click", clearError);

/* ---------- create and run ---------- */

function createSpec() {
    const value = field => byId("create-" + field).value.trim();
    const spec = { Image: cockpit.variant("s", value("image")) };
    if (value("name"))
        spec.Name = cockpit.variant("s", value("name"));
    if (value("command"))
        spec.Command = cockpit.variant("as", splitCommandLine(value("command")));
    const env = value("env").split("\n").map(line => line.trim()).filter(line => line !== "");
    for (const line of env) {
        if (!line.includes("="))
            throw new Error("environment lines read KEY=value, not \"" + line + "\"");
    }
    if (env.length > 0)
        spec.Env = cockpit.variant("as", env);
    // Sent only when filled, so an engine without networks still creates the rest.
    if (value("port"))
        spec.PortMappings = cockpit.variant("a(sqqs)", [parsePortMapping(value("port"))]);
    return spec;
}

function showCreateError(error) {
    byId("create-error").textContent = errorText(error);
    byId("create-error").hidden = false;
}

byId("create").addEventListener("click", () => {
    clearError();
    byId("create-form").reset();
    byId("create-error").hidden = true;
    byId("create-dialog").hidden = false;
    byId("create-image").focus();
});

byId("create-cancel").addEventListener("click", () => {
    byId("create-dialog").hidden = true;
});

byId("create-form").addEventListener("submit", event => {
    event.preventDefault();
    byId("create-error").hidden = true;
    let spec;
    try {
        spec = createSpec();
    } catch (error) {
        showCreateError(error);
        return;
    }
    const start = byId("create-start").checked;
    byId("create-confirm").disabled = true;
    call(ROOT, MANAGER, "CreateContainer", [spec])
            .then(([path]) => {
                byId("create-dialog").hidden = true;
                if (start) {
                    return call(path, CONTAINER, "Start", [false])
                            .catch(error => showError("The container was created but did not start", error));
                }
            })
            .catch(showCreateError)
            .finally(() => { byId("create-confirm").disabled = false });
});

/* ---------- logs ---------- */

const logs = {
    path: null,
    channel: null,

    open(proxy) {
        this.close();
        this.path = proxy.path;
        byId("logs-name").textContent = proxy.data.Name;
        byId("logs").textContent = "";
        byId("logs-card").hidden = false;
        const path = proxy.path;
        const options = { Follow: cockpit.variant("b", true), Tail: cockpit.variant("u", 1000) };
        call(path, CONTAINER, "Logs", [options])
                .then(([handle]) => {
                    if (this.path !== path)
                        return;
                    // The bridge holds the fd berthd sent; a stream channel reads it as it grows.
                    // (Same superuser option as the D-Bus client: the fd lives in the bridge that made the call.)
                    this.channel = cockpit.channel({ payload: "stream", internal: handle.internal, superuser: "try" });
                    this.channel.addEventListener("message", (event, data) => this.append(data));
                    this.channel.addEventListener("close", (event, options) => {
                        if (options.problem)
                            this.append("\n[log stream closed: " + options.problem + "]\n");
                    });
                })
                .catch(error => showError("Logs of " + proxy.data.Name + " could not be read", error));
        byId("logs-card").scrollIntoView({ block: "nearest" });
    },

    append(text) {
        const view = byId("logs");
        const atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - 4;
        let content = view.textContent + text;
        if (content.length > LOG_CHARACTERS_KEPT)
            content = content.slice(content.length - LOG_CHARACTERS_KEPT);
        view.textContent = content;
        if (atBottom)
            view.scrollTop = view.scrollHeight;
    },

    close() {
        if (this.channel)
            this.channel.close();
        this.channel = null;
        this.path = null;
        byId("logs-card").hidden = true;
    },
};

byId("logs-close").addEventListener("click", () => logs.close());

/* ---------- images and pulls ---------- */

const imageRows = new Map();

function renderImage(proxy) {
    const c = proxy.data;
    if (!c.Id)
        return;
    const names = c.Names || [];
    const row = element("tr", { "data-image-id": c.Id, "data-path": proxy.path },
                        element("td", {}, names.length ? names.join(", ") : element("span", { class: "berth-secondary" }, "<none>")),
                        element("td", { class: "berth-mono" }, c.Id.slice(0, 12)),
                        element("td", {}, formatSize(c.Size || 0)),
                        element("td", {}, formatTime(c.CreatedAt)),
                        element("td", { class: "berth-actions" },
                                element("button", { class: "pf-c-button pf-m-secondary pf-m-small", type: "button", "data-action": "remove" }, "Remove")));
    const old = imageRows.get(proxy.path);
    if (old)
        old.replaceWith(row);
    else
        byId("images").append(row);
    imageRows.set(proxy.path, row);
    updateImageNames();
}

function removeImage(proxy) {
    const row = imageRows.get(proxy.path);
    if (row)
        row.remove();
    imageRows.delete(proxy.path);
    updateImageNames();
}

function updateImageNames() {
    const list = byId("image-names");
    list.replaceChildren(...Object.values(images).flatMap(proxy => proxy.data.Names || [])
            .map(name => element("option", { value: name })));
    byId("images-empty").hidden = imageRows.size > 0;
}

const jobRows = new Map();

function renderJob(proxy) {
    const c = proxy.data;
    const progress = Number(c.Progress);
    const known = progress >= 0;
    const percent = known ? Math.round(progress * 100) : 0;
    const state = c.State || "running";
    const status = state === "failed"
        ? c.Error
        : state === "running"
            ? (c.Detail || "") + (c.BytesTotal ? " — " + formatSize(c.BytesDone || 0) + " of " + formatSize(c.BytesTotal) : "")
            : state;
    const modifier = state === "failed" || state === "cancelled" ? " pf-m-danger" : state === "completed" ? " pf-m-success" : "";
    const row = element("div", { class: "pf-c-progress pf-m-sm" + modifier, "data-job": proxy.path, "data-state": state },
                        element("div", { class: "pf-c-progress__description" }, "Pull " + (c.Target || "")),
                        element("div", { class: "pf-c-progress__status" },
                                element("span", { class: "pf-c-progress__measure" }, known ? percent + "%" : "")),
                        element("div", {
                            class: "pf-c-progress__bar" + (known ? "" : " berth-indeterminate"),
                            role: "progressbar",
                            "data-role": "progress",
                            "data-value": known ? String(progress) : "-1",
                        }, element("div", { class: "pf-c-progress__indicator", style: "width: " + (known ? percent : 100) + "%" })),
                        element("div", { class: "pf-c-progress__helper-text" + (state === "failed" ? " berth-danger" : "") }, status));
    if (state === "running") {
        row.append(element("button", { class: "pf-c-button pf-m-link pf-m-small", type: "button", "data-action": "cancel-job" }, "Cancel"));
        row.lastChild.addEventListener("click", () => call(proxy.path, JOB, "Cancel").catch(error => showError("Cancelling the pull failed", error)));
    }
    const old = jobRows.get(proxy.path);
    if (old)
        old.replaceWith(row);
    else
        byId("jobs").append(row);
    jobRows.set(proxy.path, row);
}

function removeJob(proxy) {
    const row = jobRows.get(proxy.path);
    if (row)
        row.remove();
    jobRows.delete(proxy.path);
}

byId("pull").addEventListener("click", () => {
    const reference = byId("pull-reference").value.trim();
    if (!reference)
        return;
    clearError();
    // The Job object arrives through ObjectManager and fills the progress bar from there.
    call(ROOT, MANAGER, "PullImage", [reference, {}])
            .then(() => { byId("pull-reference").value = "" })
            .catch(error => showError("Pulling " + reference + " failed", error));
});

/* ---------- events ---------- */

const events = new Map();

function addEvent(seq, timestamp, containerId, type, attributes) {
    seq = Number(seq);
    if (events.has(seq))
        return;
    events.set(seq, { seq, timestamp, containerId, type, attributes: attributes || {} });
    if (events.size > EVENTS_SHOWN) {
        const oldest = Math.min(...events.keys());
        events.delete(oldest);
    }
    renderEvents();
}

function renderEvents() {
    const rows = [...events.values()].sort((a, b) => b.seq - a.seq).map(event => {
        const { name, ...details } = event.attributes;
        return element("tr", { "data-event-seq": String(event.seq) },
                       element("td", {}, formatTime(event.timestamp)),
                       element("td", {}, name || (event.containerId || "").slice(0, 12)),
                       element("td", {}, event.type),
                       element("td", { class: "berth-secondary" },
                               Object.entries(details).map(([key, value]) => key + "=" + value).join(" ")));
    });
    byId("events").replaceChildren(...rows);
    byId("events-empty").hidden = rows.length > 0;
}

/* ---------- wiring ---------- */

function watch(proxies, render, remove) {
    proxies.addEventListener("added", (event, proxy) => render(proxy));
    proxies.addEventListener("changed", (event, proxy) => render(proxy));
    proxies.addEventListener("removed", (event, proxy) => remove(proxy));
    proxies.wait(() => Object.values(proxies).forEach(render));
}

watch(containers, renderContainer, removeContainer);
watch(images, renderImage, removeImage);
watch(jobs, renderJob, removeJob);

// The Manager's properties are const: read once. (A proxy on the ObjectManager's own path
// is not fed by GetManagedObjects, which lists only the objects below it.)
call(ROOT, "org.freedesktop.DBus.Properties", "GetAll", [MANAGER])
        .then(([properties]) => {
            const value = name => properties[name] ? properties[name].v : "";
            byId("engine").textContent = "berth " + value("Version") + " · " + value("Runtime") + " · " + value("StorageDriver");
        })
        .catch(error => showError("berth did not answer", error));

client.addEventListener("close", (event, options) => {
    showError("The connection to berth closed", { message: cockpit.message(options) });
});

// Live events first, then the log so far: an event in between is in both and shown once.
client.subscribe({ interface: CONTAINER, member: "Event", path_namespace: ROOT },
                 (path, iface, signal, [seq, timestamp, type, attributes]) =>
                     addEvent(seq, timestamp, path.split("/").pop(), type, attributes));
// GetEvents replays oldest first: read it in pages (each reply stays far below the bus's
// message limit) and keep the latest.
async function loadEventLog() {
    const page = 1000;
    let latest = [];
    let after = 0;
    for (;;) {
        const [rows] = await call(ROOT, MANAGER, "GetEvents", [after, page]);
        latest = latest.concat(rows).slice(-EVENTS_SHOWN);
        if (rows.length < page)
            break;
        after = rows[rows.length - 1][0];
    }
    latest.forEach(row => addEvent(...row));
}
loadEventLog().catch(error => showError("The event log could not be read", error));
