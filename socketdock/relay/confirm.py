"""
Confirmed sends (SPEC §9), as the callback API sees them: a frame, then proof
that the client read it.

The proof itself (a ping of our own and its pong) is the connection's
business (:mod:`socketdock.ws.confirm`); here are the outcomes and the way one
send, or one send to many connections, turns into them.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from socketdock.relay.registry import NotLive

#: The longest a backend may ask to wait, in seconds.
MAX_CONFIRM = 60.0


class Unconfirmed(Exception):
    """No pong came in time: the frame may or may not have been read (504)."""


class Gone(Exception):
    """The connection closed before its client confirmed the frame (410)."""


def confirm_timeout(text: str) -> float:
    """
    The seconds of a ``confirm=`` query value.

    :raises ValueError: with a one-line reason, for anything but a number
        above 0 and at most 60.
    """
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError("confirm must be a number of seconds") from None
    if not 0 < seconds <= MAX_CONFIRM:  # NaN fails this too
        raise ValueError(f"confirm must be above 0 and at most {MAX_CONFIRM:g} seconds")
    return seconds


def deliver_confirmed(connection, payload: bytes, is_binary: bool, timeout: float) -> Deferred:
    """
    Hand one frame to ``connection`` (an :class:`IConnection`), then wait for
    its client to confirm it.

    Fails with what ``deliver`` fails with (``NotLive``, ``OutboundFull``:
    the frame was not sent), else :class:`Unconfirmed` or :class:`Gone`.
    The wait starts now, a pending handshake included.
    """
    delivered = connection.deliver(payload, is_binary)
    confirmed = connection.confirm(timeout)

    def sent(_: object) -> Deferred:
        return confirmed

    def not_sent(failure: Failure) -> Failure:
        # Nothing to confirm: stop waiting, quietly.
        confirmed.addErrback(lambda _: None)
        confirmed.cancel()
        return failure

    return delivered.addCallbacks(sent, not_sent)


@attrs.frozen
class Tally:
    """What a confirmed send to a tag found, per connection."""

    confirmed: int = 0
    unconfirmed: int = 0
    gone: int = 0

    @property
    def none(self) -> bool:
        """Nobody carried the tag."""
        return not (self.confirmed or self.unconfirmed or self.gone)

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.confirmed + other.confirmed,
            self.unconfirmed + other.unconfirmed,
            self.gone + other.gone,
        )

    def as_json(self) -> dict:
        """The 200 answer's JSON object."""
        return attrs.asdict(self)


def confirm_all(
    connections: Iterable, payload: bytes, is_binary: bool, timeout: float
) -> Deferred[Tally]:
    """
    :func:`deliver_confirmed` to each of ``connections``, counted.

    A connection whose client reads too slowly to take the frame counts as
    unconfirmed (it was not sent); one that stopped being live, as gone.
    """
    waits = [deliver_confirmed(c, payload, is_binary, timeout) for c in connections]

    def count(results: list) -> Tally:
        confirmed = unconfirmed = gone = 0
        for ok, result in results:
            if ok:
                confirmed += 1
            elif isinstance(result, Failure) and result.check(Gone, NotLive):
                gone += 1
            else:
                unconfirmed += 1
        return Tally(confirmed, unconfirmed, gone)

    return DeferredList(waits, consumeErrors=True).addCallback(count)
