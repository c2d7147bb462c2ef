"""NixOS's polling conditions: a check run before each guest command while it is entered."""

from typing import Callable

class PollingConditionError(Exception): ...

class PollingCondition:
    description: str | None
    seconds_interval: float
    def __init__(
        self,
        condition: Callable[[], bool | None],
        logger: object,
        seconds_interval: float = 2.0,
        description: str | None = None,
    ) -> None: ...
    def check(self, force: bool = False) -> bool: ...
    def maybe_raise(self) -> None: ...
