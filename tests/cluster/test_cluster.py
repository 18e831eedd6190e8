"""
Cluster mode end to end (SPEC §8): real SocketDock instances in this process
on loopback, one real Redis, real Autobahn clients and the real twisted.web
backend of tests/fakebackend.py.  Every wait is on an event (a frame, a
request, the link coming up), bounded by the class timeout.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from socketdock.relay.reach import Unreachable
from tests.cluster.redisserver import NO_REDIS, start_redis
from tests.fakebackend import STALL, Answer, FakeBackend, start_backend, stop_backend
from tests.harness import start_relay
from tests.wsclient import connect_client

JSON = {"Content-Type": "application/json"}


def node_of(relay):
    """The ClusterNode among an instance's services."""
    from socketdock.cluster.node import ClusterNode

    (node,) = [s for s in relay.service if isinstance(s, ClusterNode)]
    return node


class ClusterTestCase(TestCase):
    """One Redis, one backend, and instances started on demand."""

    timeout = 30
    skip = NO_REDIS

    @inlineCallbacks
    def setUp(self):  # type: ignore[override]  # trial waits on a Deferred from setUp
        self.redis = yield start_redis(self, reactor)
        self.backend = FakeBackend(reactor)
        port, url = yield start_backend(reactor, self.backend)
        self.addCleanup(stop_backend, port, self.backend)
        self.backend_url = url

    @inlineCallbacks
    def instance(self, wait=True, **settings):
        """An instance in the cluster, once its link is up (unless not ``wait``)."""
        settings.setdefault("backend", "http")
        settings.setdefault("connecturi", self.backend_url + "/connect")
        settings.setdefault("messageuri", self.backend_url + "/message")
        settings.setdefault("disconnecturi", self.backend_url + "/disconnect")
        settings.setdefault("ping_interval", 0)
        settings.setdefault("cluster", self.redis.url(db=1))
        settings.setdefault("cluster_heartbeat", 0.2)
        relay = start_relay(self, reactor, **settings)
        if wait:
            yield node_of(relay).link.when_up()
        return relay

    @inlineCallbacks
    def client(self, relay, *tags):
        """A client of ``relay`` that the connect answer gives ``tags``; and its id."""
        self.backend.answer_next(
            "connect", Answer(200, json.dumps({"tags": list(tags)}).encode(), JSON)
        )
        before = len(self.backend.connects)
        client = yield connect_client(reactor, relay.ws_url())
        self.addCleanup(client.shutdown)
        connect = self.backend.connects[before]
        return client, connect["meta"]["connection_id"]

    def api(self, relay, method, path, body=None, content_type=b"text/plain; charset=utf-8"):
        headers = {b"Content-Type": content_type} if body is not None else None
        return self.backend.request(method, relay.base + path, body, headers)

    @inlineCallbacks
    def assert_nothing_more(self, client):
        """
        Nothing was sent to ``client`` before a ping round trip made now (the
        inbox is read directly: a waiting next_message would take the frame a
        later assertion expects).
        """
        yield client.ping()
        self.assertEqual(client._inbox, [])


class TagAcrossInstancesTests(ClusterTestCase):
    """Tag requests through one instance reach connections on every instance."""

    @inlineCallbacks
    def test_tag_send_through_another_instance(self):
        """A tag send through B reaches A's carrier, then both instances' carriers, once each."""
        a = yield self.instance()
        b = yield self.instance()
        on_a, _ = yield self.client(a, "did:key:alice")
        code, _, body = yield self.api(b, "POST", "/tags/did:key:alice/send", "hé".encode())
        self.assertEqual((code, json.loads(body)), (200, {"instances": 1}))
        self.assertEqual((yield on_a.next_message()), ("hé".encode(), False))

        on_b, _ = yield self.client(b, "did:key:alice")
        for sender in (a, b):
            code, _, body = yield self.api(
                sender, "POST", "/tags/did:key:alice/send", b"\x00\xff", b"application/octet-stream"
            )
            self.assertEqual((code, json.loads(body)), (200, {"instances": 2}))
            self.assertEqual((yield on_a.next_message()), (b"\x00\xff", True))
            self.assertEqual((yield on_b.next_message()), (b"\x00\xff", True))
        yield self.assert_nothing_more(on_a)
        yield self.assert_nothing_more(on_b)
        code, _, body = yield self.api(b, "GET", "/tags/did:key:alice")
        self.assertEqual((code, json.loads(body)), (200, {"instances": 2}))
        _, _, body = yield self.api(a, "GET", "/status")
        self.assertEqual(
            json.loads(body)["cluster"],
            {
                "link": "up",
                "instance": a.base,
                "owed": 1,
                "recovered": 0,
                "tags_subscribed": 1,
                "messages_dropped": 0,
            },
        )

    @inlineCallbacks
    def test_tag_added_by_callback_through_another_instance(self):
        """POST /socket/<id>/tags through B tags A's connection; a tag send through B then reaches it."""
        a = yield self.instance()
        b = yield self.instance()
        on_a, cid = yield self.client(a)
        code, _, body = yield self.api(
            b, "POST", f"/socket/{cid}/tags", b'{"add": ["tenant/7"]}', b"application/json"
        )
        self.assertEqual((code, json.loads(body)), (200, {"tags": ["tenant/7"]}))
        code, _, body = yield self.api(b, "POST", "/tags/tenant%2F7/send", b"hi")
        self.assertEqual((code, json.loads(body)), (200, {"instances": 1}))
        self.assertEqual((yield on_a.next_message()), (b"hi", False))
        code, _, body = yield self.api(
            b, "POST", f"/socket/{cid}/tags", b'{"add": [""]}', b"application/json"
        )
        self.assertEqual(code, 400)

    @inlineCallbacks
    def test_tag_close_through_another_instance(self):
        """A tag disconnect through B closes A's carriers with the code asked, initiator backend."""
        a = yield self.instance()
        b = yield self.instance()
        first, _ = yield self.client(a, "room")
        second, _ = yield self.client(a, "room")
        other, _ = yield self.client(a, "elsewhere")
        code, _, body = yield self.api(
            b,
            "POST",
            "/tags/room/disconnect",
            b'{"code": 4001, "reason": "bye"}',
            b"application/json",
        )
        self.assertEqual((code, json.loads(body)), (200, {"instances": 1}))
        for client in (first, second):
            _, code, _ = yield client.closed
            self.assertEqual(code, 4001)
        notices = yield self.backend.wait_for("disconnect", 2)
        self.assertEqual({n["meta"]["initiator"] for n in notices}, {"backend"})
        yield self.assert_nothing_more(other)

    @inlineCallbacks
    def test_nobody_carries_it(self):
        """A tag nobody carries on any instance: 404 for send, disconnect and GET."""
        a = yield self.instance()
        b = yield self.instance()
        yield self.client(a, "someone")
        for method, path, body in (
            ("POST", "/tags/nobody/send", b"x"),
            ("POST", "/tags/nobody/disconnect", b""),
            ("GET", "/tags/nobody", None),
        ):
            code, _, _ = yield self.api(b, method, path, body)
            self.assertEqual(code, 404, path)


class ConnectionAcrossInstancesTests(ClusterTestCase):
    """``/socket/<id>`` through an instance that does not hold ``<id>``."""

    @inlineCallbacks
    def test_send_read_and_close_through_another_instance(self):
        """B forwards send, GET and disconnect to A, which holds the connection; unknown ids are 404."""
        a = yield self.instance()
        b = yield self.instance()
        client, cid = yield self.client(a, "t")
        code, body = yield self.backend.post_send(f"{b.base}/socket/{cid}/send", b"via b")
        self.assertEqual((code, body), (200, b"OK"))
        self.assertEqual((yield client.next_message()), (b"via b", False))
        code, _, body = yield self.api(b, "GET", f"/socket/{cid}")
        self.assertEqual(code, 200)
        self.assertEqual(
            (json.loads(body)["connection_id"], json.loads(body)["tags"]), (cid, ["t"])
        )
        code, _ = yield self.backend.post_send(f"{b.base}/socket/{'0' * 32}/send", b"?")
        self.assertEqual(code, 404)
        code, _ = yield self.backend.post_json(f"{b.base}/socket/{cid}/disconnect", {"code": 4002})
        self.assertEqual(code, 200)
        _, code, _ = yield client.closed
        self.assertEqual(code, 4002)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual((notice["meta"]["initiator"], notice["meta"]["code"]), ("backend", 4002))
        code, _ = yield self.backend.post_send(f"{b.base}/socket/{cid}/send", b"gone")
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_send_through_another_instance_held_while_pending(self):
        """Sends by id and by tag through B, made while A's handshake waits for the backend, arrive once it opens."""
        a = yield self.instance()
        b = yield self.instance()
        self.backend.answer_next("connect", STALL)
        pending = connect_client(reactor, a.ws_url())
        (connect,) = yield self.backend.wait_for("connect", 1)
        cid = connect["meta"]["connection_id"]
        held = self.backend.post_send(f"{b.base}/socket/{cid}/send", b"first")
        code, _, body = yield self.api(
            b, "POST", f"/socket/{cid}/tags", b'{"add": ["early"]}', b"application/json"
        )
        self.assertEqual((code, json.loads(body)), (200, {"tags": ["early"]}))
        code, _, body = yield self.api(b, "POST", "/tags/early/send", b"second")
        self.assertEqual((code, json.loads(body)), (200, {"instances": 1}))
        self.assertNoResult(held)
        self.backend.release(self.backend.stalled[0], Answer(200, b'{"tags": ["late"]}', JSON))
        client = yield pending
        self.addCleanup(client.shutdown)
        self.assertEqual((yield held), (200, b"OK"))
        self.assertEqual((yield client.next_message()), (b"first", False))
        self.assertEqual((yield client.next_message()), (b"second", False))
        code, _, body = yield self.api(b, "POST", "/tags/late/send", b"third")
        self.assertEqual((code, json.loads(body)), (200, {"instances": 1}))
        self.assertEqual((yield client.next_message()), (b"third", False))


class RedisOutageTests(ClusterTestCase):
    """Redis stopped and started again while instances run."""

    @inlineCallbacks
    def test_outage_and_recovery(self):
        """Down: local sends work, cluster requests 503 + Retry-After, status and metric say so; back: all works."""
        a = yield self.instance()
        b = yield self.instance()
        client, cid = yield self.client(a, "room")
        yield Deferred.fromCoroutine(self.redis.stop())
        # Both links notice (the connections close), and answer for it.
        for relay in (a, b):
            yield node_of(relay).link.when_down()
        code, body = yield self.backend.post_send(f"{a.base}/socket/{cid}/send", b"local")
        self.assertEqual((code, body), (200, b"OK"))
        self.assertEqual((yield client.next_message()), (b"local", False))
        for path in ("/tags/room/send", f"/socket/{cid}/send"):
            code, headers, _ = yield self.api(b, "POST", path, b"x")
            self.assertEqual((code, headers.getRawHeaders(b"retry-after")), (503, [b"1"]), path)
        # A tag send through the holder itself is refused whole: no local
        # delivery that the backend's retry would then duplicate.
        code, _, _ = yield self.api(a, "POST", "/tags/room/send", b"not now")
        self.assertEqual(code, 503)
        yield self.assert_nothing_more(client)
        _, _, body = yield self.api(a, "GET", "/status")
        self.assertEqual(json.loads(body)["cluster"]["link"], "down")
        _, _, body = yield self.api(a, "GET", "/metrics")
        self.assertIn(b"\nsocketdock_cluster_up 0.0\n", body)

        yield Deferred.fromCoroutine(self.redis.restart())
        for relay in (a, b):
            yield node_of(relay).link.when_up()
        # Redis restarted empty: the records and subscriptions were restored.
        code, _, body = yield self.api(b, "POST", "/tags/room/send", b"again")
        self.assertEqual((code, json.loads(body)), (200, {"instances": 1}))
        self.assertEqual((yield client.next_message()), (b"again", False))
        code, _ = yield self.backend.post_send(f"{b.base}/socket/{cid}/send", b"via b")
        self.assertEqual(code, 200)
        self.assertEqual((yield client.next_message()), (b"via b", False))
        _, _, body = yield self.api(a, "GET", "/metrics")
        self.assertIn(b"\nsocketdock_cluster_up 1.0\n", body)

    @inlineCallbacks
    def test_redis_down_at_start(self):
        """Started while Redis is down: it serves its own clients, 503s tag requests, and links once Redis is up."""
        yield Deferred.fromCoroutine(self.redis.stop())
        a = yield self.instance(wait=False)
        client, cid = yield self.client(a, "room")
        code, body = yield self.backend.post_send(f"{a.base}/socket/{cid}/send", b"local")
        self.assertEqual((code, body), (200, b"OK"))
        self.assertEqual((yield client.next_message()), (b"local", False))
        code, headers, _ = yield self.api(a, "POST", "/tags/room/send", b"x")
        self.assertEqual((code, headers.getRawHeaders(b"retry-after")), (503, [b"1"]))
        yield Deferred.fromCoroutine(self.redis.restart())
        yield node_of(a).link.when_up()
        b = yield self.instance()
        code, _, body = yield self.api(b, "POST", "/tags/room/send", b"linked")
        self.assertEqual((code, json.loads(body)), (200, {"instances": 1}))
        self.assertEqual((yield client.next_message()), (b"linked", False))


class HostileRedisTests(ClusterTestCase):
    """What whoever can write to the cluster's Redis can make an instance do."""

    @inlineCallbacks
    def test_holder_naming_an_alias_of_itself_is_asked_once(self):
        """A holder entry naming another URL of A: A forwards to itself once, which answers 404; no loop."""
        a = yield self.instance()
        cid = "f" * 32
        alias = a.base.replace("127.0.0.1", "localhost")
        link = node_of(a).link
        yield link.command("HSET", b"socketdock:1:where", cid, alias)
        yield link.command("SET", f"socketdock:1:alive:{alias}".encode(), b"x", "PX", 60000)
        forwarded = []
        from socketdock.cluster.forward import Forwarder

        original = Forwarder._request

        def counting(forwarder, holder, *args):
            forwarded.append(holder)
            return original(forwarder, holder, *args)

        self.patch(Forwarder, "_request", counting)
        for method, path, body in (
            ("GET", f"/socket/{cid}", None),
            ("POST", f"/socket/{cid}/send", b"x"),
            ("POST", f"/socket/{cid}/tags", b'{"add": ["t"]}'),
        ):
            del forwarded[:]
            code, _, _ = yield self.api(a, method, path, body, b"application/json")
            self.assertEqual((code, forwarded), (404, [alias]), path)

    @inlineCallbacks
    def test_junk_on_a_tag_channel_is_counted_and_dropped(self):
        """Junk published on a tag channel: counted in /metrics, one log line, no traceback; real requests still work."""
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        a = yield self.instance()
        b = yield self.instance()
        client, _ = yield self.client(a, "room")
        code, _, _ = yield self.api(b, "POST", "/tags/room/send", b"first")
        self.assertEqual(code, 200)
        self.assertEqual((yield client.next_message()), (b"first", False))
        channel = b"socketdock:1:tag:room"
        junk = [
            b"not json",
            b"\xff\xfe",
            b"[1, 2]",
            b'{"op": "send"}',
            b'{"op": "close", "code": 5000, "reason": "x"}',
            b'{"op": "close", "code": 1000}',
            b'{"op": "explode"}',
            b"[" * 100000,
        ]
        for data in junk:
            yield node_of(b).link.command("PUBLISH", channel, data)
        # Messages on one channel arrive in order: once this one is
        # delivered, the junk before it was handled.
        code, _, _ = yield self.api(b, "POST", "/tags/room/send", b"after")
        self.assertEqual(code, 200)
        self.assertEqual((yield client.next_message()), (b"after", False))
        _, _, body = yield self.api(a, "GET", "/metrics")
        self.assertIn(b"\nsocketdock_cluster_messages_dropped_total 8.0\n", body)
        dropped = [e for e in events if "not a tag request" in e.get("log_format", "")]
        self.assertEqual(len(dropped), 1)
        self.assertEqual([e for e in events if "log_failure" in e], [])


class DeclaredLostTests(ClusterTestCase):
    """An instance cut off from Redis long enough to be declared lost, that comes back."""

    @inlineCallbacks
    def test_connections_claimed_while_cut_off_are_closed(self):
        """Back after a survivor claimed its connections: it closes them with 1001 (initiator server)."""
        from socketdock.config.cluster import parse_cluster_url
        from tests.cluster.test_roster import Node

        # A beats too rarely to get in the way; the survivor's beat is the test's.
        a = yield self.instance(cluster_heartbeat=60)
        client, cid = yield self.client(a)
        code, _, _ = yield self.api(a, "GET", "/tags/barrier")  # A's records are in Redis
        self.assertEqual(code, 404)
        survivor = Node(self, parse_cluster_url(self.redis.url(db=1)), "http://survivor")
        yield survivor.node.link.when_up()
        # A's heartbeat lapses (as if A had been cut off), and the survivor claims.
        yield survivor.node.link.command("DEL", f"socketdock:1:alive:{a.base}".encode())
        yield survivor.roster.beat()
        self.assertEqual(survivor.recovered, [[cid]])
        # A's link drops and comes back: it learns it was declared lost.
        down = node_of(a).link.when_down()
        killed = survivor.node.link.command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        # The kill drops the survivor's other connections too: when its link
        # notices that before the reply arrives, the reply fails Unreachable.
        killed.addErrback(lambda f: f.trap(Unreachable))
        yield killed
        yield down
        _, code, _ = yield client.closed
        self.assertEqual(code, 1001)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual((notice["connection_id"], notice["meta"]["initiator"]), (cid, "server"))
