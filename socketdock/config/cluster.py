"""
The ``cluster`` setting: where the shared Redis is (SPEC §8).

``redis://[[user]:password@]host[:port][/db]``, or ``rediss://`` for TLS.  The
password is a secret: no message here quotes the value, and the parsed
:class:`RedisAddress` never shows it in its ``repr`` or ``str``.  Pure: no Twisted,
no Redis client.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import attrs

from socketdock.config.endpoints import host_and_port
from socketdock.config.parse import Invalid

_FORM = "use redis://[:password@]host:port/db or rediss://... for TLS"


@attrs.frozen
class RedisAddress:
    """
    One Redis server, parsed from the ``cluster`` URL.

    :ivar db: the database number; pub/sub channels are not per database, so
        it also goes into every channel name.
    """

    host: str
    port: int
    db: int
    tls: bool
    password: str | None = attrs.field(default=None, repr=False)
    username: str | None = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        """The URL without credentials: safe for logs."""
        scheme = "rediss" if self.tls else "redis"
        auth = "***@" if self.password is not None else ""
        return f"{scheme}://{auth}{host_and_port(self.host, self.port)}/{self.db}"


def parse_cluster_url(text: str) -> RedisAddress:
    """
    :param text: the ``cluster`` value.
    :raises Invalid: without quoting ``text``, which may hold a password.
    """
    text = text.strip()
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in text):
        raise Invalid(f"contains spaces or control characters; {_FORM}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise Invalid(f"is not a valid URL or has a bad port; {_FORM}") from None
    if parts.scheme not in ("redis", "rediss"):
        raise Invalid(f"is not a redis:// or rediss:// URL; {_FORM}")
    if not parts.hostname:
        raise Invalid(f"has no host; {_FORM}")
    if parts.query or parts.fragment:
        raise Invalid(f"has a query or fragment, which are not supported; {_FORM}")
    path = parts.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise Invalid(f"has a database that is not a number; {_FORM}")
    db = int(path) if path else 0
    if db > 1_000_000:
        raise Invalid(f"has a database number that is too large; {_FORM}")
    password = unquote(parts.password) if parts.password is not None else None
    username = unquote(parts.username) if parts.username else None
    return RedisAddress(
        host=parts.hostname,
        port=6379 if port is None else port,
        db=db,
        tls=parts.scheme == "rediss",
        password=password,
        username=username,
    )
