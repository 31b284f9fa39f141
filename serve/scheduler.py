"""The scheduler: one thread owns the runtime's Batch and steps every active request in it.

    requests (asyncio loop)                     stepping thread (owns the Batch)
    ------------------------                    --------------------------------
    scheduler.submit(jobs)  -> admission queue  -> admitted into free slots between steps
                                                   batch.step(): every slot advances one character;
    job.take()              <- job.pending         each event is appended to its job's pending list
    job.ready()             <- at most ONE loop.call_soon_threadsafe per step, for the jobs that
                               finished or asked to be woken (job.notify)
    scheduler.cancel(jobs)  -> a queued job leaves the queue at once; a running one's slot is
                               released before the next step (so within one step)

The loop does no work per step and character: a stream wakes on its own flush timer and
takes what its jobs gathered (job.take()); it sets job.notify only where it would otherwise
wait for nothing (before the first character; when a timer found nothing new). A request
that waits for its whole text sleeps until its jobs finish. The event loop and the step share
the GIL, so less Python per step on the loop is more steps per second.

A Job is one choice of one request: one slot. The queue is bounded: submit() raises
QueueFull where the jobs would not fit (running + waiting <= max_batch + max_queue), and
Draining once stop_admitting() was called (SIGTERM). The Batch is not thread-safe, and
nothing but this thread touches it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

log = logging.getLogger("chargen.serve")


class QueueFull(Exception):
    """No room in the admission queue (HTTP 429)."""


class Draining(Exception):
    """The server stopped admitting requests (HTTP 503)."""


class Job:
    """One choice of a request: a prompt, its options, and where its events go.

    The stepping thread appends the job's SlotEvents to job.pending (in order) and calls
    ready() on the loop when the job finished, or when job.notify was set; fail(message)
    runs on the loop if the job could not be admitted (a bug: requests are checked before
    they are submitted) or the step failed."""

    __slots__ = ("prompt", "options", "unknown", "logprobs", "ready", "fail", "slot", "state", "submitted",
                 "pending", "notify", "first")

    def __init__(self, prompt: str, options, *, unknown: str = "error", logprobs: int = 0,
                 ready: Callable[[], None], fail: Callable[[str], None], notify: bool = True):
        self.prompt = prompt
        self.options = options
        self.unknown = unknown
        self.logprobs = logprobs
        self.ready = ready
        self.fail = fail
        self.slot: int | None = None
        self.state = "new"  # new -> queued -> running -> done | cancelled
        self.submitted = 0.0
        self.pending: list = []  # SlotEvents not taken yet (appended by the thread only)
        self.notify = notify  # wake the loop at the next event
        self.first = 0.0  # when the first character came (perf_counter)

    def take(self) -> list:
        """The events gathered since the last take() (safe beside the thread's appends)."""
        p = self.pending
        n = len(p)
        if not n:
            return []
        events = p[:n]
        del p[:n]
        return events


class Scheduler:
    def __init__(self, batch, loop, *, max_queue: int, metrics=None):
        self.batch = batch
        self.capacity = batch.capacity
        self.max_queue = max_queue
        self.metrics = metrics
        self._loop = loop
        self._cond = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._cancels: list[Job] = []
        self._inflight = 0  # queued + running jobs (under _cond)
        self._running = 0  # jobs holding a slot (written by the thread only)
        self._stop = False
        self._admitting = True
        self._slots: dict[int, Job] = {}  # slot -> job (the thread's)
        self._thread = threading.Thread(target=self._run, name="chargen-serve-step", daemon=True)
        self.error: BaseException | None = None  # what stopped the thread, if it died

    # ------------------------------------------------------------ any thread
    def start(self) -> None:
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return self._running

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, jobs: list[Job]) -> None:
        """Queue the jobs of one request, all or none."""
        now = time.perf_counter()
        with self._cond:
            if not self._admitting or self._stop:
                raise Draining()
            if self._inflight + len(jobs) > self.capacity + self.max_queue:
                raise QueueFull()
            for job in jobs:
                job.state = "queued"
                job.submitted = now
                self._queue.append(job)
            self._inflight += len(jobs)
            if self.metrics:
                self.metrics.queue_depth.set(len(self._queue))
            self._cond.notify()

    def cancel(self, jobs) -> None:
        """The client went away: a queued job leaves the queue now, a running one's slot is
        released before the next step. Jobs already done are left alone."""
        with self._cond:
            notify = False
            for job in jobs:
                if job.state == "queued":
                    try:
                        self._queue.remove(job)
                    except ValueError:
                        pass
                    job.state = "cancelled"
                    self._inflight -= 1
                elif job.state == "running":
                    job.state = "cancelled"
                    self._cancels.append(job)
                    notify = True
            if self.metrics:
                self.metrics.queue_depth.set(len(self._queue))
            if notify:
                self._cond.notify()

    def stop_admitting(self) -> None:
        with self._cond:
            self._admitting = False

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread: every job still queued or running is dropped (its slot released)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ------------------------------------------------------------ the stepping thread
    def _run(self) -> None:
        try:
            self._loop_steps()
        except BaseException as e:  # a bug or a failing model: every waiting request must learn of it
            self.error = e
            log.exception("the stepping thread stopped")
            with self._cond:
                self._admitting = False
                dropped = list(self._queue) + list(self._slots.values())
                self._queue.clear()
                self._inflight = 0
            msg = f"the server's step failed: {type(e).__name__}"
            self._call(lambda: [job.fail(msg) for job in dropped])

    def _call(self, fn, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _loop_steps(self) -> None:
        batch = self.batch
        metrics = self.metrics
        slots = self._slots
        cond = self._cond
        perf = time.perf_counter
        while True:
            admit: list[Job] = []
            with cond:
                while not self._stop and not self._cancels and not slots and not self._queue:
                    cond.wait()
                if self._stop:
                    for job in slots.values():
                        batch.release(job.slot)
                    slots.clear()
                    self._queue.clear()
                    self._inflight = 0
                    self._running = 0
                    return
                cancels, self._cancels = self._cancels, []
                done = 0
                for job in cancels:
                    if job.slot is not None and slots.pop(job.slot, None) is not None:
                        batch.release(job.slot)
                        done += 1
                free = self.capacity - len(slots)
                while free > 0 and self._queue:
                    job = self._queue.popleft()
                    job.state = "running"
                    admit.append(job)
                    free -= 1
                self._inflight -= done
            failed = []
            for job in admit:
                try:
                    job.slot = batch.admit(job.prompt, job.options, unknown=job.unknown, logprobs=job.logprobs)
                except Exception as e:  # checked before submit, so this is a bug; tell the client
                    log.error("admitting a request failed: %s: %s", type(e).__name__, e)
                    failed.append((job, f"{type(e).__name__}: {e}"))
                    continue
                slots[job.slot] = job
            if failed:
                with cond:
                    self._inflight -= len(failed)
                self._call(_fail_all, failed)
            self._running = len(slots)
            if not slots:
                if metrics:
                    metrics.active_slots.set(0)
                    metrics.queue_depth.set(len(self._queue))
                continue

            t0 = perf()
            events = batch.step()
            t1 = perf()

            wake: list[Job] = []
            finished = 0
            chars = 0
            for ev in events:
                job = slots.get(ev.slot)
                if job is None:
                    continue
                job.pending.append(ev)
                if ev.text:
                    chars += 1
                    if not job.first:
                        job.first = t1
                        if metrics:
                            metrics.ttfc_seconds.observe(t1 - job.submitted)
                if ev.finish is not None:
                    del slots[ev.slot]
                    finished += 1
                    wake.append(job)
                elif job.notify:
                    job.notify = False
                    wake.append(job)
            if finished:
                with cond:
                    for job in wake:
                        if job.state == "running" and job.slot not in slots:
                            job.state = "done"
                    self._inflight -= finished
            self._running = len(slots)
            if wake:
                self._call(_wake, wake)
            if metrics:
                metrics.step_seconds.observe(t1 - t0)
                if chars:
                    metrics.characters.inc(chars)
                metrics.active_slots.set(len(slots))
                metrics.queue_depth.set(len(self._queue))


def _wake(jobs) -> None:
    """On the loop: the jobs that finished or asked to be woken."""
    for job in jobs:
        if job.state == "cancelled":
            continue
        try:
            job.ready()
        except Exception:
            log.exception("waking a request failed")


def _fail_all(failed) -> None:
    for job, message in failed:
        try:
            job.fail(message)
        except Exception:
            log.exception("failing a request failed")
