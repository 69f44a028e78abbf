#!/usr/bin/python3
"""The first output, as a desktop application reads it: GDBus (PyGObject) calls
StartAndAttach, reads the stdout and stderr fds it returns, then Wait.

Usage: gdbus_start_and_attach.py BUS-ADDRESS ROOTFS RUNS
"""
import os
import sys

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

NAME = "org.berth.Engine1"
MANAGER = "org.berth.Engine1.Manager"
CONTAINER = "org.berth.Engine1.Container"


def read_to_end(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


def main():
    address, rootfs, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    flags = (
        Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
        | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
    )
    bus = Gio.DBusConnection.new_for_address_sync(address, flags, None, None)
    spec = {
        "Rootfs": GLib.Variant("s", rootfs),
        "Name": GLib.Variant("s", "gdbus-first"),
        "Command": GLib.Variant(
            "as", ["/bin/sh", "-c", "echo first; echo err >&2; exit 4"]
        ),
    }
    (path,) = bus.call_sync(
        NAME, "/org/berth/Engine1", MANAGER, "CreateContainer",
        GLib.Variant("(a{sv})", (spec,)), GLib.VariantType("(o)"),
        Gio.DBusCallFlags.NONE, -1, None,
    ).unpack()
    for run in range(runs):
        reply, fd_list = bus.call_with_unix_fd_list_sync(
            NAME, path, CONTAINER, "StartAndAttach",
            GLib.Variant("(ba{sv})", (False, {})), GLib.VariantType("(hhh)"),
            Gio.DBusCallFlags.NONE, -1, None, None,
        )
        fds = fd_list.steal_fds()
        stdin, stdout, stderr = (fds[i] for i in reply.unpack())
        os.close(stdin)
        out, err = read_to_end(stdout), read_to_end(stderr)
        (code,) = bus.call_sync(
            NAME, path, CONTAINER, "Wait", None, GLib.VariantType("(i)"),
            Gio.DBusCallFlags.NONE, -1, None,
        ).unpack()
        if (out, err, code) != ("first\n", "err\n", 4):
            print(f"run {run}: stdout {out!r} stderr {err!r} exit {code}")
            return 1
    print(f"{runs} runs: first/err/4 every time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
