"""Prometheus metrics of one server (its own CollectorRegistry, so apps in one process do not mix)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# a step is ~0.1 ms (tiny model, batch 1) to ~50 ms (tutorial size, batch 64, a slow CPU)
_STEP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_TTFC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, capacity: int = 0):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("chargen_requests", "Completion requests answered, by HTTP status.",
                                ["status"], registry=r)
        self.characters = Counter("chargen_generated_characters", "Characters generated (all slots).", registry=r)
        self.prompt_characters = Counter("chargen_prompt_characters", "Prompt characters admitted.", registry=r)
        self.active_slots = Gauge("chargen_active_slots", "Slots of the batch in use.", registry=r)
        self.capacity = Gauge("chargen_slots", "Slots of the batch (--max-batch).", registry=r)
        self.queue_depth = Gauge("chargen_queue_depth", "Choices waiting for a slot.", registry=r)
        self.step_seconds = Histogram("chargen_step_seconds", "Time of one batched step (every active slot "
                                      "advances one character).", buckets=_STEP_BUCKETS, registry=r)
        self.ttfc_seconds = Histogram("chargen_time_to_first_character_seconds", "From a request's arrival to "
                                      "its first generated character.", buckets=_TTFC_BUCKETS, registry=r)
        self.capacity.set(capacity)

    def render(self) -> bytes:
        return generate_latest(self.registry)
