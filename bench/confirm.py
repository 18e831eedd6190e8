"""
What a confirmed send costs against a plain one, from a real daemon, in one run.

    python bench/confirm.py [--sends 2000] [--blocks 6] [--size 200]

Starts this tree's SocketDock under twistd on loopback (``backend = http``,
its connect notices going to a tiny backend in this script, which learns the
connection id), connects one ``websockets`` client that reads everything in
a thread (its stack answers pings by itself), and POSTs frames to
``/socket/<id>/send`` over one keep-alive HTTP connection, one at a time:
plain and ``?confirm=5`` sends alternate in blocks (A B A B ...) so the
machine's drift falls on both alike.  For each kind it prints the latency of
one send (median, p99) and the daemon's CPU per send (user + system, from
/proc).  A confirmed send's latency includes the client's pong round trip.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from websockets.sync.client import connect

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class _Backend(BaseHTTPRequestHandler):
    ids: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/connect":
            self.ids.append(json.loads(body)["meta"]["connection_id"])
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(port: int) -> None:
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the daemon did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=2000, help="sends per block")
    parser.add_argument("--blocks", type=int, default=6, help="blocks of each kind")
    parser.add_argument("--size", type=int, default=200, help="bytes per frame")
    args = parser.parse_args()

    backend = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{backend.server_address[1]}"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKETDOCK_")}
    env["PYTHONPATH"] = ROOT
    log = tempfile.TemporaryFile()
    daemon = subprocess.Popen(
        [
            *TWISTD,
            "-n",
            "--pidfile=",
            "socketdock",
            "--bindport",
            str(port),
            "--backend",
            "http",
            "--messageuri",
            base + "/message",
            "--connecturi",
            base + "/connect",
            "--ping-interval",
            "0",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(port)
        ws = connect(f"ws://127.0.0.1:{port}/ws", max_size=None)
        received = [0]

        def read() -> None:
            try:
                for _ in ws:
                    received[0] += 1
            except Exception:
                pass

        threading.Thread(target=read, daemon=True).start()
        cid = _Backend.ids[-1]
        api = http.client.HTTPConnection("127.0.0.1", port)
        body = b"x" * args.size
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        kinds = {"plain": f"/socket/{cid}/send", "confirm=5": f"/socket/{cid}/send?confirm=5"}
        latencies: dict[str, list[float]] = {k: [] for k in kinds}
        cpu: dict[str, float] = {k: 0.0 for k in kinds}
        for block in range(-1, args.blocks):  # block -1 warms up, not counted
            for kind, path in kinds.items():
                before = _cpu(daemon.pid)
                times = []
                for _ in range(args.sends):
                    t = time.perf_counter()
                    api.request("POST", path, body, headers)
                    response = api.getresponse()
                    response.read()
                    times.append(time.perf_counter() - t)
                    if response.status != 200:
                        raise SystemExit(f"{kind} send answered {response.status}")
                if block >= 0:
                    latencies[kind] += times
                    cpu[kind] += _cpu(daemon.pid) - before
        total = args.sends * args.blocks
        print(
            f"{total} sends of each kind, {args.size}-byte frames, "
            f"{args.blocks} alternating blocks; tuning={os.environ.get('SOCKETDOCK_TUNING', 'auto')}"
        )
        log.seek(0)
        plain_stack = b"running the plain" in log.read()
        print("daemon stack:", "plain (tuning fell back)" if plain_stack else "as configured")
        print(f"{'kind':<10} {'median ms':>10} {'p99 ms':>8} {'daemon CPU us/send':>19}")
        for kind in kinds:
            lat = sorted(latencies[kind])
            print(
                f"{kind:<10} {statistics.median(lat) * 1000:>10.3f} "
                f"{lat[int(len(lat) * 0.99)] * 1000:>8.3f} {cpu[kind] / total * 1e6:>19.1f}"
            )
        ws.close()
    finally:
        daemon.terminate()
        daemon.wait(15)
        backend.shutdown()


if __name__ == "__main__":
    main()
