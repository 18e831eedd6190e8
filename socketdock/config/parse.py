"""
Parsers for single setting values (private to :mod:`socketdock.config.settings`).

Each parser takes the text of one value and returns the typed value, or raises
:class:`Invalid` whose message says what is wrong and how to fix it, without the key:
:func:`socketdock.config.settings.load_config` adds the key, so every parser stays reusable.
Messages quote values with ``repr()`` so that a value holding a newline still makes a
one-line message.  Nothing here imports Twisted.
"""

from __future__ import annotations

import ipaddress
import math
import re
from urllib.parse import urlsplit

from socketdock.config.endpoints import TCP_TYPES, split_endpoint
from socketdock.config.secrets import split_secrets


class Invalid(Exception):
    """A value that cannot be used; the message says why and what to write instead."""


def show(text: str, limit: int = 60) -> str:
    """
    Quote a value for a message: ``repr()`` keeps the message on one line, and the cut
    keeps a pasted blob from flooding the terminal.

    :param text: the value as given.
    :param limit: the most characters of it to show.
    """
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
# Plain decimal notation only: exponents, nan and inf are refused on purpose, because
# a duration written as "1e3" or "inf" is far more likely a mistake than a wish.
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
# Well past any sane size or count, yet small enough that int() never meets Python's
# digit limit for huge strings (which raises ValueError, not our error).
_INT_MAX = 2**63 - 1
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_HOSTNAME = re.compile(
    r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?", re.ASCII
)
# The shape of an endpoint type's name; which types exist is Twisted's to say.
_ENDPOINT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.+-]*", re.ASCII)
# Paths the callback API owns when it shares the WebSocket listener.
_API_PATHS = ("/socket", "/status", "/metrics", "/healthz", "/readyz")


def parse_bool(text: str) -> bool:
    """:param text: one of true/false/yes/no/1/0, any case."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise Invalid(f"{show(text)} is not a boolean; use true, false, yes, no, 1 or 0")


_LOG_LEVELS = {
    "debug": "debug",
    "info": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "critical": "critical",
}


def parse_log_level(text: str) -> str:
    """
    :param text: debug, info, warn (or warning), error or critical, any case.
    :return: the name of a ``twisted.logger.LogLevel``.
    """
    level = _LOG_LEVELS.get(text.strip().lower())
    if level is None:
        raise Invalid(f"{show(text)} is not a log level; use debug, info, warn, error or critical")
    return level


def parse_count(text: str, minimum: int = 0) -> int:
    """
    :param text: a whole number in decimal digits.
    :param minimum: the smallest value allowed.
    """
    word = text.strip()
    fix = f"use a whole number of at least {minimum}"
    if word.startswith("-") and _DIGITS.fullmatch(word[1:]):
        raise Invalid(f"{show(text)} is negative; {fix}")
    if not _DIGITS.fullmatch(word):
        raise Invalid(f"{show(text)} is not a whole number; {fix}")
    # Check the length before int(): Python refuses to convert very long digit strings.
    if len(word.lstrip("0")) > 19 or int(word) > _INT_MAX:
        raise Invalid(f"{show(text)} is too large; {fix} and at most {_INT_MAX}")
    value = int(word)
    if value < minimum:
        raise Invalid(f"{show(text)} is too small; {fix}")
    return value


def parse_seconds(text: str, allow_zero: bool = True) -> float:
    """
    :param text: a duration in seconds, possibly fractional (``0.5``).
    :param allow_zero: whether ``0`` (meaning "off") is allowed.
    """
    word = text.strip()
    fix = "use a number of seconds such as 10 or 0.5" + ("" if allow_zero else ", greater than 0")
    if word.startswith("-") and _DECIMAL.fullmatch(word[1:]):
        raise Invalid(f"{show(text)} is negative; {fix}")
    if not _DECIMAL.fullmatch(word):
        raise Invalid(f"{show(text)} is not a number of seconds; {fix}")
    value = float(word)
    if not math.isfinite(value):
        raise Invalid(f"{show(text)} is too large; {fix}")
    if value == 0 and not allow_zero:
        raise Invalid(f"{show(text)} is zero; {fix}")
    return value


def parse_rate(text: str) -> float:
    """:param text: a rate per second, possibly fractional (``0.5``); ``0`` is off."""
    word = text.strip()
    fix = "use a number a second such as 20 or 0.5, or 0 for no limit"
    if word.startswith("-") and _DECIMAL.fullmatch(word[1:]):
        raise Invalid(f"{show(text)} is negative; {fix}")
    if not _DECIMAL.fullmatch(word):
        raise Invalid(f"{show(text)} is not a number; {fix}")
    value = float(word)
    if not math.isfinite(value):
        raise Invalid(f"{show(text)} is too large; {fix}")
    return value


def parse_port(text: str) -> int:
    """:param text: a TCP port number, 0 to 65535 (0 picks a free port)."""
    word = text.strip()
    if not _DIGITS.fullmatch(word) or len(word.lstrip("0")) > 5 or int(word) > 65535:
        raise Invalid(f"{show(text)} is not a port number; use an integer from 0 to 65535")
    return int(word)


def parse_bindip(text: str) -> str:
    """:param text: an IPv4 or IPv6 address or a host name; empty means every interface."""
    word = text.strip()
    if word == "":
        return word
    try:
        return str(ipaddress.ip_address(word))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(word):
        raise Invalid(f"{show(text)} is not an IP address or host name; use e.g. 127.0.0.1 or ::1")
    return word


def _split_url(text: str) -> tuple[str, str]:
    """Check an http(s) URL with a host; return (lower-case scheme, the stripped text)."""
    word = text.strip()
    fix = "use an http:// or https:// URL with a host, e.g. http://backend:8080/path"
    if _UNSAFE.search(word):
        raise Invalid(f"{show(text)} contains spaces or control characters; {fix}")
    try:
        parts = urlsplit(word)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise Invalid(f"{show(text)} is not a valid URL; {fix}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise Invalid(f"{show(text)} is not an http(s) URL; {fix}")
    if not parts.hostname:
        raise Invalid(f"{show(text)} has no host; {fix}")
    return parts.scheme.lower(), word


def parse_url(text: str) -> str:
    """:param text: an http(s) URL of the backend, kept as written."""
    return _split_url(text)[1]


def parse_base_url(text: str) -> str:
    """
    Normalise the callback base URL: ``host:port`` means ``http://host:port`` (the
    original SocketDock took bare ``host:port``), and the trailing slash goes so that
    callers can append ``/socket/<id>/send``.

    :param text: ``host:port`` or ``http(s)://host[:port][/path]``.
    """
    word = text.strip()
    if "://" not in word:
        word = "http://" + word
    scheme, word = _split_url(word)
    parts = urlsplit(word)
    if parts.query or parts.fragment or "?" in word or "#" in word:
        raise Invalid(f"{show(text)} has a query or fragment; use http(s)://host[:port][/path]")
    if parts.username is not None or parts.password is not None:
        raise Invalid(f"{show(text)} holds user credentials; use http(s)://host[:port][/path]")
    return f"{scheme}://{parts.netloc}{parts.path}".rstrip("/")


def parse_endpoint(text: str) -> str:
    """
    Check the shape of a server endpoint string, ``<type>:<arguments>``, and, for the
    TCP types (also behind ``haproxy:``), a positional port.  Whether Twisted knows
    the type is asked of Twisted itself (its parsers and endpoint plugins, such as
    ``haproxy:``) by :func:`socketdock.config.preflight.check_startable`, so that
    every endpoint Twisted can listen on is accepted.

    :param text: e.g. ``tcp:8765:interface=127.0.0.1``, ``unix:/run/sd.sock`` or
        ``haproxy:tcp:8765:interface=127.0.0.1``.
    """
    word = text.strip()
    fix = "use an endpoint string such as tcp:8765:interface=127.0.0.1 or unix:/run/sd.sock"
    kind, _, rest = word.partition(":")
    if not _ENDPOINT_TYPE.fullmatch(kind) or not rest.strip():
        raise Invalid(f"{show(text)} is not a server endpoint string; {fix}")
    while kind == "haproxy":  # the PROXY-protocol wrapper around another endpoint
        kind, _, rest = rest.partition(":")
    first = split_endpoint(rest, maxsplit=1)[0]
    if (
        kind in TCP_TYPES
        and "=" not in first
        and not (_DIGITS.fullmatch(first) and int(first) <= 65535)
    ):
        raise Invalid(f"{show(text)} has no valid port after {kind}:; {fix}")
    return word


def parse_origins(text: str) -> tuple[str, ...]:
    """:param text: comma-separated Origin patterns; blanks between commas are dropped."""
    origins = tuple(o.strip() for o in text.split(",") if o.strip())
    if not origins:
        raise Invalid(
            f"{show(text)} lists no origins; use * to accept any origin, "
            "or patterns separated by commas"
        )
    for origin in origins:
        if _UNSAFE.search(origin):
            raise Invalid(
                f"{show(origin)} contains spaces or control characters; separate patterns with commas"
            )
    return origins


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def parse_header_names(text: str) -> tuple[str, ...]:
    """
    :param text: comma-separated HTTP header names, or ``*`` for all.
    :returns: the names in lower case, or ``("*",)``.
    """
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    if not names:
        raise Invalid(f"{show(text)} lists no header names; use * to forward all of them")
    if "*" in names:
        if len(names) > 1:
            raise Invalid(f"{show(text)} mixes * with names; use * alone, or only names")
        return names
    for name in names:
        if not _HEADER_NAME.match(name):
            raise Invalid(f"{show(name)} is not an HTTP header name; separate names with commas")
    return names


def parse_wspath(text: str) -> str:
    """:param text: an absolute URL path such as ``/ws``."""
    word = text.strip()
    if not word.startswith("/"):
        raise Invalid(f"{show(text)} does not start with '/'; use a path such as /ws")
    if _UNSAFE.search(word) or "?" in word or "#" in word:
        raise Invalid(
            f"{show(text)} contains spaces, control characters, '?' or '#'; use a path such as /ws"
        )
    return word


def check_wspath_free(wspath: str) -> None:
    """
    Refuse a ``wspath`` that would hide a callback-API route on a shared listener.

    :param wspath: a value from :func:`parse_wspath`.
    """
    for api in _API_PATHS:
        if wspath.rstrip("/") == "" or wspath == api or wspath.startswith(api + "/"):
            raise Invalid(
                f"{show(wspath)} clashes with the callback API at {api}; "
                "choose another path such as /ws, or set api_listen"
            )


def parse_token(text: str) -> str:
    """
    The value is never quoted in messages: it is a secret.

    :param text: a bearer token; it must fit in an ``Authorization`` header unchanged.
    """
    word = text.strip()
    if not word.isascii() or _UNSAFE.search(word):
        raise Invalid(
            "the value contains spaces, control or non-ASCII characters; "
            "use printable ASCII characters only"
        )
    return word


def parse_tokens(text: str) -> str:
    """
    Several bearer tokens, comma-separated (any one admits); each as :func:`parse_token`.
    Never quoted in messages.
    """
    for token in split_secrets(text):
        parse_token(token)
    if not split_secrets(text):
        raise Invalid("holds no token, only commas; give one or more tokens")
    return text.strip()


def parse_secret(text: str) -> str:
    """
    :param text: one or more signing secrets, comma-separated (the first signs); any
        text but a comma. Never quoted in messages.
    """
    if not split_secrets(text):
        raise Invalid("holds no secret, only commas; give one or more secrets")
    return text.strip()


def read_secret_file(path: str) -> str:
    """
    The text of a file holding secrets (one per line, or comma-separated).

    :raises Invalid: unreadable or empty; never quoting what the file holds.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 16)
    except UnicodeDecodeError:
        raise Invalid(f"{show(path)} is not UTF-8 text; write the secret as UTF-8") from None
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or "cannot open"
        raise Invalid(
            f"cannot read {show(path)} ({reason}); use a file this user can read"
        ) from None
    if not split_secrets(text):
        raise Invalid(f"{show(path)} is empty; write the secret into it")
    return text


def parse_path(text: str) -> str:
    """:param text: a file system path."""
    word = text.strip()
    if "\x00" in word:
        raise Invalid(f"{show(text)} contains a NUL character; use a file path")
    return word


def parse_ca_file(text: str) -> str:
    """
    :param text: path of a PEM file of CA certificates; read now so that a typo stops
        start-up instead of failing the first https request.
    """
    path = parse_path(text)
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or "cannot open"
        raise Invalid(f"cannot read {show(path)} ({reason}); use a readable PEM file") from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise Invalid(f"{show(path)} holds no PEM certificate; use a PEM file of CA certificates")
    return path
