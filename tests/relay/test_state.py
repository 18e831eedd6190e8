"""The backend's state on a connection: encoded, bounded, kept with the tags."""

from twisted.trial.unittest import SynchronousTestCase

from socketdock.relay.state import (
    MAX_STATE,
    InvalidState,
    details_text,
    encode_state,
    parse_details,
)


class EncodeStateTests(SynchronousTestCase):
    def test_compact_and_unescaped(self) -> None:
        self.assertEqual(encode_state({"a": [1, "é"]}), '{"a":[1,"é"]}')

    def test_too_large_is_413(self) -> None:
        e = self.assertRaises(InvalidState, encode_state, "x" * MAX_STATE)
        self.assertEqual(e.status, 413)

    def test_at_the_bound_is_kept(self) -> None:
        self.assertEqual(len(encode_state("x" * (MAX_STATE - 2))), MAX_STATE)

    def test_lone_surrogate_is_400(self) -> None:
        e = self.assertRaises(InvalidState, encode_state, "\ud800")
        self.assertEqual(e.status, 400)


class DetailsTests(SynchronousTestCase):
    def test_neither_is_empty(self) -> None:
        self.assertEqual(details_text((), None), "")
        self.assertEqual(parse_details(""), ((), None))

    def test_round_trip(self) -> None:
        for tags, state in [(("a", "b"), None), ((), '{"x":1}'), (("a",), "null")]:
            self.assertEqual(parse_details(details_text(tags, state)), (tags, state))

    def test_unreadable_record_gives_nothing(self) -> None:
        self.assertEqual(parse_details(b"{not json"), ((), None))
        self.assertEqual(parse_details("[1]"), ((), None))
        self.assertEqual(parse_details('{"tags": [1, "a"]}'), (("a",), None))
