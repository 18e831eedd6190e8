"""
Settings: layered string sources in, one validated, frozen :class:`Config` out.

Sources, highest first: command-line options, ``SOCKETDOCK_<KEY>`` environment
variables, the ``[socketdock]`` section of an INI file, built-in defaults.  Every
mistake becomes a :class:`ConfigError` whose one-line message names the key and the fix,
so ``tap`` can show it to the operator without a traceback.  :data:`SETTINGS` is the one
table of keys that options, environment variables and the sample INI follow.

This module is pure: no Twisted, no reactor; the only I/O is reading the INI file and
checking that ``backend_ca`` is readable.
"""

from __future__ import annotations

import configparser
import difflib
import re
from collections.abc import Callable, Mapping

import attrs

from socketdock.config import parse as p
from socketdock.config.cluster import RedisAddress, parse_cluster_url
from socketdock.config.endpoints import base_url_for, endpoint_for, is_wildcard, learns_base_url
from socketdock.config.secrets import Secrets, split_secrets

__all__ = [
    "DEFAULT_MAX_RESPONSE_BODY",
    "ENV_PREFIX",
    "SECRET_KEYS",
    "SETTINGS",
    "Config",
    "ConfigError",
    "Setting",
    "closest_key",
    "environ_warnings",
    "load_config",
    "max_response_body",
    "secrets_of",
]

ENV_PREFIX = "SOCKETDOCK_"
_SECTION = "socketdock"
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)
# Keys whose values must never appear in a message or a log line.
SECRET_KEYS = frozenset({"api_token", "signing_secret", "cluster"})


class ConfigError(Exception):
    """
    A configuration mistake.  ``str(e)`` is one readable line, ``"<key>: <what>; <fix>"``.

    :ivar key: the offending key, or ``"config"`` for the config file itself.
    """

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        """
        :param key: the setting at fault, so callers can point at it.
        :param message: what is wrong and how to fix it, without the key.
        :param source: where the operator wrote the value, to name instead of
            the key (``SOCKETDOCK_BINDPORT`` for a value from the environment).
        """
        self.key = key
        # A misspelt key from an INI file can hold any character but a newline, and
        # str.splitlines() breaks on more than newlines: quote anything unusual.
        shown = source or (key if _PLAIN_KEY.fullmatch(key) else repr(key))
        super().__init__(f"{shown}: {message}")


@attrs.frozen
class Setting:
    """
    One row of :data:`SETTINGS`.

    :ivar key: the INI key; ``--key-with-dashes`` and ``SOCKETDOCK_KEY`` derive from it.
    :ivar default: the default as text, or None when unset (or derived) by default.
    :ivar help: one line for ``--help``, the sample INI and the README.
    """

    key: str
    default: str | None
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("bindip", "127.0.0.1", "Interface the WebSocket listener binds."),
    Setting("bindport", "8765", "Port of the WebSocket listener."),
    Setting(
        "listen",
        None,
        "Twisted endpoint string for the WebSocket listener; overrides bindip/bindport.",
    ),
    Setting(
        "externalhostandport",
        None,
        "Base URL at which the backend reaches this instance (default http://<bindip>:<bindport>; with port 0, the port bound).",
    ),
    Setting("backend", "loopback", "loopback (echo every message) or http."),
    Setting("messageuri", None, "Backend URL for messages; required with backend = http."),
    Setting(
        "connecturi", None, "Backend URL told of new connections; it also admits or refuses them."
    ),
    Setting("disconnecturi", None, "Backend URL told of closed connections."),
    Setting("wspath", "/ws", "Path that accepts WebSocket upgrades."),
    Setting("api_listen", None, "Endpoint string of a separate callback-API listener."),
    Setting(
        "api_token",
        None,
        "Bearer token every callback-API request must carry; several, comma-separated, during a rotation (any one admits).",
    ),
    Setting(
        "api_token_file",
        None,
        "File holding api_token (one token per line, or comma-separated); re-read on SIGHUP.",
    ),
    Setting(
        "signing_secret",
        None,
        "Secret that signs every request to the backend; several, comma-separated, during a rotation (the first signs, each adds a v1= signature).",
    ),
    Setting(
        "signing_secret_file",
        None,
        "File holding signing_secret (one secret per line, or comma-separated); re-read on SIGHUP.",
    ),
    Setting("allowed_origins", "*", "Comma-separated Origin patterns accepted at the handshake."),
    Setting("max_message_size", "4194304", "Largest message in either direction, in bytes."),
    Setting(
        "max_connections",
        "0",
        "Most live connections; further handshakes get 503 (0: derived from the open-file limit).",
    ),
    Setting(
        "pending_handshakes",
        "1024",
        "Handshakes waiting for the backend's answer to their connect notice at once; further ones get 503 (0: no limit).",
    ),
    Setting(
        "handshake_rate",
        "0",
        "Handshakes a second allowed from one client address (an IPv6 /64); past it 429 (0: no limit).",
    ),
    Setting(
        "handshake_burst",
        "20",
        "Handshakes one client address may make at once before handshake_rate applies.",
    ),
    Setting("ping_interval", "30", "Seconds between WebSocket pings (0: off)."),
    Setting("ping_timeout", "10", "Seconds to wait for a pong before dropping the peer (0: off)."),
    Setting(
        "max_lifetime",
        "0",
        "Seconds (±10% jitter) after which a connection is closed with 1001 so its client reconnects (0: never).",
    ),
    Setting(
        "tag_deadline",
        "0",
        "Seconds after opening by which the backend must have tagged a connection, else it is closed with 1008 (0: never).",
    ),
    Setting("backend_timeout", "10", "Seconds for one request to the backend."),
    Setting("backend_retries", "5", "Further attempts after a failed backend request."),
    Setting(
        "backend_concurrency",
        "128",
        "Requests to the backend in flight at once; more wait in line.",
    ),
    Setting(
        "queue_limit",
        "64",
        "Messages waiting for the backend per connection before reading pauses.",
    ),
    Setting(
        "max_queued_bytes",
        "268435456",
        "Bytes queued in the whole instance (for the backend, or unread by clients) past"
        " which reading pauses and send answers 503 (0: no limit).",
    ),
    Setting(
        "inline_reply", "false", "Send a non-empty 2xx body of a message POST back to the client."
    ),
    Setting("shutdown_timeout", "10", "Seconds a stop may spend draining."),
    Setting("journal", None, "Path of an SQLite file recording open connections across crashes."),
    Setting("backend_ca", None, "PEM file of a private CA for https backends."),
    Setting("permessage_deflate", "false", "Offer and accept the permessage-deflate extension."),
    Setting(
        "log_level",
        "info",
        "Lowest level written to the log: debug, info, warn, error or critical.",
    ),
    Setting(
        "cluster",
        None,
        "redis://[:password@]host:port/db (rediss:// for TLS) shared by the instances of a cluster.",
    ),
    Setting(
        "cluster_password_file",
        None,
        "File holding the cluster's Redis password (instead of one in the cluster URL); re-read on SIGHUP.",
    ),
    Setting(
        "cluster_heartbeat",
        "5",
        "Seconds between cluster heartbeats; an instance silent for three is declared lost.",
    ),
    Setting(
        "forward_headers",
        "*",
        "Comma-separated handshake header names the connect notice carries (*: all).",
    ),
    Setting(
        "tuning",
        "auto",
        "auto (each faster path where its start-up check passes), off (plain"
        " Twisted/treq/Autobahn) or required (refuse to start unless every faster path runs).",
    ),
)

_KEYS = tuple(s.key for s in SETTINGS)
_DEFAULTS = {s.key: s.default for s in SETTINGS}


def max_response_body(max_message_size: int) -> int:
    """
    The largest backend response body read: an inline reply is at most one message,
    so twice ``max_message_size``, plus room for headers and an envelope.
    """
    return 2 * max_message_size + 64 * 1024


#: :func:`max_response_body` of the default ``max_message_size``.
DEFAULT_MAX_RESPONSE_BODY = max_response_body(int(_DEFAULTS["max_message_size"] or 0))

_PARSERS: dict[str, Callable[[str], object]] = {
    "bindip": p.parse_bindip,
    "bindport": p.parse_port,
    "listen": p.parse_endpoint,
    "externalhostandport": p.parse_base_url,
    "backend": lambda t: _parse_backend(t),
    "messageuri": p.parse_url,
    "connecturi": p.parse_url,
    "disconnecturi": p.parse_url,
    "wspath": p.parse_wspath,
    "api_listen": p.parse_endpoint,
    "api_token": p.parse_tokens,
    "api_token_file": p.parse_path,
    "signing_secret": p.parse_secret,
    "signing_secret_file": p.parse_path,
    "allowed_origins": p.parse_origins,
    "max_message_size": lambda t: p.parse_count(t, minimum=1),
    "max_connections": p.parse_count,
    "pending_handshakes": p.parse_count,
    "handshake_rate": p.parse_rate,
    "handshake_burst": lambda t: p.parse_count(t, minimum=1),
    "ping_interval": p.parse_seconds,
    "ping_timeout": p.parse_seconds,
    "max_lifetime": p.parse_seconds,
    "tag_deadline": p.parse_seconds,
    "backend_timeout": lambda t: p.parse_seconds(t, allow_zero=False),
    "backend_retries": p.parse_count,
    "backend_concurrency": lambda t: p.parse_count(t, minimum=1),
    "queue_limit": lambda t: p.parse_count(t, minimum=1),
    "max_queued_bytes": p.parse_count,
    "inline_reply": p.parse_bool,
    "shutdown_timeout": p.parse_seconds,
    "journal": p.parse_path,
    "backend_ca": p.parse_ca_file,
    "permessage_deflate": p.parse_bool,
    "log_level": p.parse_log_level,
    "cluster": parse_cluster_url,
    "cluster_password_file": p.parse_path,
    "cluster_heartbeat": lambda t: p.parse_seconds(t, allow_zero=False),
    "tuning": lambda t: _parse_tuning(t),
    "forward_headers": p.parse_header_names,
}
assert set(_PARSERS) == set(_KEYS)


def _parse_backend(text: str) -> str:
    word = text.strip().lower()
    if word not in ("loopback", "http"):
        raise p.Invalid(f"{text!r} is not a known backend; use loopback or http")
    return word


def _parse_tuning(text: str) -> str:
    word = text.strip().lower()
    if word not in ("auto", "off", "required"):
        raise p.Invalid(f"{text!r} is not a tuning mode; use auto, off or required")
    return word


@attrs.frozen
class Config:
    """
    The validated settings of one SocketDock instance; see SPEC §2 for each field.

    :ivar listen_key: not a setting: the key to name when the WebSocket listener
        cannot start, ``listen`` if the operator gave it, else ``bindport`` (it was
        derived from ``bindip``/``bindport``).
    :ivar externalhostandport: None when the callback-API listener is TCP on one
        interface with port 0: the base URL is then learned from the port the OS
        picked, once listening.
    :ivar api_tokens: not a setting: the tokens in force, from ``api_token`` or
        ``api_token_file``; empty when none is set.
    :ivar signing_secrets: likewise, from ``signing_secret`` or ``signing_secret_file``.
    """

    bindip: str
    bindport: int
    listen: str
    externalhostandport: str | None
    backend: str
    messageuri: str | None
    connecturi: str | None
    disconnecturi: str | None
    wspath: str
    api_listen: str | None
    api_token: str | None = attrs.field(repr=False)
    api_token_file: str | None
    signing_secret: str | None = attrs.field(repr=False)
    signing_secret_file: str | None
    allowed_origins: tuple[str, ...]
    max_message_size: int
    max_connections: int
    pending_handshakes: int
    handshake_rate: float
    handshake_burst: int
    ping_interval: float
    ping_timeout: float
    max_lifetime: float
    tag_deadline: float
    backend_timeout: float
    backend_retries: int
    backend_concurrency: int
    queue_limit: int
    max_queued_bytes: int
    inline_reply: bool
    shutdown_timeout: float
    journal: str | None
    backend_ca: str | None
    permessage_deflate: bool
    log_level: str
    cluster: RedisAddress | None = attrs.field(repr=False)
    cluster_password_file: str | None
    cluster_heartbeat: float
    forward_headers: tuple[str, ...] = ("*",)
    tuning: str = "auto"
    listen_key: str = "listen"
    api_tokens: tuple[str, ...] = attrs.field(default=(), repr=False)
    signing_secrets: tuple[str, ...] = attrs.field(default=(), repr=False)


def secrets_of(config: Config) -> Secrets:
    """The secrets ``config`` puts in force (see :class:`Secrets`)."""
    return Secrets(
        config.api_tokens,
        config.signing_secrets,
        config.cluster.password if config.cluster is not None else None,
    )


def load_config(cli: Mapping[str, str], environ: Mapping[str, str], ini_path: str | None) -> Config:
    """
    Merge the layers and validate the result.

    :param cli: key (with underscores) to value, for the options actually given.
    :param environ: the process environment; only ``SOCKETDOCK_<KEY>`` for known keys is
        read, because deployment tools may set other ``SOCKETDOCK_`` variables.
    :param ini_path: the INI file to read, or None for none.
    :raises ConfigError: for any mistake, naming the key and the fix.
    """
    raw: dict[str, str | None] = dict(_DEFAULTS)
    if ini_path is not None:
        raw.update(_read_ini(ini_path))
    # A value from the environment is named by its variable in a message.
    sources: dict[str, str] = {}
    for key in _KEYS:
        if ENV_PREFIX + key.upper() in environ:
            raw[key] = environ[ENV_PREFIX + key.upper()]
            sources[key] = ENV_PREFIX + key.upper()
    for key, value in cli.items():
        if key not in _PARSERS:
            raise ConfigError(str(key), f"unknown option{_did_you_mean(str(key))}")
        raw[key] = value
        sources.pop(key, None)
    values = {key: _parse_one(key, raw[key], sources.get(key)) for key in _KEYS}
    return _finish(values)


def environ_warnings(environ: Mapping[str, str]) -> list[str]:
    """
    One line for each ``SOCKETDOCK_*`` variable that names no setting: such a variable
    is ignored (deployment tools may set their own), but it is most often a misspelt
    setting that the operator believes is in force.

    :param environ: the process environment.
    """
    known = {ENV_PREFIX + key.upper() for key in _KEYS}
    lines = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        close = closest_key(name[len(ENV_PREFIX) :])
        hint = (
            f"did you mean {ENV_PREFIX}{close.upper()} ({close})?"
            if close is not None
            else "see etc/socketdock.ini for the known keys"
        )
        shown = name if _PLAIN_KEY.fullmatch(name) else repr(name)  # one line, always
        lines.append(f"{shown}: not a setting, ignored; {hint}")
    return lines


def closest_key(word: str) -> str | None:
    """
    The known key most like ``word`` (any case, dashes or underscores), or None.

    :param word: a misspelt key, option or environment variable suffix.
    """
    close = difflib.get_close_matches(word.replace("-", "_").lower(), _KEYS, n=1)
    return close[0] if close else None


def _parse_one(key: str, text: str | None, source: str | None = None) -> object:
    # An empty value of a key with no default means "not set", so an environment
    # variable or a later layer can switch off a setting from the INI file.
    if text is None or (_DEFAULTS[key] is None and text.strip() == ""):
        return None
    try:
        return _PARSERS[key](text)
    except p.Invalid as e:
        # The parsers of SECRET_KEYS never quote the value; tests hold them to it.
        raise ConfigError(key, str(e), source) from None


def _finish(values: dict[str, object]) -> Config:
    """Fill in derived values and check rules that involve more than one key."""
    bindip, bindport = str(values["bindip"]), int(values["bindport"])  # type: ignore[call-overload]
    if values["backend"] == "http" and values["messageuri"] is None:
        raise ConfigError(
            "messageuri",
            "not set, but backend is http; set messageuri to the backend's message URL "
            "or use backend = loopback",
        )
    api_endpoint = values["api_listen"] or values["listen"] or endpoint_for(bindip, bindport)
    if values["externalhostandport"] is None and learns_base_url(str(api_endpoint)):
        pass  # None: learned from the bound address once listening (port 0)
    elif values["externalhostandport"] is None:
        reason = (
            "listen is set"
            if values["listen"] is not None
            else "api_listen is set"
            if values["api_listen"] is not None
            else f"bindip {bindip!r} binds every interface"
            if is_wildcard(bindip)
            else None
        )
        if reason is not None:
            raise ConfigError(
                "externalhostandport",
                f"not set, but {reason}; set it to the URL at which the backend reaches "
                "this instance, e.g. http://socketdock-1.internal:8765",
            )
        values["externalhostandport"] = base_url_for(bindip, bindport)
    if values["cluster"] is not None and values["journal"] is not None:
        raise ConfigError(
            "journal",
            "not used with cluster: Redis keeps each instance's open connections and a "
            "surviving instance sends their notices; remove journal or cluster",
        )
    _secrets_from_files(values)
    if values["listen"] is None:
        values["listen"] = endpoint_for(bindip, bindport)
        values["listen_key"] = "bindport"
    if values["api_listen"] is None:
        try:
            p.check_wspath_free(str(values["wspath"]))
        except p.Invalid as e:
            raise ConfigError("wspath", str(e)) from None
    return Config(**values)  # type: ignore[arg-type]


def _secrets_from_files(values: dict[str, object]) -> None:
    """Read the ``*_file`` secrets, and derive ``api_tokens`` and ``signing_secrets``."""
    for key, parse in (("api_token", p.parse_tokens), ("signing_secret", p.parse_secret)):
        text = _one_of(values, key)
        if text is not None:
            try:
                parse(text)
            except p.Invalid as e:
                raise ConfigError(key + "_file", "the file's content: " + str(e)) from None
        values[key + "s"] = split_secrets(text) if text is not None else ()
    path = values["cluster_password_file"]
    if path is None:
        return
    address = values["cluster"]
    if not isinstance(address, RedisAddress):
        raise ConfigError(
            "cluster_password_file", "set, but cluster is not; set cluster or remove it"
        )
    if address.password is not None:
        raise ConfigError(
            "cluster_password_file",
            "set, but the cluster URL holds a password too; keep one of them",
        )
    password = _read_secret(values, "cluster_password_file").strip()
    if "\n" in password:
        raise ConfigError(
            "cluster_password_file", "holds more than one line; keep the password only"
        )
    values["cluster"] = attrs.evolve(address, password=password)


def _one_of(values: dict[str, object], key: str) -> str | None:
    """The text of ``key``, or of the file ``<key>_file`` names; never both."""
    if values[key + "_file"] is None:
        return values[key]  # type: ignore[return-value]
    if values[key] is not None:
        raise ConfigError(
            key + "_file", f"set together with {key}; keep one of them (the file can be rotated)"
        )
    return _read_secret(values, key + "_file")


def _read_secret(values: dict[str, object], key: str) -> str:
    try:
        return p.read_secret_file(str(values[key]))
    except p.Invalid as e:
        raise ConfigError(key, str(e)) from None


def _read_ini(path: str) -> dict[str, str]:
    """
    Read the ``[socketdock]`` section.  A file with no section at all is fine (an empty
    sample); one with other sections but not ours is almost surely the wrong file.
    """
    parser = configparser.ConfigParser(
        interpolation=None,
        # configparser honours these only after whitespace, so "a#b" stays a value.
        inline_comment_prefixes=(";", "#"),
        # No [DEFAULT] magic: its keys would silently join our section.
        default_section="\x00",
        strict=True,
    )
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:  # a ValueError, so it must come first
        raise ConfigError("config", f"{path!r} is not UTF-8 text; save it as UTF-8") from None
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or "not a readable file"
        raise ConfigError(
            "config", f"cannot read {path!r} ({reason}); check the --config path"
        ) from None
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateOptionError as e:
        raise ConfigError(
            e.option, f"given twice in section {e.section!r} of {path!r}; keep one"
        ) from None
    except configparser.DuplicateSectionError as e:
        raise ConfigError(
            "config", f"section {e.section!r} appears twice in {path!r}; merge them"
        ) from None
    except configparser.Error as e:
        # Not str(e): it can quote a line of the file, and that line may hold a secret.
        line = getattr(e, "lineno", None) or _first_error_line(e)
        where = f" at line {line}" if line else ""
        raise ConfigError(
            "config",
            f"cannot parse {path!r}{where}; write 'key = value' lines under [socketdock]",
        ) from None
    if not parser.has_section(_SECTION):
        if parser.sections():
            raise ConfigError(
                "config", f"{path!r} has no [socketdock] section; put the settings under it"
            )
        return {}
    values = dict(parser.items(_SECTION))
    for key in values:
        if key not in _PARSERS:
            raise ConfigError(key, f"unknown key in [socketdock] of {path!r}{_did_you_mean(key)}")
    return values


def _first_error_line(e: configparser.Error) -> int | None:
    errors = getattr(e, "errors", None)
    return errors[0][0] if errors else None


def _did_you_mean(key: str) -> str:
    close = closest_key(key)
    return (
        f"; did you mean {close}?"
        if close is not None
        else "; remove it, or see etc/socketdock.ini for the known keys"
    )
