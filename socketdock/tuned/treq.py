"""
What treq does on every request that the relay's backend client has no use
for, and what we do about it.

``treq.HTTPClient.request`` wraps its agent in a new ``CookieAgent`` on every
call.  That wrapper builds a ``urllib.request.Request`` look-alike from the
URL (a full ``urlparse``) so the jar can inspect it, and a response
look-alike afterwards, even when the jar keeps nothing: ~18 µs per request,
about 5% of a relayed round trip.  The relay's jar keeps nothing (a backend
does not get to set state in the relay), so for a jar of that type the
wrapper is skipped; every other jar gets treq's ``CookieAgent`` as before.

This changes treq for the whole process, so it is not done on import:
:mod:`socketdock.tuning` does it when the service starts, and undoes it.
"""

from __future__ import annotations

from collections.abc import Callable
from http.cookiejar import CookieJar
from typing import Any

import treq.client as _treq_client
from twisted.internet.defer import Deferred
from twisted.web.client import CookieAgent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import implementer

from socketdock.tuned import require


def skip_cookie_agent_for(jar_type: type[CookieJar]) -> Callable[[], None]:
    """
    Make treq's clients skip the cookie wrapper when their jar is exactly
    ``jar_type`` (one that keeps nothing).  Leaves treq alone if it no longer
    uses Twisted's ``CookieAgent`` by that name, or is already changed.

    :returns: the undo.
    """
    if getattr(_treq_client, "CookieAgent", None) is not CookieAgent:
        return lambda: None

    def cookie_agent(agent: IAgent, jar: CookieJar) -> IAgent:
        if type(jar) is jar_type:
            return agent
        return CookieAgent(agent, jar)

    # treq names the class; a function making the same agents stands in for it.
    _treq_client.CookieAgent = cookie_agent  # type: ignore[misc, assignment]

    def undo() -> None:
        _treq_client.CookieAgent = CookieAgent  # type: ignore[misc]  # restores treq's own class

    return undo


@implementer(IAgent)
class _RecordingAgent:
    """Keeps what treq asked of it and answers nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        raw = sorted(headers.getAllRawHeaders()) if headers is not None else []
        self.calls.append((method, uri, raw, bodyProducer is not None))
        return Deferred()


def check_skip_cookie_agent(jar_type: type[CookieJar]) -> None:
    """
    :func:`skip_cookie_agent_for` holds where treq still wraps its agent in
    Twisted's ``CookieAgent`` by that name on each request, and the agent
    beneath gets the same request with the shortcut as without it.
    """
    require(
        getattr(_treq_client, "CookieAgent", None) is CookieAgent,
        "treq no longer wraps its agent in twisted.web.client.CookieAgent",
    )
    from treq.client import HTTPClient

    seen = []
    for shortcut in (False, True):
        undo = skip_cookie_agent_for(jar_type) if shortcut else (lambda: None)
        try:
            agent = _RecordingAgent()
            jar: Any = jar_type()  # treq's type says IndexableCookieJar; any CookieJar works
            client = HTTPClient(agent, cookiejar=jar)
            for d in (
                client.post(
                    "http://127.0.0.1:9/a?b=c", data=b"{}", headers=Headers({b"X-A": [b"1"]})
                ),
                client.get("http://127.0.0.1:9/"),
            ):
                d.addErrback(lambda _: None)
                d.cancel()
            seen.append(agent.calls)
        finally:
            undo()
    require(seen[0] and seen[0] == seen[1], "treq's requests differ without its cookie wrapper")
