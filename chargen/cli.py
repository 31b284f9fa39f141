"""`gen`: the command line. It parses arguments and calls train/, export/ or runtime/.

Each command imports its stage lazily, so `gen sample` never loads torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="chargen: train a character-level GRU, export it to ONNX, sample from it anywhere.",
)


def _version(value: bool):
    if value:
        from chargen import __version__

        typer.echo(f"chargen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
):
    """chargen: train a character-level GRU, export it to ONNX, sample from it anywhere."""


def fail(message: str) -> None:
    """One line on stderr, exit status 1: how every expected error ends."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


# ---------------------------------------------------------------- train
@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(help="UTF-8 text file, or folder of .txt files. Default: tiny-shakespeare (downloaded once).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder for checkpoints, metrics.jsonl and loss.png. Default: runs/<corpus name>.")] = None,
    preset: Annotated[str, typer.Option(help="Starting recipe: 'tutorial' (the TF tutorial's model, exactly) or 'best' (the README's quality recipe). Options below override it.")] = "tutorial",
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the training text. [tutorial: 10]")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps (overrides --epochs if fewer).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Sequences per step. [64]")] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="Characters per training sequence. [100]")] = None,
    embedding_dim: Annotated[Optional[int], typer.Option(help="Embedding width. [256]")] = None,
    hidden_size: Annotated[Optional[int], typer.Option(help="GRU units per layer. [1024]")] = None,
    layers: Annotated[Optional[int], typer.Option(help="GRU layers. [1]")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout on GRU outputs. [0.0]")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate. [1e-3]")] = None,
    min_lr: Annotated[Optional[float], typer.Option(help="Final learning rate of the cosine schedule. [1e-4]")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="Learning-rate schedule: constant or cosine (with warm-up). [constant]")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(help="Linear warm-up steps. [0]")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW weight decay. [0.0]")] = None,
    grad_clip: Annotated[Optional[float], typer.Option(help="Clip the gradient norm to this. [5.0]")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="The last fraction of the text that validates. [0.1]")] = None,
    eval_interval: Annotated[Optional[int], typer.Option(help="Evaluate, sample and checkpoint every N steps. [250]")] = None,
    log_interval: Annotated[Optional[int], typer.Option(help="Write a metrics line every N steps. [10]")] = None,
    sample_length: Annotated[Optional[int], typer.Option(help="Characters sampled at each evaluation. [200]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed: same seed, same run. [1337]")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda. [auto]")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
):
    """Train a character-level GRU on a text (corpus -> checkpoint)."""
    from chargen.train.loop import TrainingError, run_training

    overrides = dict(
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, seq_len=seq_len,
        embedding_dim=embedding_dim, hidden_size=hidden_size, layers=layers, dropout=dropout,
        lr=lr, min_lr=min_lr, schedule=schedule, warmup_steps=warmup_steps,
        weight_decay=weight_decay, grad_clip=grad_clip, val_fraction=val_fraction,
        eval_interval=eval_interval, log_interval=log_interval, sample_length=sample_length,
        seed=seed, device=device,
    )
    try:
        result = run_training(data=data, out=out, preset=preset, overrides=overrides, resume=resume)
    except TrainingError as e:
        fail(str(e))
    except KeyboardInterrupt:
        typer.echo("interrupted; the last checkpoint on disk is intact (resume with --resume)", err=True)
        raise typer.Exit(130)
    if result.interrupted:
        raise typer.Exit(130)


# ---------------------------------------------------------------- export, eval (chargen.export)


# ---------------------------------------------------------------- sample, bench (chargen.runtime)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
