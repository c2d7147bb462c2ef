"""NixOS's QMP session of a machine (`machine.qmp_client`)."""

from collections.abc import Iterator
from typing import Any

from test_driver.duration import Duration

class QMPAPIError(RuntimeError):
    class_name: str
    description: str
    transaction_id: int | str | None

class QMPSession:
    def send(self, cmd: str, args: dict[str, Any] = ...) -> dict[str, Any]: ...
    def wait_for_event(self, timeout: Duration = ...) -> dict[str, Any]: ...
    def events(self, timeout: int = 10) -> Iterator[dict[str, Any]]: ...
