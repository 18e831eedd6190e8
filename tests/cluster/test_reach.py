"""
ClusterReach without Redis: instance A's reach over a fake link, with
instance B a subscriber on the same fake Redis and a holder's callback API
answering when the test says.
"""

from __future__ import annotations

import base64
import json

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.cluster.forward import Forwarder
from socketdock.cluster.reach import ClusterEvents, ClusterReach
from socketdock.cluster.roster import Roster
from socketdock.cluster.scripts import Names
from socketdock.cluster.subscriptions import Subscriptions
from socketdock.relay.reach import Reached, Unreachable
from socketdock.relay.registry import NotLive, Registry
from tests.cluster.fakes import FakeLink, FakeRedis
from tests.cluster.test_forward import Holder
from tests.relay.test_tags import FakeConnection

NAMES = Names.for_db(0)
A, B, C = "http://a.example:1", "http://b.example:1", "http://c.example:1"
HERE, THERE = "a" * 32, "b" * 32


class ClusterReachTests(SynchronousTestCase):
    """Requests made through instance A."""

    def setUp(self) -> None:
        self.redis = FakeRedis()
        self.redis.alive.update({A, B})
        self.link = FakeLink(self.redis)
        self.subscriptions = Subscriptions(self.link, NAMES)
        self.roster = Roster(self.link, NAMES, lambda: A, 1.0, lambda ids, details: None)
        self.holder = Holder()
        self.http = StubTreq(self.holder)
        self.clock = Clock()
        forwarder = Forwarder(self.http, self.clock, None, timeout=10.0)
        self.registry = Registry(ClusterEvents(self.roster, self.subscriptions))
        self.reach = ClusterReach(
            self.registry, self.link, NAMES, self.roster, self.subscriptions, forwarder
        )
        self.link.on_message = self.reach.message
        self.here = FakeConnection(HERE)
        self.registry.add(self.here)
        self.registry.retag(HERE, ["room"], [])
        # B holds THERE, with the tag: it listens on the tag's channel.
        self.redis.where[THERE] = B
        self.other = FakeLink(self.redis)
        self.heard: list[bytes] = []
        self.other.on_message = lambda channel, data: self.heard.append(data)
        self.other.subscribe(NAMES.tag_channel("room"))

    # -- a tag ------------------------------------------------------------------

    def test_tag_send_reaches_each_connection_once(self) -> None:
        """A's own message comes back from Redis and is skipped: delivered once here."""
        reached = self.successResultOf(self.reach.send_to_tag("room", b"hi", False))
        self.assertEqual(reached, Reached(instances=2))
        self.assertEqual(self.here.delivered, [(b"hi", False)])
        self.assertEqual(len(self.heard), 1)

    def test_link_down_mid_tag_send(self) -> None:
        """The PUBLISH is lost: 503, and nothing delivered here either."""
        self.link.holding = True
        d = self.reach.send_to_tag("room", b"hi", False)
        self.assertEqual(self.link.names(), ["PUBLISH"])
        self.link.go_down()
        self.failureResultOf(d, Unreachable)
        self.assertEqual(self.here.delivered, [])

    def test_tag_close_with_the_link_down(self) -> None:
        self.link.go_down()
        self.failureResultOf(self.reach.close_tag("room", 1000, ""), Unreachable)
        self.assertEqual(self.here.closed, [])
        self.assertEqual(self.redis.published, [])

    def test_tag_send_from_another_instance(self) -> None:
        channel = NAMES.tag_channel("room")
        message = b'{"op":"send","from":"%s","binary":true}\nhi' % B.encode()
        self.assertEqual(self.redis.run(self.other, "PUBLISH", (channel, message)), 2)
        self.assertEqual(self.here.delivered, [(b"hi", True)])

    def test_junk_on_a_tag_channel_is_counted(self) -> None:
        channel = NAMES.tag_channel("room")
        self.redis.run(self.other, "PUBLISH", (channel, b'{"op":"close","code":1}\n'))
        self.assertEqual(self.reach.dropped, 1)
        self.assertEqual(self.here.closed, [])
        self.flushLoggedErrors()

    def test_count_with_the_link_down_mid_request(self) -> None:
        self.link.holding = True
        d = self.reach.count_tag("room")
        self.link.go_down()
        self.failureResultOf(d, Unreachable)

    def test_count(self) -> None:
        self.assertEqual(self.successResultOf(self.reach.count_tag("room")), Reached(instances=2))

    def test_confirm_to_tag_link_down_while_listing_instances(self) -> None:
        self.link.holding = True
        d = self.reach.confirm_to_tag("room", b"hi", False, 1.0)
        self.assertEqual(self.link.names(), ["INSTANCES"])
        self.link.go_down()
        self.failureResultOf(d, Unreachable)
        self.assertEqual(self.holder.requests, [])

    def test_listing_resumes_after_its_instance_went(self) -> None:
        """The cursor names B, gone between two pages: the walk goes on at C."""
        self.redis.alive = {A, C}
        cursor = base64.urlsafe_b64encode(json.dumps([B, "x"]).encode()).decode()
        d = self.reach.list_tag("room", cursor, 10)
        self.http.flush()
        request = self.holder.requests[0]
        self.assertEqual(request.uri, b"/tags/room/connections?limit=10")
        self.holder.answer(200, b'{"connections": [{"id": "c"}], "cursor": null}')
        self.http.flush()
        self.assertEqual(self.successResultOf(d), {"connections": [{"id": "c"}], "cursor": None})

    # -- one connection ---------------------------------------------------------

    def test_held_elsewhere_is_forwarded(self) -> None:
        d = self.reach.send_to_connection(THERE, b"hi", False)
        self.http.flush()
        self.assertEqual(self.holder.requests[0].uri, f"/socket/{THERE}/send".encode())
        self.holder.answer(200)
        self.http.flush()
        self.assertIsNone(self.successResultOf(d))

    def test_link_down_while_locating(self) -> None:
        self.link.holding = True
        d = self.reach.send_to_connection(THERE, b"hi", False)
        self.assertEqual(self.link.names(), ["LOCATE"])
        self.link.go_down()
        self.failureResultOf(d, Unreachable)
        self.assertEqual(self.holder.requests, [])

    def test_holder_stopped_beating(self) -> None:
        """Its record is still there but its heartbeat lapsed: 404, nobody asked."""
        self.redis.alive.discard(B)
        self.failureResultOf(self.reach.describe_connection(THERE), NotLive)
        self.assertEqual(self.holder.requests, [])

    def test_holder_restarted_between_locate_and_forward(self) -> None:
        """B restarted after Redis named it: its answer, 404, is the answer."""
        d = self.reach.close_connection(THERE, 1000, "bye")
        self.http.flush()
        self.holder.answer(404, b"no such connection")
        self.http.flush()
        self.failureResultOf(d, NotLive)

    def test_forwarded_here_is_never_forwarded_on(self) -> None:
        self.link.holding = True
        d = self.reach.here_only().set_state(THERE, "{}")
        self.failureResultOf(d, NotLive)
        self.assertEqual(self.link.pending, [])

    def test_held_here_needs_no_redis(self) -> None:
        self.link.go_down()
        self.assertIsNone(self.successResultOf(self.reach.send_to_connection(HERE, b"x", True)))
        self.assertEqual(self.here.delivered, [(b"x", True)])

    def test_tag_added_waits_for_the_subscription(self) -> None:
        self.link.holding = True
        d = self.reach.change_tags(HERE, ["new"], [])
        self.assertEqual(self.link.names(), ["SUBSCRIBE"])
        self.assertNoResult(d)
        self.assertEqual(self.here.tags, ("room",))
        self.link.answer()
        self.assertEqual(self.successResultOf(d), ("room", "new"))
        self.assertTrue(self.subscriptions.confirmed("new"))

    def test_tag_added_while_the_link_goes(self) -> None:
        """The change goes ahead; the next link's restore subscribes it."""
        self.link.holding = True
        d = self.reach.change_tags(HERE, ["new"], [])
        self.link.go_down()
        self.assertEqual(self.successResultOf(d), ("room", "new"))
        self.assertFalse(self.subscriptions.confirmed("new"))
        self.link.reconnect()
        self.link.holding = False
        self.successResultOf(self.subscriptions.restore())
        self.assertTrue(self.subscriptions.confirmed("new"))
        self.assertEqual(self.redis.subscribers(NAMES.tag_channel("new")), 1)
