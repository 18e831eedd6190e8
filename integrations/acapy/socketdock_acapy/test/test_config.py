"""
The transport's settings (:mod:`socketdock_acapy.config`); plain unittest,
no ACA-Py needed.
"""

import unittest

from socketdock_acapy.config import read_settings


class ReadSettingsTests(unittest.TestCase):
    def test_plugin_config_wins_over_the_environment(self):
        settings = read_settings(
            {"socketdock": {"trusted_urls": "http://a:1, http://b:2", "api_token": "p", "send_timeout": 2}},
            {"SOCKETDOCK_TRUSTED_URLS": "http://env:1", "SOCKETDOCK_API_TOKEN": "e",
             "SOCKETDOCK_SIGNING_SECRET": "s"},
        )
        self.assertIsNone(settings.problem)
        self.assertEqual(settings.trusted_urls, ("http://a:1", "http://b:2"))
        self.assertEqual((settings.api_token, settings.signing_secret, settings.send_timeout),
                         ("p", "s", 2.0))

    def test_environment_alone(self):
        settings = read_settings(None, {"SOCKETDOCK_TRUSTED_URLS": "http://env:1"})
        self.assertEqual((settings.trusted_urls, settings.api_token, settings.send_timeout),
                         (("http://env:1",), None, 10.0))

    def test_a_yaml_list_of_urls(self):
        settings = read_settings({"socketdock": {"trusted_urls": ["http://a:1", "http://b:2"]}}, {})
        self.assertEqual(settings.trusted_urls, ("http://a:1", "http://b:2"))

    def test_mistakes_are_one_line_naming_the_key(self):
        for plugin, env, words in [
            (None, {}, "no trusted SocketDock URLs"),
            ({"socketdock": {"trusted_urls": "ftp://x"}}, {}, "socketdock.trusted_urls"),
            (None, {"SOCKETDOCK_TRUSTED_URLS": "http://a b"}, "SOCKETDOCK_TRUSTED_URLS"),
            ({"socketdock": {"trusted_urls": "http://a", "send_timeout": "soon"}}, {},
             "socketdock.send_timeout"),
            ({"socketdock": {"trusted_urls": "http://a", "api_tokn": "x"}}, {},
             "unknown plugin configuration socketdock.api_tokn"),
            ({"socketdock": "http://a"}, {}, "not a mapping"),
        ]:
            problem = read_settings(plugin, env).problem
            self.assertIsNotNone(problem, (plugin, env))
            self.assertIn(words, problem)
            self.assertNotIn("\n", problem)


if __name__ == "__main__":
    unittest.main()
