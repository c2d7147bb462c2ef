"""NixOS's `driver`: the machines, the networks, where the run's files go."""

import os
import unittest
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Callable, Protocol, overload

from test_driver.duration import Duration
from test_driver.machine import Machine
from test_driver.polling_condition import PollingCondition
from test_driver.vlan import VLan

class AssertionTester(unittest.TestCase):
    """NixOS's `t`: unittest's assertions, failing with `RequestedAssertionFailed`."""

class PollingConditionContext:
    """What `polling_condition` makes of a check: entered with `with`, or awaited."""

    condition: PollingCondition

    def __enter__(self) -> None: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def wait(self, timeout: Duration = 900) -> None: ...

class PollingConditionFactory(Protocol):
    """NixOS's `polling_condition`: a decorator, with or without arguments, or a call on a check."""

    @overload
    def __call__(
        self,
        fun_: Callable[[], bool | None],
        *,
        seconds_interval: Duration | None = None,
        description: str | None = None,
        interval: Duration | None = None,
    ) -> PollingConditionContext: ...
    @overload
    def __call__(
        self,
        fun_: None = None,
        *,
        seconds_interval: Duration | None = None,
        description: str | None = None,
        interval: Duration | None = None,
    ) -> Callable[[Callable[[], bool | None]], PollingConditionContext]: ...

class Debug:
    """NixOS's `debug` (its debug hook is not offered: `breakpoint()` goes on)."""

    def breakpoint(self, host: str = "127.0.0.1", port: int = 4444) -> None: ...

class Driver:
    out_dir: Path
    vlans: list[VLan]
    @property
    def machines(self) -> list[Machine]: ...
    def start_all(self) -> None: ...
    def join_all(self) -> None: ...
    def serial_stdout_on(self) -> None: ...
    def serial_stdout_off(self) -> None: ...
    def subtest(self, name: str) -> AbstractContextManager[None]: ...
    def create_machine(
        self,
        start_command: str | os.PathLike[str],
        *,
        name: str | None = None,
        keep_machine_state: bool = False,
    ) -> Machine: ...
    polling_condition: PollingConditionFactory
