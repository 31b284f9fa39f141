"""One request's assembly on its own (serve/completion.py, no server, no scheduler): the
characters of each choice as the stepping thread hands them over (the runtime's SlotEvents),
released where no stop string could still begin, with their logprobs kept in step; the whole
body; a client that goes away or a server that ends the request cancels its jobs once."""

from __future__ import annotations

from chargen.runtime.batch import SlotEvent
from chargen.serve.completion import Completion
from chargen.serve.protocol import parse_completion


def completion(cancelled: list | None = None, **body) -> Completion:
    req = parse_completion({"prompt": "AB", **body}, max_chars=1000, max_choices=100)
    cancel = cancelled.append if cancelled is not None else (lambda jobs: None)
    return Completion(req, list(req.prompts), model="tiny", cancel=cancel)


def events(text: str, finish: str | None, lp: bool = False) -> list[SlotEvent]:
    """One event per character, the last one carrying the finish (as Batch.step gives them);
    with lp, character i has logprob -i and a top-2 of itself and '?'."""
    out = []
    for i, c in enumerate(text):
        extra = dict(logprob=-float(i), top_logprobs={c: -float(i), "?": -100.0}) if lp else {}
        out.append(SlotEvent(0, c, finish if i == len(text) - 1 else None, **extra))
    return out


def test_characters_are_released_unless_they_could_begin_a_stop_string():
    comp = completion(stop=["XYZ"], max_tokens=50)
    (c,) = comp.choices
    c.feed(events("abX", None))
    assert "".join(c.text) == "ab" and c.held == "X"  # 'X' may begin 'XYZ'
    c.feed(events("Yq", None))
    assert "".join(c.text) == "abXYq" and c.held == ""  # 'XYq' is not it: all of it goes out
    c.feed(events("XY", None))
    assert "".join(c.text) == "abXYq" and c.held == "XY"
    c.feed(events("Z", "stop"))
    assert "".join(c.text) == "abXYq" and c.finish == "stop" and comp.done
    assert comp.usage() == {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10}  # the stop counts


def test_the_whole_body_with_logprobs_in_step_with_the_text():
    comp = completion(stop="XY", max_tokens=50, logprobs=1, echo=True)
    (c,) = comp.choices
    chars = "aXbXXY"
    for e in events(chars, "stop", lp=True):  # one event at a time, as slow streams see them
        c.feed([e])
    body = comp.body()
    assert body["model"] == "tiny" and body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    (choice,) = body["choices"]
    assert choice["text"] == "AB" + "aXbX" and choice["finish_reason"] == "stop"
    lp = choice["logprobs"]
    assert lp["tokens"] == list("aXbX")
    assert lp["token_logprobs"] == [0.0, -1.0, -2.0, -3.0]  # each character's own, though some were held
    assert lp["text_offset"] == [2, 3, 4, 5]  # after the echoed prompt
    assert lp["top_logprobs"][1] == {"X": -1.0}  # top 1 of {X, ?}


def test_a_choice_that_ends_at_its_length_releases_what_it_held():
    comp = completion(stop=["XYZ"], max_tokens=3, n=2)
    a, b = comp.choices
    a.feed(events("aXY", "length"))
    assert "".join(a.text) == "aXY" and a.finish == "length" and not comp.done
    b.feed([SlotEvent(1, "q", "length")])
    assert comp.done and [c["text"] for c in comp.body()["choices"]] == ["aXY", "q"]
    assert comp.usage()["completion_tokens"] == 4


def test_seeds_per_choice_and_jobs():
    comp = completion(prompt=["A", "B"], n=2, seed=2**64 - 1, max_tokens=5, stream=True)
    assert [c.index for c in comp.choices] == [0, 1, 2, 3]
    assert [j.prompt for j in comp.jobs] == ["A", "A", "B", "B"]
    assert [j.options.seed for j in comp.jobs] == [2**64 - 1, 0, 1, 2]  # seed + i, wrapped
    assert all(j.notify for j in comp.jobs)  # a stream is woken at its first character
    assert not any(j.notify for j in completion(max_tokens=5).jobs)  # a whole response when it ends


def test_a_disconnect_or_an_abort_cancels_the_jobs_once():
    cancelled = []
    comp = completion(cancelled, n=2, max_tokens=5)
    comp.disconnect()
    comp.disconnect()
    comp.abort("shutting down")
    assert cancelled == [comp.jobs] and comp.closed and comp.wake.is_set()
    cancelled = []
    comp = completion(cancelled, max_tokens=5)
    comp.choices[0].fail("the server's step failed: RuntimeError")
    assert cancelled == [comp.jobs] and comp.error == "the server's step failed: RuntimeError"
    done = completion(cancelled := [], max_tokens=1)
    done.choices[0].feed(events("a", "length"))
    done.disconnect()
    assert cancelled == []  # nothing left to cancel
