"""
Flow control of a relay connection, both ways, as Autobahn and Twisted hooks
(mixed into :class:`~socketdock.ws.protocol.RelayServerProtocol`).

Inbound, the client's session pauses reading when its queue towards the
backend is full (:meth:`FlowControl.pause_reading`); outbound, the transport
pauses the protocol, its producer, when the client stops reading, and from
then on what is written waits for the client: sends and pongs alike are
counted against its bounds (:mod:`~socketdock.ws.outbound`) and refused past
them.  The "paused" flag stays on the protocol, since every send reads it;
only a connection that was paused gets an :class:`~socketdock.ws.outbound.Outbound`.
"""

from __future__ import annotations

from collections.abc import Callable

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from socketdock.relay.admission import Entry
from socketdock.ws.hub import Hub
from socketdock.ws.outbound import Outbound
from socketdock.ws.timers import Timers


@implementer(IPushProducer)
class FlowControl(WebSocketServerProtocol):
    """
    Pausing the client's reads, and following its own.

    Its hooks call Autobahn's by name, as the protocol's mixins all do
    (:class:`~socketdock.ws.protocol.RelayServerProtocol` says why).
    """

    # Set by the protocol.
    _log: Logger
    _hub: Hub
    _entry: Entry | None
    _timers: Timers
    connection_id: str
    close: Callable[[int, str, str], None]

    def __init__(self) -> None:
        super().__init__()
        self._reading_paused = False
        self._consuming = False
        # Set while the transport has paused us; _outbound counts what waits.
        self._client_paused = False
        self._outbound: Outbound | None = None

    # -- inbound: the session's queue is full ---------------------------------

    def pause_reading(self) -> None:
        self._reading_paused = True
        self.transport.pauseProducing()  # type: ignore[union-attr]  # TCP and TLS transports are IPushProducers
        self._timers.reading(False)

    def resume_reading(self) -> None:
        self._reading_paused = False
        self.transport.resumeProducing()  # type: ignore[union-attr]  # as in pause_reading
        self._timers.reading(True)
        if not self._consuming:
            # Frames read before the pause are still in Autobahn's buffer.
            self.consumeData()

    def consumeData(self) -> None:
        self._consuming = True
        try:
            WebSocketServerProtocol.consumeData(self)
        finally:
            self._consuming = False

    def processData(self) -> bool:
        # Pausing the transport stops further reads, but one read may hold
        # many frames: leave them buffered so the queue stays at queue_limit.
        if self._reading_paused and self.state == self.STATE_OPEN:
            return False
        return WebSocketServerProtocol.processData(self)

    # -- outbound: the client is not reading ----------------------------------

    # IPushProducer: the transport tells us when the client stops reading.
    # The bytes counted while paused are those written since the transport's
    # buffer filled, the write that filled it included; they are all sent
    # when it resumes us.
    def pauseProducing(self) -> None:
        if self._outbound is None:
            self._outbound = Outbound(self._hub.budget, self._hub.max_message_size)
        self._client_paused = True

    def resumeProducing(self) -> None:
        self._client_paused = False
        if self._outbound is not None:
            self._outbound.forget()

    def stopProducing(self) -> None:
        self.pauseProducing()

    def onPing(self, payload: bytes) -> None:
        # A pong is outbound like a send: while the client is not reading it
        # counts against the same bound, and past it the client is closed
        # rather than its pongs buffered without end.
        if self.state != self.STATE_OPEN or self._entry.closed_by is not None:  # type: ignore[union-attr]  # open
            return
        size = len(payload) + 2
        if self._client_paused:
            outbound: Outbound = self._outbound  # type: ignore[assignment]  # made on pausing
            if outbound.no_room(size) is not None:
                self._log.info(
                    "client {connection_id} pings but does not read; closing it",
                    connection_id=self.connection_id,
                )
                self.close(1008, "not reading pongs", "server")
                return
            outbound.count(size)
            self.sendPong(payload)
            return
        self.sendPong(payload)
        if self._client_paused:
            # This pong filled the transport's buffer.
            self._outbound.count(size)
