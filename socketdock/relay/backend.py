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
import json
from collections.abc import Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from socketdock.ops.metrics import Metrics
from socketdock.ops.ratelimit import OncePerWindow
from socketdock.relay import wire
from socketdock.relay.httpclient import BackendClient, HTTPResult, describe_failure
from socketdock.relay.reach import InvalidTags
from socketdock.relay.retry import Again, Backoff, Done, Final, RetriesExhausted, retrying
from socketdock.relay.state import InvalidState, encode_state
from socketdock.relay.tags import check_tag_list


@attrs.frozen
class Admission:
    """
    The backend's yes to a handshake.

    :param subprotocol: the one to select, or None.
    :param tags: the tags the connection starts with (SPEC §8).
    :param state: the backend's state for it as compact JSON text, or None (SPEC §9).
    """

    subprotocol: str | None = None
    tags: tuple[str, ...] = ()
    state: str | None = None


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


class UnusableAdmission(ConnectRefused):
    """
    The backend admitted a handshake with an answer SocketDock cannot honour
    (tags against the rules): refused with 503, but the backend, which said
    yes, still hears the connection is gone.
    """

    def __init__(self, why: str) -> None:
        super().__init__(503, why)


class MessageRefused(Exception):
    """The backend answered a message with a final non-2xx status (logged, counted)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"backend refused the message with HTTP {status}")
        self.status = status


class IBackend(Interface):
    """What the relay asks of a backend."""

    admits = Attribute("True when every handshake waits for the backend's connect answer.")

    def connect(
        connection_id: str,
        headers: Mapping[str, str],
        offered: Sequence[str],
        context: Mapping[str, str] | None = None,
    ) -> Deferred[Admission]:
        """
        Fires with an :class:`Admission`; fails with ConnectRefused.

        :param context: the request's ``path``, ``query`` and ``remote`` (SPEC §9).
        """

    def message(
        connection_id: str,
        seq: int,
        payload: bytes,
        is_binary: bool,
        tags: Sequence[str] = (),
        state: str | None = None,
    ) -> Deferred[Reply | None]:
        """
        Fires once the backend took the message, with a reply for the client
        or None; fails with MessageRefused (final) or RetriesExhausted.

        :param tags: the connection's tags now, for ``meta``.
        :param state: the connection's state now (JSON text), or None.
        """

    def disconnect(
        connection_id: str,
        code: int | None,
        reason: str,
        initiator: str,
        recovered: bool = False,
        tags: Sequence[str] = (),
        state: str | None = None,
    ) -> Deferred[None]:
        """
        Fires once the notice was delivered (retried for as long as it takes).

        :param tags: those the connection carried when it stopped being live.
        """


@implementer(IBackend)
class LoopbackBackend:
    """Echo every message back as the same frame type; admit everyone."""

    admits = False

    def connect(self, connection_id, headers, offered, context=None):
        return succeed(Admission())

    def message(self, connection_id, seq, payload, is_binary, tags=(), state=None):
        return succeed(Reply(payload, is_binary))

    def disconnect(
        self, connection_id, code, reason, initiator, recovered=False, tags=(), state=None
    ):
        return succeed(None)


#: Answers that mean the backend did not accept who sent the request.
AUTH_FAILURES = (401, 403)


def _retryable_status(code: int) -> bool:
    return code >= 500 or code in (408, 429)


def retry_after(headers, now: float) -> float | None:
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
        urls: wire.AnyCallbackURLs,
        metrics: Metrics,
        messageuri: str,
        connecturi: str | None,
        disconnecturi: str | None,
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
        self._auth_once = OncePerWindow(clock)

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
            if outcome.code in AUTH_FAILURES:
                self._auth_failed(kind, url, outcome.code, connection_id)
            return refuse(outcome)

        def attempt() -> Deferred[HTTPResult]:
            return self._client.post(url, body, kind)

        def on_retry(n: int, why: str, delay: float) -> None:
            self._metrics.backend_retry()
            self._log.info(
                "{kind} for {connection_id} failed ({why}); retry {attempt} in {delay:.2f}s",
                kind=kind,
                connection_id=connection_id,
                why=why,
                attempt=n,
                delay=delay,
            )

        return retrying(self._clock, backoff, attempt, judge, on_retry)

    def _auth_failed(self, kind: str, url: str, status: int, connection_id: str) -> None:
        """Count a 401 or 403 and log it, once per kind, status and minute."""
        self._metrics.backend_auth_refused(kind)
        held = self._auth_once.occurred((kind, status))
        if held is None:
            return
        self._log.warn(
            "authentication failure: the backend answered the {kind} request for "
            "{connection_id} with HTTP {status} ({url}); check that signing_secret "
            "matches the backend's verifier{connect_hint}{more}",
            kind=kind,
            connection_id=connection_id,
            status=status,
            url=url,
            held_back=held,
            connect_hint=", unless the backend meant to refuse that client"
            if kind == "connect"
            else "",
            more=f"; {held} more such answers since the last such line" if held else "",
        )

    def connect(self, connection_id, headers, offered, context=None):
        if self._connecturi is None:
            return succeed(Admission())
        body = wire.connect_body(self._urls, connection_id, headers, context)

        def refuse(result: HTTPResult):
            if 400 <= result.code < 500:
                return Final(ConnectRefused(result.code, "refused by the backend"))
            return Final(ConnectRefused(503, f"unexpected backend answer HTTP {result.code}"))

        def chosen(result: HTTPResult) -> str | None:
            picked = result.headers.getRawHeaders(b"sec-websocket-protocol")
            if not picked:
                return None
            name = picked[-1].decode("latin-1").strip()
            if name in offered:
                return name
            self._log.warn(
                "backend picked subprotocol {name!r} for {connection_id}, which the "
                "client did not offer; continuing without one",
                name=name,
                connection_id=connection_id,
            )
            return None

        def admitted(result: HTTPResult) -> Admission:
            try:
                state = connect_answer_state(result)
            except InvalidState as e:
                self._log.warn(
                    "backend admitted {connection_id} with an unusable state ({why}); "
                    "refusing the handshake with 503",
                    connection_id=connection_id,
                    why=str(e),
                )
                raise UnusableAdmission("backend answered with an unusable state") from None
            try:
                tags = connect_answer_tags(result)
            except InvalidTags as e:
                # The backend meant to tag it and got it wrong: admitted
                # untagged, it would silently miss every tag send.
                self._log.warn(
                    "backend admitted {connection_id} with unusable tags ({why}); "
                    "refusing the handshake with 503",
                    connection_id=connection_id,
                    why=str(e),
                )
                raise UnusableAdmission("backend answered with unusable tags") from None
            return Admission(chosen(result), tags, state)

        def exhausted(failure: Failure):
            failure.trap(RetriesExhausted)
            self._metrics.backend_failure()
            raise ConnectRefused(503, "backend unavailable")

        d = self._post("connect", self._connecturi, body, self._backoff, refuse, connection_id)
        return d.addCallbacks(admitted, exhausted)

    def message(self, connection_id, seq, payload, is_binary, tags=(), state=None):
        body = wire.message_body(self._urls, connection_id, seq, payload, is_binary, tags, state)

        def refuse(result: HTTPResult):
            return Final(MessageRefused(result.code))

        d = self._post("message", self._messageuri, body, self._backoff, refuse, connection_id)
        d.addCallbacks(self._reply, self._failed)
        return d

    def _reply(self, result: HTTPResult) -> Reply | None:
        if not self._inline_reply or not result.body:
            return None
        return Reply(result.body, not is_text(result.headers))

    def _failed(self, failure: Failure):
        self._metrics.backend_failure()
        return failure

    def disconnect(
        self, connection_id, code, reason, initiator, recovered=False, tags=(), state=None
    ):
        if self._disconnecturi is None:
            return succeed(None)
        body = wire.disconnect_body(connection_id, code, reason, initiator, recovered, tags, state)

        def refuse(result: HTTPResult):
            # The backend has heard the notice and said no: retrying would
            # hear the same answer forever.
            if result.code in AUTH_FAILURES:
                return Done(None)  # logged, once a minute, as an authentication failure
            self._log.warn(
                "backend answered the disconnect notice for {connection_id} with HTTP {status}",
                connection_id=connection_id,
                status=result.code,
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


def connect_answer_tags(result: HTTPResult) -> tuple[str, ...]:
    """
    The tags a 2xx connect answer gives the connection (SPEC §8).

    Only a JSON object with a ``tags`` key, sent as ``application/json``,
    gives tags; any other body (``OK``, ``{}``, an unparsable one) gives none,
    as old backends' answers always did.

    :raises InvalidTags: the ``tags`` key is there but breaks the rules.
    """
    values = result.headers.getRawHeaders(b"content-type")
    if not values:
        return ()
    media = values[-1].split(b";", 1)[0].strip().lower()
    if media != b"application/json" or not result.body:
        return ()
    try:
        answer = json.loads(result.body)
    except ValueError:  # UnicodeDecodeError included
        return ()
    if not isinstance(answer, dict) or "tags" not in answer:
        return ()
    return check_tag_list(answer["tags"], "tags")


def connect_answer_state(result: HTTPResult) -> str | None:
    """
    The state a 2xx connect answer gives the connection (SPEC §9), as
    compact JSON text; None when it gives none.

    :raises InvalidState: the ``state`` key is there but too large, or the
        JSON answer that seems to carry one does not parse.
    """
    values = result.headers.getRawHeaders(b"content-type")
    if not values or not result.body:
        return None
    media = values[-1].split(b";", 1)[0].strip().lower()
    if media != b"application/json":
        return None
    try:
        answer = json.loads(result.body)
    except ValueError:  # UnicodeDecodeError included
        if b'"state"' in result.body:
            raise InvalidState("the answer is not valid JSON") from None
        return None
    if not isinstance(answer, dict) or "state" not in answer:
        return None
    return encode_state(answer["state"])
