#!/usr/bin/env python3
"""Manual smoke test of a guest built by guests/build.sh (no driver needed).

Usage:
    guests/smoke.py [--runs N] [--timeout S] [--accel tcg] GUEST_DIR
    e.g. guests/smoke.py "$(guests/build.sh tiny)"

For each run it starts GUEST_DIR/run-*-vm the way the driver does (TMPDIR=<fresh dir> USE_TMPDIR=1, plus
`-accel tcg -display none -serial stdio -monitor none -chardev socket,id=shell,path=<dir>/shell
-device virtio-serial -device virtconsole,chardev=shell -no-reboot`), listens on the shell socket (QEMU
connects to it, as it does to the driver), and checks:
  * the backdoor banner `Spawning backdoor root shell...` arrives on the shell channel;
  * `uname -r; echo hello >&2; echo done` answers exactly "<release>\\ndone\\n" on the shell channel, i.e. what
    was sent is not echoed back (stty -echo took effect) and stderr did not go to the shell channel;
  * "hello" (the command's stderr) shows up on the serial console;
  * systemd guests: `systemctl is-system-running --wait` returns (the boot has finished);
  * `systemctl poweroff || poweroff` makes QEMU exit by itself with status 0.
It prints per run the seconds from QEMU start to the banner ("banner") and to the end of the boot ("booted"),
the first command's round trip and the time from the poweroff command to QEMU's exit; then the medians. With -v the serial console is copied to stderr.
Exit status 0 when every check of every run passed.
"""
import argparse
import glob
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BANNER = b"Spawning backdoor root shell...\n"


class Serial(threading.Thread):
    """Collects QEMU's serial console (its stdout)."""

    def __init__(self, stream, verbose):
        super().__init__(daemon=True)
        self.stream, self.verbose = stream, verbose
        self.data = bytearray()
        self.lock = threading.Lock()

    def run(self):
        while True:
            chunk = os.read(self.stream.fileno(), 65536)
            if not chunk:
                return
            with self.lock:
                self.data += chunk
            if self.verbose:
                sys.stderr.buffer.write(chunk)
                sys.stderr.buffer.flush()

    def contains(self, needle):
        with self.lock:
            return needle in self.data

    def tail(self, n=2000):
        with self.lock:
            return bytes(self.data[-n:]).decode(errors="replace")


def read_until(conn, buf, needle, deadline):
    """Reads from conn until buf contains needle; returns (before+needle, rest)."""
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out waiting for {needle!r}; got {bytes(buf)!r}")
        conn.settimeout(left)
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError(f"shell channel closed while waiting for {needle!r}; got {bytes(buf)!r}")
        buf += chunk
    i = buf.index(needle) + len(needle)
    return bytes(buf[:i]), bytearray(buf[i:])


def one_run(script, args, n):
    failures = []
    res = {}
    with tempfile.TemporaryDirectory(prefix="vmtd-smoke-") as tmp:
        shell_path = os.path.join(tmp, "shell")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(shell_path)
        listener.listen(1)
        env = dict(os.environ, TMPDIR=tmp, USE_TMPDIR="1")
        cmd = [script, "-accel", args.accel, "-display", "none", "-serial", "stdio", "-monitor", "none",
               "-chardev", f"socket,id=shell,path={shell_path}", "-device", "virtio-serial",
               "-device", "virtconsole,chardev=shell", "-no-reboot"]
        t0 = time.monotonic()
        qemu = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                start_new_session=True)
        serial = Serial(qemu.stdout, args.verbose)
        serial.start()
        deadline = t0 + args.timeout
        try:
            listener.settimeout(args.timeout)
            conn, _ = listener.accept()
            buf = bytearray()
            got, buf = read_until(conn, buf, BANNER, deadline)
            res["banner"] = time.monotonic() - t0
            if got != BANNER:
                failures.append(f"bytes before the banner on the shell channel: {got[:-len(BANNER)]!r}")

            sent = b"uname -r; echo hello >&2; echo done\n"
            t1 = time.monotonic()
            conn.sendall(sent)
            reply, buf = read_until(conn, buf, b"done\n", deadline)
            res["roundtrip"] = time.monotonic() - t1
            lines = reply.decode(errors="replace").split("\n")
            res["release"] = lines[0]
            if len(lines) != 3 or not lines[0] or b"uname" in reply or b"hello" in reply:
                failures.append(f"unexpected reply (echo? prompt?): {reply!r}")
            while not serial.contains(b"hello") and time.monotonic() < min(deadline, t1 + 5):
                time.sleep(0.05)
            res["stderr_on_serial"] = serial.contains(b"hello")
            if not res["stderr_on_serial"]:
                failures.append("the command's stderr ('hello') did not show up on the serial console")

            # systemd: until the boot has finished (multi-user.target and everything else queued).
            conn.sendall(b"command -v systemctl >/dev/null && systemctl is-system-running --wait >/dev/null; "
                         b"echo booted\n")
            _, buf = read_until(conn, buf, b"booted\n", deadline)
            res["booted"] = time.monotonic() - t0

            t2 = time.monotonic()
            conn.sendall(b"systemctl poweroff 2>/dev/null || poweroff\n")
            rc = qemu.wait(timeout=max(1, deadline - time.monotonic()))
            res["poweroff"] = time.monotonic() - t2
            if rc != 0:
                failures.append(f"QEMU exited with status {rc}")
            extra = bytes(buf)
            conn.settimeout(1)
            try:
                while chunk := conn.recv(65536):
                    extra += chunk
            except OSError:
                pass
            if extra.strip():
                failures.append(f"unexpected output on the shell channel after the command: {extra!r}")
            conn.close()
        except Exception as e:  # noqa: BLE001 - report and clean up
            failures.append(f"{type(e).__name__}: {e}")
        finally:
            if qemu.poll() is None:
                os.killpg(qemu.pid, signal.SIGKILL)  # our own child's process group
                qemu.wait()
            serial.join(timeout=5)
            listener.close()
    print(f"run {n}: " + ", ".join(
        f"{k} {v:.2f} s" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()), flush=True)
    for f in failures:
        print(f"run {n}: FAIL: {f}", flush=True)
    if failures:
        print(f"run {n}: serial console tail:\n{serial.tail()}", flush=True)
    return res, failures


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("guest_dir")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=float, default=300, help="seconds per run (default 300)")
    p.add_argument("--accel", default="tcg")
    p.add_argument("-v", "--verbose", action="store_true", help="copy the serial console to stderr")
    args = p.parse_args()
    scripts = glob.glob(os.path.join(os.path.abspath(args.guest_dir), "run-*-vm"))
    if len(scripts) != 1:
        sys.exit(f"expected exactly one run-*-vm in {args.guest_dir}, found {scripts}")
    print(f"guest: {scripts[0]}", flush=True)
    times, ok = {"banner": [], "booted": []}, True
    for n in range(1, args.runs + 1):
        res, failures = one_run(scripts[0], args, n)
        ok = ok and not failures
        for k, v in times.items():
            if k in res:
                v.append(res[k])
    for k, v in times.items():
        if v:
            print(f"{k} after QEMU start: median {statistics.median(v):.2f} s "
                  f"(runs: {', '.join(f'{b:.2f}' for b in v)})")
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
