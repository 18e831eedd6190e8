"""
Batched TCP transports over real loopback sockets: what a read writes goes
out when the read ends, and everything Twisted promises about a transport's
writes still holds.
"""

from __future__ import annotations

import socket
from collections.abc import Generator
from typing import Any

from twisted.internet import reactor, ssl, tcp
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import HostnameEndpoint, serverFromString, wrapClientTLS
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IPullProducer,
    IPushProducer,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from socketdock.tuned.batchedtcp import BatchingReactor, batching
from tests.certs import make_ca
from tests.fakebackend import FakeBackend, start_backend, stop_backend
from tests.harness import stack_with, start_relay
from tests.wsclient import connect_client

# Larger than a loopback socket's send and receive buffers together, so the
# kernel cannot take it in one send.
BIG = bytes(range(256)) * (32 * 1024)


class Peer(Protocol):
    """The far end: keeps what arrives; ``closed`` fires with it and the reason."""

    transport: Any  # a real TCP or TLS transport: the tests reach into it

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: Deferred = Deferred()
        self._waiters: list[tuple[int, Deferred]] = []

    def wait_received(self, count: int) -> Deferred:
        """Fires once ``count`` bytes have arrived."""
        if len(self.received) >= count:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiters.append((count, d))
        return d

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for waiter in [w for w in self._waiters if w[0] <= len(self.received)]:
            self._waiters.remove(waiter)
            waiter[1].callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback((bytes(self.received), reason))


class Scripted(Protocol):
    """A server connection that runs ``on_read(self)`` for each read."""

    transport: Any  # a real batched TCP transport: the tests reach into it

    def __init__(self, on_read) -> None:
        self.on_read = on_read
        self.lost: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.on_read(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(reason.value)


class ScriptedFactory(Factory):
    """Builds :class:`Scripted` connections and keeps them in ``built``, in order."""

    def __init__(self, on_read, built: list) -> None:
        self.on_read = on_read
        self.built = built

    def buildProtocol(self, addr) -> Scripted:
        protocol = Scripted(self.on_read)
        protocol.factory = self
        self.built.append(protocol)
        return protocol


def next_turn():
    """Fires on the reactor's next turn, before it polls again."""
    return deferLater(reactor, 0, lambda: None)


class BatchedTCPTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.net = BatchingReactor(reactor)  # type: ignore[arg-type]  # the installed reactor is a PosixReactorBase
        self.servers: list[Scripted] = []

    def listen(self, on_read) -> int:
        """A batched listener whose connections run ``on_read``; its port."""
        port = self.net.listenTCP(0, ScriptedFactory(on_read, self.servers), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @inlineCallbacks
    def exchange(self, on_read):
        """Connect, send one read's worth, and wait for the close: (bytes received, reason)."""
        peer = yield self.connect(self.listen(on_read))
        return (yield peer.closed)

    @inlineCallbacks
    def connect(self, port: int, first: bytes = b"go"):
        peer = Peer()
        yield HostnameEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: peer)
        )
        self.addCleanup(
            lambda: peer.transport.abortConnection() if peer.transport.connected else None
        )
        if first:
            peer.transport.write(first)
        return peer

    @inlineCallbacks
    def test_writes_made_while_reading_are_sent_when_the_read_ends(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """All of a read's writes are sent before the reactor turns: no watch armed."""
        armed = []

        def on_read(server):
            server.transport.write(b"a")
            server.transport.writeSequence([b"b", b"", b"c"])
            server.transport.write(b"d")
            next_turn().addCallback(
                lambda _: armed.append(server.transport in reactor.getWriters())
            )
            next_turn().addCallback(lambda _: server.transport.loseConnection())

        received, reason = yield self.exchange(on_read)
        self.assertEqual(received, b"abcd")
        self.assertEqual(armed, [False])
        reason.trap(ConnectionDone)

    @inlineCallbacks
    def test_writes_made_outside_a_read_take_twisteds_path(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """A write from a timer arms the watch, and the bytes still arrive."""
        armed = []

        def on_read(server):
            def later():
                server.transport.write(b"late")
                armed.append(server.transport in reactor.getWriters())
                server.transport.loseConnection()

            reactor.callLater(0, later)

        received, _ = yield self.exchange(on_read)
        self.assertEqual((received, armed), (b"late", [True]))

    @inlineCallbacks
    def test_a_read_on_one_connection_sends_what_it_wrote_to_another(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """As a send request writes a frame to a client: it is sent with the read's own."""
        armed = []

        def on_read(server):
            other = self.servers[0].transport
            other.write(b"frame")
            server.transport.write(b"200")
            next_turn().addCallback(lambda _: armed.append(other in reactor.getWriters()))
            next_turn().addCallback(lambda _: [s.transport.loseConnection() for s in self.servers])

        port = self.listen(on_read)
        quiet = yield self.connect(port, first=b"")
        yield self.connect(port)
        received, _ = yield quiet.closed
        self.assertEqual((received, armed), (b"frame", [False]))

    @inlineCallbacks
    def test_what_the_kernel_does_not_take_follows_in_order(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """A write larger than the socket buffers is finished by Twisted's doWrite."""
        armed = []

        def on_read(server):
            server.transport.write(BIG)
            server.transport.write(b"END")
            next_turn().addCallback(
                lambda _: armed.append(server.transport in reactor.getWriters())
            )
            server.transport.loseConnection()

        received, reason = yield self.exchange(on_read)
        self.assertEqual(len(received), len(BIG) + 3)
        self.assertTrue(received == BIG + b"END")
        self.assertEqual(armed, [True])
        reason.trap(ConnectionDone)

    @inlineCallbacks
    def test_a_streaming_producer_is_paused_and_then_resumed(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """Past bufferSize the producer pauses; once the bytes are out it resumes."""
        calls = []

        @implementer(IPushProducer)
        class Producer:
            def __init__(self, transport):
                self.transport = transport

            def pauseProducing(self):
                calls.append("pause")

            def resumeProducing(self):
                calls.append("resume")
                self.transport.unregisterProducer()
                self.transport.loseConnection()

            def stopProducing(self):
                calls.append("stop")

        def on_read(server):
            server.transport.registerProducer(Producer(server.transport), True)
            server.transport.write(BIG)

        received, _ = yield self.exchange(on_read)
        self.assertEqual(len(received), len(BIG))
        self.assertEqual(calls, ["pause", "resume"])

    @inlineCallbacks
    def test_a_pull_producer_is_asked_for_more_after_each_send(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """A pull producer's next chunk is asked for once the last one is sent."""

        @implementer(IPullProducer)
        class Counter:
            def __init__(self, transport):
                self.transport = transport
                self.n = 0

            def resumeProducing(self):
                self.transport.write(b"%d" % self.n)
                self.n += 1
                if self.n == 3:
                    self.transport.unregisterProducer()
                    self.transport.loseConnection()

            def stopProducing(self):
                pass

        def on_read(server):
            # Registering a pull producer asks it for the first chunk at once,
            # inside this read; the rest are asked for by doWrite.
            server.transport.registerProducer(Counter(server.transport), False)

        received, reason = yield self.exchange(on_read)
        self.assertEqual(received, b"012")
        reason.trap(ConnectionDone)

    @inlineCallbacks
    def test_lose_connection_closes_after_the_gathered_bytes(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        def on_read(server):
            server.transport.write(b"bye")
            server.transport.loseConnection()

        received, reason = yield self.exchange(on_read)
        self.assertEqual(received, b"bye")
        reason.trap(ConnectionDone)
        self.assertIsInstance((yield self.servers[0].lost), ConnectionDone)

    @inlineCallbacks
    def test_lose_write_connection_half_closes_after_the_gathered_bytes(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """The peer reads the bytes, then end of file."""

        def on_read(server):
            server.transport.write(b"half")
            server.transport.loseWriteConnection()

        received, reason = yield self.exchange(on_read)
        self.assertEqual(received, b"half")
        reason.trap(ConnectionDone)

    @inlineCallbacks
    def test_abort_drops_what_was_gathered(self) -> Generator[Deferred[Any], Any, None]:
        def on_read(server):
            server.transport.write(b"never")
            server.transport.abortConnection()

        received, _ = yield self.exchange(on_read)
        self.assertEqual(received, b"")
        self.assertIsInstance((yield self.servers[0].lost), ConnectionAborted)

    @inlineCallbacks
    def test_a_failed_send_is_reported_as_the_connections_loss(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """The send error is left to doWrite, which reports the loss as Twisted always has."""

        def on_read(server):
            server.transport.socket.shutdown(socket.SHUT_WR)
            server.transport.write(b"into a closed pipe")

        yield self.connect(self.listen(on_read))
        self.assertIsInstance((yield self.servers[0].lost), ConnectionLost)
        self.assertEqual(self.flushLoggedErrors(), [])

    @inlineCallbacks
    def test_an_unexpected_failure_aborts_only_its_own_connection(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """The error is logged, that connection aborted, and the next one still sent."""

        class Broken:
            def __init__(self, sock):
                self._sock = sock

            def send(self, data):
                raise RuntimeError("broken socket")

            def __getattr__(self, name):
                return getattr(self._sock, name)

        def on_read(server):
            first, second = self.servers[0].transport, self.servers[1].transport
            first.socket = Broken(first.socket)
            first.write(b"lost")
            second.write(b"sent")
            second.loseConnection()

        port = self.listen(on_read)
        broken = yield self.connect(port, first=b"")
        peer = yield self.connect(port)
        received, _ = yield peer.closed
        self.assertEqual(received, b"sent")
        self.assertIsInstance((yield self.servers[0].lost), ConnectionAborted)
        lost, _ = yield broken.closed
        self.assertEqual(lost, b"")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @inlineCallbacks
    def test_writing_text_is_refused_as_twisted_refuses_it(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        refused = []

        def on_read(server):
            for write in (
                lambda: server.transport.write("text"),
                lambda: server.transport.writeSequence([b"ok", "text"]),
            ):
                try:
                    write()
                except TypeError:
                    refused.append(True)
            server.transport.loseConnection()

        received, _ = yield self.exchange(on_read)
        self.assertEqual((received, refused), (b"", [True, True]))

    @inlineCallbacks
    def test_tls_both_ways(self) -> Generator[Deferred[Any], Any, None]:
        """``ssl:`` listeners and TLS client connections work over batched transports."""
        ca = make_ca()
        key, cert = ca.issue(["127.0.0.1"]).write(self.mktemp())
        factory = Factory.forProtocol(lambda: Scripted(lambda s: s.transport.write(b"over tls")))
        port = yield serverFromString(
            self.net, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        ).listen(factory)
        self.addCleanup(port.stopListening)
        trust = ssl.Certificate.loadPEM(ca.cert_pem())
        endpoint = wrapClientTLS(
            ssl.optionsForClientTLS("127.0.0.1", trust),
            HostnameEndpoint(self.net, "127.0.0.1", port.getHost().port),
        )
        peer = Peer()
        yield endpoint.connect(Factory.forProtocol(lambda: peer))
        self.assertEqual(type(peer.transport.transport).__name__, "_BatchedClient")
        peer.transport.write(b"hello")
        yield peer.wait_received(len(b"over tls"))
        self.assertEqual(bytes(peer.received), b"over tls")
        peer.transport.loseConnection()
        yield peer.closed


class BatchingTests(TestCase):
    def test_socket_reactors_are_wrapped_with_their_interfaces(self) -> None:
        net = batching(reactor)
        self.assertIsInstance(net, BatchingReactor)
        for interface in (IReactorTCP, IReactorTime, IReactorPluggableNameResolver):
            self.assertTrue(interface.providedBy(net), interface)
        self.assertEqual(net.callLater, reactor.callLater)

    def test_other_reactors_are_left_as_they_are(self) -> None:
        memory = MemoryReactorClock()
        self.assertIs(batching(memory), memory)


class RelayWiringTests(TestCase):
    """make_service uses batching(reactor), so every end-to-end test of the relay runs over it."""

    @inlineCallbacks
    def test_the_listener_and_the_backend_connections_are_batched(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        backend = FakeBackend(reactor)
        backend_port, url = yield start_backend(reactor, backend)
        self.addCleanup(stop_backend, backend_port, backend)
        relay = start_relay(
            self,
            reactor,
            backend="http",
            messageuri=url + "/message",
            ping_interval=0,
            stack=stack_with("network"),
        )
        client = yield connect_client(reactor, relay.ws_url())
        self.addCleanup(client.shutdown)
        client.send_text("hello")
        yield backend.wait_for("message", 1)
        relay_side = {
            type(r).__name__
            for r in reactor.getReaders()
            if isinstance(r, (tcp.Port, tcp.Server)) and r.getHost().port == relay.port
        }
        self.assertEqual(relay_side, {"_BatchedPort", "_BatchedServer"})
        to_backend = {
            type(r).__name__
            for r in reactor.getReaders()
            if isinstance(r, tcp.Client) and r.getPeer().port == backend_port.getHost().port
        }
        self.assertEqual(to_backend, {"_BatchedClient"})
