"""
End to end, over real loopback sockets: the callback API's token and listener,
signed requests, TLS on both sides, hostile input, and what reaches the logs.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, eventAsText, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from txaio.testutil import replace_loop

from socketdock.assembly import make_service
from socketdock.config.settings import load_config
from tests.certs import make_ca
from tests.fakebackend import FakeBackend, start_backend, stop_backend
from tests.harness import start_relay
from tests.wsclient import connect_client

TOKEN = "s3cret-api-token-for-tests"
SECRET = "signing-secret-for-tests"
_OPERATING = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "docs",
    "operating.rst",
)


class _Raw(Protocol):
    """A plain TCP client: sends bytes, keeps what comes back, fires when closed."""

    def __init__(self) -> None:
        self.received = b""
        self.gone: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.gone.callback(self.received)


def raw_connect(port: int) -> Deferred[_Raw]:
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
        settings = {
            k: v.format(backend=url) if isinstance(v, str) else v for k, v in settings.items()
        }
        settings.setdefault("backend", "http")
        settings.setdefault("messageuri", url + "/message")
        if notices:
            settings.setdefault("disconnecturi", url + "/disconnect")
        settings.setdefault("ping_interval", 0)
        self.relay = start_relay(self, reactor, **settings)
        return self.relay

    @inlineCallbacks
    def client(self, url: str | None = None, **kwargs):
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
        relay = start_relay(
            self,
            reactor,
            backend="loopback",
            ping_interval=0,
            listen=self.ssl_endpoint(["127.0.0.1"]),
        )
        self.assertEqual(relay.base, f"https://127.0.0.1:{relay.port}")
        trust = optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(self.ca.cert_pem()))
        client = yield self.client(f"wss://127.0.0.1:{relay.port}/ws", context_factory=trust)
        client.send_text("over tls")
        self.assertEqual((yield client.next_message()), (b"over tls", False))

    @inlineCallbacks
    def test_api_listener_over_tls(self):
        """An ssl: api_listen serves the callback API over TLS."""
        relay = start_relay(
            self,
            reactor,
            backend="loopback",
            ping_interval=0,
            api_listen=self.ssl_endpoint(["127.0.0.1"]),
        )
        api_port = relay.api_port
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
            self,
            reactor,
            backend="http",
            ping_interval=0,
            messageuri=url + "/message",
            disconnecturi=url + "/disconnect",
            backend_ca=self.ca_path,
        )
        client = yield self.client()
        msg = yield self.first_message(client, "secured")
        self.assertEqual(msg["message"], "secured")
        yield client.close()
        (notice,) = yield self.fake.wait_for("disconnect", 1)
        self.assertEqual(notice["meta"]["initiator"], "client")

    @inlineCallbacks
    def assert_refused_backend(self, endpoint: str, backend_ca: str | None):
        """The message is not sent, the client gets 1011; returns the logged reasons."""
        url = yield self.backend(endpoint)
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        settings = dict(
            backend="http",
            ping_interval=0,
            messageuri=url + "/message",
            backend_retries=0,
            backend_timeout=5,
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
            self.ssl_endpoint(["127.0.0.1"], ca=other), self.ca_path
        )
        self.assertIn("TLS: certificate verify failed", whys)

    @inlineCallbacks
    def test_system_trust_store(self):
        """Without backend_ca, a private CA is not trusted: the system trust store decides."""
        whys = yield self.assert_refused_backend(self.ssl_endpoint(["127.0.0.1"]), None)
        self.assertIn("TLS: certificate verify failed", whys)


def readme_verify():
    """The ``verify`` function of docs/operating.rst's "Verifying signed requests", run as written."""
    with open(_OPERATING, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("Verifying signed requests\n---") :]
    block = section[section.index("::\n\n") + 4 :]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "docs/operating.rst", "exec"), namespace)
    return namespace["verify"]


class SigningTests(_Case):
    """signing_secret: a backend verifies every request with the code in docs/operating.rst."""

    @inlineCallbacks
    def test_every_request_verifies(self):
        """connect, message and disconnect requests carry a fresh signature over the raw body."""
        verify = readme_verify()
        url = yield self.backend()
        self.relay = start_relay(
            self,
            reactor,
            backend="http",
            ping_interval=0,
            signing_secret=SECRET,
            messageuri=url + "/message",
            connecturi=url + "/connect",
            disconnecturi=url + "/disconnect",
        )
        client = yield self.client()
        yield self.first_message(client, "signed")
        yield client.close()
        yield self.fake.wait_for("disconnect", 1)
        self.assertEqual(
            [r.path for r in self.fake.received], ["/connect", "/message", "/disconnect"]
        )
        for request in self.fake.received:
            (raw,) = request.headers.getRawHeaders(b"x-socketdock-signature") or []
            header = raw.decode("ascii")
            self.assertRegex(header, r"^t=\d+,v1=[0-9a-f]{64},v2=[0-9a-f]{64}$")
            self.assertLess(abs(time.time() - int(header[2 : header.index(",")])), 60)
            self.assertTrue(verify(SECRET.encode(), header, request.body), request.path)
            self.assertFalse(verify(b"another secret", header, request.body))
            self.assertFalse(verify(SECRET.encode(), header, request.body + b" "))
            # v2 binds the route: the same body and signature fail on another path.
            self.assertTrue(verify(SECRET.encode(), header, request.body, "POST", request.path))
            for other in {"/connect", "/message", "/disconnect"} - {request.path}:
                self.assertFalse(verify(SECRET.encode(), header, request.body, "POST", other))
            # Without v2 (as an older SocketDock sends it), v1 alone still verifies.
            self.assertTrue(verify(SECRET.encode(), header.split(",v2=")[0], request.body))

    def test_stale_or_forged_refused(self):
        """The documented verify refuses old, future, missing and malformed signatures."""
        import hashlib
        import hmac

        verify = readme_verify()
        body = b'{"message": "x"}'

        def header(t: int) -> str:
            mac = hmac.new(SECRET.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
            return f"t={t},v1={mac}"

        now = int(time.time())
        self.assertTrue(verify(SECRET.encode(), header(now), body))
        self.assertFalse(verify(SECRET.encode(), header(now - 301), body))
        self.assertFalse(verify(SECRET.encode(), header(now + 301), body))
        for bad in ("", "t=,v1=", "v1=00", f"t={now}", f"t={now},v1=zz", "t=x,v1=y", "t=٣,v1=é"):
            self.assertFalse(verify(SECRET.encode(), bad, body), bad)

    def test_several_v1_values(self):
        """The documented verify accepts a rotation's header with either secret, and no other."""
        from socketdock.relay.httpclient import sign

        verify = readme_verify()
        body = b'{"message": "x"}'
        header = sign([b"new", b"old"], int(time.time()), body).decode("ascii")
        self.assertTrue(verify(b"new", header, body))
        self.assertTrue(verify(b"old", header, body))
        self.assertFalse(verify(b"other", header, body))

    @inlineCallbacks
    def test_unsigned_without_secret(self):
        """Without signing_secret no signature header is sent."""
        yield self.start()
        client = yield self.client()
        yield self.first_message(client)
        self.assertIsNone(self.fake.received[0].headers.getRawHeaders(b"x-socketdock-signature"))


class TokenTests(_Case):
    """api_token over a real listener: the backend needs it, clients and probes do not."""

    @inlineCallbacks
    def test_token_on_the_wire(self):
        """Without the token send gets 401 and delivers nothing; with it the client gets the message."""
        yield self.start(api_token=TOKEN)
        client = yield self.client()
        msg = yield self.first_message(client)
        send = msg["meta"]["send"]
        code, body = yield self.fake.post_send(send, b"sneaky")
        self.assertEqual((code, body), (401, b"missing or wrong bearer token\n"))
        code, _ = yield self.fake.post_send(
            send, b"sneaky", headers={b"Authorization": b"Bearer nope"}
        )
        self.assertEqual(code, 401)
        code, _ = yield self.fake.post_send(
            send, b"welcome", headers={b"Authorization": b"Bearer " + TOKEN.encode()}
        )
        self.assertEqual(code, 200)
        self.assertEqual((yield client.next_message()), (b"welcome", False))
        code, _, _ = yield self.fake.request("GET", self.relay.base + "/healthz")
        self.assertEqual(code, 200)


class ApiListenTests(_Case):
    """api_listen: the callback API is served there only; the WebSocket listener still upgrades."""

    @inlineCallbacks
    def test_api_only_on_its_listener(self):
        """On the WebSocket listener /socket/... and /status are 404; on api_listen they work."""
        yield self.start(api_listen="tcp:0:interface=127.0.0.1")
        api_port = self.relay.api_port
        client = yield self.client()
        msg = yield self.first_message(client)
        cid = msg["meta"]["connection_id"]
        self.assertEqual(msg["meta"]["send"], f"http://127.0.0.1:{api_port}/socket/{cid}/send")
        ws_base = f"http://127.0.0.1:{self.relay.port}"
        for method, path in [
            ("POST", f"/socket/{cid}/send"),
            ("GET", f"/socket/{cid}"),
            ("POST", f"/socket/{cid}/disconnect"),
            ("GET", "/status"),
            ("GET", "/metrics"),
        ]:
            code, _, _ = yield self.fake.request(method, ws_base + path, b"x")
            self.assertEqual(code, 404, path)
        code, _, _ = yield self.fake.request("GET", ws_base + "/healthz")
        self.assertEqual(code, 200)
        code, _ = yield self.fake.post_send(msg["meta"]["send"], b"via api")
        self.assertEqual(code, 200)
        self.assertEqual((yield client.next_message()), (b"via api", False))

    @inlineCallbacks
    def test_held_bodies_refused_on_headers(self):
        """200 held POSTs declaring 4 MB to the WebSocket listener each get 404 on their
        headers and are closed; no temporary file is made, and a client still gets through."""
        import tempfile

        made = []
        real = tempfile.TemporaryFile
        self.patch(tempfile, "TemporaryFile", lambda *a, **k: made.append(1) or real(*a, **k))  # type: ignore[func-returns-value]  # count the call, then make it
        yield self.start(api_listen="tcp:0:interface=127.0.0.1")
        client = yield self.client()
        msg = yield self.first_message(client)
        path = f"/socket/{msg['meta']['connection_id']}/send".encode()
        held = []
        for _ in range(200):
            raw = yield raw_connect(self.relay.port)
            raw.transport.write(
                b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 4194304\r\n\r\n" + b"x" * 8192
            )
            held.append(raw)
        answers = []
        for raw in held:
            answers.append((yield raw.gone))
        for answer in answers:
            self.assertTrue(answer.startswith(b"HTTP/1.1 404 "), answer[:100])
            self.assertTrue(answer.endswith(b"\r\n\r\nno such path\n"), answer[-100:])
        self.assertEqual(made, [])
        code, _ = yield self.fake.post_send(msg["meta"]["send"], b"still here")
        self.assertEqual(code, 200)
        self.assertEqual((yield client.next_message()), (b"still here", False))


class StartupWarningTests(SynchronousTestCase):
    """make_service warns when the callback API is reachable beyond loopback without a token."""

    def warnings(self, **settings: str) -> list[dict]:
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[arg-type]  # Twisted wants a TestCase; this one has addCleanup too
        make_service(load_config(settings, {}, None), MemoryReactorClock())
        return [
            e
            for e in observer
            if e["log_level"] == LogLevel.warn and "interface" in e and "endpoint" in e
        ]

    def test_wildcard_api_without_token(self):
        """The API on the wildcard WebSocket listener, no token: one warning naming the interface."""
        (event,) = self.warnings(bindip="0.0.0.0", externalhostandport="http://sd-1:8765")
        self.assertEqual(event["interface"], "0.0.0.0")
        self.assertEqual(event["endpoint"], "tcp:8765:interface=0.0.0.0")

    def test_wildcard_api_listen_without_token(self):
        """api_listen on every interface without a token warns about api_listen, not listen."""
        (event,) = self.warnings(api_listen="tcp:9000", externalhostandport="http://sd-1:9000")
        self.assertEqual(event["endpoint"], "tcp:9000")

    def test_safe_setups(self):
        """A token, a loopback api_listen (WebSockets public) or the defaults: no warning."""
        self.assertEqual(
            self.warnings(
                bindip="0.0.0.0", externalhostandport="http://sd-1:8765", api_token=TOKEN
            ),
            [],
        )
        self.assertEqual(
            self.warnings(
                listen="tcp:8765:interface=0.0.0.0",
                api_listen="tcp:9000:interface=127.0.0.1",
                externalhostandport="http://127.0.0.1:9000",
            ),
            [],
        )
        self.assertEqual(self.warnings(), [])


class HostileInputTests(_Case):
    """Hostile clients and callers: documented answers, no 500, no crash, the instance stays up."""

    @inlineCallbacks
    def test_oversized_declared_body(self):
        """A send declaring a 1 GB body gets 413 at once and the connection is closed."""
        yield self.start(max_message_size=1024)
        client = yield self.client()
        msg = yield self.first_message(client)
        path = msg["meta"]["send"].split(str(self.relay.port), 1)[1]
        raw = yield raw_connect(self.relay.port)
        raw.transport.write(
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 1000000000\r\n\r\n" + b"x" * 4096
        )
        answer = yield raw.gone
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        yield client.ping()
        self.assertEqual(client._inbox, [])

    @inlineCallbacks
    def test_non_utf8_text_frame(self):
        """A text frame that is not UTF-8 gets 1007; nothing is relayed; the notice says server."""
        # Autobahn fails such a connection by dropping it right after its close
        # frame and leaves its 1 s close-handshake timer behind (harmless: it
        # finds the connection closed); keep that timer off the real reactor.
        with replace_loop(Clock()):
            yield self.start()
            client = yield self.client()
            client.protocol.sendMessage(b"ok \xff\xfe", isBinary=False)
            _, code, _ = yield client.closed
            (notice,) = yield self.fake.wait_for("disconnect", 1)
        self.assertEqual(code, 1007)
        self.assertEqual((notice["meta"]["code"], notice["meta"]["initiator"]), (1007, "server"))
        self.assertEqual(self.fake.messages, [])

    @inlineCallbacks
    def test_huge_close_reason(self):
        """A 100 KB close reason gets 413 (a close body over 4096 bytes) and the client stays connected."""
        yield self.start()
        client = yield self.client()
        msg = yield self.first_message(client)
        code, body = yield self.fake.post_json(
            msg["meta"]["disconnect"], {"code": 4000, "reason": "r" * 100_000}
        )
        self.assertEqual(code, 413)
        self.assertEqual(len(body.splitlines()), 1)
        yield client.ping()

    @inlineCallbacks
    def test_plain_get_on_ws_path(self):
        """A GET on the WebSocket path without an upgrade gets a 4xx, not a 500."""
        yield self.start()
        code, _, _ = yield self.fake.request("GET", self.relay.ws_url().replace("ws://", "http://"))
        self.assertTrue(400 <= code < 500, code)

    @inlineCallbacks
    def test_half_open_flood(self):
        """200 half-sent handshakes from one peer do not stop a real client or the health check."""
        yield self.start()
        floods = []
        for _ in range(200):
            raw = yield raw_connect(self.relay.port)
            raw.transport.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            floods.append(raw)
        client = yield self.client()
        msg = yield self.first_message(client, "still here")
        self.assertEqual(msg["message"], "still here")
        code, _, _ = yield self.fake.request("GET", self.relay.base + "/readyz")
        self.assertEqual(code, 200)
        for raw in floods:
            raw.transport.abortConnection()
        for raw in floods:
            yield raw.gone


class LogSecrecyTests(_Case):
    """Bodies and tokens never reach the logs above debug level; ids do."""

    @inlineCallbacks
    def test_round_trip_logs(self):
        """A full round trip with token and secret logs the id but neither the bodies nor the secrets."""
        marker_in, marker_out = "MARKER-c2b-7f3a9", "MARKER-b2c-51e0d"
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        yield self.start(api_token=TOKEN, signing_secret=SECRET, connecturi="{backend}/connect")
        client = yield self.client()
        msg = yield self.first_message(client, marker_in)
        auth = {b"Authorization": b"Bearer " + TOKEN.encode()}
        code, _ = yield self.fake.post_send(msg["meta"]["send"], marker_out.encode(), headers=auth)
        self.assertEqual(code, 200)
        self.assertEqual((yield client.next_message()), (marker_out.encode(), False))
        code, _ = yield self.fake.post_send(
            msg["meta"]["send"], b"x", headers={b"Authorization": b"Bearer wrong-" + TOKEN.encode()}
        )
        self.assertEqual(code, 401)
        yield self.fake.post_json(
            msg["meta"]["disconnect"], {"code": 4001, "reason": marker_out}, headers=auth
        )
        yield client.closed
        yield self.fake.wait_for("disconnect", 1)
        texts = [
            eventAsText(e, includeTimestamp=False)
            for e in observer
            if e["log_level"] > LogLevel.debug
        ]
        everything = "\n".join(texts)
        self.assertIn(msg["meta"]["connection_id"], everything)
        for secret in (marker_in, marker_out, TOKEN, SECRET):
            self.assertNotIn(secret, everything)
