"""
The instance's byte budget for queued data (``max_queued_bytes``).

Per-connection bounds (``queue_limit``, twice ``max_message_size``) keep one
connection small, but not ten thousand of them: the budget counts, over the
whole instance, the bytes of messages waiting for the backend and the bytes a
slow client has not read yet.  Past it a connection stops reading and a
``send`` is answered 503, until enough is delivered.  No Twisted imports: it
is plain bookkeeping, tested with plain numbers.
"""

from __future__ import annotations

from collections.abc import Callable


class ByteBudget:
    """
    Bytes taken and given back, against a limit.

    :param limit: bytes; 0 means no limit (the figure is still kept, for
        ``/metrics``).
    """

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self.used = 0
        self._waiting: list[Callable[[], None]] = []

    def over(self) -> bool:
        """Whether the budget is used up (new work should wait)."""
        return 0 < self.limit <= self.used

    def room_for(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit."""
        return not self.limit or self.used + nbytes <= self.limit

    def take(self, nbytes: int) -> None:
        self.used += nbytes

    def give(self, nbytes: int) -> None:
        """Give bytes back; once under the limit, wake whoever waits for room."""
        self.used -= nbytes
        if self._waiting and not self.over():
            waiting, self._waiting = self._waiting, []
            for wake in waiting:
                wake()

    def when_room(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` once, the next time bytes are given back under the limit."""
        self._waiting.append(wake)
