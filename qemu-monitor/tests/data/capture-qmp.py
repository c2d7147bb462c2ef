#!/usr/bin/env python3
"""Regenerate the real QMP transcripts used by qemu-monitor's `qmp` module tests.

Usage (from anywhere; needs qemu-system-x86_64, tested with QEMU 7.2):

    python3 qemu-monitor/tests/data/capture-qmp.py

For every scenario below it writes two files next to this script:

    qmp-NAME.in   the exact bytes we wrote to the QMP socket, encoded as `qemu_monitor::qmp::Qmp`
                  encodes them: compact JSON, keys "execute", "arguments", "id" in that order,
                  argument keys sorted, "\\r\\n" after each command; qmp_capabilities has id 0,
                  the commands ids 1, 2, ...
    qmp-NAME.out  the exact bytes QEMU wrote back, from connect until the last reply (or until QEMU
                  closed the connection, after `quit`)

How the captures are made:
- one QEMU (`-machine none -nodefaults -display none -S`, TCG) with
  `-qmp unix:PATH,server=on,wait=off`; each scenario is a fresh connection, so each .out starts with
  QEMU's greeting;
- "sequential" scenarios read the greeting, then send one command at a time and read until its reply
  (the line with its id) has arrived; "pipelined" ones write everything in one go right after
  connecting, before the greeting has been read;
- `client` uses the driver's topology: we listen, QEMU connects to us (`-qmp unix:PATH`);
- the scenarios that end in `quit` are last for their QEMU: it answers, closes the connection and
  exits (the close may be seen as ECONNRESET, which counts as end of file here).

Every QEMU started here is killed by its PID and reaped before the script ends. The tests hard-code
the replies, so regenerating with another QEMU build (or at another time: events carry timestamps)
requires updating the expectations in src/qmp/tests/mod.rs.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

# The HMP capture script's helpers: same socket wait and QEMU teardown.
from capture import HERE, TIMEOUT, stop, wait_for  # noqa: E402 (it sits beside this file)

# (name, [(command, arguments or None)], pipelined)
SCENARIOS = [
    ("session", [
        ("query-status", None),
        ("cont", None),          # RESUME arrives before cont's reply
        ("stop", None),          # STOP arrives before stop's reply
        ("system_reset", None),  # RESET with data
        ("nope", None),          # CommandNotFound
        ("stop", {"x": 1}),      # GenericError: unexpected parameter
        ("qom-get", {"path": "/machine/\u00e9", "property": "type"}),  # non-ASCII in an error
        ("query-name", None),
        ("human-monitor-command", {"command-line": "info status"}),  # "\r\n" inside a string
    ], False),
    ("schema", [("query-qmp-schema", None)], False),  # a big reply
    ("pipelined", [
        ("query-status", None),
        ("cont", None),
        ("stop", None),
        ("query-status", None),
    ], True),
    ("quit", [("query-status", None), ("quit", None)], True),
]


def encode(name, args, ident):
    out = '{"execute":' + json.dumps(name, ensure_ascii=False, separators=(",", ":"))
    if args is not None:
        out += ',"arguments":' + json.dumps(args, ensure_ascii=False, sort_keys=True,
                                            separators=(",", ":"))
    out += ',"id":%d}\r\n' % ident
    return out.encode()


def read_until(sock, buf, done):
    """Read until done(buf) or end of file; returns (buf, eof)."""
    deadline = time.monotonic() + TIMEOUT
    while not done(buf):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise RuntimeError(f"timed out; got {buf[-300:]!r}")
        except ConnectionResetError:
            data = b""
        if not data:
            return buf, True
        buf += data
    return buf, False


def has_reply(ident):
    def done(buf):
        for line in buf.split(b"\n")[:-1]:  # complete lines only
            msg = json.loads(line)
            if msg.get("id") == ident and ("return" in msg or "error" in msg):
                return True
        return False
    return done


def greeted(buf):
    return b"\n" in buf


def run_session(sock, commands, pipelined):
    wire = [encode("qmp_capabilities", None, 0)]
    wire += [encode(n, a, i + 1) for i, (n, a) in enumerate(commands)]
    out = b""
    if pipelined:
        sent = b"".join(wire)
        sock.sendall(sent)
        quits = commands and commands[-1][0] == "quit"
        out, eof = read_until(sock, out, (lambda b: False) if quits else has_reply(len(commands)))
        return sent, out
    out, eof = read_until(sock, out, greeted)
    sent = b""
    for i, w in enumerate(wire):
        sock.sendall(w)
        sent += w
        out, eof = read_until(sock, out, has_reply(i))
        if eof:
            break
    return sent, out


def save(name, sent, out):
    with open(os.path.join(HERE, f"qmp-{name}.in"), "wb") as f:
        f.write(sent)
    with open(os.path.join(HERE, f"qmp-{name}.out"), "wb") as f:
        f.write(out)
    print(f"qmp-{name}: {len(sent)} bytes in, {len(out)} bytes out")


def qemu(args):
    return subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-machine", "none", "-nodefaults",
         "-display", "none", "-S"] + args,
        stdin=subprocess.DEVNULL,
    )


def main():
    if shutil.which("qemu-system-x86_64") is None:
        sys.exit("qemu-system-x86_64 not found")
    tmp = tempfile.mkdtemp(prefix="qemu-monitor-qmp-capture-")
    procs = []
    try:
        path = os.path.join(tmp, "qmp")
        proc = qemu(["-qmp", f"unix:{path},server=on,wait=off"])
        procs.append(proc)
        wait_for(path, proc)
        for name, commands, pipelined in SCENARIOS:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(path)
                sent, out = run_session(sock, commands, pipelined)
            save(name, sent, out)
        proc.wait(timeout=TIMEOUT)  # `quit` ended it

        # The driver's topology: we listen, QEMU connects.
        path = os.path.join(tmp, "listen")
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(path)
            listener.listen(1)
            listener.settimeout(TIMEOUT)
            proc = qemu(["-qmp", f"unix:{path}"])
            procs.append(proc)
            conn, _ = listener.accept()
            with conn:
                sent, out = run_session(conn, [("query-status", None)], False)
            save("client", sent, out)
        stop(proc)
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
