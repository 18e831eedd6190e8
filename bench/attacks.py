"""
Issue 21's memory and starvation attacks against a real daemon, on loopback.

    python bench/attacks.py                        # this checkout, every attack
    python bench/attacks.py --tree /work/main      # another checkout (before/after)
    python bench/attacks.py --only close,pipeline --tuning off

Each attack starts its own ``twistd socketdock`` from ``--tree`` (with an
in-process threaded HTTP backend that admits, stalls or answers as the attack
needs), runs a bounded loop against it, prints what it saw (the daemon's RSS
from /proc, bystanders' handshake latency, bytes the daemon took in) and stops
it.  Sizes are small enough for a shared 2-core machine: the largest attack
keeps about 130 MiB in the daemon on a tree without the bounds.

- ``close``: 10 clients that do not read get 4 MiB sends until 503, then
  leave; RSS while they are open, once every notice is in, and after 300
  more handshakes (issue 21, item 1).
- ``fragments``: one client sends a 512 KiB message as one-byte frames; a
  bystander opens connections one after another for the 4 s from the
  attack's start (item 3).
- ``inbound``: a backend that never answers messages; two clients send 64
  messages of 1 MiB each (item 4).
- ``outbound``: a client that does not read; 1 MiB sends until 503 (item 4).
- ``pipeline``: one connection pipelines ``GET /healthz`` for 10 s and reads
  no answer (item 5).
- ``early``: admission takes 8 s; the client sends bytes after its upgrade
  request all that time (item 6).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MiB = 1024 * 1024
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


# -- the backend ---------------------------------------------------------------


class Backend:
    """A threaded HTTP backend: admits (after ``connect_delay``), answers or stalls messages."""

    def __init__(self) -> None:
        self.connect_delay = 0.0
        self.stall_messages = False
        self.released = threading.Event()
        self.sends: list[str] = []
        self.messages = 0
        self.disconnects = 0
        self.lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path == "/connect":
                    if backend.connect_delay:
                        time.sleep(backend.connect_delay)
                    with backend.lock:
                        backend.sends.append(json.loads(body)["meta"]["send"])
                elif self.path == "/message":
                    with backend.lock:
                        backend.messages += 1
                    if backend.stall_messages:
                        backend.released.wait(60)
                elif self.path == "/disconnect":
                    with backend.lock:
                        backend.disconnects += 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


# -- the daemon ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, tree: str, tuning: str, backend: Backend, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "socketdock",
            "--bindip", "127.0.0.1",
            "--bindport", str(self.port),
            "--externalhostandport", self.base,
            "--backend", "http",
            "--messageuri", backend.url + "/message",
            "--connecturi", backend.url + "/connect",
            "--disconnecturi", backend.url + "/disconnect",
            "--ping-interval", "0",
            "--shutdown-timeout", "1",
            "--tuning", tuning,
            *extra,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKETDOCK_")}
        env["PYTHONPATH"] = tree
        self.log = open(os.devnull, "wb")
        self.process = subprocess.Popen(argv, env=env, cwd=tree, stdout=self.log, stderr=self.log)
        for _ in range(300):
            try:
                if get(self.base + "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the daemon did not start")

    def rss(self) -> float:
        """Resident set size, MiB."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu(self) -> float:
        """User + system CPU seconds so far."""
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def get(url: str) -> tuple[int, bytes]:
    return request("GET", url)


def request(method: str, url: str, body: bytes = b"", ctype: str = "") -> tuple[int, bytes]:
    rest = url.split("//", 1)[1]
    hostport, path = rest.split("/", 1)
    host, port = hostport.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        headers = {"content-type": ctype} if ctype else {}
        conn.request(method, "/" + path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def metric(daemon: Daemon, name: str) -> str:
    for line in get(daemon.base + "/metrics")[1].decode().splitlines():
        if line.startswith(name + " "):
            return line.split()[1]
    return "absent"


# -- clients -------------------------------------------------------------------


def handshake(port: int, rcvbuf: int | None = None) -> tuple[socket.socket, float]:
    """An open WebSocket connection (raw socket) and how long its handshake took."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    start = time.monotonic()
    sock.connect(("127.0.0.1", port))
    sock.sendall(UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return sock, time.monotonic() - start


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (the mask is zero: the bytes go as they are)."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def push(sock: socket.socket, data: bytes, seconds: float) -> int:
    """Send ``data`` for at most ``seconds`` (the peer may stop reading); bytes it took."""
    sock.setblocking(False)
    sent, view, deadline = 0, memoryview(data), time.monotonic() + seconds
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += sock.send(view[sent : sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break
    return sent


# -- the attacks ---------------------------------------------------------------


def attack_close(tree: str, tuning: str) -> None:
    backend = Backend()
    daemon = Daemon(tree, tuning, backend)
    try:
        start = daemon.rss()
        clients = [handshake(daemon.port, rcvbuf=4096)[0] for _ in range(10)]
        wait_until(lambda: len(backend.sends) >= 10, 10)
        payload = b"x" * (4 * MiB)
        taken = 0
        for send in list(backend.sends):
            # Until 503: the kernel's socket buffer takes the first few MiB.
            for _ in range(4):
                if request("POST", send, payload, "application/octet-stream")[0] != 200:
                    break
                taken += 4
        held = daemon.rss()
        for sock in clients:
            sock.close()
        wait_until(lambda: backend.disconnects >= 10, 30)
        time.sleep(1)
        closed = daemon.rss()
        for _ in range(300):
            sock, _ = handshake(daemon.port)
            sock.close()
        wait_until(lambda: backend.disconnects >= 310, 30)
        later = daemon.rss()
        print(
            f"close: RSS {start:.0f} MiB at start, {held:.0f} with 10 non-readers sent"
            f" {taken} MiB, {closed:.0f} once all closed, {later:.0f} after 300 more"
            " handshakes"
        )
    finally:
        daemon.stop()
        backend.close()


def attack_fragments(tree: str, tuning: str) -> None:
    backend = Backend()
    daemon = Daemon(tree, tuning, backend)
    try:
        quiet = []
        for _ in range(20):
            sock, took = handshake(daemon.port)
            sock.close()
            quiet.append(took)
        size = 512 * 1024
        data = frame(0x1, b"a", fin=False) + frame(0x0, b"a", fin=False) * (size - 2)
        data += frame(0x0, b"a")
        attacker, _ = handshake(daemon.port)
        rss0, cpu0 = daemon.rss(), daemon.cpu()
        ended = {}

        def attack():
            begun = time.monotonic()
            push(attacker, data, 30)
            attacker.setblocking(True)
            attacker.settimeout(30)
            try:
                while attacker.recv(65536):
                    pass
            except OSError:
                pass
            ended["closed"] = time.monotonic() - begun

        threading.Thread(target=attack, daemon=True).start()
        begun = time.monotonic()
        # Bystanders for the 4 s after the attack begins (it ends sooner or later).
        during, peak = [], rss0
        while time.monotonic() < begun + 4:
            sock, took = handshake(daemon.port)
            sock.close()
            during.append(took)
            peak = max(peak, daemon.rss())
            if backend.messages and "delivered" not in ended:
                ended["delivered"] = time.monotonic() - begun
        wait_until(lambda: backend.messages or "closed" in ended, 30)
        cpu = daemon.cpu() - cpu0
        attacker.close()
        during.sort()
        if backend.messages:
            outcome = f"delivered after {ended.get('delivered', time.monotonic() - begun):.1f} s"
        else:
            outcome = f"refused, connection closed after {ended.get('closed', 0):.2f} s"
        print(
            f"fragments: a {len(data) / MiB:.1f} MiB message of one-byte frames: {outcome};"
            f" daemon CPU {cpu:.1f} s; RSS {rss0:.0f} -> peak {peak:.0f} MiB; bystander"
            f" handshakes: median {statistics.median(quiet) * 1000:.1f} ms quiet; in the 4 s"
            f" from the attack's start median {statistics.median(during) * 1000:.1f} ms, max"
            f" {during[-1] * 1000:.0f} ms ({len(during)} handshakes)"
        )
    finally:
        daemon.stop()
        backend.close()


def attack_inbound(tree: str, tuning: str) -> None:
    backend = Backend()
    backend.stall_messages = True
    daemon = Daemon(tree, tuning, backend, "--max-message-size", str(MiB))
    try:
        rss0 = daemon.rss()
        message = frame(0x2, b"m" * MiB) * 64
        clients = [handshake(daemon.port)[0] for _ in range(2)]
        sent = []
        threads = [
            threading.Thread(target=lambda s=s: sent.append(push(s, message, 8)), daemon=True)
            for s in clients
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        held = daemon.rss()
        queued = metric(daemon, "socketdock_queued_bytes")
        print(
            f"inbound: 2 clients sent {sum(sent) / MiB:.0f} MiB of 1 MiB messages to a stalled"
            f" backend; daemon took them to RSS {rss0:.0f} -> {held:.0f} MiB"
            f" (socketdock_queued_bytes {queued})"
        )
        backend.released.set()
        for s in clients:
            s.close()
    finally:
        daemon.stop()
        backend.close()


def attack_outbound(tree: str, tuning: str) -> None:
    backend = Backend()
    daemon = Daemon(tree, tuning, backend, "--max-message-size", str(MiB))
    try:
        sock, _ = handshake(daemon.port, rcvbuf=4096)
        wait_until(lambda: backend.sends, 10)
        payload = b"y" * MiB
        accepted = 0
        while accepted < 10:
            status, _ = request("POST", backend.sends[0], payload, "application/octet-stream")
            if status != 200:
                break
            accepted += 1
        print(
            f"outbound: a client that does not read took {accepted} sends of max_message_size"
            f" (1 MiB) before {status}; socketdock_queued_bytes"
            f" {metric(daemon, 'socketdock_queued_bytes')}"
        )
        sock.close()
    finally:
        daemon.stop()
        backend.close()


def attack_pipeline(tree: str, tuning: str) -> None:
    backend = Backend()
    daemon = Daemon(tree, tuning, backend)
    try:
        rss0 = daemon.rss()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", daemon.port))
        requests = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 4000
        sent = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            took = push(sock, requests, deadline - time.monotonic())
            sent += took
            if took < len(requests):
                break
        after = daemon.rss()
        sock.close()
        print(
            f"pipeline: in 10 s the daemon took {sent / MiB:.1f} MiB of pipelined GET /healthz"
            f" from a client reading no answer; RSS {rss0:.0f} -> {after:.0f} MiB"
        )
    finally:
        daemon.stop()
        backend.close()


def attack_early(tree: str, tuning: str) -> None:
    backend = Backend()
    backend.connect_delay = 8
    daemon = Daemon(tree, tuning, backend, "--max-message-size", str(MiB))
    try:
        rss0 = daemon.rss()
        sock = socket.socket()
        sock.connect(("127.0.0.1", daemon.port))
        sock.sendall(UPGRADE)
        junk = b"\0" * (64 * MiB)
        sent = push(sock, junk, 7)
        after = daemon.rss()
        sock.close()
        print(
            f"early: while admission took 8 s the daemon took {sent / MiB:.1f} MiB sent after"
            f" the upgrade request; RSS {rss0:.0f} -> {after:.0f} MiB"
        )
        wait_until(lambda: backend.sends, 10)
    finally:
        daemon.stop()
        backend.close()


ATTACKS = {
    "close": attack_close,
    "fragments": attack_fragments,
    "inbound": attack_inbound,
    "outbound": attack_outbound,
    "pipeline": attack_pipeline,
    "early": attack_early,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=ROOT, help="checkout whose socketdock to run")
    parser.add_argument("--tuning", default="auto", choices=("auto", "off"))
    parser.add_argument("--only", default=",".join(ATTACKS), help="comma-separated attacks")
    args = parser.parse_args()
    print(f"tree {args.tree}, tuning {args.tuning}")
    for name in args.only.split(","):
        ATTACKS[name](os.path.abspath(args.tree), args.tuning)


if __name__ == "__main__":
    main()
