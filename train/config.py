"""Training hyperparameters: one dataclass the checkpoint carries, and named presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


class ConfigError(ValueError):
    """A hyperparameter that makes no sense; the message is one line."""


@dataclass
class TrainConfig:
    # model
    embedding_dim: int = 256
    hidden_size: int = 1024
    layers: int = 1
    dropout: float = 0.0
    weight_drop: float = 0.0
    input_dropout: float = 0.0
    # data
    batch_size: int = 64
    seq_len: int = 100
    val_fraction: float = 0.1
    # truncated BPTT over contiguous text: each of the batch's streams carries its hidden
    # state from one batch to the next (zeroed with probability state_reset at each)
    stateful: bool = False
    state_reset: float = 0.0
    # optimisation
    epochs: int = 10
    max_steps: int | None = None
    lr: float = 1e-3
    min_lr: float = 1e-4  # cosine decays to this
    schedule: str = "constant"  # constant | cosine
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off); evaluated, saved and exported
    # bookkeeping
    eval_interval: int = 250  # steps; also the checkpoint interval
    log_interval: int = 10
    sample_length: int = 200
    seed: int = 1337
    device: str = "auto"
    # the GEMMs' arithmetic: bf16 = bfloat16 products with float32 accumulation (CUDA:
    # autocast; CPU: where it multiplies bf16 natively, AVX512_BF16 or AMX); auto picks it
    # where the device has it
    precision: str = "auto"

    def validate(self) -> None:
        def need(ok: bool, message: str):
            if not ok:
                raise ConfigError(message)

        for name in ("embedding_dim", "hidden_size", "layers", "batch_size", "seq_len", "epochs",
                     "eval_interval", "log_interval"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1,
                 f"--{name.replace('_', '-')} must be a whole number >= 1, got {value}")
        need(self.max_steps is None or self.max_steps >= 1, f"--max-steps must be >= 1, got {self.max_steps}")
        need(0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1), got {self.dropout}")
        need(0.0 <= self.weight_drop < 1.0, f"--weight-drop must be in [0, 1), got {self.weight_drop}")
        need(0.0 <= self.input_dropout < 1.0, f"--input-dropout must be in [0, 1), got {self.input_dropout}")
        need(0.0 <= self.state_reset <= 1.0, f"--state-reset must be in [0, 1], got {self.state_reset}")
        need(self.state_reset == 0.0 or self.stateful, "--state-reset needs --stateful")
        need(0.0 < self.val_fraction < 1.0, f"--val-fraction must be inside (0, 1), got {self.val_fraction}")
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive number, got {self.lr}")
        need(0.0 <= self.min_lr <= self.lr, f"--min-lr must be in [0, lr], got {self.min_lr}")
        need(self.schedule in ("constant", "cosine"), f"--schedule must be constant or cosine, got {self.schedule!r}")
        need(self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        need(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        need(0.0 <= self.ema < 1.0, f"--ema must be in [0, 1) (a decay such as 0.998; 0 is off), got {self.ema}")
        need(self.grad_clip > 0, f"--grad-clip must be > 0, got {self.grad_clip}")
        need(self.sample_length >= 0, f"--sample-length must be >= 0, got {self.sample_length}")
        need(self.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {self.device!r}")
        need(self.precision in ("auto", "fp32", "bf16"), f"--precision must be auto, fp32 or bf16, got {self.precision!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Settings that define the model's shape: a checkpoint cannot continue with others.
MODEL_FIELDS = ("embedding_dim", "hidden_size", "layers")

PRESETS: dict[str, dict] = {
    # The TensorFlow tutorial's model and recipe, exactly: 4,021,569 parameters on tiny-shakespeare.
    "tutorial": {},
    # The best recipe measured on 2 CPU cores within an hour (bf16 GEMMs, AVX512_BF16):
    # val_loss 1.3968, windowed 1.4330, 4,741,085 parameters, in 49 minutes (README, Results).
    "best": dict(
        embedding_dim=128,
        hidden_size=700,
        layers=2,
        dropout=0.3,
        input_dropout=0.1,
        ema=0.998,
        epochs=32,
        eval_interval=312,
        lr=2e-3,
        min_lr=1e-4,
        schedule="cosine",
        warmup_steps=100,
        weight_decay=0.0,
    ),
}


def make_config(preset: str = "tutorial", **overrides) -> TrainConfig:
    """The preset's settings with every override that is not None applied."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    config = TrainConfig(**PRESETS[preset])
    for name, value in overrides.items():
        if value is not None:
            setattr(config, name, value)
    config.validate()
    return config
