"""
Log bytes a real SocketDock writes when one client sends malformed heads.

    python bench/malformed_log.py [--tree DIR] [--tuning auto|off] [--force-tuned] [-n 200]

Starts ``twistd socketdock`` from ``--tree`` (default: this checkout) with a
loopback backend and a log file, then sends ``-n`` requests for ``/healthz``
with ``Content-Length :`` (a blank before the colon), one connection each,
one after another, reading each answer until the server closes (5 s at most).
Prints the answers by status line and the bytes the log grew by.
``--force-tuned`` widens ``socketdock.tuning.TESTED`` to the installed
versions first, so ``tuning = auto`` runs the tuned stack on libraries newer
than those it is tested with (the log's "stack" line says which ran).
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n"
FORCE = (
    "import importlib.metadata as m, socketdock.tuning as t; "
    "t.TESTED.update({k: (lo, m.version(k)) for k, (lo, _) in t.TESTED.items()}); "
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int) -> None:
    for _ in range(150):  # 30 s at most
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("SocketDock did not start")


def ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(REQUEST)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return got


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", default=str(ROOT))
    parser.add_argument("--tuning", default="auto")
    parser.add_argument("--force-tuned", action="store_true")
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    port = free_port()
    work = tempfile.mkdtemp(prefix="sd-malformed-")
    log = Path(work) / "socketdock.log"
    launcher = (FORCE if args.force_tuned else "") + (
        "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
    )
    argv = [
        sys.executable,
        "-c",
        launcher,
        "-n",
        "--pidfile",
        f"{work}/twistd.pid",
        "--logfile",
        str(log),
        "socketdock",
        "--backend",
        "loopback",
        "--bindip",
        "127.0.0.1",
        "--bindport",
        str(port),
        "--tuning",
        args.tuning,
    ]
    # cwd elsewhere: python -c puts the current directory first on sys.path.
    relay = subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=args.tree), cwd=work)
    try:
        wait_up(port)
        time.sleep(1)
        before = log.stat().st_size
        # tuning = auto logs one line when it falls back to the plain stack.
        plain = [line for line in log.read_text().splitlines() if "plain Twisted" in line]
        count = max(1, min(args.n, 10000))
        answers = Counter(ask(port).split(b"\r\n", 1)[0] or b"(nothing)" for _ in range(count))
        time.sleep(1)
        grown = log.stat().st_size - before
    finally:
        relay.terminate()
        relay.wait(timeout=30)
    print(f"tree {args.tree}, tuning={args.tuning}, force_tuned={args.force_tuned}")
    print("  stack:", "plain" if plain or args.tuning == "off" else "tuned")
    print(f"  answers: {dict(answers)}")
    print(f"  log grew by {grown} bytes for {args.n} requests ({grown / args.n:.0f} bytes each)")


if __name__ == "__main__":
    main()
