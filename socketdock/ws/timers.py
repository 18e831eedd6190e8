"""
One connection's timers, wired in one place: keepalive pings
(:mod:`~socketdock.ws.keepalive`), lifetime deadlines
(:mod:`~socketdock.ws.lifetime`) and confirm pings (:mod:`~socketdock.ws.confirm`).

They start when the handshake opens (a confirm asked for earlier waits for
that, behind the held sends) and all stop when the connection goes, so none
outlives it; a pong goes to both kinds of ping, which tell theirs apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from socketdock.ws.confirm import Confirmer
from socketdock.ws.keepalive import Keepalive
from socketdock.ws.lifetime import Lifetime

if TYPE_CHECKING:
    from socketdock.ws.hub import Hub


class Timers:
    """
    The timers of one admitted connection.

    :param send_ping: sends one ping with the given payload.
    :param drop: drops a client that did not answer a ping in time.
    :param close: closes the connection with a code and reason (its lifetime ended).
    :param tagged: whether a tag ever reached the connection (``tag_deadline``).
    """

    __slots__ = (
        "_close",
        "_confirmer",
        "_drop",
        "_hub",
        "_keepalive",
        "_lifetime",
        "_send_ping",
        "_state",
        "_tagged",
    )

    def __init__(
        self,
        hub: Hub,
        send_ping: Callable[[bytes], None],
        drop: Callable[[], None],
        close: Callable[[int, str], None],
        tagged: Callable[[], bool],
    ) -> None:
        self._hub = hub
        self._send_ping = send_ping
        self._drop = drop
        self._close = close
        self._tagged = tagged
        self._keepalive: Keepalive | None = None
        self._lifetime: Lifetime | None = None
        self._confirmer: Confirmer | None = None
        self._state = "pending"

    def open(self) -> None:
        """The handshake opened and its held sends are written: the timers start."""
        if self._state != "pending":
            return  # gone already (while the held sends were written)
        self._state = "open"
        hub = self._hub
        self._keepalive = Keepalive(
            hub.reactor, hub.ping_interval, hub.ping_timeout, self._send_ping, self._drop
        )
        self._keepalive.start()
        if hub.max_lifetime or hub.tag_deadline:
            self._lifetime = Lifetime(
                hub.reactor,
                hub.max_lifetime,
                hub.tag_deadline,
                self._tagged,
                self._close,
                hub.uniform,
            )
            self._lifetime.start()
        if self._confirmer is not None:
            self._confirmer.open()

    def pong(self, payload: bytes) -> None:
        """A pong arrived: it may answer a keepalive ping or a confirm ping."""
        if self._keepalive is not None:
            self._keepalive.pong(payload)
        if self._confirmer is not None:
            self._confirmer.pong(payload)

    def reading(self, reading: bool) -> None:
        """Whether the client's data is read (a late pong is not its fault while not)."""
        if self._keepalive is not None:
            self._keepalive.reading(reading)

    def confirm(self, timeout: float) -> Deferred[None]:
        """See :meth:`~socketdock.ws.confirm.Confirmer.confirm`."""
        if self._confirmer is None:
            self._confirmer = Confirmer(self._hub.reactor, self._send_ping)
            if self._state == "open":
                self._confirmer.open()
            elif self._state == "stopped":
                self._confirmer.gone()
        return self._confirmer.confirm(timeout)

    def stop(self) -> None:
        """The connection is gone: nothing scheduled stays, every confirm fails."""
        self._state = "stopped"
        if self._keepalive is not None:
            self._keepalive.stop()
        if self._lifetime is not None:
            self._lifetime.stop()
        if self._confirmer is not None:
            self._confirmer.gone()
