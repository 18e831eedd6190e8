"""
A real twisted.web HTTP backend speaking SocketDock's wire format (SPEC §3).

End-to-end tests point SocketDock's ``connecturi``/``messageuri``/``disconnecturi`` at
``<base_url>/connect``, ``/message`` and ``/disconnect``, script the answers, and wait
on what arrives instead of sleeping::

    backend = FakeBackend(reactor)
    port, base_url = yield start_backend(reactor, backend)
    self.addCleanup(stop_backend, port, backend)
    backend.answer_next("message", STALL)
    ...
    messages = yield backend.wait_for("message", 1)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.protocols.policies import WrappingFactory
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

PATHS = ("connect", "message", "disconnect")

_HeaderPairs = tuple[tuple[bytes, bytes], ...]


def _to_bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


def _header_pairs(
    headers: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None,
) -> _HeaderPairs:
    if headers is None:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((_to_bytes(k), _to_bytes(v)) for k, v in items)


@attrs.frozen
class Answer:
    """
    One scripted HTTP answer.

    :param status: the response code.
    :param body: the response body.
    :param headers: a mapping or ``(name, value)`` pairs (repeat a name to repeat a
        header); ``Content-Type`` defaults to ``text/plain; charset=utf-8``.
    """

    status: int = 200
    body: bytes = b"OK"
    headers: _HeaderPairs = attrs.field(default=(), converter=_header_pairs)


class _Special:
    """A sentinel with a readable repr."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: Never answer: the request is kept open in :attr:`FakeBackend.stalled`.
STALL = _Special("STALL")
#: Abort the TCP connection without answering (a reset, from SocketDock's side).
RESET = _Special("RESET")

Script = Answer | _Special


@attrs.frozen
class Received:
    """
    One request as the backend saw it.

    :param path: the request path, e.g. ``"/message"``.
    :param headers: a copy of the request headers.
    :param body: the raw body, for signature checks.
    :param json: the decoded body, or ``None`` when it is not JSON.
    """

    path: str
    headers: Headers
    body: bytes
    json: Any


def _name(path: str) -> str:
    name = path.strip("/")
    if name not in PATHS:
        raise ValueError(f"unknown backend path {path!r}; use one of {PATHS}")
    return name


class _Endpoint(Resource):
    """POST-only leaf handing each request to the backend (other methods get 405)."""

    isLeaf = True

    def __init__(self, backend: FakeBackend, name: str) -> None:
        super().__init__()
        self._backend = backend
        self._name = name

    def render_POST(self, request: Request) -> bytes | int:
        return self._backend._handle(self._name, request)


class FakeBackend(Resource):
    """
    The backend's resource tree, its record of requests and its scripted answers.

    :param reactor: used for the treq client that calls SocketDock's callback API.
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.connects: list[Any] = []
        self.messages: list[Any] = []
        self.disconnects: list[Any] = []
        #: Requests held open by :data:`STALL`, until :meth:`release` or they are lost.
        self.stalled: list[Request] = []
        self._by_name = {
            "connect": self.connects,
            "message": self.messages,
            "disconnect": self.disconnects,
        }
        self._defaults: dict[str, Answer] = {name: Answer() for name in PATHS}
        self._scripts: dict[str, list[Script]] = {name: [] for name in PATHS}
        self._waiters: list[tuple[str, int, Deferred[list[Any]]]] = []
        # persistent=False: every call opens and closes its own connection, so no idle
        # pooled connection outlives a test (trial would call the reactor dirty) and
        # SocketDock's callback API is exercised on fresh connections.
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._http = HTTPClient(Agent(reactor, pool=self._pool))
        self._factory = _TrackingFactory(_QuietSite(self, reactor=reactor))
        for name in PATHS:
            self.putChild(name.encode("ascii"), _Endpoint(self, name))

    def answer(
        self,
        path: str,
        status: int = 200,
        body: bytes = b"OK",
        headers: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None = None,
    ) -> None:
        """
        Set the answer for ``path`` once no one-shot answer is queued.

        :param path: ``"connect"``, ``"message"`` or ``"disconnect"`` (a leading
            ``/`` is fine).
        """
        self._defaults[_name(path)] = Answer(status, body, headers)

    def answer_next(self, path: str, *responses: Script) -> None:
        """
        Queue one-shot answers for ``path``, consumed in order before the default.

        :param responses: :class:`Answer` values, :data:`STALL` or :data:`RESET`.
        """
        self._scripts[_name(path)].extend(responses)

    def wait_for(self, path: str, count: int) -> Deferred[list[Any]]:
        """
        Fire, with the live JSON list for ``path``, once ``count`` requests arrived.

        Fires after the request was recorded and answered (or stalled), so a test
        may look at :attr:`stalled` straight away.
        """
        name = _name(path)
        if len(self._by_name[name]) >= count:
            return succeed(self._by_name[name])
        waiter: Deferred[list[Any]] = Deferred()
        self._waiters.append((name, count, waiter))
        return waiter

    def release(self, request: Request, answer: Answer) -> bool:
        """
        Answer a stalled request.

        :returns: ``False`` when the requester had already gone away.
        """
        if request not in self.stalled:
            return False
        self.stalled.remove(request)
        request.write(self._prepare(request, answer))
        request.finish()
        return True

    def _handle(self, name: str, request: Request) -> bytes | int:
        assert request.content is not None
        body = request.content.read()
        try:
            decoded: Any = json.loads(body)
        except ValueError:
            decoded = None
        self.received.append(
            Received(request.path.decode("latin-1"), request.requestHeaders.copy(), body, decoded)
        )
        self._by_name[name].append(decoded)
        script = self._scripts[name]
        action = script.pop(0) if script else self._defaults[name]
        result: bytes | int
        if action is STALL:
            self.stalled.append(request)
            request.notifyFinish().addErrback(self._lost, request)
            result = NOT_DONE_YET
        elif action is RESET:
            request.notifyFinish().addErrback(lambda _: None)
            request.channel.transport.abortConnection()  # type: ignore[union-attr]  # a live request's channel has a TCP transport
            result = NOT_DONE_YET
        else:
            assert isinstance(action, Answer)
            result = self._prepare(request, action)
        self._notify()
        return result

    def _lost(self, reason: object, request: Request) -> None:
        if request in self.stalled:
            self.stalled.remove(request)

    def _prepare(self, request: Request, answer: Answer) -> bytes:
        request.setResponseCode(answer.status)
        for key, value in answer.headers:
            request.responseHeaders.addRawHeader(key, value)
        if not request.responseHeaders.hasHeader(b"content-type"):
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return answer.body

    def _notify(self) -> None:
        ready = [w for w in self._waiters if len(self._by_name[w[0]]) >= w[1]]
        for waiter in ready:
            self._waiters.remove(waiter)
            waiter[2].callback(self._by_name[waiter[0]])

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Mapping[Any, Any] | None = None,
    ) -> Deferred[tuple[int, Headers, bytes]]:
        """
        Call SocketDock's callback API (any method), e.g. ``GET /socket/<id>``.

        :param headers: extra headers, e.g. ``{b"Authorization": b"Bearer t"}``.
        :returns: ``(code, response headers, body)``.
        """
        sent = Headers()
        for key, value in _header_pairs(headers):
            sent.addRawHeader(key, value)
        d = self._http.request(method, url, data=body, headers=sent)

        def read(response: Any) -> Deferred[tuple[int, Headers, bytes]]:
            return treq.content(response).addCallback(
                lambda content: (response.code, response.headers, content)
            )

        return d.addCallback(read)

    def post_send(
        self,
        url: str,
        body: bytes,
        content_type: bytes = b"text/plain; charset=utf-8",
        headers: Mapping[Any, Any] | None = None,
    ) -> Deferred[tuple[int, bytes]]:
        """
        POST ``body`` to a ``send`` (or ``disconnect``) callback URL.

        :param content_type: ``text/*`` makes a text frame, anything else binary.
        :returns: ``(code, body)``.
        """
        sent = dict(_header_pairs(headers))
        sent[b"Content-Type"] = content_type
        return self.request("POST", url, body, sent).addCallback(lambda r: (r[0], r[2]))

    def post_json(
        self, url: str, obj: object, headers: Mapping[Any, Any] | None = None
    ) -> Deferred[tuple[int, bytes]]:
        """POST ``obj`` as JSON, e.g. ``{"code": 4000}`` to a ``disconnect`` URL."""
        return self.post_send(url, json.dumps(obj).encode("utf-8"), b"application/json", headers)


class _QuietSite(Site):
    """A Site without access logs (they would land in the legacy global log)."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


class _TrackingFactory(WrappingFactory):
    """Keeps the open connections so :func:`stop_backend` can close and await them."""

    noisy = False

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self.gone: dict[Any, Deferred[None]] = {}

    def registerProtocol(self, p: Any) -> None:
        super().registerProtocol(p)
        self.gone[p] = Deferred()

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        self.gone.pop(p).callback(None)


def start_backend(
    reactor: Any,
    backend: FakeBackend,
    endpoint: str = "tcp:0:interface=127.0.0.1",
    host: str = "127.0.0.1",
) -> Deferred[tuple[IListeningPort, str]]:
    """
    Listen on a free loopback port.

    :param endpoint: a server endpoint string; an ``ssl:`` one gives an
        ``https://`` base URL naming ``host``.

    :returns: ``(port, base_url)``; clean up with ``stop_backend(port, backend)``.
    """
    d = serverFromString(reactor, endpoint).listen(backend._factory)
    scheme = "https" if endpoint.startswith("ssl:") else "http"

    def listening(port: IListeningPort) -> tuple[IListeningPort, str]:
        return port, f"{scheme}://{host}:{port.getHost().port}"  # type: ignore[attr-defined]  # a TCP port's host is an IPv4Address

    return d.addCallback(listening)


def stop_backend(port: IListeningPort, backend: FakeBackend) -> Deferred[Any]:
    """
    Stop listening, abort open connections (stalled ones included) and await them.

    Meant for ``testcase.addCleanup``; trial waits for the Deferred.
    """
    factory = backend._factory
    waits: list[Deferred[Any]] = list(factory.gone.values())
    for conn in list(factory.protocols):
        conn.transport.abortConnection()
    waits.append(maybeDeferred(port.stopListening))
    waits.append(backend._pool.closeCachedConnections())
    return DeferredList(waits, fireOnOneErrback=True, consumeErrors=True)
