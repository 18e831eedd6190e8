"""Tests for :mod:`socketdock.config.settings`: layering, defaults, and every configuration mistake."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from socketdock.config.settings import (
    SECRET_KEYS,
    SETTINGS,
    Config,
    ConfigError,
    environ_warnings,
    load_config,
)

_SAMPLE_INI = Path(__file__).parents[2] / "etc" / "socketdock.ini"
_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


class _Files:
    """Mixin: temporary files that trial removes with the test."""

    def write(self, text: str | bytes, name: str = "sd.ini") -> str:
        """:param text: the file's content; bytes are written as they are."""
        path = Path(self.mktemp())  # type: ignore[attr-defined]
        path.mkdir()
        path = path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return str(path)

    def ini(self, body: str) -> str:
        """:param body: lines to put under ``[socketdock]``."""
        return self.write("[socketdock]\n" + body)


class DefaultsTests(SynchronousTestCase):
    """Built-in defaults and the SETTINGS table."""

    def test_defaults(self) -> None:
        """With no source at all every field has its documented default."""
        c = load_config({}, {}, None)
        self.assertEqual(
            c,
            Config(
                bindip="127.0.0.1",
                bindport=8765,
                listen="tcp:8765:interface=127.0.0.1",
                externalhostandport="http://127.0.0.1:8765",
                backend="loopback",
                messageuri=None,
                connecturi=None,
                disconnecturi=None,
                wspath="/ws",
                api_listen=None,
                api_token=None,
                api_token_file=None,
                signing_secret=None,
                signing_secret_file=None,
                allowed_origins=("*",),
                max_message_size=4194304,
                max_connections=0,
                pending_handshakes=1024,
                handshake_rate=0.0,
                handshake_burst=20,
                ping_interval=30.0,
                ping_timeout=10.0,
                max_lifetime=0.0,
                tag_deadline=0.0,
                backend_timeout=10.0,
                backend_retries=5,
                backend_concurrency=128,
                queue_limit=64,
                max_queued_bytes=268435456,
                inline_reply=False,
                shutdown_timeout=10.0,
                journal=None,
                backend_ca=None,
                permessage_deflate=False,
                log_level="info",
                cluster=None,
                cluster_password_file=None,
                cluster_heartbeat=5.0,
                tuning="auto",
                listen_key="bindport",
            ),
        )

    def test_settings_match_config_fields(self) -> None:
        """SETTINGS has exactly one row per Config field, in field order (after them: the derived ones)."""
        import attrs

        self.assertEqual(
            [s.key for s in SETTINGS] + ["listen_key", "api_tokens", "signing_secrets"],
            [f.name for f in attrs.fields(Config)],
        )

    def test_help_is_one_line(self) -> None:
        """Every SETTINGS help text is a single non-empty line."""
        for s in SETTINGS:
            self.assertTrue(s.help and "\n" not in s.help, s.key)

    def test_secrets_not_in_repr(self) -> None:
        """The repr of a Config, which may end up in a log, hides the secrets."""
        c = load_config({"api_token": "tok123", "signing_secret": "sec456"}, {}, None)
        self.assertEqual((c.api_token, c.signing_secret), ("tok123", "sec456"))
        self.assertNotIn("tok123", repr(c))
        self.assertNotIn("sec456", repr(c))


class SampleIniTests(_Files, SynchronousTestCase):
    """The checked-in etc/socketdock.ini."""

    def test_every_key_listed(self) -> None:
        """Every SETTINGS key appears in the sample, set or commented out."""
        text = _SAMPLE_INI.read_text()
        for s in SETTINGS:
            self.assertRegex(text, rf"(?m)^[;#]? ?{s.key} = ", s.key)

    def test_sample_gives_defaults(self) -> None:
        """Loading the sample yields the defaults, with the loopback backend."""
        c = load_config({}, {}, str(_SAMPLE_INI))
        self.assertEqual(c, load_config({}, {}, None))
        self.assertEqual(c.backend, "loopback")


class PrecedenceTests(_Files, SynchronousTestCase):
    """cli > environment > INI > defaults."""

    def setUp(self) -> None:
        self.path = self.ini(
            "bindport = 1111\nping_interval = 1.5\ninline_reply = yes\n"
            "wspath = /ini\nallowed_origins = https://ini.example\n"
        )

    def test_ini_over_defaults(self) -> None:
        """INI values replace the defaults, for ints, floats, bools and strings."""
        c = load_config({}, {}, self.path)
        self.assertEqual(
            (c.bindport, c.ping_interval, c.inline_reply, c.wspath, c.allowed_origins),
            (1111, 1.5, True, "/ini", ("https://ini.example",)),
        )

    def test_env_over_ini(self) -> None:
        """SOCKETDOCK_<KEY> variables replace INI values."""
        env = {
            "SOCKETDOCK_BINDPORT": "2222",
            "SOCKETDOCK_PING_INTERVAL": "2.5",
            "SOCKETDOCK_INLINE_REPLY": "0",
            "SOCKETDOCK_WSPATH": "/env",
        }
        c = load_config({}, env, self.path)
        self.assertEqual(
            (c.bindport, c.ping_interval, c.inline_reply, c.wspath), (2222, 2.5, False, "/env")
        )

    def test_cli_over_env(self) -> None:
        """Command-line values replace environment values."""
        env = {"SOCKETDOCK_BINDPORT": "2222", "SOCKETDOCK_INLINE_REPLY": "0"}
        cli = {"bindport": "3333", "inline_reply": "TRUE", "wspath": "/cli"}
        c = load_config(cli, env, self.path)
        self.assertEqual((c.bindport, c.inline_reply, c.wspath), (3333, True, "/cli"))
        self.assertEqual(c.ping_interval, 1.5)

    def test_unknown_env_ignored(self) -> None:
        """Unrelated ``SOCKETDOCK_`` variables from deployment tooling are ignored."""
        c = load_config({}, {"SOCKETDOCK_IMAGE_TAG": "v1", "SOCKETDOCK_": ""}, None)
        self.assertEqual(c, load_config({}, {}, None))

    def test_empty_unsets_optional(self) -> None:
        """An empty env value unsets an optional key that the INI file set."""
        path = self.ini("disconnecturi = http://b/d\n")
        self.assertEqual(load_config({}, {}, path).disconnecturi, "http://b/d")
        c = load_config({}, {"SOCKETDOCK_DISCONNECTURI": ""}, path)
        self.assertIsNone(c.disconnecturi)

    def test_ini_inline_comments(self) -> None:
        """A ';' or '#' after whitespace starts a comment; one inside a value does not."""
        path = self.ini("bindport = 4444 ; the port\napi_token = ab#cd # token\n")
        c = load_config({}, {}, path)
        self.assertEqual((c.bindport, c.api_token), (4444, "ab#cd"))

    def test_ini_keys_case_insensitive(self) -> None:
        """INI keys are matched without regard to case, as configparser does."""
        self.assertEqual(load_config({}, {}, self.ini("BindPort = 5555\n")).bindport, 5555)

    def test_ini_without_section_if_empty(self) -> None:
        """An empty or comment-only INI file is fine and gives the defaults."""
        for text in ("", "# nothing here\n"):
            self.assertEqual(load_config({}, {}, self.write(text)), load_config({}, {}, None))

    def test_other_sections_ignored(self) -> None:
        """Sections other than [socketdock], and [DEFAULT], do not feed our settings."""
        path = self.write("[DEFAULT]\nbindport = 1\n[socketdock]\n[logging]\nlevel = x\n")
        self.assertEqual(load_config({}, {}, path).bindport, 8765)


class ValueTests(SynchronousTestCase):
    """Parsing of individual values."""

    def test_ipv6_bindip(self) -> None:
        """An IPv6 bindip is escaped in the endpoint and bracketed in the URL."""
        c = load_config({"bindip": "::1", "bindport": "9000"}, {}, None)
        self.assertEqual(c.listen, r"tcp:9000:interface=\:\:1")
        self.assertEqual(c.externalhostandport, "http://[::1]:9000")

    def test_externalhostandport_normalised(self) -> None:
        """host:port gains http://, the scheme is lower-cased and trailing slashes go."""
        cases = {
            "sd1:8765": "http://sd1:8765",
            "HTTPS://sd1.example/relay/": "https://sd1.example/relay",
            "http://[::1]:80/": "http://[::1]:80",
            " sd1 ": "http://sd1",
        }
        for given_, want in cases.items():
            c = load_config({"externalhostandport": given_}, {}, None)
            self.assertEqual(c.externalhostandport, want)

    def test_fractional_durations(self) -> None:
        """Durations accept fractions and zero where zero means off."""
        c = load_config(
            {
                "ping_interval": "0",
                "ping_timeout": ".25",
                "backend_timeout": "0.5",
                "shutdown_timeout": "2.",
            },
            {},
            None,
        )
        self.assertEqual(
            (c.ping_interval, c.ping_timeout, c.backend_timeout, c.shutdown_timeout),
            (0.0, 0.25, 0.5, 2.0),
        )

    def test_booleans(self) -> None:
        """Booleans accept true/false/yes/no/1/0 in any case."""
        for text, want in [
            ("true", True),
            ("YES", True),
            ("1", True),
            ("False", False),
            ("no", False),
            (" 0 ", False),
        ]:
            self.assertIs(
                load_config({"permessage_deflate": text}, {}, None).permessage_deflate, want
            )

    def test_log_levels(self) -> None:
        """log_level takes Twisted's level names in any case, and warning for warn."""
        for text, want in [
            ("debug", "debug"),
            ("INFO", "info"),
            ("warn", "warn"),
            ("Warning", "warn"),
            (" error ", "error"),
            ("critical", "critical"),
        ]:
            self.assertEqual(load_config({"log_level": text}, {}, None).log_level, want)

    def test_origins_split(self) -> None:
        """allowed_origins is split on commas, stripped, with empties dropped."""
        c = load_config({"allowed_origins": " https://a.example, ,https://b.example,"}, {}, None)
        self.assertEqual(c.allowed_origins, ("https://a.example", "https://b.example"))

    def test_backend_case(self) -> None:
        """The backend name is case-insensitive and stored lower-case."""
        c = load_config({"backend": "HTTP", "messageuri": "https://b/m"}, {}, None)
        self.assertEqual((c.backend, c.messageuri), ("http", "https://b/m"))

    def test_listen_given(self) -> None:
        """An explicit listen string is kept as written."""
        c = load_config({"listen": "unix:/run/sd.sock", "externalhostandport": "h:1"}, {}, None)
        self.assertEqual(c.listen, "unix:/run/sd.sock")

    def test_listen_any_endpoint_type(self) -> None:
        """A type this module does not know (haproxy:, a plugin's) is left for Twisted to judge."""
        for listen in (
            "haproxy:tcp:8765:interface=127.0.0.1",
            "systemd:domain=INET:index=0",
            "someplugin:x",
        ):
            c = load_config({"listen": listen, "externalhostandport": "h:1"}, {}, None)
            self.assertEqual(c.listen, listen)

    def test_port_zero_learns_externalhostandport(self) -> None:
        """
        With the callback API on port 0 of one interface, externalhostandport is
        left to be learned from the bound port (None); elsewhere port 0 still needs it.
        """
        for cli in (
            {"bindport": "0"},
            {"listen": "tcp:0:interface=127.0.0.1"},
            {"api_listen": "tcp:0:interface=127.0.0.1"},
            {"listen": "ssl:0:interface=127.0.0.1:privateKey=k"},
        ):
            self.assertIsNone(load_config(cli, {}, None).externalhostandport, cli)
        for cli in (
            {"listen": "tcp:0"},
            {"bindip": "0.0.0.0", "bindport": "0"},
            {"listen": "haproxy:tcp:0:interface=127.0.0.1"},
            {"bindport": "0", "api_listen": "tcp:9001:interface=127.0.0.1"},
        ):
            with self.assertRaises(ConfigError, msg=str(cli)) as caught:
                load_config(cli, {}, None)
            self.assertEqual(caught.exception.key, "externalhostandport")

    def test_wildcard_with_external(self) -> None:
        """A wildcard bindip is fine with an explicit externalhostandport."""
        c = load_config({"bindip": "0.0.0.0", "externalhostandport": "sd1:8765"}, {}, None)
        self.assertEqual(c.listen, "tcp:8765:interface=0.0.0.0")


# (cli, key named in the error, a fragment of the message)
_BAD_CLI = [
    ({"bindport": "abc"}, "bindport", "'abc' is not a port number; use an integer from 0 to 65535"),
    ({"bindport": "65536"}, "bindport", "not a port number"),
    ({"bindport": "-1"}, "bindport", "not a port number"),
    ({"backend": "carrier-pigeon"}, "backend", "use loopback or http"),
    (
        {"log_level": "loud"},
        "log_level",
        "'loud' is not a log level; use debug, info, warn, error or critical",
    ),
    ({"tuning": "fast"}, "tuning", "'fast' is not a tuning mode; use auto, off or required"),
    ({"backend": "http"}, "messageuri", "set messageuri"),
    ({"messageuri": "ftp://b/m"}, "messageuri", "not an http(s) URL"),
    ({"connecturi": "http:///nohost"}, "connecturi", "has no host"),
    ({"disconnecturi": "backend:8080/d"}, "disconnecturi", "http(s)"),
    ({"messageuri": "http://b:99999/m"}, "messageuri", "not a valid URL"),
    ({"messageuri": "http://b/m x"}, "messageuri", "spaces"),
    ({"bindip": "0.0.0.0"}, "externalhostandport", "binds every interface"),
    ({"bindip": "::"}, "externalhostandport", "binds every interface"),
    ({"bindip": ""}, "externalhostandport", "binds every interface"),
    ({"bindip": "not an ip!"}, "bindip", "not an IP address"),
    ({"listen": "tcp:9000"}, "externalhostandport", "listen is set"),
    ({"api_listen": "tcp:9001"}, "externalhostandport", "api_listen is set"),
    ({"externalhostandport": "ftp://x"}, "externalhostandport", "http(s)"),
    ({"externalhostandport": "http://x/?a=1"}, "externalhostandport", "query"),
    ({"externalhostandport": "http://u:p@x"}, "externalhostandport", "credentials"),
    ({"listen": "8765"}, "listen", "not a server endpoint string"),
    ({"listen": "tcp:"}, "listen", "not a server endpoint string"),
    ({"listen": "tcp:http"}, "listen", "no valid port"),
    ({"listen": ":8765", "externalhostandport": "h"}, "listen", "not a server endpoint string"),
    ({"listen": "haproxy:tcp:http", "externalhostandport": "h"}, "listen", "no valid port"),
    ({"api_listen": "car rier:1", "externalhostandport": "h"}, "api_listen", "endpoint"),
    ({"wspath": "ws"}, "wspath", "start with '/'"),
    ({"wspath": "/socket/x"}, "wspath", "clashes with the callback API"),
    ({"wspath": "/"}, "wspath", "clashes"),
    ({"allowed_origins": " , "}, "allowed_origins", "use * to accept any origin"),
    ({"max_message_size": "0"}, "max_message_size", "at least 1"),
    ({"max_message_size": "1e6"}, "max_message_size", "not a whole number"),
    ({"max_message_size": "9" * 5000}, "max_message_size", "too large"),
    ({"max_connections": "-3"}, "max_connections", "negative"),
    ({"handshake_rate": "-1"}, "handshake_rate", "negative"),
    ({"handshake_rate": "fast"}, "handshake_rate", "not a number"),
    ({"handshake_burst": "0"}, "handshake_burst", "at least 1"),
    ({"backend_retries": "2.5"}, "backend_retries", "not a whole number"),
    ({"queue_limit": "0"}, "queue_limit", "at least 1"),
    ({"ping_interval": "nan"}, "ping_interval", "not a number of seconds"),
    ({"ping_timeout": "inf"}, "ping_timeout", "not a number of seconds"),
    ({"ping_interval": "-1"}, "ping_interval", "negative"),
    ({"ping_interval": "9" * 400}, "ping_interval", "too large"),
    ({"backend_timeout": "0"}, "backend_timeout", "greater than 0"),
    ({"shutdown_timeout": "ten"}, "shutdown_timeout", "not a number of seconds"),
    ({"inline_reply": "maybe"}, "inline_reply", "use true, false, yes, no, 1 or 0"),
    ({"backend_ca": "/nonexistent/ca.pem"}, "backend_ca", "cannot read '/nonexistent/ca.pem'"),
    ({"journal": "a\x00b"}, "journal", "NUL"),
    ({"api_token": "two words"}, "api_token", "printable ASCII"),
    ({"no_such_key": "1"}, "no_such_key", "unknown option"),
    ({"max-message-size": "1"}, "max-message-size", "did you mean max_message_size?"),
]


class EnvironWarningTests(SynchronousTestCase):
    """SOCKETDOCK_* variables that name no setting are ignored, but named."""

    def test_known_and_foreign_variables(self) -> None:
        """Known keys and non-``SOCKETDOCK_`` variables give no warning."""
        self.assertEqual(environ_warnings({"SOCKETDOCK_BINDPORT": "1", "HOME": "/root"}), [])

    def test_misspelt_names_closest_key(self) -> None:
        """A misspelt key is one line naming the variable and the closest key."""
        self.assertEqual(
            environ_warnings({"SOCKETDOCK_MAX_MESAGE_SIZE": "1"}),
            [
                (
                    "SOCKETDOCK_MAX_MESAGE_SIZE: not a setting, ignored; "
                    "did you mean SOCKETDOCK_MAX_MESSAGE_SIZE (max_message_size)?"
                )
            ],
        )

    def test_lower_case(self) -> None:
        """Only the upper-case name is read, so a lower-case one is pointed at it."""
        self.assertEqual(
            environ_warnings({"SOCKETDOCK_bindport": "1"}),
            [
                (
                    "SOCKETDOCK_bindport: not a setting, ignored; "
                    "did you mean SOCKETDOCK_BINDPORT (bindport)?"
                )
            ],
        )

    def test_unrelated_name(self) -> None:
        """A name like no key still gets its line, pointing at the sample INI."""
        self.assertEqual(
            environ_warnings({"SOCKETDOCK_ZZZ": "1"}),
            ["SOCKETDOCK_ZZZ: not a setting, ignored; see etc/socketdock.ini for the known keys"],
        )

    def test_odd_name_stays_one_line(self) -> None:
        """A name holding a newline is quoted, so the warning stays one line."""
        (line,) = environ_warnings({"SOCKETDOCK_A\nB": "1"})
        self.assertNotIn("\n", line)

    def test_does_not_stop_loading(self) -> None:
        """load_config ignores the unknown variable and reads the known one."""
        c = load_config({}, {"SOCKETDOCK_BINDPROT": "1", "SOCKETDOCK_BINDPORT": "9000"}, None)
        self.assertEqual(c.bindport, 9000)

    def test_listen_key(self) -> None:
        """listen_key says which setting gave the WebSocket listener."""
        self.assertEqual(load_config({}, {}, None).listen_key, "bindport")
        self.assertEqual(
            load_config({"listen": "tcp:1", "externalhostandport": "h:1"}, {}, None).listen_key,
            "listen",
        )


class ErrorTests(_Files, SynchronousTestCase):
    """Every mistake is one ConfigError line naming the key and the fix."""

    def assertConfigError(self, key: str, fragment: str, *args: object) -> ConfigError:
        """
        :param key: the key the error must name.
        :param fragment: text the message must contain.
        :param args: arguments for load_config.
        """
        e = self.assertRaises(ConfigError, load_config, *args)
        self.assertEqual(e.key, key)
        self.assertTrue(str(e).startswith(key + ": "), str(e))
        self.assertIn(fragment, str(e))
        self.assertNotIn("\n", str(e))
        return e

    def test_bad_values(self) -> None:
        """Each bad value in the table raises ConfigError naming the right key."""
        for cli, key, fragment in _BAD_CLI:
            with self.subTest(cli=cli):
                self.assertConfigError(key, fragment, cli, {}, None)

    def test_bad_env_value(self) -> None:
        """A bad value from the environment is named by its variable (e.key stays the key)."""
        e = self.assertRaises(ConfigError, load_config, {}, {"SOCKETDOCK_BINDPORT": "x"}, None)
        self.assertEqual(e.key, "bindport")
        self.assertEqual(
            str(e),
            "SOCKETDOCK_BINDPORT: 'x' is not a port number; use an integer from 0 to 65535",
        )
        # The command line wins, and is named by the key as before.
        e = self.assertRaises(
            ConfigError, load_config, {"bindport": "y"}, {"SOCKETDOCK_BINDPORT": "x"}, None
        )
        self.assertTrue(str(e).startswith("bindport: 'y'"), str(e))

    def test_bad_ini_value(self) -> None:
        """A bad value from the INI file is reported under its key."""
        self.assertConfigError("bindport", "'x'", {}, {}, self.ini("bindport = x\n"))

    def test_long_value_cut(self) -> None:
        """A huge bad value is cut short in the message."""
        e = self.assertConfigError("bindip", "...", {"bindip": "!" * 10000}, {}, None)
        self.assertLess(len(str(e)), 300)

    def test_unknown_ini_key(self) -> None:
        """An unknown key in [socketdock] is refused with a spelling hint."""
        self.assertConfigError(
            "bindprot", "did you mean bindport?", {}, {}, self.ini("bindprot = 1\n")
        )

    def test_missing_file(self) -> None:
        """A missing config file is named under the key 'config'."""
        path = os.path.join(self.mktemp(), "none.ini")
        self.assertConfigError("config", f"cannot read {path!r}", {}, {}, path)

    def test_directory_as_file(self) -> None:
        """A directory given as config file is reported, not raised as OSError."""
        path = self.mktemp()
        os.mkdir(path)
        self.assertConfigError("config", "cannot read", {}, {}, path)

    def test_not_utf8(self) -> None:
        """A config file that is not UTF-8 is reported under 'config'."""
        self.assertConfigError("config", "not UTF-8", {}, {}, self.write(b"[socketdock]\n\xff\n"))

    def test_unparseable(self) -> None:
        """An INI syntax error names the line but does not quote it."""
        e = self.assertConfigError(
            "config", "line 2", {}, {}, self.write("[socketdock]\napi_token hunter2\n")
        )
        self.assertNotIn("hunter2", str(e))

    def test_no_section_header(self) -> None:
        """Settings before any section header are a parse error."""
        self.assertConfigError("config", "cannot parse", {}, {}, self.write("bindport = 1\n"))

    def test_wrong_section(self) -> None:
        """A file with sections but no [socketdock] is refused."""
        self.assertConfigError(
            "config", "no [socketdock] section", {}, {}, self.write("[other]\na = 1\n")
        )

    def test_duplicate_key(self) -> None:
        """A key given twice in the INI file is refused under that key."""
        self.assertConfigError(
            "bindport", "given twice", {}, {}, self.ini("bindport = 1\nbindport = 2\n")
        )

    def test_duplicate_section(self) -> None:
        """A [socketdock] section given twice is refused."""
        self.assertConfigError(
            "config", "appears twice", {}, {}, self.write("[socketdock]\n[socketdock]\n")
        )

    def test_backend_ca(self) -> None:
        """backend_ca must be a readable file holding a PEM certificate."""
        good = self.write(_PEM, "ca.pem")
        self.assertEqual(load_config({"backend_ca": good}, {}, None).backend_ca, good)
        self.assertConfigError(
            "backend_ca",
            "no PEM certificate",
            {"backend_ca": self.write("junk", "x.pem")},
            {},
            None,
        )
        self.assertConfigError(
            "backend_ca", "cannot read", {"backend_ca": os.path.dirname(good)}, {}, None
        )

    def test_secrets_never_echoed(self) -> None:
        """Errors about api_token or signing_secret never contain their values."""
        e = self.assertConfigError(
            "api_token", "api_token", {"api_token": "s3cr3t token\u00e9"}, {}, None
        )
        self.assertNotIn("s3cr3t", str(e))
        e = self.assertConfigError(
            "api_tokn", "did you mean api_token?", {}, {}, self.ini("api_tokn = s3cr3t\n")
        )
        self.assertNotIn("s3cr3t", str(e))
        e = self.assertConfigError(
            "signing_secret",
            "given twice",
            {},
            {},
            self.ini("signing_secret = s3cr3t\nsigning_secret = s3cr3t\n"),
        )
        self.assertNotIn("s3cr3t", str(e))


_KEYS = [s.key for s in SETTINGS]
_HYPOTHESIS = settings(max_examples=200, deadline=None)


def _check_error(case: SynchronousTestCase, e: ConfigError, keys: set[str]) -> None:
    msg = str(e)
    case.assertEqual(len(msg.splitlines()), 1, msg)
    case.assertIn(e.key, keys)
    # A value from the environment is named by its variable.
    case.assertTrue(
        msg.startswith(e.key + ": ") or msg.startswith(f"SOCKETDOCK_{e.key.upper()}: "), msg
    )


class PropertyTests(_Files, SynchronousTestCase):
    """Whatever the text, load_config returns a Config or raises a one-line ConfigError."""

    @_HYPOTHESIS
    @given(key=st.sampled_from(_KEYS), value=st.text())
    def test_any_cli_value(self, key: str, value: str) -> None:
        """Any text for any key gives a Config or a ConfigError naming a key."""
        try:
            self.assertIsInstance(load_config({key: value}, {}, None), Config)
        except ConfigError as e:
            _check_error(self, e, set(_KEYS))

    @_HYPOTHESIS
    @given(values=st.dictionaries(st.sampled_from(_KEYS), st.text(max_size=30), max_size=6))
    def test_any_env_values(self, values: dict[str, str]) -> None:
        """Any mix of environment values gives a Config or a ConfigError naming a key."""
        env = {"SOCKETDOCK_" + k.upper(): v.replace("\x00", "") for k, v in values.items()}
        try:
            self.assertIsInstance(load_config({}, env, None), Config)
        except ConfigError as e:
            _check_error(self, e, set(values) | {"externalhostandport", "messageuri", "wspath"})

    @_HYPOTHESIS
    @given(
        key=st.sampled_from(sorted(SECRET_KEYS)),
        value=st.text(min_size=8).filter(lambda v: v.strip() == v),
    )
    def test_secret_not_echoed(self, key: str, value: str) -> None:
        """No error about a secret ever quotes the secret."""
        try:
            load_config({key: value}, {}, None)
        except ConfigError as e:
            self.assertNotIn(value, str(e))

    @settings(max_examples=100, deadline=None)
    @given(body=st.text(max_size=200))
    def test_any_ini_text(self, body: str) -> None:
        """Any INI file content gives a Config or a one-line ConfigError."""
        path = self.write("[socketdock]\n" + body)
        try:
            self.assertIsInstance(load_config({}, {}, path), Config)
        except ConfigError as e:
            self.assertEqual(len(str(e).splitlines()), 1, str(e))


class TokenPropertyTests(SynchronousTestCase):
    """What the parser accepts as api_token can be sent in a header unchanged."""

    @_HYPOTHESIS
    @given(value=st.text(max_size=60))
    def test_accepted_token_fits_a_header(self, value: str) -> None:
        """Each token an accepted api_token holds (comma-separated) is printable
        ASCII without spaces."""
        try:
            config = load_config({"api_token": value}, {}, None)
        except ConfigError as e:
            _check_error(self, e, {"api_token"})
            return
        if config.api_token is not None:
            self.assertTrue(config.api_tokens)
        for token in config.api_tokens:
            self.assertRegex(
                token.decode("ascii") if isinstance(token, bytes) else token, r"^[\x21-\x7e]+$"
            )


class MaxResponseBodyTests(SynchronousTestCase):
    def test_room_for_an_inline_reply(self) -> None:
        """Twice the largest message plus 64 KiB, and the default follows the default setting."""
        from socketdock.config.settings import DEFAULT_MAX_RESPONSE_BODY, max_response_body

        self.assertEqual(max_response_body(1000), 2000 + 65536)
        default = load_config({}, {}, None).max_message_size
        self.assertEqual(DEFAULT_MAX_RESPONSE_BODY, max_response_body(default))
