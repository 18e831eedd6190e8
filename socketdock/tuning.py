"""
The one seam between the plain Twisted/treq/Autobahn stack and the faster
paths in :mod:`socketdock.tuned`.

:func:`choose_stack` turns the ``tuning`` setting and the installed library
versions into a :class:`Stack`: which HTTP channel the sites use, which agent
and pool the backend client uses, whether TCP writes are batched, whether
WebSocket connections share their factory's options, which process-wide
patches apply and whether the garbage collector is tuned.  ``auto`` picks
the tuned stack only when every library the tuned pieces reach into is inside
:data:`TESTED`; otherwise (and with ``off``) it is the plain stack.

Nothing here or in :mod:`socketdock.tuned` changes a library on import or
when a factory or client is built: :func:`engage` applies a stack's
process-wide patches (Autobahn's masker and debug formatting, treq's cookie
wrapper) and returns their undo; ``tap.makeService`` calls it once when the
service is made, and tests call it with ``addCleanup(engage(stack))``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import attrs
from treq.client import HTTPClient
from twisted.web.client import Agent, HTTPConnectionPool

from socketdock.api.site import PlainHTTPChannel
from socketdock.config.settings import DEFAULT_MAX_RESPONSE_BODY
from socketdock.relay.httpclient import NoCookies
from socketdock.tuned.autobahn import defer_debug_formatting, use_small_frame_masker, with_options
from socketdock.tuned.batchedtcp import batching
from socketdock.tuned.fastagent import ConnectionPool, FastAgent
from socketdock.tuned.fastchannel import FastHTTPChannel
from socketdock.tuned.treq import skip_cookie_agent_for

#: The library versions the tuned pieces are tested with, oldest and newest
#: (inclusive; the newest as precise as given, so "26.10" admits 26.10.x).
#: The oldest are setup.py's lower bounds (CI's "oldest" job runs the suite
#: there); the newest are what CI installs today.  Raise the newest only
#: after the whole suite and the conformance run pass on it.
TESTED: dict[str, tuple[str, str]] = {
    "twisted": ("26.10.0", "26.10"),
    "autobahn": ("23.1.2", "26.10"),
    "treq": ("23.11.0", "26.7"),
    "httptools": ("0.6.3", "0.9"),
}

_RELEASE = re.compile(r"\d+(?:\.\d+)*")


def _release(text: str) -> tuple[int, ...]:
    match = _RELEASE.match(text)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def installed_versions() -> dict[str, str]:
    """The installed version of each library in :data:`TESTED` ("" if absent)."""
    found = {}
    for name in TESTED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = ""
    return found


def untested(versions: Mapping[str, str]) -> list[str]:
    """For each library outside :data:`TESTED`, a phrase saying so; empty when all are in."""
    out = []
    for name, (oldest, newest) in TESTED.items():
        have = versions.get(name, "")
        release = _release(have)
        top = _release(newest)
        if not release or release < _release(oldest) or release[: len(top)] > top:
            out.append(f"{name} {have or '(none)'} is outside {oldest}..{newest}.x")
    return out


def _plain_pool(reactor, max_per_host: int) -> HTTPConnectionPool:
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max_per_host
    pool.cachedConnectionTimeout = 120
    return pool


def _plain_agent(reactor, pool, tls_policy, max_response_body: int) -> Agent:
    # The body bound is BackendClient's own (the same on both stacks).
    return Agent(reactor, contextFactory=tls_policy, connectTimeout=30, pool=pool)


def _tuned_pool(reactor, max_per_host: int) -> ConnectionPool:
    return ConnectionPool(reactor, max_per_host=max_per_host, idle_timeout=120)


def _plain_network(reactor):
    return reactor


def _skip_no_cookies() -> Callable[[], None]:
    return skip_cookie_agent_for(NoCookies)


@attrs.frozen
class Stack:
    """
    Everything that differs between the plain and the tuned stack.

    :ivar name: ``"tuned"`` or ``"plain"``.
    :ivar reason: why ``auto`` fell back to the plain stack (one log line), or "".
    :ivar channel: the ``HTTPChannel`` class the sites parse requests with.
    :ivar network: wraps the reactor that listeners and backend connections use.
    :ivar make_pool: ``(reactor, max_per_host)`` to the backend connection pool.
    :ivar make_agent: ``(reactor, pool, tls_policy, max_response_body)`` to an ``IAgent``.
    :ivar ws_specialise: the WebSocket factory's ``specialise`` (see ``ws.protocol``).
    :ivar patches: process-wide changes, each returning its undo; see :func:`engage`.
    :ivar tune_gc: whether the process tunes the garbage collector once running.
    """

    name: str
    channel: type
    network: Callable
    make_pool: Callable
    make_agent: Callable
    ws_specialise: Callable | None
    patches: tuple[Callable[[], Callable[[], None]], ...]
    tune_gc: bool
    reason: str = ""


PLAIN = Stack(
    name="plain",
    channel=PlainHTTPChannel,
    network=_plain_network,
    make_pool=_plain_pool,
    make_agent=_plain_agent,
    ws_specialise=None,
    patches=(),
    tune_gc=False,
)

TUNED = Stack(
    name="tuned",
    channel=FastHTTPChannel,
    network=batching,
    make_pool=_tuned_pool,
    make_agent=FastAgent,
    ws_specialise=with_options,
    patches=(defer_debug_formatting, use_small_frame_masker, _skip_no_cookies),
    tune_gc=True,
)


def choose_stack(setting: str, versions: Mapping[str, str]) -> Stack:
    """
    The stack to run.

    :param setting: the ``tuning`` setting, ``auto`` or ``off``.
    :param versions: library name to installed version (:func:`installed_versions`).
    """
    if setting == "off":
        return PLAIN
    outside = untested(versions)
    if outside:
        return attrs.evolve(
            PLAIN,
            reason=(
                "tuning = auto, but "
                + "; ".join(outside)
                + " (the versions tuning is tested with): running the plain Twisted/treq/Autobahn stack"
            ),
        )
    return TUNED


def engage(stack: Stack) -> Callable[[], None]:
    """
    Apply ``stack``'s process-wide patches; return one call that undoes them,
    last first.
    """
    undos = [patch() for patch in stack.patches]

    def undo() -> None:
        while undos:
            undos.pop()()

    return undo


def make_http_client(
    stack: Stack, reactor, pool, tls_policy, max_response_body: int = DEFAULT_MAX_RESPONSE_BODY
) -> HTTPClient:
    """
    A treq client over ``pool`` with ``stack``'s agent; ``tls_policy``
    verifies https backends.  Its jar keeps no cookies.
    """
    jar: Any = NoCookies()  # treq takes any CookieJar (its type says IndexableCookieJar)
    return HTTPClient(stack.make_agent(reactor, pool, tls_policy, max_response_body), cookiejar=jar)
