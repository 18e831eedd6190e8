"""
Memory bounded by bytes (issue 21): a connection's queue for the backend
pauses reading at ``queue_limit`` messages or twice ``max_message_size``
bytes, a client that does not read has at most twice ``max_message_size``
unsent (SPEC §4), and ``max_queued_bytes`` bounds the whole instance.
Real instance, real backend, real sockets on loopback.
"""

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from tests.fakebackend import STALL, Answer
from tests.test_end_to_end import RelayTestCase

MiB = 1024 * 1024


def small_buffers(client, server, size=65536):
    """
    Loopback buffers autotune to megabytes: keep the kernel's share small so
    what a client does not read stays in the relay's transport.
    """
    client.protocol.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    server.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


class InboundBytesTests(RelayTestCase):
    timeout = 30

    @inlineCallbacks
    def test_reading_pauses_at_twice_max_message_size(self):
        """With a stalled backend, 900-byte messages stop being read once 2 x 1000 bytes wait."""
        yield self.start(max_message_size=1000, queue_limit=64)
        self.backend.answer_next("message", STALL)
        client = yield self.client()
        for i in range(20):
            client.send_binary(b"%03d" % i + b"x" * 897)
        yield self.backend.wait_for("message", 1)
        relay = self.relay.service.relay
        server: Any
        (server,) = list(relay.registry)
        # The burst was read in the turn that posted message 1: the third
        # message brought the queue to 2,700 bytes.
        self.assertEqual(relay.queued(), 3)
        self.assertEqual(relay.budget.used, 2700)
        self.assertNotIn(server.transport, reactor.getReaders())
        self.backend.answer("message", status=200)
        self.backend.release(self.backend.stalled[0], Answer())
        yield self.backend.wait_for("message", 20)
        yield client.close()
        yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(relay.budget.used, 0)

    @inlineCallbacks
    def test_instance_budget_pauses_every_connection(self):
        """Past max_queued_bytes a second connection stops reading too, and resumes once it drains."""
        yield self.start(max_message_size=10000, max_queued_bytes=2000)
        self.backend.answer("message", status=200)
        self.backend.answer_next("message", STALL)
        first = yield self.client()
        for _ in range(5):
            first.send_binary(b"a" * 900)
        yield self.backend.wait_for("message", 1)
        relay = self.relay.service.relay
        self.assertEqual(relay.budget.used, 2700)
        second = yield self.client()
        second.send_binary(b"b" * 10)
        second.send_binary(b"b" * 10)
        body = yield self.metrics()
        self.assertIn(b"socketdock_queued_bytes 2710.0", body)
        # The second's first message waits behind the budget: reading paused.
        server: Any = list(relay.registry)[1]
        self.assertNotIn(server.transport, reactor.getReaders())
        self.backend.release(self.backend.stalled[0], Answer())
        yield self.backend.wait_for("message", 7)
        yield first.ping()
        yield second.ping()
        # A notice goes out after every message of its connection was delivered.
        yield first.close()
        yield second.close()
        yield self.backend.wait_for("disconnect", 2)
        self.assertEqual(relay.budget.used, 0)

    def metrics(self):
        d = self.backend.request("GET", f"{self.relay.base}/metrics", b"", {})
        return d.addCallback(lambda answer: answer[2])


class OutboundBytesTests(RelayTestCase):
    timeout = 30

    @inlineCallbacks
    def non_reader(self, **settings):
        """A started instance and the send URL of a client that has stopped reading."""
        yield self.start(**settings)
        client = yield self.client()
        client.send_text("hi")
        (msg,) = yield self.backend.wait_for("message", 1)
        (server,) = list(self.relay.service.relay.registry)
        small_buffers(client, server)
        client.protocol.transport.pauseProducing()
        return client, server, msg["meta"]["send"]

    @inlineCallbacks
    def test_twice_max_message_size(self):
        """
        Messages of max_message_size to a client that does not read: two are
        taken (the one that filled the transport's buffer counts), the third
        gets 503 with Retry-After.
        """
        client, _server, send = yield self.non_reader(max_message_size=MiB)
        codes = []
        for i in range(4):
            code, _ = yield self.backend.post_send(
                send, bytes([i]) * MiB, b"application/octet-stream"
            )
            codes.append(code)
        self.assertEqual(codes, [200, 200, 503, 503])
        self.assertEqual(self.relay.service.relay.budget.used, 2 * MiB)
        client.protocol.transport.resumeProducing()
        for i in range(2):
            payload, _ = yield client.next_message()
            self.assertEqual(payload, bytes([i]) * MiB)
        self.assertEqual(self.relay.service.relay.budget.used, 0)

    @inlineCallbacks
    def test_instance_budget_refuses_send(self):
        """Unread bytes count against max_queued_bytes: past it send is 503, saying why."""
        client, _server, send = yield self.non_reader(
            max_message_size=MiB, max_queued_bytes=MiB + MiB // 2
        )
        code, _ = yield self.backend.post_send(send, b"x" * MiB, b"application/octet-stream")
        self.assertEqual(code, 200)
        code, headers, body = yield self.backend.request(
            "POST", send, b"y" * MiB, {b"Content-Type": b"application/octet-stream"}
        )
        self.assertEqual(code, 503)
        self.assertTrue(headers.getRawHeaders(b"retry-after"))
        self.assertIn(b"too much data queued", body)
        yield client.abort()
        yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(self.relay.service.relay.budget.used, 0)
