"""
Nothing lost (SPEC §5): a real instance against a real backend on loopback
that refuses, resets, stalls and answers errors; a stalled backend that makes
the relay stop reading; a client that stops reading.

Retries and timeouts are kept small so the module runs in a few seconds; every
wait is on a Deferred (a backend arrival, a client frame, a close).
"""

import json
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from tests.fakebackend import RESET, STALL, Answer
from tests.harness import refused_port
from tests.test_end_to_end import RelayTestCase

FAST = dict(backend_retries=2, backend_timeout=0.5, shutdown_timeout=2)


def folded(testcase, messages):
    """
    The ``(seq, message)`` pairs the backend saw, retries folded: a repeat must
    carry the previous request's seq and body, and the seqs must then run
    1, 2, 3 … so every message arrived once per seq and in order.
    """
    out: list[Any] = []
    for m in messages:
        seq = m["meta"]["seq"]
        if out and out[-1][0] == seq:
            testcase.assertEqual(out[-1][1], m["message"], "a retry changed the body")
            continue
        out.append((seq, m["message"]))
    testcase.assertEqual([s for s, _ in out], list(range(1, len(out) + 1)))
    return out


class ReliabilityCase(RelayTestCase):
    """RelayTestCase with small retries and timeouts, plus /status."""

    timeout = 30

    def start(self, **settings):
        for key, value in FAST.items():
            settings.setdefault(key, value)
        return super().start(**settings)

    @inlineCallbacks
    def status(self):
        code, _, body = yield self.backend.request("GET", self.relay.base + "/status")
        self.assertEqual(code, 200)
        return json.loads(body)["backend"]


class FaultTests(ReliabilityCase):
    @inlineCallbacks
    def test_refused_is_retried_then_closed_1011(self):
        """A backend whose port is closed is retried backend_retries times, then the client gets 1011."""
        yield self.start(messageuri=f"http://127.0.0.1:{refused_port(self)}/message")
        client = yield self.client()
        client.send_text("lost?")
        _, code, _ = yield client.closed
        self.assertEqual(code, 1011)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual((notice["meta"]["code"], notice["meta"]["initiator"]), (1011, "backend"))
        self.assertEqual((yield self.status()), {"failures": 1, "retries": 2})

    @inlineCallbacks
    def test_reset_before_the_answer_is_retried(self):
        """Two resets are retried with the same seq; the next message follows once, in order."""
        yield self.start()
        self.backend.answer_next("message", RESET, RESET)
        client = yield self.client()
        client.send_text("a")
        client.send_text("b")
        messages = yield self.backend.wait_for("message", 4)
        self.assertEqual([m["meta"]["seq"] for m in messages], [1, 1, 1, 2])
        self.assertEqual(folded(self, messages), [(1, "a"), (2, "b")])
        yield client.ping()
        self.assertEqual((yield self.status())["retries"], 2)

    @inlineCallbacks
    def test_reset_mid_response_is_retried(self):
        """An answer cut off after its headers and part of its body is retried with the same seq."""
        yield self.start()
        self.backend.answer_next("message", STALL)
        client = yield self.client()
        client.send_text("a")
        yield self.backend.wait_for("message", 1)
        request = self.backend.stalled[0]
        request.setHeader(b"content-length", b"100")
        request.write(b"partial")
        request.channel.transport.abortConnection()  # type: ignore[union-attr]  # a live request's channel has a TCP transport
        yield self.backend.wait_for("message", 2)
        client.send_text("b")
        messages = yield self.backend.wait_for("message", 3)
        self.assertEqual([m["meta"]["seq"] for m in messages], [1, 1, 2])
        self.assertEqual(folded(self, messages), [(1, "a"), (2, "b")])

    @inlineCallbacks
    def test_stall_past_backend_timeout_is_retried(self):
        """A request unanswered after backend_timeout is abandoned and sent again with the same seq."""
        # Not shorter: the retry must be answered within it, and a process descheduled
        # for longer between sending and reading would see its timer fire first.
        yield self.start(backend_timeout=1)
        self.backend.answer_next("message", STALL)
        client = yield self.client()
        client.send_text("a")
        client.send_text("b")
        messages = yield self.backend.wait_for("message", 3)
        self.assertEqual([m["meta"]["seq"] for m in messages], [1, 1, 2])
        self.assertEqual(folded(self, messages), [(1, "a"), (2, "b")])
        yield client.ping()

    @inlineCallbacks
    def test_5xx_and_429_retried_honouring_retry_after(self):
        """500, 503 and 429 are retried; the retry after 429 waits its Retry-After of 1 s."""
        yield self.start(backend_retries=3)
        self.backend.answer_next(
            "message", Answer(500), Answer(503), Answer(429, b"slow down", {"Retry-After": "1"})
        )
        client = yield self.client()
        client.send_text("a")
        yield self.backend.wait_for("message", 3)
        asked = reactor.seconds()
        messages = yield self.backend.wait_for("message", 4)
        self.assertGreaterEqual(reactor.seconds() - asked, 0.95)
        self.assertEqual(folded(self, messages), [(1, "a")])
        self.assertEqual(len(messages), 4)
        self.assertEqual((yield self.status()), {"failures": 0, "retries": 3})

    @inlineCallbacks
    def test_exhausted_retries_close_1011_and_drop_no_later_message_silently(self):
        """When retries run out the client gets 1011, later messages are not posted, the notice says backend."""
        yield self.start()
        self.backend.answer("message", 503)
        client = yield self.client()
        client.send_text("a")
        client.send_text("b")
        _, code, _reason = yield client.closed
        self.assertEqual(code, 1011)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(notice["meta"]["initiator"], "backend")
        self.assertEqual(notice["meta"]["code"], 1011)
        self.assertEqual([m["meta"]["seq"] for m in self.backend.messages], [1, 1, 1])

    @inlineCallbacks
    def test_400_is_final_and_the_connection_stays_open(self):
        """A 400 is not retried, is counted as a failure, and the next message flows."""
        yield self.start()
        self.backend.answer_next("message", Answer(400, b"bad"))
        client = yield self.client()
        client.send_text("a")
        client.send_text("b")
        messages = yield self.backend.wait_for("message", 2)
        self.assertEqual([m["meta"]["seq"] for m in messages], [1, 2])
        yield client.ping()
        self.assertEqual((yield self.status()), {"failures": 1, "retries": 0})

    @inlineCallbacks
    def test_disconnect_notice_retried_with_the_same_body(self):
        """A notice answered 503 and then reset is sent again, unchanged, until it is taken."""
        yield self.start()
        self.backend.answer_next("disconnect", Answer(503), RESET)
        client = yield self.client()
        yield client.close(4001, "done")
        notices = yield self.backend.wait_for("disconnect", 3)
        self.assertEqual(notices[0], notices[1])
        self.assertEqual(notices[0], notices[2])
        self.assertEqual(notices[0]["meta"]["code"], 4001)
        self.assertEqual(notices[0]["meta"]["initiator"], "client")


def unsent(transport):
    """Bytes a TCP transport holds for a peer that is not reading (FileDescriptor's buffers)."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class BackpressureTests(ReliabilityCase):
    @inlineCallbacks
    def test_stalled_backend_pauses_reading_and_nothing_is_lost(self):
        """At queue_limit the relay stops reading, the queue never passes it, and all arrives in order."""
        limit, count = 4, 40
        yield self.start(queue_limit=limit)
        self.backend.answer_next("message", STALL)
        client = yield self.client()
        for i in range(count):
            client.send_text(f"m{i}")
        yield self.backend.wait_for("message", 1)
        relay = self.relay.service.relay
        server: Any  # the RelayServerProtocol: the test reaches into its transport
        (server,) = list(relay.registry)
        # The burst was read in the same reactor turn that posted message 1.
        self.assertEqual(relay.queued(), limit)
        self.assertNotIn(server.transport, reactor.getReaders())
        self.backend.release(self.backend.stalled[0], Answer())
        peak = 0
        for n in range(2, count + 1):
            yield self.backend.wait_for("message", n)
            peak = max(peak, relay.queued())
        self.assertLessEqual(peak, limit)
        self.assertEqual(
            folded(self, self.backend.messages), [(i + 1, f"m{i}") for i in range(count)]
        )
        yield client.ping()
        self.assertIn(server.transport, reactor.getReaders())

    @inlineCallbacks
    def test_slow_reader_gets_503_and_memory_stays_bounded(self):
        """A client that stops reading makes send answer 503 with Retry-After; what was accepted arrives."""
        size = 65536
        yield self.start(max_message_size=size)
        client = yield self.client()
        client.send_text("hi")
        (msg,) = yield self.backend.wait_for("message", 1)
        server: Any  # the RelayServerProtocol: the test reaches into its transport
        (server,) = list(self.relay.service.relay.registry)
        # Loopback buffers autotune up to tcp_rmem's maximum (32 MB here):
        # keep them small so the test does not depend on the kernel's mood.
        client.protocol.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        server.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        client.protocol.transport.pauseProducing()
        accepted = 0
        for i in range(1000):
            code, headers, _ = yield self.backend.request(
                "POST",
                msg["meta"]["send"],
                b"%06d" % i + b"x" * (size - 6),
                {b"Content-Type": b"application/octet-stream"},
            )
            if code != 200:
                break
            accepted += 1
        self.assertEqual(code, 503, f"still 200 after {accepted} sends")
        self.assertTrue(headers.getRawHeaders(b"retry-after"))
        # The transport's buffer, and twice max_message_size (the message
        # that filled the buffer included).  (No second send is asked for:
        # the kernel may take more bytes meanwhile and make room for it.)
        self.assertLessEqual(
            unsent(server.transport), server.transport.bufferSize + 2 * (size + 14)
        )
        client.protocol.transport.resumeProducing()
        for i in range(accepted):
            payload, is_binary = yield client.next_message()
            self.assertEqual((payload[:6], len(payload), is_binary), (b"%06d" % i, size, True))
        code, _ = yield self.backend.post_send(msg["meta"]["send"], b"after", b"text/plain")
        self.assertEqual(code, 200)
        self.assertEqual((yield client.next_message()), (b"after", False))
