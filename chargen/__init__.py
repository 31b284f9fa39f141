"""chargen: a character-level GRU text generator (train in torch, run with onnxruntime)."""

__version__ = "0.1.0"
