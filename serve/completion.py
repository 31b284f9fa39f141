"""One completion request as its choices arrive: every choice is one Job of the scheduler (one
slot of the batch); its characters come from the stepping thread, are released as text where
no stop string could still begin (serve/stops.py), and make the finished response body.

    comp = Completion(req, prompts, model="tiny", cancel=scheduler.cancel)
    scheduler.submit(comp.jobs)
    comp.pull()                    # take what the thread gathered for every choice
    comp.choices[0].text           # the released pieces of choice 0
    comp.body()                    # the whole response, once comp.done

Runs on the event loop only; the thread's side of a Job is job.pending (see scheduler.py).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from typing import Callable

from chargen.serve.protocol import CompletionRequest
from chargen.serve.scheduler import Job
from chargen.serve.stops import hold_back, strip_stop


# completion ids: a random prefix per process and a counter (unique without a getrandom call per
# request, which cost 4% of the event loop under load)
_ID_PREFIX = "cmpl-" + secrets.token_hex(8)
_ids = itertools.count()


class Choice:
    """One choice: its text as it arrives, the held-back tail, logprobs, finish reason."""

    __slots__ = ("index", "comp", "stops", "lp_n", "prefix", "text", "sent", "held", "held_lp", "lp",
                 "lp_sent", "finish", "finish_sent", "generated", "job")

    def __init__(self, index: int, comp: "Completion", prefix: str):
        self.index = index
        self.comp = comp
        self.stops = comp.req.stop
        self.lp_n = comp.req.logprobs
        self.prefix = prefix  # the prompt, with echo
        self.text: list[str] = []  # released characters
        self.sent = 0  # how many of them a stream has sent
        self.held = ""  # characters that could still start a stop string
        self.held_lp: list = []
        self.lp: list = []  # (char, logprob, top) per released character
        self.lp_sent = 0
        self.finish: str | None = None
        self.finish_sent = False
        self.generated = 0  # characters generated (a stop string included)
        self.job: Job | None = None

    def pull(self) -> bool:
        """Take the events the stepping thread gathered for this choice; True if there were any."""
        events = self.job.take()
        if events:
            self.feed(events)
        return bool(events)

    def feed(self, events) -> None:
        for ev in events:
            if ev.text:
                self.generated += 1
                self.held += ev.text
                if self.lp_n is not None:
                    self.held_lp.append((ev.text, ev.logprob, ev.top_logprobs))
            if ev.finish is not None:
                self.finish = ev.finish
        held = self.held
        if self.finish is not None:
            kept = strip_stop(held, self.stops)
            if len(kept) < len(held):
                self.finish = "stop"
            self._release(kept)
            self.held = ""
            self.held_lp = []
            self.comp.choice_done()
        else:
            k = hold_back(held, self.stops)
            if k < len(held):
                self._release(held[: len(held) - k])
                self.held = held[len(held) - k:]
                if self.lp_n is not None:
                    self.held_lp = self.held_lp[len(held) - k:]

    def _release(self, text: str) -> None:
        if not text:
            return
        self.text.append(text)
        if self.lp_n is not None:
            self.lp.extend(self.held_lp[: len(text)])

    def fail(self, message: str) -> None:
        self.comp.abort(message)

    def logprobs(self, start: int = 0) -> dict | None:
        """OpenAI's logprobs object of the released characters from `start` on: the sampled
        character's logprob, and up to N+1 top ones (the top N, and the sampled one)."""
        if self.lp_n is None:
            return None
        n = self.lp_n
        base = len(self.prefix)
        tokens, token_lps, tops, offsets = [], [], [], []
        for i, (ch, lp, top) in enumerate(self.lp[start:], start):
            tokens.append(ch)
            token_lps.append(lp)
            best = dict(sorted(top.items(), key=lambda kv: -kv[1])[:n]) if top else {}
            if ch not in best and lp is not None:
                best[ch] = lp
            tops.append(best)
            offsets.append(base + i)
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


class Completion:
    """One request: its choices (one Job each), and the event its response waits on.

    model: the served name the response carries; cancel(jobs): the scheduler's, called when
    the client goes away or the server ends the request."""

    def __init__(self, req: CompletionRequest, prompts_fed: list[str], *, model: str,
                 cancel: Callable[[list[Job]], None]):
        from chargen.runtime import GenerationOptions

        self.req = req
        self.model = model
        self._cancel = cancel
        self.id = f"{_ID_PREFIX}{next(_ids):08x}"
        self.created = int(time.time())
        self.wake = asyncio.Event()
        self.closed = False  # the client went away
        self.error: str | None = None  # the server ended it (shutdown, a failed step)
        self.prompt_chars = sum(len(p) for p in prompts_fed)
        self.choices: list[Choice] = []
        self.jobs: list[Job] = []
        for p_index, (prompt, fed) in enumerate(zip(req.prompts, prompts_fed)):
            for j in range(req.n):
                index = p_index * req.n + j
                choice = Choice(index, self, prompt if req.echo else "")
                seed = None if req.seed is None else (req.seed + index) % 2**64
                options = GenerationOptions(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                                            seed=seed, max_length=req.max_tokens, stop=req.stop)
                lp = 0 if req.logprobs is None else max(req.logprobs, 1)
                # a stream is woken at its first character, a whole response when its jobs finish
                choice.job = Job(fed, options, unknown="error", logprobs=lp, ready=self.wake.set, fail=choice.fail,
                                 notify=req.stream)
                self.choices.append(choice)
                self.jobs.append(choice.job)
        self.remaining = len(self.choices)

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def pull(self) -> bool:
        """Take what the stepping thread gathered for every choice; True if anything came."""
        got = False
        for c in self.choices:
            if c.finish is None and c.pull():
                got = True
        return got

    def ask_to_be_woken(self) -> bool:
        """Set notify on the unfinished jobs; False if events came meanwhile (no need to wait)."""
        for c in self.choices:
            if c.finish is None:
                c.job.notify = True
        return not any(c.job.pending for c in self.choices if c.finish is None)

    def choice_done(self) -> None:
        self.remaining -= 1

    def disconnect(self) -> None:
        """The client went away: its queued and running choices are cancelled."""
        if not self.done and not self.closed:
            self.closed = True
            self._cancel(self.jobs)
        self.wake.set()

    def abort(self, message: str) -> None:
        """The server ends the request (shutdown, a failed step): its response says why."""
        if self.error is None and not self.done and not self.closed:
            self.error = message
            self._cancel(self.jobs)
        self.wake.set()

    def usage(self) -> dict:
        completion = sum(c.generated for c in self.choices)
        return {"prompt_tokens": self.prompt_chars, "completion_tokens": completion,
                "total_tokens": self.prompt_chars + completion}

    def body(self) -> dict:
        """The whole response (OpenAI's text_completion object)."""
        choices = [{"index": c.index, "text": c.prefix + "".join(c.text), "finish_reason": c.finish,
                    "logprobs": c.logprobs()} for c in self.choices]
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": choices, "usage": self.usage()}
