# A NixOS-style Python testScript on the bundled tiny guest:
#   vm-test-driver --start-scripts "$(bash guests/build.sh tiny)/run-tiny-vm" -- examples/hello.py
import json

start_all()
# One machine: NixOS also names it `machine`.
assert machine is tiny and machines == [tiny], machines
assert repr(tiny) == "<Machine 'tiny'>" and tiny.name == "tiny"

with subtest("the guest runs commands"):
    kernel = tiny.succeed("uname -r").strip()
    log.info(f"kernel {kernel}")
    assert tiny.booted and tiny.connected
    assert tiny.succeed("echo a", "echo b") == "a\nb\n"
    assert tiny.execute("false", check_return=False) == (-1, "")
    assert tiny.execute("echo hi; exit 3") == (3, "hi\n")
    tiny.fail("false", timeout=10)
    data = json.loads(tiny.succeed("echo '{\"n\": 42}'", timeout=30))
    assert data["n"] == 42, data
    with subtest("failures raise NixOS's exceptions"):
        try:
            tiny.succeed("false")
            raise AssertionError("succeed('false') did not raise")
        except Exception as e:
            assert "command `false` failed (exit code 1)" in str(e), str(e)
            assert type(e).__name__ == "RequestedAssertionFailed"
        try:
            tiny.fail("true")
            raise AssertionError("fail('true') did not raise")
        except Exception as e:
            assert "command `true` unexpectedly succeeded" in str(e), str(e)

with subtest("waits react to the guest"):
    tiny.succeed("(sleep 1; touch /tmp/ready) >/dev/null 2>&1 &")
    tiny.wait_for_file("/tmp/ready", timeout=30)
    out = tiny.wait_until_succeeds("test -e /tmp/ready && echo there", timeout=30)
    assert out == "there\n", out
    tiny.wait_until_fails("test -e /tmp/not-there")
    tiny.succeed("(sleep 1; echo done > /tmp/job) >/dev/null 2>&1 &")
    retry(lambda last_try: tiny.execute("cat /tmp/job")[1] == "done\n", 30)
    try:
        tiny.wait_until_succeeds("false", timeout=1)
        raise AssertionError("the wait did not time out")
    except Exception as e:
        assert str(e).startswith("action timed out"), str(e)
    tiny.copy_from_vm("/tmp/job", "copied")
    assert (driver.out_dir / "copied" / "job").read_text() == "done\n"

tiny.shutdown()
assert not tiny.booted
