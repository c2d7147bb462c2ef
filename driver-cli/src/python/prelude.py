"""vm-test-driver's `test_driver`: the names a NixOS testScript sees, over the Rust driver.

`_vmtd` is the Rust side: `runtime` (the driver's global functions), `Machine`, and `machines`.
Names, signatures and the words of exceptions follow NixOS's test driver, because test scripts
match on them; this is written for vm-test-driver, not taken from NixOS.
"""

import builtins
import contextlib
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
    globals()[name] = m
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


_module(
    "errors",
    TestScriptError=TestScriptError,
    RequestedAssertionFailed=RequestedAssertionFailed,
    MachineError=MachineError,
    Interrupted=Interrupted,
)


# subtests and the log


@contextlib.contextmanager
def subtest(name):
    """A named part of the test: a JUnit test case and a step of the report; nestable."""
    _rt.subtest_enter(str(name))
    try:
        yield
    except BaseException as e:
        _rt.subtest_exit(e)
        raise
    _rt.subtest_exit()


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


def retry(fn, timeout_seconds=900, *, timeout=None):
    """Calls `fn(last_try)` until it returns true, pausing (serving the machines) between tries;
    the last call gets `True`. The timeout is multiplied by the run's factor, as every wait's is."""
    if timeout is not None:
        timeout_seconds = timeout
    limit = timeout_seconds * _rt.timeout_factor
    t0 = time.monotonic()
    delay = 0.05
    while True:
        if fn(False):
            return
        left = limit - (time.monotonic() - t0)
        if left <= 0:
            break
        _rt.sleep(min(delay, left))
        delay = min(delay * 2, 1.0)
    if not fn(True):
        raise RequestedAssertionFailed(
            f"action timed out after {timeout_seconds} seconds"
        )


Machine = _vmtd.Machine
_module(
    "machine",
    Machine=Machine,
    BaseMachine=Machine,
    QemuMachine=Machine,
    retry=retry,
)


def pythonize_name(name):
    """A machine's global: NixOS's rule for making its name an identifier."""
    return re.sub(r"^[^A-Za-z_]|[^A-Za-z0-9_]", "_", name)


class Driver:
    """NixOS's `driver`: the machines, where the run's files go, and the global functions."""

    def __init__(self):
        self.out_dir = pathlib.Path(_rt.out_dir)

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


class AssertionTester(unittest.TestCase):
    """NixOS's `t`: unittest's assertions, failing with `RequestedAssertionFailed`."""

    failureException = RequestedAssertionFailed


driver = Driver()


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
        vlans=[],
        driver=driver,
        log=rootlog,
        os=os,
        create_machine=driver.create_machine,
        subtest=subtest,
        join_all=driver.join_all,
        retry=retry,
        serial_stdout_off=driver.serial_stdout_off,
        serial_stdout_on=driver.serial_stdout_on,
        Machine=Machine,
        BaseMachine=Machine,
        t=AssertionTester(),
    )
    for m in machines:
        symbols[pythonize_name(m.name)] = m
    if len(machines) == 1:
        symbols["machine"] = machines[0]
    return symbols


def _on_interrupt(signum, frame):
    """Tripped by the driver's watcher on Ctrl-C or the global timeout: raises `Interrupted` (from
    the driver, which knows why) when the run must stop."""
    _rt.check_interrupts()
