"""
End to end, over real loopback sockets: the callback API's token and listener,
signed requests, TLS on both sides, hostile input, and what reaches the logs.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, eventAsText, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
import treq
from treq.client import HTTPClient

from socketdock.config import load_config
from socketdock.tap import make_service
from tests.certs import make_ca
from tests.fakebackend import FakeBackend, start_backend, stop_backend
from tests.harness import free_port, start_relay
from tests.wsclient import connect_client

TOKEN = "s3cret-api-token-for-tests"
SECRET = "signing-secret-for-tests"
_README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.rst")


class _Raw(Protocol):
    """A plain TCP client: sends bytes, keeps what comes back, fires when closed."""

    def __init__(self) -> None:
        self.received = b""
        self.gone: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.gone.callback(self.received)


def raw_connect(port: int) -> "Deferred[_Raw]":
    """A raw TCP connection to 127.0.0.1:port."""
    return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), _Raw())


class _Case(TestCase):
    """Starts a FakeBackend (http or https) and an instance against it."""

    @inlineCallbacks
    def backend(self, endpoint: str = "tcp:0:interface=127.0.0.1"):
        self.fake = FakeBackend(reactor)
        port, url = yield start_backend(reactor, self.fake, endpoint)
        self.addCleanup(stop_backend, port, self.fake)
        return url

    @inlineCallbacks
    def start(self, notices: bool = True, **settings):
        url = yield self.backend()
        settings.setdefault("backend", "http")
        settings.setdefault("messageuri", url + "/message")
        if notices:
            settings.setdefault("disconnecturi", url + "/disconnect")
        settings.setdefault("ping_interval", 0)
        self.relay = start_relay(self, reactor, **settings)
        return self.relay

    @inlineCallbacks
    def client(self, url: Optional[str] = None, **kwargs):
        client = yield connect_client(reactor, url or self.relay.ws_url(), **kwargs)
        self.addCleanup(client.shutdown)
        return client

    @inlineCallbacks
    def first_message(self, client, text: str = "hi"):
        """Send one message and return its JSON as the backend saw it."""
        client.send_text(text)
        (msg,) = yield self.fake.wait_for("message", 1)
        return msg


class TLSTests(_Case):
    """ssl: listeners work; https backends are verified, and failures are loud and safe."""

    def setUp(self) -> None:
        self.ca = make_ca()
        self.ca_path = self.ca.write(self.mktemp())

    def ssl_endpoint(self, names: list[str], port: int = 0, ca=None) -> str:
        key, cert = (ca or self.ca).issue(names).write(self.mktemp())
        return f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"

    @inlineCallbacks
    def test_wss_end_to_end(self):
        """A wss client talks through an ssl: WebSocket listener with a generated certificate."""
        port = free_port()
        start_relay(
            self, reactor, backend="loopback", ping_interval=0,
            listen=self.ssl_endpoint(["127.0.0.1"], port),
            externalhostandport=f"https://127.0.0.1:{port}",
        )
        trust = optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(self.ca.cert_pem()))
        client = yield self.client(f"wss://127.0.0.1:{port}/ws", context_factory=trust)
        client.send_text("over tls")
        self.assertEqual((yield client.next_message()), (b"over tls", False))

    @inlineCallbacks
    def test_api_listener_over_tls(self):
        """An ssl: api_listen serves the callback API over TLS."""
        api_port = free_port()
        start_relay(
            self, reactor, backend="loopback", ping_interval=0,
            api_listen=self.ssl_endpoint(["127.0.0.1"], api_port),
            externalhostandport=f"https://127.0.0.1:{api_port}",
        )
        pool = HTTPConnectionPool(reactor, persistent=False)
        policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(self.ca.cert_pem()))
        http = HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))
        response = yield http.get(f"https://127.0.0.1:{api_port}/status")
        body = yield treq.content(response)
        self.assertEqual(response.code, 200)
        self.assertIn("connections", json.loads(body))

    @inlineCallbacks
    def test_https_backend_with_private_ca(self):
        """With backend_ca, an https backend whose certificate the CA signed gets the message."""
        url = yield self.backend(self.ssl_endpoint(["127.0.0.1"]))
        self.assertTrue(url.startswith("https://"))
        self.relay = start_relay(
            self, reactor, backend="http", ping_interval=0, messageuri=url + "/message",
            disconnecturi=url + "/disconnect", backend_ca=self.ca_path,
        )
        client = yield self.client()
        msg = yield self.first_message(client, "secured")
        self.assertEqual(msg["message"], "secured")
        yield client.close()
        (notice,) = yield self.fake.wait_for("disconnect", 1)
        self.assertEqual(notice["meta"]["initiator"], "client")

    @inlineCallbacks
    def assert_refused_backend(self, endpoint: str, backend_ca: Optional[str]):
        """The message is not sent, the client gets 1011; returns the logged reasons."""
        url = yield self.backend(endpoint)
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        settings = dict(
            backend="http", ping_interval=0, messageuri=url + "/message",
            backend_retries=0, backend_timeout=5,
        )
        if backend_ca is not None:
            settings["backend_ca"] = backend_ca
        self.relay = start_relay(self, reactor, **settings)
        client = yield self.client()
        client.send_text("must not leave")
        _, code, _ = yield client.closed
        self.assertEqual(code, 1011)
        self.assertEqual(self.fake.received, [])
        return [e.get("why", "") for e in observer if e["log_level"] >= LogLevel.error]

    @inlineCallbacks
    def test_wrong_hostname(self):
        """A backend certificate for another name is refused: no message, 1011, a clear log line."""
        whys = yield self.assert_refused_backend(self.ssl_endpoint(["wrong.example"]), self.ca_path)
        self.assertIn("TLS: the backend's certificate does not match its hostname", whys)

    @inlineCallbacks
    def test_unknown_ca(self):
        """A backend certificate from a CA other than backend_ca is refused."""
        other = make_ca("some other CA")
        whys = yield self.assert_refused_backend(
            self.ssl_endpoint(["127.0.0.1"], ca=other), self.ca_path)
        self.assertIn("TLS: certificate verify failed", whys)

    @inlineCallbacks
    def test_system_trust_store(self):
        """Without backend_ca, a private CA is not trusted: the system trust store decides."""
        whys = yield self.assert_refused_backend(self.ssl_endpoint(["127.0.0.1"]), None)
        self.assertIn("TLS: certificate verify failed", whys)
