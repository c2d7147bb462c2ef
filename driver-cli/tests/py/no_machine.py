# The NixOS API that needs no machine: run with `--vlans 3` and no machines
# (driver-cli/tests/python_api.rs).
import time
from test_driver.errors import RequestedAssertionFailed
from test_driver.polling_condition import PollingCondition, PollingConditionError
from test_driver.vlan import VLan
from test_driver.machine.qmp import QMPAPIError
from test_driver.qmp import QMPSession

# must_raise: the three ways it fails, each in its own words.
with must_raise("boom"):
    raise ValueError("a boom happened")
with must_raise(r"^exact \d+$", KeyError.__mro__[1]):  # LookupError
    raise KeyError.__mro__[1]("exact 42")
try:
    with must_raise("wanted"):
        raise RuntimeError("got something else")
    raise AssertionError("a mismatch passed")
except RequestedAssertionFailed as e:
    assert "did not match" in str(e) and "'got something else'" in str(e), str(e)
try:
    with must_raise("x", KeyError):
        raise ValueError("x")
    raise AssertionError("a wrong class passed")
except RequestedAssertionFailed as e:
    assert "ValueError('x') is not an instance of KeyError" in str(e), str(e)
try:
    with must_raise("anything"):
        pass
    raise AssertionError("nothing raised passed")
except RequestedAssertionFailed as e:
    assert "no exception was raised" in str(e), str(e)

# A failed subtest leaves as SystemExit, carrying the failure.
with must_raise("inner trouble", SystemExit):
    with subtest("fails on purpose"):
        raise OSError("inner trouble")
try:
    with subtest("fails again"):
        raise LookupError("kept")
except SystemExit as e:
    assert isinstance(e.error, LookupError) and e.code == 1, repr(e)

# retry pauses with time.sleep, so a script can make the pauses vanish.
calls = []
real_sleep = time.sleep
time.sleep = lambda seconds: calls.append(seconds)
t0 = time.monotonic()
with must_raise("action timed out"):
    retry(lambda last: False, timeout_seconds=30)
time.sleep = real_sleep
assert time.monotonic() - t0 < 5, time.monotonic() - t0
assert len(calls) > 10, calls
retry(lambda last: last, timeout_seconds=0)  # the last try is made even so
time.sleep(0.05)  # the driver's own pause, serving machines
with must_raise("non-negative", ValueError):
    time.sleep(-1)

# Today's NixOS retry: `timeout=` a timedelta (or None: no bound), `fn` gets the seconds left.
import datetime as dt
from test_driver.duration import Duration, as_seconds, as_timedelta

unbounded = []
retry(lambda remaining: unbounded.append(remaining) or True, timeout=None)
assert unbounded == [None], unbounded
tries = []

def slow_failure(remaining):
    assert remaining is not None and remaining > 0, remaining
    tries.append(remaining)
    time.sleep(0.3)
    return False

with must_raise("action timed out", RequestedAssertionFailed):
    retry(slow_failure, timeout=dt.timedelta(seconds=0.01))
assert len(tries) == 1, tries
never = []
with must_raise("action timed out"):
    retry(lambda remaining: never.append(remaining) or True, timeout=dt.timedelta(0))
assert never == [], never
# A function of the older kind (`last_try`) sees False until its last try.
seen = []
retry(lambda last: seen.append(bool(last)) or last, timeout=dt.timedelta(seconds=0.3))
assert seen[-1] is True and not any(seen[:-1]) and len(seen) > 1, seen

# Durations: timedelta or seconds; a bool, or a string, is refused in NixOS's words.
assert as_seconds(dt.timedelta(minutes=1)) == 60.0 and as_seconds(2) == 2.0
assert as_timedelta(1.5) == dt.timedelta(seconds=1.5)
with must_raise("expected a duration, got bool: True", TypeError):
    as_seconds(True)
with must_raise("expected a timedelta, int, or float duration, got str", TypeError):
    retry(lambda remaining: True, timeout="10")

# NixOS's remaining globals: `debug` (no hook here), `test_script`/`run_tests`.
debug.breakpoint()
assert callable(test_script) and callable(run_tests)

# polling_condition as nixpkgs builds it: description, docstring or name.
@polling_condition
def named_only():
    return True

@polling_condition
def documented():
    "what the docstring says"

@polling_condition(seconds_interval=0.5, description="told outright")
def described():
    return True

assert named_only.condition.description == "named_only"
assert documented.condition.description == "what the docstring says"
assert described.condition.description == "told outright"
assert described.condition.seconds_interval == 0.5
assert described.condition.interval == dt.timedelta(seconds=0.5)

@polling_condition(interval=dt.timedelta(milliseconds=250))
def by_interval():
    return True

assert by_interval.condition.seconds_interval == 0.25
assert named_only.condition.interval == dt.timedelta(seconds=2)
with must_raise("got both 'interval' and 'seconds_interval'", TypeError):
    PollingCondition(lambda: True, log, 1.0, interval=dt.timedelta(seconds=1))
assert isinstance(named_only.condition, PollingCondition)
assert documented.condition.check() is True  # None counts as holding
with named_only, described:
    pass
described.wait(timeout=5)

# vlans as objects, and vlanN globals.
assert [v.nr for v in vlans] == [3], vlans
assert vlan3 is vlans[0] and isinstance(vlan3, VLan)
assert repr(vlan3) == "<Vlan Nr. 3>"
assert vlan3.socket_dir.name == "vde3.ctl" and vlan3.socket_dir.is_dir(), vlan3.socket_dir
assert vlan3.pid > 0 and os.path.exists(f"/proc/{vlan3.pid}")

# QMP's error as nixpkgs words it.
err = QMPAPIError({"error": {"class": "GenericError", "desc": "no"}, "id": 7})
assert str(err) == "<QMP API error related to transaction 7 [GenericError]: no>", str(err)
log.info("no-machine API: all checks passed")
