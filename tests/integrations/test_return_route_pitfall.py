"""
The return-route pitfall of integrations/credo/README.rst, shown with real
processes: a Credo mediator behind SocketDock whose transport holds each
``/message`` POST open for a return-routed reply (tests/integrations/
holding_transport.js, the design the README warns against) against the
transport in integrations/credo, which answers at once.

SocketDock runs with ``inline_reply`` on (what the holding design needs), a
short ``backend_timeout`` and one retry, so the story is quick:

- holding: a message with no prompt return-routed reply times out, SocketDock
  sends it again (same ``seq``), Credo handles it a second time and fails
  ("Error handling message"), and once the retry times out as well SocketDock
  closes the wallet's socket with 1011, initiator ``backend``;
- answering at once: with the same SocketDock settings mediation is granted,
  nothing is retried and no socket is closed with 1011.
"""

from __future__ import annotations

import os
import re

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.daemon import spawn_socketdock, started
from tests.integrations.support import (
    HERE,
    NODE,
    Agents,
    credo_missing,
    install_credo_transport,
    node_environ,
    port_for_an_agent,
    within,
)

STEP = 60


class ReturnRoutePitfallTests(TestCase):
    skip = credo_missing()
    timeout = 180

    @inlineCallbacks
    def start(self, transport=None):
        """SocketDock + a Credo mediator (with ``transport``) + a wallet asking for mediation."""
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        backend_port = port_for_an_agent()
        backend = f"http://127.0.0.1:{backend_port}"
        self.socketdock = spawn_socketdock(
            self,
            reactor,
            "--backend",
            "http",
            "--bindport",
            "0",
            "--connecturi",
            backend + "/connect",
            "--messageuri",
            backend + "/message",
            "--disconnecturi",
            backend + "/disconnect",
            "--inline-reply",
            "true",
            "--backend-timeout",
            "2",
            "--backend-retries",
            "1",
        )
        modules = yield Deferred.fromCoroutine(install_credo_transport(self, reactor))
        env = {"CREDO_LOG_LEVEL": "info"}
        if transport:
            env["SOCKETDOCK_CREDO_TRANSPORT"] = transport
        self.mediator = Agents("credo mediator")
        self.agents = Agents("credo wallet")
        assert NODE is not None  # skipped otherwise (credo_missing)
        for process, extra in ((self.mediator, env), (self.agents, {})):
            reactor.spawnProcess(
                process,
                NODE,
                [NODE, str(HERE / "agents.js")],
                env=node_environ(extra, transport=modules),
                path=workdir,
            )
            self.addCleanup(process.stop)
        self.logs = (self.agents, self.mediator, self.socketdock)
        for logged in self.logs:  # kept in _trial_temp for a look afterwards
            self.addCleanup(self.save_output, logged, workdir)

        sd_port = yield self.step(
            Deferred.fromCoroutine(started(reactor, self.socketdock)), "SocketDock to start"
        )
        yield self.step(self.mediator.wait_for("EVENT started"), "the mediator script")
        yield self.step(self.agents.wait_for("EVENT started"), "the wallet script")
        self.mediator.command(f"mediator {backend_port} ws://127.0.0.1:{sd_port}/ws")
        end = yield self.step(self.mediator.wait_for("EVENT mediator-invitation "), "the mediator")
        url = self.mediator.text()[end:].split("\n", 1)[0].strip()
        self.agents.command(f"wallet {url} PickUpV2LiveMode")

    @staticmethod
    def save_output(process, workdir):
        with open(os.path.join(workdir, process.name.replace(" ", "-") + ".log"), "wb") as f:
            f.write(bytes(process.output))

    def step(self, d, what):
        return within(reactor, STEP, d, what, *self.logs)

    def resent(self):
        """A ``seq`` the holding transport received twice on one connection."""
        seen = re.findall(r"holding transport: message seq (\d+) on (\w+)", self.mediator.text())
        return len(seen) != len(set(seen))

    @inlineCallbacks
    def test_holding_the_post_gets_messages_handled_twice_and_the_wallet_closed(self):
        yield self.start(str(HERE / "holding_transport.js"))
        yield self.step(
            self.mediator.wait_until(self.resent),
            "SocketDock to time out and send a held message again (same seq)",
        )
        yield self.step(
            self.mediator.wait_for("Error handling message"), "Credo to fail on the second copy"
        )
        yield self.step(
            self.mediator.wait_for("closed (code 1011, initiator backend)"),
            "SocketDock to give up and close the wallet's socket with 1011",
        )

    @inlineCallbacks
    def test_answering_at_once_with_the_same_settings(self):
        yield self.start()
        yield self.step(self.agents.wait_for("EVENT mediation-ready"), "mediation to be granted")
        self.agents.command("ping")
        yield self.step(self.agents.wait_for("EVENT ping-response"), "the trust ping response")
        self.assertNotIn("retry of one already taken", self.mediator.text())
        self.assertNotIn("closed (code 1011", self.mediator.text())
        self.assertNotIn("Error handling message", self.mediator.text())
        self.assertNotIn("EVENT error", self.agents.text())
