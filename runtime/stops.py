"""Stop strings: one matcher for every stream of Generator and Batch, and the server's hold-back.

    m = StopMatcher(("\\n\\n", "THE END"))
    m.push("x")          # False: the text does not end with a stop string
    m.held("x\\n")        # 1: the last character could still start one (a server holds it back)
"""

from __future__ import annotations


class StopMatcher:
    """The stop strings of one stream and the tail of its text that can still complete one."""

    __slots__ = ("stops", "keep", "tail")

    def __init__(self, stops=()):
        self.stops = tuple(stops or ())
        self.keep = max((len(s) for s in self.stops), default=0)
        self.tail = ""

    def push(self, text: str) -> bool:
        """Append generated text; True when the text now ends with one of the stop strings."""
        if not self.stops:
            return False
        self.tail = (self.tail + text)[-self.keep:]
        return any(self.tail.endswith(s) for s in self.stops)

    def reset(self) -> None:
        self.tail = ""

    def held(self, text: str) -> int:
        """How many characters at the end of text could still be the start of a stop string
        (a stream that streams holds them back until the next character decides)."""
        return hold_back(text, self.stops)

    def strip(self, text: str) -> str:
        """text without the stop string it ends with (the longest that matches)."""
        return strip_stop(text, self.stops)


def hold_back(text: str, stops: tuple[str, ...] | None) -> int:
    """How many characters at the end of text could still be the start of a stop string."""
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
