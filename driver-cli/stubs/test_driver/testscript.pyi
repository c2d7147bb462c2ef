"""The globals of a NixOS testScript besides its machines and `vlan<N>` (typing only: not
importable at run time). `vm-test-driver typecheck` declares these, then each machine; in an
editor, `from test_driver.testscript import *` under `if typing.TYPE_CHECKING:` gives them."""

import os as os
from contextlib import AbstractContextManager
from typing import Callable, Protocol

from test_driver.driver import AssertionTester, Debug, Driver, PollingConditionFactory
from test_driver.logger import Logger
from test_driver.machine import BaseMachine as BaseMachine
from test_driver.machine import Machine as Machine
from test_driver.machine import retry as retry
from test_driver.vlan import VLan

start_all: Callable[[], None]
join_all: Callable[[], None]
subtest: Callable[[str], AbstractContextManager[None]]
test_script: Callable[[], None]
run_tests: Callable[[], None]
machines: list[Machine]
machines_qemu: list[Machine]
machines_nspawn: list[Machine]
vlans: list[VLan]
driver: Driver
log: Logger
create_machine: _CreateMachine
polling_condition: PollingConditionFactory
serial_stdout_on: Callable[[], None]
serial_stdout_off: Callable[[], None]
t: AssertionTester
debug: Debug

def partition(*groups: list[Machine]) -> None:
    """vm-test-driver's: each group of machines cut off from the others until `heal()`."""

def heal() -> None:
    """vm-test-driver's: every link back as it was before `partition`."""

def set_link_quality(
    vlan: int,
    machine: Machine,
    delay_ms: float,
    jitter_ms: float = 0,
    loss_percent: float = 0,
) -> None:
    """vm-test-driver's: what `machine` sends on `vlan` is delayed and dropped so."""

def must_raise(
    exception_text_regex: str, exception_class: type[BaseException] = Exception
) -> AbstractContextManager[None]: ...

class _CreateMachine(Protocol):
    def __call__(
        self,
        start_command: str | os.PathLike[str],
        *,
        name: str | None = None,
        keep_machine_state: bool = False,
    ) -> Machine: ...
