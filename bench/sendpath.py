"""
CPU per ``POST /socket/<id>/send`` through the callback API's real tree, no
sockets and no reactor, for two checkouts in turn:

    python bench/sendpath.py [--base DIR] [--blocks 5] [--n 20000] [--stock]

Builds the API as ``make_service`` does without ``cluster`` (``Root`` over
``make_api_children``, ``make_site``), with one open connection whose send
fires at once, and feeds it one 16-byte send at a time over a
StringTransport: the figure is routing, the resources, the reach and the
answer, plus the channel and ``Request`` (``--stock``: twisted.web's own
channel).  With ``--base`` (another checkout, e.g. a ``git worktree`` of
main) runs alternate A B B A, ``--blocks`` times, each in a fresh process,
and the medians are printed: a difference of a microsecond or two is what
this can see, where bench/ab.py's end-to-end runs drift by tens.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(n: int, stock: bool) -> float:
    """
    µs of CPU per send, in this process, over the socketdock first on
    sys.path: the quickest of ten runs of ``n / 10`` sends.
    """
    from twisted.internet.defer import succeed
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.web.http import HTTPChannel

    from socketdock.api.site import Root, make_api_children, make_site
    from socketdock.ops.metrics import Metrics
    from socketdock.relay.registry import Registry
    from socketdock.tuned.fastchannel import FastHTTPChannel

    class Open:
        """An open connection, as much of one as a send needs."""

        connection_id = "a" * 32
        tags = ()
        backend_state = None

        def deliver(self, payload, is_binary):
            return succeed(None)

    clock = Clock()
    registry = Registry()
    registry.add(Open())  # type: ignore[arg-type]  # only deliver is called
    metrics = Metrics(active=registry.__len__, queued=lambda: 0)
    api = make_api_children(registry, metrics, clock, 1 << 20)
    site = make_site(Root(None, api, {}, None), clock, 1 << 20,
                     HTTPChannel if stock else FastHTTPChannel)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    request = (b"POST /socket/" + b"a" * 32 + b"/send HTTP/1.1\r\nHost: 127.0.0.1:1234\r\n"
               b"Content-Type: text/plain\r\nContent-Length: 16\r\n\r\n" + b"x" * 16)
    channel.dataReceived(request)
    assert transport.value().startswith(b"HTTP/1.1 200 "), transport.value()[:200]
    transport.clear()
    best = float("inf")
    for _ in range(10):  # the quickest tenth: a neighbour's burst only slows some
        c0 = time.process_time()
        for _ in range(n // 10):
            channel.dataReceived(request)
            transport.clear()
        best = min(best, time.process_time() - c0)
    return best / (n // 10) * 1e6


def run_in(tree: str, n: int, stock: bool) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", "--n", str(n)]
    if stock:
        cmd.append("--stock")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": tree}, cwd=tree)
    return float(out.stdout.split()[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help="another checkout to alternate with this one")
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--stock", action="store_true", help="twisted.web's HTTPChannel")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(f"{measure(args.n, args.stock):.2f}")
        return 0
    this = os.path.dirname(HERE)
    if not args.base:
        print(f"this {run_in(this, args.n, args.stock):6.2f} us CPU/send")
        return 0
    runs: dict[str, list[float]] = {"base": [], "this": []}
    for block in range(args.blocks):
        for name in ("base", "this", "this", "base"):
            value = run_in(args.base if name == "base" else this, args.n, args.stock)
            runs[name].append(value)
            print(f"block {block + 1} {name:4s} {value:6.2f} us CPU/send", flush=True)
    won = sum(sum(runs["this"][2 * b:2 * b + 2]) < sum(runs["base"][2 * b:2 * b + 2])
              for b in range(args.blocks))
    print(f"median base {statistics.median(runs['base']):.2f} -> this "
          f"{statistics.median(runs['this']):.2f} us CPU/send; this checkout won {won} of "
          f"{args.blocks} blocks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
