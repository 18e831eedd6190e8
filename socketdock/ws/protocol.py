"""
The client side: an Autobahn server protocol, the thin adapter between a
client's frames and its relay-side :class:`~socketdock.relay.admission.Entry`,
which owns the connection's life from the handshake to the disconnect notice.

Its factory (:mod:`~socketdock.ws.factory`) builds it with the listener's
:class:`~socketdock.ws.hub.Hub`; ``self.factory`` is left to Autobahn.  The
WebSocket mechanics sit beside it, one job a module: the opening handshake
(:mod:`~socketdock.ws.handshake`, through :mod:`~socketdock.ws.gate`), flow
control both ways (:mod:`~socketdock.ws.flow`, :mod:`~socketdock.ws.outbound`),
a message's frames (:mod:`~socketdock.ws.fragments`), pings and deadlines
(:mod:`~socketdock.ws.timers`) and the lines a connection logs
(:mod:`~socketdock.ws.report`).
"""

from __future__ import annotations

from collections.abc import Callable

from autobahn.util import encode_truncate
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socketdock.ops.filelimit import no_release
from socketdock.ops.timestamps import rfc3339
from socketdock.relay.admission import OPEN, Entry
from socketdock.relay.registry import FULL, NOT_OPEN, SENT, SharedFrame
from socketdock.relay.session import ISocket
from socketdock.ws.buffers import release_buffers
from socketdock.ws.close_codes import close_frame_fault, local_failure
from socketdock.ws.flow import FlowControl
from socketdock.ws.fragments import FragmentLimit
from socketdock.ws.handshake import OpeningHandshake
from socketdock.ws.hub import Hub
from socketdock.ws.outbound import Outbound
from socketdock.ws.report import connection_closed
from socketdock.ws.timers import Timers


# Every base is an Autobahn server protocol: mypy then compares Autobahn's
# own classes with each other, and they disagree on the type of ``peer``.
@implementer(ISocket)
class RelayServerProtocol(OpeningHandshake, FlowControl, FragmentLimit):  # type: ignore[misc]
    """
    One client connection.

    It is also the transport's producer (:class:`~socketdock.ws.flow.FlowControl`),
    so that it learns when the client stops reading and can refuse further
    sends before the unsent bytes grow without bound.

    Autobahn calls its hooks on the protocol itself, so the WebSocket
    mechanics beside it are mixins.  Their hooks call Autobahn's by name
    rather than through ``super()``: on Python 3.11 ``super()`` walks the
    class's whole MRO on every call, and they run for every read or frame.
    No two of the protocol's classes define the same hook
    (``tests/ws/test_interfaces.py``), so none is skipped.

    :param hub: what every connection of its listener shares.
    """

    _log = Logger()

    #: Gives back this connection's place under its listener's cap
    #: (:mod:`socketdock.ops.filelimit`); the upgrade sets it.
    release: Callable[[], None] = staticmethod(no_release)

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self._hub = hub
        self.connection_id = ""
        self._tags: tuple[str, ...] = ()
        self._ever_tagged = False
        # The backend's state (SPEC §9): set by the connect answer and the registry.
        self.backend_state: str | None = None
        self._entry: Entry | None = None
        self._timers = Timers(
            hub, self.sendPing, self._ping_timed_out, self._end_of_life, self._was_tagged
        )
        self._connected_at = 0.0
        self._last_active_at = 0.0
        self._messages_in = 0
        self._messages_out = 0

    @property
    def tags(self) -> tuple[str, ...]:
        """Set by the registry only (SPEC §8); kept after close for the notice."""
        return self._tags

    @tags.setter
    def tags(self, tags: tuple[str, ...]) -> None:
        self._tags = tags
        if tags:
            self._ever_tagged = True

    def _was_tagged(self) -> bool:
        return self._ever_tagged

    # -- open -----------------------------------------------------------------

    def onOpen(self) -> None:
        self._entry.opened(self._send_now)  # type: ignore[union-attr]  # admitted
        # After the held sends: a confirm's ping follows their frames.
        self._timers.open()

    def _end_of_life(self, code: int, reason: str) -> None:
        # Debug: the close line (info) follows, with the code; one info line
        # per client is the rule (docs/operating.rst).
        self._log.debug(
            "closing client {connection_id} with {code}: {reason}",
            connection_id=self.connection_id,
            code=code,
            reason=reason,
        )
        self.close(code, reason, "server")

    def onPong(self, payload: bytes) -> None:
        self._timers.pong(payload)

    def confirm(self, timeout: float) -> Deferred[None]:
        return self._timers.confirm(timeout)

    def _ping_timed_out(self) -> None:
        self._log.info(
            "client {connection_id} did not answer a ping; dropping it",
            connection_id=self.connection_id,
        )
        self.wasClean = False
        self.wasNotCleanReason = "ping timeout"
        self.dropConnection(abort=True)

    # -- client to backend ----------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self._messages_in += 1
        self._last_active_at = self._hub.reactor.seconds()
        session = self._entry.session  # type: ignore[union-attr]  # open
        if session is not None:
            session.received(payload, isBinary)

    # -- backend to client ----------------------------------------------------

    def deliver(self, payload: bytes, is_binary: bool) -> Deferred[None]:
        entry: Entry = self._entry  # type: ignore[assignment]  # live: its handshake started
        if entry.state == OPEN and entry.closed_by is None:
            return self._send_now(payload, is_binary, None)
        return entry.hold(payload, is_binary)

    def _send_now(self, payload: bytes, is_binary: bool, d: Deferred[None] | None):
        if self._client_paused:
            outbound: Outbound = self._outbound  # type: ignore[assignment]  # made on pausing
            full = outbound.no_room(len(payload))
            if full is not None:
                if d is None:
                    return fail(full)
                d.errback(full)
                return d
            outbound.count(len(payload))
            self.sendMessage(payload, is_binary)
        else:
            self.sendMessage(payload, is_binary)
            if self._client_paused:
                # This message filled the transport's buffer (it paused us
                # while we wrote): it is unsent too.
                self._outbound.count(len(payload))
        self._messages_out += 1
        hub = self._hub
        self._last_active_at = hub.reactor.seconds()
        hub.metrics.message_out()
        if d is None:
            return succeed(None)
        d.callback(None)
        return d

    def deliver_frame(self, frame: SharedFrame) -> int:
        """
        A tag send's message, encoded once for all its carriers (Autobahn's
        prepared message): no Deferred, no log line per carrier.  Bounded
        like :meth:`_send_now`.
        """
        entry = self._entry
        if entry is None or entry.state != OPEN or entry.closed_by is not None:
            return NOT_OPEN
        size = len(frame.payload)
        paused = self._client_paused
        if paused:
            # The same bounds as _send_now: per connection and the instance's budget.
            outbound: Outbound = self._outbound  # type: ignore[assignment]  # made on pausing
            if outbound.no_room(size) is not None:
                return FULL
            outbound.count(size)
        prepared = frame.encoded
        if prepared is None:
            # Autobahn's: its factory frames for a server.
            prepared = frame.encoded = self.factory.prepareMessage(frame.payload, frame.is_binary)
        if self._perMessageCompress is None and not self.send_queue:
            # What sendPreparedMessage does, less sendData's debug line and
            # traffic counter (the relay keeps its own).
            self.transport.write(prepared.payloadHybi)  # type: ignore[union-attr,attr-defined]
        else:
            self.sendPreparedMessage(prepared)  # type: ignore[arg-type]
        if not paused and self._client_paused:
            # This frame filled the transport's buffer: it is unsent too.
            self._outbound.count(size)  # type: ignore[union-attr]  # paused
        self._messages_out += 1
        hub = self._hub
        at = frame.at
        if at is None:
            at = frame.at = hub.reactor.seconds()
        self._last_active_at = at
        hub.metrics.message_out()
        return SENT

    # -- closing --------------------------------------------------------------

    def close(self, code: int, reason: str, initiator: str) -> None:
        if self._entry is None or not self._entry.close(code, reason, initiator):
            # Gone, closing, or not open yet (refused once admission ends).
            return
        # Autobahn's sendClose admits only 1000 and 3000-4999 (the codes an
        # application may choose); a server also sends 1001 and 1011.
        self.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123), isReply=False)

    def onCloseFrame(self, code, reasonRaw):
        if self.state == self.STATE_OPEN:
            fault = close_frame_fault(code, reasonRaw)
            if fault is not None:
                # Autobahn would send this close frame, then take the client's
                # bad one for the reply and abort, discarding ours unsent.
                self._fail_connection(*fault)
                self.dropConnection(abort=False)
                return True
            if self._entry is not None:
                # The client started the closing handshake.
                self._entry.client_closing(code, (reasonRaw or b"").decode("utf-8", "replace"))
        return super().onCloseFrame(code, reasonRaw)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self.release()
            release_buffers(self)

    def onClose(self, wasClean: bool, code, reason) -> None:
        if self._outbound is not None:
            self._outbound.forget()
        self._timers.stop()
        # Autobahn forgets this timer when the connection goes: a stopped
        # instance would otherwise keep the reactor busy for another second.
        if self.closeHandshakeTimeoutCall is not None:
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        entry = self._entry
        if entry is None:
            return
        ended = entry.ended(local_failure(self.localCloseCode, self.localCloseReason))
        if ended is not None:
            seconds = self._hub.reactor.seconds() - self._connected_at
            connection_closed(self._log, self.connection_id, self.peer, *ended, seconds)

    def describe(self) -> dict:
        """What ``GET /socket/<id>`` shows of the connection."""
        return {
            "connection_id": self.connection_id,
            "connected_at": rfc3339(self._connected_at),
            "last_active_at": rfc3339(self._last_active_at),
            "remote": self.peer,
            "messages_in": self._messages_in,
            "messages_out": self._messages_out,
            "tags": list(self.tags),
        }
