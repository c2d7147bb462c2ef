# The NixOS API on a machine: the tiny guest, as `machine` (driver-cli/tests/python_api.rs).
import pathlib
import tempfile
import time
from test_driver.polling_condition import PollingConditionError
from test_driver.machine.qmp import QMPAPIError

start_all()
machine.connect()

with subtest("attributes"):
    assert machine.name == "machine" and machine.booted and machine.connected
    assert machine.state_dir.name == "vm-state-machine" and machine.state_dir.is_dir()
    assert machine.monitor_path == machine.state_dir / "monitor"
    assert machine.shell_path == machine.state_dir / "shell"
    assert machine.qmp_path == machine.state_dir / "qmp"
    assert machine.shared_dir.is_dir()

with subtest("monitor and QMP"):
    help_text = machine.send_monitor_command("help")
    assert "info" in help_text and help_text.endswith("(qemu) "), help_text[-40:]
    reply = machine.qmp_client.send("query-status")
    assert reply["return"]["status"] == "running", reply
    with must_raise(r"\[CommandNotFound\]"):
        machine.qmp_client.send("no-such-command")
    try:
        machine.qmp_client.send("no-such-command")
        raise AssertionError("expected QMPAPIError")
    except QMPAPIError as error:  # as nixpkgs' qmp-api-error test reads it
        assert error.class_name == "CommandNotFound" and error.description, vars(error)
        assert error.transaction_id is None, error.transaction_id
    machine.qmp_client.send("stop")
    stop = machine.wait_for_qmp_event(lambda e: e["event"] == "STOP", timeout=30)
    assert stop["timestamp"]["seconds"] > 0, stop
    machine.qmp_client.send("cont")
    assert machine.qmp_client.wait_for_event(10)["event"] == "RESUME"  # seconds, as NixOS's
    machine.qmp_client.send("stop")
    machine.qmp_client.send("cont")
    machine.wait_for_qmp_event(lambda e: e["event"] == "RESUME", timeout=30)
    assert list(machine.qmp_client.events()) == []  # the wait looked at both
    machine.qmp_client.send("stop")
    machine.qmp_client.send("cont")
    machine.sleep(1)  # QEMU's events reach the driver meanwhile
    names = [e["event"] for e in machine.qmp_client.events()]
    assert [n for n in names if n in ("STOP", "RESUME")] == ["STOP", "RESUME"], names
    assert list(machine.qmp_client.events()) == []  # taken once
    with must_raise("no such key", KeyError):
        machine.qmp_client.send("stop")
        machine.wait_for_qmp_event(lambda e: e["no such key"] and False, timeout=30)
    machine.qmp_client.send("cont")

with subtest("execute without its output returns at once"):
    t0 = time.monotonic()
    assert machine.execute("sleep 60; echo late  # a comment", check_output=False) == (-2, "")
    assert machine.execute("echo hi >/tmp/detached", check_output=False) == (-2, "")
    assert time.monotonic() - t0 < 20, time.monotonic() - t0
    machine.wait_for_file("/tmp/detached", timeout=30)
    assert machine.succeed("cat /tmp/detached") == "hi\n"
    machine.succeed("pkill -f 'sleep 60' || true")

with subtest("durations and a bound on each try"):
    import datetime as dt

    machine.succeed("rm -f /tmp/attempts", timeout=dt.timedelta(seconds=30))
    t0 = time.monotonic()
    with must_raise("action timed out"):
        machine.wait_until_succeeds(
            "echo attempt >> /tmp/attempts; exec sleep 600 > /dev/null",
            timeout=dt.timedelta(seconds=2),
            attempt_timeout=dt.timedelta(seconds=0.4),
        )
    elapsed = time.monotonic() - t0
    attempts = int(machine.succeed("wc -l < /tmp/attempts"))
    # Each try stopped after its bound (times the run's factor) and the command tried again.
    assert attempts >= 3, attempts
    assert elapsed < 40, elapsed  # 2 s times the run's factor (5 under TCG), and the last try
    machine.fail("pgrep -x sleep")  # the abandoned tries were stopped in the guest
    machine.wait_until_fails("false", dt.timedelta(seconds=5), attempt_timeout=1)
    machine.wait_for_file("/tmp/attempts", timeout=dt.timedelta(minutes=1))
    with must_raise("expected a duration, got bool", TypeError):
        machine.wait_for_file("/tmp/attempts", timeout=True)

with subtest("shell syntax and OCR"):
    with must_raise("unexpected token"):
        machine.execute(")")
    assert machine.execute("exit 2") == (2, "")
    with must_raise("OCR requested but enableOCR is false"):
        machine.wait_for_text("login")

with subtest("interaction returns without a terminal"):
    machine.shell_interact()
    machine.console_interact()

with subtest("shell_interact with a socat address"):
    # The other side sends a command, reads its output back into a file, and closes.
    reply = driver.out_dir / "socat-reply"
    other_side = driver.out_dir / "other-side.sh"
    other_side.write_text(
        "printf 'echo from-socat; uname -s\\n'\n"
        f"read -r a; read -r b; echo $a $b > {reply}\n"
    )
    machine.shell_interact(f"SYSTEM:sh {other_side}")
    assert reply.read_text() == "from-socat Linux\n", reply.read_text()
    with must_raise(r"socat \"NO-SUCH-ADDRESS-TYPE:x\" failed \(exit status 1\)", OSError):
        machine.shell_interact("NO-SUCH-ADDRESS-TYPE:x")

with subtest("polling conditions"):
    marker = "/tmp/keep-me"
    machine.succeed(f"touch {marker}")

    @polling_condition(seconds_interval=0)
    def marker_exists():
        "the marker file exists"
        machine.succeed(f"test -e {marker}")

    with marker_exists:
        machine.succeed("true")
        machine.succeed(f"rm {marker}")
        with must_raise("Polling condition failed: the marker file exists", PollingConditionError):
            machine.succeed("true")
        with must_raise("Polling condition failed: the marker file exists", PollingConditionError):
            machine.send_monitor_command("info status")  # checked before it too, as NixOS's
    machine.succeed("true")  # out of the block: not checked

    @polling_condition
    def never():
        return False

    with never:
        with must_raise("Polling condition failed: never"):
            machine.wait_until_succeeds("true", timeout=10)

with subtest("directories both ways"):
    src = pathlib.Path(tempfile.mkdtemp())
    (src / "sub").mkdir()
    (src / "sub" / "bytes").write_bytes(bytes(range(256)))
    (src / "top").write_text("top\n")
    machine.copy_from_host(src, "/tmp/tree")
    assert machine.succeed("cat /tmp/tree/top") == "top\n"
    machine.copy_from_vm("/tmp/tree", "back")
    back = driver.out_dir / "back" / "tree"
    assert (back / "sub" / "bytes").read_bytes() == bytes(range(256))
    assert (back / "top").read_text() == "top\n"
    machine.copy_from_vm("/tmp/tree/top")
    assert (driver.out_dir / "top").read_text() == "top\n"

with subtest("the console log is of the current boot"):
    machine.succeed("echo old-boot-mark >&2")
    machine.wait_for_console_text("old-boot-mark")
    assert "old-boot-mark" in machine.get_console_log()
    machine.shutdown()
    machine.start()
    machine.succeed("echo new-boot-mark >&2")
    machine.wait_for_console_text("new-boot-mark")
    console = machine.get_console_log()
    assert "new-boot-mark" in console and "old-boot-mark" not in console, console[-2000:]

with subtest("outer step"):
    with subtest("inner step"):
        machine.succeed("true")
log.info("tiny API: all checks passed")
