"""
Confirmed delivery (SPEC §9): a ping of our own after the frames, and the pong
that proves the client read past them.

A peer must answer every ping with a pong carrying its payload (RFC 6455
§5.5.2-3), and frames arrive in order: the pong to a ping sent after a frame
shows that the client's WebSocket stack read that frame.  A peer that gets
several pings before it answers may answer only the latest, so a pong for
ping *n* settles every confirm waiting on a ping numbered *n* or lower.

Confirm pings carry :data:`TOKEN_SIZE` bytes beginning with ``c``; the
keepalive's (:mod:`socketdock.ws.keepalive`) are decimal digits, so neither
can take the other's pong.  Confirms asked for within one reactor turn share
one ping: it is sent at the end of the turn, after every frame of that turn.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from socketdock.relay.confirm import Gone, Unconfirmed

#: A confirm ping's payload: ``c`` and a 7-byte big-endian counter.
TOKEN_SIZE = 8
_PREFIX = b"c"


def token(number: int) -> bytes:
    """The ping payload of confirm ping ``number``."""
    return _PREFIX + number.to_bytes(TOKEN_SIZE - 1, "big")


def number_of(payload: bytes) -> int | None:
    """The confirm ping a pong answers, or None when it answers no confirm ping."""
    if len(payload) != TOKEN_SIZE or not payload.startswith(_PREFIX):
        return None
    return int.from_bytes(payload[1:], "big")


class _Waiter:
    __slots__ = ("d", "ping", "timer")

    def __init__(self, d: Deferred[None], timer: IDelayedCall) -> None:
        self.d = d
        self.timer = timer
        self.ping = 0  # the ping that settles it; 0 until one is sent for it


class Confirmer:
    """
    One connection's confirms in flight.

    :param send_ping: sends one ping with the given payload; called only
        once :meth:`open` was.
    """

    def __init__(self, clock: IReactorTime, send_ping: Callable[[bytes], None]) -> None:
        self._clock = clock
        self._send_ping = send_ping
        self._sent = 0  # number of the last confirm ping sent
        self._waiting: list[_Waiter] = []
        self._flush: IDelayedCall | None = None
        self._open = False
        self._gone = False

    def confirm(self, timeout: float) -> Deferred[None]:
        """
        Fire once the client answers a ping sent after every frame handed to
        the socket so far (and those held for a pending handshake).

        Fails with :class:`Unconfirmed` after ``timeout`` seconds without
        that pong, :class:`Gone` when the connection closes first.
        """
        d: Deferred[None] = Deferred(self._forget)
        if self._gone:
            d.errback(Gone())
            return d
        waiter = _Waiter(d, self._clock.callLater(timeout, self._late, d))
        self._waiting.append(waiter)
        self._schedule()
        return d

    def open(self) -> None:
        """The handshake completed (its held frames are written): pings may go."""
        self._open = True
        self._schedule()

    def pong(self, payload: bytes) -> None:
        """A pong arrived: settle every confirm its ping covers."""
        number = number_of(payload)
        if number is None or number > self._sent or not self._waiting:
            return
        keep: list[_Waiter] = []
        settled: list[_Waiter] = []
        for waiter in self._waiting:
            (settled if 0 < waiter.ping <= number else keep).append(waiter)
        self._waiting = keep
        for waiter in settled:
            waiter.timer.cancel()
            waiter.d.callback(None)

    def gone(self) -> None:
        """The connection closed: every confirm still waiting fails with :class:`Gone`."""
        self._gone = True
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.timer.cancel()
            waiter.d.errback(Gone())

    def __len__(self) -> int:
        return len(self._waiting)

    def _schedule(self) -> None:
        if self._open and self._flush is None and self._waiting:
            self._flush = self._clock.callLater(0, self._ping)

    def _ping(self) -> None:
        self._flush = None
        fresh = [w for w in self._waiting if w.ping == 0]
        if not fresh or self._gone:
            return
        self._sent += 1
        for waiter in fresh:
            waiter.ping = self._sent
        self._send_ping(token(self._sent))

    def _late(self, d: Deferred[None]) -> None:
        self._waiting = [w for w in self._waiting if w.d is not d]
        d.errback(Unconfirmed())

    def _forget(self, d: Deferred[None]) -> None:
        # Cancelled (its frame was never sent): no pong is awaited for it.
        for waiter in self._waiting:
            if waiter.d is d:
                waiter.timer.cancel()
        self._waiting = [w for w in self._waiting if w.d is not d]
