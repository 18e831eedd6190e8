"""
The journal end to end: a real ``twistd socketdock`` child process, real
clients, a real backend, SIGKILL and SIGTERM (SPEC §3 recovered notices, §6).
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from socketdock.relay.session import RECOVERED_REASON
from tests.fakebackend import Answer, FakeBackend, start_backend, stop_backend
from tests.journaldaemon import start_daemon
from tests.wsclient import connect_client

CLIENTS = 3


class JournalDaemonTests(TestCase):
    """Crash and restart a real instance that has a journal."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):  # type: ignore[override]  # trial waits on a Deferred from setUp
        self.backend = FakeBackend(reactor)
        port, url = yield start_backend(reactor, self.backend)
        self.addCleanup(stop_backend, port, self.backend)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.args = (
            "--backend",
            "http",
            "--messageuri",
            url + "/message",
            "--disconnecturi",
            url + "/disconnect",
            "--ping-interval",
            "0",
            "--journal",
            os.path.join(directory, "journal.sqlite"),
        )

    @inlineCallbacks
    def start(self, *extra: str):
        """Start a child and wait until it listens and has read its journal."""
        daemon = yield start_daemon(self, reactor, *self.args, *extra)
        yield daemon.wait_for_text("connections left by the last run")
        return daemon

    @inlineCallbacks
    def open_clients(self, daemon, count):
        """Connect ``count`` clients, one message each; return their connection ids."""
        clients = []
        for _ in range(count):
            client = yield connect_client(reactor, daemon.ws_url)
            self.addCleanup(client.shutdown)
            client.send_text("hello")
            clients.append(client)
        messages = yield self.backend.wait_for("message", count)
        ids = {m["meta"]["connection_id"] for m in messages}
        self.assertEqual(len(ids), count)
        # Every accept reached the disk before the test goes on.
        yield daemon.wait_for_journal(count, 0)
        return clients, ids

    def assert_recovered(self, notices, ids):
        """Exactly one notice per id, each in the recovered shape."""
        self.assertEqual(sorted(n["connection_id"] for n in notices), sorted(ids))
        for notice in notices:
            meta = notice["meta"]
            self.assertEqual(
                (meta["code"], meta["initiator"], meta["reason"], meta.get("recovered")),
                (None, "server", RECOVERED_REASON, True),
            )

    @inlineCallbacks
    def test_crash_then_restart_sends_each_lost_notice_once(self):
        """After SIGKILL the next start notifies every lost connection once, the one after nothing."""
        first = yield self.start()
        clients, ids = yield self.open_clients(first, CLIENTS)
        yield first.kill()
        for client in clients:
            yield client.closed
        self.assertEqual(self.backend.disconnects, [])

        second = yield self.start()
        notices = yield self.backend.wait_for("disconnect", CLIENTS)
        self.assert_recovered(notices, ids)
        yield second.wait_for_journal(0, CLIENTS)
        self.assertTrue((yield second.terminate()))
        self.assertIn(f"{CLIENTS} connections left by the last run", second.output)

        third = yield self.start()
        self.assertIn("0 connections left by the last run", third.output)
        self.assertTrue((yield third.terminate()))
        self.assertEqual(len(self.backend.disconnects), CLIENTS)

    @inlineCallbacks
    def test_graceful_stop_with_backend_down_keeps_notices(self):
        """Notices a drain could not deliver (backend answering 503) go out at the next start."""
        self.backend.answer("disconnect", status=503, body=b"down")
        first = yield self.start("--shutdown-timeout", "0.3")
        _clients, ids = yield self.open_clients(first, 2)
        self.assertTrue((yield first.terminate()))
        self.assertIn("2 disconnect notices undelivered", first.output)
        tried = len(self.backend.disconnects)
        self.assertGreaterEqual(tried, 2)
        self.assertFalse(any(n["meta"].get("recovered") for n in self.backend.disconnects))

        self.backend.answer("disconnect", status=200)
        second = yield self.start()
        notices = yield self.backend.wait_for("disconnect", tried + 2)
        self.assert_recovered(notices[tried:], ids)
        yield second.wait_for_journal(0, 2)
        self.assertTrue((yield second.terminate()))

    @inlineCallbacks
    def crash_right_after_open(self, *extra: str):
        """
        Open clients at once, SIGKILL the instance the moment the last one saw
        its connection open, restart: return the recovered notices.
        """
        first = yield self.start(*extra)
        clients = yield gatherResults(
            [connect_client(reactor, first.ws_url) for _ in range(CLIENTS)]
        )
        yield first.kill()
        for client in clients:
            self.addCleanup(client.shutdown)
        second = yield self.start()
        self.assertIn(f"{CLIENTS} connections left by the last run", second.output)
        notices = yield self.backend.wait_for("disconnect", CLIENTS)
        return notices

    @inlineCallbacks
    def test_crash_right_after_open_without_connecturi(self):
        """Every connection a client saw open gets a notice after a SIGKILL (no admission)."""
        notices = yield self.crash_right_after_open()
        self.assertEqual(len({n["connection_id"] for n in notices}), CLIENTS)
        self.assert_recovered(notices, [n["connection_id"] for n in notices])

    @inlineCallbacks
    def test_crash_right_after_open_with_connecturi(self):
        """The same with a backend that admits each connection: the ids it admitted come back."""
        url = self.args[self.args.index("--messageuri") + 1].rsplit("/", 1)[0]
        notices = yield self.crash_right_after_open("--connecturi", url + "/connect")
        admitted = {c["meta"]["connection_id"] for c in self.backend.connects}
        self.assertEqual(len(admitted), CLIENTS)
        self.assert_recovered(notices, admitted)

    @inlineCallbacks
    def test_recovered_notice_carries_tags_and_state(self):
        """After a SIGKILL the recovered notice has the tags and the latest state (SPEC §9)."""
        url = self.args[self.args.index("--messageuri") + 1].rsplit("/", 1)[0]
        first = yield self.start("--connecturi", url + "/connect")
        self.backend.answer_next(
            "connect",
            Answer(
                200, b'{"tags": ["t"], "state": {"n": 1}}', {"Content-Type": "application/json"}
            ),
        )
        client = yield connect_client(reactor, first.ws_url)
        self.addCleanup(client.shutdown)
        yield first.wait_for_journal(1, 0)
        client.send_text("hello")
        (message,) = yield self.backend.wait_for("message", 1)
        self.assertEqual((message["meta"]["tags"], message["meta"]["state"]), (["t"], {"n": 1}))
        state_url = message["meta"]["send"].rsplit("/", 1)[0] + "/state"
        offset = len(first.output)
        code, body = yield self.backend.post_json(state_url, {"n": 2})
        self.assertEqual((code, body), (200, b'{"state":{"n":2}}'))
        yield first.wait_for_log(lambda log: "journal: 1 updated" in log[offset:])
        yield first.kill()
        yield self.start()
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(notice["meta"]["recovered"], True)
        self.assertEqual((notice["meta"]["tags"], notice["meta"]["state"]), (["t"], {"n": 2}))
