"""Batch: slots that join and leave between steps, each with its own prompt, options and seed,
stepped together in one graph run."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("onnx")

from chargen.runtime import GenerationOptions, Generator, Model, UnknownCharactersError  # noqa: E402
from chargen.runtime.batch import Batch, BatchFull  # noqa: E402

PROMPTS = ["ROMEO: ", "JULIET:\nO", "A", "First Citizen:\nBefore we proceed any further", "\n\n", "KING RICHARD"]


def options(j: int, n: int = 80) -> GenerationOptions:
    """A different sampling setup for every request: greedy, top-k, top-p, temperatures."""
    setups = [dict(temperature=0.9), dict(temperature=0.8, top_k=10), dict(temperature=0.0),
              dict(temperature=1.2, top_p=0.9), dict(temperature=1.0, top_k=5, top_p=0.8), dict()]
    return GenerationOptions(seed=1000 + j, max_length=n, **setups[j % len(setups)])


def alone(model, j: int, n: int = 80) -> str:
    """Request j served by itself: a batch-1 Generator with the same seed."""
    return Generator(model, options(j, n)).generate(PROMPTS[j % len(PROMPTS)])[0]


def run(batch: Batch, arrivals: dict[int, list[int]], n: int = 80) -> dict[int, str]:
    """Admit request j at step arrivals[step], step until every slot finished: the texts."""
    texts, owner, step = {}, {}, 0
    last = max(arrivals)
    while step <= last or batch.active:
        for j in arrivals.get(step, []):
            owner[batch.admit(PROMPTS[j % len(PROMPTS)], options(j, n))] = j
            texts[j] = ""
        for e in batch.step():
            texts[owner[e.slot]] += e.text
        step += 1
    return texts


@pytest.fixture(scope="module", params=[("fp32", 1, 64), ("int8", 1, 64), ("fp32", 2, 48), ("int8", 2, 48)],
                ids=["fp32-L1", "int8-L1", "fp32-L2", "int8-L2"])
def model(request, make_model, tmp_path_factory):
    precision, L, H = request.param
    path = make_model(tmp_path_factory.mktemp("batch") / f"{precision}-L{L}.onnx", precision, layers=L, hidden=H)
    # int8: chargen's step, whose rows are independent of each other (onnxruntime's int8 graph
    # quantizes the whole batch with one scale)
    return Model.load(path, device="cpu", engine="chargen" if precision == "int8" else "onnxruntime")


def test_a_slot_writes_what_it_writes_alone_whoever_joins_or_leaves(model):
    batch = Batch(model, max_batch=12)
    assert batch.engine == ("chargen" if model.precision == "int8" else "onnxruntime")
    # staggered arrivals: slots join while others are mid-prompt or mid-generation, and leave
    # at different steps (prompts of 1 to 45 characters), so rows move around
    arrivals = {0: [0, 1], 3: [2], 4: [3, 4], 30: [5, 6], 31: [7, 8, 9, 10, 11], 100: [12, 13]}
    texts = run(batch, arrivals)
    assert set(texts) == set(range(14))
    for j, text in texts.items():
        assert text == alone(model, j), f"request {j}"
    assert batch.active == 0


def test_a_full_batch_refuses_and_a_released_slot_frees_its_row(model):
    batch = Batch(model, max_batch=3)
    slots = [batch.admit("ROMEO: ", options(j)) for j in range(3)]
    assert len(set(slots)) == 3 and batch.free == 0
    with pytest.raises(BatchFull):
        batch.admit("A", options(5))
    got = {s: "" for s in slots}
    for _ in range(10):
        for e in batch.step():
            got[e.slot] += e.text
    batch.release(slots[0])  # a client that went away: its row goes to the last slot
    batch.release(slots[0])  # twice: nothing
    assert batch.active == 2
    newcomer = batch.admit(PROMPTS[1], options(1))
    assert newcomer not in slots  # handles are never reused
    got[newcomer] = ""
    while batch.active:
        for e in batch.step():
            assert e.slot != slots[0]
            got[e.slot] += e.text
    assert got[newcomer] == alone(model, 1)
    for j in (1, 2):  # the slots that stayed went on as if alone
        assert got[slots[j]] == Generator(model, options(j)).generate("ROMEO: ")[0]


def test_stop_strings_and_lengths_finish_a_slot(model):
    batch = Batch(model, max_batch=4)
    text = alone(model, 0, 200)
    stop = text[40:43]
    first = text.index(stop) + len(stop)
    a = batch.admit(PROMPTS[0], GenerationOptions(**{**options(0, 200).__dict__, "stop": (stop, "\u2603")}))
    b = batch.admit("A", GenerationOptions(max_length=0))
    c = batch.admit("A", GenerationOptions(max_length=3, seed=1))
    events = {a: [], b: [], c: []}
    while batch.active:
        for e in batch.step():
            events[e.slot].append(e)
    assert "".join(e.text for e in events[a]) == text[:first]  # the stop string is in the text
    assert [e.finish for e in events[a]] == [None] * (first - 1) + ["stop"]
    assert [(e.text, e.finish) for e in events[b]] == [("", "length")]
    assert [e.finish for e in events[c]] == [None, None, "length"]


@pytest.mark.parametrize("prefill", [1, 8])
def test_prompts_are_fed_inside_the_shared_steps(model, prefill):
    """A long prompt arriving does not stall a slot that is generating: that slot gets one
    character on every step while the prompt is read, prefill characters a step (the last one
    in the step's own run), and the newcomer writes what it writes alone."""
    batch = Batch(model, max_batch=2, prefill=prefill)
    a = batch.admit("A", GenerationOptions(max_length=200, seed=3))
    batch.step()
    long_prompt = PROMPTS[3] * 3
    b = batch.admit(long_prompt, GenerationOptions(max_length=5, seed=4))
    steps_until_b, text = 0, ""
    while True:
        events = batch.step()
        steps_until_b += 1
        assert [e.slot for e in events if e.slot == a] == [a]
        text += "".join(e.text for e in events if e.slot == b)
        if text:
            break
    assert steps_until_b == -(-len(long_prompt) // prefill) + 1
    while batch.active == 2:
        text += "".join(e.text for e in batch.step() if e.slot == b)
    assert text == Generator(model, GenerationOptions(max_length=5, seed=4)).generate(long_prompt)[0]


def first_text_steps(batch: Batch, slots: list[int]) -> tuple[dict[int, int], dict[int, str]]:
    """Step until every slot finished: the step (1-based) of each slot's first character, and
    each slot's text."""
    first, texts, step = {}, {s: "" for s in slots}, 0
    while batch.active:
        step += 1
        for e in batch.step():
            texts[e.slot] += e.text
            if e.text:
                first.setdefault(e.slot, step)
    return first, texts


def test_a_burst_of_prompts_is_read_together_with_extra_runs(model):
    """MIN_RUN or more slots reading: extra runs, prefill characters a step for every prompt,
    and each slot writes what it writes alone."""
    batch = Batch(model, max_batch=8, prefill=8)
    prompts = [PROMPTS[3], PROMPTS[3][3:], PROMPTS[3][::-1], PROMPTS[3][4:]]
    slots = [batch.admit(p, options(j, 30)) for j, p in enumerate(prompts)]
    first, texts = first_text_steps(batch, slots)
    assert [first[s] for s in slots] == [-(-len(p) // 8) + 1 for p in prompts]
    for j, (s, p) in enumerate(zip(slots, prompts)):
        assert texts[s] == Generator(model, options(j, 30)).generate(p)[0], f"request {j}"


def test_a_lone_prompt_among_many_generating_slots_is_read_in_the_shared_run(model):
    """Extra runs of one row cost more per character than a row of the shared run: with most
    of the batch generating, a single newcomer reads a character a step."""
    batch = Batch(model, max_batch=8, prefill=8)
    busy = [batch.admit("A", options(j, 200)) for j in range(6)]
    batch.step()
    batch.step()
    late = batch.admit(PROMPTS[3], options(7, 5))
    first, texts = first_text_steps(batch, busy + [late])
    assert first[late] == len(PROMPTS[3]) + 1
    assert texts[late] == Generator(model, options(7, 5)).generate(PROMPTS[3])[0]
    # the same newcomer on an idle batch: extra runs (nobody waits on them)
    batch = Batch(model, max_batch=8, prefill=8)
    late = batch.admit(PROMPTS[3], options(7, 5))
    first, texts = first_text_steps(batch, [late])
    assert first[late] == -(-len(PROMPTS[3]) // 8) + 1
    assert texts[late] == Generator(model, options(7, 5)).generate(PROMPTS[3])[0]


def test_logprobs_are_the_models_log_softmax(model):
    batch = Batch(model, max_batch=2, prefill=1)
    batch.admit("ROMEO: ", GenerationOptions(temperature=0.7, seed=9, max_length=20), logprobs=3)
    plain = batch.admit("ROMEO: ", GenerationOptions(temperature=0.7, seed=9, max_length=20))
    gen = Generator(model, GenerationOptions(temperature=0.7, seed=9, max_length=20))
    gen.feed("ROMEO: ")
    for _ in "ROMEO: ":  # the batch reads the prompt in its steps
        assert batch.step() == []
    seen = 0
    while batch.active:
        logits = gen.logits[0].astype(np.float64)
        want = logits - (logits.max() + math.log(np.exp(logits - logits.max()).sum()))
        c = gen.step()[0]
        for e in batch.step():
            if e.slot == plain:
                assert e.logprob is None and e.top_logprobs is None and e.text == c
                continue
            assert e.text == c
            assert e.logprob == pytest.approx(want[model.vocab.encode(c)[0]], abs=1e-9)
            assert len(e.top_logprobs) == 3
            best = np.sort(want)[::-1][:3]
            assert sorted(e.top_logprobs.values(), reverse=True) == pytest.approx(best, abs=1e-9)
            seen += 1
    assert seen == 20


def test_bad_requests_are_refused_before_taking_a_slot(model):
    batch = Batch(model, max_batch=2)
    with pytest.raises(UnknownCharactersError, match="\u2603"):
        batch.admit("snow\u2603man", GenerationOptions())
    with pytest.raises(ValueError, match="empty"):
        batch.admit("\u2603", GenerationOptions(), unknown="skip")
    with pytest.raises(ValueError, match="logprobs"):
        batch.admit("A", GenerationOptions(), logprobs=21)
    with pytest.raises(ValueError, match="one seed"):
        batch.admit("A", GenerationOptions(seed=[1, 2]))
    with pytest.raises(ValueError, match="max_batch"):
        Batch(model, max_batch=0)
    with pytest.raises(ValueError, match="prefill"):
        Batch(model, prefill=0)
    assert batch.active == 0 and batch.step() == []
    slot = batch.admit("snow\u2603man", GenerationOptions(max_length=1, seed=2), unknown="skip")
    texts = [e.text for e in batch.step() + batch.step() + batch.step() + batch.step() + batch.step()
             + batch.step() + batch.step() + batch.step()]
    assert batch.active == 0 and slot >= 0
    assert "".join(texts) == Generator(model, GenerationOptions(max_length=1, seed=2)).generate("snowman")[0]
