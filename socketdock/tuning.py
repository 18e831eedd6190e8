"""
The one seam between the plain Twisted/treq/Autobahn stack and the faster
paths in :mod:`socketdock.tuned`.

Each faster path is a :class:`Piece` that decides for itself whether it can
run: at start, :func:`choose_stack` runs every piece's check once (a few
milliseconds in all: are the library internals the piece leans on there, in
the shape it expects, and does it behave like the plain path on a small
input?).  A piece whose check fails falls back to the plain path alone; the
others stay on.  The ``tuning`` setting: ``auto`` runs every piece whose
check passes; ``off`` runs none; ``required`` refuses to start unless every
piece passes.

Library versions are information, not a gate: a version outside
:data:`TESTED` is logged, and the checks decide.  A piece known to be wrong
on some release names it in :attr:`Piece.broken_on`.

Nothing here or in :mod:`socketdock.tuned` changes a library on import or
when a factory or client is built: :func:`engage` applies a stack's
process-wide patches and returns their undo; the service calls it once when
it starts, and tests call it with ``addCleanup(engage(stack))``.
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
from socketdock.config.settings import DEFAULT_MAX_RESPONSE_BODY, ConfigError
from socketdock.relay.httpclient import (
    PLAIN_POST,
    HTTPResult,
    NoCookies,
    PostPath,
    ResponseTooLong,
)
from socketdock.tuned import CheckFailed
from socketdock.tuned.autobahn import (
    check_debug_formatting,
    check_options,
    check_small_frame_masker,
    defer_debug_formatting,
    use_small_frame_masker,
    with_options,
)
from socketdock.tuned.batchedtcp import batching, check_batching
from socketdock.tuned.collector import check_collector
from socketdock.tuned.fastagent import ConnectionPool, FastAgent, check_agent
from socketdock.tuned.fastchannel import FastHTTPChannel, check_channel
from socketdock.tuned.post import BytesProducer, Line, URLCache, check_post, reader
from socketdock.tuned.treq import check_skip_cookie_agent, skip_cookie_agent_for

#: The library versions the tuned pieces were last tested with, oldest and
#: newest (the newest as precise as given, so "26.10" covers 26.10.x).  Only
#: information: outside it, each piece's own check decides.
TESTED: dict[str, tuple[str, str]] = {
    "twisted": ("26.10.0", "26.10"),
    "autobahn": ("23.1.2", "26.11"),
    "treq": ("23.11.0", "26.7"),
    "httptools": ("0.6.3", "0.9"),
}

#: How to get an off piece back, for the start-up line.
_REMEDY = "install the tested set (pip install -c constraints.txt .)"

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
            out.append(f"{name} {have or '(none)'} is outside the tested {oldest}..{newest}.x")
    return out


@attrs.frozen
class Piece:
    """
    One faster path and how it decides whether it can run.

    :ivar name: its name in the start-up line, ``/status`` and ``/metrics``.
    :ivar gives: what it buys, roughly (said when it is off).
    :ivar check: raises :class:`~socketdock.tuned.CheckFailed` (or anything)
        when the piece cannot run here.
    :ivar broken_on: ``(library, version prefix)`` pairs the piece is known
        to be wrong on, whatever its check says.
    """

    name: str
    gives: str
    check: Callable[[], None]
    broken_on: tuple[tuple[str, str], ...] = ()

    def verdict(self, versions: Mapping[str, str]) -> str:
        """``"on"``, or why the piece cannot run here (one line)."""
        for library, prefix in self.broken_on:
            have = versions.get(library, "")
            if have == prefix or have.startswith(prefix + "."):
                return f"known to be wrong on {library} {have}"
        try:
            self.check()
        except CheckFailed as e:
            return str(e)
        except Exception as e:  # a check that breaks is a check that failed
            return f"its check raised {type(e).__name__}: {e}".splitlines()[0]
        return "on"


def _check_agent_and_post() -> None:
    check_agent()
    check_post()


PIECES: tuple[Piece, ...] = (
    Piece(
        "channel",
        "callback requests parsed with httptools, about half twisted.web's CPU per request",
        check_channel,
    ),
    Piece(
        "network",
        "TCP writes sent once per read, half the system calls of a relayed round trip",
        check_batching,
    ),
    Piece(
        "agent",
        "backend POSTs over an httptools client, built and read without treq's "
        "per-request work, a large share of each POST's CPU",
        _check_agent_and_post,
    ),
    Piece(
        "ws_options",
        "WebSocket options shared by class, not copied into every connection",
        check_options,
    ),
    Piece(
        "debug_formatting",
        "Autobahn's debug text built only when logged, about 3% of a round trip",
        check_debug_formatting,
    ),
    Piece(
        "masker",
        "small frames unmasked without a new masker, about 2.5% of a round trip",
        check_small_frame_masker,
    ),
    Piece(
        "cookies",
        "treq's per-request cookie wrapper skipped, about 5% of a round trip",
        lambda: check_skip_cookie_agent(NoCookies),
    ),
    Piece(
        "gc",
        "rarer young collections, a sixth of the CPU while connections churn",
        check_collector,
    ),
)


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


#: The agent piece's POSTs: built and read as :mod:`socketdock.tuned.post` does.
_TUNED_POST = PostPath(URLCache, BytesProducer, reader(HTTPResult, ResponseTooLong), Line)


def _plain_network(reactor):
    return reactor


def _skip_no_cookies() -> Callable[[], None]:
    return skip_cookie_agent_for(NoCookies)


@attrs.frozen
class Stack:
    """
    Which pieces run: everything that differs between the plain and the
    tuned paths is read off :attr:`pieces`.

    :ivar pieces: piece name to ``"on"`` or the reason it is off, in the
        order of :data:`PIECES`.
    :ivar notes: information for the start-up line (untested versions).
    """

    pieces: Mapping[str, str]
    notes: tuple[str, ...] = ()

    def on(self, piece: str) -> bool:
        return self.pieces.get(piece) == "on"

    @property
    def off(self) -> dict[str, str]:
        """Each piece that does not run, with why."""
        return {name: why for name, why in self.pieces.items() if why != "on"}

    @property
    def name(self) -> str:
        """``tuned`` (every piece on), ``plain`` (none) or ``partly tuned``."""
        running = sum(1 for why in self.pieces.values() if why == "on")
        return (
            "tuned" if running == len(self.pieces) else "plain" if not running else "partly tuned"
        )

    @property
    def channel(self) -> type:
        """The ``HTTPChannel`` class the sites parse requests with."""
        return FastHTTPChannel if self.on("channel") else PlainHTTPChannel

    @property
    def network(self) -> Callable:
        """Wraps the reactor that listeners and backend connections use."""
        return batching if self.on("network") else _plain_network

    @property
    def make_pool(self) -> Callable:
        """``(reactor, max_per_host)`` to the backend connection pool."""
        return _tuned_pool if self.on("agent") else _plain_pool

    @property
    def make_agent(self) -> Callable:
        """``(reactor, pool, tls_policy, max_response_body)`` to an ``IAgent``."""
        return FastAgent if self.on("agent") else _plain_agent

    @property
    def post(self) -> PostPath:
        """How ``BackendClient`` builds and reads a POST."""
        return _TUNED_POST if self.on("agent") else PLAIN_POST

    @property
    def ws_specialise(self) -> Callable | None:
        """The WebSocket factory's ``specialise`` (see ``ws.factory``)."""
        return with_options if self.on("ws_options") else None

    @property
    def patches(self) -> tuple[Callable[[], Callable[[], None]], ...]:
        """Process-wide changes, each returning its undo; see :func:`engage`."""
        chosen = (
            ("debug_formatting", defer_debug_formatting),
            ("masker", use_small_frame_masker),
            ("cookies", _skip_no_cookies),
        )
        return tuple(patch for piece, patch in chosen if self.on(piece))

    @property
    def tune_gc(self) -> bool:
        """Whether the process tunes the garbage collector once running."""
        return self.on("gc")

    def summary(self, gives: Mapping[str, str] | None = None) -> str:
        """
        One start-up line: every piece and whether it runs; for one that does
        not, why, what it would give and how to get it back.
        """
        gives = {p.name: p.gives for p in PIECES} if gives is None else gives
        parts = []
        for name, why in self.pieces.items():
            if why == "on":
                parts.append(f"{name} on")
            elif why == "tuning = off":
                parts.append(f"{name} off")
            else:
                parts.append(f"{name} OFF ({why}; it gives {gives.get(name, '?')})")
        line = f"tuning: {self.name}: " + ", ".join(parts)
        if any(why == "tuning = off" for why in self.pieces.values()):
            line += "; set tuning = auto for the faster paths"
        elif self.off:
            line += f"; to get them back, {_REMEDY}"
        if self.notes:
            line += "; " + "; ".join(self.notes)
        return line


PLAIN = Stack({piece.name: "tuning = off" for piece in PIECES})
TUNED = Stack({piece.name: "on" for piece in PIECES})


def choose_stack(
    setting: str,
    versions: Mapping[str, str] | None = None,
    pieces: tuple[Piece, ...] = PIECES,
) -> Stack:
    """
    The stack to run: each piece's check decides for that piece.

    :param setting: the ``tuning`` setting: ``auto``, ``off`` or ``required``.
    :param versions: library name to installed version (by default,
        :func:`installed_versions`): only for the notes and ``broken_on``.
    :raises ConfigError: with ``required``, naming the first piece that
        cannot run.
    """
    if setting == "off":
        return Stack({piece.name: "tuning = off" for piece in pieces})
    if versions is None:
        versions = installed_versions()
    verdicts = {piece.name: piece.verdict(versions) for piece in pieces}
    if setting == "required":
        for name, why in verdicts.items():
            if why != "on":
                raise ConfigError(
                    "tuning",
                    f"required, but the {name} piece cannot run ({why}); "
                    f"{_REMEDY}, or set tuning = auto to run without it",
                )
    notes = tuple(
        phrase + " (information only: each piece checked itself)" for phrase in untested(versions)
    )
    return Stack(verdicts, notes)


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
