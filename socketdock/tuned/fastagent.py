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
set, like :class:`socketdock.relay.httpclient.BytesProducer`).  That is also what
happens if the server read the request and died without answering: the
backend de-duplicates by ``seq``, and SocketDock's own retry loop would have
sent it again anyway.  Every other failure goes to the caller at once.
"""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
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
from socketdock.tuned.h1client import HTTP11Connection

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
