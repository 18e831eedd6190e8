"""
The client side: an Autobahn server protocol that adapts WebSocket frames to
a relay :class:`Session`, and its factory (the upgrade itself is in
:mod:`socketdock.ws.upgrade`).

The protocol is one connection's state machine::

    pending --(backend admits)--> open --(either side closes)--> closed
       \\--(refused, client gone)------------------------------/

It is registered (live) from the moment its handshake starts until it starts
closing; sends that arrive while it is pending are held and delivered, in
order, as soon as it opens.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import encode_truncate
from autobahn.websocket.compress import PERMESSAGE_COMPRESSION_EXTENSION
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socketdock.ops.filelimit import no_release
from socketdock.ops.timestamps import rfc3339
from socketdock.relay.backend import Admission, ConnectRefused, UnusableAdmission
from socketdock.relay.reach import InvalidTags
from socketdock.relay.registry import (
    FULL,
    NOT_OPEN,
    SENT,
    BudgetFull,
    NotLive,
    OutboundFull,
    SharedFrame,
)
from socketdock.relay.session import ISocket, Relay, Session
from socketdock.relay.state import details_text
from socketdock.relay.wire import new_connection_id
from socketdock.ws.confirm import Confirmer
from socketdock.ws.context import HeaderAllowList, connect_context
from socketdock.ws.keepalive import Keepalive
from socketdock.ws.lifetime import Lifetime
from socketdock.ws.origins import OriginPolicy
from socketdock.ws.ratelimit import HandshakeRate
from socketdock.ws.refusal import autobahn_reason, printable

_PENDING, _OPEN, _CLOSED = "pending", "open", "closed"

#: Close codes a peer may put in a close frame (RFC 6455 §7.4): the
#: registered ones Autobahn accepts, and 3000-4999.
_VALID_CLOSE_CODES = frozenset(WebSocketServerProtocol.CLOSE_STATUS_CODES_ALLOWED)


def _valid_close_code(code: int | None) -> bool:
    return code is None or code in _VALID_CLOSE_CODES or 3000 <= code <= 4999


def _bad_extension_offer(extensions) -> str | None:
    """
    Why a permessage-compress offer cannot be parsed, or None.  Autobahn
    parses them only after ``onConnect``, once the backend has admitted the
    client; checked first, a bad offer is refused without involving it.
    """
    for name, params in extensions:
        pmce = PERMESSAGE_COMPRESSION_EXTENSION.get(name)
        if pmce is None:
            continue
        try:
            pmce["Offer"].parse(params)  # type: ignore[attr-defined]  # autobahn types the table as dict[str, type]
        except Exception as e:
            return str(e)
    return None


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
        self._state = _PENDING
        self._session: Session | None = None
        self._held: list[tuple[bytes, bool, Deferred[None]]] = []
        self._refusal: ConnectRefused | None = None
        self._refusal_reason: str | None = None
        self._closed_by: tuple[int | None, str, str] | None = None
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
        self._admitting = False
        self._early: list[bytes] = []
        self._early_bytes = 0
        self._early_paused = False

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
        relay: Relay = factory.relay
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
        if relay.draining:
            return self._deny(503, "server shutting down", "draining")
        if factory.max_connections and len(relay.registry) >= factory.max_connections:
            return self._deny(503, "too many connections", "capacity")
        if factory.max_pending and factory.pending >= factory.max_pending:
            return self._deny(503, "too many handshakes waiting", "pending")
        bad_offer = _bad_extension_offer(request.extensions)
        if bad_offer is not None:
            return self._deny(400, bad_offer, "bad_request")
        self.connection_id = new_connection_id()
        self._connected_at = self._last_active_at = factory.reactor.seconds()
        relay.registry.add(self)
        # No line here: twistd writes every level it is given, and formatting
        # one per handshake was ~12% of a handshake's CPU.  The close line (or
        # the refusal line) names the client and its peer once.
        factory.pending += 1
        d = relay.backend.connect(
            self.connection_id,
            factory.forward_headers(request.headers),
            request.protocols,
            context=connect_context(self.http_request_uri, self.peer or ""),
        )
        d.addBoth(factory.answered)
        d.addCallbacks(self._admit, self._refuse)
        self._admitting = True
        return d

    def _deny(self, status: int, why: str, reason: str):
        """Refuse the handshake; ``reason`` is the metric's label for why."""
        self._refusal_reason = reason
        raise ConnectionDeny(status, why)

    def _admit(self, admission: Admission):
        if self._given_up(admission, recorded=False):
            return self._refused_now()
        if admission.tags:
            try:
                # Not noted: the record made below carries them.
                self.factory.relay.registry.retag(
                    self.connection_id, admission.tags, (), note=False
                )
            except InvalidTags as e:
                # Tags the backend set through the callback API while the
                # handshake was pending, plus these, pass the limit.
                self._log.warn(
                    "backend admitted {connection_id} with unusable tags ({why})",
                    connection_id=self.connection_id,
                    why=str(e),
                )
                return self._refuse(
                    Failure(UnusableAdmission("backend answered with unusable tags"))
                )
        if admission.state is not None:
            self.backend_state = admission.state
        # The answer waits until the journal has the connection on disk
        # (no wait without a journal), with or without a connect notice.
        d = self.factory.relay.record(
            self.connection_id, details_text(self.tags, self.backend_state)
        )
        d.addCallback(self._open_session, admission)
        return d

    def _open_session(self, _: None, admission: Admission) -> str | None:
        if self._given_up(admission, recorded=True):
            return self._refused_now()
        self._session = self.factory.relay.open_session(self.connection_id, self)
        return admission.subprotocol

    def _given_up(self, admission: Admission, recorded: bool) -> bool:
        """
        Whether the client left, or we were stopped, while the backend was
        deciding or the journal writing: a backend that admitted it still
        hears it is gone.
        """
        relay: Relay = self.factory.relay
        if not (self._state == _CLOSED or self._refusal is not None or relay.draining):
            return False
        if relay.backend.admits:
            tags = tuple(dict.fromkeys(self.tags + admission.tags))
            state = admission.state if admission.state is not None else self.backend_state
            if self._state == _CLOSED:
                relay.orphan(
                    self.connection_id,
                    "client left during the handshake",
                    "client",
                    tags,
                    recorded=recorded,
                    state=state,
                )
            else:
                relay.orphan(
                    self.connection_id,
                    "server shutting down",
                    "server",
                    tags,
                    recorded=recorded,
                    state=state,
                )
        elif recorded:
            relay.unrecord(self.connection_id)
        if self._refusal is None:
            self._refusal = ConnectRefused(503, "server shutting down")
            self._refusal_reason = "draining"
        return True

    def _refuse(self, failure: Failure):
        if not isinstance(failure.value, ConnectRefused):
            self._log.failure(
                "admission of {connection_id} failed", failure, connection_id=self.connection_id
            )
            self._refusal = ConnectRefused(503, "backend unavailable")
        else:
            self._refusal = failure.value
            if isinstance(failure.value, UnusableAdmission):
                # The backend said yes: it hears the connection is gone.
                self.factory.relay.orphan(
                    self.connection_id, failure.value.why, "server", self.tags
                )
        return self._refused_now()

    def _refused_now(self):
        refusal = self._refusal
        assert refusal is not None
        self.factory.relay.registry.discard(self.connection_id)
        self._fail_held()
        return self._deny(refusal.status, refusal.why, self._refusal_reason or "backend")

    def _dataReceived(self, data: bytes) -> None:
        if not self._admitting:
            return super()._dataReceived(data)
        # Autobahn would append to its buffer, copying it each time, and
        # look for the end of a request header in it again.  Kept aside
        # instead; past one largest frame the client waits, unread.
        self._early.append(data)
        self._early_bytes += len(data)
        if self._early_bytes > self.factory.max_message_size + 14 and not self._early_paused:
            self._early_paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]  # as in pause_reading

    def _admission_over(self, opened: bool) -> None:
        """Admission ended: hand the bytes kept aside to Autobahn, or drop them."""
        self._admitting = False
        early, self._early, self._early_bytes = self._early, [], 0
        if opened and early:
            self.data += b"".join(early)
        if self._early_paused:
            self._early_paused = False
            if opened and self.transport is not None:
                self.transport.resumeProducing()  # type: ignore[attr-defined]  # as in resume_reading

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
        self.factory.relay.metrics.handshake_refused(code, label)
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
        if self._session is not None and self._closed_by is None:
            # Admitted, then failed (the backend heard of it): onClose
            # sends the disconnect notice.
            self._closed_by = (None, "handshake failed: " + why, "server")
            self.factory.relay.registry.discard(self.connection_id)
        # A refusal is an orderly end, not Autobahn's warning-level "unclean".
        self.wasClean = True
        self.wasNotCleanReason = why
        if self._retry_after is not None:
            responseHeaders = [*(responseHeaders or ()), ("Retry-After", str(self._retry_after))]
        self.sendHttpErrorResponse(code, why, responseHeaders)
        self.dropConnection(abort=False)

    def onOpen(self) -> None:
        self._state = _OPEN
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
        held, self._held = self._held, []
        for payload, is_binary, d in held:
            self._send_now(payload, is_binary, d)
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
        if self.state != self.STATE_OPEN or self._closed_by is not None:
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
            if self._state == _OPEN:
                self._confirmer.open()
            elif self._state == _CLOSED:
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
        if self._session is not None:
            self._session.received(payload, isBinary)

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
        if self._state == _OPEN and self._closed_by is None:
            return self._send_now(payload, is_binary, None)
        if self._state == _PENDING and self._refusal is None and self._closed_by is None:
            d: Deferred[None] = Deferred()
            self._held.append((payload, is_binary, d))
            return d
        return fail(NotLive())

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
        self.factory.relay.metrics.message_out()
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
        if self._state != _OPEN or self._closed_by is not None:
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
        factory.relay.metrics.message_out()
        return SENT

    def _fail_held(self) -> None:
        held, self._held = self._held, []
        for _, _, d in held:
            d.errback(NotLive())

    def _no_room(self, nbytes: int) -> OutboundFull | None:
        """
        Why ``nbytes`` more may not wait for a client that is not reading,
        or None: twice ``max_message_size`` per connection (SPEC §4), and
        the instance's budget.
        """
        if self._unsent + nbytes > 2 * self.factory.max_message_size:
            return OutboundFull()
        if not self.factory.relay.budget.room_for(nbytes):
            return BudgetFull()
        return None

    def _count_unsent(self, nbytes: int) -> None:
        self._unsent += nbytes
        self.factory.relay.budget.take(nbytes)

    def _forget_unsent(self) -> None:
        unsent, self._unsent = self._unsent, 0
        if unsent:
            self.factory.relay.budget.give(unsent)

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
        if self._closed_by is not None or self._state == _CLOSED:
            return
        self._closed_by = (code, reason, initiator)
        self.factory.relay.registry.discard(self.connection_id)
        if self._state == _PENDING:
            # Not open yet: the handshake is refused once admission ends.
            self._refusal = ConnectRefused(503, reason)
            self._fail_held()
            return
        # Autobahn's sendClose admits only 1000 and 3000-4999 (the codes an
        # application may choose); a server also sends 1001 and 1011.
        self.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123), isReply=False)

    def onCloseFrame(self, code, reasonRaw):
        if self.state == self.STATE_OPEN:
            # A code no peer may send (999, 1005, 5000) or a reason that is
            # not UTF-8 fails the connection; onClose reports our code, so
            # the notice and the metric labels never carry the client's.
            if not _valid_close_code(code):
                return self._fail_close(1002, f"invalid close code {code}")
            if not _is_utf8(reasonRaw):
                return self._fail_close(1007, "invalid close reason (not UTF-8)")
        if self._closed_by is None and self.state == self.STATE_OPEN:
            # The client started the closing handshake; 1005 means its close
            # frame carried no code.
            reason = (reasonRaw or b"").decode("utf-8", "replace")
            self._closed_by = (1005 if code is None else code, reason, "client")
            self.factory.relay.registry.discard(self.connection_id)
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
            self._release_buffers()

    def onClose(self, wasClean: bool, code, reason) -> None:
        state, self._state = self._state, _CLOSED
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
        relay: Relay = self.factory.relay
        if self.connection_id:
            relay.registry.discard(self.connection_id)
        self._fail_held()
        if state == _PENDING:
            if self._session is not None:
                # Admitted but never opened (the handshake failed, or the
                # client left once it was admitted): the backend still hears.
                code, reason, initiator = self._closed_by or (
                    None,
                    "client left during the handshake",
                    "client",
                )
                self._session.ended(code, reason, initiator)
            return
        if self._closed_by is None:
            if self.localCloseCode is not None:
                # Autobahn failed the connection itself (protocol error, 1009).
                reason = self.localCloseReason or ""
                if isinstance(reason, bytes):
                    reason = reason.decode("utf-8", "replace")
                self._closed_by = (self.localCloseCode, reason, "server")
            else:
                self._closed_by = (None, "", "client")
        notice_code, notice_reason, initiator = self._closed_by
        relay.metrics.connection_closed(notice_code)
        self._log.info(
            "client {connection_id} from {peer} closed after {seconds:.1f}s: "
            "code {code}, initiator {initiator}",
            connection_id=self.connection_id,
            peer=self.peer,
            code=notice_code,
            initiator=initiator,
            seconds=self.factory.reactor.seconds() - self._connected_at,
        )
        if self._session is not None:
            self._session.ended(notice_code, notice_reason, initiator)

    def _release_buffers(self) -> None:
        """
        Drop what this connection buffered, both ways, now that it is gone.
        The protocol itself outlives the connection in reference cycles
        (its transport, timers, Deferreds) until the collector runs, which
        with the tuned collector can be long after: its buffers must not
        (issue 21: 2.5 GB of unsent frames stayed after every client left).
        """
        self.data = b""
        self.send_queue.clear()
        # Autobahn sets these to None between messages and frames too.
        self.message_data = None  # type: ignore[assignment]
        self.frame_data = None  # type: ignore[assignment]
        self._early, self._early_bytes = [], 0
        self._held = []
        # Reached by attribute: the wrappers (TLS, PROXY) type it only as ITransport.
        transport: Any = self.transport
        while transport is not None:
            # A TCP transport's write buffer (twisted.internet.abstract) and
            # a TLS transport's buffer of what it could not encrypt yet.
            if hasattr(transport, "dataBuffer"):
                transport.dataBuffer = b""
                transport.offset = 0
                transport._tempDataBuffer = []
                transport._tempDataLen = 0
            if hasattr(transport, "_appSendBuffer"):
                transport._appSendBuffer = []
            transport = getattr(transport, "transport", None)

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


def _is_utf8(raw: bytes | None) -> bool:
    try:
        (raw or b"").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


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


class RelayServerFactory(WebSocketServerFactory):
    """
    Builds one :class:`RelayServerProtocol` per client; holds only its collaborators.

    :param relay: the sessions and the backend.
    :param max_connections: live connections allowed (0: no limit).
    :param max_message_size: also bounds a slow reader's unsent bytes (twice this).
    :param max_pending: handshakes waiting for the backend's answer at once
        (0: no limit); ``pending`` counts them.
    :param rate: the per-address handshake rate, or None for none.
    :param specialise: given the protocol class and this factory after its
        options are set, returns the class to build connections from
        (:mod:`socketdock.tuning` passes one that shares the options), or None.
    :param max_lifetime: seconds (±10%) after which an open connection is
        closed with 1001; 0 for never.
    :param tag_deadline: seconds after opening by which a tag must have
        reached a connection, else it is closed with 1008; 0 for never.
    :param uniform: numbers in [0, 1) for the lifetime's jitter.
    :param forward_headers: which handshake headers the connect notice carries.
    """

    protocol = RelayServerProtocol

    def __init__(
        self,
        relay: Relay,
        max_connections: int,
        max_message_size: int,
        reactor,
        origins: OriginPolicy = OriginPolicy(["*"]),
        ping_interval: float = 0,
        ping_timeout: float = 0,
        specialise: Callable[
            [type[RelayServerProtocol], RelayServerFactory], type[RelayServerProtocol]
        ]
        | None = None,
        max_pending: int = 0,
        rate: HandshakeRate | None = None,
        max_lifetime: float = 0,
        tag_deadline: float = 0,
        uniform: Callable[[], float] = random.random,
        forward_headers: HeaderAllowList | None = None,
    ) -> None:
        self._specialise = specialise
        self.forward_headers = forward_headers or HeaderAllowList(["*"])
        super().__init__(reactor=reactor)
        self.relay = relay
        self.max_connections = max_connections
        self.max_message_size = max_message_size
        self.origins = origins
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_pending = max_pending
        self.rate = rate
        self.pending = 0
        self.max_lifetime = max_lifetime
        self.tag_deadline = tag_deadline
        self.uniform = uniform

    def answered(self, result: object) -> object:
        """A connect notice was answered (or failed): one handshake less waits."""
        self.pending -= 1
        return result

    # Autobahn spells out every option; this forwards them all by keyword.
    def setProtocolOptions(self, **options: Any) -> None:  # type: ignore[override]
        """Set Autobahn's options, and let ``specialise`` see them."""
        super().setProtocolOptions(**options)
        if self._specialise is not None:
            self.protocol = self._specialise(RelayServerProtocol, self)


def make_ws_factory(config, relay: Relay, reactor, specialise=None) -> RelayServerFactory:
    """
    The client-side factory, with Autobahn's options taken from the config.

    :param specialise: see :class:`RelayServerFactory`.
    """
    factory = RelayServerFactory(
        relay,
        config.max_connections,
        config.max_message_size,
        reactor,
        OriginPolicy(config.allowed_origins),
        config.ping_interval,
        config.ping_timeout,
        specialise,
        config.pending_handshakes,
        HandshakeRate(reactor, config.handshake_rate, config.handshake_burst)
        if config.handshake_rate
        else None,
        config.max_lifetime,
        config.tag_deadline,
        forward_headers=HeaderAllowList(config.forward_headers),
    )
    options = dict(
        webStatus=False,
        # Origins are checked in onConnect (socketdock.ws.origins): 403, and
        # patterns without a port mean the default port.
        allowedOrigins=["*"],
        allowNullOrigin=True,
        maxMessagePayloadSize=config.max_message_size,
        maxFramePayloadSize=config.max_message_size,
        # twisted.web already bounded the request headers; the backend's
        # admission has its own bound (timeout x retries).
        openHandshakeTimeout=0,
        closeHandshakeTimeout=1,
        # Pings are ours (socketdock.ws.keepalive): Autobahn's timers truncate
        # deadlines to whole seconds.
        autoPingInterval=0,
        # Messages are handed on whole; there is no use for partial frames.
        autoFragmentSize=0,
        failByDrop=False,
        # Answer a client's close with its own code and reason, as RFC 6455
        # §5.5.1 suggests and ws, websockets and browsers do: their close
        # events report the code of our reply, not the one they sent.
        echoCloseCodeReason=True,
    )
    if config.permessage_deflate:
        from autobahn.websocket.compress import (
            PerMessageDeflateOffer,
            PerMessageDeflateOfferAccept,
        )

        def accept(offers):
            for offer in offers:
                if isinstance(offer, PerMessageDeflateOffer):
                    return PerMessageDeflateOfferAccept(offer)
            return None

        options["perMessageCompressionAccept"] = accept
    factory.setProtocolOptions(**options)
    return factory
