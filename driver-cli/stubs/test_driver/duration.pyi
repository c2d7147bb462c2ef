"""Durations as the driver takes them: a `timedelta` (preferred), or a number of seconds."""

import datetime

Duration = datetime.timedelta | int | float

def as_timedelta(duration: Duration) -> datetime.timedelta: ...
def as_seconds(duration: Duration) -> float: ...
