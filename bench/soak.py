"""
Soak test, run by hand (not in CI): many clients x many messages through a
real ``twistd socketdock`` against a flaky backend, then count what was lost.

    python bench/soak.py --clients 200 --messages 50

The backend (in this process, on loopback) records every message *before*
deciding its fate, as a backend that crashes after processing would: some
answers are 503, some connections are reset, some answers come after
``backend_timeout``, the rest are 200 after a small random delay.  Retries
therefore produce duplicates, which it drops by ``meta.seq`` and counts.
At the end the clients close, every disconnect notice is awaited, the relay's
peak RSS (VmHWM) is read from /proc and it is stopped with SIGTERM.

``lost`` (messages sent and never seen by the backend) must be 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402
from twisted.web.resource import Resource  # noqa: E402
from twisted.web.server import NOT_DONE_YET, Site  # noqa: E402

from tests.daemon import listening_port  # noqa: E402
from tests.wsclient import connect_client  # noqa: E402

TWISTD = "from twisted.scripts.twistd import run; run()"


class FlakyBackend(Resource):
    """``/message`` and ``/disconnect``: record first, then fail at random."""

    isLeaf = True

    def __init__(self, reactor, rnd: random.Random, opts) -> None:
        super().__init__()
        self._reactor = reactor
        self._rnd = rnd
        self._opts = opts
        self.seen: dict[str, int] = {}  # connection id -> last seq taken
        self.delivered = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.wrong_body = 0
        self.notices: set[str] = set()
        self.notice_repeats = 0
        self.faults = {"503": 0, "reset": 0, "late": 0}
        self._goals: list[tuple[str, int, Deferred[None]]] = []

    def wait(self, what: str, count: int) -> "Deferred[None]":
        d: Deferred[None] = Deferred()
        self._goals.append((what, count, d))
        self._check()
        return d

    def _check(self) -> None:
        have = {"messages": self.delivered, "notices": len(self.notices)}
        for goal in [g for g in self._goals if have[g[0]] >= g[1]]:
            self._goals.remove(goal)
            goal[2].callback(None)

    def render_POST(self, request):
        body = json.loads(request.content.read())
        if request.path == b"/message":
            self._message(body)
        else:
            cid = body["connection_id"]
            if cid in self.notices:
                self.notice_repeats += 1
            self.notices.add(cid)
        self._check()
        return self._fate(request)

    def _message(self, body) -> None:
        cid, seq = body["meta"]["connection_id"], body["meta"]["seq"]
        last = self.seen.get(cid, 0)
        if seq <= last:
            self.duplicates += 1
            return
        if seq != last + 1:
            self.out_of_order += 1
        if not body["message"].endswith(f"-m{seq - 1}"):
            self.wrong_body += 1
        self.seen[cid] = seq
        self.delivered += 1

    def _fate(self, request):
        roll, o = self._rnd.random(), self._opts
        if roll < o.fail:
            self.faults["503"] += 1
            request.setResponseCode(503)
            return b"busy"
        if roll < o.fail + o.reset:
            self.faults["reset"] += 1
            request.notifyFinish().addErrback(lambda _: None)
            request.channel.transport.abortConnection()
            return NOT_DONE_YET
        late = roll < o.fail + o.reset + o.late
        if late:
            self.faults["late"] += 1
        gone: list = []
        request.notifyFinish().addErrback(gone.append)

        def answer() -> None:
            if not gone:
                request.write(b"OK")
                request.finish()

        delay = o.timeout * 1.5 if late else self._rnd.random() * o.delay
        self._reactor.callLater(delay, answer)
        return NOT_DONE_YET


class Relay(ProcessProtocol):
    """The twistd child: its output (kept for diagnosis) and its exit."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[object] = Deferred()

    def childDataReceived(self, fd, data) -> None:
        self.output += data
        if not self.listening.called and b"listen: listening on" in self.output:
            try:  # the port it bound (port 0), once its whole line is in
                port = listening_port(self.output.decode("utf-8", "replace"))
            except ValueError:
                return
            self.listening.callback(port)

    def processEnded(self, reason) -> None:
        v = reason.value
        if not self.listening.called:
            self.listening.errback(RuntimeError(self.output[-2000:].decode("utf-8", "replace")))
        self.ended.callback(v.exitCode if v.exitCode is not None else f"signal {v.signal}")

    def peak_rss_kib(self) -> int:
        with open(f"/proc/{self.transport.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return -1


@inlineCallbacks
def soak(reactor, opts):
    rnd = random.Random(opts.seed)
    backend = FlakyBackend(reactor, rnd, opts)
    site = Site(backend)
    site.noisy = False
    site.log = lambda request: None
    bport = reactor.listenTCP(0, site, interface="127.0.0.1", backlog=1024)
    burl = f"http://127.0.0.1:{bport.getHost().port}"
    relay = Relay()
    args = ["-n", "--pidfile=", "socketdock", "--bindport", "0", "--backend", "http",
            "--messageuri", burl + "/message", "--disconnecturi", burl + "/disconnect",
            "--backend-retries", str(opts.retries), "--backend-timeout", str(opts.timeout),
            "--queue-limit", str(opts.queue_limit), "--ping-interval", "0",
            "--shutdown-timeout", "30"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKETDOCK_")}
    env["PYTHONPATH"] = ROOT
    reactor.spawnProcess(relay, sys.executable, [sys.executable, "-c", TWISTD, *args],
                         env=env, path=ROOT)
    port = yield relay.listening
    started = reactor.seconds()

    url = f"ws://127.0.0.1:{port}/ws"
    clients = []
    for batch in range(0, opts.clients, 50):  # bounded bursts of handshakes
        n = min(50, opts.clients - batch)
        clients += (yield gatherResults([connect_client(reactor, url) for _ in range(n)]))
    sent = 0
    for i, client in enumerate(clients):
        for j in range(opts.messages):
            client.send_text(f"c{i}-m{j}")
            sent += 1
    total = opts.clients * opts.messages
    done = backend.wait("messages", total)
    done.addTimeout(opts.deadline, reactor)
    timed_out = False
    try:
        yield done
    except Exception:
        timed_out = True
    delivered_at = reactor.seconds()
    closes = yield gatherResults([c.close() for c in clients])
    noticed = backend.wait("notices", len(clients))
    noticed.addTimeout(opts.deadline, reactor)
    try:
        yield noticed
    except Exception:
        timed_out = True
    peak = relay.peak_rss_kib()
    relay.transport.signalProcess("TERM")
    exit_code = yield relay.ended
    yield bport.stopListening()

    lost = sent - backend.delivered
    report = {
        "clients": opts.clients,
        "messages sent": sent,
        "delivered (distinct seq)": backend.delivered,
        "duplicates dropped by seq": backend.duplicates,
        "lost": lost,
        "out of order": backend.out_of_order,
        "wrong body for seq": backend.wrong_body,
        "closed 1011 (retries used up)": sum(1 for _, code, _ in closes if code == 1011),
        "notices (distinct / expected)": f"{len(backend.notices)} / {len(clients)}",
        "notice repeats (retried)": backend.notice_repeats,
        "faults injected": backend.faults,
        "seconds to deliver": round(delivered_at - started, 2),
        "messages per second": round(backend.delivered / max(delivered_at - started, 1e-9)),
        "relay peak RSS (VmHWM)": f"{peak / 1024:.1f} MiB",
        "relay exit status": exit_code,
        "relay tracebacks logged": relay.output.count(b"Traceback"),
        "timed out": timed_out,
    }
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    if lost or timed_out or exit_code != 0 or b"Traceback" in relay.output:
        print(relay.output[-3000:].decode("utf-8", "replace"), file=sys.stderr)
        raise RuntimeError("soak failed: see the relay output above")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--messages", type=int, default=50, help="per client")
    p.add_argument("--fail", type=float, default=0.08, help="share of answers that are 503")
    p.add_argument("--reset", type=float, default=0.04, help="share of requests reset")
    p.add_argument("--late", type=float, default=0.005,
                   help="share answered only after backend_timeout")
    p.add_argument("--delay", type=float, default=0.02, help="max seconds before a 200")
    p.add_argument("--retries", type=int, default=8, help="the relay's backend_retries")
    p.add_argument("--timeout", type=float, default=1.0, help="the relay's backend_timeout")
    p.add_argument("--queue-limit", type=int, default=16)
    p.add_argument("--deadline", type=float, default=600, help="seconds before giving up")
    p.add_argument("--seed", type=int, default=1)
    opts = p.parse_args()
    task.react(lambda reactor: soak(reactor, opts))


if __name__ == "__main__":
    main()
