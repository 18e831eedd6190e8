"""
Secrets in rotation (socketdock.config.secrets and the ``*_file`` settings):
several tokens and secrets, read from files, never shown.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from socketdock.config.secrets import Secrets
from socketdock.config.settings import ConfigError, load_config, secrets_of
from tests.config.test_config import _Files


class SeveralTests(_Files, SynchronousTestCase):
    def test_several_tokens_and_secrets(self) -> None:
        """Comma-separated values give several tokens and secrets, in order, blanks dropped."""
        c = load_config({"api_token": "a, b,", "signing_secret": "new,old"}, {}, None)
        self.assertEqual((c.api_tokens, c.signing_secrets), (("a", "b"), ("new", "old")))

    def test_from_files(self) -> None:
        """*_file settings read the file: one per line or comma-separated, around blanks."""
        tokens = self.write("one\ntwo\n\n", "tokens")
        secret = self.write("  s3cret  \n", "secret")
        c = load_config(
            {}, {"SOCKETDOCK_API_TOKEN_FILE": tokens}, self.ini(f"signing_secret_file = {secret}\n")
        )
        self.assertEqual((c.api_tokens, c.signing_secrets), (("one", "two"), ("s3cret",)))
        self.assertEqual(secrets_of(c).api_tokens, (b"one", b"two"))

    def test_cluster_password_file(self) -> None:
        """cluster_password_file gives the Redis password; the URL then holds none."""
        path = self.write("hunter2\n", "redis")
        c = load_config(
            {"cluster": "redis://127.0.0.1:6379/0", "cluster_password_file": path}, {}, None
        )
        assert c.cluster is not None
        self.assertEqual(c.cluster.password, "hunter2")
        self.assertNotIn("hunter2", repr(c))


class FileErrorTests(_Files, SynchronousTestCase):
    def refused(self, key: str, fragment: str, cli: dict) -> ConfigError:
        e = self.assertRaises(ConfigError, load_config, cli, {}, None)
        self.assertEqual(e.key, key)
        self.assertIn(fragment, str(e))
        self.assertNotIn("\n", str(e))
        self.assertNotIn("s3cr3t", str(e))
        return e

    def test_unreadable_or_empty(self) -> None:
        """A missing or empty file stops start-up with one line naming the *_file key."""
        self.refused("api_token_file", "cannot read", {"api_token_file": "/nonexistent/t"})
        self.refused("signing_secret_file", "is empty", {"signing_secret_file": self.write("\n")})

    def test_bad_content_is_not_quoted(self) -> None:
        """A token file holding a token with a space is refused without quoting it."""
        path = self.write("s3cr3t token\n", "t")
        self.refused("api_token_file", "the file's content", {"api_token_file": path})

    def test_both_forms(self) -> None:
        """A value and a file for the same secret: one must go."""
        path = self.write("s3cr3t", "t")
        self.refused("api_token_file", "keep one", {"api_token": "x", "api_token_file": path})
        self.refused(
            "cluster_password_file",
            "holds a password too",
            {"cluster": "redis://:pw@127.0.0.1/0", "cluster_password_file": path},
        )
        self.refused("cluster_password_file", "cluster is not", {"cluster_password_file": path})


class ReplaceTests(SynchronousTestCase):
    def test_replace_names_what_changed_without_values(self) -> None:
        """replace() takes the new values and says which settings changed, never a value."""
        secrets = Secrets(("t1",), ("s1",), "p1")
        changed = secrets.replace(Secrets(("t1", "t2"), ("s1",), "p2"))
        self.assertEqual(changed, ["api_token (2 tokens, were 1)", "cluster password"])
        self.assertEqual(secrets.api_tokens, (b"t1", b"t2"))
        self.assertEqual(secrets.replace(Secrets(("t1", "t2"), ("s1",), "p2")), [])
        for value in ("t1", "t2", "s1", "p2"):
            self.assertNotIn(value, repr(secrets))
