"""
The client side: an Autobahn server protocol that adapts WebSocket frames to
a relay :class:`Session` (its factory is in :mod:`socketdock.ws.factory`, the
upgrade in :mod:`socketdock.ws.upgrade`).

It only translates between frames and the connection's relay-side
:class:`~socketdock.relay.admission.Entry`, which owns its life from the
handshake to the disconnect notice; what is WebSocket mechanics (pings,
lifetimes, bytes a slow reader leaves unsent, bytes sent before the upgrade
is answered) stays here and beside it in :mod:`socketdock.ws`.
"""

from __future__ import annotations

from collections.abc import Callable

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.util import encode_truncate
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socketdock.ops.filelimit import no_release
from socketdock.ops.timestamps import rfc3339
from socketdock.relay.admission import CLOSED, OPEN, Entry, Refused
from socketdock.relay.registry import (
    FULL,
    NOT_OPEN,
    SENT,
    BudgetFull,
    OutboundFull,
    SharedFrame,
)
from socketdock.relay.session import ISocket
from socketdock.ws.buffers import release_buffers
from socketdock.ws.close_codes import is_utf8, valid_close_code
from socketdock.ws.confirm import Confirmer
from socketdock.ws.context import connect_context
from socketdock.ws.early_bytes import EarlyBytes
from socketdock.ws.keepalive import Keepalive
from socketdock.ws.lifetime import Lifetime
from socketdock.ws.refusal import autobahn_reason, printable
from socketdock.ws.refusal import bad_extension_offer as _bad_extension_offer


@implementer(ISocket, IPushProducer)
class RelayServerProtocol(WebSocketServerProtocol):
    """
    One client connection.

    It is also the transport's producer, so that it learns when the client
    stops reading (the transport pauses it) and can refuse further sends
    before the unsent bytes grow without bound.
    """

    _log = Logger()

    #: Gives back this connection's place under its listener's cap
    #: (:mod:`socketdock.ops.filelimit`); the upgrade sets it.
    release: Callable[[], None] = staticmethod(no_release)

    def __init__(self) -> None:
        super().__init__()
        self.connection_id = ""
        self._tags: tuple[str, ...] = ()
        self._ever_tagged = False
        # The backend's state (SPEC §9): set by the connect answer and the registry.
        self.backend_state: str | None = None
        self._entry: Entry | None = None
        self._refusal_reason: str | None = None
        self._connected_at = 0.0
        self._last_active_at = 0.0
        self._messages_in = 0
        self._messages_out = 0
        self._client_paused = False
        self._unsent = 0
        self._reading_paused = False
        self._consuming = False
        self._keepalive: Keepalive | None = None
        self._retry_after: int | None = None
        self._lifetime: Lifetime | None = None
        self._confirmer: Confirmer | None = None
        self._fragments = 0
        # Bytes the client sent after its upgrade request, while admission
        # (the backend, the journal) decides: kept aside, up to a bound.
        self._early: EarlyBytes | None = None

    @property
    def tags(self) -> tuple[str, ...]:
        """Set by the registry only (SPEC §8); kept after close for the notice."""
        return self._tags

    @tags.setter
    def tags(self, tags: tuple[str, ...]) -> None:
        self._tags = tags
        if tags:
            self._ever_tagged = True

    # -- handshake ------------------------------------------------------------

    def onConnect(self, request):
        factory = self.factory
        # Every handshake an address attempts counts, whatever becomes of it.
        rate = factory.rate
        if rate is not None:
            host = getattr(self.transport.getPeer(), "host", None)  # type: ignore[union-attr]  # connected
            if host is not None and not rate.allow(host):
                self._retry_after = rate.retry_after
                return self._deny(429, "too many handshakes from this address", "rate")
        origin = request.origin
        if origin and not factory.origins.allows(origin):
            return self._deny(403, "origin not allowed", "origin")
        closed = factory.admissions.closed()
        if closed is not None:
            return self._deny(closed.status, closed.why, closed.label)
        if factory.max_pending and factory.pending >= factory.max_pending:
            return self._deny(503, "too many handshakes waiting", "pending")
        bad_offer = _bad_extension_offer(request.extensions)
        if bad_offer is not None:
            return self._deny(400, bad_offer, "bad_request")
        self._entry = entry = factory.admissions.enter(self)
        self._connected_at = self._last_active_at = factory.reactor.seconds()
        # No line here: twistd writes every level it is given, and formatting
        # one per handshake was ~12% of a handshake's CPU.  The close line (or
        # the refusal line) names the client and its peer once.
        factory.pending += 1
        d = entry.connect(
            factory.forward_headers(request.headers),
            request.protocols,
            connect_context(self.http_request_uri, self.peer or ""),
            factory.answered,
        )
        d.addErrback(self._refused)
        self._early = EarlyBytes(self.transport, factory.max_message_size + 14)
        return d

    def _deny(self, status: int, why: str, reason: str):
        """Refuse the handshake; ``reason`` is the metric's label for why."""
        self._refusal_reason = reason
        raise ConnectionDeny(status, why)

    def _refused(self, failure: Failure):
        refused = failure.trap(Refused) and failure.value
        assert isinstance(refused, Refused)
        return self._deny(refused.status, refused.why, refused.label)

    def _dataReceived(self, data: bytes) -> None:
        if self._early is None:
            return super()._dataReceived(data)
        self._early.keep(data)

    def _admission_over(self, opened: bool) -> None:
        """Admission ended: hand the bytes kept aside to Autobahn, or drop them."""
        early, self._early = self._early, None
        if early is not None:
            self.data += early.end(opened and self.transport is not None)

    def succeedHandshake(self, res) -> None:
        self._admission_over(opened=True)
        try:
            return super().succeedHandshake(res)
        except Exception:
            # Nothing waits on this Deferred: the client would hang, pending.
            self._log.failure(
                "handshake of {connection_id} failed", connection_id=self.connection_id
            )
            if self.state == self.STATE_CONNECTING:
                self._refusal_reason = "error"
                self.failHandshake("internal server error", 500)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders=None) -> None:
        """
        Every refused handshake ends here, Autobahn's own included: one
        bounded log line, a counted refusal, and an HTTP error whose status
        line echoes nothing a client could use to flood or inject.
        """
        self._admission_over(opened=False)
        label = self._refusal_reason
        if label is None:
            code, label = autobahn_reason(reason, code)
        why = printable(reason)
        self.factory.metrics.handshake_refused(code, label)
        if self.connection_id:
            self._log.info(
                "handshake of {connection_id} from {peer} refused: {status} {why}",
                connection_id=self.connection_id,
                peer=self.peer,
                status=code,
                why=why,
            )
        else:
            self._log.info(
                "handshake from {peer} refused: {status} {why}",
                peer=self.peer,
                status=code,
                why=why,
            )
        if self._entry is not None:
            # Admitted, then failed (the backend heard of it): onClose
            # sends the disconnect notice.
            self._entry.handshake_failed(why)
        # A refusal is an orderly end, not Autobahn's warning-level "unclean".
        self.wasClean = True
        self.wasNotCleanReason = why
        if self._retry_after is not None:
            responseHeaders = [*(responseHeaders or ()), ("Retry-After", str(self._retry_after))]
        self.sendHttpErrorResponse(code, why, responseHeaders)
        self.dropConnection(abort=False)

    def onOpen(self) -> None:
        factory = self.factory
        self._keepalive = Keepalive(
            factory.reactor,
            factory.ping_interval,
            factory.ping_timeout,
            self.sendPing,
            self._ping_timed_out,
        )
        self._keepalive.start()
        if factory.max_lifetime or factory.tag_deadline:
            self._lifetime = Lifetime(
                factory.reactor,
                factory.max_lifetime,
                factory.tag_deadline,
                lambda: self._ever_tagged,
                self._end_of_life,
                factory.uniform,
            )
            self._lifetime.start()
        assert self._entry is not None  # admitted
        self._entry.opened(self._send_now)
        if self._confirmer is not None:
            self._confirmer.open()

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

    def onPing(self, payload: bytes) -> None:
        # A pong is outbound like a send: while the client is not reading it
        # counts against the same bound, and past it the client is closed
        # rather than its pongs buffered without end.
        if self.state != self.STATE_OPEN or self._entry.closed_by is not None:  # type: ignore[union-attr]  # open
            return
        if self._client_paused:
            if self._no_room(len(payload) + 2) is not None:
                self._log.info(
                    "client {connection_id} pings but does not read; closing it",
                    connection_id=self.connection_id,
                )
                self.close(1008, "not reading pongs", "server")
                return
            self._count_unsent(len(payload) + 2)
            self.sendPong(payload)
            return
        self.sendPong(payload)
        if self._client_paused:
            # This pong filled the transport's buffer.
            self._count_unsent(len(payload) + 2)

    def onPong(self, payload: bytes) -> None:
        if self._keepalive is not None:
            self._keepalive.pong(payload)
        if self._confirmer is not None:
            self._confirmer.pong(payload)

    def confirm(self, timeout: float) -> Deferred[None]:
        if self._confirmer is None:
            self._confirmer = Confirmer(self.factory.reactor, self.sendPing)
            state = self._entry.state if self._entry is not None else CLOSED
            if state == OPEN:
                self._confirmer.open()
            elif state == CLOSED:
                self._confirmer.gone()
        return self._confirmer.confirm(timeout)

    def _ping_timed_out(self) -> None:
        self._log.info(
            "client {connection_id} did not answer a ping; dropping it",
            connection_id=self.connection_id,
        )
        self.wasClean = False
        self.wasNotCleanReason = "ping timeout"
        self.dropConnection(abort=True)

    # -- client to backend ----------------------------------------------------

    def onMessageBegin(self, isBinary: bool) -> None:
        self._fragments = 0
        self._fragment_bytes = 0
        super().onMessageBegin(isBinary)

    def onMessageFrameBegin(self, length: int) -> None:
        # Autobahn keeps each fragment as its own bytes object: a message of
        # one-byte continuation frames cost ~50 times its size, and seconds
        # of CPU for a few megabytes.
        self._fragments += 1
        self._fragment_bytes += length
        if too_fragmented(self._fragments, self._fragment_bytes) and not self.failedByMe:
            self._log.info(
                "client {connection_id} sent a message in fragments of {average} bytes on "
                "average past the first {free}; closing it",
                connection_id=self.connection_id,
                average=self._fragment_bytes // self._fragments,
                free=FREE_FRAGMENTS,
            )
            # Autobahn's _fail_connection would log a second line.
            self.failedByMe = True
            self.sendCloseFrame(
                code=1008, reasonUtf8=b"message in too many fragments", isReply=False
            )
            self.dropConnection(abort=False)
            return
        super().onMessageFrameBegin(length)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self._messages_in += 1
        self._last_active_at = self.factory.reactor.seconds()
        session = self._entry.session  # type: ignore[union-attr]  # open
        if session is not None:
            session.received(payload, isBinary)

    def pause_reading(self) -> None:
        self._reading_paused = True
        self.transport.pauseProducing()  # type: ignore[union-attr]  # TCP and TLS transports are IPushProducers
        if self._keepalive is not None:
            self._keepalive.reading(False)

    def resume_reading(self) -> None:
        self._reading_paused = False
        self.transport.resumeProducing()  # type: ignore[union-attr]  # as in pause_reading
        if self._keepalive is not None:
            self._keepalive.reading(True)
        if not self._consuming:
            # Frames read before the pause are still in Autobahn's buffer.
            self.consumeData()

    def consumeData(self) -> None:
        self._consuming = True
        try:
            super().consumeData()
        finally:
            self._consuming = False

    def processData(self) -> bool:
        # Pausing the transport stops further reads, but one read may hold
        # many frames: leave them buffered so the queue stays at queue_limit.
        if self._reading_paused and self.state == self.STATE_OPEN:
            return False
        return super().processData()

    # -- backend to client ----------------------------------------------------

    def deliver(self, payload: bytes, is_binary: bool) -> Deferred[None]:
        entry: Entry = self._entry  # type: ignore[assignment]  # live: its handshake started
        if entry.state == OPEN and entry.closed_by is None:
            return self._send_now(payload, is_binary, None)
        return entry.hold(payload, is_binary)

    def _send_now(self, payload: bytes, is_binary: bool, d: Deferred[None] | None):
        if self._client_paused:
            full = self._no_room(len(payload))
            if full is not None:
                if d is None:
                    return fail(full)
                d.errback(full)
                return d
            self._count_unsent(len(payload))
            self.sendMessage(payload, is_binary)
        else:
            self.sendMessage(payload, is_binary)
            if self._client_paused:
                # This message filled the transport's buffer (it paused us
                # while we wrote): it is unsent too.
                self._count_unsent(len(payload))
        self._messages_out += 1
        self._last_active_at = self.factory.reactor.seconds()
        self.factory.metrics.message_out()
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
        factory = self.factory
        size = len(frame.payload)
        paused = self._client_paused
        if paused:
            # The same bounds as _send_now: per connection and the instance's budget.
            if self._no_room(size) is not None:
                return FULL
            self._count_unsent(size)
        prepared = frame.encoded
        if prepared is None:
            prepared = frame.encoded = factory.prepareMessage(frame.payload, frame.is_binary)
        if self._perMessageCompress is None and not self.send_queue:
            # What sendPreparedMessage does, less sendData's debug line and
            # traffic counter (the relay keeps its own).
            self.transport.write(prepared.payloadHybi)  # type: ignore[union-attr,attr-defined]
        else:
            self.sendPreparedMessage(prepared)  # type: ignore[arg-type]
        if not paused and self._client_paused:
            # This frame filled the transport's buffer: it is unsent too.
            self._count_unsent(size)
        self._messages_out += 1
        at = frame.at
        if at is None:
            at = frame.at = factory.reactor.seconds()
        self._last_active_at = at
        factory.metrics.message_out()
        return SENT

    def _no_room(self, nbytes: int) -> OutboundFull | None:
        """
        Why ``nbytes`` more may not wait for a client that is not reading,
        or None: twice ``max_message_size`` per connection (SPEC §4), and
        the instance's budget.
        """
        if self._unsent + nbytes > 2 * self.factory.max_message_size:
            return OutboundFull()
        if not self.factory.budget.room_for(nbytes):
            return BudgetFull()
        return None

    def _count_unsent(self, nbytes: int) -> None:
        self._unsent += nbytes
        self.factory.budget.take(nbytes)

    def _forget_unsent(self) -> None:
        unsent, self._unsent = self._unsent, 0
        if unsent:
            self.factory.budget.give(unsent)

    # IPushProducer: the transport tells us when the client stops reading.
    # The bytes counted while paused are those written since the transport's
    # buffer filled, the write that filled it included; they are all sent
    # when it resumes us.
    def pauseProducing(self) -> None:
        self._client_paused = True

    def resumeProducing(self) -> None:
        self._client_paused = False
        self._forget_unsent()

    def stopProducing(self) -> None:
        self._client_paused = True

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
            # A code no peer may send (999, 1005, 5000) or a reason that is
            # not UTF-8 fails the connection; onClose reports our code, so
            # the notice and the metric labels never carry the client's.
            if not valid_close_code(code):
                return self._fail_close(1002, f"invalid close code {code}")
            if not is_utf8(reasonRaw):
                return self._fail_close(1007, "invalid close reason (not UTF-8)")
        if self.state == self.STATE_OPEN and self._entry is not None:
            # The client started the closing handshake.
            self._entry.client_closing(code, (reasonRaw or b"").decode("utf-8", "replace"))
        return super().onCloseFrame(code, reasonRaw)

    def _fail_close(self, code: int, reason: str) -> bool:
        # Autobahn would send this close frame, then take the client's bad
        # one for the reply and abort, discarding ours unsent.
        self._fail_connection(code, reason)
        self.dropConnection(abort=False)
        return True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self.release()
            release_buffers(self)

    def onClose(self, wasClean: bool, code, reason) -> None:
        self._forget_unsent()
        if self._keepalive is not None:
            self._keepalive.stop()
        if self._lifetime is not None:
            self._lifetime.stop()
        if self._confirmer is not None:
            self._confirmer.gone()
        # Autobahn forgets this timer when the connection goes: a stopped
        # instance would otherwise keep the reactor busy for another second.
        if self.closeHandshakeTimeoutCall is not None:
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        entry = self._entry
        if entry is None:
            return
        failed_with = None
        if self.localCloseCode is not None:
            # Autobahn failed the connection itself (protocol error, 1009).
            reason = self.localCloseReason or ""
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            failed_with = (self.localCloseCode, reason)
        ended = entry.ended(failed_with)
        if ended is not None:
            self._log.info(
                "client {connection_id} from {peer} closed after {seconds:.1f}s: "
                "code {code}, initiator {initiator}",
                connection_id=self.connection_id,
                peer=self.peer,
                code=ended[0],
                initiator=ended[1],
                seconds=self.factory.reactor.seconds() - self._connected_at,
            )

    # -- introspection --------------------------------------------------------

    def describe(self) -> dict:
        return {
            "connection_id": self.connection_id,
            "connected_at": rfc3339(self._connected_at),
            "last_active_at": rfc3339(self._last_active_at),
            "remote": self.peer,
            "messages_in": self._messages_in,
            "messages_out": self._messages_out,
            "tags": list(self.tags),
        }


#: Frames a message may arrive in whatever their size.
FREE_FRAGMENTS = 1024
#: Past those, the average payload a frame must bring: the per-frame cost
#: (a bytes object, a parse) then stays a fraction of the data's own, as for
#: a message of that size.  (Autobahn|Testsuite's 9.3.1 sends 4 MiB in
#: 64-byte frames; one-byte frames are an attack.)
MIN_AVERAGE_FRAGMENT = 64


def too_fragmented(frames: int, size: int) -> bool:
    """Whether ``frames`` frames bringing ``size`` bytes so far are too many for one message."""
    return frames > FREE_FRAGMENTS and size < MIN_AVERAGE_FRAGMENT * (frames - FREE_FRAGMENTS)
