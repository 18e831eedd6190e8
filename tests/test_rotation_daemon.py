"""
Rotating ``api_token`` and ``signing_secret`` on a running cluster of two real
``twistd`` instances and one backend: the secrets are changed in their files
and each instance is sent SIGHUP, one at a time; no request made with the
backend's token of the moment is refused, every message verifies with the
backend's secret of the moment, and no connection is dropped.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks

from tests.api.test_security import readme_verify
from tests.test_daemon import DaemonCase


def verifies(header: bytes, body: bytes, secret: str) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, checked by docs/operating.rst's verify."""
    return readme_verify()(secret.encode(), header.decode("ascii"), body)


class RotationTests(DaemonCase):
    timeout = 120

    @inlineCallbacks
    def test_rotation_one_instance_at_a_time(self):
        """Tokens and secrets rotated by file + SIGHUP on two instances: nothing refused, nothing dropped."""
        secrets = Path(self.mktemp()).resolve()
        secrets.mkdir()
        token_file, secret_file = secrets / "api_token", secrets / "signing_secret"
        token_file.write_text("old-token\n")
        secret_file.write_text("old-secret\n")
        args = [
            "--api-token-file",
            str(token_file),
            "--signing-secret-file",
            str(secret_file),
        ]
        instances = []
        for _ in range(2):
            proc = yield self.http_daemon(*args)
            client = yield self.client()
            instances.append((proc, self.port, client))
        backend = {"token": "old-token", "secret": "old-secret"}
        checked = {"messages": 0}

        @inlineCallbacks
        def round_trip(word):
            """Each client sends, each message verifies; the backend answers each with its token."""
            for n, (_, _, client) in enumerate(instances):
                client.send_text(f"{word}-{n}")
                checked["messages"] += 1
                yield self.backend.wait_for("message", checked["messages"])
                received = [r for r in self.backend.received if r.path == "/message"][-1]
                (header,) = received.headers.getRawHeaders(b"x-socketdock-signature") or [b""]
                self.assertTrue(verifies(header, received.body, backend["secret"]), word)
                send = received.json["meta"]["send"]
                code, _ = yield self.backend.post_send(
                    send,
                    b"re-" + word.encode(),
                    headers={"Authorization": "Bearer " + backend["token"]},
                )
                self.assertEqual(code, 200, f"{word}: instance {n} refused the backend's token")
                self.assertEqual((yield client.next_message())[0], b"re-" + word.encode())
            return header

        @inlineCallbacks
        def sighup_each(expected):
            for proc, _, _ in instances:
                start = len(proc.output)
                proc.signal("HUP")
                yield proc.wait_for("SIGHUP: ", start)
                line = proc.output[start:].decode().split("SIGHUP: ", 1)[1].splitlines()[0]
                self.assertEqual(line, expected)
                # Between the two SIGHUPs the instances differ: both still work.
                yield round_trip("between")

        yield round_trip("before")
        # 1. Every instance accepts both tokens and signs with both secrets.
        token_file.write_text("old-token\nnew-token\n")
        secret_file.write_text("old-secret,new-secret")
        yield sighup_each(
            "reloaded api_token (2 tokens, were 1), signing_secret (2 secrets, were 1)"
        )
        # 2. The backend moves to the new ones.
        backend.update(token="new-token", secret="new-secret")
        header = yield round_trip("moved")
        self.assertTrue(verifies(header, self.backend.received[-1].body, "old-secret"))
        # 3. The old ones are dropped, one instance at a time.
        token_file.write_text("new-token")
        secret_file.write_text("new-secret")
        yield sighup_each("reloaded api_token (1 token, were 2), signing_secret (1 secret, were 2)")
        header = yield round_trip("after")
        self.assertFalse(verifies(header, self.backend.received[-1].body, "old-secret"))
        for _, port, client in instances:
            code, _ = yield self.backend.post_send(
                f"http://127.0.0.1:{port}/status",
                b"",
                headers={"Authorization": "Bearer old-token"},
            )
            self.assertEqual(code, 401)
            self.assertFalse(client.closed.called, "a connection was dropped")
        # A second SIGHUP with nothing changed says so; the secrets' values never appear.
        proc = instances[0][0]
        start = len(proc.output)
        proc.signal("HUP")
        yield proc.wait_for("SIGHUP: no secret changed", start)
        for proc, _, _ in instances:
            for value in ("old-token", "new-token", "old-secret", "new-secret"):
                self.assertNotIn(value, proc.text())
        self.assertEqual(len(self.backend.disconnects), 0)


class CertificateReloadTests(DaemonCase):
    timeout = 60

    @inlineCallbacks
    def test_sighup_reloads_the_certificate_of_an_ssl_listener(self):
        """An ssl: listener's new certificate serves the next handshake after SIGHUP; a WebSocket open before stays."""
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        from tests.certs import make_ca
        from tests.test_reloading import tls_connect
        from tests.wsclient import connect_client

        ca = make_ca()
        directory = str(Path(self.mktemp()).resolve())
        key, cert = ca.issue(["127.0.0.1"]).write(directory)
        listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        proc = yield self.daemon(
            "--listen", listen, "--externalhostandport", "https://127.0.0.1:1", wait=False
        )
        port = yield Deferred.fromCoroutine(proc.port())
        yield proc.wait_for("starting on")
        _, before = yield tls_connect(self, port)
        trust = optionsForClientTLS("127.0.0.1", Certificate.loadPEM(ca.cert_pem()))
        client = yield connect_client(reactor, f"wss://127.0.0.1:{port}/ws", context_factory=trust)
        self.addCleanup(client.shutdown)
        ca.issue(["127.0.0.1"]).write(directory)
        start = len(proc.output)
        proc.signal("HUP")
        yield proc.wait_for("SIGHUP: reloaded TLS certificate and key of listen", start)
        _, after = yield tls_connect(self, port)
        self.assertNotEqual(before, after)
        client.send_text("still open")
        self.assertEqual((yield client.next_message()), (b"still open", False))
