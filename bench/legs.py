"""
CPU per request of each HTTP leg, in isolation, as SocketDock runs it.

    python bench/legs.py [--n 5000] [--conns 50] [--reps 1] [--tcp batched|plain|both]

``backend``: SocketDock's treq ``BackendClient`` POSTing to a trivial server
in another process.  ``callback``: SocketDock's ``Site`` answering POSTs from
a client in another process.  Only this process's CPU is counted, so the
figures compare builds even on a busy machine better than the end-to-end run.
``--tcp both`` alternates Twisted's own TCP transports with the batched ones
the daemon uses (``socketdock.tuned.batchedtcp``), rep by rep, in one process.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

from twisted.internet import defer, reactor, task
from twisted.web.resource import Resource

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from socketdock.tuned.batchedtcp import batching  # noqa: E402
from socketdock.tuned.collector import tune_collector  # noqa: E402
from socketdock.relay.httpclient import BackendClient, make_tls_policy  # noqa: E402
from socketdock.tuning import TUNED, make_http_client  # noqa: E402
from socketdock.api.site import make_site  # noqa: E402

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@defer.inlineCallbacks
def backend_leg(net, n: int, conns: int):
    port = free_port()
    peer = subprocess.Popen([sys.executable, PEER, "server", str(port)], stdout=subprocess.PIPE)
    try:
        peer.stdout.readline()
        pool = TUNED.make_pool(reactor, 128)
        http = make_http_client(TUNED, net, pool, make_tls_policy(None))
        client = BackendClient(http, reactor, 30, path=TUNED.post)
        url = f"http://127.0.0.1:{port}/message"
        body = b'{"meta":{"seq":1},"message":"' + b"x" * 64 + b'"}'
        yield client.post(url, body)  # warm: connection and lazy imports
        left = [n]

        @defer.inlineCallbacks
        def lane():
            while left[0] > 0:
                left[0] -= 1
                result = yield client.post(url, body)
                assert result.code == 200

        c0, t0 = time.process_time(), time.perf_counter()
        yield defer.gatherResults([lane() for _ in range(conns)])
        c1, t1 = time.process_time(), time.perf_counter()
        yield pool.closeCachedConnections()
    finally:
        peer.kill()
        peer.wait()
    return (c1 - c0) / n * 1e6, n / (t1 - t0)


class Sink(Resource):
    """Stands in for the send resource: reads the body, answers 200."""

    isLeaf = True

    def body_limit(self, request) -> int:
        """Reads a body up to the site's max_body, as send does (see api.body_plan)."""
        return 1 << 30

    def render_POST(self, request):
        request.content.read()
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"OK\n"


@defer.inlineCallbacks
def callback_leg(net, n: int, conns: int):
    listening = net.listenTCP(0, make_site(Sink(), reactor, None, TUNED.channel), interface="127.0.0.1")
    port = listening.getHost().port
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        peer = subprocess.Popen(
            [sys.executable, PEER, "client", str(port), str(conns), str(n), "/socket/x/send"])
        while peer.poll() is None:
            yield task.deferLater(reactor, 0.05, lambda: None)
        c1, t1 = time.process_time(), time.perf_counter()
    finally:
        yield listening.stopListening()
    return (c1 - c0) / n * 1e6, n / (t1 - t0)


@defer.inlineCallbacks
def main(reactor_, args):
    tune_collector()  # as the daemon runs
    net = batching(reactor)
    kinds = {"batched": [net], "plain": [reactor], "both": [reactor, net]}
    figures: dict = {}
    for _ in range(args.reps):
        for net in kinds[args.tcp]:
            tcp = "plain" if net is reactor else "batched"
            for name, leg in (("backend", backend_leg), ("callback", callback_leg)):
                cpu, rate = yield leg(net, args.n, args.conns)
                figures.setdefault((name, tcp), []).append(cpu)
                print(f"{name:9s} {tcp:8s} {cpu:7.1f} us CPU/request  {rate:8.0f} requests/s")
    if args.reps > 1:
        for (name, tcp), cpus in figures.items():
            print(f"median {name:9s} {tcp:8s} {statistics.median(cpus):7.1f} us CPU/request")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--tcp", choices=["batched", "plain", "both"], default="batched")
    task.react(main, [parser.parse_args()])
