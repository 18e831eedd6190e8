"""
Real DIDComm agents through a real SocketDock, over loopback (issue 16).

A Credo 0.5 wallet (Node, WebSocket outbound only, no endpoint: a mobile
wallet) reaches a mediator through SocketDock, whose backend is the
mediator's SocketDock inbound transport: ACA-Py 1.7 with
``socketdock_acapy.transport`` (integrations/acapy), or Credo 0.5 with
integrations/credo:

- out-of-band invitation, DID exchange, mediation request and grant, trust
  ping; the wallet's invitation to a second agent adds its key to the
  mediator (keylist update);
- the second agent (Credo, HTTP endpoint) sends to the wallet through the
  mediator while the wallet is connected: delivered live over its socket;
- the wallet closes its socket (1000); SocketDock's disconnect notice reaches
  the mediator, which closes the session; the second agent sends three more,
  the mediator queues them; the wallet reconnects and picks them all up;
- the same with ``signing_secret`` and ``api_token`` set, where the wallet's
  connection drops without a close frame instead (the notice's code: null);
- (unsigned only) SocketDock is SIGKILLed under the connected wallet and
  restarted on the same port without a journal: the mediator finds the
  wallet gone from the 404 on the old ``send`` URL, queues the message, and
  the wallet picks it up when it reconnects.

Installed by ``.ci/agents`` into ``.agents/``; each test skips, saying what
is missing, without it.  Every wait is bounded and woken by process output.
"""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING

import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests.daemon import ready, spawn_socketdock
from tests.daemon import started as socketdock_started
from tests.integrations.support import (
    ACAPY,
    ACAPY_INTEGRATION,
    HERE,
    NODE,
    Agents,
    WatchedProcess,
    acapy_missing,
    credo_missing,
    install_credo_transport,
    node_environ,
    port_for_an_agent,
    within,
)

# Bounds for single steps (seconds); each is far above what the step takes
# on 2 busy cores (startup ~3 s, a protocol exchange well under 1 s).
START = 90
STEP = 45


def _request(method: str, url: str, body: bytes = b"", headers: dict | None = None) -> Deferred:
    """One request on a fresh connection: ``(status, body)``."""
    client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    d = client.request(method, url, data=body, headers=headers or {})
    d.addCallback(lambda r: treq.content(r).addCallback(lambda b: (r.code, b)))
    return d


if TYPE_CHECKING:
    # The test case this mixin is combined with.
    from twisted.trial.unittest import TestCase as _WalletStoryBase
else:
    _WalletStoryBase = object


class WalletStory(_WalletStoryBase):
    """
    The whole wallet story against a mediator behind SocketDock; subclasses
    say which mediator (:meth:`start_mediator`) and pick the settings.
    """

    timeout = 300
    signing_secret: str | None = None
    api_token: str | None = None
    #: how the wallet goes away: "close" (close frame 1000) or "drop" (TCP
    #: connection dropped, no close frame)
    goodbye = "close"
    #: the wallet's pickup strategy (a name from Credo's MediatorPickupStrategy)
    pickup = "Implicit"
    #: what the mediator prints when it queues a message for pickup
    queued_text = ""
    #: what it prints when a send to a gone connection failed and the message
    #: was queued instead
    requeued_text = ""

    def spawn(self, process, argv, env, path):
        reactor.spawnProcess(process, argv[0], argv, env=env, path=path)
        self.addCleanup(process.stop)
        return process

    def start_mediator(self, workdir, backend_port, sd_port):
        """The mediator process, not yet waited on."""
        raise NotImplementedError

    def mediator_invitation(self, mediator, step):
        """Fires with the mediator's multi-use invitation URL once it is up."""
        raise NotImplementedError

    def secret_env(self):
        env = {}
        if self.signing_secret:
            env["SOCKETDOCK_SIGNING_SECRET"] = self.signing_secret
        if self.api_token:
            env["SOCKETDOCK_API_TOKEN"] = self.api_token
        return env

    def start_socketdock(self, sd_port, backend_port):
        backend = f"http://127.0.0.1:{backend_port}"
        args = [
            "--backend",
            "http",
            "--bindport",
            str(sd_port),
            "--connecturi",
            backend + "/connect",
            "--messageuri",
            backend + "/message",
            "--disconnecturi",
            backend + "/disconnect",
        ]
        if self.signing_secret:
            args += ["--signing-secret", self.signing_secret]
        if self.api_token:
            args += ["--api-token", self.api_token]
        return spawn_socketdock(self, reactor, *args)

    @staticmethod
    def save_output(process, workdir, name=None):
        name = name or process.name.replace(" ", "-")
        with open(os.path.join(workdir, name + ".log"), "wb") as f:
            f.write(bytes(process.output))

    @staticmethod
    def save_timings(timings, workdir):
        with open(os.path.join(workdir, "timings.txt"), "w") as f:
            f.write("\n".join(timings) + "\n")

    @inlineCallbacks
    def connected_wallet(self):
        """
        Start everything; mediation, trust ping, the second agent's connection
        and one live delivery.  Sets ``self.agents``, ``self.mediator``,
        ``self.socketdock``, ``self.sd_port``, ``self.step``.
        """
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        self.backend_port, sender_port = port_for_an_agent(), port_for_an_agent()
        backend_port = self.backend_port

        # SocketDock first, on port 0: the mediator's endpoint names its port.
        socketdock = self.start_socketdock(0, backend_port)
        sd_port = yield within(
            reactor,
            START,
            Deferred.fromCoroutine(socketdock_started(reactor, socketdock)),
            "SocketDock to start",
            socketdock,
        )
        mediator = self.start_mediator(workdir, backend_port, sd_port)
        agents = self.spawn(
            Agents("credo agents"), [NODE, str(HERE / "agents.js")], node_environ(), workdir
        )
        self.agents, self.mediator, self.socketdock, self.sd_port = (
            agents,
            mediator,
            socketdock,
            sd_port,
        )
        logs = [agents, mediator, socketdock]
        self.logs, self.workdir = logs, workdir
        for process in logs:  # kept in _trial_temp for a look afterwards
            self.addCleanup(self.save_output, process, workdir)

        started = reactor.seconds()
        timings: list[str] = []
        self.addCleanup(self.save_timings, timings, workdir)

        def step(d, what, seconds=STEP):
            def note(result):
                timings.append(f"{reactor.seconds() - started:7.2f}s  {what}")
                return result

            return within(reactor, seconds, d, what, *logs).addCallback(note)

        self.step = step

        yield step(agents.wait_for("EVENT started"), "the Credo script to start", START)
        invitation_url = yield self.mediator_invitation(mediator, step)
        self.assertTrue(
            invitation_url.startswith(f"ws://127.0.0.1:{sd_port}/ws?oob="), invitation_url
        )

        # OOB + DID exchange + mediation request/grant, over SocketDock.
        agents.command(f"wallet {invitation_url} {self.pickup}")
        yield step(agents.wait_for("EVENT mediation-ready"), "mediation to be granted", START)
        agents.command("ping")
        yield step(agents.wait_for("EVENT ping-response"), "the mediator's trust ping response")

        agents.command(f"sender {sender_port}")
        yield step(agents.wait_for("EVENT sender-ready"), "the second agent", START)
        agents.command("connect")
        yield step(agents.wait_for("EVENT connected"), "the wallet and the second agent to connect")
        self.assertIn("EVENT keylist-updated", agents.text())

        # Live: the mediator forwards over the wallet's open socket.
        agents.command("send live-1")
        yield step(agents.wait_for("EVENT received live-1"), "live delivery to the wallet")

    @inlineCallbacks
    def test_wallet_story(self):
        """Mediation, live delivery, disconnect notice, queueing and pickup, end to end."""
        yield self.connected_wallet()
        agents, mediator, step = self.agents, self.mediator, self.step

        # The wallet goes away; SocketDock's disconnect notice closes its session.
        opened = set(re.findall(r"SocketDock connection (\w+) opened", mediator.text()))
        agents.command(self.goodbye)
        yield step(agents.wait_for("EVENT closed"), "the wallet to close its socket")

        def closed():
            return dict(
                re.findall(r"SocketDock connection (\w+) closed \(code (\w+)", mediator.text())
            )

        yield step(
            mediator.wait_until(lambda: opened <= set(closed())),
            "the mediator to see every SocketDock connection closed",
        )
        # The wallet's socket was the only one open: its notice has its code
        # (null when no close frame came: ACA-Py logs None, Node null).
        codes = {closed()[cid] for cid in opened}
        expected = {"1000"} if self.goodbye == "close" else {"None", "null"}
        self.assertTrue(codes & expected, f"close codes {codes}, expected one of {expected}")

        # Three messages while the wallet is away: all queued.
        queued = mediator.count(self.queued_text)
        for n in (1, 2, 3):
            agents.command(f"send queued-{n}")
            yield step(agents.wait_for(f"EVENT sent queued-{n}"), "the second agent's send")
            yield step(
                mediator.wait_until(lambda n=n: mediator.count(self.queued_text) >= queued + n),
                f"the mediator to queue message {n} for pickup",
            )
        self.assertNotIn("EVENT received queued-", agents.text())

        # Back: the pickup (implicit: a trust ping with return route; or pickup
        # v2 live mode) delivers the whole backlog, without further messages.
        agents.command("reconnect")
        for n in (1, 2, 3):
            yield step(
                agents.wait_for(f"EVENT received queued-{n}"), f"queued message {n} after reconnect"
            )

        self.assertNotIn("EVENT error", agents.text())
        self.assertNotIn("POST /message refused", mediator.text())
        self.assertNotIn("retry of one already taken", mediator.text())
        agents.command("exit")
        yield step(agents.exited, "the Credo script to exit")
        if self.signing_secret:
            yield self.check_refuses_unsigned(self.backend_port)

    @inlineCallbacks
    def check_refuses_unsigned(self, backend_port):
        """With a signing secret, a POST without a valid signature is refused: 401."""
        status, _ = yield within(
            reactor,
            STEP,
            _request(
                "POST",
                f"http://127.0.0.1:{backend_port}/message",
                b'{"meta": {"connection_id": "x", "send": "http://127.0.0.1:1/"}, "message": "{}"}',
                {b"Content-Type": [b"application/json"]},
            ),
            "the transport's answer",
        )
        self.assertEqual(status, 401)


if TYPE_CHECKING:
    # The wallet story (and test case) this mixin is combined with.
    _CrashStoryBase = WalletStory
else:
    _CrashStoryBase = object


class CrashStory(_CrashStoryBase):
    """A SocketDock crash under a connected wallet (mixed into a WalletStory)."""

    @inlineCallbacks
    def test_socketdock_crash(self):
        """
        SocketDock dies (SIGKILL) under a connected wallet and comes back on the
        same port without a journal, so no disconnect notice ever comes: the
        mediator learns it from the 404 on the old ``send`` URL, queues the
        message, and the wallet picks it up when it reconnects.
        """
        yield self.connected_wallet()
        agents, mediator, step = self.agents, self.mediator, self.step
        agents.command("hold")  # no automatic reconnect: the test says when
        yield step(agents.wait_for("EVENT holding"), "the wallet to stop its pickup loop")

        self.socketdock.signal("KILL")
        yield step(self.socketdock.exited, "SocketDock to die")
        again = self.start_socketdock(self.sd_port, self.backend_port)
        self.logs.append(again)
        self.addCleanup(self.save_output, again, self.workdir, "socketdock-restarted")
        yield step(
            Deferred.fromCoroutine(ready(reactor, again, f"http://127.0.0.1:{self.sd_port}")),
            "SocketDock to start again",
            START,
        )

        requeued = mediator.count(self.requeued_text)
        agents.command("send queued-1")
        yield step(
            mediator.wait_until(lambda: mediator.count(self.requeued_text) > requeued),
            "the mediator to find the wallet gone (404) and queue the message",
        )
        self.assertNotIn("EVENT received queued-1", agents.text())
        agents.command("reconnect")
        yield step(agents.wait_for("EVENT received queued-1"), "the queued message after reconnect")
        self.assertNotIn("EVENT error", agents.text())
        agents.command("exit")
        yield step(agents.exited, "the Credo script to exit")


class ACApyMediator(WalletStory):
    """ACA-Py 1.7 with ``socketdock_acapy.transport`` as its inbound transport."""

    skip = acapy_missing() or credo_missing()
    queued_text = "queued for pickup"
    requeued_text = "reply not delivered; it goes back to ACA-Py"

    def start_mediator(self, workdir, backend_port, sd_port):
        self.admin_port = port_for_an_agent()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKETDOCK_")}
        env.update(HOME=workdir, PYTHONPATH=str(ACAPY_INTEGRATION), **self.secret_env())
        # Replies go only to this SocketDock (its learned externalhostandport).
        env["SOCKETDOCK_TRUSTED_URLS"] = f"http://127.0.0.1:{sd_port}"
        argv = [
            str(ACAPY),
            "start",
            "--label",
            "mediator",
            "--inbound-transport",
            "socketdock_acapy.transport",
            "127.0.0.1",
            str(backend_port),
            "--outbound-transport",
            "http",
            "--outbound-transport",
            "ws",
            "--endpoint",
            f"ws://127.0.0.1:{sd_port}/ws",
            "--admin",
            "127.0.0.1",
            str(self.admin_port),
            "--admin-insecure-mode",
            "--no-ledger",
            "--wallet-type",
            "askar",
            "--wallet-name",
            "mediator",
            "--wallet-key",
            "mediator-key",
            "--auto-provision",
            "--open-mediation",
            "--enable-undelivered-queue",
            "--auto-accept-invites",
            "--auto-accept-requests",
            "--auto-ping-connection",
            "--log-level",
            "info",
        ]
        return self.spawn(WatchedProcess("aca-py mediator"), argv, env, workdir)

    @inlineCallbacks
    def mediator_invitation(self, mediator, step):
        yield step(mediator.wait_for("Listening..."), "ACA-Py to start", START)
        status, body = yield step(
            _request(
                "POST",
                f"http://127.0.0.1:{self.admin_port}/out-of-band/create-invitation?multi_use=true",
                json.dumps(
                    {"handshake_protocols": ["https://didcomm.org/didexchange/1.1"]}
                ).encode(),
                {b"Content-Type": [b"application/json"]},
            ),
            "the mediator's invitation",
        )
        self.assertEqual(status, 200, body)
        return json.loads(body)["invitation_url"]


class CredoMediator(WalletStory):
    """Credo 0.5 with integrations/credo's SocketDockInboundTransport."""

    skip = credo_missing()
    pickup = "PickUpV2LiveMode"
    queued_text = "EVENT queued-for-pickup"
    requeued_text = "EVENT queued-for-pickup"
    #: where integrations/credo was installed (setUp)
    transport_modules: str | None = None

    def setUp(self):
        # integrations/credo, installed with npm as its README says.
        d = Deferred.fromCoroutine(install_credo_transport(self, reactor))
        return d.addCallback(lambda modules: setattr(self, "transport_modules", modules))

    def start_mediator(self, workdir, backend_port, sd_port):
        self.ws_url = f"ws://127.0.0.1:{sd_port}/ws"
        self.mediator_backend_port = backend_port
        env = node_environ(
            {"CREDO_LOG_LEVEL": "info", **self.secret_env()}, transport=self.transport_modules
        )
        return self.spawn(Agents("credo mediator"), [NODE, str(HERE / "agents.js")], env, workdir)

    @inlineCallbacks
    def mediator_invitation(self, mediator, step):
        yield step(mediator.wait_for("EVENT started"), "the Credo mediator script", START)
        mediator.command(f"mediator {self.mediator_backend_port} {self.ws_url}")
        end = yield step(
            mediator.wait_for("EVENT mediator-invitation "), "the Credo mediator", START
        )
        return mediator.text()[end:].split("\n", 1)[0].strip()


class ACApyMediatorTests(ACApyMediator, CrashStory, TestCase):
    """ACA-Py mediator; SocketDock with no secret and no token."""


class ACApyMediatorSignedTests(ACApyMediator, TestCase):
    """ACA-Py mediator; SocketDock with ``signing_secret`` and ``api_token``, the transport too."""

    signing_secret = "integration-signing-secret"
    api_token = "integration-api-token"
    goodbye = "drop"  # and the wallet's connection drops without a close frame


class CredoMediatorTests(CredoMediator, CrashStory, TestCase):
    """Credo mediator; SocketDock with no secret and no token."""


class CredoMediatorSignedTests(CredoMediator, TestCase):
    """Credo mediator; SocketDock with ``signing_secret`` and ``api_token``, the transport too."""

    signing_secret = "integration-signing-secret"
    api_token = "integration-api-token"
    goodbye = "drop"  # and the wallet's connection drops without a close frame
