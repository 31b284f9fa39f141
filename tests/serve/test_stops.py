"""The stop hold-back on its own (serve/stops.py, no server): hold_back says what a stream must
keep until the next character decides, strip_stop cuts the stop string off a finished text;
fed one character at a time, as the runtime gives them, a stream never shows a stop string
or a piece of one, and ends with exactly the text before the stop."""

from __future__ import annotations

import random

import pytest

from chargen.serve.stops import hold_back, strip_stop


@pytest.mark.parametrize("text, stops, k", [
    ("hello", None, 0),
    ("hello", (), 0),
    ("", ("ab",), 0),
    ("xxa", ("ab",), 1),          # 'a' could begin 'ab'
    ("xab", ("abc",), 2),         # 'ab' could begin 'abc'
    ("xabd", ("abc",), 0),        # 'abd' begins nothing
    ("aa", ("aaa",), 2),          # as long as len(stop) - 1, not more
    ("aaaa", ("aaa",), 2),
    ("xa", ("a",), 0),            # a one-character stop never leaves a partial match
    ("q\n", ("\n\n", "END"), 1),
    ("qEN", ("\n\n", "END"), 2),  # the longest partial match of any stop
    ("ab", ("b", "abc"), 2),
])
def test_hold_back(text, stops, k):
    assert hold_back(text, stops) == k


@pytest.mark.parametrize("text, stops, kept", [
    ("hello END", ("END",), "hello "),
    ("hello", ("END",), "hello"),
    ("hello", None, "hello"),
    ("a\n\n", ("\n", "\n\n"), "a"),   # the longest stop it ends with
    ("END", ("END",), ""),
    ("ENDx", ("END",), "ENDx"),     # only at the end
])
def test_strip_stop(text, stops, kept):
    assert strip_stop(text, stops) == kept


def generated(text: str, stops: tuple[str, ...]) -> str:
    """What a slot generates: text up to and including the first stop string it completes
    (the runtime ends the slot there)."""
    for i in range(1, len(text) + 1):
        if any(text[:i].endswith(s) for s in stops):
            return text[:i]
    return text


def stream(chars: str, stops: tuple[str, ...], finished: bool) -> list[str]:
    """The pieces a stream sends, fed one character at a time with hold_back; where the slot
    finished, its last character comes with the finish, and strip_stop takes what is held
    (what serve/completion.py's Choice does)."""
    pieces, held = [], ""
    for c in chars[:-1] if finished else chars:
        held += c
        k = hold_back(held, stops)
        if k < len(held):
            pieces.append(held[: len(held) - k])
            held = held[len(held) - k:]
    if finished:
        pieces.append(strip_stop(held + chars[-1:], stops))
    return pieces


def test_a_stream_never_shows_a_stop_string_and_ends_with_the_text_before_it():
    rng = random.Random(7)
    cases = 0
    for _ in range(1500):
        text = "".join(rng.choice("abc\n") for _ in range(rng.randint(0, 40)))
        stops = tuple(dict.fromkeys("".join(rng.choice("abc\n") for _ in range(rng.randint(1, 4)))
                                    for _ in range(rng.randint(1, 4))))
        chars = generated(text, stops)
        hit = next((s for s in sorted(stops, key=len, reverse=True) if chars.endswith(s)), None)
        want = chars[: len(chars) - len(hit)] if hit else chars
        if hit:
            cases += 1
        # before the end: what went out is a prefix of the final text, and holds no stop string
        for n in range(len(chars)):
            sent = "".join(stream(chars[:n], stops, finished=False))
            assert want.startswith(sent), (chars, stops, n, sent)
            assert not any(s in sent for s in stops), (chars, stops, n, sent)
        # at the end: exactly the text before the stop string
        assert "".join(stream(chars, stops, finished=True)) == want, (chars, stops)
    assert cases > 300  # the stops were hit often enough to test something
