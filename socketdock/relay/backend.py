"""
The two backends: ``loopback`` (echo, for demos and tests) and ``http``.

Both answer the same three questions for the relay: may this connection in
(connect), what became of this message (message), and the connection is gone
(disconnect).  The HTTP backend retries per SPEC §5; the wire bodies come from
:mod:`socketdock.relay.wire`.
"""

from __future__ import annotations

import datetime
import email.utils
from typing import Mapping, Optional, Sequence

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from socketdock.relay import wire
from socketdock.relay.httpclient import BackendClient, HTTPResult, describe_failure
from socketdock.ops.metrics import Metrics
from socketdock.relay.retry import Again, Backoff, Done, Final, RetriesExhausted, retrying


@attrs.frozen
class Reply:
    """A message for the client that came back with the answer (loopback, inline_reply)."""

    payload: bytes
    is_binary: bool


class ConnectRefused(Exception):
    """The backend refused a handshake; ``status`` is what the client gets."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(f"{status} {why}")
        self.status = status
        self.why = why


class MessageRefused(Exception):
    """The backend answered a message with a final non-2xx status (logged, counted)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"backend refused the message with HTTP {status}")
        self.status = status


class IBackend(Interface):
    """What the relay asks of a backend."""

    admits = Attribute(
        "True when every handshake waits for the backend's connect answer."
    )

    def connect(
        connection_id: str, headers: Mapping[str, str], offered: Sequence[str]
    ) -> "Deferred[Optional[str]]":
        """Fires with the subprotocol to select (or None); fails with ConnectRefused."""

    def message(
        connection_id: str, seq: int, payload: bytes, is_binary: bool
    ) -> "Deferred[Optional[Reply]]":
        """
        Fires once the backend took the message, with a reply for the client
        or None; fails with MessageRefused (final) or RetriesExhausted.
        """

    def disconnect(
        connection_id: str, code: Optional[int], reason: str, initiator: str,
        recovered: bool = False,
    ) -> "Deferred[None]":
        """Fires once the notice was delivered (retried for as long as it takes)."""


@implementer(IBackend)
class LoopbackBackend:
    """Echo every message back as the same frame type; admit everyone."""

    admits = False

    def connect(self, connection_id, headers, offered):
        return succeed(None)

    def message(self, connection_id, seq, payload, is_binary):
        return succeed(Reply(payload, is_binary))

    def disconnect(self, connection_id, code, reason, initiator, recovered=False):
        return succeed(None)


def _retryable_status(code: int) -> bool:
    return code >= 500 or code in (408, 429)


def retry_after(headers, now: float) -> Optional[float]:
    """
    Seconds asked for by a ``Retry-After`` header (delta-seconds or an HTTP
    date), or None when absent or unreadable.
    """
    values = headers.getRawHeaders(b"retry-after")
    if not values:
        return None
    text = values[-1].decode("latin-1").strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        # The asctime form carries no zone; HTTP dates are always GMT.
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - now)


def _why(outcome: object) -> str:
    if isinstance(outcome, Failure):
        return describe_failure(outcome)
    return f"HTTP {outcome.code}"  # type: ignore[attr-defined]


@implementer(IBackend)
class HTTPBackend:
    """
    The production backend: JSON POSTs through one pooled client, retried.

    :param client: makes single attempts.
    :param urls: this instance's callback URLs, named in every body.
    :param backoff: for messages and connects; notices retry forever.
    """

    _log = Logger()

    def __init__(
        self,
        client: BackendClient,
        clock: IReactorTime,
        urls: wire.CallbackURLs,
        metrics: Metrics,
        messageuri: str,
        connecturi: Optional[str],
        disconnecturi: Optional[str],
        backoff: Backoff,
        inline_reply: bool,
    ) -> None:
        self._client = client
        self._clock = clock
        self._urls = urls
        self._metrics = metrics
        self._messageuri = messageuri
        self._connecturi = connecturi
        self._disconnecturi = disconnecturi
        self._backoff = backoff
        self._notice_backoff = attrs.evolve(backoff, forever=True)
        self._inline_reply = inline_reply
        self.admits = connecturi is not None

    def _post(self, kind: str, url: str, body: bytes, backoff: Backoff, refuse, connection_id: str):
        """
        POST with retries: errors, 408, 429 and 5xx are retried, 2xx is done,
        and ``refuse`` decides what any other answer means.
        """

        def judge(outcome):
            if isinstance(outcome, Failure):
                return Again(_why(outcome))
            if 200 <= outcome.code < 300:
                return Done(outcome)
            if _retryable_status(outcome.code):
                return Again(_why(outcome), retry_after(outcome.headers, self._clock.seconds()))
            return refuse(outcome)

        def attempt() -> "Deferred[HTTPResult]":
            return self._client.post(url, body, kind)

        def on_retry(n: int, why: str, delay: float) -> None:
            self._metrics.backend_retry()
            self._log.info(
                "{kind} for {connection_id} failed ({why}); retry {attempt} in {delay:.2f}s",
                kind=kind, connection_id=connection_id, why=why, attempt=n, delay=delay,
            )

        return retrying(self._clock, backoff, attempt, judge, on_retry)

    def connect(self, connection_id, headers, offered):
        if self._connecturi is None:
            return succeed(None)
        body = wire.connect_body(self._urls, connection_id, headers)

        def refuse(result: HTTPResult):
            if 400 <= result.code < 500:
                return Final(ConnectRefused(result.code, "refused by the backend"))
            return Final(ConnectRefused(503, f"unexpected backend answer HTTP {result.code}"))

        def chosen(result: HTTPResult) -> Optional[str]:
            picked = result.headers.getRawHeaders(b"sec-websocket-protocol")
            if not picked:
                return None
            name = picked[-1].decode("latin-1").strip()
            if name in offered:
                return name
            self._log.warn(
                "backend picked subprotocol {name!r} for {connection_id}, which the "
                "client did not offer; continuing without one",
                name=name, connection_id=connection_id,
            )
            return None

        def exhausted(failure: Failure):
            failure.trap(RetriesExhausted)
            self._metrics.backend_failure()
            raise ConnectRefused(503, "backend unavailable")

        d = self._post("connect", self._connecturi, body, self._backoff, refuse, connection_id)
        return d.addCallbacks(chosen, exhausted)

    def message(self, connection_id, seq, payload, is_binary):
        body = wire.message_body(self._urls, connection_id, seq, payload, is_binary)

        def refuse(result: HTTPResult):
            return Final(MessageRefused(result.code))

        d = self._post("message", self._messageuri, body, self._backoff, refuse, connection_id)
        d.addCallbacks(self._reply, self._failed)
        return d

    def _reply(self, result: HTTPResult) -> Optional[Reply]:
        if not self._inline_reply or not result.body:
            return None
        return Reply(result.body, not is_text(result.headers))

    def _failed(self, failure: Failure):
        self._metrics.backend_failure()
        return failure

    def disconnect(self, connection_id, code, reason, initiator, recovered=False):
        if self._disconnecturi is None:
            return succeed(None)
        body = wire.disconnect_body(connection_id, code, reason, initiator, recovered)

        def refuse(result: HTTPResult):
            # The backend has heard the notice and said no: retrying would
            # hear the same answer forever.
            self._log.warn(
                "backend answered the disconnect notice for {connection_id} "
                "with HTTP {status}",
                connection_id=connection_id, status=result.code,
            )
            return Done(None)

        d = self._post(
            "disconnect", self._disconnecturi, body, self._notice_backoff, refuse, connection_id
        )
        return d.addCallback(lambda _: None)


def is_text(headers) -> bool:
    """Whether a ``Content-Type`` says ``text/*`` (the text/binary rule, SPEC §4)."""
    values = headers.getRawHeaders(b"content-type")
    if not values:
        return False
    return values[-1].lstrip().lower().startswith(b"text/")
