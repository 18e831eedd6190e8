"""
TCP transports that send what a read made them write when that read ends.

Twisted's transport buffers every ``write`` and asks the reactor to watch the
socket for writability: with epoll that is one ``epoll_ctl`` to arm the
watch, a trip round the reactor loop, the send, and another ``epoll_ctl`` to
disarm it.  A relayed round trip makes three such writes (the POST to the
backend, the frame to the client, the answer to ``send``): six of its twelve
system calls were ``epoll_ctl``, and each write took a reactor dispatch of
its own.

Almost every write the relay makes happens while the reactor is in some
transport's ``doRead``: a frame arrives and the POST goes out, a ``send``
request arrives and the frame and the answer go out.  So the transports made
here gather the writes made during a read of any of them, and when the
outermost read ends they send each connection's gathered bytes with one
``send`` call.  Only what the kernel does not take right away (or a close,
half-close or producer waiting behind the bytes) goes back to Twisted's own
path: the watch is armed and ``doWrite`` finishes the job as usual.  Writes
made outside such a read (timers, connection set-up) take Twisted's path
unchanged.

The order of bytes on a connection, backpressure (``pauseProducing`` when
the buffer passes ``bufferSize``), ``loseConnection`` after the last byte,
and ``abortConnection`` dropping what is buffered all stay as Twisted has
them; the tests in ``tests/test_batchedtcp.py`` hold each of them over real
sockets.  This leans on ``FileDescriptor``'s buffer attributes, which have
been stable since Twisted 12; those tests are what would notice a change.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from inspect import signature
from typing import TYPE_CHECKING

from twisted.internet import tcp
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import directlyProvides, providedBy

from socketdock.tuned import require, require_attributes


class WriteBatch:
    """
    The transports written to during the read now running, in write order.

    One per reactor: a read on one connection writes to others (a ``send``
    request writes to the client it names), and all of them are sent when
    that read ends.
    """

    _log = Logger()

    def __init__(self) -> None:
        self.reading = False
        self._gathered: list[_SendAfterRead] = []

    def add(self, transport: _SendAfterRead) -> None:
        self._gathered.append(transport)

    def flush(self) -> None:
        """
        Send what each transport gathered, in the order they were first
        written to.  A transport that fails unexpectedly is logged and
        aborted, and does not keep the others from sending.
        """
        while self._gathered:
            gathered, self._gathered = self._gathered, []
            for transport in gathered:
                try:
                    transport._send_gathered()
                except Exception:
                    self._log.failure(
                        "sending to {peer} failed; aborting that connection",
                        peer=transport.getPeer(),
                    )
                    transport.abortConnection()


if TYPE_CHECKING:
    # What the mixin leans on: tcp.Connection's buffer attributes and methods.
    _ConnectionBase = tcp.Connection
else:
    _ConnectionBase = object


class _SendAfterRead(_ConnectionBase):
    """
    Mixin for a ``tcp.Connection``: writes made while a batch is reading are
    gathered in Twisted's own buffer, and sent by :meth:`_send_gathered`.
    """

    _batch: WriteBatch
    _gathering = False

    def write(self, data: bytes) -> None:
        batch = self._batch
        if (
            not batch.reading
            or type(data) is not bytes
            or not self.connected
            or self._writeDisconnected
        ):
            super().write(data)
        elif data:
            self._gather(data)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        iovec = list(iovec)
        if (
            not self._batch.reading
            or not self.connected
            or self._writeDisconnected
            or (iovec and set(map(type, iovec)) != {bytes})
        ):
            super().writeSequence(iovec)  # Twisted's path, and its TypeError for text
            return
        # twisted.web hands over a response head in ~20 pieces: gather one.
        data = b"".join(iovec)
        if data:
            self._gather(data)

    def _gather(self, data: bytes) -> None:
        """Buffer ``data`` as Twisted's write does, without arming the watch."""
        self._tempDataBuffer.append(data)
        self._tempDataLen += len(data)
        self._maybePauseProducer()
        if not self._gathering:
            self._gathering = True
            self._batch.add(self)

    def doRead(self):
        batch = self._batch
        if batch.reading:
            return super().doRead()
        batch.reading = True
        try:
            return super().doRead()
        finally:
            batch.reading = False
            batch.flush()

    def _send_gathered(self) -> None:
        """
        Send the buffer now; leave to ``doWrite`` only what cannot be done
        here.
        """
        self._gathering = False
        if not self.connected or self._aborting or not self._tempDataLen:
            return
        if self.offset < len(self.dataBuffer):
            # Older bytes are still waiting for the socket: the watch is
            # armed, and doWrite sends these after them.
            self.startWriting()
            return
        chunks = self._tempDataBuffer
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._tempDataBuffer = []
        self._tempDataLen = 0
        try:
            sent = self.socket.send(data)
        except OSError:
            # EAGAIN, or an error that doWrite meets again and reports as
            # the connection's loss, as it would have without us.
            sent = 0
        if sent < len(data):
            self.dataBuffer = data
            self.offset = sent
            self.startWriting()
        elif self.producer is not None and (not self.streamingProducer or self.producerPaused):
            # With the buffer empty, doWrite asks the producer for more,
            # exactly as after its own send.  (A close or half-close asked
            # for armed the watch itself; doWrite finishes it the same way.)
            self.startWriting()


class _BatchedServer(_SendAfterRead, tcp.Server):
    """An accepted connection whose reads share its port's batch."""

    def __init__(self, sock, protocol, client, server: _BatchedPort, sessionno, reactor) -> None:
        self._batch = server._batch
        super().__init__(sock, protocol, client, server, sessionno, reactor)


class _BatchedClient(_SendAfterRead, tcp.Client):
    """An outgoing connection whose reads share its connector's batch."""

    def __init__(self, host, port, bindAddress, connector: _BatchedConnector, reactor) -> None:
        self._batch = connector._batch
        super().__init__(host, port, bindAddress, connector, reactor)


class _BatchedPort(tcp.Port):
    # Narrower constructor (server: _BatchedPort): only this port builds it, passing itself.
    transport = _BatchedServer  # type: ignore[assignment]

    def __init__(self, port, factory, backlog, interface, reactor, batch: WriteBatch) -> None:
        super().__init__(port, factory, backlog, interface, reactor)
        self._batch = batch


class _BatchedConnector(tcp.Connector):
    def __init__(
        self, host, port, factory, timeout, bindAddress, reactor, batch: WriteBatch
    ) -> None:
        super().__init__(host, port, factory, timeout, bindAddress, reactor)
        self._batch = batch

    def _makeTransport(self) -> _BatchedClient:
        return _BatchedClient(self.host, self.port, self.bindAddress, self, self.reactor)


class BatchingReactor:
    """
    The reactor as endpoints see it, except that its TCP listeners and
    connections are batched.  Hand it to ``serverFromString`` and to client
    endpoints; everything else is the reactor's own.
    """

    def __init__(self, reactor: PosixReactorBase) -> None:
        self._reactor = reactor
        self._batch = WriteBatch()
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str):
        return getattr(self._reactor, name)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        listener = _BatchedPort(port, factory, backlog, interface, self._reactor, self._batch)
        listener.startListening()
        return listener

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        # As Twisted's reactor does it: TLS in memory over a plain TCP listener.
        listener = self.listenTCP(
            port, TLSMemoryBIOFactory(contextFactory, False, factory), backlog, interface
        )
        listener._type = "TLS"
        return listener

    def connectTCP(self, host, port, factory, timeout=30.0, bindAddress=None):
        connector = _BatchedConnector(
            host, port, factory, timeout, bindAddress, self._reactor, self._batch
        )
        connector.connect()
        return connector


def batching(reactor):
    """
    ``reactor`` with batched TCP (see the module's docstring) when it is one
    of Twisted's socket reactors; any other reactor (a test's memory reactor)
    as it is.
    """
    if isinstance(reactor, PosixReactorBase):
        return BatchingReactor(reactor)
    return reactor


#: What :class:`_SendAfterRead` reads or calls on a Twisted TCP connection.
_CONNECTION_INTERNALS = (
    "_tempDataBuffer",
    "_tempDataLen",
    "_maybePauseProducer",
    "_writeDisconnected",
    "_aborting",
    "dataBuffer",
    "offset",
    "socket",
    "producer",
    "streamingProducer",
    "producerPaused",
    "startWriting",
    "doRead",
    "connected",
)


class _FakeFDSet:
    """Enough of ``IReactorFDSet`` to build a connection that is never run."""

    def __init__(self) -> None:
        self.writers: set = set()

    def addReader(self, reader) -> None:
        pass

    def removeReader(self, reader) -> None:
        pass

    def addWriter(self, writer) -> None:
        self.writers.add(writer)

    def removeWriter(self, writer) -> None:
        self.writers.discard(writer)


class _Replies(Protocol):
    """Writes a few replies, in pieces, for every read."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"head:" + data)
        self.transport.writeSequence([b"-", data[:1], b"", data[1:]])
        self.transport.write(b"")


def check_batching() -> None:
    """
    The batched transports hold where Twisted's TCP connection still keeps
    the buffer attributes they use and its constructors take the same
    arguments: a batched connection over a socket pair sends what a read
    wrote byte for byte, with one send and no writability watch, and leaves
    a write made outside a read to Twisted's own path.
    """
    for cls, params in (
        (tcp.Server, ("sock", "protocol", "client", "server", "sessionno", "reactor")),
        (tcp.Client, ("host", "port", "bindAddress", "connector", "reactor")),
        (tcp.Port, ("port", "factory", "backlog", "interface", "reactor")),
        (tcp.Connector, ("host", "port", "factory", "timeout", "bindAddress", "reactor")),
    ):
        got = tuple(signature(cls.__init__).parameters)[1:]
        require(got == params, f"twisted.internet.tcp.{cls.__name__} takes {got}, not {params}")
    require_attributes(tcp.Connector, ("_makeTransport",), "twisted.internet.tcp.Connector")
    require(
        getattr(tcp.Port, "transport", None) is tcp.Server, "tcp.Port no longer builds tcp.Server"
    )
    ours, theirs = socket.socketpair()
    try:
        fds = _FakeFDSet()
        port = _PortStandIn(WriteBatch())
        connection = _BatchedServer(ours, _Replies(), ("127.0.0.1", 1), port, 1, fds)  # type: ignore[arg-type]
        connection.protocol.makeConnection(connection)
        require_attributes(connection, _CONNECTION_INTERNALS, "a Twisted TCP connection")
        theirs.sendall(b"ping")
        connection.doRead()
        expected = b"head:ping-ping"
        require(
            _read_exactly(theirs, len(expected)) == expected,
            "a batched write lost or reordered bytes",
        )
        require(not fds.writers, "a batched write armed the writability watch")
        connection.write(b"later")
        require(fds.writers == {connection}, "a write outside a read did not take Twisted's path")
        connection.doWrite()
        require(_read_exactly(theirs, 5) == b"later", "Twisted's path lost the bytes after a batch")
    finally:
        ours.close()
        theirs.close()


class _PortStandIn:
    """What a batched server connection asks of its port."""

    _realPortNumber = 0

    def __init__(self, batch: WriteBatch) -> None:
        self._batch = batch


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(1)
    got = b""
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        if not chunk:
            break
        got += chunk
    return got
