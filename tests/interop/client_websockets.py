"""
A Python ``websockets`` client for SocketDock's interop tests, run as a
subprocess by tests/test_interop_python.py with the same modes and output as
client.js::

    python client_websockets.py WS_URL MODE

One JSON object per line on stdout; it gives up by itself after 30 s.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

BIG = 1024 * 1024


def say(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def pattern(n):
    return bytes(i % 251 for i in range(n))


async def closed(ws):
    try:
        await ws.wait_closed()
    finally:
        code = ws.close_code
        # websockets reports 1006 for a drop; the other stacks do the same.
        say(event="closed", code=code, reason=ws.close_reason or "")


async def main(url, mode):
    # ping_interval=None: only the server's pings are in play.
    async with connect(url, max_size=4 * BIG, ping_interval=None) as ws:
        say(event="open")
        if mode == "echo":
            await ws.send("hello \u00fc")
            await ws.send(bytes([0, 1, 254, 255]))
            await ws.send(pattern(BIG))
            text, binary, big = [await ws.recv() for _ in range(3)]
            say(
                event="echo",
                text=text if isinstance(text, str) else None,
                binary=binary.hex() if isinstance(binary, bytes) else None,
                big_binary=isinstance(big, bytes),
                big_length=len(big),
                big_equal=big == pattern(BIG),
            )
            await ws.close(1000, "done")
        elif mode == "close":
            await ws.send("hi")
            await ws.close(4002, "client bye")
        elif mode == "wait":
            await ws.send("hi")
            try:
                await ws.recv()
            except ConnectionClosed:
                pass
        elif mode == "stall":
            # websockets answers pings from its reader; a transport that reads
            # nothing answers none. Stop at once, as client.js does.
            ws.transport.pause_reading()
            say(event="stalled")
        else:
            say(event="error", message="unknown mode " + mode)
            return 2
        await closed(ws)
    return 0


if __name__ == "__main__":
    url, mode = sys.argv[1:3]
    try:
        sys.exit(asyncio.run(asyncio.wait_for(main(url, mode), 30)))
    except ConnectionClosed as e:
        say(event="error", message=str(e))
        sys.exit(1)
