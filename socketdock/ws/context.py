"""
What the connect notice tells the backend about the upgrade request (SPEC §9):
its headers, as far as ``forward_headers`` allows, and its path, query string
and the client's address.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit


class HeaderAllowList:
    """
    The handshake headers a backend may see.

    :param names: lower-case header names, or ``("*",)`` for every header.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self._all = tuple(names) == ("*",)
        self._names = frozenset(n.lower() for n in names)

    def __call__(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """The allowed ones of ``headers`` (the same mapping when all are)."""
        if self._all:
            return headers
        return {k: v for k, v in headers.items() if k.lower() in self._names}


def connect_context(request_uri: str, remote: str) -> dict[str, str]:
    """
    ``path``, ``query`` (absent when empty) and ``remote`` for the notice's ``meta``.

    :param request_uri: the request target of the upgrade (``/ws?x=1``).
    :param remote: the client's address as ``GET /socket/<id>`` shows it.
    """
    parts = urlsplit(request_uri)
    context = {"path": parts.path}
    if parts.query:
        context["query"] = parts.query
    context["remote"] = remote
    return context
