"""
Tests for socketdock.reloading: what SIGHUP re-reads and says, and an
``ssl:`` listener's certificate replaced while it listens.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from socketdock.config.settings import load_config, secrets_of
from socketdock.reloading import ReloadableTLS, Reloader
from tests.certs import make_ca


class ReloaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cli = {"api_token": "one"}
        self.started = load_config(self.cli, {}, None)
        self.secrets = secrets_of(self.started)
        self.passwords: list[str | None] = []

    def load(self):
        return load_config(self.cli, {}, None)

    def reloader(self) -> Reloader:
        return Reloader(self.load, self.started, self.secrets, self.passwords.append)

    def test_new_secrets_in_force_one_line(self) -> None:
        """A reload puts the new tokens in force and logs one info line naming what changed, not the values."""
        self.cli = {"api_token": "one,two", "signing_secret": "sec"}
        with capturedLogs() as events:
            changed = self.reloader().reload()
        self.assertEqual(self.secrets.api_tokens, (b"one", b"two"))
        self.assertEqual(self.secrets.signing_keys, (b"sec",))
        self.assertEqual(
            changed, ["api_token (2 tokens, were 1)", "signing_secret (1 secret, were 0)"]
        )
        (event,) = events
        self.assertEqual(event["log_level"].name, "info")
        self.assertEqual(event["restart_needed"], [])
        from twisted.logger import formatEvent

        text = formatEvent(event)
        self.assertTrue(text.startswith("SIGHUP: reloaded api_token"), text)
        self.assertNotIn("sec,", text)
        self.assertNotIn("two", text)

    def test_other_settings_are_named_for_a_restart(self) -> None:
        """A changed setting that is read only at start is named, and left as it is."""
        self.cli = {"api_token": "one", "max_connections": "5"}
        with capturedLogs() as events:
            self.assertEqual(self.reloader().reload(), [])
        (event,) = events
        self.assertEqual(event["restart_needed"], ["max_connections"])

    def test_a_mistake_keeps_what_is_in_force(self) -> None:
        """A settings error on reload: one error line, and the tokens in force stay."""
        self.cli = {"api_token": "two words"}
        with capturedLogs() as events:
            self.assertEqual(self.reloader().reload(), [])
        (event,) = events
        self.assertEqual(event["log_level"].name, "error")
        self.assertEqual(self.secrets.api_tokens, (b"one",))
        self.assertNotIn("two words", repr(event))

    def test_cluster_password_goes_to_the_link(self) -> None:
        """A new Redis password is handed to the cluster link; other reloads leave it alone."""
        self.cli = {"cluster": "redis://:old@127.0.0.1/0"}
        self.started = self.load()
        self.secrets = secrets_of(self.started)
        self.cli = {"cluster": "redis://:new@127.0.0.1/0"}
        with capturedLogs() as events:
            self.assertEqual(self.reloader().reload(), ["cluster password"])
        self.assertEqual(self.passwords, ["new"])
        self.assertEqual(events[0]["restart_needed"], [])
        self.reloader().reload()
        self.assertEqual(self.passwords, ["new"])


@implementer(IHandshakeListener)
class _PeerCertificate(Protocol):
    def __init__(self) -> None:
        self.certificate: Deferred = Deferred()
        self.received: Deferred = Deferred()

    def handshakeCompleted(self) -> None:
        assert self.transport is not None
        self.certificate.callback(self.transport.getPeerCertificate())  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if not self.received.called:
            self.received.callback(data)


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


@inlineCallbacks
def tls_connect(testcase: TestCase, port: int):
    """A TLS connection to ``port`` on loopback: ``(protocol, the server certificate's digest)``."""
    protocol = _PeerCertificate()
    factory = ClientFactory.forProtocol(lambda: protocol)
    connector = reactor.connectSSL("127.0.0.1", port, factory, CertificateOptions())  # type: ignore[attr-defined]
    testcase.addCleanup(connector.disconnect)
    certificate = yield protocol.certificate
    return protocol, certificate.digest("sha256")


class TLSReloadTests(TestCase):
    def connect(self, port: int):
        return tls_connect(self, port)

    @inlineCallbacks
    def test_new_handshakes_get_the_new_certificate(self):
        """After reload() new handshakes see the new certificate; a connection made before keeps working."""
        ca = make_ca()
        directory = str(Path(self.mktemp()).resolve())
        first = ca.issue(["127.0.0.1"])
        key, cert = first.write(directory)
        description = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        tls = ReloadableTLS("listen", description)
        port = yield serverFromString(tls.reactor(reactor), description).listen(
            Factory.forProtocol(_Echo)
        )
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        before, digest_before = yield self.connect(number)
        self.assertFalse(tls.reload(), "the same files: nothing changed")
        ca.issue(["127.0.0.1"]).write(directory)
        self.assertTrue(tls.reload())
        _, digest_after = yield self.connect(number)
        self.assertNotEqual(digest_before, digest_after)
        before.transport.write(b"still here")
        self.assertEqual((yield before.received), b"still here")

    def test_unusable_files_keep_the_certificate(self) -> None:
        """A key that does not match the certificate fails reload() and leaves the context as it was."""
        ca = make_ca()
        directory = str(Path(self.mktemp()).resolve())
        key, cert = ca.issue(["127.0.0.1"]).write(directory)
        description = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        tls = ReloadableTLS("listen", description)
        tls.reload()
        context = tls.getContext()
        Path(key).write_bytes(ca.issue(["127.0.0.1"]).key_pem())
        self.assertRaises(VerifyError, tls.reload)
        self.assertIs(tls.getContext(), context)
