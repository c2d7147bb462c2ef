"""NixOS's polling conditions: a check run before each guest command while it is entered."""

import datetime
from typing import Callable

from test_driver.duration import Duration

class PollingConditionError(Exception): ...

class PollingCondition:
    description: str | None
    interval: datetime.timedelta
    seconds_interval: float
    def __init__(
        self,
        condition: Callable[[], bool | None],
        logger: object,
        seconds_interval: Duration | None = None,
        description: str | None = None,
        *,
        interval: datetime.timedelta | None = None,
    ) -> None: ...
    def check(self, force: bool = False) -> bool: ...
    def maybe_raise(self) -> None: ...
