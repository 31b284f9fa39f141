"""Stop strings in a stream: what a stream may send now, and the text without its stop string.

The runtime ends a slot at the first stop string it generates (the stop string included in
its characters); the server never sends a stop string, nor any part of one that is still
being completed. Two functions, on plain strings, with no state of their own:

    k = hold_back(text, stops)   # the last k characters of text could begin a stop string:
                                 # send text[:len(text) - k], keep the rest until more comes
    strip_stop(text, stops)      # the finished text without the stop string it ends with

stops is a tuple of non-empty strings, or None (no stop strings).
"""

from __future__ import annotations

__all__ = ["hold_back", "strip_stop"]


def hold_back(text: str, stops: tuple[str, ...] | None) -> int:
    """How many characters at the end of text could still be the start of a stop string
    (a stream holds them back until the next character decides)."""
    if not stops or not text:
        return 0
    longest = min(max(len(s) for s in stops) - 1, len(text))
    for k in range(longest, 0, -1):
        tail = text[-k:]
        if any(s.startswith(tail) for s in stops):
            return k
    return 0


def strip_stop(text: str, stops: tuple[str, ...] | None) -> str:
    """text without the stop string it ends with (the longest that matches)."""
    if stops:
        for s in sorted(stops, key=len, reverse=True):
            if text.endswith(s):
                return text[: -len(s)]
    return text
