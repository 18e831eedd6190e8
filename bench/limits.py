"""
Connect storms and file descriptors (issue 21, item 7), against a real
daemon on loopback; run by hand, prints figures.

    python bench/limits.py                      # this checkout
    python bench/limits.py --tree /work/main    # another checkout, same figures
    python bench/limits.py --rate 20 --burst 40 # with handshake_rate set

1. **Storm.**  ``twistd socketdock`` with ``connecturi`` admission on, and a
   small keep-alive HTTP backend in its own process that answers 200 at once
   and counts requests.  One client process (this one) opens WebSocket
   handshakes from 127.0.0.1 as fast as it can, ``--concurrency`` at a time,
   for ``--seconds`` (bounded also by ``--max-handshakes``), closing each
   connection as soon as its answer came.  Prints handshakes answered 101 a
   second, the other answers by status, and the backend requests a second.
2. **Descriptors.**  A second daemon run with an open-file limit of
   ``--nofile`` (soft and hard, as ``ulimit -n``), the callback API on its own
   listener (``api_listen``).  ``--idle`` TCP connections are opened to the
   WebSocket listener and left idle; then ``GET /healthz`` and ``GET /status``
   on the callback-API listener and ``GET /healthz`` on the WebSocket listener
   are asked, each with a 3 s deadline, and the answers printed, with how
   many idle sockets the daemon answered 503 or closed.  ``--shared`` leaves
   ``api_listen`` out: one listener serves everything.

Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the backend (its own process) ---------------------------------------------


async def _serve_backend(port: int) -> None:
    counts: Counter[str] = Counter()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode("ascii", "replace")
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                if path == "/count":
                    body = " ".join(f"{k}={v}" for k, v in sorted(counts.items())).encode()
                else:
                    counts[path] += 1
                    body = b""
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print("backend ready", flush=True)
    async with server:
        await server.serve_forever()


def backend_counts(port: int) -> dict[str, int]:
    """What the backend counted, by path."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /count HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        for _ in range(1000):
            answer += s.recv(65536)
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
    return {k: int(v) for k, v in (pair.split("=") for pair in body.decode().split())}


# -- processes -------------------------------------------------------------------


class Child:
    """A child process whose output is collected; ``wait_for`` a line in it."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, nofile: int | None = None):
        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=limit,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise SystemExit(f"no {text!r} in:\n" + "\n".join(self.lines[-30:]))
                self._changed.wait(left)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_daemon(
    tree: str, settings: list[str], nofile: int | None = None, tuning: str = "auto"
) -> Child:
    twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    env = dict(os.environ, PYTHONPATH=tree, SOCKETDOCK_TUNING=tuning)
    child = Child([*twistd, "-n", "--pidfile=", "socketdock", *settings], env, tree, nofile)
    child.wait_for("listen: listening on")
    return child


def start_backend() -> tuple[Child, int]:
    port = free_port()
    child = Child(
        [sys.executable, os.path.abspath(__file__), "--serve-backend", str(port)],
        dict(os.environ),
        HERE,
    )
    child.wait_for("backend ready")
    return child, port


# -- 1. the storm -------------------------------------------------------------------


async def _storm(port: int, concurrency: int, seconds: float, most: int) -> Counter[str]:
    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    started = 0

    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            statuses[f"connect failed ({e.__class__.__name__})"] += 1
            return
        try:
            writer.write(_UPGRADE)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            statuses[head.split(b" ", 2)[1].decode()] += 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            statuses["no answer"] += 1
        finally:
            writer.transport.abort()

    async def worker() -> None:
        nonlocal started
        while time.monotonic() < deadline and started < most:
            started += 1
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def storm(args: argparse.Namespace) -> None:
    backend, backend_port = start_backend()
    relay_port, api_port = free_port(), free_port()
    settings = [
        "--bindip", "127.0.0.1", "--bindport", str(relay_port),
        "--api-listen", f"tcp:{api_port}:interface=127.0.0.1",
        "--externalhostandport", f"http://127.0.0.1:{api_port}",
        "--backend", "http",
        "--messageuri", f"http://127.0.0.1:{backend_port}/message",
        "--connecturi", f"http://127.0.0.1:{backend_port}/connect",
        "--disconnecturi", f"http://127.0.0.1:{backend_port}/disconnect",
        "--ping-interval", "0",
    ]  # fmt: skip
    if args.rate:
        settings += ["--handshake-rate", str(args.rate), "--handshake-burst", str(args.burst)]
    relay = start_daemon(args.tree, settings, tuning=args.tuning)
    stack = [line for line in relay.lines if "tuning" in line]
    try:
        began = time.monotonic()
        statuses = asyncio.run(
            _storm(relay_port, args.concurrency, args.seconds, args.max_handshakes)
        )
        took = time.monotonic() - began
        time.sleep(1)  # the last disconnect notices
        counts = backend_counts(backend_port)
    finally:
        relay.stop()
        backend.stop()
    total = sum(statuses.values())
    print(
        f"== storm: one client process, {args.concurrency} at a time, {took:.1f}s, "
        f"{total} handshakes"
        + (f", handshake_rate {args.rate}/s burst {args.burst}" if args.rate else "")
    )
    for line in stack:
        print("  daemon said:", line.split(" ", 2)[-1][:160])
    print(f"  admitted (101): {statuses.get('101', 0) / took:8.0f}/s")
    for status, count in sorted(statuses.items()):
        print(f"  {status:>26s}: {count}")
    backend_total = counts.get("/connect", 0) + counts.get("/disconnect", 0)
    print(
        f"  backend: {counts.get('/connect', 0)} connect, {counts.get('/disconnect', 0)} "
        f"disconnect notices; {backend_total / took:.0f} requests/s"
    )


# -- 2. descriptors ------------------------------------------------------------------


def _ask(port: int, path: str, deadline: float = 3.0) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=deadline) as s:
            s.settimeout(deadline)
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            answer = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except OSError as e:
        return f"no answer ({e.__class__.__name__}: {e})"
    if not answer:
        return "closed without an answer"
    return answer.split(b"\r\n", 1)[0].decode("ascii", "replace")


def descriptors(args: argparse.Namespace) -> None:
    backend, backend_port = start_backend()
    relay_port = free_port()
    api_port = relay_port if args.shared else free_port()
    api = [] if args.shared else ["--api-listen", f"tcp:{api_port}:interface=127.0.0.1"]
    settings = [
        "--bindip", "127.0.0.1", "--bindport", str(relay_port), *api,
        "--externalhostandport", f"http://127.0.0.1:{api_port}",
        "--backend", "http",
        "--messageuri", f"http://127.0.0.1:{backend_port}/message",
        "--connecturi", f"http://127.0.0.1:{backend_port}/connect",
        "--disconnecturi", f"http://127.0.0.1:{backend_port}/disconnect",
        "--ping-interval", "0",
    ]  # fmt: skip
    relay = start_daemon(args.tree, settings, nofile=args.nofile, tuning=args.tuning)
    idle: list[socket.socket] = []
    try:
        derived = [line for line in relay.lines if "max_connections" in line]
        for _ in range(args.idle):
            s = socket.socket()
            s.settimeout(3)
            try:
                s.connect(("127.0.0.1", relay_port))
            except OSError:
                s.close()
                continue
            idle.append(s)
        time.sleep(1)  # let the daemon accept (or refuse) what it will
        refused = closed = 0
        for s in idle:
            s.setblocking(False)
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                closed += 1
                continue
            if data.startswith(b"HTTP/1.1 503"):
                refused += 1
            elif not data:
                closed += 1
        answers = {
            "callback API  GET /healthz": _ask(api_port, "/healthz"),
            "callback API  GET /status": _ask(api_port, "/status"),
            "WebSocket listener GET /healthz": _ask(relay_port, "/healthz"),
        }
        errors = sum("EMFILE" in line or "Too many open files" in line for line in relay.lines)
    finally:
        for s in idle:
            s.close()
        relay.stop()
        backend.stop()
    print(
        f"== descriptors: open-file limit {args.nofile}, {len(idle)} idle sockets "
        "to the WebSocket listener, callback API "
        + ("on the same listener" if args.shared else "on its own listener")
    )
    for line in derived:
        print("  daemon said:", line.split(" ", 2)[-1][:200])
    print(f"  idle sockets answered 503: {refused}; closed by the daemon: {closed}")
    for what, answer in answers.items():
        print(f"  {what:32s} -> {answer}")
    print(f"  log lines naming EMFILE / too many open files: {errors}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", default=ROOT, help="the checkout to run (default: this one)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of the storm")
    p.add_argument("--max-handshakes", type=int, default=20000, help="storm bound")
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--rate", type=float, default=0, help="handshake_rate for the storm")
    p.add_argument("--burst", type=int, default=20, help="handshake_burst for the storm")
    p.add_argument("--nofile", type=int, default=256)
    p.add_argument(
        "--tuning", choices=("auto", "off"), default="auto", help="the daemons' tuning setting"
    )
    p.add_argument("--idle", type=int, default=300)
    p.add_argument(
        "--shared", action="store_true", help="no api_listen: one listener for everything"
    )
    p.add_argument("--only", choices=("storm", "descriptors"))
    p.add_argument("--serve-backend", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_backend:
        asyncio.run(_serve_backend(args.serve_backend))
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.tree = os.path.abspath(args.tree)
    print(f"tree: {args.tree}")
    if args.only in (None, "storm"):
        storm(args)
    if args.only in (None, "descriptors"):
        descriptors(args)


if __name__ == "__main__":
    main()
