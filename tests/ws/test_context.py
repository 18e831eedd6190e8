"""What the connect notice says of the upgrade request."""

from twisted.trial.unittest import SynchronousTestCase

from socketdock.ws.context import HeaderAllowList, connect_context


class HeaderAllowListTests(SynchronousTestCase):
    def test_star_passes_the_same_mapping(self) -> None:
        headers = {"cookie": "a", "origin": "b"}
        self.assertIs(HeaderAllowList(("*",))(headers), headers)

    def test_names_in_any_case(self) -> None:
        allow = HeaderAllowList(("Authorization", "origin"))
        headers = {"authorization": "x", "Origin": "o", "cookie": "c"}
        self.assertEqual(allow(headers), {"authorization": "x", "Origin": "o"})


class ConnectContextTests(SynchronousTestCase):
    def test_path_query_remote(self) -> None:
        self.assertEqual(
            connect_context("/ws?token=1&b=%20", "tcp:203.0.113.7:5"),
            {"path": "/ws", "query": "token=1&b=%20", "remote": "tcp:203.0.113.7:5"},
        )

    def test_no_query_key_when_empty(self) -> None:
        self.assertEqual(connect_context("/ws?", "r"), {"path": "/ws", "remote": "r"})
