"""Prometheus metrics of one server (its own CollectorRegistry, so apps in one process do not mix),
every series labelled by `model` (the served name).

    metrics = Metrics()
    m = metrics.model("tiny", capacity=64)   # that model's series: m.characters.inc(), m.active_slots.set(3)
    metrics.requests.labels(model="tiny", status="200").inc()

A request that names no served model (bad JSON, an unknown `model`) counts under model="".
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# a step is ~0.1 ms (tiny model, batch 1) to ~50 ms (tutorial size, batch 64, a slow CPU)
_STEP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_TTFC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ModelMetrics:
    """One model's series (the labelled children), as its Scheduler and requests update them."""

    def __init__(self, metrics: "Metrics", name: str, capacity: int):
        self.name = name
        self.characters = metrics.characters.labels(name)
        self.prompt_characters = metrics.prompt_characters.labels(name)
        self.active_slots = metrics.active_slots.labels(name)
        self.capacity = metrics.capacity.labels(name)
        self.queue_depth = metrics.queue_depth.labels(name)
        self.step_seconds = metrics.step_seconds.labels(name)
        self.ttfc_seconds = metrics.ttfc_seconds.labels(name)
        self._requests = metrics.requests
        self.capacity.set(capacity)
        self.active_slots.set(0)
        self.queue_depth.set(0)

    def request(self, status: str) -> None:
        self._requests.labels(self.name, status).inc()


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("chargen_requests", "Completion requests answered, by model and HTTP status.",
                                ["model", "status"], registry=r)
        self.characters = Counter("chargen_generated_characters", "Characters generated (all slots).", ["model"],
                                  registry=r)
        self.prompt_characters = Counter("chargen_prompt_characters", "Prompt characters admitted.", ["model"],
                                         registry=r)
        self.active_slots = Gauge("chargen_active_slots", "Slots of the batch in use.", ["model"], registry=r)
        self.capacity = Gauge("chargen_slots", "Slots of the batch (--max-batch).", ["model"], registry=r)
        self.queue_depth = Gauge("chargen_queue_depth", "Choices waiting for a slot.", ["model"], registry=r)
        self.step_seconds = Histogram("chargen_step_seconds", "Time of one batched step (every active slot "
                                      "advances one character).", ["model"], buckets=_STEP_BUCKETS, registry=r)
        self.ttfc_seconds = Histogram("chargen_time_to_first_character_seconds", "From a request's arrival to "
                                      "its first generated character.", ["model"], buckets=_TTFC_BUCKETS,
                                      registry=r)

    def model(self, name: str, capacity: int) -> ModelMetrics:
        return ModelMetrics(self, name, capacity)

    def request(self, status: str, model: str = "") -> None:
        """A request answered with `status`; model "" where it named no served model."""
        self.requests.labels(model, status).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
