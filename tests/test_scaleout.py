"""
Scale-out with a real load balancer: three SocketDock instances (real twistd
processes, each with its own ``externalhostandport``) behind HAProxy, one
backend.  As in etc/, HAProxy speaks the PROXY protocol (``send-proxy``) to
each instance's ``haproxy:`` listener, and the callback API has a listener of
its own.  Every wait is on a Deferred (a frame, a request, a log line, an
exit), bounded by the class ``timeout``.
"""

from __future__ import annotations

import collections
import json
import shutil
import socket
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import TestCase

from tests.daemon import get, ready, spawn, spawn_socketdock
from tests.fakebackend import STALL, Answer, FakeBackend, start_backend, stop_backend
from tests.wsclient import connect_client

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")

#: Like etc/haproxy.cfg (send-proxy included), with loopback-only addresses, fast checks, and the
#: listening socket handed over as fd 3 (bound before HAProxy starts, so no
#: readiness wait is needed: the kernel queues connections until it accepts).
HAPROXY_TEMPLATE = """\
global
    log stdout format raw local0 info
    maxconn 1000
    nbthread 1
defaults
    mode http
    log global
    option dontlognull
    option redispatch
    retries 2
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout tunnel 60s
frontend websocket
    bind fd@3
    http-request deny deny_status 404 unless {{ path /ws }}
    default_backend socketdock
backend socketdock
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 200ms fall 1 rise 1
{servers}
"""

NAMES = ("a", "b", "c")


class Instance:
    """
    One SocketDock process and where it can be reached: ``port`` takes WebSocket
    clients from HAProxy (PROXY protocol), ``base`` is its callback API.
    """

    def __init__(self, name: str, port: int, api_port: int, process) -> None:
        self.name = name
        self.port = port
        self.api_port = api_port
        self.process = process
        self.base = f"http://127.0.0.1:{api_port}"


class ScaleOutTests(TestCase):
    """Three instances behind HAProxy, one FakeBackend."""

    timeout = 90
    if HAPROXY is None:
        skip = "haproxy is not installed (apt-get install haproxy; .ci/run installs it)"

    @inlineCallbacks
    def setUp(self):  # type: ignore[override]  # trial waits on a Deferred from setUp
        self.backend = FakeBackend(reactor)
        port, url = yield start_backend(reactor, self.backend)
        self.addCleanup(stop_backend, port, self.backend)
        processes = {
            name: spawn_socketdock(
                self,
                reactor,
                "--listen",
                "haproxy:tcp:0:interface=127.0.0.1",
                "--api-listen",
                "tcp:0:interface=127.0.0.1",
                "--backend",
                "http",
                "--messageuri",
                url + "/message",
                "--disconnecturi",
                url + "/disconnect",
                "--ping-interval",
                "0",
                "--shutdown-timeout",
                "60",
                name=f"socketdock-{name}",
            )
            for name in NAMES
        }
        started = yield gatherResults(
            [Deferred.fromCoroutine(self._ready(name, p)) for name, p in processes.items()]
        )
        self.instances = {instance.name: instance for instance in started}
        self.haproxy, self.lb_port = self._start_haproxy()

    async def _ready(self, name, process):
        """Once it listens: the ports it bound (port 0, so the OS picked them)."""
        port = await process.port("listen")
        api_port = await process.port("api_listen")
        instance = Instance(name, port, api_port, process)
        await ready(reactor, process, instance.base)
        return instance

    def _start_haproxy(self):
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        servers = "\n".join(
            f"    server {i.name} 127.0.0.1:{i.port} send-proxy" for i in self.instances.values()
        )
        config = directory / "haproxy.cfg"
        config.write_text(HAPROXY_TEMPLATE.format(servers=servers))
        listening = socket.socket()
        try:
            listening.bind(("127.0.0.1", 0))
            listening.listen(128)
            assert HAPROXY is not None  # the test skips without it
            process = spawn(
                self,
                reactor,
                "haproxy",
                [HAPROXY, "-db", "-f", str(config)],
                extra_fds={3: listening.fileno()},
            )
            return process, listening.getsockname()[1]
        finally:
            listening.close()  # HAProxy holds its own copy

    # -- helpers ----------------------------------------------------------

    @inlineCallbacks
    def connect(self, count):
        """``count`` clients through HAProxy, one after the other."""
        clients = []
        for _ in range(count):
            client = yield connect_client(reactor, f"ws://127.0.0.1:{self.lb_port}/ws")
            self.addCleanup(client.shutdown)
            clients.append(client)
        return clients

    @inlineCallbacks
    def locate(self, clients, tag):
        """
        Each client says hello; returns the backend's message for each, in
        order (its ``meta.send`` names the instance that holds the client).
        """
        found = []
        for n, client in enumerate(clients):
            before = len(self.backend.messages)
            client.send_text(f"{tag}-{n}")
            messages = yield self.backend.wait_for("message", before + 1)
            (message,) = [m for m in messages[before:] if m["message"] == f"{tag}-{n}"]
            found.append(message)
        return found

    def holder(self, message) -> Instance:
        base = message["meta"]["send"].split("/socket/")[0]
        (instance,) = [i for i in self.instances.values() if i.base == base]
        return instance

    @inlineCallbacks
    def assert_replies_reach(self, clients, messages):
        """The backend answers each message through its send URL; the right client gets it."""
        for client, message in zip(clients, messages, strict=True):
            reply = ("re:" + message["message"]).encode()
            code, _ = yield self.backend.post_send(message["meta"]["send"], reply)
            self.assertEqual(code, 200)
            self.assertEqual((yield client.next_message()), (reply, False))

    # -- tests ------------------------------------------------------------

    @inlineCallbacks
    def test_spread_and_callbacks_name_the_holder(self):
        """Clients spread over the instances; meta.send names the holder; replies reach the right client."""
        clients = yield self.connect(6)
        messages = yield self.locate(clients, "hello")
        holders = [self.holder(m) for m in messages]
        self.assertEqual(collections.Counter(h.name for h in holders), {"a": 2, "b": 2, "c": 2})
        for message, holder in zip(messages, holders, strict=True):
            cid = message["meta"]["connection_id"]
            for instance in self.instances.values():
                code, _ = yield get(reactor, f"{instance.base}/socket/{cid}")
                self.assertEqual(code, 200 if instance is holder else 404)
        yield self.assert_replies_reach(clients, messages)

    @inlineCallbacks
    def test_remote_is_the_clients_address(self):
        """Through HAProxy's PROXY protocol, GET /socket/<id> shows each client's own address."""
        clients = yield self.connect(3)
        messages = yield self.locate(clients, "who")
        self.assertEqual({self.holder(m).name for m in messages}, set(NAMES))
        for client, message in zip(clients, messages, strict=True):
            local = client.protocol.transport.getHost()
            code, body = yield get(
                reactor, f"{self.holder(message).base}/socket/{message['meta']['connection_id']}"
            )
            self.assertEqual(code, 200)
            self.assertEqual(json.loads(body)["remote"], f"tcp4:{local.host}:{local.port}")

    @inlineCallbacks
    def test_kill_and_terminate(self):
        """SIGKILL drops one instance's clients only; SIGTERM drains another with 1001 and /readyz 503."""
        clients = yield self.connect(6)
        messages = yield self.locate(clients, "hello")
        on = collections.defaultdict(list)
        for client, message in zip(clients, messages, strict=True):
            on[self.holder(message).name].append((client, message))
        killed, stopped, kept = (self.instances[n] for n in NAMES)

        # SIGKILL: no close frame, the callback URLs refuse connections.
        killed.process.signal("KILL")
        self.assertEqual((yield killed.process.exited), (None, 9))
        for client, message in on[killed.name]:
            was_clean, code, _ = yield client.closed
            self.assertFalse(was_clean)
            self.assertNotEqual(code, 1001)
            yield self.assertFailure(
                self.backend.post_send(message["meta"]["send"], b"anyone?"), ConnectionRefusedError
            )
        survivors = [pair for name in (stopped.name, kept.name) for pair in on[name]]
        yield self.assert_replies_reach([c for c, _ in survivors], [m for _, m in survivors])
        yield self.haproxy.wait_for(f"socketdock/{killed.name} is DOWN")
        again = yield self.connect(4)
        holders = [self.holder(m) for m in (yield self.locate(again, "again"))]
        self.assertEqual({h.name for h in holders}, {stopped.name, kept.name})

        # SIGTERM while a message of one of its clients is stalled at the backend.
        client, _ = on[stopped.name][0]
        self.backend.answer_next("message", STALL)
        before = len(self.backend.messages)
        client.send_text("slow")
        yield self.backend.wait_for("message", before + 1)
        stopped_clients = [c for c, _ in on[stopped.name]] + [
            c for c, h in zip(again, holders, strict=True) if h is stopped
        ]
        stopped.process.signal("TERM")
        for c in stopped_clients:
            _, code, _ = yield c.closed
            self.assertEqual(code, 1001)
        code, body = yield get(reactor, stopped.base + "/readyz")
        self.assertEqual((code, body), (503, b"draining\n"))
        yield self.haproxy.wait_for(f"socketdock/{stopped.name} is DOWN")
        late = yield self.connect(2)
        holders = [self.holder(m) for m in (yield self.locate(late, "late"))]
        self.assertEqual({h.name for h in holders}, {kept.name})
        self.assertTrue(stopped.process.running)
        self.backend.release(self.backend.stalled[0], Answer())
        self.assertEqual((yield stopped.process.exited), (0, None))
        self.assertTrue(kept.process.running)
