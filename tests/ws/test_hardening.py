"""
What a hostile or broken client can make of the WebSocket side (issue 14):
refused handshakes cost one bounded line, pongs count against the outbound
bound, an admitted client's failed handshake still gets its notice, close
codes are validated, and origin refusals are 403 and counted.
"""

import os
import socket
import struct
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults, inlineCallbacks
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from tests.fakebackend import STALL, Answer
from tests.test_end_to_end import RelayTestCase
from tests.wsclient import HandshakeRefused, connect_client

_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_request(path=b"/ws", upgrade=b"websocket", extra=b""):
    """A WebSocket upgrade request's bytes, with ``upgrade`` as its Upgrade value."""
    return (
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: "
        + upgrade
        + b"\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
        + _KEY
        + b"\r\nSec-WebSocket-Version: 13\r\n"
        + extra
        + b"\r\n"
    )


def masked_frame(opcode, payload):
    """A client frame (masked, FIN set) of up to 125 bytes."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


class _Raw(Protocol):
    """Sends ``request``; ``answered`` fires with every byte read until the server closes."""

    def __init__(self, request):
        self.request = request
        self.received = b""
        self.answered: Deferred[bytes] = Deferred()
        self.head: Deferred[bytes] | None = Deferred()

    def connectionMade(self):
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.received += data
        if self.head is not None and b"\r\n\r\n" in self.received:
            head, self.head = self.head, None
            head.callback(self.received)

    def connectionLost(self, reason: Failure = connectionDone):
        self.answered.callback(self.received)


def raw_exchange(port, request, rcvbuf=None):
    """Open a TCP connection to the instance (optionally with a small receive buffer)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    protocol = _Raw(request)
    reactor.adoptStreamConnection(  # type: ignore[attr-defined]  # the installed reactor is an IReactorSocket
        sock.fileno(), socket.AF_INET, _OneProtocol(protocol)
    )
    sock.close()  # the reactor holds its own duplicate
    return protocol


class _OneProtocol:
    def __init__(self, protocol):
        self._protocol = protocol

    def buildProtocol(self, addr):
        return self._protocol

    def doStart(self):
        pass

    def doStop(self):
        pass


def status_line(answer):
    return answer.split(b"\r\n", 1)[0]


if TYPE_CHECKING:
    # The test case this mixin is combined with.
    from twisted.trial.unittest import TestCase as _LogCaptureMixinBase
else:
    _LogCaptureMixinBase = object


class LogCaptureMixin(_LogCaptureMixinBase):
    def capture_log(self):
        events: list[dict[str, Any]] = []
        # A plain callable is a log observer (Twisted's types want the interface).
        globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
        self.addCleanup(globalLogPublisher.removeObserver, events.append)  # type: ignore[arg-type]
        return events


class RefusedHandshakeTests(RelayTestCase, LogCaptureMixin):
    @inlineCallbacks
    def test_hostile_upgrade_header_one_bounded_escaped_line(self):
        """
        A 15 kB Upgrade header full of ESC and BEL: 400 with a short,
        printable status line, and exactly one short, printable log line.
        """
        yield self.start()
        events = self.capture_log()
        hostile = b"\x1b[31m\x07" + b"x" * 15000
        answer = yield raw_exchange(self.relay.port, upgrade_request(upgrade=hostile)).answered
        line = status_line(answer)
        self.assertTrue(line.startswith(b"HTTP/1.1 400 "), line)
        self.assertLess(len(answer), 300)
        self.assertFalse(any(b < 0x20 or b > 0x7E for b in line), line)
        texts = [formatEvent(e) for e in events]
        self.assertEqual(len(texts), 1, texts)
        self.assertLess(len(texts[0]), 300)
        self.assertIn("refused: 400", texts[0])
        self.assertFalse(any(ord(c) < 0x20 or c == "\x7f" for c in texts[0]), texts[0])

    @inlineCallbacks
    def test_flood_of_bad_handshakes_logs_bounded(self):
        """300 hostile upgrades (4.5 MB in): one line each, under 100 kB of log in all."""
        yield self.start()
        events = self.capture_log()
        hostile = b"\x1b]0;pwned\x07" + b"y" * 15000
        requests = 300
        for _ in range(requests // 50):
            answers = yield gatherResults(
                [
                    raw_exchange(self.relay.port, upgrade_request(upgrade=hostile)).answered
                    for _ in range(50)
                ]
            )
            for answer in answers:
                self.assertTrue(status_line(answer).startswith(b"HTTP/1.1 400 "))
        texts = [formatEvent(e) for e in events]
        self.assertEqual(len(texts), requests)
        self.assertLess(sum(len(t) for t in texts), 100_000)
        refused = self.relay.service.relay.metrics.registry.get_sample_value(
            "socketdock_handshakes_refused_total", {"status": "400", "reason": "bad_request"}
        )
        self.assertEqual(refused, requests)

    @inlineCallbacks
    def test_backend_refusal_one_line(self):
        """A refusal by the backend is one line too (not ours plus Autobahn's two)."""
        yield self.start(connecturi="{backend}/connect")
        events = self.capture_log()
        self.backend.answer("connect", status=403, body=b"no")
        yield self.assertFailure(connect_client(reactor, self.relay.ws_url()), HandshakeRefused)
        texts = [
            formatEvent(e)
            for e in events
            if e.get("log_namespace", "").startswith(("socketdock.ws", "autobahn"))
        ]
        self.assertEqual(len(texts), 1, texts)
        self.assertIn("refused: 403", texts[0])


class PingFloodTests(RelayTestCase):
    @inlineCallbacks
    def test_pongs_to_a_client_that_never_reads_stay_bounded(self):
        """
        2 MB of pings from a client that reads nothing: the server's unsent
        bytes stay within the socket buffer's high-water mark plus twice
        max_message_size, and the client is closed with 1008, noticed once.
        """
        limit = 4096
        yield self.start(max_message_size=limit)
        client = raw_exchange(self.relay.port, upgrade_request(), rcvbuf=4096)
        head = yield client.head
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
        server: Any  # the RelayServerProtocol: the test reaches into it and its transport
        (server,) = list(self.relay.service.relay.registry)
        transport = server.transport
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        peaks = [0]
        write = transport.write

        def measured_write(data):
            write(data)
            buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
            peaks[0] = max(peaks[0], buffered)

        transport.write = measured_write
        ping = masked_frame(0x9, b"p" * 125)
        count = 2_000_000 // len(ping)
        # Done when the server has seen every ping, or has dropped the client.
        all_seen: Deferred[None] = Deferred()
        seen = [0]
        on_ping = server.onPing

        def counted_ping(payload):
            on_ping(payload)
            seen[0] += 1
            if seen[0] == count:
                all_seen.callback(None)

        server.onPing = counted_ping
        done = DeferredList([all_seen, server.is_closed], fireOnOneCallback=True)
        client.transport.pauseProducing()  # never read again
        client.transport.write(ping * count)
        yield done
        self.assertLess(peaks[0], transport.bufferSize + 2 * limit + len(ping))
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual((notice["meta"]["code"], notice["meta"]["initiator"]), (1008, "server"))
        client.transport.resumeProducing()
        yield client.answered


class AdmittedThenFailedTests(RelayTestCase):
    @inlineCallbacks
    def test_bad_extension_params_refused_before_the_backend(self):
        """An unparsable permessage-deflate offer: 400, and the backend never hears of it."""
        yield self.start(connecturi="{backend}/connect")
        failure = yield self.assertFailure(
            connect_client(
                reactor,
                self.relay.ws_url(),
                headers={"Sec-WebSocket-Extensions": "permessage-deflate; foo=bar"},
            ),
            HandshakeRefused,
        )
        self.assertEqual(failure.status, 400)
        self.assertEqual((len(self.backend.connects), len(self.backend.disconnects)), (0, 0))

    @inlineCallbacks
    def test_subprotocol_not_offered_is_dropped_not_fatal(self):
        """
        The backend picks a subprotocol the client did not offer: the client
        opens without one (Autobahn would have raised mid-handshake and left
        it hanging), and its close is noticed once.
        """
        yield self.start(connecturi="{backend}/connect")
        self.backend.answer("connect", status=200, headers={"Sec-WebSocket-Protocol": "other"})
        client = yield connect_client(reactor, self.relay.ws_url(), protocols=["didcomm/v2"])
        self.assertIsNone(client.selected_protocol)
        yield client.close()
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        (connect,) = self.backend.connects
        self.assertEqual(notice["connection_id"], connect["meta"]["connection_id"])

    @inlineCallbacks
    def test_client_gone_while_pending_gets_notice(self):
        """The client leaves while the backend decides, then it admits: one notice."""
        yield self.start(connecturi="{backend}/connect")
        self.backend.answer_next("connect", STALL)
        client = raw_exchange(self.relay.port, upgrade_request())
        yield self.backend.wait_for("connect", 1)
        client.transport.loseConnection()
        yield client.answered
        self.backend.release(self.backend.stalled[0], Answer())
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(notice["meta"]["initiator"], "client")

    @inlineCallbacks
    def test_failure_after_admission_gets_notice(self):
        """
        Whatever fails the handshake once the backend admitted the client
        (here Autobahn's own extension parsing, reached past our check), the
        backend gets exactly one notice.
        """
        yield self.start(connecturi="{backend}/connect")
        import socketdock.ws.gate as gate_module

        self.patch(gate_module, "bad_extension_offer", lambda extensions: None)
        yield self.assertFailure(
            connect_client(
                reactor,
                self.relay.ws_url(),
                headers={"Sec-WebSocket-Extensions": "permessage-deflate; foo=bar"},
            ),
            HandshakeRefused,
        )
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        (connect,) = self.backend.connects
        self.assertEqual(notice["connection_id"], connect["meta"]["connection_id"])
        self.assertEqual((notice["meta"]["code"], notice["meta"]["initiator"]), (None, "server"))

    @inlineCallbacks
    def test_error_inside_autobahns_handshake_gets_notice(self):
        """
        An exception inside Autobahn's handshake once the backend admitted the
        client: 500 to the client (not a hang), one notice to the backend.
        """
        from autobahn.twisted.websocket import WebSocketServerProtocol

        def broken(protocol, res):
            raise RuntimeError("broken")

        self.patch(WebSocketServerProtocol, "succeedHandshake", broken)
        yield self.start(connecturi="{backend}/connect")
        failure = yield self.assertFailure(
            connect_client(reactor, self.relay.ws_url()), HandshakeRefused
        )
        self.assertEqual(failure.status, 500)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(notice["meta"]["initiator"], "server")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class CloseCodeValidationTests(RelayTestCase):
    @inlineCallbacks
    def close_with(self, code):
        client = raw_exchange(self.relay.port, upgrade_request())
        yield client.head
        client.transport.write(masked_frame(0x8, struct.pack("!H", code)))
        answer = yield client.answered
        return answer

    @inlineCallbacks
    def test_invalid_close_codes_are_protocol_errors(self):
        """Close codes 999, 5000 and 1005 on the wire: 1002 back, 1002 in the notice and metrics."""
        yield self.start()
        for code in (999, 5000, 1005):
            answer = yield self.close_with(code)
            frame = answer[answer.index(b"\r\n\r\n") + 4 :]
            self.assertEqual(frame[:1], b"\x88")
            self.assertEqual(struct.unpack("!H", frame[2:4])[0], 1002, code)
        notices = yield self.backend.wait_for("disconnect", 3)
        self.assertEqual([n["meta"]["code"] for n in notices], [1002] * 3)
        exposition = self.relay.service.relay.metrics.exposition().decode()
        closed = [
            line
            for line in exposition.splitlines()
            if line.startswith("socketdock_connections_closed_total{")
        ]
        self.assertEqual(closed, ['socketdock_connections_closed_total{code="1002"} 3.0'])

    @inlineCallbacks
    def test_application_codes_share_a_label(self):
        """Valid application codes reach the notice as sent but share a metric label."""
        yield self.start()
        for code in (4001, 4002, 3999):
            yield self.close_with(code)
        notices = yield self.backend.wait_for("disconnect", 3)
        # Three connections: SPEC orders notices within one connection only.
        self.assertEqual(sorted(n["meta"]["code"] for n in notices), [3999, 4001, 4002])
        value = self.relay.service.relay.metrics.registry.get_sample_value
        self.assertEqual(value("socketdock_connections_closed_total", {"code": "4xxx"}), 2)
        self.assertEqual(value("socketdock_connections_closed_total", {"code": "3xxx"}), 1)


class OriginTests(RelayTestCase):
    @inlineCallbacks
    def test_star_admits_null_origin(self):
        """allowed_origins = * admits Origin: null (sandboxed pages, file://)."""
        yield self.start(allowed_origins="*")
        client = yield self.client(origin="null")
        client.send_text("hi")
        yield self.backend.wait_for("message", 1)

    @inlineCallbacks
    def test_origin_refusals_are_403_and_counted(self):
        """A refused origin and an unusable Origin header are both 403, each counted."""
        yield self.start(allowed_origins="https://app.example.com")
        for origin in ("https://evil.example.com", "null"):
            failure = yield self.assertFailure(
                connect_client(reactor, self.relay.ws_url(), origin=origin), HandshakeRefused
            )
            self.assertEqual(failure.status, 403)
        answer = yield raw_exchange(
            self.relay.port, upgrade_request(extra=b"Origin: no-host\r\n")
        ).answered
        self.assertTrue(status_line(answer).startswith(b"HTTP/1.1 403 "), answer)
        value = self.relay.service.relay.metrics.registry.get_sample_value
        self.assertEqual(
            value("socketdock_handshakes_refused_total", {"status": "403", "reason": "origin"}), 3
        )


class HeaderControlCharacterTests(RelayTestCase, LogCaptureMixin):
    """
    A control character in a handshake header value: 400 from SocketDock
    itself, whatever Autobahn's release does with it (26.11 refuses what
    26.10 let through), on the tuned channel and twisted.web's own.
    """

    @inlineCallbacks
    def refused_on(self, stack_name):
        yield self.start(tuning=stack_name)
        events = self.capture_log()
        for value in (b"a\x01b", b"a\x7fb", b"\x1b[31m"):
            answer = yield raw_exchange(
                self.relay.port, upgrade_request(extra=b"X-Wallet: " + value + b"\r\n")
            ).answered
            self.assertTrue(status_line(answer).startswith(b"HTTP/1.1 400 "), answer)
            self.assertTrue(answer.endswith(b"control character in the X-Wallet header\n"), answer)
        texts = [formatEvent(e) for e in events]
        self.assertEqual(len(texts), 3, texts)
        self.assertIn("refused: 400 control character in the X-Wallet header", texts[0])
        refused = self.relay.service.relay.metrics.registry.get_sample_value(
            "socketdock_handshakes_refused_total", {"status": "400", "reason": "bad_request"}
        )
        self.assertEqual(refused, 3)
        # A tab and non-ASCII bytes are allowed in a value (RFC 9110 §5.5).
        client = yield self.client(headers={"X-Wallet": "a\tb"})
        client.send_text("still fine")
        (message,) = yield self.backend.wait_for("message", 1)
        self.assertEqual(message["message"], "still fine")

    def test_tuned_channel(self):
        return self.refused_on("auto")

    def test_plain_channel(self):
        return self.refused_on("off")
