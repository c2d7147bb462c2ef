"""vm-test-driver's `test_driver`: the names a NixOS testScript sees, over the Rust driver.

`_vmtd` is the Rust side: `runtime` (the driver's global functions), `Machine`, and `machines`.
Names, signatures and the words of exceptions follow NixOS's test driver, because test scripts
match on them; this is written for vm-test-driver, not taken from NixOS.
"""

import builtins
import contextlib
import datetime
import os
import pathlib
import re
import sys
import time
import types
import unittest

import _vmtd

_rt = _vmtd.runtime


def _module(name, **names):
    """Registers `test_driver.<name>` holding `names`, importable as NixOS's is."""
    m = types.ModuleType(f"{__name__}.{name}")
    m.__dict__.update(names)
    sys.modules[m.__name__] = m
    parent, _, last = name.rpartition(".")
    setattr(sys.modules[f"{__name__}.{parent}"] if parent else sys.modules[__name__], last, m)
    return m


# test_driver.errors


class TestScriptError(Exception):
    """The test script failed (not a bug of the driver)."""


class RequestedAssertionFailed(TestScriptError):
    """A requested assertion failed: `succeed`, `fail`, a wait, `t.assert…`."""


class MachineError(Exception):
    """A machine cannot do what was asked: it is not running, or it went away."""


class Interrupted(BaseException):
    """Ctrl-C, SIGTERM or --global-timeout ended the run; `except Exception` lets it through."""


class PollingConditionError(Exception):
    """A guest command found a polling condition in force failing."""


class QMPEventTimeout(RequestedAssertionFailed, TimeoutError):
    """`wait_for_qmp_event` saw no matching event in time (NixOS raises `TimeoutError`)."""


class SubtestFailed(SystemExit):
    """How a failed subtest leaves, as NixOS's logger leaves on an error (`sys.exit(1)`); `error`
    is the failure itself, which the run reports."""

    def __init__(self, error):
        super().__init__(1)
        self.error = error

    def __str__(self):
        # The failure's words, not the exit code, so `must_raise("…", SystemExit)` can match them.
        return str(self.error)


_module(
    "errors",
    TestScriptError=TestScriptError,
    RequestedAssertionFailed=RequestedAssertionFailed,
    MachineError=MachineError,
    Interrupted=Interrupted,
    PollingConditionError=PollingConditionError,
    QMPEventTimeout=QMPEventTimeout,
)


# durations


def as_seconds(duration):
    """A duration (a `timedelta`, or seconds) in seconds; a bool or anything else is refused."""
    return _rt.seconds(duration)


def as_timedelta(duration):
    """A duration (a `timedelta`, or seconds) as a `timedelta`."""
    if isinstance(duration, datetime.timedelta):
        return duration
    return datetime.timedelta(seconds=as_seconds(duration))


_module(
    "duration",
    Duration=datetime.timedelta | int | float,
    as_seconds=as_seconds,
    as_timedelta=as_timedelta,
)


# subtests and the log


@contextlib.contextmanager
def subtest(name):
    """A named part of the test: a JUnit test case and a step of the report; nestable. A failure
    inside leaves it as `SubtestFailed`, a `SystemExit` (as in NixOS, where the logger exits)."""
    _rt.subtest_enter(str(name))
    try:
        yield
    except Exception as e:
        _rt.subtest_exit(e)
        raise SubtestFailed(e) from e
    except BaseException as e:
        _rt.subtest_exit(e)
        raise
    _rt.subtest_exit()


@contextlib.contextmanager
def must_raise(exception_text_regex, exception_class=Exception):
    """Passes only if the block raises an `exception_class` whose text `exception_text_regex`
    matches (searched, as `re.search` does); otherwise fails saying what happened instead."""
    try:
        yield
    except BaseException as e:
        if not isinstance(e, exception_class):
            if not isinstance(e, Exception):
                raise  # Interrupted, KeyboardInterrupt, …: never swallowed
            raise RequestedAssertionFailed(
                f"must_raise: {type(e).__name__}({str(e)!r}) is not an instance of "
                f"{exception_class.__name__}"
            ) from e
        if re.search(exception_text_regex, str(e)) is None:
            raise RequestedAssertionFailed(
                f"must_raise: the exception's string {str(e)!r} did not match "
                f"{exception_text_regex!r}"
            ) from e
        return
    raise RequestedAssertionFailed(
        f"must_raise: no exception was raised (expected {exception_class.__name__} matching "
        f"{exception_text_regex!r})"
    )


def _with_machine(message, attributes):
    if attributes and "machine" in attributes:
        return f"{attributes['machine']}: {message}"
    return str(message)


class Logger:
    """NixOS's `log` (`test_driver.logger.rootlog`), writing into the driver's log."""

    def log(self, message, attributes={}):
        _rt.log(_with_machine(message, attributes))

    def debug(self, *args, **kwargs):
        _rt.log(_with_machine(args[0], kwargs), "debug")

    def info(self, *args, **kwargs):
        _rt.log(_with_machine(args[0], kwargs))

    def warning(self, *args, **kwargs):
        _rt.log(_with_machine(args[0], kwargs), "warning")

    def error(self, *args, **kwargs):
        _rt.log(_with_machine(args[0], kwargs), "error")

    def log_test_error(self, *args, **kwargs):
        _rt.log("!!! " + _with_machine(args[0], kwargs), "error")

    def log_serial(self, message, machine):
        _rt.log(f"{machine} # {message}")

    def print_serial_logs(self, enable):
        if enable:
            _rt.serial_stdout_on()
        else:
            _rt.serial_stdout_off()

    @staticmethod
    def sanitise(message):
        return "".join(ch for ch in message if not _is_control(ch))

    @contextlib.contextmanager
    def nested(self, message, attributes={}):
        message = _with_machine(message, attributes)
        _rt.log(message)
        t0 = time.monotonic()
        yield
        _rt.log(f"(finished: {message}, in {time.monotonic() - t0:.2f} seconds)")

    def subtest(self, name, attributes={}):
        return subtest(name)


def _is_control(ch):
    import unicodedata

    return unicodedata.category(ch)[0] == "C"


rootlog = Logger()
_module("logger", rootlog=rootlog, AbstractLogger=Logger, Logger=Logger)


# retry and the machines


class _Remaining(float):
    """What `retry` passes its function: the seconds left (today's NixOS passes them), which is
    false but on the last try (older NixOS passed `last_try`), so functions of either kind work."""

    def __new__(cls, seconds, last):
        remaining = super().__new__(cls, seconds)
        remaining.last = last
        return remaining

    def __bool__(self):
        return self.last


_DEFAULT_RETRY = 900


def retry(fn, timeout_seconds=_DEFAULT_RETRY, *, timeout=_DEFAULT_RETRY):
    """Calls `fn(remaining)` until it returns true, pausing with `time.sleep` between tries (which
    serves the machines, see `_serving_sleep`). `remaining` is the seconds left, false but on the
    last try (see `_Remaining`); `timeout=None` retries for ever with `remaining` None. The timeout
    (a `timedelta` or seconds) is multiplied by the run's factor, as every wait's is.

    Given as `timeout=` (today's NixOS), no time left means no try; given as `timeout_seconds`
    (older NixOS), a last try is made even then. The time is the pauses' total as well as the
    clock's, whichever ends first: a script that makes `time.sleep` return at once (NixOS's tests
    do) gets a bounded number of tries, not a busy loop for the whole timeout."""
    older = timeout_seconds is not _DEFAULT_RETRY or timeout is _DEFAULT_RETRY
    given = timeout_seconds if older else timeout
    if given is None:
        while not fn(None):
            time.sleep(1)
        return
    seconds = as_seconds(given)
    limit = seconds * _rt.timeout_factor
    t0 = time.monotonic()
    paused = 0.0
    delay = 0.05
    while True:
        left = limit - max(time.monotonic() - t0, paused)
        if left <= 0:
            if older and fn(_Remaining(0.0, last=True)):
                return
            break
        pause = min(delay, left)
        if fn(_Remaining(left, last=left <= pause)):
            return
        if left <= pause:
            break
        time.sleep(pause)
        paused += pause
        delay = min(delay * 2, 1.0)
    raise RequestedAssertionFailed(
        f"action timed out after {time.monotonic() - t0:.2f} seconds (timeout={seconds:g})"
    )


def _serving_sleep(seconds):
    """`time.sleep` in a test script: the same pause, but the driver serves the machines meanwhile
    (console lines keep flowing) and Ctrl-C or the global timeout end it."""
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    _rt.sleep(float(seconds))


# polling conditions


class PollingCondition:
    """NixOS's `PollingCondition`: a check that must keep holding while its `with` block runs;
    the driver runs it before guest commands, at most once per `interval` (a `timedelta`)."""

    def __init__(
        self, condition, logger=None, seconds_interval=None, description=None, *, interval=None
    ):
        self.condition = condition
        self.interval = _interval(seconds_interval, interval)
        if description is not None:
            self.description = str(description)
        elif condition.__doc__:
            self.description = condition.__doc__
        else:
            self.description = condition.__name__

    @property
    def seconds_interval(self):
        """The interval in seconds (older NixOS's attribute)."""
        return self.interval.total_seconds()

    def check(self, force=False):
        """Runs the check: `None` or a true value holds; `False` or an `Exception` does not."""
        with rootlog.nested(f"Checking polling condition {self.description!r}"):
            try:
                ok = self.condition()
            except Exception as e:
                first = (str(e).splitlines() or [""])[0]
                rootlog.info(f"({type(e).__name__}: {first})")
                ok = False
            ok = ok is None or bool(ok)
            rootlog.info(self.status_message(ok))
            return ok

    def status_message(self, status):
        return f"Polling condition {'succeeded' if status else 'failed'}: {self.description}"

    def maybe_raise(self):
        if not self.check():
            raise PollingConditionError(self.status_message(False))


def _interval(seconds_interval, interval):
    """A polling condition's interval as a `timedelta`: `interval=` (today's NixOS) or
    `seconds_interval=` (older), not both; 2 seconds when neither is given."""
    if seconds_interval is not None and interval is not None:
        raise TypeError(
            "PollingCondition() got both 'interval' and 'seconds_interval' arguments. "
            "Pass only 'interval'"
        )
    given = interval if interval is not None else seconds_interval
    return datetime.timedelta(seconds=2) if given is None else as_timedelta(given)


class _Poll:
    """What `@polling_condition` makes of a function: `with it:` puts the condition in force (in
    the driver, which checks it before each guest command); `.condition` is the condition."""

    def __init__(self, fun, seconds_interval=None, description=None, interval=None):
        self.condition = PollingCondition(
            fun, rootlog, seconds_interval, description, interval=interval
        )
        self._guards = []

    def __enter__(self):
        c = self.condition
        self._guards.append(_rt.polling_enter(c.description, c.seconds_interval, c.check))

    def __exit__(self, *exc):
        self._guards.pop().close()

    def wait(self, timeout=900):
        """Waits until the condition holds (NixOS's `condition.wait`)."""

        def holds(last):
            if last:
                rootlog.info(f"Last chance for {self.condition.description}")
            ok = self.condition.check(force=True)
            if not ok and not last:
                rootlog.info(f"({self.condition.description} failure not fatal yet)")
            return ok

        with rootlog.nested(f"waiting for {self.condition.description}"):
            retry(holds, timeout_seconds=timeout)


# Registered before the decorator's definition, which then takes the attribute's name (the module
# stays importable through sys.modules).
_module(
    "polling_condition",
    PollingCondition=PollingCondition,
    PollingConditionError=PollingConditionError,
)


def polling_condition(fun_=None, *, seconds_interval=None, description=None, interval=None):
    """NixOS's `polling_condition`: a decorator, bare or with `interval=` (or the older
    `seconds_interval=`) and `description=`."""
    if fun_ is None:
        return lambda fun: _Poll(fun, seconds_interval, description, interval)
    return _Poll(fun_, seconds_interval, description, interval)


# QMP and VLANs


class QMPAPIError(RuntimeError):
    """QEMU answered a QMP command with an error (NixOS's, built from QEMU's message)."""

    def __init__(self, message):
        error = message["error"]
        self.class_name = error["class"]
        self.description = error["desc"]
        self.transaction_id = message.get("id")

    def __str__(self):
        return (
            f"<QMP API error related to transaction {self.transaction_id} "
            f"[{self.class_name}]: {self.description}>"
        )


class QMPSession:
    """NixOS's `machine.qmp_client`, over the driver's QMP connection to the machine."""

    def __init__(self, machine):
        self._machine = machine

    def send(self, cmd, args={}):
        """Runs the QMP command; QEMU's reply (`{"return": …}`), or `QMPAPIError`."""
        return {"return": self._machine.qmp_command(cmd, args or None)}

    def events(self, timeout=10):
        """The events received and not yet looked at, oldest first; it does not wait for more
        (NixOS's neither: its `timeout` is never waited)."""
        yield from self._machine.qmp_events()

    def wait_for_event(self, timeout=None):
        """The next QMP event (`timeout` a duration, 10 s if not given)."""
        seconds = 10 if timeout is None else as_seconds(timeout)
        return self._machine.wait_for_qmp_event(lambda event: True, seconds)


class VLan:
    """NixOS's `VLan`: a virtual network's switch (`nr`, `socket_dir`, `pid`), run by the driver."""

    def __init__(self, nr, socket_dir, pid):
        self.nr = nr
        self.socket_dir = pathlib.Path(socket_dir)
        self.pid = pid

    def __repr__(self):
        return f"<Vlan Nr. {self.nr}>"


_module("vlan", VLan=VLan)


Machine = _vmtd.Machine


def _qmp_client(self):
    return QMPSession(self) if self.booted else None


# NixOS's attribute: a session while QEMU runs, `None` before.
Machine.qmp_client = property(_qmp_client)
_module(
    "machine",
    Machine=Machine,
    BaseMachine=Machine,
    QemuMachine=Machine,
    retry=retry,
)
# Both places NixOS has had them.
_module("qmp", QMPSession=QMPSession, QMPAPIError=QMPAPIError)
_module("machine.qmp", QMPSession=QMPSession, QMPAPIError=QMPAPIError)


def pythonize_name(name):
    """A machine's global: NixOS's rule for making its name an identifier."""
    return re.sub(r"^[^A-Za-z_]|[^A-Za-z0-9_]", "_", name)


class Driver:
    """NixOS's `driver`: the machines, where the run's files go, and the global functions."""

    def __init__(self):
        self.out_dir = pathlib.Path(_rt.out_dir)
        self.vlans = [VLan(*v) for v in _rt.vlans()]

    @property
    def machines(self):
        return sorted(_vmtd.machines, key=lambda m: m.name)

    def start_all(self):
        _rt.start_all()

    def join_all(self):
        _rt.join_all()

    def serial_stdout_on(self):
        _rt.serial_stdout_on()

    def serial_stdout_off(self):
        _rt.serial_stdout_off()

    def subtest(self, name):
        return subtest(name)

    def create_machine(self, start_command, *, name=None, keep_machine_state=False):
        return _rt.create_machine(str(start_command), name)

    def polling_condition(
        self, fun_=None, *, seconds_interval=None, description=None, interval=None
    ):
        return polling_condition(
            fun_, seconds_interval=seconds_interval, description=description, interval=interval
        )


class Debug:
    """NixOS's `debug` without its debug hook (`enableDebugHook`, a remote pdb for sandboxed
    builds): `breakpoint()` notes that it was reached and goes on, as NixOS's does without it."""

    def breakpoint(self, host="127.0.0.1", port=4444):
        rootlog.info("breakpoint reached: this run has no debug hook; going on")


class AssertionTester(unittest.TestCase):
    """NixOS's `t`: unittest's assertions, failing with `RequestedAssertionFailed`."""

    failureException = RequestedAssertionFailed


driver = Driver()
time.sleep = _serving_sleep


def test_symbols():
    """The globals of a test script, as NixOS's driver gives them."""
    machines = driver.machines
    symbols = dict(
        __name__="__main__",
        __builtins__=builtins,
        start_all=driver.start_all,
        machines=machines,
        machines_qemu=machines,
        machines_nspawn=[],
        vlans=driver.vlans,
        driver=driver,
        log=rootlog,
        os=os,
        create_machine=driver.create_machine,
        subtest=subtest,
        join_all=driver.join_all,
        retry=retry,
        polling_condition=polling_condition,
        must_raise=must_raise,
        # vm-test-driver's network faults (not in NixOS).
        partition=_rt.partition,
        heal=_rt.heal,
        set_link_quality=_rt.set_link_quality,
        serial_stdout_off=driver.serial_stdout_off,
        serial_stdout_on=driver.serial_stdout_on,
        Machine=Machine,
        BaseMachine=Machine,
        t=AssertionTester(),
        debug=Debug(),
    )
    for m in machines:
        symbols[pythonize_name(m.name)] = m
    for v in driver.vlans:
        symbols[f"vlan{v.nr}"] = v
    if len(machines) == 1:
        symbols["machine"] = machines[0]
    return symbols


def _on_interrupt(signum, frame):
    """Tripped by the driver's watcher on Ctrl-C or the global timeout: raises `Interrupted` (from
    the driver, which knows why) when the run must stop."""
    _rt.check_interrupts()
