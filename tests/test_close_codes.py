"""
The close codes SocketDock picks itself (1001 at shutdown, 1011 when the
backend is gone) reach a real client over loopback; Autobahn's sendClose
refuses both, so they need their own path.
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.fakebackend import Answer, FakeBackend, start_backend, stop_backend
from tests.harness import start_relay
from tests.wsclient import connect_client


class ServerCloseCodeTests(TestCase):
    @inlineCallbacks
    def test_shutdown_closes_with_1001(self):
        """Stopping the service closes an open client with 1001 and the notice says server."""
        backend = FakeBackend(reactor)
        port, url = yield start_backend(reactor, backend)
        self.addCleanup(stop_backend, port, backend)
        relay = start_relay(self, reactor, backend="http", messageuri=url + "/message",
                            disconnecturi=url + "/disconnect", ping_interval=0)
        client = yield connect_client(reactor, relay.ws_url())
        self.addCleanup(client.shutdown)
        yield client.ping()
        yield relay.service.stopService()
        _, code, _ = yield client.closed
        self.assertEqual(code, 1001)
        (notice,) = yield backend.wait_for("disconnect", 1)
        self.assertEqual((notice["meta"]["code"], notice["meta"]["initiator"]), (1001, "server"))

    @inlineCallbacks
    def test_backend_gone_closes_with_1011(self):
        """A message whose retries run out closes the client with 1011; the notice says backend."""
        backend = FakeBackend(reactor)
        port, url = yield start_backend(reactor, backend)
        self.addCleanup(stop_backend, port, backend)
        backend.answer_next("message", Answer(503, b"down"))
        relay = start_relay(self, reactor, backend="http", messageuri=url + "/message",
                            disconnecturi=url + "/disconnect", ping_interval=0,
                            backend_retries=0)
        client = yield connect_client(reactor, relay.ws_url())
        self.addCleanup(client.shutdown)
        client.send_text("hi")
        _, code, _ = yield client.closed
        self.assertEqual(code, 1011)
        (notice,) = yield backend.wait_for("disconnect", 1)
        self.assertEqual((notice["meta"]["code"], notice["meta"]["initiator"]), (1011, "backend"))
