"""
CPU of the WebSocket protocol alone, no sockets and no HTTP:

    python bench/wsframes.py [--tree DIR] [--n 100000]

Builds the real factory and protocol (tuned Autobahn options) over a
transport that drops what it is given, with the relay's loopback backend,
and times two paths: ``rt``, one masked client frame in, through the session
and the backend, and the echo out through ``deliver``; and ``deliver`` alone
(the send path of ``POST /socket/<id>/send``).  Best of ``--reps`` (5), CPU time.
``--tree`` imports socketdock from another checkout, for an A/B
(``git archive REV socketdock | tar -x -C DIR``).  For figures a shared
machine cannot disturb, count instructions instead: with
``PYTHONHASHSEED=0``, run it under ``valgrind --tool=callgrind`` (the real
python binary, not a shim) with ``--reps 1 --only rt`` at two ``--n`` and
divide the difference.
"""

import argparse
import os
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Drop:
    """A transport that takes everything and sends nothing."""

    disconnecting = False

    def write(self, data):
        pass

    def writeSequence(self, seq):
        pass

    def getPeer(self):
        from twisted.internet.address import IPv4Address

        return IPv4Address("TCP", "127.0.0.1", 40000)

    getHost = getPeer

    def pauseProducing(self):
        pass

    resumeProducing = stopProducing = pauseProducing

    def registerProducer(self, producer, streaming):
        pass

    def unregisterProducer(self):
        pass

    loseConnection = abortConnection = pauseProducing


def main(args) -> None:
    sys.path.insert(0, os.path.abspath(args.tree))
    from twisted.internet.task import Clock

    import socketdock
    from socketdock.ops.metrics import Metrics
    from socketdock.relay.backend import LoopbackBackend
    from socketdock.relay.registry import Registry
    from socketdock.relay.session import Relay
    from socketdock.tuned.autobahn import (
        defer_debug_formatting,
        use_small_frame_masker,
        with_options,
    )
    from socketdock.ws.factory import RelayServerFactory

    print(f"socketdock from {os.path.dirname(socketdock.__file__)}")
    defer_debug_formatting()
    use_small_frame_masker()
    registry = Registry()
    clock = Clock()
    metrics = Metrics(active=registry.__len__, queued=lambda: 0)
    relay = Relay(LoopbackBackend(), registry, metrics, clock, 8)
    factory = RelayServerFactory(relay, 0, 1 << 16, clock, specialise=with_options)
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(Drop())
    protocol.dataReceived(HANDSHAKE)
    assert protocol.state == protocol.STATE_OPEN
    payload = b"hello relay " * 4
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    frame = struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked
    n = args.n

    def rt():
        for _ in range(n):
            protocol.dataReceived(frame)

    def deliver():
        send = protocol.deliver
        for _ in range(n):
            send(payload, False)

    for name, run in (("rt", rt), ("deliver", deliver)):
        if args.only and name != args.only:
            continue
        best = float("inf")
        for _ in range(args.reps):
            start = time.process_time()
            run()
            best = min(best, time.process_time() - start)
        print(f"{name:8} {best / n * 1e6:7.3f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=os.path.dirname(HERE))
    parser.add_argument("--n", type=int, default=100000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", choices=("rt", "deliver"))
    main(parser.parse_args())
