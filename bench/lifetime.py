"""
``max_lifetime`` with many connections, run by hand (not in CI): a real
``twistd socketdock`` with ``max_lifetime``, N clients opened within a second
or two, and a backend that records each disconnect notice; prints when the
clients were closed (spread over the ±10% jitter window) and how many notices
arrived.

    python bench/lifetime.py --clients 1000 --lifetime 20

Every client must be closed with 1001 and the reason naming max_lifetime,
within [0.9, 1.1] x lifetime of its opening, and every notice delivered.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402
from twisted.web.resource import Resource  # noqa: E402
from twisted.web.server import Site  # noqa: E402

from tests.daemon import listening_port  # noqa: E402
from tests.wsclient import connect_client  # noqa: E402

TWISTD = "from twisted.scripts.twistd import run; run()"


class Notices(Resource):
    """``/message`` and ``/disconnect``: 200, and every notice recorded with its time."""

    isLeaf = True

    def __init__(self, reactor) -> None:
        super().__init__()
        self._reactor = reactor
        self.notices: dict[str, tuple[float, dict]] = {}
        self._waiting: tuple[int, Deferred[None]] | None = None

    def render_POST(self, request):
        body = json.loads(request.content.read())
        if request.path == b"/disconnect":
            self.notices.setdefault(body["connection_id"], (self._reactor.seconds(), body["meta"]))
            if self._waiting and len(self.notices) >= self._waiting[0]:
                self._waiting[1].callback(None)
                self._waiting = None
        return b"OK"

    def wait(self, count: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.notices) >= count:
            d.callback(None)
        else:
            self._waiting = (count, d)
        return d


class Relay(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[int] = Deferred()

    def childDataReceived(self, fd, data) -> None:
        self.output += data
        if not self.listening.called:
            try:
                self.listening.callback(listening_port(self.output.decode("utf-8", "replace")))
            except ValueError:
                pass

    def processEnded(self, reason) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))


@inlineCallbacks
def run(reactor, opts):
    backend = Notices(reactor)
    site = Site(backend)
    site.noisy = False
    site.log = lambda request: None
    bport = reactor.listenTCP(0, site, interface="127.0.0.1", backlog=1024)
    burl = f"http://127.0.0.1:{bport.getHost().port}"
    relay = Relay()
    args = [
        "-n",
        "--pidfile=",
        "socketdock",
        "--bindport",
        "0",
        "--backend",
        "http",
        "--messageuri",
        burl + "/message",
        "--disconnecturi",
        burl + "/disconnect",
        "--ping-interval",
        "0",
        "--max-lifetime",
        str(opts.lifetime),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKETDOCK_")}
    env["PYTHONPATH"] = ROOT
    reactor.spawnProcess(
        relay, sys.executable, [sys.executable, "-c", TWISTD, *args], env=env, path=ROOT
    )
    port = yield relay.listening
    url = f"ws://127.0.0.1:{port}/ws"
    opened: list[tuple[float, object]] = []
    for batch in range(0, opts.clients, 50):  # bounded bursts of handshakes
        n = min(50, opts.clients - batch)
        clients = yield gatherResults([connect_client(reactor, url) for _ in range(n)])
        now = reactor.seconds()
        opened += [(now, c) for c in clients]
    first_open = opened[0][0]
    closes = yield gatherResults(
        [c.closed.addCallback(lambda info: (reactor.seconds(), info)) for _, c in opened]
    )
    done = backend.wait(len(opened))
    done.addTimeout(opts.lifetime + 30, reactor)
    yield done
    relay.transport.signalProcess("TERM")
    exit_code = yield relay.ended
    yield bport.stopListening()

    ages = [closed - open_ for (open_, _), (closed, _) in zip(opened, closes, strict=True)]
    codes = sorted({info[1] for _, info in closes})
    reasons = {info[2].split(" after")[0] for _, info in closes}
    close_times = sorted(closed - first_open for closed, _ in closes)
    low, high = 0.9 * opts.lifetime, 1.1 * opts.lifetime
    bins = 10
    width = (high - low) / bins
    histogram = [0] * bins
    for age in ages:
        histogram[min(bins - 1, max(0, int((age - low) / width)))] += 1
    notices = backend.notices.values()
    report = {
        "clients": len(opened),
        "seconds to open them all": round(opened[-1][0] - first_open, 2),
        "max_lifetime": opts.lifetime,
        "close codes": codes,
        "close reasons": sorted(reasons),
        "age at close min / max (s)": f"{min(ages):.2f} / {max(ages):.2f}",
        "allowed window (s)": f"{low:.2f} / {high:.2f}",
        "outside the window": sum(1 for a in ages if not (low - 0.25 <= a <= high + 0.25)),
        "closes over time since the first open: first / last (s)": (
            f"{close_times[0]:.2f} / {close_times[-1]:.2f}"
        ),
        f"ages in {bins} equal bins over the window": histogram,
        "notices delivered / expected": f"{len(backend.notices)} / {len(opened)}",
        "notice codes / initiators": sorted({(m["code"], m["initiator"]) for _, m in notices}),
        "relay exit status": exit_code,
        "relay tracebacks logged": relay.output.count(b"Traceback"),
    }
    key_width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{key_width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--lifetime", type=float, default=20.0)
    opts = parser.parse_args()
    task.react(run, [opts])


if __name__ == "__main__":
    main()
