"""
Library chatter below info.

Twisted logs at info what an operator of a relay does not need each time:
every factory started or stopped (one per pooled backend connection), and
every retry ``ClientService`` schedules while Redis is away (the cluster
link's own line already says the link is down).  Those events are demoted
to debug on their way to the log, so ``log_level = debug`` still shows them.
"""

from __future__ import annotations

from twisted.logger import ILogObserver, LogLevel
from zope.interface import implementer

__all__ = ["CHATTER", "DemoteChatter"]

#: The format strings of the events demoted (Twisted's own words).
CHATTER = frozenset(
    {
        "Starting factory {factory!r}",
        "Stopping factory {factory!r}",
        "Scheduling retry {attempt} to connect {endpoint} in {delay} seconds.",
    }
)


@implementer(ILogObserver)
class DemoteChatter:
    """Passes events on to ``observer``, those in :data:`CHATTER` at debug."""

    def __init__(self, observer: ILogObserver) -> None:
        self._observer = observer

    def __call__(self, event: dict) -> None:
        if event.get("log_level") == LogLevel.info and event.get("log_format") in CHATTER:
            event = dict(event, log_level=LogLevel.debug)
        self._observer(event)
