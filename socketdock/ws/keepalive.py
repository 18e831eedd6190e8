"""
Finding dead peers with WebSocket pings, on the reactor's own clock.

Autobahn has an auto-ping, but its timers go through txaio's batched timer,
which truncates every deadline to a whole second: a 0.5 s interval pings in a
busy loop and a timeout can fire at once.  This one uses the injected
``IReactorTime``, so it is exact, and tests drive it with ``task.Clock``.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Keepalive:
    """
    Ping every ``interval`` seconds; drop the peer when a pong is ``timeout``
    seconds late.  While the peer is not being read (backpressure), its pong
    cannot be seen, so a late pong then only postpones the verdict.

    :param interval: seconds between a pong (or the start) and the next ping.
    :param timeout: seconds to wait for a pong; 0 never drops.
    :param send_ping: sends one ping with the given payload.
    :param drop: called once when the peer is declared dead.
    """

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        timeout: float,
        send_ping: Callable[[bytes], None],
        drop: Callable[[], None],
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._timeout = timeout
        self._send_ping = send_ping
        self._drop = drop
        self._call: IDelayedCall | None = None
        self._waiting: bytes | None = None
        self._count = 0
        self._reading = True

    def start(self) -> None:
        """The connection is open: schedule the first ping."""
        if self._interval > 0:
            self._schedule(self._interval, self._ping)

    def stop(self) -> None:
        """The connection is gone: cancel whatever is scheduled."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def pong(self, payload: bytes) -> None:
        """A pong arrived: if it answers our ping, the peer is alive."""
        if self._waiting is not None and payload == self._waiting:
            self._waiting = None
            self._schedule(self._interval, self._ping)

    def reading(self, reading: bool) -> None:
        """Whether the peer's data is being read (False under backpressure)."""
        self._reading = reading

    def _schedule(self, delay: float, what: Callable[[], None]) -> None:
        self.stop()
        self._call = self._clock.callLater(delay, what)

    def _ping(self) -> None:
        self._call = None
        self._count += 1
        self._waiting = b"%d" % self._count
        self._send_ping(self._waiting)
        if self._timeout > 0:
            self._schedule(self._timeout, self._late)

    def _late(self) -> None:
        self._call = None
        if not self._reading:
            self._schedule(self._timeout, self._late)
            return
        self._drop()
