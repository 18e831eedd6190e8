"""
Endpoint strings and addresses: the one place that splits a Twisted endpoint
string on its unescaped colons and tells what kind of address an interface is.
Nothing here imports Twisted.
"""

from __future__ import annotations

import ipaddress
import re

#: Endpoint types that listen on a TCP port (``ssl`` is TLS over TCP).
TCP_TYPES = frozenset({"tcp", "tcp6", "ssl"})

_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def split_endpoint(description: str, maxsplit: int = 0) -> list[str]:
    """
    The fields of an endpoint string, split on the colons not escaped with ``\\``
    (escapes are kept).

    :param maxsplit: at most this many splits; 0 for all.
    """
    return _UNESCAPED_COLON.split(description, maxsplit=maxsplit)


def endpoint_type(description: str) -> str:
    """The type an endpoint string names first (``haproxy`` for a wrapped one)."""
    return description.split(":", 1)[0]


def tcp_address(description: str) -> tuple[str, int] | None:
    """
    The (interface, port) of a ``tcp``/``tcp6``/``ssl`` endpoint string, also
    behind ``haproxy:``, or None for other kinds.
    """
    kind, *args = split_endpoint(description)
    while kind == "haproxy" and args:
        kind, *args = args
    if kind not in TCP_TYPES:
        return None
    positional = [a for a in args if "=" not in a]
    named = dict(a.split("=", 1) for a in args if "=" in a)
    port = named.get("port", positional[0] if positional else "0")
    interface = named.get("interface", "::" if kind == "tcp6" else "")
    return interface.replace("\\:", ":"), int(port)


def endpoint_for(bindip: str, bindport: int) -> str:
    """
    The Twisted server endpoint string equivalent to ``bindip``/``bindport``.

    :param bindip: interface; IPv6 colons are escaped as endpoint syntax requires.
    """
    if bindip == "":
        return f"tcp:{bindport}"
    return f"tcp:{bindport}:interface={bindip.replace(':', chr(92) + ':')}"


def host_and_port(host: str, port: int) -> str:
    """``host:port``, with the brackets an IPv6 address needs there."""
    return f"[{host}]:{port}" if is_ipv6(host) else f"{host}:{port}"


def base_url_for(bindip: str, bindport: int, scheme: str = "http") -> str:
    """:param bindip: host for the URL; IPv6 gets the brackets URLs need."""
    return f"{scheme}://{host_and_port(bindip, bindport)}"


def learns_base_url(description: str) -> bool:
    """
    True if the callback-API listener ``description`` is TCP (or TLS) on one
    interface with port 0: the OS picks the port, so ``externalhostandport`` can
    only be learned from the bound address, with :func:`scheme_of` (tests start
    instances this way, race-free).
    """
    if endpoint_type(description) not in TCP_TYPES:
        return False
    try:
        address = tcp_address(description)
    except ValueError:
        return False
    return address is not None and address[1] == 0 and not is_wildcard(address[0])


def scheme_of(description: str) -> str:
    """The URL scheme a listener ``description`` serves: ``https`` for ``ssl:``."""
    return "https" if endpoint_type(description) == "ssl" else "http"


def is_wildcard(bindip: str) -> bool:
    """:param bindip: an interface; True if it binds every interface."""
    if bindip == "":
        return True
    try:
        return ipaddress.ip_address(bindip).is_unspecified
    except ValueError:
        return False


def is_ipv6(host: str) -> bool:
    """:param host: an interface or host; True for an IPv6 address literal."""
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def is_loopback(interface: str) -> bool:
    """:param interface: an interface, bracketed or not; True for ``localhost`` and loopback addresses."""
    if interface.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False
