"""
The far side of one HTTP leg, in its own process so its CPU is not counted.

    python bench/peer.py server PORT             # 200, empty body, keep-alive
    python bench/peer.py client PORT CONNS TOTAL PATH   # closed-loop POSTs, then exit

Plain asyncio with the least parsing that is still correct for these peers:
requests and answers carry a Content-Length.  Loopback only; bounded.
"""

import asyncio
import sys

BODY = b'{"meta":{"connection_id":"0123456789abcdef0123456789abcdef","seq":1},"message":"' + b"x" * 64 + b'"}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


async def read_message(reader: asyncio.StreamReader) -> bool:
    """Read one request or answer (head + Content-Length body); False at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return True


async def serve(port: int) -> None:
    async def handle(reader, writer):
        while await read_message(reader):
            writer.write(ANSWER)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def drive(port: int, conns: int, total: int, path: str) -> None:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode("ascii") + BODY
    left = [total]

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while left[0] > 0:
            left[0] -= 1
            writer.write(request)
            if not await read_message(reader):
                break
        writer.close()

    await asyncio.gather(*(one() for _ in range(conns)))


def main(argv: list[str]) -> None:
    if argv[1] == "server":
        asyncio.run(serve(int(argv[2])))
    else:
        asyncio.run(drive(int(argv[2]), int(argv[3]), int(argv[4]), argv[5]))


if __name__ == "__main__":
    main(sys.argv)
