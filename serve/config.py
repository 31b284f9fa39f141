"""The server's settings, checked where they are made: ServeConfig (limits, key, CORS, timings)
and the names of the served models (`--model NAME=PATH`, or the file's stem).

Imports nothing of the web stack, so `gen serve` checks its options before it needs it.

    config = ServeConfig(max_batch=64, max_queue=256)      # ConfigError where a value is out of range
    model_names(["runs/a.onnx", "q8=runs/a-int8.onnx"])     # [("a", "runs/a.onnx"), ("q8", "runs/a-int8.onnx")]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A setting out of range; the message names the `gen serve` option and what it may be."""


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one server, the same for every model it serves (each model gets its own
    max_batch slots and max_queue places)."""

    max_batch: int = 64
    max_queue: int = 256
    max_chars: int = 4096  # prompt + max_tokens, per choice
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    grace: float = 10.0  # seconds running requests get to finish after SIGTERM
    max_body: int = 1 << 20  # bytes of a request body
    flush_interval: float = 0.025  # a stream sends what it has at most this often
    keepalive: float = 2.0  # seconds between ': keep-alive' comments while a stream waits
    model_id: str | None = None  # the name of a single model given without one (default: the file's stem)

    def __post_init__(self):
        for option, value, low in (("--max-batch", self.max_batch, 1), ("--max-queue", self.max_queue, 0),
                                   ("--max-chars", self.max_chars, 2), ("max_body", self.max_body, 1)):
            if not _is_int(value) or value < low:
                raise ConfigError(f"{option} must be an integer >= {low}, not {value!r}"
                                  if not _is_int(value) else f"{option} must be >= {low}, not {value}")
        for option, value, low in (("--grace", self.grace, 0.0), ("flush_interval", self.flush_interval, 0.0),
                                   ("keepalive", self.keepalive, 0.001)):
            if not _is_number(value) or not value >= low:
                raise ConfigError(f"{option} must be >= {low:g}, not {value}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            raise ConfigError("--api-key must not be empty (leave it out to serve without a key)")
        if isinstance(self.cors_origins, str) or not all(isinstance(o, str) and o for o in self.cors_origins):
            raise ConfigError(f"--cors-origin must be origins such as http://localhost:3000 (or *), "
                              f"not {self.cors_origins!r}")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        if self.model_id is not None:
            check_name(self.model_id)


def check_port(port: int) -> int:
    if not _is_int(port) or not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535], not {port}")
    return port


def check_name(name: str) -> str:
    """A served name is what clients send as `model` and read in /v1/models: any printable
    text without spaces at its ends (a file's stem, as a rule)."""
    if not isinstance(name, str) or not name or not name.isprintable() or name != name.strip():
        raise ConfigError(f"the model name {name!r} is not usable as a `model` of the API: give it a "
                          "printable name with --model NAME=PATH")
    return name


def model_names(specs, model_id: str | None = None) -> list[tuple[str, str]]:
    """(name, path) for each `--model` value: `NAME=PATH`, or a path named by its file's stem.

    A value is NAME=PATH where the part before its first '=' has no '/' and the whole value
    is not an existing file; so `--model q8=runs/a.onnx` names the model q8, and a file
    called `a=b.onnx` is still a path (`./a=b.onnx` where it does not exist yet). model_id
    names a single model given without a name. Raises ConfigError for no models, an empty or
    unusable name, or two models of the same name."""
    out: list[tuple[str, str]] = []
    specs = [str(s) for s in specs]
    if not specs:
        raise ConfigError("give at least one --model")
    for spec in specs:
        name, path = _split(spec)
        if name is None:
            name = model_id if model_id is not None and len(specs) == 1 else Path(path).stem
        if not path:
            raise ConfigError(f"--model {spec!r}: no path after {name + '='!r}")
        check_name(name)
        out.append((name, path))
    seen: dict[str, str] = {}
    for name, path in out:
        if name in seen:
            raise ConfigError(f"two models are named {name!r} ({seen[name]} and {path}): name them apart "
                              f"with --model NAME=PATH")
        seen[name] = path
    return out


def _split(spec: str) -> tuple[str | None, str]:
    """(name, path) of `NAME=PATH`, or (None, spec) where spec is a path."""
    name, eq, path = spec.partition("=")
    if not eq or "/" in name or "\\" in name or Path(spec).is_file():
        return None, spec
    return name, path


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)
