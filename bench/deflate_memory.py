"""
What permessage-deflate costs per connection: the RSS of a real SocketDock
(twistd, loopback backend) holding N connections, with the extension off and on.

    python bench/deflate_memory.py [N]      # default N = 200, at most 1000

For each setting it reports the RSS before any client, with N idle connections
(handshake done, nothing sent), and after one 1 KiB message echoed on each
(zlib's compressor and decompressor exist from the first message on, and are
kept for the connection's life with context takeover). Clients are Python
websockets, which offers permessage-deflate by default. Linux only (/proc).
"""

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = os.urandom(512).hex()  # 1 KiB of text that compresses a little


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def wait_up(port: int) -> None:
    for _ in range(150):  # 30 s at most
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise RuntimeError("SocketDock did not start")


async def measure(deflate: bool, n: int) -> dict:
    port = free_port()
    work = tempfile.mkdtemp(prefix="sd-bench-")
    argv = [sys.executable, "-c",
            "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
            "-n", "--pidfile", f"{work}/twistd.pid", "--logfile", f"{work}/socketdock.log",
            "socketdock", "--backend", "loopback", "--bindip", "127.0.0.1",
            "--bindport", str(port), "--ping-interval", "0",
            "--permessage-deflate", "true" if deflate else "false"]
    relay = subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    clients = []
    try:
        await wait_up(port)
        url = f"ws://127.0.0.1:{port}/ws"
        # One warm-up connection so that lazily imported code is loaded.
        async with connect(url) as ws:
            await ws.send(MESSAGE)
            await ws.recv()
        base = rss_kib(relay.pid)
        for _ in range(n):
            clients.append(await connect(url, ping_interval=None))
        negotiated = sum(1 for ws in clients
                         if "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or ""))
        idle = rss_kib(relay.pid)
        for ws in clients:
            await ws.send(MESSAGE)
        for ws in clients:
            await ws.recv()
        used = rss_kib(relay.pid)
        return {"deflate": deflate, "n": n, "negotiated": negotiated, "base_kib": base,
                "idle_kib": idle, "used_kib": used,
                "idle_per_conn_kib": (idle - base) / n, "used_per_conn_kib": (used - base) / n}
    finally:
        for ws in clients:
            await ws.close()
        relay.terminate()
        relay.wait(timeout=30)


async def main(n: int) -> None:
    results = [await measure(False, n), await measure(True, n)]
    for r in results:
        print("permessage_deflate={deflate}: {n} connections ({negotiated} negotiated deflate), "
              "RSS {base_kib} KiB -> idle {idle_kib} KiB ({idle_per_conn_kib:.1f} KiB/conn) -> "
              "after one message each {used_kib} KiB ({used_per_conn_kib:.1f} KiB/conn)".format(**r))
    off, on = results
    print("deflate cost per connection: idle {:.1f} KiB, after first message {:.1f} KiB".format(
        on["idle_per_conn_kib"] - off["idle_per_conn_kib"],
        on["used_per_conn_kib"] - off["used_per_conn_kib"]))


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    asyncio.run(main(max(1, min(count, 1000))))
