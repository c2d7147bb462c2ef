#!/usr/bin/env python3
"""Regenerate the real HMP transcripts used by qemu-monitor's tests.

Usage (from anywhere; needs qemu-system-x86_64, tested with QEMU 7.2):

    python3 qemu-monitor/tests/data/capture.py

For every scenario below it writes two files next to this script:

    NAME.in   the exact bytes we wrote to the monitor socket (each command + "\\n")
    NAME.out  the exact bytes QEMU wrote back, from connect until the last prompt
              (or until QEMU closed the connection, for `quit`)

How the captures are made:
- one QEMU (`-machine pc -S -vga std`, TCG, no disk, CPUs stopped) with
  `-monitor unix:PATH,server=on,wait=off`; each scenario is a fresh connection,
  so each .out starts with QEMU's greeting;
- "sequential" scenarios send one command, read until the output ends in
  "\\r\\n(qemu) ", then send the next; "pipelined" ones send all commands in one
  write (QEMU's readline handles them one after another);
- `banner-client` uses the driver's real topology instead: we listen, QEMU
  connects to us (`-monitor unix:PATH` without server=on);
- `prompt-in-reply` uses a QEMU whose `-name` contains "\\n(qemu) ", the one
  realistic way to get a line that starts with the prompt inside a reply;
- `quit` is last: QEMU exits and closes the connection without a prompt.

Every QEMU started here is killed by its PID and reaped before the script ends.
The tests hard-code a few replies (e.g. the version string), so regenerating
with another QEMU build may require updating tests/transcripts.rs.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPT_END = b"\r\n(qemu) "
TIMEOUT = 10.0

# (name, commands, pipelined)
SCENARIOS = [
    ("banner", [], False),
    ("info-status", ["info status"], False),
    ("info-version", ["info version"], False),
    ("help-info", ["help info"], False),
    ("info-qtree", ["info qtree"], False),
    ("info-registers", ["info registers"], False),
    ("unknown-command", ["foo"], False),
    ("bad-args", ["sendkey ctrl-alt-delet", "stop now", "x /2x notanumber"], False),
    ("stop-cont-reset",
     ["stop", "cont", "info status", "system_reset", "stop", "info status"], False),
    # > 80 columns: readline redraws the whole line for every character.
    ("long-command", ["set_link " + "n" * 72 + " on"], False),
    ("screendump", ["screendump {tmp}/s.ppm"], False),
    ("sendkey", ["sendkey ctrl-alt-delete"], False),
    ("set-link-bad", ["set_link nonexist on"], False),
    # The prompt text in the middle of a reply line.
    ("prompt-mid-line", ['set_link "x (qemu) y" on'], False),
    ("utf8", ["set_link \u00e9 on"], False),
    ("empty", ["", "   "], False),
    ("pipelined", ["info status", "info version", "foo", "stop"], True),
    # Written before the greeting arrives: QEMU still greets first.
    ("queued-before-banner", ["info status"], True),
    ("quit", ["info status", "quit"], False),
]


def wait_for(path, proc):
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"qemu did not create {path}")
        time.sleep(0.02)


def read_until_prompts(sock, buf, prompts):
    """Read until buf holds `prompts` line-start prompts at its end, or EOF."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        if buf.count(PROMPT_END) + buf.startswith(b"(qemu) ") >= prompts and buf.endswith(b"(qemu) "):
            return buf, False
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise RuntimeError(f"timed out; got {buf[-200:]!r}")
        if not data:
            return buf, True
        buf += data


def run_session(sock, commands, pipelined):
    sent = b""
    out = b""
    wire = [c.encode() + b"\n" for c in commands]
    prompts = 1
    if pipelined:
        sent = b"".join(wire)
        sock.sendall(sent)
    else:
        out, eof = read_until_prompts(sock, out, prompts)
    for w in wire:
        if not pipelined:
            sock.sendall(w)
            sent += w
        prompts += 1
        if not pipelined:
            out, eof = read_until_prompts(sock, out, prompts)
            if eof:
                break
    if pipelined:
        out, eof = read_until_prompts(sock, out, prompts)
    return sent, out


def save(name, sent, out):
    with open(os.path.join(HERE, name + ".in"), "wb") as f:
        f.write(sent)
    with open(os.path.join(HERE, name + ".out"), "wb") as f:
        f.write(out)
    print(f"{name}: {len(sent)} bytes in, {len(out)} bytes out")


def stop(proc):
    if proc.poll() is None:
        proc.kill()  # by PID: only the QEMU this script started
    proc.wait(timeout=TIMEOUT)


def qemu(args):
    return subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-display", "none", "-nodefaults", "-S"] + args,
        stdin=subprocess.DEVNULL,
    )


def main():
    if shutil.which("qemu-system-x86_64") is None:
        sys.exit("qemu-system-x86_64 not found")
    tmp = tempfile.mkdtemp(prefix="qemu-monitor-capture-")
    procs = []
    try:
        # Scenarios on one QEMU acting as the monitor server.
        path = os.path.join(tmp, "mon")
        proc = qemu(["-machine", "pc", "-vga", "std",
                     "-monitor", f"unix:{path},server=on,wait=off"])
        procs.append(proc)
        wait_for(path, proc)
        for name, commands, pipelined in SCENARIOS:
            commands = [c.format(tmp=tmp) for c in commands]
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
            proc = qemu(["-machine", "none", "-monitor", f"unix:{path}"])
            procs.append(proc)
            conn, _ = listener.accept()
            with conn:
                sent, out = run_session(conn, ["info status"], False)
            save("banner-client", sent, out)
        stop(proc)

        # A VM name with a newline: a reply line that starts with the prompt.
        path = os.path.join(tmp, "named")
        proc = qemu(["-machine", "none", "-name", "a\n(qemu) b",
                     "-monitor", f"unix:{path},server=on,wait=off"])
        procs.append(proc)
        wait_for(path, proc)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
            sent, out = run_session(sock, ["info name"], False)
            # The reply goes on after the false prompt; read the rest.
            out, _ = read_until_prompts(sock, out, 3)
        save("prompt-in-reply", sent, out)
        stop(proc)
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
