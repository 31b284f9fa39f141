"""Batch: slots, independent text streams that join and leave between steps and share one
graph run per step (continuous batching, as a server needs it).

    batch = Batch(model, max_batch=64)
    a = batch.admit("ROMEO: ", GenerationOptions(temperature=0.8, seed=1, max_length=200))
    b = batch.admit("JULIET: ", GenerationOptions(top_k=20, stop="\\n\\n"))
    while batch.active:
        for event in batch.step():      # one graph run for every active slot
            print(event.slot, event.text, event.finish)
    batch.release(a)                    # cancel a slot at any time (no-op once it finished)

Every slot has its own hidden state (zero at admission), prompt, sampling options and RNG
stream. One step() advances each active slot by one character: a slot still reading its
prompt takes its next prompt character, the others sample theirs (C, per-row settings, no
Python loop over the rows on the sampling path). Prompts are fed inside the shared runs, so
admitting a long prompt never stalls the other slots.

Prompts are read faster than a character a step where that costs little: the slots reading
prompts also read up to prefill - 1 more characters a step in extra runs over those slots
alone, when they are at least MIN_RUN (a run of a few rows costs about what a row of the
shared run does) or when few slots generate (a quarter of the batch or fewer: few wait on the
extra runs). A burst of prompts is read together: the step reads a prompt character at the
cost of generating one, so reading some prompts first only moves time from the last first
characters to the earliest (measured: docs/speed.md).

What a slot generates depends on its prompt, options and seed only, never on the other slots,
where the step's rows are independent: fp32 and fp16 models on onnxruntime (each row of a
MatMul is its own dot products), and int8 models on chargen's int8 step (it quantizes every
row with its own scale). onnxruntime's int8 graph quantizes the whole batch with one scale, so
there a seeded slot's text can change with its neighbours. A Batch keeps one engine for its
life (Batch.engine: Model.engine_for(max_batch)).

The active slots occupy the first rows of the step's buffers; a slot that leaves is replaced
by the last row, so a run covers exactly the active slots. Not thread-safe: one thread owns
a Batch (a server's stepping thread).
"""

from __future__ import annotations

import itertools
import math
import os
import random
from typing import NamedTuple

import numpy as np

from chargen.runtime.core import StepCore
from chargen.runtime.generator import GenerationOptions
from chargen.runtime.stops import StopMatcher

MAX_LOGPROBS = 20
PREFILL = 8  # prompt characters a slot may read in one step (Batch._prefill)
MIN_RUN = 4  # reading slots whose extra runs cost about what the shared run does per row


class BatchFull(RuntimeError):
    """Every slot is taken: step() until one finishes, or release() one."""


class SlotEvent(NamedTuple):
    """What one slot did in one step.

    text:   the character it generated ("" when it finished without one: max_length 0).
    finish: None, "stop" (text completes one of its stop strings) or "length" (max_length
            characters generated). The slot is gone after a finishing event.
    logprob, top_logprobs: with admit(logprobs=N): the character's log-probability and the
            N most likely characters with theirs, under the model's own distribution
            (temperature 1, no cuts)."""

    slot: int
    text: str
    finish: str | None = None
    logprob: float | None = None
    top_logprobs: dict | None = None


class _Slot:
    __slots__ = ("id", "prompt", "pos", "generated", "max_length", "stops", "logprobs")

    def __init__(self, id_, prompt, options: GenerationOptions, logprobs: int):
        self.id = id_
        self.prompt = prompt  # symbol ids still to feed from pos on
        self.pos = 0
        self.generated = 0
        self.max_length = options.max_length
        self.stops = StopMatcher(options.stop)
        self.logprobs = logprobs


class Batch:
    """Up to max_batch slots over one Model. See the module docstring."""

    def __init__(self, model, max_batch: int = 64, prefill: int = PREFILL):
        from chargen.runtime._sampler import RowSampler

        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, not {max_batch!r}")
        if isinstance(prefill, bool) or not isinstance(prefill, int) or prefill < 1:
            raise ValueError(f"prefill must be an integer >= 1, not {prefill!r}")
        self.model = model
        self.capacity = max_batch
        self.prefill = prefill
        self.engine = model.engine_for(max_batch)
        V = model.vocab_size
        self._chars = model.vocab.chars
        C = max_batch
        # the step's buffers and engine (one for the batch's life: a slot's text must not depend
        # on who ran which step), and the prefill runs' own core over the same engine
        self._core = StepCore(model, C, self.engine)
        self._pre = StepCore(model, C, self.engine)
        self._tok = self._core.token
        self._logits = self._core.logits
        # per row: the sampler's settings and streams
        self._temperature = np.ones(C, np.float64)
        self._top_k = np.zeros(C, np.int32)
        self._top_p = np.ones(C, np.float64)
        self._sampling = np.zeros(C, np.uint8)  # 1: the row samples its next character this step
        self._rngs = np.zeros((C, 4), np.uint64)
        self._sampler = RowSampler(V)
        self._rows: list[_Slot] = []
        self._row_of: dict[int, int] = {}
        self._ids = itertools.count()
        self._seeds = random.Random(os.urandom(16))  # unseeded slots' seeds (no syscall per slot)
        self.steps = 0

    # ------------------------------------------------------------ slots
    @property
    def active(self) -> int:
        """Slots admitted and not finished or released."""
        return len(self._rows)

    @property
    def free(self) -> int:
        return self.capacity - len(self._rows)

    def admit(self, prompt: str, options: GenerationOptions | None = None, *, unknown: str = "error",
              logprobs: int = 0) -> int:
        """A new slot for prompt with its own options (options.seed: an int, or None for a
        random one); returns its handle (an int never reused). Raises BatchFull,
        UnknownCharactersError (naming the characters), ValueError (an empty prompt, bad
        arguments)."""
        from chargen.runtime._sampler import rng_state

        if options is None:
            options = GenerationOptions()
        elif not isinstance(options, GenerationOptions):
            raise TypeError("options must be a GenerationOptions")
        if unknown not in ("error", "skip"):
            raise ValueError(f"unknown must be 'error' or 'skip', not {unknown!r}")
        if isinstance(logprobs, bool) or not isinstance(logprobs, int) or not 0 <= logprobs <= MAX_LOGPROBS:
            raise ValueError(f"logprobs must be an integer in [0, {MAX_LOGPROBS}], not {logprobs!r}")
        if isinstance(options.seed, tuple):
            raise ValueError("a slot takes one seed (an int), not a list")
        ids = self.model.vocab.encode(prompt, unknown)
        if not ids:
            why = " after skipping unknown characters" if unknown == "skip" else ""
            raise ValueError(f"the prompt is empty{why}: the model needs at least one character to start from")
        if len(self._rows) >= self.capacity:
            raise BatchFull(f"all {self.capacity} slots are in use")
        seed = options.seed if options.seed is not None else self._seeds.getrandbits(64)

        n = len(self._rows)
        self._core.resize(n, n + 1)
        h = self._core.state(n + 1)
        h[:, n] = 0.0
        self._core.set_state(n + 1, h)
        slot = _Slot(next(self._ids), ids, options, logprobs)
        self._rows.append(slot)
        self._row_of[slot.id] = n
        self._temperature[n] = options.temperature
        self._top_k[n] = options.top_k
        self._top_p[n] = options.top_p
        self._sampling[n] = 0
        self._rngs[n] = rng_state(seed, 0)
        return slot.id

    def release(self, slot: int) -> None:
        """Free a slot now (its client went away). A finished or unknown slot: nothing to do."""
        row = self._row_of.get(slot)
        if row is not None:
            self._remove(row)

    # ------------------------------------------------------------ the step
    def step(self) -> list[SlotEvent]:
        """One graph run: every active slot advances one character. Returns the events of the
        slots that generated a character or finished; finished slots are gone afterwards."""
        rows = self._rows
        n = len(rows)
        if n == 0:
            return []
        if self.prefill > 1:
            self._prefill(rows)
        sampling = self._sampling[:n]
        # a slot whose prompt is fed samples from now on, until max_length
        sampling[:] = [s.pos >= len(s.prompt) and s.generated < s.max_length for s in rows]
        logits = self._logits[:n]
        tok = self._tok[:n]
        if sampling.any():
            self._sampler.sample(logits, self._temperature, self._top_k, self._top_p, sampling, self._rngs, tok)
        events: list[SlotEvent] = []
        done: list[int] = []
        chars = self._chars
        for i, (s, t, sample) in enumerate(zip(rows, tok.tolist(), sampling.tolist())):
            if not sample:
                if s.pos < len(s.prompt):
                    tok[i] = s.prompt[s.pos]
                    s.pos += 1
                else:  # max_length reached before a character (max_length 0)
                    events.append(SlotEvent(s.id, "", "length"))
                    done.append(i)
                continue
            c = chars[t]
            s.generated += 1
            finish = None
            if s.stops.push(c):
                finish = "stop"
            if finish is None and s.generated >= s.max_length:
                finish = "length"
            if s.logprobs:
                events.append(SlotEvent(s.id, c, finish, *_logprobs(logits[i], t, s.logprobs, chars)))
            else:
                events.append(SlotEvent(s.id, c, finish))
            if finish is not None:
                done.append(i)
        for i in reversed(done):  # highest row first: the rows moved in are ones already handled
            self._remove(i)
        if self._rows:
            self._run(len(self._rows))
        return events

    # ------------------------------------------------------------ rows
    def _remove(self, row: int) -> None:
        rows = self._rows
        last = len(rows) - 1
        gone = rows[row]
        del self._row_of[gone.id]
        if row != last:
            moved = rows[last]
            rows[row] = moved
            self._row_of[moved.id] = row
            self._core.move_row(last, row, last + 1)
            for a in (self._temperature, self._top_k, self._top_p, self._sampling, self._rngs):
                a[row] = a[last]
        rows.pop()
        self._core.resize(last + 1, last)

    def _prefill(self, rows: list[_Slot]) -> None:
        """Extra runs over the slots still reading their prompts, up to prefill - 1 characters
        each before the step's own run (which takes one more). Only where they cost little: when
        at least MIN_RUN slots read (runs of that many rows cost about what the shared run does
        per row), or when few slots generate (a quarter of the batch or fewer: few wait on the
        extra runs). A lone prompt among many generating slots is read a character a step in
        the shared run, its cheapest."""
        reading = [(i, min(self.prefill - 1, len(s.prompt) - s.pos - 1)) for i, s in enumerate(rows)
                   if len(s.prompt) - s.pos >= 2]
        if not reading:
            return
        generating = sum(s.pos >= len(s.prompt) for s in rows)
        if len(reading) < MIN_RUN and generating > max(1, self.capacity // 4):
            return
        # most extra characters first, so that every run covers the first rows of the prefill
        # core: its state goes in once and each row's comes back once, when its extras are done
        reading.sort(key=lambda r: -r[1])
        idx = [i for i, _ in reading]
        extras = [e for _, e in reading]
        most = extras[0]
        toks = np.array([rows[i].prompt[rows[i].pos:rows[i].pos + e] + [0] * (most - e) for i, e in reading], np.int64)
        core, pre = self._core, self._pre
        n = len(rows)
        h = core.state(n)
        m = len(idx)
        pre.set_state(m, h[:, idx])
        for k in range(most):
            live = m
            while extras[live - 1] <= k:
                live -= 1
            if live < m:  # these rows read all their extras: their state goes back
                h[:, idx[live:m]] = pre.state(m)[:, live:m]
                pre.resize(m, live)
                m = live
            pre.token[:m] = toks[:m, k]
            pre.run(m)
        h[:, idx[:m]] = pre.state(m)
        for i, e in reading:
            rows[i].pos += e
        core.set_state(n, h)

    def _run(self, n: int) -> None:
        self._core.run(n)
        self.steps += 1

    def __repr__(self) -> str:
        return f"Batch(active={self.active}, capacity={self.capacity}, engine={self.engine!r})"


def _logprobs(row: np.ndarray, chosen: int, n: int, chars) -> tuple[float, dict]:
    """log-softmax of one row of logits: the chosen symbol's value and the n largest."""
    x = row.astype(np.float64)
    m = float(x.max())
    lse = m + math.log(float(np.exp(x - m).sum()))
    top = np.argsort(-x, kind="stable")[:n]
    return float(x[chosen] - lse), {chars[j]: float(x[j] - lse) for j in top}
