"""
What a client's close frame may carry (RFC 6455 §7.4): a code a peer may
send, and a UTF-8 reason; anything else fails the connection.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerProtocol

#: Close codes a peer may put in a close frame (RFC 6455 §7.4): the
#: registered ones Autobahn accepts, and 3000-4999.
VALID_CLOSE_CODES = frozenset(WebSocketServerProtocol.CLOSE_STATUS_CODES_ALLOWED)


def valid_close_code(code: int | None) -> bool:
    return code is None or code in VALID_CLOSE_CODES or 3000 <= code <= 4999


def is_utf8(raw: bytes | None) -> bool:
    try:
        (raw or b"").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
