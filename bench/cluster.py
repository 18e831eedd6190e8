"""
What cluster mode costs a callback, on this machine, loopback only.

    python bench/cluster.py --n 500
    python bench/cluster.py --concurrency 32 --requests 5000   # throughput too

Starts a redis-server on a free port (no persistence), two SocketDock
instances in this process sharing it, and one WebSocket client on instance A
tagged ``bench``.  Then, one request at a time (each waits for the frame to
reach the client), ``--n`` of each:

- ``POST A/socket/<id>/send``: the connection's own instance (the fast path)
- ``POST B/socket/<id>/send``: forwarded by B to A over HTTP
- ``POST A/tags/bench/send``: published in Redis, delivered by A itself
- ``POST B/tags/bench/send``: published by B, delivered by A from Redis

and prints the median and 99th percentile of each, in microseconds; then
the same for a handshake and close (``connect`` to the 101, then the close
handshake) on an instance with and one without ``cluster``.  Client,
instances and Redis share the machine, so the figures are for comparing the
four paths with each other, not absolute.

``--concurrency C`` adds a throughput run of each tag path: ``--requests``
POSTs to ``/tags/bench/send`` (A's own, then B's, alternated twice) from C
senders in a closed loop (a sender's next POST waits for its last message's
frame at the client; messages are told apart by their bodies); it prints
messages/s from the first POST to the last frame, and the median and 99th
percentile from a POST to its frame arriving.  Everything
(client, both instances, the HTTP client) shares one process and so one
core: the figures are what one core does for all of them together.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from treq.client import HTTPClient
from twisted.internet import defer, reactor, task
from twisted.web.client import Agent, HTTPConnectionPool

from socketdock.config.settings import load_config
from socketdock.assembly import make_service
from tests.cluster.redisserver import free_port
from tests.wsclient import connect_client


def _start_redis(directory: str) -> tuple[subprocess.Popen, int]:
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if "Ready to accept connections" in line:
            return process, port
    raise SystemExit("redis-server did not start")


def _instance(redis_port: int | None):
    settings = {
        "bindip": "127.0.0.1", "bindport": "0", "backend": "loopback",
        "ping_interval": "0",
    }
    if redis_port is not None:
        settings["cluster"] = f"redis://127.0.0.1:{redis_port}/0"
    service = make_service(load_config(settings, {}, None), reactor)
    service.startService()
    nodes = [s for s in service if type(s).__name__ == "ClusterNode"]
    port = service.addresses["listen"].port
    return service, nodes[0] if nodes else None, f"http://127.0.0.1:{port}", port


def _report(name: str, samples: list[float]) -> None:
    samples.sort()
    print(f"{name:42s} median {samples[len(samples) // 2]:7.0f} us   "
          f"p99 {samples[int(len(samples) * 0.99)]:7.0f} us   (n={len(samples)})")


async def _handshakes(name: str, port: int, n: int) -> None:
    samples = []
    for i in range(n + 20):
        started = time.perf_counter()
        client = await connect_client(reactor, f"ws://127.0.0.1:{port}/ws")
        await client.close()
        if i >= 20:
            samples.append((time.perf_counter() - started) * 1e6)
    _report(name, samples)


async def _throughput(name: str, http: HTTPClient, client, url: str, requests: int,
                      concurrency: int, quiet: bool = False) -> None:
    """
    ``requests`` POSTs to ``url`` from ``concurrency`` senders in a closed
    loop: each sender's next POST waits until its last message's frame has
    reached ``client``.  Bounded: every message is waited for once.
    """
    arrived: dict[bytes, defer.Deferred] = {}
    latencies: list[float] = []
    bodies = iter(range(requests))

    async def sender() -> None:
        for i in bodies:
            body = f"t{i}".encode()
            arrival = arrived[body] = defer.Deferred()
            started = time.perf_counter()
            response = await http.post(url, body, headers={b"Content-Type": [b"text/plain"]})
            await response.content()
            assert response.code == 200, (name, response.code)
            await arrival
            latencies.append((time.perf_counter() - started) * 1e6)

    async def receiver() -> None:
        for _ in range(requests):
            payload, _binary = await client.next_message()
            arrived.pop(payload).callback(None)

    started = time.perf_counter()
    receiving = defer.Deferred.fromCoroutine(receiver())
    await defer.gatherResults([defer.Deferred.fromCoroutine(sender())
                               for _ in range(concurrency)], consumeErrors=True)
    await receiving
    elapsed = time.perf_counter() - started
    assert not arrived, f"{len(arrived)} messages never arrived"
    latencies.sort()
    if quiet:
        return
    print(f"{name:42s} {requests / elapsed:7.0f} msg/s   "
          f"p50 {latencies[len(latencies) // 2] / 1e3:6.1f} ms   "
          f"p99 {latencies[int(len(latencies) * 0.99)] / 1e3:6.1f} ms   "
          f"(n={requests}, {concurrency} senders, closed loop)")


async def _run(n: int, redis_port: int, concurrency: int = 0, requests: int = 0) -> None:
    a, node_a, base_a, port_a = _instance(redis_port)
    b, node_b, base_b, _ = _instance(redis_port)
    await node_a.link.when_up()
    await node_b.link.when_up()
    http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True)))
    client = await connect_client(reactor, f"ws://127.0.0.1:{port_a}/ws")
    client.send_text("hello")
    await client.next_message()  # the loopback echo: the connection is registered
    (connection,) = list(a.relay.registry)
    cid = connection.connection_id
    response = await http.post(f"{base_a}/socket/{cid}/tags", b'{"add": ["bench"]}',
                               headers={b"Content-Type": [b"application/json"]})
    await response.content()
    paths = {
        "A /socket/<id>/send (local)": f"{base_a}/socket/{cid}/send",
        "B /socket/<id>/send (forwarded)": f"{base_b}/socket/{cid}/send",
        "A /tags/bench/send (publish, local)": f"{base_a}/tags/bench/send",
        "B /tags/bench/send (publish, via Redis)": f"{base_b}/tags/bench/send",
    }
    for name, url in paths.items():
        samples = []
        for i in range(n + 20):
            body = f"m{i}".encode()
            started = time.perf_counter()
            response = await http.post(url, body, headers={b"Content-Type": [b"text/plain"]})
            await response.content()
            assert response.code == 200, (name, response.code)
            assert (await client.next_message()) == (body, False)
            if i >= 20:  # warm-up
                samples.append((time.perf_counter() - started) * 1e6)
        _report(name, samples)
    if concurrency:
        tag_paths = [(name, url) for name, url in paths.items() if "/tags/" in name]
        for name, url in tag_paths:  # warm-up, not shown
            await _throughput(name, http, client, url, min(requests, 500), concurrency, quiet=True)
        for _ in range(2):  # alternated, so neither gets the warmer machine
            for name, url in tag_paths:
                await _throughput(name, http, client, url, requests, concurrency)
    await client.shutdown()
    plain, _, _, plain_port = _instance(None)
    for _ in range(2):  # alternated, so neither gets the warmer machine
        await _handshakes("handshake + close, no cluster", plain_port, n)
        await _handshakes("handshake + close, cluster", port_a, n)
    await plain.stopService()
    await b.stopService()
    await a.stopService()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="requests per path")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="also measure tag-send throughput with this many requests under way")
    parser.add_argument("--requests", type=int, default=5000,
                        help="requests per throughput run (with --concurrency)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        redis, port = _start_redis(directory)
        try:
            task.react(lambda _: defer.Deferred.fromCoroutine(_run(args.n, port, args.concurrency, args.requests)))
        finally:
            redis.kill()
            redis.wait()


if __name__ == "__main__":
    main()
