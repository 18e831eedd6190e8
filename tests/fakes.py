"""
Small stand-ins for production collaborators, shared by several test modules.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, maybeDeferred


class InlineWriter:
    """
    A :class:`socketdock.relay.journal.ThreadWriter` that runs transactions at
    once on the caller's thread.
    """

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def __call__(self, work: Callable[[], object]) -> Deferred[object]:
        return maybeDeferred(work)
