"""
The opening handshake of a relay connection, as Autobahn hooks (mixed into
:class:`~socketdock.ws.protocol.RelayServerProtocol`).

A handshake asks the :class:`~socketdock.ws.gate.Gate` first, then the relay's
:class:`~socketdock.relay.admission.Entry` (the backend, the journal); the
upgrade is answered once the entry has decided.  Every refusal, Autobahn's
own included, ends in :meth:`OpeningHandshake.failHandshake`: one bounded log
line, a counted refusal, and an HTTP error that echoes nothing a client
could use to flood or inject.  Bytes the client sends before the answer are
kept aside (:mod:`~socketdock.ws.early_bytes`) and handed to Autobahn only if
the handshake opens.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger
from twisted.python.failure import Failure

from socketdock.relay.admission import Entry, Refused
from socketdock.ws.context import connect_context
from socketdock.ws.early_bytes import EarlyBytes
from socketdock.ws.gate import RateLimited
from socketdock.ws.hub import Hub
from socketdock.ws.refusal import autobahn_reason, printable
from socketdock.ws.report import handshake_refused


class OpeningHandshake(WebSocketServerProtocol):
    """
    From the upgrade request to the open connection, or to its refusal.

    Its hooks call Autobahn's by name, as the protocol's mixins all do
    (:class:`~socketdock.ws.protocol.RelayServerProtocol` says why).
    """

    # Set by the protocol.
    _log: Logger
    _hub: Hub
    _entry: Entry | None
    connection_id: str
    _connected_at: float
    _last_active_at: float

    def __init__(self) -> None:
        super().__init__()
        # Ours or the relay's, when we refused; None for Autobahn's own.
        self._refusal: Refused | None = None
        # Bytes the client sent after its upgrade request, while admission
        # (the backend, the journal) decides: kept aside, up to a bound.
        self._early: EarlyBytes | None = None

    def onConnect(self, request):
        hub = self._hub
        gate = hub.gate
        entry = gate.enter(self, self.transport.getPeer, request.origin, request.extensions)  # type: ignore[union-attr,arg-type]  # connected; the protocol is the ISocket
        if isinstance(entry, Refused):
            return self._deny(entry)
        self._entry = entry
        self._connected_at = self._last_active_at = hub.reactor.seconds()
        # No line here: twistd writes every level it is given, and formatting
        # one per handshake was ~12% of a handshake's CPU.  The close line (or
        # the refusal line) names the client and its peer once.
        d = entry.connect(
            hub.forward_headers(request.headers),
            request.protocols,
            connect_context(self.http_request_uri, self.peer or ""),
            gate.answered,
        )
        d.addErrback(self._refused)
        self._early = EarlyBytes(self.transport, hub.max_message_size + 14)
        return d

    def _deny(self, refused: Refused):
        """Refuse the handshake: Autobahn answers through :meth:`failHandshake`."""
        self._refusal = refused
        raise ConnectionDeny(refused.status, refused.why)

    def _refused(self, failure: Failure):
        failure.trap(Refused)
        return self._deny(failure.value)  # type: ignore[arg-type]  # trapped

    def _dataReceived(self, data: bytes) -> None:
        if self._early is None:
            return WebSocketServerProtocol._dataReceived(self, data)
        self._early.keep(data)

    def _admission_over(self, opened: bool) -> None:
        """Admission ended: hand the bytes kept aside to Autobahn, or drop them."""
        early, self._early = self._early, None
        if early is not None:
            self.data += early.end(opened and self.transport is not None)

    def succeedHandshake(self, res) -> None:
        self._admission_over(opened=True)
        try:
            return WebSocketServerProtocol.succeedHandshake(self, res)
        except Exception:
            # Nothing waits on this Deferred: the client would hang, pending.
            self._log.failure(
                "handshake of {connection_id} failed", connection_id=self.connection_id
            )
            if self.state == self.STATE_CONNECTING:
                self._refusal = Refused(500, "internal server error", "error")
                self.failHandshake("internal server error", 500)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders=None) -> None:
        """Every refused handshake ends here (see the module's doc)."""
        self._admission_over(opened=False)
        refused = self._refusal
        if refused is None:
            code, label = autobahn_reason(reason, code)
        else:
            label = refused.label
        why = printable(reason)
        handshake_refused(
            self._log, self._hub.metrics, self.peer, code, label, why, self.connection_id
        )
        if self._entry is not None:
            # Admitted, then failed (the backend heard of it): onClose
            # sends the disconnect notice.
            self._entry.handshake_failed(why)
        # A refusal is an orderly end, not Autobahn's warning-level "unclean".
        self.wasClean = True
        self.wasNotCleanReason = why
        if isinstance(refused, RateLimited):
            responseHeaders = [*(responseHeaders or ()), ("Retry-After", str(refused.retry_after))]
        self.sendHttpErrorResponse(code, why, responseHeaders)
        self.dropConnection(abort=False)
