"""GET /connections and GET /tags/<tag>/connections over loopback (SPEC §9)."""

import json

from twisted.internet.defer import inlineCallbacks

from tests.test_confirm_end_to_end import ConfirmTestCase


class ListingTests(ConfirmTestCase):
    def get(self, path):
        d = self.backend.request("GET", self.relay.base + path)
        return d.addCallback(lambda r: (r[0], json.loads(r[2]) if r[0] == 200 else r[2]))

    @inlineCallbacks
    def test_pages_and_fields(self):
        """Entries carry id, connected_at, remote (as GET /socket/<id>), tags and instance; the cursor walks them."""
        ids = []
        for tags in (("t",), (), ("t", "u")):
            _, cid = yield self.connected(*tags)
            ids.append(cid)
        code, first = yield self.get("/connections?limit=2")
        self.assertEqual(code, 200)
        self.assertEqual([e["connection_id"] for e in first["connections"]], ids[:2])
        self.assertIsNotNone(first["cursor"])
        code, rest = yield self.get(f"/connections?limit=2&cursor={first['cursor']}")
        self.assertEqual([e["connection_id"] for e in rest["connections"]], ids[2:])
        self.assertIsNone(rest["cursor"])
        entry = rest["connections"][0]
        _, described = yield self.get(f"/socket/{ids[2]}")
        self.assertEqual(
            entry,
            {
                "connection_id": ids[2],
                "connected_at": described["connected_at"],
                "remote": described["remote"],
                "tags": ["t", "u"],
                "instance": self.relay.base,
            },
        )
        code, tagged = yield self.get("/tags/t/connections")
        self.assertEqual([e["connection_id"] for e in tagged["connections"]], [ids[0], ids[2]])
        self.assertIsNone(tagged["cursor"])
        code, nobody = yield self.get("/tags/nobody/connections")
        self.assertEqual((code, nobody), (200, {"connections": [], "cursor": None}))

    @inlineCallbacks
    def test_bad_limit_and_cursor(self):
        """limit outside 1-1000, a cursor not given by the API, or a repeated one get 400."""
        yield self.connected()
        for query in (
            "limit=0",
            "limit=1001",
            "limit=x",
            "cursor=abc",
            "cursor=-1",
            "limit=1&limit=2",
        ):
            code, body = yield self.get(f"/connections?{query}")
            self.assertEqual(code, 400, (query, body))
        code, _ = yield self.get("/connections?limit=1000")
        self.assertEqual(code, 200)
