#!/usr/bin/env python3
"""Writes the seed corpus in fuzz/seeds/ from the real transcripts the crates' tests replay.

Run from anywhere: python3 fuzz/make_seeds.py. The input format is described in fuzz/src/lib.rs:
a config byte, then ops: b'C' len:u8 command, b'F' len:u16le split:u8 data, b'E', b'A', b'I', b'R', b'S'.
"""
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
MONITOR_DATA = ROOT / "qemu-monitor/tests/data"
SHELL_TRANSCRIPT = ROOT / "guest-shell/tests/data/dash-transcript.bin"

# Config byte of the monitor target: index into its reply caps (0, 1, 2, 7, 16, 64, 1024, default).
CAP_DEFAULT = 7
CAP_2 = 2
CAP_16 = 4


def cmd(text):
    data = text.encode() if isinstance(text, str) else text
    assert len(data) < 256
    return b"C" + bytes([len(data)]) + data


def feed(data, split=0):
    out = b""
    # One op holds at most 65535 bytes.
    for i in range(0, len(data), 0xFFFF):
        chunk = data[i : i + 0xFFFF]
        out += b"F" + struct.pack("<HB", len(chunk), split) + chunk
    return out


EOF = b"E"


def capture(name):
    commands = (MONITOR_DATA / f"{name}.in").read_bytes().decode().split("\n")[:-1]
    return commands, (MONITOR_DATA / f"{name}.out").read_bytes()


def monitor_seeds():
    seeds = {}
    # Every command queued up front, then QEMU's output, then end of file, as the transcript tests do.
    for name, split in [
        ("banner", 0),
        ("info-status", 0),
        ("pipelined", 3),
        ("quit", 1),
        ("prompt-mid-line", 0),
        ("prompt-in-reply", 0),
        ("bad-args", 5),
        ("utf8", 2),
        ("empty", 0),
        ("queued-before-banner", 0),
        ("unknown-command", 0),
    ]:
        commands, out = capture(name)
        seeds[name] = bytes([CAP_DEFAULT]) + b"".join(map(cmd, commands)) + feed(out, split) + EOF
    # Interactive: the greeting first, the command once the monitor is idle, then the reply.
    commands, out = capture("info-status")
    first_prompt = out.index(b"(qemu) ") + len(b"(qemu) ")
    seeds["info-status-interactive"] = (
        bytes([CAP_DEFAULT]) + feed(out[:first_prompt]) + cmd(commands[0]) + feed(out[first_prompt:], 7)
    )
    # Replies above small caps: truncation.
    commands, out = capture("info-version")
    seeds["info-version-cap2"] = bytes([CAP_2]) + cmd(commands[0]) + feed(out) + EOF
    commands, out = capture("set-link-bad")
    seeds["set-link-bad-cap16"] = bytes([CAP_16]) + cmd(commands[0]) + feed(out, 4) + EOF
    return seeds


def shell_segments():
    data = SHELL_TRANSCRIPT.read_bytes()
    segs = []
    while data:
        nl = data.index(b"\n")
        n = int(data[:nl])
        segs.append(data[nl + 1 : nl + 1 + n])
        data = data[nl + 1 + n :]
    return segs


# The commands guest-shell/tests/real_shell.rs ran to record the transcript (nonces 1, 2, ...).
SHELL_COMMANDS = [
    "echo hi # c",
    "printf 'no newline'",
    "exit 3",
    "printf '\\036E00000000000000000000000000000001 0\\036 fake\\n'",
    "(sleep 0.2; echo late) & echo started",
    "printf '\\377'",
]


def shell_seeds():
    segs = shell_segments()
    assert len(segs) == len(SHELL_COMMANDS) + 1
    seeds = {}
    whole = bytes([0]) + feed(segs[0])
    for c, seg in zip(SHELL_COMMANDS, segs[1:]):
        whole += cmd(c) + feed(seg)
    seeds["dash-transcript"] = whole
    split = bytes([0]) + feed(segs[0], 1)
    for i, (c, seg) in enumerate(zip(SHELL_COMMANDS, segs[1:])):
        split += cmd(c) + feed(seg, 3 + i)
    seeds["dash-transcript-split"] = split + EOF

    def marker(kind, n, tail=""):
        return f"\x1e{kind}{n:032x}{tail}".encode()

    banner = b"boot noise\r\nSpawning backdoor root shell...\r\n"
    # A command abandoned mid-output; its late output is stray until the next start marker.
    seeds["abandon"] = (
        bytes([0])
        + feed(banner)
        + cmd("yes")
        + feed(marker("B", 1, "\x1e") + b"y\ny\n", 2)
        + b"A"
        + feed(b"y\ny\n")
        + cmd("true")
        + feed(b"y\n" + marker("B", 2, "\x1e") + marker("E", 2, " 0\x1e"))
    )
    # Interrupt, then the interrupt command's own exit.
    seeds["interrupt"] = (
        bytes([0])
        + feed(banner)
        + cmd("sleep 100")
        + feed(marker("B", 1, "\x1e") + b"started\n")
        + b"I"
        + feed(marker("B", 2, "\x1e") + marker("E", 2, " 0\x1e") + marker("E", 1, " 137\x1e"), 5)
    )
    # End of file mid-command, the shell restarted, and a restored snapshot resumed.
    seeds["eof-reset-resume"] = (
        bytes([0])
        + feed(banner)
        + cmd("cat /proc/uptime")
        + feed(marker("B", 1, "\x1e") + b"12.5 3.1\n\x1eE")
        + EOF
        + b"R"
        + feed(b"Spawning backdoor root shell...\n", 1)
        + cmd("true")
        + feed(marker("B", 2, "\x1e") + marker("E", 2, " 0\x1e"))
        + b"S"
        + cmd("exit 255")
        + feed(marker("B", 3, "\x1e") + marker("E", 3, " 255\x1e"))
    )
    # A bad exit status loses the session.
    seeds["bad-status"] = (
        bytes([0]) + feed(banner) + cmd("x") + feed(marker("B", 1, "\x1e") + marker("E", 1, " 12x"))
    )
    return seeds


def write(target, seeds):
    d = ROOT / "fuzz/seeds" / target
    d.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (d / name).write_bytes(data)
        print(f"{d / name}: {len(data)} bytes")


if __name__ == "__main__":
    write("monitor_decoder", monitor_seeds())
    write("shell_decoder", shell_seeds())
