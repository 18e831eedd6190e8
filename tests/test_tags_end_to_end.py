"""
Tags end to end over loopback (SPEC §8, one instance): a real instance, real
Autobahn clients and the real twisted.web backend of tests/fakebackend.py.
"""

import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from tests.fakebackend import STALL, Answer
from tests.test_end_to_end import RelayTestCase
from tests.wsclient import HandshakeRefused, connect_client

JSON = {"Content-Type": "application/json"}


class TagTestCase(RelayTestCase):
    """The helpers of the tag tests."""

    @inlineCallbacks
    def tagged_client(self, *tags):
        """A client the connect answer gives ``tags``, and its connection id."""
        self.backend.answer_next(
            "connect", Answer(200, json.dumps({"tags": list(tags)}).encode(), JSON)
        )
        client = yield self.client()
        connect = self.backend.connects[-1]
        return client, connect["meta"]["connection_id"]

    def api(self, method, path, body=None, content_type=b"text/plain"):
        headers = {b"Content-Type": content_type} if body is not None else None
        return self.backend.request(method, self.relay.base + path, body, headers)


class TagTests(TagTestCase):
    @inlineCallbacks
    def test_connect_answer_tags_reach_meta_and_notice(self):
        """Tags from the connect answer are in meta of messages and of the notice; then gone."""
        yield self.start(connecturi="{backend}/connect")
        client, cid = yield self.tagged_client("did:peer:alice", "tenant/7")
        client.send_text("hi")
        (msg,) = yield self.backend.wait_for("message", 1)
        self.assertEqual(msg["meta"]["tags"], ["did:peer:alice", "tenant/7"])
        code, _, body = yield self.api("GET", "/tags/tenant%2F7")
        self.assertEqual((code, json.loads(body)), (200, {"connections": 1}))
        code, _, body = yield self.api("GET", f"/socket/{cid}")
        self.assertEqual(json.loads(body)["tags"], ["did:peer:alice", "tenant/7"])
        _, _, metrics = yield self.api("GET", "/metrics")
        self.assertIn(b"\nsocketdock_tags 2.0\n", metrics)
        self.assertNotIn(b"alice", metrics)
        yield client.close(1000)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(notice["meta"]["tags"], ["did:peer:alice", "tenant/7"])
        code, _, _ = yield self.api("GET", "/tags/tenant%2F7")
        self.assertEqual(code, 404)
        _, _, metrics = yield self.api("GET", "/metrics")
        self.assertIn(b"\nsocketdock_tags 0.0\n", metrics)

    @inlineCallbacks
    def test_tags_from_the_callback(self):
        """Untagged messages have no tags key; after POST /socket/<id>/tags they carry them."""
        yield self.start()
        client = yield self.client()
        client.send_text("one")
        (first,) = yield self.backend.wait_for("message", 1)
        self.assertNotIn("tags", first["meta"])
        cid = first["meta"]["connection_id"]
        code, _, body = yield self.api(
            "POST", f"/socket/{cid}/tags", b'{"add": ["bob", "x"], "remove": ["y"]}'
        )
        self.assertEqual((code, json.loads(body)), (200, {"tags": ["bob", "x"]}))
        code, _, body = yield self.api("POST", f"/socket/{cid}/tags", b'{"remove": ["x"]}')
        self.assertEqual(json.loads(body), {"tags": ["bob"]})
        client.send_text("two")
        _, second = yield self.backend.wait_for("message", 2)
        self.assertEqual(second["meta"]["tags"], ["bob"])
        code, _, body = yield self.api("POST", f"/socket/{cid}/tags", b'{"add": [""]}')
        self.assertEqual(code, 400)
        code, _, _ = yield self.api("POST", f"/socket/{'0' * 32}/tags", b"{}")
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_tag_send_reaches_two_connections(self):
        """A tag send reaches both carriers and no one else; a tag nobody holds is 404."""
        yield self.start(connecturi="{backend}/connect")
        a, _ = yield self.tagged_client("room/1")
        b, _ = yield self.tagged_client("room/1", "other")
        c, _ = yield self.tagged_client("other")
        code, _, body = yield self.api(
            "POST", "/tags/room%2F1/send", "é".encode(), b"text/plain; charset=utf-8"
        )
        self.assertEqual((code, json.loads(body)), (200, {"connections": 2}))
        self.assertEqual((yield a.next_message()), ("é".encode(), False))
        self.assertEqual((yield b.next_message()), ("é".encode(), False))
        code, _, body = yield self.api(
            "POST", "/tags/other/send", b"\x00", b"application/octet-stream"
        )
        self.assertEqual(json.loads(body), {"connections": 2})
        self.assertEqual((yield c.next_message()), (b"\x00", True))
        self.assertEqual((yield b.next_message()), (b"\x00", True))
        yield a.ping()  # the pong came after anything sent to a before it
        nothing = a.next_message()
        self.assertNoResult(nothing)
        nothing.addErrback(lambda _: None)  # fails once the client is shut down
        code, _, body = yield self.api("POST", "/tags/nobody/send", b"x")
        self.assertEqual((code, body), (404, b"no live connection carries this tag\n"))

    @inlineCallbacks
    def test_tag_disconnect(self):
        """POST /tags/<tag>/disconnect closes the carriers; their notices say backend, with tags."""
        yield self.start(connecturi="{backend}/connect")
        a, _ = yield self.tagged_client("t")
        _b, _ = yield self.tagged_client("u")
        code, _, body = yield self.api(
            "POST", "/tags/t/disconnect", b'{"code": 4002, "reason": "kicked"}', b"application/json"
        )
        self.assertEqual((code, json.loads(body)), (200, {"connections": 1}))
        info = yield a.closed
        self.assertEqual(info[1], 4002)  # (was_clean, code, reason)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual((notice["meta"]["initiator"], notice["meta"]["tags"]), ("backend", ["t"]))
        code, _, _ = yield self.api("GET", "/tags/t")
        self.assertEqual(code, 404)
        code, _, _ = yield self.api("GET", "/tags/u")
        self.assertEqual(code, 200)

    @inlineCallbacks
    def test_unusable_connect_tags_refuse_with_503(self):
        """An admitting answer with unusable tags refuses the upgrade with 503; the backend is told."""
        yield self.start(connecturi="{backend}/connect")
        self.backend.answer_next("connect", Answer(200, b'{"tags": [""]}', JSON))
        failure = yield self.assertFailure(
            connect_client(reactor, self.relay.ws_url()), HandshakeRefused
        )
        self.assertEqual(failure.status, 503)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(notice["meta"]["initiator"], "server")


class PendingHandshakeTagTests(TagTestCase):
    @inlineCallbacks
    def pending_client(self):
        """A client whose connect notice the backend holds; its id."""
        yield self.start(connecturi="{backend}/connect")
        self.backend.answer_next("connect", STALL)
        pending = connect_client(reactor, self.relay.ws_url())
        (connect,) = yield self.backend.wait_for("connect", 1)
        return pending, connect["meta"]["connection_id"]

    @inlineCallbacks
    def test_tags_set_while_pending_join_the_connect_answer(self):
        """Tags set during the handshake hold a tag send, and merge with the answer's tags."""
        pending, cid = yield self.pending_client()
        code, _, body = yield self.api("POST", f"/socket/{cid}/tags", b'{"add": ["early"]}')
        self.assertEqual((code, json.loads(body)), (200, {"tags": ["early"]}))
        code, _, body = yield self.api("POST", "/tags/early/send", b"held")
        self.assertEqual((code, json.loads(body)), (200, {"connections": 1}))
        self.backend.release(self.backend.stalled[0], Answer(200, b'{"tags": ["late"]}', JSON))
        client = yield pending
        self.addCleanup(client.shutdown)
        self.assertEqual((yield client.next_message()), (b"held", False))
        client.send_text("x")
        (msg,) = yield self.backend.wait_for("message", 1)
        self.assertEqual(msg["meta"]["tags"], ["early", "late"])

    @inlineCallbacks
    def test_pending_tags_plus_answer_over_the_limit(self):
        """64 tags set during the handshake plus one more in the answer: 503, and a notice with the 64."""
        pending, cid = yield self.pending_client()
        many = [f"t{i}" for i in range(64)]
        code, _, _ = yield self.api(
            "POST", f"/socket/{cid}/tags", json.dumps({"add": many}).encode()
        )
        self.assertEqual(code, 200)
        self.backend.release(self.backend.stalled[0], Answer(200, b'{"tags": ["one-more"]}', JSON))
        failure = yield self.assertFailure(pending, HandshakeRefused)
        self.assertEqual(failure.status, 503)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual((notice["meta"]["initiator"], notice["meta"]["tags"]), ("server", many))
        code, _, _ = yield self.api("GET", "/tags/t0")
        self.assertEqual(code, 404)
