"""
The transport itself, over real loopback HTTP, with a stub ACA-Py session and
a stub SocketDock callback API.  Needs acapy_agent (Python 3.13 for ACA-Py
1.7): ``python -m unittest socketdock_acapy.test.test_transport``; skipped,
saying so, where it is not importable.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import unittest
from unittest import mock

try:
    import acapy_agent  # noqa: F401
    from aiohttp import ClientSession, web

    from socketdock_acapy.transport import SocketDockInboundTransport
    from socketdock_acapy.wire import sign

    _MISSING = None
except ImportError as e:  # pragma: no cover - depends on the environment
    _MISSING = f"acapy_agent is not importable here ({e}); run with ACA-Py's Python"

__all__ = ["TransportTests"]


class Outbound:
    """What the transport reads of ACA-Py's OutboundMessage."""

    def __init__(self, key, enc_payload=b"packed"):
        self.reply_to_verkey = key
        self.target = None
        self.enc_payload = enc_payload


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StubSession:
    """What the transport uses of ACA-Py's InboundSession."""

    def __init__(self) -> None:
        self.received: list = []
        self.response_buffer = None
        self.reply_verkeys: set = set()
        self.closed = False
        self.closed_with = None
        self.cleared = 0
        self.fail_next = False
        self.profile = None
        self._event = asyncio.Event()

    async def receive(self, payload):
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("storage hiccup")
        self.received.append(payload)

    async def wait_response(self):
        while True:
            if self.closed:
                return None
            if self.response_buffer is not None:  # packed, as ACA-Py's does
                return getattr(self.response_buffer, "enc_payload", self.response_buffer)
            self._event.clear()
            await self._event.wait()

    def set_response(self, payload) -> None:
        self.response_buffer = payload
        self._event.set()

    def clear_response(self) -> None:
        self.response_buffer = None
        self.cleared += 1
        self._event.set()

    def close(self) -> None:
        self.closed = True
        self.closed_with = self.response_buffer  # what ACA-Py would requeue
        self._event.set()


@unittest.skipIf(_MISSING, _MISSING or "")
class TransportTests(unittest.IsolatedAsyncioTestCase):
    secret = "unit-secret"
    token = "unit-token"

    async def asyncSetUp(self):
        self.sessions: list[StubSession] = []
        self.sends: list[tuple[str, dict, bytes]] = []
        self.send_status = 200
        self.send_event = asyncio.Event()
        #: When set, the stub SocketDock holds each send until this fires.
        self.hold_sends: asyncio.Event | None = None

        async def create_session(**kwargs):
            session = StubSession()
            self.sessions.append(session)
            return session

        # The stub SocketDock callback API.
        async def send(request):
            self.sends.append((request.match_info["id"], dict(request.headers), await request.read()))
            self.send_event.set()
            if self.hold_sends is not None:
                await self.hold_sends.wait()
            return web.Response(status=self.send_status, text="x")

        #: (connection id, headers, JSON body) of each POST /socket/<id>/tags
        self.tagged: list = []
        self.tag_event = asyncio.Event()
        #: (tag, body) of each POST /tags/<tag>/send, and the status answered
        self.tag_sends: list = []
        self.tag_send_status = 200

        async def tags(request):
            self.tagged.append(
                (request.match_info["id"], dict(request.headers), json.loads(await request.read()))
            )
            self.tag_event.set()
            return web.json_response({"tags": []})

        async def tag_send(request):
            self.tag_sends.append((request.match_info["tag"], await request.read()))
            status = self.tag_send_status
            return web.json_response({"connections": 1} if status == 200 else {}, status=status)

        app = web.Application()
        app.add_routes(
            [
                web.post("/socket/{id}/send", send),
                web.post("/socket/{id}/tags", tags),
                web.post("/tags/{tag}/send", tag_send),
            ]
        )
        self.sd_runner = web.AppRunner(app)
        await self.sd_runner.setup()
        sd_port = _free_port()
        await web.TCPSite(self.sd_runner, "127.0.0.1", sd_port).start()
        self.sd = f"http://127.0.0.1:{sd_port}"

        # An attacker's listener: replies and the API token must never reach it.
        async def stolen(request):
            self.stolen.append((dict(request.headers), await request.read()))
            return web.Response(status=200)

        self.stolen: list = []
        evil = web.Application()
        evil.add_routes([web.post("/{tail:.*}", stolen)])
        self.evil_runner = web.AppRunner(evil)
        await self.evil_runner.setup()
        evil_port = _free_port()
        await web.TCPSite(self.evil_runner, "127.0.0.1", evil_port).start()
        self.evil = f"http://127.0.0.1:{evil_port}"

        env = {
            "SOCKETDOCK_SIGNING_SECRET": self.secret,
            "SOCKETDOCK_API_TOKEN": self.token,
            # The first instance is down (a closed loopback port): sends by
            # key go on to the next.
            "SOCKETDOCK_TRUSTED_URLS": f"http://127.0.0.1:{_free_port()}, {self.sd}/",
        }
        with mock.patch.dict(os.environ, env):
            self.port = _free_port()
            self.transport = SocketDockInboundTransport("127.0.0.1", self.port, create_session)
        await self.transport.start()
        self.client = ClientSession()

    async def asyncTearDown(self):
        await self.client.close()
        await self.transport.stop()
        await self.sd_runner.cleanup()
        await self.evil_runner.cleanup()

    async def post(self, path, doc, signed=True, v2=True):
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json"}
        if signed:
            headers["X-SocketDock-Signature"] = (
                sign(self.secret, body, method="POST", target=path) if v2 else sign(self.secret, body)
            )
        return await self.post_raw(path, body, headers)

    async def post_raw(self, path, body, headers):
        async with self.client.post(f"http://127.0.0.1:{self.port}{path}", data=body, headers=headers) as r:
            return r.status, await r.text()

    def meta(self, cid="c1", **extra):
        return {"connection_id": cid, "send": f"{self.sd}/socket/{cid}/send",
                "disconnect": f"{self.sd}/socket/{cid}/disconnect", **extra}

    async def test_message_taken_and_answered(self):
        status, text = await self.post("/message", {"meta": self.meta(seq=1), "message": "{\"a\": 1}"})
        self.assertEqual((status, text), (200, ""))
        self.assertEqual(len(self.sessions), 1)
        self.assertEqual(self.sessions[0].received, ['{"a": 1}'])

    async def test_retry_with_same_seq_is_dropped(self):
        for _ in range(3):
            status, text = await self.post("/message", {"meta": self.meta(seq=1), "message": "m1"})
            self.assertEqual(status, 200)
        await self.post("/message", {"meta": self.meta(seq=2), "message": "m2"})
        self.assertEqual(self.sessions[0].received, ["m1", "m2"])
        self.assertEqual(text, "")  # empty, duplicate or not: safe with inline_reply

    async def test_failure_lets_the_retry_in(self):
        await self.post("/connect", {"meta": self.meta()})
        self.sessions[0].fail_next = True
        status, _ = await self.post("/message", {"meta": self.meta(seq=1), "message": "m1"})
        self.assertEqual(status, 503)
        status, _ = await self.post("/message", {"meta": self.meta(seq=1), "message": "m1"})
        self.assertEqual(status, 200)
        self.assertEqual(self.sessions[0].received, ["m1"])

    async def test_unsigned_or_stale_refused(self):
        status, _ = await self.post("/message", {"meta": self.meta(seq=1), "message": "m"}, signed=False)
        self.assertEqual(status, 401)
        body = json.dumps({"meta": self.meta(seq=1), "message": "m"}).encode()
        stale = sign(self.secret, body, now=1_000_000)
        async with self.client.post(f"http://127.0.0.1:{self.port}/message", data=body,
                                    headers={"X-SocketDock-Signature": stale}) as r:
            self.assertEqual(r.status, 401)
        self.assertEqual(self.sessions, [])

    async def test_binary_base64_message(self):
        await self.post("/message", {"meta": self.meta(seq=1, binary=True, encoding="base64"),
                                     "message": "/wCA"})
        self.assertEqual(self.sessions[0].received, [b"\xff\x00\x80"])

    async def test_reply_goes_to_send_url_with_token(self):
        await self.post("/connect", {"meta": self.meta()})
        session = self.sessions[0]
        session.set_response(b'{"protected": "x"}')
        await asyncio.wait_for(self.send_event.wait(), 10)
        cid, headers, body = self.sends[0]
        self.assertEqual((cid, body), ("c1", b'{"protected": "x"}'))
        self.assertEqual(headers["Authorization"], f"Bearer {self.token}")
        self.assertEqual(headers["Content-Type"], "application/didcomm-envelope-enc")
        for _ in range(100):  # the sender clears the buffer right after the 200
            if session.cleared:
                break
            await asyncio.sleep(0.01)
        self.assertEqual(session.cleared, 1)
        self.assertFalse(session.closed)

    async def test_reply_to_gone_connection_goes_back_to_acapy(self):
        """A reply SocketDock answers 404 for is handed back to ACA-Py, not dropped."""
        returned = []
        sessions = self.sessions

        class Manager:
            async def create_session(self, **kwargs):
                session = StubSession()
                sessions.append(session)
                return session

            def return_inbound(self, profile, outbound):
                returned.append(outbound)

        self.transport._create_session = Manager().create_session
        self.send_status = 404
        await self.post("/connect", {"meta": self.meta()})
        session = self.sessions[0]
        session.set_response("reply")
        await asyncio.wait_for(self.send_event.wait(), 10)
        for _ in range(100):
            if session.closed:
                break
            await asyncio.sleep(0.01)
        self.assertTrue(session.closed)
        self.assertEqual(returned, ["reply"])  # handed back, not dropped
        self.assertEqual(self.transport.connections, {})

    async def test_buffer_is_free_while_a_reply_is_posted(self):
        """
        While one reply is being POSTed, ACA-Py's one-message buffer is free,
        so a reply routed meanwhile is taken by the session (not queued for
        pickup) and follows the first, in order.
        """
        self.hold_sends = asyncio.Event()
        await self.post("/connect", {"meta": self.meta()})
        session = self.sessions[0]
        session.set_response(b"first")
        await asyncio.wait_for(self.send_event.wait(), 10)
        self.assertIsNone(session.response_buffer)  # free while the POST is held
        session.set_response(b"second")
        self.hold_sends.set()
        for _ in range(500):
            if len(self.sends) == 2:
                break
            await asyncio.sleep(0.01)
        held = [body for _, _, body in self.sends]
        self.assertEqual(held, [b"first", b"second"])

    async def test_disconnect_closes_the_session(self):
        await self.post("/message", {"meta": self.meta(seq=1), "message": "m"})
        status, _ = await self.post("/disconnect", {"connection_id": "c1", "meta": {
            "connection_id": "c1", "code": 1000, "reason": "", "initiator": "client"}})
        self.assertEqual(status, 200)
        self.assertTrue(self.sessions[0].closed)
        self.assertEqual(self.transport.connections, {})
        # Unknown ids are fine (a notice after a restart, or a retry).
        status, _ = await self.post("/disconnect", {"connection_id": "zz", "meta": {
            "connection_id": "zz", "code": None, "initiator": "client", "recovered": True}})
        self.assertEqual(status, 200)

    def manager(self, queued=None):
        """A stub of ACA-Py's InboundTransportManager as the transport uses it."""
        sessions, offered = self.sessions, []

        class Queue:
            def __init__(self):
                self.removed = []

            def remove_message_for_key(self, key, msg):
                self.removed.append((key, msg))

        class Manager:
            undelivered_queue = Queue()

            async def create_session(self, **kwargs):
                session = StubSession()
                sessions.append(session)
                return session

            def process_undelivered(self, session):
                offered.append(session)

        manager = Manager()
        self.transport._create_session = manager.create_session
        return manager, offered

    async def message_from(self, cid, key, seq=1):
        """A message on connection ``cid`` whose session then replies to ``key``."""
        await self.post("/connect", {"meta": self.meta(cid)})
        session = self.transport.connections[cid].session
        session.reply_verkeys = {key}
        await self.post("/message", {"meta": self.meta(cid, seq=seq), "message": "m"})
        return session

    @staticmethod
    def queued_event(outbound):
        class Event:
            topic = "acapy::outbound-message::waiting_for_pickup"
            payload = outbound

        return Event()

    async def test_queued_for_pickup_is_offered_to_the_session_holding_its_key(self):
        """
        When ACA-Py queues a message for pickup (the session's buffer was busy
        when it was routed), the session holding its key, found by one lookup,
        is offered the queue at once if idle; no other session is.
        """
        _, offered = self.manager()
        idle = await self.message_from("idle", "K-idle")
        busy = await self.message_from("busy", "K-busy")
        for n in range(20):  # others, never offered
            await self.message_from(f"other{n}", f"K-other{n}")
        busy.response_buffer = "being posted"
        await self.transport._outbound_status(None, self.queued_event(Outbound("K-idle")))
        await self.transport._outbound_status(None, self.queued_event(Outbound("K-busy")))
        self.assertEqual(offered, [idle])
        self.assertEqual(self.tag_sends, [])  # held here: not sent by key

    async def test_a_message_its_holder_would_not_take_goes_by_tag(self):
        """
        The session holding the key takes no such message now (its client's
        last message asked for no return route): the message goes by tag, to
        the wallet's socket all the same, and off the queue.
        """
        manager, offered = self.manager()
        session = await self.message_from("c1", "K1")
        session.select_outbound = lambda outbound: False
        outbound = Outbound("K1", b"grant")
        await self.transport._outbound_status(None, self.queued_event(outbound))
        self.assertEqual(self.tag_sends, [("K1", b"grant")])
        self.assertEqual(manager.undelivered_queue.removed, [("K1", outbound)])
        self.assertEqual(offered, [])

    async def test_connections_are_tagged_with_their_reply_keys(self):
        """Each key a session learns is added, once, to its SocketDock connection's tags."""
        self.manager()
        session = await self.message_from("c1", "K1")
        await asyncio.wait_for(self.tag_event.wait(), 10)
        self.tag_event.clear()
        session.reply_verkeys = {"K1", "K2"}
        await self.post("/message", {"meta": self.meta("c1", seq=2), "message": "m2"})
        await asyncio.wait_for(self.tag_event.wait(), 10)
        await self.post("/message", {"meta": self.meta("c1", seq=3), "message": "m3"})
        self.assertEqual([(cid, body) for cid, _, body in self.tagged],
                         [("c1", {"add": ["K1"]}), ("c1", {"add": ["K2"]})])
        self.assertEqual(self.tagged[0][1]["Authorization"], f"Bearer {self.token}")
        self.assertIs(self.transport.by_key["K2"], self.transport.connections["c1"])
        await self.post("/disconnect", {"connection_id": "c1", "meta": {
            "connection_id": "c1", "code": 1000, "reason": "", "initiator": "client"}})
        self.assertEqual(self.transport.by_key, {})

    async def test_a_key_held_nowhere_here_is_sent_by_tag(self):
        """
        A message queued for a key no session here holds goes to ``POST
        /tags/<key>/send`` (past an instance that is down), and off the queue on 200.
        """
        manager, offered = self.manager()
        outbound = Outbound("K/9", enc_payload=b'{"protected": "fwd"}')
        await self.transport._outbound_status(None, self.queued_event(outbound))
        self.assertEqual(self.tag_sends, [("K/9", b'{"protected": "fwd"}')])
        self.assertEqual(manager.undelivered_queue.removed, [("K/9", outbound)])
        self.assertEqual(offered, [])

    async def test_a_key_nobody_holds_stays_queued(self):
        """404 from SocketDock: nobody holds the key; the message stays queued for pickup."""
        manager, _ = self.manager()
        self.tag_send_status = 404
        await self.transport._outbound_status(None, self.queued_event(Outbound("K9", b"x")))
        self.assertEqual(len(self.tag_sends), 1)
        self.assertEqual(manager.undelivered_queue.removed, [])

    async def test_gone_connection_tries_the_key_before_the_queue(self):
        """A reply whose connection is gone (404) goes by key when another connection holds it."""
        returned = []
        manager, _ = self.manager()
        manager.return_inbound = lambda profile, outbound: returned.append(outbound)
        self.send_status = 404
        session = await self.message_from("c1", "K1")
        session.set_response(Outbound("K1", b"reply"))
        for _ in range(200):
            if session.closed:
                break
            await asyncio.sleep(0.01)
        self.assertTrue(session.closed)
        self.assertEqual(self.tag_sends, [("K1", b"reply")])
        self.assertEqual(returned, [])

    async def test_plugin_config_wins_over_the_environment(self):
        """``-o socketdock.key=value`` (ACA-Py's plugin_config setting) wins over SOCKETDOCK_*."""

        class Profile:
            settings = {"plugin_config": {"socketdock": {
                "trusted_urls": [self.sd], "api_token": "from-plugin-config", "send_timeout": 3}}}

        with mock.patch.dict(os.environ, {"SOCKETDOCK_TRUSTED_URLS": "", "SOCKETDOCK_API_TOKEN": "env"}):
            transport = SocketDockInboundTransport("127.0.0.1", _free_port(), None,
                                                   root_profile=Profile())
            await transport.start()
        try:
            self.assertEqual(transport.trusted_urls, (self.sd,))
            self.assertEqual(transport.api_token, "from-plugin-config")
            self.assertEqual(transport.send_timeout, 3.0)
        finally:
            await transport.stop()

    async def test_replies_go_only_to_trusted_instances(self):
        """A send URL outside SOCKETDOCK_TRUSTED_URLS is refused, and cannot replace a trusted one."""
        for send in [
            f"{self.evil}/socket/c1/send",
            f"{self.sd}/socket/c2/send",  # another connection's
            f"{self.sd}/socket/c1/send?x=1",
            f"{self.sd}/socket/c1/../../x/send",
            f"{self.sd.replace('http:', 'https:')}/socket/c1/send",
            f"http://user@{self.sd[7:]}/socket/c1/send",
        ]:
            meta = dict(self.meta(), send=send)
            status, text = await self.post("/connect", {"meta": meta})
            self.assertEqual(status, 400, send)
            self.assertEqual(text.count("\n"), 1)
        self.assertEqual(self.sessions, [])
        await self.post("/connect", {"meta": self.meta()})
        meta = dict(self.meta(seq=1), send=f"{self.evil}/socket/c1/send")
        status, _ = await self.post("/message", {"meta": meta, "message": "m"})
        self.assertEqual(status, 400)
        self.sessions[0].set_response("reply")
        await asyncio.wait_for(self.send_event.wait(), 10)
        self.assertEqual(self.stolen, [])
        self.assertEqual(self.sends[0][0], "c1")

    async def test_untrusted_without_a_list_refuses_to_start(self):
        """Without SOCKETDOCK_TRUSTED_URLS (or with a bad one) the transport does not start."""
        from acapy_agent.transport.inbound.base import InboundTransportSetupError

        for value in ["", "ftp://x", "http://a b"]:
            with mock.patch.dict(os.environ, {"SOCKETDOCK_TRUSTED_URLS": value}):
                transport = SocketDockInboundTransport("127.0.0.1", _free_port(), None)
            with self.assertRaises(InboundTransportSetupError) as caught:
                await transport.start()
            self.assertIn("SOCKETDOCK_TRUSTED_URLS", str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))

    async def test_body_must_fit_its_route(self):
        """A message body sent to /disconnect closes nothing; a notice sent to /message is refused."""
        await self.post("/message", {"meta": self.meta(seq=1), "message": "m"})
        message = {"meta": self.meta(seq=2), "message": "m2"}
        self.assertEqual((await self.post("/disconnect", message))[0], 400)
        self.assertFalse(self.sessions[0].closed)
        disconnect = {"connection_id": "c1", "meta": {"connection_id": "c1", "code": 1000,
                                                       "reason": "", "initiator": "client"}}
        self.assertEqual((await self.post("/message", disconnect))[0], 400)
        self.assertEqual((await self.post("/connect", message))[0], 400)
        self.assertEqual(self.sessions[0].received, ["m"])

    async def test_replayed_signature_refused(self):
        """
        A captured signed POST replayed to another route fails v2; replayed
        to its own route or, v2 stripped, to any route, it was taken already:
        answered 200, nothing done.
        """
        body = json.dumps({"meta": self.meta(seq=1), "message": "m"}).encode()
        header = sign(self.secret, body, method="POST", target="/message")
        headers = {"X-SocketDock-Signature": header}
        self.assertEqual((await self.post_raw("/message", body, headers))[0], 200)
        # The same bytes to /disconnect: v2 names /message.
        status, text = await self.post_raw("/disconnect", body, headers)
        self.assertEqual((status, text), (401, "X-SocketDock-Signature does not match\n"))
        # Again, whole or with v2 stripped: already taken.
        v1_only = header.rsplit(",v2=", 1)[0]
        for path, replay in [("/message", header), ("/message", v1_only), ("/disconnect", v1_only)]:
            status, text = await self.post_raw(path, body, {"X-SocketDock-Signature": replay})
            self.assertEqual((status, text), (200, ""), (path, replay))
        self.assertEqual(self.sessions[0].received, ["m"])
        self.assertFalse(self.sessions[0].closed)

    async def test_a_retry_after_a_refusal_gets_in(self):
        """A POST that was not taken (503) does not use its signature up."""
        await self.post("/connect", {"meta": self.meta()})
        self.sessions[0].fail_next = True
        body = json.dumps({"meta": self.meta(seq=1), "message": "m"}).encode()
        headers = {"X-SocketDock-Signature": sign(self.secret, body, method="POST", target="/message")}
        self.assertEqual((await self.post_raw("/message", body, headers))[0], 503)
        self.assertEqual((await self.post_raw("/message", body, headers))[0], 200)
        self.assertEqual(self.sessions[0].received, ["m"])

    async def test_hostile_timestamps(self):
        """Thousands of digits, non-ASCII digits or MACs: 401, never a 500."""
        body = json.dumps({"meta": self.meta(seq=1), "message": "m"}).encode()
        good = sign(self.secret, body).split(",v1=")[1]
        for header in [
            "t=" + "9" * 5000 + ",v1=" + good,
            "t=\u0663\u0663,v1=" + good,
            "t=1,v1=" + "\u00e9" * 64,
        ]:
            status, _ = await self.post_raw(
                "/message", body, {"X-SocketDock-Signature": header.encode("utf-8").decode("latin-1")}
            )
            self.assertEqual(status, 401, header[:20])
        self.assertEqual(self.sessions, [])

    async def test_bad_bodies(self):
        status, _ = await self.post("/message", {"meta": {"connection_id": "c1"}, "message": "m"})
        self.assertEqual(status, 400)  # no send URL to reply to
        status, _ = await self.post("/message", {"meta": self.meta(seq=1)})
        self.assertEqual(status, 400)


if __name__ == "__main__":
    unittest.main()
