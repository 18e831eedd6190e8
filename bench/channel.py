"""
CPU per request of the callback API's channel and Request alone, no sockets:

    python bench/channel.py [--stock] [--n 20000]

Feeds one 64-byte POST at a time to the real site (``make_site``) over a
StringTransport, so the figure is the HTTP server's own cost without the
reactor's.  ``--stock`` swaps in twisted.web's ``HTTPChannel`` for an A/B.
"""

import argparse
import os
import sys
import time

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from legs import Sink  # noqa: E402  (bench/ is this script's directory)
from socketdock.api.site import make_site  # noqa: E402
from socketdock.tuned.fastchannel import FastHTTPChannel  # noqa: E402


def main(args) -> None:
    site = make_site(Sink(), Clock(), 1 << 20, HTTPChannel if args.stock else FastHTTPChannel)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    request = (b"POST /socket/x/send HTTP/1.1\r\nHost: 127.0.0.1:1234\r\n"
               b"Content-Type: application/json\r\nContent-Length: 64\r\n\r\n" + b"x" * 64)
    c0 = time.process_time()
    for _ in range(args.n):
        channel.dataReceived(request)
        transport.clear()
    print(f"{'stock' if args.stock else 'fast':5s} {(time.process_time() - c0) / args.n * 1e6:6.1f} us CPU/request")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stock", action="store_true")
    parser.add_argument("--n", type=int, default=20000)
    main(parser.parse_args())
