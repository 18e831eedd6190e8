"""
Unit tests of socketdock/tuned/fastchannel.py: the real site (make_site) and the
real resource tree over a StringTransport, with a Clock for time.  The
loopback tests against real peers are in test_fastchannel_peers.py.
"""

from __future__ import annotations

import re
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from socketdock.api.site import Root, make_api_children, make_health, make_site
from socketdock.ops.metrics import Metrics
from socketdock.relay.backend import LoopbackBackend
from socketdock.relay.registry import IConnection, Registry
from socketdock.relay.session import Relay
from socketdock.tuned.fastchannel import FastHTTPChannel

LIVE = "a" * 32


@implementer(IConnection)
class _Connection:
    """A live connection that records what it is sent."""

    connection_id = LIVE
    tags: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.delivered: list[tuple[bytes, bool]] = []

    backend_state = None  # the backend's state (SPEC §9), never set here

    def confirm(self, timeout: float) -> Deferred[None]:
        return Deferred()  # never confirmed: these tests do not ask

    def deliver_frame(self, frame: object) -> int:
        from socketdock.relay.registry import NOT_OPEN

        return NOT_OPEN  # a tag send falls back to deliver()

    def deliver(self, payload: bytes, is_binary: bool):
        self.delivered.append((payload, is_binary))
        return succeed(None)

    def close(self, code: int, reason: str, initiator: str) -> None:
        pass

    def describe(self) -> dict:
        return {"connection_id": LIVE}


class _Held(Resource):
    """Answers ``/held`` only when the test says so; ``/now`` at once."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list = []

    def body_limit(self, request) -> int:
        """It reads any body, up to the site's max_body (see api.body_plan)."""
        return 1 << 20

    def render(self, request):
        if request.path == b"/held":
            self.waiting.append(request)
            return NOT_DONE_YET
        if request.path == b"/upgrade":
            request.channel.transport = None
            self.taken = request.channel.takeBuffered()
            return NOT_DONE_YET
        return b"now:" + request.path + b"\n"

    def release(self, body: bytes = b"held\n") -> None:
        request = self.waiting.pop(0)
        request.write(body)
        request.finish()


def _root(clock: Clock):
    registry = Registry()
    connection = _Connection()
    registry.add(connection)
    metrics = Metrics(active=registry.__len__, queued=lambda: 0)
    relay = Relay(LoopbackBackend(), registry, metrics, clock, 8)
    root = Root(None, make_api_children(registry, metrics, clock, 64), make_health(relay), None)
    return root, connection


def _connect(resource, clock: Clock, max_body: int = 64):
    channel = make_site(resource, clock, max_body, FastHTTPChannel).buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def _without_dates(answer: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", answer)


_CHUNKED = (
    b"POST /socket/" + b"b" * 32 + b"/send HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
)
#: Pipelined requests over the real tree: each answer differs from the others.
STREAM = (
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    b"POST /socket/" + LIVE.encode() + b"/send HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    + _CHUNKED
    + b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
    b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
)


class PipelineTests(SynchronousTestCase):
    """Pipelined requests are answered in order, however the bytes are split."""

    def answer(self, pieces) -> tuple[bytes, bool, list]:
        clock = Clock()
        root, connection = _root(clock)
        channel, transport = _connect(root, clock)
        for piece in pieces:
            channel.dataReceived(piece)
        return _without_dates(transport.value()), transport.disconnecting, connection.delivered

    def test_all_at_once(self) -> None:
        """Six requests in one read get six answers in request order, then the close asked for."""
        answer, closed, delivered = self.answer([STREAM])
        codes = re.findall(rb"HTTP/1.1 (\d+) ", answer)
        self.assertEqual(codes, [b"200", b"200", b"404", b"200", b"200", b"404"])
        self.assertEqual(delivered, [(b"hello", False)])
        self.assertTrue(closed)
        self.assertIn(b"Connection: close", answer.rsplit(b"HTTP/1.1 ", 1)[1])

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(0, len(STREAM)), max_size=12))
    def test_any_split(self, cuts) -> None:
        """Any split of the pipelined stream into reads gets the same bytes back."""
        bounds = [0, *sorted(cuts), len(STREAM)]
        pieces = [STREAM[a:b] for a, b in pairwise(bounds)]
        self.assertEqual(self.answer(pieces), self.answer([STREAM]))

    def test_byte_by_byte(self) -> None:
        """One byte per read still gets the same answers."""
        self.assertEqual(
            self.answer([STREAM[i : i + 1] for i in range(len(STREAM))]), self.answer([STREAM])
        )

    def test_held_answer_keeps_its_place(self) -> None:
        """A request after one still being answered is not answered, nor refused, before it."""
        held = _Held()
        channel, transport = _connect(held, Clock(), max_body=4)
        channel.dataReceived(
            b"GET /held HTTP/1.1\r\n\r\nGET /now HTTP/1.1\r\n\r\n"
            b"POST /now HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 99\r\n\r\n"
        )
        self.assertEqual(transport.value(), b"")
        held.release()
        answer = transport.value()
        self.assertLess(answer.index(b"held\n"), answer.index(b"now:/now"))
        self.assertLess(answer.index(b"now:/now"), answer.index(b"HTTP/1.1 413 "))
        self.assertNotIn(b"100 Continue", answer)
        self.assertTrue(transport.disconnecting)

    def test_garbage_after_a_held_request(self) -> None:
        """Garbage after a request still being answered gets its 400 after that answer."""
        held = _Held()
        channel, transport = _connect(held, Clock())
        channel.dataReceived(b"GET /held HTTP/1.1\r\n\r\n\x00\x01garbage\r\n\r\n")
        self.assertEqual(transport.value(), b"")
        held.release()
        self.assertTrue(
            transport.value().endswith(b"held\n\r\n0\r\n\r\nHTTP/1.1 400 Bad Request\r\n\r\n")
        )
        self.assertTrue(transport.disconnecting)

    def test_many_at_once(self) -> None:
        """Two thousand pipelined requests answered at once do not recurse past the stack."""
        channel, transport = _connect(_Held(), Clock())
        channel.dataReceived(b"GET /now HTTP/1.1\r\n\r\n" * 2000)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 2000)
        self.assertFalse(transport.disconnecting)


#: A pipelined stream whose third request has an obs-fold line; the second's
#: body has a LF and a blank at every place a fold check could misread.
_FOLDED = (
    b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n"
    b"POST /now HTTP/1.1\r\nContent-Length: 8\r\n\r\n\n a\n\tb\n "
    b"GET /now HTTP/1.1\r\nX: a\r\n b\r\n\r\n"
    b"GET /now HTTP/1.1\r\n\r\n"
)


class MalformedHeadTests(SynchronousTestCase):
    """A blank before a field's colon, or a line folded into the one before it: 400."""

    def answer(self, pieces) -> bytes:
        channel, transport = _connect(_Held(), Clock())
        for piece in pieces:
            channel.dataReceived(piece)
        self.assertTrue(transport.disconnecting)
        return _without_dates(transport.value())

    def test_blank_before_the_colon(self) -> None:
        """Every field name llhttp knows by name, and others: 400, no exception."""
        for name in [b"Content-Length", b"Transfer-Encoding", b"Connection", b"Upgrade", b"X"]:
            for blank in [b" ", b"\t", b"  "]:
                value = b"chunked" if name == b"Transfer-Encoding" else b"0"
                raw = b"GET /now HTTP/1.1\r\n" + name + blank + b": " + value + b"\r\n\r\n"
                self.assertEqual(self.answer([raw]), b"HTTP/1.1 400 Bad Request\r\n\r\n", raw)

    def test_folds(self) -> None:
        """A fold in any field, Transfer-Encoding included, or before the first field: 400."""
        for head in [
            b"X: a\r\n b\r\n",
            b"X: a\r\n\tb\r\n",
            b"Transfer-Encoding: gzip\r\n ,chunked\r\n",
            b"Content-Length: 1\r\n 0\r\n",
            b" X: a\r\n",
            b"Host: x\r\nX: a\n b\r\n",
        ]:
            raw = b"POST /now HTTP/1.1\r\n" + head + b"\r\n"
            self.assertEqual(self.answer([raw]), b"HTTP/1.1 400 Bad Request\r\n\r\n", raw)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(0, len(_FOLDED)), max_size=8))
    def test_fold_any_split(self, cuts) -> None:
        """Two answers then the 400, however the reads split; blanks in a body pass."""
        bounds = [0, *sorted(cuts), len(_FOLDED)]
        answer = self.answer([_FOLDED[a:b] for a, b in pairwise(bounds)])
        self.assertEqual(re.findall(rb"HTTP/1.1 (\d+) ", answer), [b"200", b"200", b"400"])

    def test_fold_byte_by_byte(self) -> None:
        answer = self.answer([_FOLDED[i : i + 1] for i in range(len(_FOLDED))])
        self.assertEqual(re.findall(rb"HTTP/1.1 (\d+) ", answer), [b"200", b"200", b"400"])


class RequestShapeTests(SynchronousTestCase):
    """HTTP/1.0, Connection: close, 100-continue and the limits behave as HTTPChannel's."""

    def test_http10_closes(self) -> None:
        """An HTTP/1.0 request is answered, then the connection closes."""
        channel, transport = _connect(_Held(), Clock())
        channel.dataReceived(b"GET /now HTTP/1.0\r\n\r\nGET /now HTTP/1.0\r\n\r\n")
        self.assertEqual(transport.value().count(b"now:/now"), 1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 200 "))
        self.assertTrue(transport.disconnecting)

    def test_continue_before_body(self) -> None:
        """Expect: 100-continue gets 100 Continue before the body is sent, then the answer."""
        channel, transport = _connect(_Held(), Clock())
        channel.dataReceived(
            b"POST /now HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n"
        )
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        channel.dataReceived(b"hi")
        self.assertIn(b"HTTP/1.1 200 ", transport.value())

    def test_no_continue_for_http10(self) -> None:
        """An HTTP/1.0 request's Expect is ignored, as HTTPChannel does."""
        channel, transport = _connect(_Held(), Clock())
        channel.dataReceived(
            b"POST /now HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        self.assertEqual(transport.value(), b"")

    def test_header_count(self) -> None:
        """maxHeaders headers are served; one more gets 400 and a close."""
        limit = FastHTTPChannel.maxHeaders
        channel, transport = _connect(_Held(), Clock())
        channel.dataReceived(b"GET /now HTTP/1.1\r\n" + b"X: y\r\n" * limit + b"\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        channel, transport = _connect(_Held(), Clock())
        channel.dataReceived(b"GET /now HTTP/1.1\r\n" + b"X: y\r\n" * (limit + 1) + b"\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self.assertTrue(transport.disconnecting)

    def test_head_size(self) -> None:
        """A head over totalHeadersSize gets 400, in one read or dripped a byte at a time."""
        big = b"GET /now HTTP/1.1\r\nX: " + b"y" * FastHTTPChannel.totalHeadersSize + b"\r\n\r\n"
        channel, transport = _connect(_Held(), Clock())
        channel.dataReceived(big)
        self.assertEqual(transport.value(), b"HTTP/1.1 400 Bad Request\r\n\r\n")
        channel, transport = _connect(_Held(), Clock())
        for i in range(len(big)):
            channel.dataReceived(big[i : i + 1])
            if transport.disconnecting:
                break
        self.assertEqual(transport.value(), b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self.assertLess(i, len(big) - 4)  # refused before the head ended

    def test_long_url(self) -> None:
        """A request line over totalHeadersSize gets 400."""
        channel, transport = _connect(_Held(), Clock())
        channel.dataReceived(b"GET /" + b"u" * FastHTTPChannel.totalHeadersSize)
        self.assertEqual(transport.value(), b"HTTP/1.1 400 Bad Request\r\n\r\n")

    def test_malformed(self) -> None:
        """Bad framing, a NUL in a header, an unknown transfer coding: 400 and a close."""
        for raw in [
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET /\r\n\r\n",
        ]:
            channel, transport = _connect(_Held(), Clock())
            channel.dataReceived(raw)
            self.assertEqual(transport.value(), b"HTTP/1.1 400 Bad Request\r\n\r\n", raw)
            self.assertTrue(transport.disconnecting, raw)

    def test_header_values_as_twisted(self) -> None:
        """Control bytes other than NUL pass; surrounding blanks are trimmed."""
        seen = []

        class Echo(Resource):
            isLeaf = True

            def render(self, request):
                seen.append(request.requestHeaders.getRawHeaders(b"x"))
                return b""

        channel, _transport = _connect(Echo(), Clock())
        channel.dataReceived(b"GET / HTTP/1.1\r\nX:  a\x0bb \t\r\n\r\n")
        self.assertEqual(seen, [[b"a\x0bb"]])


class TimeoutTests(SynchronousTestCase):
    """The site's idle timeout and abortTimeout, suspended while a request is answered."""

    def test_idle_then_abort(self) -> None:
        """An idle connection is closed after the site's timeout, and aborted abortTimeout later."""
        clock = Clock()
        _channel, transport = _connect(_Held(), clock)
        clock.advance(59)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        clock.advance(FastHTTPChannel.abortTimeout)
        self.assertTrue(transport.disconnected)

    def test_suspended_while_answering(self) -> None:
        """A slow answer is not cut by the idle timeout, which starts again once it is sent."""
        clock = Clock()
        held = _Held()
        channel, transport = _connect(held, clock)
        channel.dataReceived(b"GET /held HTTP/1.1\r\n\r\n")
        clock.advance(600)
        self.assertFalse(transport.disconnecting)
        held.release()
        clock.advance(59)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)


class BackpressureTests(SynchronousTestCase):
    """The channel stays the transport's producer and its requests' consumer."""

    def test_eager_reads_pause(self) -> None:
        """Past 16 KiB sent while a request is answered, reading pauses until it is done."""
        held = _Held()
        channel, transport = _connect(held, Clock())
        channel.dataReceived(b"GET /held HTTP/1.1\r\n\r\n")
        channel.dataReceived(b"GET /now HTTP/1.1\r\nX: " + b"y" * 9000 + b"\r\n\r\n")
        self.assertEqual(transport.producerState, "producing")
        channel.dataReceived(b"GET /now HTTP/1.1\r\nX: " + b"y" * 9000 + b"\r\n\r\n")
        self.assertEqual(transport.producerState, "paused")
        held.release()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.value().count(b"now:/now"), 2)

    def test_full_transport_pauses_the_response(self) -> None:
        """A transport that cannot keep up pauses the producer writing the response."""
        held = _Held()
        channel, _transport = _connect(held, Clock())
        channel.dataReceived(b"GET /held HTTP/1.1\r\n\r\n")

        class Producer:
            state = "producing"

            def pauseProducing(self):
                self.state = "paused"

            def resumeProducing(self):
                self.state = "producing"

            def stopProducing(self):
                self.state = "stopped"

        producer = Producer()
        held.waiting[0].registerProducer(producer, True)
        channel.pauseProducing()
        self.assertEqual(producer.state, "paused")
        channel.resumeProducing()
        self.assertEqual(producer.state, "producing")


class UpgradeTests(SynchronousTestCase):
    """After a request that asks to upgrade, nothing more is parsed as HTTP."""

    def test_bytes_after_upgrade_are_handed_over(self) -> None:
        """Bytes in the same read after the upgrade request's head go to the new owner, unparsed."""
        held = _Held()
        channel, transport = _connect(held, Clock())
        channel.dataReceived(
            b"GET /upgrade HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            b"\x81\x85GET / HTTP/1.1\r\n\r\n"
        )
        self.assertEqual(held.taken, b"\x81\x85GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(transport.value(), b"")

    def test_upgrade_not_taken_closes(self) -> None:
        """An upgrade request that is answered normally closes the connection after the answer."""
        channel, transport = _connect(_Held(), Clock())
        channel.dataReceived(
            b"GET /now HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n"
            b"GET /now HTTP/1.1\r\n\r\n"
        )
        self.assertEqual(transport.value().count(b"now:/now"), 1)
        self.assertIn(b"Connection: close", transport.value())
        self.assertTrue(transport.disconnecting)


class AddressTests(SynchronousTestCase):
    def _asks_over_three_requests(self, name: str):
        """Serve three pipelined requests; how often the transport was asked ``name``."""
        clock = Clock()
        root, _ = _root(clock)
        channel, transport = _connect(root, clock)
        asked = []
        real = getattr(transport, name)
        setattr(transport, name, lambda: asked.append(1) or real())  # type: ignore[func-returns-value]  # count the call, then make it
        channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        self.assertEqual(re.findall(rb"HTTP/1.1 (\d+) ", transport.value()), [b"200"] * 3)
        self.assertEqual(getattr(channel, name)(), real())
        return len(asked)

    def test_local_address_is_asked_once_per_connection(self) -> None:
        """Pipelined requests share one getsockname(): the channel keeps the host address."""
        self.assertEqual(self._asks_over_three_requests("getHost"), 1)

    def test_peer_address_is_asked_once_per_connection(self) -> None:
        """Each request is told the peer; the channel asks the transport once."""
        self.assertEqual(self._asks_over_three_requests("getPeer"), 1)
