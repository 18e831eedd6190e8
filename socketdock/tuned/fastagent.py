"""
An ``IAgent`` for the backend POSTs: pooled keep-alive HTTP/1.1 connections
parsed with ``httptools`` (see :mod:`socketdock.tuned.h1client`), under ``treq``.

The stock ``Agent`` + ``HTTPConnectionPool`` spend most of a small request in
their state machines; this one keeps the same contract — errors, TLS through
Twisted endpoints with the same ``BrowserLikePolicyForHTTPS`` (so
service-identity checks the hostname), cancellation — for less.

Retries: a request that went out on a *reused* connection which then closed
before a single response byte came back (the server dropped an idle
keep-alive connection as we wrote) is sent once more, on a new connection,
when its body can be replayed (no body, or a producer with ``replayable``
set, like :class:`socketdock.tuned.post.BytesProducer`).  That is also what
happens if the server read the request and died without answering: the
backend de-duplicates by ``seq``, and SocketDock's own retry loop would have
sent it again anyway.  Every other failure goes to the caller at once.
"""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    BrowserLikePolicyForHTTPS,
    RequestTransmissionFailed,
    ResponseNeverReceived,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import implementer

from socketdock.config.settings import DEFAULT_MAX_RESPONSE_BODY
from socketdock.tuned import require
from socketdock.tuned.h1client import HTTP11Connection
from socketdock.tuned.post import BytesProducer

_TOKEN = re.compile(rb"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_TARGET = re.compile(rb"\A[\x21-\x7e]+\Z")


class ConnectionPool:
    """
    Idle keep-alive connections per (scheme, host, port), newest first.

    :param max_per_host: idle connections kept per origin; more are closed.
    :param idle_timeout: seconds an idle connection is kept.
    """

    def __init__(self, reactor, max_per_host: int = 64, idle_timeout: float = 120.0) -> None:
        self._reactor = reactor
        self._max = max_per_host
        self._timeout = idle_timeout
        self._idle: dict[tuple, list[HTTP11Connection]] = {}
        self._sweep = None

    def take(self, key: tuple) -> HTTP11Connection | None:
        """An idle connection to ``key``, or None."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.connected:
                return conn
        return None

    def put(self, key: tuple, conn: HTTP11Connection) -> None:
        """Keep ``conn`` for the next request to ``key`` (or close it: pool full)."""
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self._max:
            conn.transport.loseConnection()
            return
        conn.idle_since = self._reactor.seconds()
        idle.append(conn)
        if self._sweep is None:
            self._sweep = self._reactor.callLater(self._timeout, self._expire)

    def gone(self, key: tuple, conn: HTTP11Connection) -> None:
        """``conn`` closed: forget it."""
        idle = self._idle.get(key)
        if idle and conn in idle:
            idle.remove(conn)

    def _expire(self) -> None:
        # One timer for the whole pool rather than one per idle connection.
        self._sweep = None
        now = self._reactor.seconds()
        oldest = None
        for idle in self._idle.values():
            for conn in list(idle):
                if now - conn.idle_since >= self._timeout:
                    idle.remove(conn)
                    conn.transport.loseConnection()
                elif oldest is None or conn.idle_since < oldest:
                    oldest = conn.idle_since
        if oldest is not None:
            self._sweep = self._reactor.callLater(oldest + self._timeout - now, self._expire)

    def close_cached_connections(self) -> Deferred[None]:
        """Close every idle connection; fires once they are all closed."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        closing = []
        for idle in self._idle.values():
            for conn in idle:
                closing.append(conn.when_closed())
                conn.transport.loseConnection()
            idle.clear()
        return gatherResults(closing).addCallback(lambda _: None)

    # The name service.py (and HTTPConnectionPool) uses.
    closeCachedConnections = close_cached_connections


class _ConnectionFactory(Factory):
    """Builds connections that report to the pool under one key."""

    noisy = False

    def __init__(self, pool: ConnectionPool, key: tuple, max_body: int) -> None:
        self._pool = pool
        self._key = key
        self._max_body = max_body

    def buildProtocol(self, addr) -> HTTP11Connection:
        pool, key = self._pool, self._key
        return HTTP11Connection(
            lambda conn: pool.put(key, conn), lambda conn: pool.gone(key, conn), self._max_body
        )


class _Origin:
    """One URL, parsed once: where to connect and what to put on the request line."""

    __slots__ = ("endpoint", "factory", "host", "key", "target")

    def __init__(self, key, target, host, factory, endpoint) -> None:
        self.key = key
        self.target = target
        self.host = host
        self.factory = factory
        self.endpoint = endpoint


@implementer(IAgent)
class FastAgent:
    """
    ``IAgent`` over a :class:`ConnectionPool`.

    :param tls_policy: makes the TLS connection creator for https origins.
    :param max_response_body: larger response bodies fail the request.
    :param connect_timeout: seconds for a TCP connect.
    """

    def __init__(
        self,
        reactor,
        pool: ConnectionPool,
        tls_policy=None,
        max_response_body: int = DEFAULT_MAX_RESPONSE_BODY,
        connect_timeout: float = 30,
    ) -> None:
        self._reactor = reactor
        self._pool = pool
        self._tls = tls_policy if tls_policy is not None else BrowserLikePolicyForHTTPS()
        self._max_body = max_response_body
        self._connect_timeout = connect_timeout
        self._origins: dict[bytes, _Origin] = {}
        self._endpoints: dict[tuple, tuple] = {}

    def _origin(self, uri: bytes) -> _Origin:
        origin = self._origins.get(uri)
        if origin is not None:
            return origin
        parsed = URI.fromBytes(uri)
        if parsed.scheme not in (b"http", b"https"):
            raise SchemeNotSupported(f"unsupported scheme: {parsed.scheme!r}")
        target = parsed.originForm
        if not _TARGET.match(target):
            raise ValueError(f"invalid request target: {target!r}")
        key = (parsed.scheme, parsed.host, parsed.port)
        made = self._endpoints.get(key)
        if made is None:
            if len(self._endpoints) >= 256:
                self._endpoints.clear()
            made = self._endpoints[key] = self._endpoint(*key)
        host = parsed.host
        if b":" in host:
            host = b"[" + host + b"]"
        if (parsed.scheme, parsed.port) not in ((b"http", 80), (b"https", 443)):
            host += b":%d" % (parsed.port,)
        if len(self._origins) >= 256:
            self._origins.clear()  # bounded: a relay uses two or three URLs
        origin = self._origins[uri] = _Origin(key, target, host, *made)
        return origin

    def _endpoint(self, scheme: bytes, host: bytes, port: int) -> tuple:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, host.decode("ascii"), port, timeout=self._connect_timeout
        )
        if scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(host, port), endpoint)
        return _ConnectionFactory(self._pool, (scheme, host, port), self._max_body), endpoint

    def request(
        self, method: bytes, uri: bytes, headers: Headers | None = None, bodyProducer=None
    ) -> Deferred:
        """Send one request; fires with an ``IResponse`` whose body is already here."""
        if not _TOKEN.match(method):
            raise ValueError(f"invalid method: {method!r}")
        origin = self._origin(uri)
        if headers is None:
            headers = Headers()
        conn = self._pool.take(origin.key)
        if conn is None:
            return self._fresh(origin, method, uri, headers, bodyProducer)
        d = conn.request(method, origin.target, origin.host, uri, headers, bodyProducer)
        if bodyProducer is None or getattr(bodyProducer, "replayable", False):
            d.addErrback(self._stale, origin, method, uri, headers, bodyProducer)
        return d

    def _fresh(self, origin: _Origin, method, uri, headers, producer) -> Deferred:
        d = origin.endpoint.connect(origin.factory)
        return d.addCallback(
            lambda conn: conn.request(method, origin.target, origin.host, uri, headers, producer)
        )

    def _stale(self, failure, origin: _Origin, method, uri, headers, producer):
        if failure.check(ResponseNeverReceived, RequestTransmissionFailed) is None:
            return failure
        return self._fresh(origin, method, uri, headers, producer)


_FRAMING = {b"content-length", b"transfer-encoding", b"connection"}
_PROBE_URL = b"http://127.0.0.1:8080/message?x=1"
_PROBE_RESPONSES = (
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
    b"X-Twice: a\r\nX-Twice: b\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n",
)


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


def _outcome(d: Deferred) -> tuple:
    """What a response that already fired holds: code, phrase, headers, body."""
    got: list = []
    d.addBoth(got.append)
    require(got and not isinstance(got[0], Failure), "a probe request failed or never answered")
    response = got[0]
    body = _Collect()
    response.deliverBody(body)
    # Twisted keeps the framing headers to itself; ours shows them.  Neither matters above.
    headers = sorted(
        (name.lower(), values)
        for name, values in response.headers.getAllRawHeaders()
        if name.lower() not in _FRAMING
    )
    return response.code, response.phrase, headers, body.data


def _requests_seen(wire: bytes) -> list[tuple]:
    """The requests in ``wire``, as a server would parse them."""
    from httptools import HttpRequestParser

    seen: list[list] = []

    class Server:
        def on_message_begin(self) -> None:
            seen.append([b"", [], b""])

        def on_url(self, url: bytes) -> None:
            seen[-1][0] += url

        def on_header(self, name: bytes, value: bytes) -> None:
            seen[-1][1].append((name.lower(), value))

        def on_body(self, body: bytes) -> None:
            seen[-1][2] += body

    parser = HttpRequestParser(Server())
    parser.feed_data(wire)
    return [(parser.get_method(), url, sorted(headers), body) for url, headers, body in seen]


def check_agent() -> None:
    """
    :class:`FastAgent` holds where its request line, headers and body reach
    a server as Twisted's ``Agent`` sends them, and it reads the same
    responses (a fixed length and a chunked one) as Twisted does.
    """
    from twisted.internet.testing import MemoryReactorClock, StringTransport
    from twisted.web._newclient import HTTP11ClientProtocol
    from twisted.web._newclient import Request as TwistedRequest

    agent = FastAgent(MemoryReactorClock(), ConnectionPool(MemoryReactorClock()))
    origin = agent._origin(_PROBE_URL)
    fields = [(b"Content-Type", b"application/json"), (b"X-Twice", b"1"), (b"X-Twice", b"2")]
    for response in _PROBE_RESPONSES:
        headers = Headers()
        for name, value in fields:
            headers.addRawHeader(name, value)
        ours = HTTP11Connection(lambda conn: None, lambda conn: None, 1 << 20)
        ours_wire = StringTransport()
        ours.makeConnection(ours_wire)
        ours_d = ours.request(
            b"POST", origin.target, origin.host, _PROBE_URL, headers, BytesProducer(b"{}")
        )

        theirs_headers = headers.copy()
        theirs_headers.addRawHeader(b"Host", origin.host)
        theirs = HTTP11ClientProtocol()
        theirs_wire = StringTransport()
        theirs.makeConnection(theirs_wire)
        parsed = URI.fromBytes(_PROBE_URL)  # as Agent builds its request
        request = TwistedRequest._construct(
            b"POST", parsed.originForm, theirs_headers, BytesProducer(b"{}"), True, parsed
        )
        theirs_d = theirs.request(request)
        sent = _requests_seen(ours_wire.value())
        require(
            sent == _requests_seen(theirs_wire.value()), "the agent's POST differs from Twisted's"
        )
        require(len(sent) == 1, "the agent's POST did not parse as one request")
        ours.dataReceived(response)
        theirs.dataReceived(response)
        require(_outcome(ours_d) == _outcome(theirs_d), "the agent reads a response unlike Twisted")
