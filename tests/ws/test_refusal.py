"""What a refused handshake echoes: one bounded printable line, a fixed label."""

from twisted.trial.unittest import SynchronousTestCase

from socketdock.ws.refusal import REASON_LIMIT, autobahn_reason, printable


class PrintableTests(SynchronousTestCase):
    def test_controls_and_non_ascii_escaped(self) -> None:
        self.assertEqual(printable("a\x1b[1mé\n"), "a\\x1b[1m\\xe9\\n")

    def test_long_text_cut_with_ellipsis(self) -> None:
        line = printable("u" * 15000)
        self.assertEqual(len(line), REASON_LIMIT)
        self.assertTrue(line.endswith("..."))

    def test_escapes_count_against_the_limit(self) -> None:
        line = printable("\x07" * REASON_LIMIT)
        self.assertEqual(len(line), REASON_LIMIT)

    def test_short_text_unchanged(self) -> None:
        self.assertEqual(printable("bad Upgrade"), "bad Upgrade")


class AutobahnReasonTests(SynchronousTestCase):
    def test_origin_is_403(self) -> None:
        self.assertEqual(autobahn_reason("HTTP Origin header invalid", 400), (403, "origin"))

    def test_server_side_is_error(self) -> None:
        self.assertEqual(autobahn_reason("oops", 500), (500, "error"))

    def test_other_is_bad_request(self) -> None:
        self.assertEqual(autobahn_reason("missing Upgrade", 400), (400, "bad_request"))
