"""Generator: B text streams over one Model, with their hidden state, sampler and RNG.

    model = Model.load("model.onnx")
    gen = Generator(model, GenerationOptions(temperature=0.8, seed=42, max_length=500))
    gen.feed("ROMEO: ")
    for chunk in gen:            # chunk: list of B strings, one new character per stream
        print(chunk[0], end="")

Every call returns one entry per stream, whatever B is (B=1 included): step(),
iteration and generate() give lists of length B, logits is [B, V].

Hot path (per generated character): one C sampler call that reads the logits
buffer and writes the ids straight into the graph's token buffer, and one
onnxruntime run through a pre-built IOBinding (or one call of chargen's int8
step in C where Generator.engine is "chargen"). The hidden state lives in two
buffers bound once (state A -> B, then B -> A: two bindings, swapped, never
copied); nothing is allocated per step.

Randomness: GenerationOptions.seed=S (an int) gives stream b the RNG stream b
of S, so stream 0 is what a batch-1 Generator with seed S draws.
seed=[S0, S1, ...] (one int per stream) gives stream b exactly what a batch-1
Generator with seed Sb draws: a batch with per-stream seeds reproduces B
single runs character for character. seed=None draws a seed from os.urandom;
read it back from Generator.seed.

Threads: one Model may serve many Generators in many threads at once. A
Generator itself is not thread-safe: use it from one thread at a time.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from chargen.runtime.core import StepCore
from chargen.runtime.stops import StopMatcher

_UNKNOWN_MODES = ("error", "skip")


# ---------------------------------------------------------------------- options
@dataclass(frozen=True)
class GenerationOptions:
    """How to sample (the Hugging Face names).

    temperature: > 0 scales the logits (1: as trained); 0 is greedy (argmax).
    top_k:       keep the k most likely symbols (0: no cut).
    top_p:       nucleus: keep the smallest set whose probability reaches top_p, in (0, 1] (1: no cut).
    seed:        int in [0, 2**64), one int per stream, or None (random; see Generator.seed).
    max_length:  how many characters iteration and generate() produce per stream after each
                 feed() (the start string does not count; unlike Hugging Face's max_length).
    stop:        a string or several: a stream ends after the first of them it generates
                 (the stop string is part of the output, as in Hugging Face's stop_strings).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | Sequence[int] | None = None
    max_length: int = 1000
    stop: str | Sequence[str] | None = None

    def __post_init__(self):
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), not {t!r}")
        object.__setattr__(self, "temperature", float(t))
        k = self.top_k
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = no top-k cut), not {k!r}")
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0 < p <= 1):
            raise ValueError(f"top_p must be in (0, 1] (1 = no nucleus cut), not {p!r}")
        object.__setattr__(self, "top_p", float(p))
        n = self.max_length
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"max_length must be an integer >= 0, not {n!r}")
        object.__setattr__(self, "seed", _check_seed(self.seed))
        stop = self.stop
        if stop is not None:
            stops = (stop,) if isinstance(stop, str) else tuple(stop)
            if not stops or any(not isinstance(s, str) or not s for s in stops):
                raise ValueError(f"stop must be a non-empty string or a list of them, not {stop!r}")
            object.__setattr__(self, "stop", stops)


def _check_seed(seed):
    def one(s):
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**64:
            raise ValueError(f"a seed is an integer in [0, 2**64), not {s!r}")
        return int(s)

    if seed is None:
        return None
    if isinstance(seed, (list, tuple, np.ndarray)):
        seeds = tuple(one(int(s) if isinstance(s, np.integer) else s) for s in seed)
        if not seeds:
            raise ValueError("seed: an empty list of seeds")
        return seeds
    return one(int(seed) if isinstance(seed, np.integer) else seed)


# ---------------------------------------------------------------------- state
@dataclass(frozen=True)
class GeneratorState:
    """A Generator's whole state: restore() continues from it bit-exactly. Picklable."""

    batch_size: int
    h: np.ndarray  # [L, B, H] float32
    logits: np.ndarray  # [B, V] float32
    token: np.ndarray  # [B] int64: the last symbol of every stream
    sampler: tuple  # Sampler.get_state()
    primed: bool
    generated: int  # characters generated since the last feed()
    steps: int  # graph runs since the Generator was made (feeding included)
    finished: tuple = ()
    tails: tuple = ()
    seed: object = None
    model_shape: tuple = field(default=())  # (L, H, V) of the model it came from


# ---------------------------------------------------------------------- generator
class Generator:
    """B streams of text from one Model. See the module docstring."""

    def __init__(self, model, options: GenerationOptions | None = None, batch_size: int = 1):
        from chargen.runtime._sampler import Sampler

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, not {batch_size!r}")
        if options is None:
            options = GenerationOptions()
        elif not isinstance(options, GenerationOptions):
            raise TypeError("options must be a GenerationOptions")
        B = batch_size
        seed = options.seed
        if isinstance(seed, tuple) and len(seed) != B:
            raise ValueError(f"seed lists {len(seed)} seeds for {B} streams; give one per stream, or one int")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        self.model = model
        self.options = options
        self.batch_size = B
        self.seed = seed
        self._set_options(options)

        # sampler: stream b of seed S, or stream 0 of seed Sb for per-stream seeds
        if isinstance(seed, tuple):
            sampler = Sampler(seed[0])
            version = sampler.get_state()[0]
            streams = b"".join(Sampler(s).get_state()[2][:32] for s in seed)
            sampler.set_state((version, seed[0], streams))
        else:
            sampler = Sampler(seed)
        self._sampler = sampler

        L, H, V = model.num_layers, model.hidden_size, model.vocab_size
        self._shape = (L, H, V)
        self._chars = model.vocab.chars
        # the step core owns the buffers and the engine: the sampler reads its logits and writes
        # the ids straight into its token buffer
        self._core = core = StepCore(model, B)
        self._tok = core.token
        self._logits = core.logits
        self._logits_view = self._logits.view()
        self._logits_view.flags.writeable = False
        self.engine = core.engine
        # benchmarks' hook: a callable given the nanoseconds of each step()'s sampler call (the
        # run's are core.timer's); None costs nothing
        self.sample_timer = None
        self._primed = False
        self._generated = 0
        self._steps = 0
        self._finished = [False] * B
        self._n_finished = 0
        self._set_tails([""] * B)

    # ------------------------------------------------------------ options
    def _set_options(self, options: GenerationOptions) -> None:
        self._temperature = options.temperature
        self._top_k = options.top_k
        self._top_p = options.top_p
        self._max_length = options.max_length
        self._stops = options.stop or ()
        tails = [m.tail for m in getattr(self, "_matchers", ())] or [""] * self.batch_size
        self._matchers = [StopMatcher(self._stops) for _ in range(self.batch_size)]
        self._set_tails(tails)

    def _set_tails(self, tails) -> None:
        for m, tail in zip(self._matchers, tails):
            m.tail = tail[-m.keep:] if m.keep else ""

    def set_options(self, options: GenerationOptions) -> None:
        """Change temperature, top_k, top_p, max_length and stop from now on (not the seed:
        the RNG streams go on as they are)."""
        if not isinstance(options, GenerationOptions):
            raise TypeError("options must be a GenerationOptions")
        self.options = options
        self._set_options(options)

    # ------------------------------------------------------------ properties
    @property
    def logits(self) -> np.ndarray:
        """The last logits, float32 [B, V] (read-only; the next step overwrites it: copy it to keep
        it). Sample from them yourself and pass the ids to advance()."""
        self._require_primed()
        return self._logits_view

    @property
    def generated(self) -> int:
        """Characters generated per stream since the last feed()."""
        return self._generated

    @property
    def finished(self) -> list[bool]:
        """Per stream: has it generated one of the stop strings since the last feed()?"""
        return list(self._finished)

    @property
    def done(self) -> bool:
        """True when iteration would stop: max_length reached, or every stream stopped."""
        return self._generated >= self._max_length or self._n_finished == self.batch_size

    # ------------------------------------------------------------ graph runs
    def _run(self) -> None:
        self._core.run(self.batch_size)
        self._steps += 1

    def _get_h(self) -> np.ndarray:
        return self._core.state(self.batch_size)

    def _set_h(self, h: np.ndarray) -> None:
        self._core.set_state(self.batch_size, h)

    def _require_primed(self) -> None:
        if not self._primed:
            raise RuntimeError("feed() the generator a start string first")

    # ------------------------------------------------------------ feeding
    def feed(self, text: str | Sequence[str], unknown: str = "error") -> None:
        """Prime the streams: one start string for all of them, or a list of B (lengths may
        differ). Feeding again continues from where the streams are (an empty string then
        leaves a stream as it is). Resets the max_length count and the stop flags.

        unknown='error' raises UnknownCharactersError (naming the characters and showing the
        model's alphabet); 'skip' drops characters the model does not know."""
        if unknown not in _UNKNOWN_MODES:
            raise ValueError(f"unknown must be 'error' or 'skip', not {unknown!r}")
        B = self.batch_size
        vocab = self.model.vocab
        if isinstance(text, str):
            ids = vocab.encode(text, unknown)
            per_stream = None
            lengths = [len(ids)] * B
        else:
            texts = list(text)
            if len(texts) != B or not all(isinstance(t, str) for t in texts):
                raise ValueError(f"feed() takes one string, or a list of {B} strings (one per stream)")
            per_stream = [vocab.encode(t, unknown) for t in texts]
            lengths = [len(i) for i in per_stream]
        if not self._primed and min(lengths) == 0:
            which = "the start string" if per_stream is None else f"the start string of stream {lengths.index(0)}"
            why = " after skipping unknown characters" if unknown == "skip" else ""
            raise ValueError(f"{which} is empty{why}: the model needs at least one character to start from")
        T = max(lengths)
        if T > 0:
            tokens = np.zeros((T, B), np.int64)
            if per_stream is None:
                tokens[:, :] = np.asarray(ids, np.int64)[:, None]
            else:
                for b, s in enumerate(per_stream):  # right-aligned: every stream ends at step T
                    if s:
                        tokens[T - len(s):, b] = s
            uniform = min(lengths) == T
            idle_rows = [b for b in range(B) if lengths[b] == 0]
            saved_logits = self._logits[idle_rows].copy() if idle_rows else None
            for t in range(T):
                self._tok[:] = tokens[t]
                if uniform:
                    self._run()
                    continue
                waiting = [b for b in range(B) if t < T - lengths[b]]
                h_before = self._get_h()[:, waiting].copy() if waiting else None
                self._run()
                if waiting:  # streams that have not started keep their state, exactly
                    h = self._get_h()
                    h[:, waiting] = h_before
                    self._set_h(h)
            if idle_rows:
                self._core.set_logits(idle_rows, saved_logits)
            self._primed = True
        self._generated = 0
        self._finished = [False] * B
        self._n_finished = 0
        self._set_tails([""] * B)

    # ------------------------------------------------------------ stepping
    def step(self) -> list[str]:
        """Sample the next character of every stream and advance: a list of B one-character
        strings. Ignores max_length and stop (iteration and generate() honour them)."""
        if not self._primed:
            self._require_primed()
        if self.sample_timer is None:
            tok = self._sampler.sample_batch(self._logits, self._temperature, self._top_k, self._top_p, self._tok)
        else:
            t0 = time.perf_counter_ns()
            tok = self._sampler.sample_batch(self._logits, self._temperature, self._top_k, self._top_p, self._tok)
            self.sample_timer(time.perf_counter_ns() - t0)
        self._run()
        self._generated += 1
        chars = self._chars
        out = [chars[i] for i in tok.tolist()]
        if self._stops:
            self._check_stops(out)
        return out

    def step_ids(self) -> np.ndarray:
        """step(), returning the ids (int64 [B]; a buffer the next step overwrites)."""
        if not self._primed:
            self._require_primed()
        self._sampler.sample_batch(self._logits, self._temperature, self._top_k, self._top_p, self._tok)
        self._run()
        self._generated += 1
        if self._stops:
            self._check_stops([self._chars[i] for i in self._tok.tolist()])
        return self._tok

    def advance(self, ids) -> list[str]:
        """Append symbols chosen by the caller (B ids, e.g. sampled from .logits) and advance:
        the do-it-yourself step(). Counts toward max_length and stop like step()."""
        self._require_primed()
        a = np.asarray(ids)
        if a.shape != (self.batch_size,) or a.dtype.kind not in "iu":
            raise ValueError(f"advance() takes {self.batch_size} integer ids, got {a!r}")
        V = self._shape[2]
        if a.min() < 0 or a.max() >= V:
            raise ValueError(f"ids must be in [0, {V})")
        self._tok[:] = a
        self._run()
        self._generated += 1
        out = [self._chars[i] for i in self._tok.tolist()]
        if self._stops:
            self._check_stops(out)
        return out

    def _check_stops(self, chars: list[str]) -> None:
        for b, (c, m) in enumerate(zip(chars, self._matchers)):
            if not self._finished[b] and m.push(c):
                self._finished[b] = True
                self._n_finished += 1

    def __iter__(self) -> Iterator[list[str]]:
        return self

    def __next__(self) -> list[str]:
        """The next character of every stream ("" for a stream that has stopped), until
        max_length characters since the last feed(), or until every stream has stopped."""
        if self._generated >= self._max_length or self._n_finished == self.batch_size:
            raise StopIteration
        if self._n_finished:
            before = list(self._finished)
            return ["" if f else c for c, f in zip(self.step(), before)]
        return self.step()

    def generate(self, start: str | Sequence[str], n: int | None = None, unknown: str = "error") -> list[str]:
        """feed(start), then generate up to n characters per stream (default: max_length),
        stopping a stream at a stop string. Returns B strings (the start not included)."""
        if n is None:
            n = self._max_length
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an integer >= 0, not {n!r}")
        self.feed(start, unknown=unknown)
        out: list[list[str]] = [[] for _ in range(self.batch_size)]
        saved = self._max_length
        self._max_length = n
        try:
            for chunk in self:
                for parts, c in zip(out, chunk):
                    parts.append(c)
        finally:
            self._max_length = saved
        return ["".join(p) for p in out]

    # ------------------------------------------------------------ state
    def state(self) -> GeneratorState:
        """A copy of everything that decides what comes next (hidden state, logits, sampler RNG
        streams, counters); restore() it here or in another Generator of the same model and
        batch size to continue bit-exactly."""
        return GeneratorState(
            batch_size=self.batch_size,
            h=np.array(self._get_h(), np.float32, copy=True),
            logits=self._logits.copy(),
            token=self._tok.copy(),
            sampler=self._sampler.get_state(),
            primed=self._primed,
            generated=self._generated,
            steps=self._steps,
            finished=tuple(self._finished),
            tails=tuple(m.tail for m in self._matchers),
            seed=self.seed,
            model_shape=self._shape,
        )

    def restore(self, state: GeneratorState) -> None:
        """Continue from a state() (of this or another Generator with the same model shape and
        batch size)."""
        if not isinstance(state, GeneratorState):
            raise TypeError("restore() takes what state() returned")
        L, H, V = self._shape
        if state.batch_size != self.batch_size or state.model_shape != self._shape:
            raise ValueError(
                f"state of {state.batch_size} stream(s) for a model shaped {state.model_shape}, "
                f"this generator has {self.batch_size} for {self._shape}"
            )
        self._set_h(state.h)
        self._core.set_logits(slice(None), state.logits)
        self._tok[...] = state.token
        self._sampler.set_state(state.sampler)
        self._primed = state.primed
        self._generated = state.generated
        self._steps = state.steps
        self._finished = list(state.finished) if state.finished else [False] * self.batch_size
        self._n_finished = sum(self._finished)
        self._set_tails(state.tails or [""] * self.batch_size)
        self.seed = state.seed

    def reset(self) -> None:
        """Back to the zero hidden state, unprimed (the RNG streams go on)."""
        L, H, _ = self._shape
        self._set_h(np.zeros((L, self.batch_size, H), np.float32))
        self._logits[...] = 0
        self._primed = False
        self._generated = 0
        self._finished = [False] * self.batch_size
        self._n_finished = 0
        self._set_tails([""] * self.batch_size)

    @property
    def core(self) -> StepCore:
        """The step core this generator runs on (its engine, buffers and run timer)."""
        return self._core

    def __repr__(self) -> str:
        return (
            f"Generator(batch_size={self.batch_size}, seed={self.seed!r}, device={self.model.device!r}, "
            f"generated={self._generated})"
        )

