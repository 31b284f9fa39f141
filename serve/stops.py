"""Stop strings in a stream: what a stream may send now, and the text without its stop string.

The runtime ends a slot at the first stop string it generates (the stop string included in
its characters; chargen.runtime.stops.StopMatcher, the one matcher of Generator and Batch);
the server never sends a stop string, nor any part of one that is still being completed. The
two functions are the runtime's, on plain strings, with no state of their own:

    k = hold_back(text, stops)   # the last k characters of text could begin a stop string:
                                 # send text[:len(text) - k], keep the rest until more comes
    strip_stop(text, stops)      # the finished text without the stop string it ends with

stops is a tuple of non-empty strings, or None (no stop strings).
"""

from __future__ import annotations

from chargen.runtime.stops import hold_back, strip_stop

__all__ = ["hold_back", "strip_stop"]
