"""The Scheduler on its own (serve/scheduler.py, no HTTP): a real Batch of the tiny model, its
stepping thread, jobs submitted from an asyncio loop. Each job's characters are its Generator's
for that seed, however many run beside it; the queue is bounded, all or none; a cancelled job
leaves the queue or its slot; stop_admitting refuses; a failing step fails every job."""

from __future__ import annotations

import asyncio

import pytest

from chargen.runtime import GenerationOptions, Model
from chargen.runtime.batch import Batch
from chargen.serve.metrics import Metrics
from chargen.serve.scheduler import Draining, Job, QueueFull, Scheduler

LONG = 10**9  # characters: a job that runs until it is cancelled


@pytest.fixture(scope="module")
def model(model_path):
    return Model.load(model_path, device="cpu", threads=1)


def job(prompt: str, loop_done: dict, key, **options) -> Job:
    """A Job whose ready() and fail() resolve loop_done[key] (a future on the running loop)."""
    fut = loop_done[key] = asyncio.get_running_loop().create_future()

    def ready():
        if not fut.done():
            fut.set_result("ready")

    def fail(message):
        if not fut.done():
            fut.set_result("failed: " + message)

    return Job(prompt, GenerationOptions(**options), ready=ready, fail=fail, notify=False)


def text_of(j: Job) -> tuple[str, str | None]:
    events = j.take()
    return "".join(e.text for e in events), (events[-1].finish if events else None)


async def until(predicate, timeout: float = 20.0) -> None:
    """Wait for a state the stepping thread reaches (not a duration: the timeout only ends a hang)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_each_job_is_its_generator_whatever_runs_beside_it(model):
    metrics = Metrics()
    cases = [("ROMEO: ", dict(seed=s, max_length=40 + 7 * s, temperature=0.9, top_k=0 if s % 2 else 20))
             for s in range(12)] + [("JULIET: ", dict(seed=99, max_length=30, stop="e"))]
    want = []
    for prompt, options in cases:
        g = model.generator(GenerationOptions(**options))
        want.append(g.generate(prompt)[0])

    async def main():
        sched = Scheduler(Batch(model, max_batch=4), asyncio.get_running_loop(), max_queue=64,
                          metrics=metrics.model("tiny", 4))
        sched.start()
        done = {}
        try:
            jobs = [job(p, done, i, **o) for i, (p, o) in enumerate(cases)]
            for j in jobs:  # 13 jobs, 4 slots: most wait in the queue, then join between steps
                sched.submit([j])
            assert await asyncio.gather(*done.values()) == ["ready"] * len(jobs)
            await until(lambda: sched.inflight == 0 and sched.running == 0)
            return [text_of(j) for j in jobs], [j.state for j in jobs]
        finally:
            sched.close()

    texts, states = run(main())
    for (text, finish), w, (_, options) in zip(texts, want, cases):
        assert text == w
        assert finish == ("stop" if w.endswith("e") and options.get("stop") else "length")
    assert states == ["done"] * len(cases)
    chars = metrics.registry.get_sample_value("chargen_generated_characters_total", {"model": "tiny"})
    assert chars == sum(len(w) for w in want)
    assert metrics.registry.get_sample_value("chargen_time_to_first_character_seconds_count", {"model": "tiny"}) == 13
    assert metrics.registry.get_sample_value("chargen_active_slots", {"model": "tiny"}) == 0


def test_the_queue_is_bounded_all_or_none_and_cancels_free_places(model):
    async def main():
        sched = Scheduler(Batch(model, max_batch=1), asyncio.get_running_loop(), max_queue=1)
        sched.start()
        done = {}
        try:
            running = job("A", done, "running", max_length=LONG)
            sched.submit([running])
            await until(lambda: sched.running == 1)
            queued = job("B", done, "queued", max_length=5)
            sched.submit([queued])
            assert (sched.inflight, sched.queued) == (2, 1)
            with pytest.raises(QueueFull):
                sched.submit([job("C", done, "c", max_length=5)])
            assert (sched.inflight, sched.queued) == (2, 1)
            # the queued job leaves the queue at once; then two fit again, but not three
            sched.cancel([queued])
            assert (sched.inflight, sched.queued, queued.state) == (1, 0, "cancelled")
            with pytest.raises(QueueFull):
                sched.submit([job("D", done, "d1", max_length=5), job("E", done, "e1", max_length=5)])
            assert (sched.inflight, sched.queued) == (1, 0)  # none of the two was queued
            # the running job's slot is released before the next step; the queue moves on
            short = job("F", done, "short", max_length=5)
            sched.submit([short])
            sched.cancel([running])
            assert await done["short"] == "ready"
            assert text_of(short)[1] == "length"
            await until(lambda: sched.inflight == 0 and sched.running == 0)
            assert running.state == "cancelled" and not done["running"].done()  # a cancelled job is not woken
            sched.cancel([short])  # a finished job is left alone
            assert short.state == "done" and sched.inflight == 0
        finally:
            sched.close()

    run(main())


def test_stop_admitting_and_close(model):
    async def main():
        sched = Scheduler(Batch(model, max_batch=2), asyncio.get_running_loop(), max_queue=2)
        sched.start()
        done = {}
        running = job("A", done, "a", max_length=LONG)
        sched.submit([running])
        await until(lambda: sched.running == 1)
        sched.stop_admitting()
        with pytest.raises(Draining):
            sched.submit([job("B", done, "b", max_length=5)])
        assert sched.alive and sched.running == 1  # what runs goes on
        sched.close()
        assert not sched.alive and sched.inflight == 0 and sched.running == 0

    run(main())


class FailingBatch(Batch):
    """A Batch whose step raises once it ran `good` steps: the model failing mid-run."""

    def __init__(self, *args, good: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.good = good

    def step(self):
        if self.good == 0:
            raise RuntimeError("the step broke")
        self.good -= 1
        return super().step()


def test_a_failing_step_fails_every_job_and_the_scheduler_says_so(model):
    async def main():
        sched = Scheduler(FailingBatch(model, max_batch=1, good=3), asyncio.get_running_loop(), max_queue=4)
        sched.start()
        done = {}
        try:
            sched.submit([job("A", done, "running", max_length=LONG)])
            sched.submit([job("B", done, "queued", max_length=LONG)])
            results = await asyncio.gather(*done.values())
            await until(lambda: not sched.alive)
            return results, sched
        finally:
            sched.close()

    results, sched = run(main())
    assert results == ["failed: the server's step failed: RuntimeError"] * 2
    assert isinstance(sched.error, RuntimeError) and sched.inflight == 0
    with pytest.raises(Draining):  # nothing is admitted any more
        sched.submit([Job("A", GenerationOptions(), ready=lambda: None, fail=lambda m: None)])
