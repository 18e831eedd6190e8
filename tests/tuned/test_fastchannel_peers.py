"""
FastHTTPChannel against real peers over loopback: raw TCP (pipelining and
malformed input), treq (twisted.web's own client) and Node's ``http`` module,
all against a real SocketDock and its real resource tree.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httptools
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from tests.harness import stack_with, start_relay
from tests.test_end_to_end import RelayTestCase

NODE = shutil.which("node")
CLIENT_JS = Path(__file__).parents[1] / "peers" / "http_client.js"


class _Raw(Protocol):
    """Writes what it is told and keeps every byte it gets."""

    def __init__(self) -> None:
        self.received = b""
        self.lost = False
        self._waiters: list[tuple[Callable[[bytes], bool], Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        self._check()

    def until(self, done: Callable[[bytes], bool]) -> Deferred:
        """Fires once ``done(received)`` holds, or the connection is gone."""
        d: Deferred = Deferred()
        self._waiters.append((done, d))
        self._check()
        return d

    def closed(self) -> Deferred:
        return self.until(lambda _: False)

    def _check(self) -> None:
        for waiter in list(self._waiters):
            if self.lost or waiter[0](self.received):
                self._waiters.remove(waiter)
                waiter[1].callback(self.received)


def _responses(raw: bytes) -> list[tuple[int, dict, bytes]]:
    """The complete HTTP responses in ``raw`` (none of them to HEAD)."""
    out: list = []

    class Collect:
        def on_message_begin(self):
            self.headers, self.body = {}, b""

        def on_header(self, name, value):
            self.headers[name.lower()] = value

        def on_body(self, data):
            self.body += data

        def on_message_complete(self):
            out.append((parser.get_status_code(), self.headers, self.body))

    parser = httptools.HttpResponseParser(Collect())
    try:
        parser.feed_data(raw)
    except httptools.HttpParserError:
        pass
    return out


def _count(n: int) -> Callable[[bytes], bool]:
    return lambda raw: len(_responses(raw)) >= n


class RawPeerTests(RelayTestCase):
    """A raw TCP peer: keep-alive, pipelining, chunked, 100-continue, refusals."""

    @inlineCallbacks
    def connected(self, **settings):
        """A relay, a live WebSocket client, its send path, and a raw connection to the API."""
        yield self.start(**settings)
        client = yield self.client()
        client.send_text("hi")
        (message,) = yield self.backend.wait_for("message", 1)
        send = urlsplit(message["meta"]["send"]).path.encode()
        raw = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.relay.port), _Raw()
        )
        self.addCleanup(raw.transport.loseConnection)
        return client, send, raw

    @inlineCallbacks
    def test_keep_alive_and_pipelining(self):
        """Three pipelined requests are answered in order on one connection, which then serves a fourth."""
        client, send, raw = yield self.connected()
        raw.transport.write(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST " + send + b" HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 3\r\n\r\none"
            b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        got = _responses((yield raw.until(_count(3))))
        self.assertEqual([code for code, _, _ in got], [200, 200, 200])
        self.assertIn(b"connections", got[2][2])
        self.assertNotIn(b"connections", got[0][2] + got[1][2])
        self.assertEqual((yield client.next_message()), (b"one", False))
        raw.transport.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got = _responses((yield raw.until(_count(4))))
        self.assertEqual(len(got), 4)
        self.assertFalse(raw.lost)

    @inlineCallbacks
    def test_chunked_upload(self):
        """A chunked body sent in pieces reaches the WebSocket client whole."""
        client, send, raw = yield self.connected()
        raw.transport.write(
            b"POST " + send + b" HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4\r\nchun"
        )
        raw.transport.write(b"\r\n6\r\nked-up\r\n0\r\n\r\n")
        self.assertEqual((yield client.next_message()), (b"chunked-up", False))
        self.assertEqual(_responses((yield raw.until(_count(1))))[0][0], 200)

    @inlineCallbacks
    def test_expect_continue(self):
        """100 Continue comes before the body is sent; then the answer."""
        client, send, raw = yield self.connected()
        raw.transport.write(
            b"POST " + send + b" HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        )
        got = yield raw.until(lambda r: r.endswith(b"\r\n\r\n"))
        self.assertEqual(got, b"HTTP/1.1 100 Continue\r\n\r\n")
        raw.transport.write(b"body")
        self.assertEqual((yield client.next_message()), (b"body", False))

    @inlineCallbacks
    def test_oversize_body(self):
        """A Content-Length over max_message_size gets 413, no 100 Continue, and a close."""
        _, send, raw = yield self.connected(max_message_size=100)
        raw.transport.write(
            b"POST " + send + b" HTTP/1.1\r\nHost: x\r\n"
            b"Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n"
        )
        got = yield raw.closed()
        self.assertTrue(got.startswith(b"HTTP/1.1 413 "), got)

    @inlineCallbacks
    def test_refusals_close(self):
        """Too many headers, a head too large, a malformed request line: 400 and a close."""
        # The tuned channel's answers (twisted.web's own closes silently on a
        # header line past 16 KiB).
        yield self.start(stack=stack_with("channel"))
        for request in [
            b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * 501 + b"\r\n",
            b"GET /healthz HTTP/1.1\r\nX: " + b"y" * 20000 + b"\r\n\r\n",
            b"GET /healthz HTTP/1.1 extra\r\n\r\n",
        ]:
            raw = yield connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", self.relay.port), _Raw()
            )
            raw.transport.write(request)
            self.assertEqual((yield raw.closed()), b"HTTP/1.1 400 Bad Request\r\n\r\n")

    @inlineCallbacks
    def test_http10_and_close(self):
        """HTTP/1.0, or Connection: close, is answered and then the connection closes."""
        yield self.start()
        for request in [
            b"GET /healthz HTTP/1.0\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
        ]:
            raw = yield connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", self.relay.port), _Raw()
            )
            raw.transport.write(request)
            got = yield raw.closed()
            self.assertEqual([code for code, _, _ in _responses(got)], [200], got)


class UpgradeTests(RelayTestCase):
    """A WebSocket frame sent with the upgrade request is not lost in the hand-over."""

    def test_frame_in_the_same_write(self):
        """Upgrade request and first frame in one write: the loopback backend echoes the frame."""
        return self._frame_in_the_same_write()

    def test_frame_in_the_same_write_plain(self):
        """The same with twisted.web's own HTTPChannel (tuning = off)."""
        return self._frame_in_the_same_write(tuning="off")

    @inlineCallbacks
    def _frame_in_the_same_write(self, **settings):
        relay = start_relay(self, reactor, backend="loopback", ping_interval=0, **settings)
        raw = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", relay.port), _Raw())
        self.addCleanup(raw.transport.loseConnection)
        mask = b"\x01\x02\x03\x04"
        frame = b"\x81\x85" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hello"))
        raw.transport.write(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            + frame
        )
        got = yield raw.until(lambda r: r.endswith(b"\x81\x05hello"))
        self.assertTrue(got.startswith(b"HTTP/1.1 101 "), got[:60])
        self.assertTrue(got.endswith(b"\x81\x05hello"), got[-20:])
        # A clean close, so Autobahn leaves no timer behind.
        close = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\x03\xe8"))
        raw.transport.write(b"\x88\x82" + mask + close)
        got = yield raw.closed()
        self.assertIn(b"\x88\x02\x03\xe8", got)


class TreqPeerTests(RelayTestCase):
    """twisted.web's own client over a persistent pool."""

    @inlineCallbacks
    def test_get_head_post(self):
        """GET, HEAD and POST over one pool get their answers; HEAD has no body."""
        yield self.start()
        client = yield self.client()
        client.send_text("hi")
        (message,) = yield self.backend.wait_for("message", 1)
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        base = f"http://127.0.0.1:{self.relay.port}"
        got = yield treq.get(base + "/healthz", pool=pool)
        self.assertEqual(got.code, 200)
        yield treq.content(got)
        got = yield treq.head(base + "/healthz", pool=pool)
        self.assertEqual((got.code, (yield treq.content(got))), (200, b""))
        headers: dict[bytes | str, list[bytes | str]] = {b"content-type": [b"text/plain"]}
        got = yield treq.post(message["meta"]["send"], b"from treq", pool=pool, headers=headers)
        self.assertEqual(got.code, 200)
        yield treq.content(got)
        self.assertEqual((yield client.next_message()), (b"from treq", False))


class NodePeerTests(RelayTestCase):
    """Node's http module: keep-alive agent, HEAD, chunked upload, 100-continue."""

    skip = None if NODE else "node is not installed"

    @inlineCallbacks
    def test_node_http_client(self):
        """Node reuses the socket, gets an empty HEAD body, and both uploads reach the client."""
        yield self.start()
        client = yield self.client()
        client.send_text("hi")
        (message,) = yield self.backend.wait_for("message", 1)
        out, err, code = yield getProcessOutputAndValue(
            NODE,
            [
                str(CLIENT_JS),
                f"http://127.0.0.1:{self.relay.port}",
                urlsplit(message["meta"]["send"]).path,
            ],
            env=dict(os.environ),
            reactor=reactor,
        )
        self.assertEqual(code, 0, err)
        checks = {c["check"]: c for c in map(json.loads, out.decode().splitlines())}
        self.assertEqual(checks["keepalive"]["status"], [200, 200])
        self.assertTrue(checks["keepalive"]["reused"])
        self.assertEqual((checks["head"]["status"], checks["head"]["body"]), (200, ""))
        self.assertEqual(checks["chunked"]["status"], 200)
        self.assertEqual(
            (checks["continue"]["status"], checks["continue"]["continued"]), (200, True)
        )
        self.assertEqual((yield client.next_message()), (b"chunked-from-node", False))
        self.assertEqual((yield client.next_message()), (b"after-continue", False))
