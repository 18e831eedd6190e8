"""The forward_headers setting (SPEC §9) in its INI, env and command-line forms."""

from twisted.trial.unittest import SynchronousTestCase

from socketdock.config.settings import ConfigError, load_config


class ForwardHeadersTests(SynchronousTestCase):
    def test_default_is_all(self):
        """Unset, every header is forwarded."""
        self.assertEqual(load_config({}, {}, None).forward_headers, ("*",))

    def test_names_lower_cased_from_env_and_cli(self):
        """Names are comma-separated, trimmed and lower-cased; the command line wins over env."""
        env = {"SOCKETDOCK_FORWARD_HEADERS": "Cookie"}
        self.assertEqual(load_config({}, env, None).forward_headers, ("cookie",))
        config = load_config({"forward_headers": " X-A , user-agent"}, env, None)
        self.assertEqual(config.forward_headers, ("x-a", "user-agent"))

    def test_ini(self):
        """The INI form is read too."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[socketdock]\nforward_headers = Origin\n")
        self.assertEqual(load_config({}, {}, path).forward_headers, ("origin",))

    def test_bad_values_name_the_key(self):
        """A bad name, * mixed with names, or an empty list is refused naming forward_headers."""
        for bad in ("x y", "*, cookie", " , ", "a:b"):
            e = self.assertRaises(ConfigError, load_config, {"forward_headers": bad}, {}, None)
            self.assertIn("forward_headers", str(e))
