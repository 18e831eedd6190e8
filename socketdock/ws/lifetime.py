"""
Limits on a connection's life: ``max_lifetime`` and ``tag_deadline``.

A load balancer places only new sockets, so after a scale-out long-lived
sockets stay where they were; a lifetime limit makes every client reconnect
now and then, and the jitter (±10%) keeps a cohort that connected together
from reconnecting together.  A tag deadline closes a connection the backend
never tagged: one it did not claim, usually one it cannot serve.  Both run on
the reactor's clock, from the moment the connection opens.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["JITTER", "Lifetime"]

#: The lifetime is drawn from ``max_lifetime`` times 1 ± this.
JITTER = 0.1


class Lifetime:
    """
    The deadlines of one open connection.

    :param max_lifetime: seconds, before jitter; 0 for none.
    :param tag_deadline: seconds by which some tag must have reached it; 0 for none.
    :param tagged: whether a tag ever reached the connection.
    :param close: closes it with a code and reason (initiator ``server``).
    :param uniform: a number in [0, 1), for the jitter (``random.random``).
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_lifetime: float,
        tag_deadline: float,
        tagged: Callable[[], bool],
        close: Callable[[int, str], None],
        uniform: Callable[[], float],
    ) -> None:
        self._clock = clock
        self._max_lifetime = max_lifetime
        self._tag_deadline = tag_deadline
        self._tagged = tagged
        self._close = close
        self._uniform = uniform
        self._calls: list[IDelayedCall] = []

    def start(self) -> None:
        """The connection is open: set its deadlines."""
        if self._max_lifetime > 0:
            seconds = self._max_lifetime * (1 + JITTER * (2 * self._uniform() - 1))
            self._calls.append(self._clock.callLater(seconds, self._expired, seconds))
        if self._tag_deadline > 0:
            self._calls.append(self._clock.callLater(self._tag_deadline, self._check_tagged))

    def stop(self) -> None:
        """The connection is gone (or going): cancel what is set."""
        calls, self._calls = self._calls, []
        for call in calls:
            if call.active():
                call.cancel()

    def _expired(self, seconds: float) -> None:
        self.stop()
        self._close(1001, f"max_lifetime reached after {seconds:.0f}s; reconnect")

    def _check_tagged(self) -> None:
        if not self._tagged():
            self.stop()
            self._close(1008, f"no tag within tag_deadline ({self._tag_deadline:g}s)")
