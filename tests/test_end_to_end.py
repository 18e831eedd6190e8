"""
End to end over loopback: a real instance, a real Autobahn client and a real
twisted.web backend (tests/fakebackend.py), one test per row of SPEC §3–4.
"""

import base64
import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.fakebackend import STALL, Answer, FakeBackend, start_backend, stop_backend
from tests.harness import start_relay
from tests.wsclient import HandshakeRefused, connect_client


class RelayTestCase(TestCase):
    """
    Starts a backend and an instance; clients are closed in cleanup.

    :cvar stack: which faster paths run (see ``tests/test_one_piece_off.py``);
        None for what ``tuning`` chooses.
    """

    stack = None

    @inlineCallbacks
    def start(self, **settings):
        self.backend = FakeBackend(reactor)
        port, url = yield start_backend(reactor, self.backend)
        self.addCleanup(stop_backend, port, self.backend)
        settings.setdefault("backend", "http")
        settings.setdefault("messageuri", url + "/message")
        settings.setdefault("disconnecturi", url + "/disconnect")
        settings.setdefault("ping_interval", 0)
        settings = {
            k: v.format(backend=url) if isinstance(v, str) else v for k, v in settings.items()
        }
        self.backend_url = url
        if self.stack is not None:
            settings.setdefault("stack", self.stack)
        self.relay = start_relay(self, reactor, **settings)
        return self.relay

    @inlineCallbacks
    def client(self, **kwargs):
        client = yield connect_client(reactor, self.relay.ws_url(), **kwargs)
        self.addCleanup(client.shutdown)
        return client


class LoopbackTests(RelayTestCase):
    @inlineCallbacks
    def test_loopback_echoes_text_and_binary(self):
        """The default backend echoes a text and a binary message as the same frame types."""
        relay = start_relay(self, reactor, backend="loopback", ping_interval=0)
        client = yield connect_client(reactor, relay.ws_url())
        self.addCleanup(client.shutdown)
        client.send_text("hello")
        client.send_binary(b"\xff\x00\x01")
        self.assertEqual((yield client.next_message()), (b"hello", False))
        self.assertEqual((yield client.next_message()), (b"\xff\x00\x01", True))


class MessageTests(RelayTestCase):
    @inlineCallbacks
    def test_message_reaches_backend_in_compat_shape(self):
        """A text message is POSTed as {"meta": {...}, "message": ...} with seq 1, 2."""
        yield self.start()
        client = yield self.client()
        client.send_text("one")
        client.send_text("two")
        messages = yield self.backend.wait_for("message", 2)
        first, second = messages
        cid = first["meta"]["connection_id"]
        self.assertRegex(cid, r"^[0-9a-f]{32}$")
        self.assertEqual(first["message"], "one")
        self.assertEqual([first["meta"]["seq"], second["meta"]["seq"]], [1, 2])
        self.assertEqual(first["meta"]["send"], f"{self.relay.base}/socket/{cid}/send")
        self.assertEqual(first["meta"]["disconnect"], f"{self.relay.base}/socket/{cid}/disconnect")
        request = self.backend.received[0]
        self.assertEqual(request.headers.getRawHeaders(b"content-type"), [b"application/json"])
        agent = (request.headers.getRawHeaders(b"user-agent") or [b""])[0]
        self.assertTrue(agent.startswith(b"SocketDock/"))

    @inlineCallbacks
    def test_binary_messages(self):
        """UTF-8 binary travels as a string with binary: true; other binary as base64."""
        yield self.start()
        client = yield self.client()
        client.send_binary(b"plain")
        client.send_binary(b"\xff\xfe")
        a, b = yield self.backend.wait_for("message", 2)
        self.assertEqual((a["message"], a["meta"]["binary"]), ("plain", True))
        self.assertNotIn("encoding", a["meta"])
        self.assertEqual(b["meta"]["encoding"], "base64")
        self.assertEqual(base64.b64decode(b["message"]), b"\xff\xfe")

    @inlineCallbacks
    def test_one_at_a_time_in_order(self):
        """The next message is not POSTed until the previous one is answered."""
        yield self.start()
        self.backend.answer_next("message", STALL)
        client = yield self.client()
        client.send_text("first")
        client.send_text("second")
        yield self.backend.wait_for("message", 1)
        yield client.ping()
        self.assertEqual(len(self.backend.messages), 1)
        self.backend.release(self.backend.stalled[0], Answer())
        messages = yield self.backend.wait_for("message", 2)
        self.assertEqual([m["message"] for m in messages], ["first", "second"])


class CallbackTests(RelayTestCase):
    @inlineCallbacks
    def test_send_text_and_binary(self):
        """POST to send: text/* becomes a text frame, other types a binary frame."""
        yield self.start()
        client = yield self.client()
        client.send_text("hi")
        (msg,) = yield self.backend.wait_for("message", 1)
        code, body = yield self.backend.post_send(
            msg["meta"]["send"], "ü".encode(), b"text/plain; charset=utf-8"
        )
        self.assertEqual((code, body), (200, b"OK"))
        self.assertEqual((yield client.next_message()), ("ü".encode(), False))
        code, _ = yield self.backend.post_send(
            msg["meta"]["send"], b"\x00\x01", b"application/octet-stream"
        )
        self.assertEqual(code, 200)
        self.assertEqual((yield client.next_message()), (b"\x00\x01", True))

    @inlineCallbacks
    def test_send_errors(self):
        """Unknown id 404; text/* that is not UTF-8 400; over max_message_size 413."""
        yield self.start(max_message_size=10)
        client = yield self.client()
        client.send_text("hi")
        (msg,) = yield self.backend.wait_for("message", 1)
        send = msg["meta"]["send"]
        code, _ = yield self.backend.post_send(
            send.replace(msg["meta"]["connection_id"], "0" * 32), b"x"
        )
        self.assertEqual(code, 404)
        code, _ = yield self.backend.post_send(send, b"\xff", b"text/plain")
        self.assertEqual(code, 400)
        code, _ = yield self.backend.post_send(send, b"x" * 11)
        self.assertEqual(code, 413)

    @inlineCallbacks
    def test_backend_disconnect_with_code(self):
        """POST to disconnect closes the client with that code; the notice says backend."""
        yield self.start()
        client = yield self.client()
        client.send_text("hi")
        (msg,) = yield self.backend.wait_for("message", 1)
        code, _ = yield self.backend.post_json(
            msg["meta"]["disconnect"], {"code": 4000, "reason": "bye"}
        )
        self.assertEqual(code, 200)
        _was_clean, close_code, reason = yield client.closed
        self.assertEqual((close_code, reason), (4000, "bye"))
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(notice["connection_id"], msg["meta"]["connection_id"])
        self.assertEqual(notice["meta"]["code"], 4000)
        self.assertEqual(notice["meta"]["initiator"], "backend")


class ConnectTests(RelayTestCase):
    @inlineCallbacks
    def test_connect_refused_with_backend_status(self):
        """A 4xx answer to connect refuses the upgrade with that status."""
        yield self.start(connecturi="{backend}/connect")
        self.backend.answer("connect", status=403, body=b"no")
        failure = yield self.assertFailure(
            connect_client(reactor, self.relay.ws_url()), HandshakeRefused
        )
        self.assertEqual(failure.status, 403)
        self.assertEqual(len(self.backend.disconnects), 0)

    @inlineCallbacks
    def test_connect_notice_then_held_send_then_subprotocol(self):
        """connect carries headers; a send during the pending handshake is delivered after it."""
        yield self.start(connecturi="{backend}/connect")
        self.backend.answer_next("connect", STALL)
        pending = connect_client(
            reactor, self.relay.ws_url(), protocols=["didcomm/v2", "x"], headers={"X-Test": "1"}
        )
        (connect,) = yield self.backend.wait_for("connect", 1)
        self.assertEqual(connect["meta"]["headers"]["x-test"], "1")
        sent = self.backend.post_send(connect["meta"]["send"], b"early")
        self.backend.release(
            self.backend.stalled[0], Answer(200, b"", {"Sec-WebSocket-Protocol": "didcomm/v2"})
        )
        client = yield pending
        self.addCleanup(client.shutdown)
        self.assertEqual(client.selected_protocol, "didcomm/v2")
        self.assertEqual((yield client.next_message()), (b"early", False))
        code, _ = yield sent
        self.assertEqual(code, 200)


class DisconnectNoticeTests(RelayTestCase):
    @inlineCallbacks
    def test_client_close_is_noticed_once_after_its_messages(self):
        """A client close with code and reason reaches the backend once, after the messages."""
        yield self.start()
        client = yield self.client()
        client.send_text("last words")
        yield client.close(4001, "going")
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(notice["meta"]["code"], 4001)
        self.assertEqual(notice["meta"]["reason"], "going")
        self.assertEqual(notice["meta"]["initiator"], "client")
        paths = [r.path for r in self.backend.received]
        self.assertEqual(paths, ["/message", "/disconnect"])

    @inlineCallbacks
    def test_dropped_connection_has_null_code(self):
        """A connection dropped without a close frame is noticed with code null."""
        yield self.start()
        client = yield self.client()
        yield client.abort()
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertIsNone(notice["meta"]["code"])
        self.assertEqual(notice["meta"]["initiator"], "client")

    @inlineCallbacks
    def test_oversized_message_closes_with_1009(self):
        """A message over max_message_size closes the socket with 1009, initiator server."""
        yield self.start(max_message_size=16)
        client = yield self.client()
        client.send_text("x" * 17)
        _, code, _ = yield client.closed
        self.assertEqual(code, 1009)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual((notice["meta"]["code"], notice["meta"]["initiator"]), (1009, "server"))
        self.assertEqual(self.backend.messages, [])


class InspectionTests(RelayTestCase):
    @inlineCallbacks
    def test_get_and_delete_connection(self):
        """GET /socket/<id> describes a live connection; DELETE closes it; then 404."""
        yield self.start()
        client = yield self.client()
        client.send_text("hi")
        (msg,) = yield self.backend.wait_for("message", 1)
        url = f"{self.relay.base}/socket/{msg['meta']['connection_id']}"
        code, _headers, body = yield self.backend.request("GET", url)
        self.assertEqual(code, 200)
        info = json.loads(body)
        self.assertEqual(info["connection_id"], msg["meta"]["connection_id"])
        self.assertEqual((info["messages_in"], info["messages_out"]), (1, 0))
        self.assertRegex(info["connected_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertIn("127.0.0.1", info["remote"])
        code, _, _ = yield self.backend.request("HEAD", url)
        self.assertEqual(code, 200)
        code, _, _ = yield self.backend.request("DELETE", url)
        self.assertEqual(code, 200)
        _, close_code, _ = yield client.closed
        self.assertEqual(close_code, 1000)
        code, _, body = yield self.backend.request("GET", url)
        self.assertEqual((code, body), (404, b"no such live connection\n"))

    @inlineCallbacks
    def test_status_and_unknown_paths(self):
        """GET /status has the SPEC fields; unknown paths 404; other methods 405."""
        yield self.start()
        code, _, body = yield self.backend.request("GET", f"{self.relay.base}/status")
        status = json.loads(body)
        self.assertEqual(
            set(status),
            {"version", "uptime_seconds", "connections", "messages", "backend", "tuning"},
        )
        code, _, body = yield self.backend.request("GET", f"{self.relay.base}/nowhere")
        self.assertEqual((code, body), (404, b"no such path\n"))
        code, headers, _ = yield self.backend.request("PUT", f"{self.relay.base}/status")
        self.assertEqual(code, 405)
        self.assertIn(b"GET", headers.getRawHeaders(b"allow")[0])

    @inlineCallbacks
    def test_upgrade_only_on_wspath(self):
        """A WebSocket upgrade on another path is refused with 404."""
        yield self.start()
        failure = yield self.assertFailure(
            connect_client(reactor, self.relay.ws_url("/other")), HandshakeRefused
        )
        self.assertEqual(failure.status, 404)
