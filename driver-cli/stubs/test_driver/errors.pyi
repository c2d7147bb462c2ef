"""The exceptions a test script sees, with NixOS's names."""

class TestScriptError(Exception):
    """The test script failed (not a bug of the driver)."""

class RequestedAssertionFailed(TestScriptError):
    """A requested assertion failed: `succeed`, `fail`, a wait, `t.assert...`."""

class MachineError(Exception):
    """A machine cannot do what was asked: it is not running, or it went away."""

class Interrupted(BaseException):
    """Ctrl-C, SIGTERM or --global-timeout ended the run (vm-test-driver's; not in NixOS)."""

class PollingConditionError(Exception):
    """A polling condition failed: `Polling condition failed: {description}`."""

class QMPEventTimeout(RequestedAssertionFailed, TimeoutError):
    """`wait_for_qmp_event` timed out (vm-test-driver's: NixOS raises a bare `TimeoutError`)."""
