"""
The backend agent (socketdock.tuned.fastagent) against real peers on loopback: a
twisted.web server, a raw TCP server, TLS with a generated CA, and Node's http.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from shutil import which
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    gatherResults,
    inlineCallbacks,
    succeed,
)
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import (
    FileBodyProducer,
    PotentialDataLoss,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from socketdock.relay.httpclient import (
    BackendClient,
    NoCookies,
    describe_failure,
    make_tls_policy,
)
from socketdock.tuned.fastagent import ConnectionPool, FastAgent
from socketdock.tuned.h1client import HTTP11Connection, ResponseTooLarge
from socketdock.tuned.post import BytesProducer
from socketdock.tuning import TUNED
from tests.certs import make_ca
from tests.interop.support import spawn

NODE_SERVER = Path(__file__).parents[1] / "peers" / "http_server.js"


class _Paths(Resource):
    """One behaviour per path; remembers each body and holds /hang requests open."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []
        self.hung: list = []
        self._hang_waiters: list[Deferred] = []

    def wait_hung(self) -> Deferred:
        """Fires once a /hang request has arrived (at once if one has)."""
        if self.hung:
            return succeed(self.hung[-1])
        d: Deferred = Deferred()
        self._hang_waiters.append(d)
        return d

    def drop_hung(self) -> None:
        """Abort the connections of /hang requests still held open (cleanup)."""
        for request in self.hung:
            channel = request.channel
            if channel is not None and channel.transport is not None:
                channel.transport.abortConnection()

    def render(self, request):
        path = request.path
        body = request.content.read()
        self.bodies.append(body)
        if path == b"/chunked":
            request.write(b"part one,")
            request.write(b" part two")
            request.finish()
            return NOT_DONE_YET
        if path == b"/empty":
            return b""
        if path == b"/204":
            request.setResponseCode(204)
            return b""
        if path == b"/big":
            return b"x" * (1 << 20)
        if path == b"/close":
            request.setHeader(b"connection", b"close")
            return b"bye"
        if path == b"/echo":
            request.setHeader(b"x-te", request.getHeader(b"transfer-encoding") or b"none")
            return body
        if path == b"/partial":
            request.setHeader(b"content-length", b"100")
            request.write(b"partial")
            request.channel.transport.loseConnection()
            return NOT_DONE_YET
        if path == b"/hang":
            self.hung.append(request)
            waiters, self._hang_waiters = self._hang_waiters, []
            for d in waiters:
                d.callback(request)
            return NOT_DONE_YET
        request.setHeader(b"content-type", b"text/plain")
        return b"hello"


class _Channel(HTTPChannel):
    transport: ITCPTransport  # the tests drop it from the server side
    site: _Site  # set by Site.buildProtocol

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.site.lost(self)


class _Site(Site):
    """A Site that counts its connections and can wait for them to close."""

    protocol = _Channel  # type: ignore[assignment]  # a plain HTTP/1.1 channel on purpose

    def __init__(self, resource) -> None:
        super().__init__(resource)
        self.channels: list[_Channel] = []
        self.closed = 0
        self._waiters: list[tuple[int, Deferred]] = []

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        self.channels.append(channel)
        return channel

    def lost(self, channel) -> None:
        self.closed += 1
        for waiter in [w for w in self._waiters if w[0] <= self.closed]:
            self._waiters.remove(waiter)
            waiter[1].callback(None)

    def wait_closed(self, count: int) -> Deferred:
        """Fires once ``count`` connections have closed."""
        d: Deferred = Deferred()
        if self.closed >= count:
            d.callback(None)
        else:
            self._waiters.append((count, d))
        return d


class _Case(TestCase):
    """A twisted.web server on loopback and an agent over its own pool."""

    endpoint = "tcp:0:interface=127.0.0.1"
    scheme = "http"

    @inlineCallbacks
    def setUp(self):  # type: ignore[override]  # trial waits on a Deferred from setUp
        self.paths = _Paths()
        self.site = _Site(self.paths)
        self.port = yield serverFromString(reactor, self.endpoint).listen(self.site)
        self.base = f"{self.scheme}://127.0.0.1:{self.port.getHost().port}"
        self.addCleanup(self._stop)
        self.use_agent()

    def use_agent(self, pool_clock=None, tls_policy=None, **kwargs) -> None:
        self.pool = ConnectionPool(pool_clock or reactor, **kwargs.pop("pool", {}))
        self.agent = FastAgent(reactor, self.pool, tls_policy, **kwargs)

    @inlineCallbacks
    def _stop(self):
        # A test that failed while a /hang request was held open would
        # otherwise leave its connection, and the reactor, dirty.
        self.paths.drop_hung()
        yield self.pool.close_cached_connections()
        yield self.site.wait_closed(len(self.site.channels))
        yield self.port.stopListening()

    def get(self, path: str, method: bytes = b"GET", producer=None) -> Deferred:
        """The whole response: (response, body)."""
        d = self.agent.request(method, (self.base + path).encode("ascii"), None, producer)

        def read(response):
            return treq.content(response).addCallback(lambda body: (response, body))

        return d.addCallback(read)


class HTTPTests(_Case):
    """Framing, keep-alive and errors against a real twisted.web server."""

    @inlineCallbacks
    def test_content_length(self):
        """A Content-Length answer arrives with its status line, headers and body."""
        response, body = yield self.get("/cl")
        self.assertEqual(
            (response.code, response.phrase, response.version), (200, b"OK", (b"HTTP", 1, 1))
        )
        self.assertEqual((body, response.length), (b"hello", 5))
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/plain"])
        self.assertEqual(response.request.method, b"GET")

    @inlineCallbacks
    def test_chunked_empty_204_head_share_a_connection(self):
        """Chunked, empty, 204 and HEAD answers all end cleanly and leave the connection reusable."""
        _, chunked = yield self.get("/chunked")
        empty, body = yield self.get("/empty")
        no_content, _ = yield self.get("/204")
        head, head_body = yield self.get("/cl", method=b"HEAD")
        _, after = yield self.get("/cl")
        self.assertEqual(chunked, b"part one, part two")
        self.assertEqual((empty.length, body), (0, b""))
        self.assertEqual(no_content.code, 204)
        self.assertEqual((head.code, head_body), (200, b""))
        self.assertEqual(after, b"hello")
        self.assertEqual(len(self.site.channels), 1)

    @inlineCallbacks
    def test_big_body_and_reuse(self):
        """A 1 MiB answer arrives whole, and five requests in a row use one connection."""
        _, body = yield self.get("/big")
        self.assertEqual(body, b"x" * (1 << 20))
        for _ in range(4):
            yield self.get("/cl")
        self.assertEqual(len(self.site.channels), 1)

    @inlineCallbacks
    def test_concurrent_requests_and_pool_limit(self):
        """Concurrent requests take one connection each; the pool keeps at most max_per_host."""
        self.use_agent(pool={"max_per_host": 1})
        yield gatherResults([self.get("/cl") for _ in range(3)])
        self.assertEqual(len(self.site.channels), 3)
        yield self.site.wait_closed(2)
        yield self.get("/cl")
        self.assertEqual(len(self.site.channels), 3)

    @inlineCallbacks
    def test_server_connection_close(self):
        """After an answer with Connection: close the next request gets a new connection."""
        _, bye = yield self.get("/close")
        _, hello = yield self.get("/cl")
        self.assertEqual((bye, hello), (b"bye", b"hello"))
        self.assertEqual(len(self.site.channels), 2)

    @inlineCallbacks
    def test_server_closes_idle_connection(self):
        """When the server closes an idle pooled connection the next request still succeeds."""
        yield self.get("/cl")
        self.site.channels[0].transport.loseConnection()
        yield self.site.wait_closed(1)
        _, body = yield self.get("/cl")
        self.assertEqual(body, b"hello")
        self.assertEqual(len(self.site.channels), 2)

    @inlineCallbacks
    def test_stale_connection_retried_once(self):
        """A replayable POST sent on a pooled connection the server just dropped is resent on a new one."""
        yield self.get("/cl")
        self.site.channels[0].transport.abortConnection()
        _, body = yield self.get("/echo", b"POST", BytesProducer(b"again"))
        self.assertEqual(body, b"again")
        self.assertEqual(self.paths.bodies[1:], [b"again"])
        self.assertEqual(len(self.site.channels), 2)

    @inlineCallbacks
    def test_stale_connection_not_replayable_fails(self):
        """A body that cannot be replayed is not resent: the caller gets ResponseNeverReceived."""
        yield self.get("/cl")
        self.site.channels[0].transport.abortConnection()
        producer = FileBodyProducer(BytesIO(b"once"))
        failure = yield self.assertFailure(
            self.get("/echo", b"POST", producer), ResponseNeverReceived, RequestTransmissionFailed
        )
        self.assertTrue(failure.reasons)
        self.assertEqual(self.paths.bodies, [b""])

    @inlineCallbacks
    def test_request_bodies(self):
        """A stock FileBodyProducer goes out with Content-Length, one of unknown length chunked."""
        known = FileBodyProducer(BytesIO(b"a" * 70000))
        response, body = yield self.get("/echo", b"POST", known)
        self.assertEqual((body, response.headers.getRawHeaders(b"x-te")), (b"a" * 70000, [b"none"]))
        unknown = FileBodyProducer(BytesIO(b"b" * 70000), readSize=30000)
        unknown.length = UNKNOWN_LENGTH
        response, body = yield self.get("/echo", b"POST", unknown)
        self.assertEqual(
            (body, response.headers.getRawHeaders(b"x-te")), (b"b" * 70000, [b"chunked"])
        )
        self.assertEqual(len(self.site.channels), 1)

    @inlineCallbacks
    def test_expect_100_continue(self):
        """A caller's Expect: 100-continue goes out with the body; the server's 100 is skipped and the connection reused."""
        headers = Headers({b"Expect": [b"100-continue"]})
        url = (self.base + "/echo").encode("ascii")
        response = yield self.agent.request(
            b"POST", url, headers, FileBodyProducer(BytesIO(b"c" * 5000))
        )
        body = yield treq.content(response)
        self.assertEqual((response.code, body), (200, b"c" * 5000))
        _, after = yield self.get("/cl")
        self.assertEqual(after, b"hello")
        self.assertEqual(len(self.site.channels), 1)

    @inlineCallbacks
    def test_body_over_cap(self):
        """A body over the cap (declared or chunked) fails the request and its connection is dropped."""
        self.use_agent(max_response_body=10)
        for path in ("/big", "/chunked"):
            failure = yield self.assertFailure(self.get(path), ResponseFailed)
            self.assertTrue(failure.reasons[0].check(ResponseTooLarge))
        _, body = yield self.get("/cl")
        self.assertEqual(body, b"hello")
        self.assertEqual(len(self.site.channels), 3)

    @inlineCallbacks
    def test_reset_mid_response(self):
        """A server that closes mid-body fails the request; the next one uses a new connection."""
        failure = yield self.assertFailure(self.get("/partial"), ResponseFailed)
        self.assertTrue(failure.reasons)
        _, body = yield self.get("/cl")
        self.assertEqual(body, b"hello")
        self.assertEqual(len(self.site.channels), 2)

    @inlineCallbacks
    def test_cancel_aborts(self):
        """Cancelling a waiting request aborts its connection; it never returns to the pool."""
        d = self.get("/hang")
        yield self.paths.wait_hung()
        d.cancel()
        yield self.assertFailure(d, CancelledError)
        yield self.site.wait_closed(1)
        yield self.get("/cl")
        self.assertEqual(len(self.site.channels), 2)

    @inlineCallbacks
    def test_backend_client_timeout(self):
        """Through treq exactly as BackendClient uses it: answers arrive, and its timeout aborts."""
        clock = Clock()
        http = HTTPClient(self.agent, cookiejar=NoCookies())  # type: ignore[arg-type]  # treq takes any CookieJar
        client = BackendClient(http, clock, 5, path=TUNED.post)
        result = yield client.post(self.base + "/echo", b'{"n":1}')
        self.assertEqual((result.code, result.body), (200, b'{"n":1}'))
        d = client.post(self.base + "/hang", b"{}")
        yield self.paths.wait_hung()
        clock.advance(5)
        yield self.assertFailure(d, TimeoutError)
        yield self.site.wait_closed(1)

    @inlineCallbacks
    def test_idle_timeout_and_close(self):
        """Idle connections close after idle_timeout; close_cached_connections closes the rest."""
        clock = Clock()
        self.use_agent(pool_clock=clock, pool={"idle_timeout": 30})
        yield self.get("/cl")
        clock.advance(30)
        yield self.site.wait_closed(1)
        yield self.get("/cl")
        yield self.pool.close_cached_connections()
        yield self.site.wait_closed(2)
        self.assertEqual(clock.getDelayedCalls(), [])


class _RawServer(Protocol):
    """Answers any request with a body framed only by the close."""

    transport: ITCPTransport
    factory: Any  # given ``head`` by the test

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(self.factory.head + b"\r\n\r\nuntil close")
        self.transport.loseConnection()


class _TrailingJunk(Protocol):
    """Answers each request with a framed body followed by stray bytes."""

    transport: ITCPTransport
    factory: Any  # given ``connections``, ``closed`` and ``all_closed`` by the test

    def connectionMade(self) -> None:
        self.factory.connections += 1

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.closed.append(reason)
        if len(self.factory.closed) == 2:
            self.factory.all_closed.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOKjunk")


def _agent_for(test: TestCase, factory) -> tuple[FastAgent, bytes]:
    """``factory`` listening on loopback, an agent over a pool of its own, and its URL."""
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    pool = ConnectionPool(reactor)
    test.addCleanup(pool.close_cached_connections)
    return FastAgent(reactor, pool), f"http://127.0.0.1:{port.getHost().port}/".encode("ascii")  # type: ignore[attr-defined]  # a TCP port's host is an IPv4Address


class TrailingBytesTests(TestCase):
    """Bytes after a whole response leave the response intact but the connection unused."""

    @inlineCallbacks
    def test_not_reused(self):
        """Both requests get their answer, each on its own connection."""
        factory: Any = Factory.forProtocol(_TrailingJunk)  # given attributes below
        factory.connections = 0
        factory.closed = []
        factory.all_closed = Deferred()
        agent, url = _agent_for(self, factory)
        for _ in range(2):
            response = yield agent.request(b"GET", url)
            body = yield treq.content(response)
            self.assertEqual(body, b"OK")
        self.assertEqual(factory.connections, 2)
        yield factory.all_closed


class ReadUntilCloseTests(TestCase):
    """A response without Content-Length or chunked framing ends at the close."""

    @inlineCallbacks
    def fetch(self, head: bytes):
        factory: Any = Factory.forProtocol(_RawServer)  # given ``head`` below
        factory.head = head
        agent, url = _agent_for(self, factory)
        response = yield agent.request(b"GET", url)
        ended = []

        class Body(Protocol):
            def dataReceived(self, data):
                ended.append(data)

            def connectionLost(self, reason: Failure = connectionDone):
                ended.append(reason)

        response.deliverBody(Body())
        self.assertRaises(RuntimeError, response.deliverBody, Body())
        return ended

    @inlineCallbacks
    def test_body_until_close(self):
        """The body is delivered and ends with PotentialDataLoss, which treq accepts."""
        ended = yield self.fetch(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain")
        self.assertEqual(ended[0], b"until close")
        self.assertTrue(ended[1].check(PotentialDataLoss))

    @inlineCallbacks
    def test_transfer_coding_without_chunked(self):
        """A Transfer-Encoding that does not end in chunked also means: read until the close."""
        ended = yield self.fetch(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity")
        self.assertEqual(ended[0], b"until close")
        self.assertTrue(ended[1].check(PotentialDataLoss))


class RefusedRequestTests(SynchronousTestCase):
    """Requests the agent cannot send fail before any connection is made."""

    def test_bad_scheme_and_method(self):
        """Unknown schemes and methods that are not tokens are refused."""
        agent = FastAgent(Clock(), ConnectionPool(Clock()))
        self.assertRaises(SchemeNotSupported, agent.request, b"GET", b"ftp://127.0.0.1/")
        self.assertRaises(ValueError, agent.request, b"GE T", b"http://127.0.0.1/")


class TLSTests(_Case):
    """https through the agent, verified with the same policy as production."""

    scheme = "https"

    @inlineCallbacks
    def setUp(self):  # type: ignore[override]  # trial waits on a Deferred from setUp
        self.ca = make_ca()
        key, cert = self.ca.issue(["127.0.0.1"]).write(self.mktemp())
        self.endpoint = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        yield super().setUp()
        self.use_agent(tls_policy=make_tls_policy(self.ca.write(self.mktemp())))

    @inlineCallbacks
    def test_https_reuse(self):
        """Two requests over https with the private CA share one verified connection."""
        _, first = yield self.get("/cl")
        _, second = yield self.get("/echo", b"POST", BytesProducer(b"tls"))
        self.assertEqual((first, second), (b"hello", b"tls"))
        self.assertEqual(len(self.site.channels), 1)

    @inlineCallbacks
    def test_untrusted_certificate(self):
        """Without the private CA the certificate is refused with a TLS reason."""
        self.use_agent(tls_policy=make_tls_policy(make_ca("other").write(self.mktemp())))
        failure = yield self.assertFailure(self.get("/cl"), ResponseNeverReceived)
        self.assertEqual(describe_failure(Failure(failure)), "TLS: certificate verify failed")
        yield self.site.wait_closed(1)


class NodeTests(TestCase):
    """Against Node's http module: keep-alive, chunked answers, interim 100, chunked uploads."""

    @inlineCallbacks
    def setUp(self):  # type: ignore[override]  # trial waits on a Deferred from setUp
        if which("node") is None:
            raise SkipTest("node is not installed")
        self.node = spawn(self, ["node", str(NODE_SERVER)])
        listening = yield self.node.event("listening")
        if listening.get("event") != "listening":
            self.fail(f"node server did not start: {listening}")
        self.base = f"http://127.0.0.1:{listening['port']}"
        self.pool = ConnectionPool(reactor)
        self.addCleanup(self.pool.close_cached_connections)
        self.client = HTTPClient(FastAgent(reactor, self.pool), cookiejar=NoCookies())  # type: ignore[arg-type]  # treq takes any CookieJar

    @inlineCallbacks
    def fetch(self, path: str, data=None):
        response = yield self.client.post(self.base + path, data=data, allow_redirects=False)
        body = yield response.content()
        return response, body

    @inlineCallbacks
    def test_keepalive_and_chunked(self):
        """Chunked answers, a 100 Continue before the real answer, and one connection for all."""
        _, chunked = yield self.fetch("/chunked")
        _, after = yield self.fetch("/continue")
        _, plain = yield self.fetch("/plain")
        _, count = yield self.fetch("/count")
        self.assertEqual(
            (chunked, after, plain), (b"part one, part two, end", b"after continue", b"hello")
        )
        self.assertEqual(count, b"1")

    @inlineCallbacks
    def test_chunked_upload(self):
        """A body of unknown length goes out chunked and Node reads it whole."""
        producer = FileBodyProducer(BytesIO(b"z" * 50000), readSize=20000)
        producer.length = UNKNOWN_LENGTH
        response, body = yield self.fetch("/echo", producer)
        self.assertEqual(body, b"z" * 50000)
        self.assertEqual(response.headers.getRawHeaders(b"x-chunked-request"), [b"true"])


class _SlowProducer:
    """A body of unknown length that the test writes and ends by hand."""

    length = UNKNOWN_LENGTH

    def __init__(self) -> None:
        self.finished: Deferred = Deferred()
        self.stopped = False

    def startProducing(self, consumer) -> Deferred:
        self.consumer = consumer
        return self.finished

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True


class BodyProducerTests(SynchronousTestCase):
    """The request body side of one connection, over a fake transport."""

    def setUp(self) -> None:
        self.idle: list = []
        self.conn = HTTP11Connection(self.idle.append, lambda conn: None, 1000)
        self.transport = StringTransport()
        self.conn.makeConnection(self.transport)
        self.producer = _SlowProducer()
        self.d = self.conn.request(b"POST", b"/up", b"h", b"http://h/up", Headers(), self.producer)

    def test_registered_while_producing(self):
        """A body still being produced is registered with the transport (pause/resume) until it ends."""
        self.assertIs(self.transport.producer, self.producer)
        self.assertTrue(self.transport.streaming)
        self.producer.consumer.write(b"abc")
        self.producer.finished.callback(None)
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.value().endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
        self.conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(self.d).code, 200)
        self.assertEqual(self.idle, [self.conn])

    def test_early_answer_stops_the_body(self):
        """An answer before the body is done stops the producer and retires the connection."""
        self.conn.dataReceived(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(self.d).code, 413)
        self.assertTrue(self.producer.stopped)
        self.assertIsNone(self.transport.producer)
        self.assertEqual(self.idle, [])
        self.assertTrue(self.transport.disconnecting)
