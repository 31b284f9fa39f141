"""chargen.runtime: load a chargen .onnx model and generate text. Never imports torch.

Heavy pieces (onnxruntime, the compiled sampler) load on first use, so that
training code can import the contracts without them.
"""

from chargen.runtime.contract import (  # noqa: F401
    FORMAT_VERSION,
    UnknownCharactersError,
    Vocab,
)

_LAZY = {
    "Sampler": "chargen.runtime._sampler",
    "SamplerError": "chargen.runtime._sampler",
    "Model": "chargen.runtime.model",
    "ModelError": "chargen.runtime.model",
    "DeviceError": "chargen.runtime.model",
    "SlowModelWarning": "chargen.runtime.model",
    "EngineError": "chargen.runtime.engine",
    "Generator": "chargen.runtime.generator",
    "GenerationOptions": "chargen.runtime.generator",
    "GeneratorState": "chargen.runtime.generator",
    "Batch": "chargen.runtime.batch",
    "BatchFull": "chargen.runtime.batch",
    "SlotEvent": "chargen.runtime.batch",
    "StepCore": "chargen.runtime.core",
    "StopMatcher": "chargen.runtime.stops",
}

__all__ = ["FORMAT_VERSION", "UnknownCharactersError", "Vocab", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chargen.runtime' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
