"""`gen`: the command line. It parses arguments and calls train/, export/ or runtime/.

Each command imports its stage lazily, so `gen sample` never loads torch.
"""

from __future__ import annotations

import contextlib
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from chargen.runtime.contract import ENGINES, INT8_KERNEL_OPS
from chargen.runtime.model import DEVICES
from chargen.train.config import PRESETS

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


# The modules a stage imports that only an extra brings (pyproject.toml), by extra.
_EXTRA_OF = {"torch": "train", "onnx": "train", "onnx_ir": "train", "matplotlib": "train", "onnxruntime": "cpu"}


@contextlib.contextmanager
def _needs_extras():
    """A stage imported without its extra ends in one line naming the extra to install."""
    try:
        yield
    except ModuleNotFoundError as e:
        extra = _EXTRA_OF.get((e.name or "").partition(".")[0])
        if extra is None:
            raise
        gpu = ' (or "chargen[gpu]" for NVIDIA GPUs)' if extra == "cpu" else ""
        fail(f'{e.name} is not installed: pip install "chargen[{extra}]"{gpu}')


def _choices(name: str, values) -> type[Enum]:
    """A str Enum of the values: typer lists them in --help and refuses any other (usage error, exit 2)."""
    return Enum(name, {v: v for v in values}, type=str)


def _value(choice: Optional[Enum]) -> Optional[str]:
    return None if choice is None else choice.value


# The choices of the options (the runtime's, the export's, training's), one Enum each.
Device = _choices("Device", DEVICES)
Engine = _choices("Engine", ENGINES)
Unknown = _choices("Unknown", ("error", "skip"))
Precision = _choices("Precision", ("fp32", "fp16", "int8"))
Int8Kernel = _choices("Int8Kernel", INT8_KERNEL_OPS)
Split = _choices("Split", ("val", "all"))
Preset = _choices("Preset", PRESETS)
Schedule = _choices("Schedule", ("constant", "cosine"))
TrainPrecision = _choices("TrainPrecision", ("auto", "fp32", "bf16"))


# ---------------------------------------------------------------- train
@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(help="UTF-8 text file, or folder of .txt files. Default: tiny-shakespeare (shipped with chargen).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder for checkpoints, metrics.jsonl and loss.png. Default: runs/<corpus name>.")] = None,
    preset: Annotated[Preset, typer.Option(help="Starting recipe: 'tutorial' (the TF tutorial's model, exactly) or 'best' (the README's quality recipe). Options below override it.")] = Preset("tutorial"),
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the training text. [tutorial: 10]")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps (overrides --epochs if fewer).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Sequences per step. [64]")] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="Characters per training sequence. [100]")] = None,
    embedding_dim: Annotated[Optional[int], typer.Option(help="Embedding width. [256]")] = None,
    hidden_size: Annotated[Optional[int], typer.Option(help="GRU units per layer. [1024]")] = None,
    layers: Annotated[Optional[int], typer.Option(help="GRU layers. [1]")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout on GRU outputs. [0.0]")] = None,
    weight_drop: Annotated[Optional[float], typer.Option(help="DropConnect on the recurrent weights: each step zeroes this fraction of W_hh. [0.0]")] = None,
    input_dropout: Annotated[Optional[float], typer.Option(help="Drop this fraction of input characters: the GRU sees a zero embedding there. [0.0]")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate. [1e-3]")] = None,
    min_lr: Annotated[Optional[float], typer.Option(help="Final learning rate of the cosine schedule. [1e-4]")] = None,
    schedule: Annotated[Optional[Schedule], typer.Option(help="Learning-rate schedule: cosine has a warm-up. [constant]")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(help="Linear warm-up steps. [0]")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW weight decay. [0.0]")] = None,
    grad_clip: Annotated[Optional[float], typer.Option(help="Clip the gradient norm to this. [5.0]")] = None,
    ema: Annotated[Optional[float], typer.Option(help="Keep an exponential moving average of the weights with this decay (e.g. 0.998) and evaluate, save and export it; 0 is off. [0.0]")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="The last fraction of the text that validates. [0.1]")] = None,
    stateful: Annotated[Optional[bool], typer.Option("--stateful/--no-stateful", help="Truncated BPTT: each sequence of a batch continues the text of the one before, and the hidden state carries over. [off]")] = None,
    state_reset: Annotated[Optional[float], typer.Option(help="With --stateful: the chance that a sequence starts from a zero state instead. [0.0]")] = None,
    eval_interval: Annotated[Optional[int], typer.Option(help="Evaluate, sample and checkpoint every N steps. [250]")] = None,
    log_interval: Annotated[Optional[int], typer.Option(help="Write a metrics line every N steps. [10]")] = None,
    sample_length: Annotated[Optional[int], typer.Option(help="Characters sampled at each evaluation. [200]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed: same seed, same run. [1337]")] = None,
    device: Annotated[Optional[Device], typer.Option(help="auto: CUDA if usable, else the CPU. [auto]")] = None,
    precision: Annotated[Optional[TrainPrecision], typer.Option(help="The GEMMs' arithmetic: fp32, or bf16 (bfloat16 products, float32 sums and state); auto = bf16 on CUDA and on CPUs that multiply bf16 natively (AVX512_BF16, AMX), else fp32. [auto]")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    stop_after: Annotated[Optional[int], typer.Option(help="Checkpoint and stop after this step, keeping the full run's schedule; continue later with --resume.")] = None,
):
    """Train a character-level GRU on a text (corpus -> checkpoint)."""
    with _needs_extras():
        from chargen.train.loop import TrainingError, run_training

    overrides = dict(
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, seq_len=seq_len,
        embedding_dim=embedding_dim, hidden_size=hidden_size, layers=layers, dropout=dropout, weight_drop=weight_drop,
        input_dropout=input_dropout,
        lr=lr, min_lr=min_lr, schedule=_value(schedule), warmup_steps=warmup_steps,
        weight_decay=weight_decay, grad_clip=grad_clip, ema=ema, val_fraction=val_fraction,
        stateful=stateful, state_reset=state_reset,
        eval_interval=eval_interval, log_interval=log_interval, sample_length=sample_length,
        seed=seed, device=_value(device), precision=_value(precision),
    )
    try:
        result = run_training(data=data, out=out, preset=preset.value, overrides=overrides, resume=resume,
                              stop_after=stop_after)
    except TrainingError as e:
        fail(str(e))
    except KeyboardInterrupt:
        typer.echo("interrupted; the last checkpoint on disk is intact (resume with --resume)", err=True)
        raise typer.Exit(130)
    if result.interrupted:
        raise typer.Exit(130)
    from chargen.train import distributed

    if distributed.launched_by_torchrun():
        # the run is over: checkpoints written and closed, the process group destroyed. torch's
        # gloo teardown at interpreter exit still aborted a rank now and then on a busy machine
        # ("terminate called without an active exception", SIGABRT), failing a finished run;
        # a rank of torchrun therefore leaves without the interpreter's teardown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


# ---------------------------------------------------------------- export, eval (chargen.export)
@app.command()
def export(
    output: Annotated[Path, typer.Argument(help="The .onnx file to write (its folder must exist).")],
    checkpoint: Annotated[Optional[Path], typer.Option(help="Checkpoint file or run folder. Default: the best checkpoint of the most recent run under runs/.")] = None,
    precision: Annotated[Precision, typer.Option(help="fp16: half the size; int8: a quarter (recurrent weights quantized).")] = Precision("fp32"),
    data: Annotated[Optional[Path], typer.Option(help="Text to check the export on (its validation split). Default: the checkpoint's corpus if found, else a pseudo-random sequence.")] = None,
    check_steps: Annotated[int, typer.Option(help="Teacher-forced steps of the parity check, per stream.")] = 1000,
    int8_kernel: Annotated[Optional[Int8Kernel], typer.Option(help="For --precision int8: dynamic (MatMulInteger, per-channel scales: full speed on any CPU and onnxruntime) or nbits (onnxruntime's MatMulNBits, per-block scales: 2-3x closer to fp32 in the logits; faster at batch 1 on AVX-512 VNNI CPUs, slower on AVX2-only ones; needs onnxruntime >= 1.22, >= 1.23 on ARM64). [dynamic]")] = None,
):
    """Export a checkpoint to a self-describing ONNX step graph, checked against torch first."""
    from chargen.runtime.contract import DEFAULT_INT8_KERNEL

    precision = precision.value
    if int8_kernel is not None and precision != "int8":
        fail(f"--int8-kernel is for --precision int8, not {precision}")
    int8_kernel = _value(int8_kernel) or DEFAULT_INT8_KERNEL
    if check_steps < 1000:
        fail(f"--check-steps must be at least 1000, got {check_steps}")
    from chargen.export.cli_support import print_export

    with _needs_extras():
        from chargen.export.onnx_export import ExportError, export_checkpoint

        import onnxruntime  # noqa: F401  (the export checks itself with it: cpu or gpu)

    from rich.console import Console

    console = Console(stderr=True)
    try:
        with _needs_extras(), console.status("exporting", spinner="dots") as status:
            result = export_checkpoint(
                output, checkpoint, precision, data=data, steps=check_steps, int8_kernel=int8_kernel,
                status=lambda msg: status.update(msg),
            )
    except ExportError as e:
        fail(str(e))
    print_export(result)


@app.command(name="eval")
def eval_(
    model: Annotated[Optional[Path], typer.Option(help="A chargen .onnx model (onnxruntime; no torch needed).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="A torch checkpoint file or run folder instead of --model.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="UTF-8 text file or folder of .txt files. Default: tiny-shakespeare.")] = None,
    split: Annotated[Split, typer.Option(help="val: the last --val-fraction of the text (as in training); all: the whole text.")] = Split("val"),
    val_fraction: Annotated[float, typer.Option(help="The fraction of the text that validates, as in training.")] = 0.1,
    unknown: Annotated[Unknown, typer.Option(help="Characters the model's vocabulary lacks: error, or skip them.")] = Unknown("error"),
):
    """Loss (nats/char) and bits per char of a model on a text: one stateful pass."""
    if (model is None) == (checkpoint is None):
        fail("give exactly one of --model FILE.onnx or --checkpoint PATH")
    split, unknown = split.value, unknown.value
    from chargen.export.cli_support import print_eval
    from chargen.export.evaluate import EvalError, evaluate_checkpoint, evaluate_onnx, load_eval_text, open_model

    try:
        if model is not None:
            onnx_model = open_model(model)  # chargen.runtime.Model; a bad model fails before the text is read
            text_name, text = load_eval_text(data, split, val_fraction)
            result = evaluate_onnx(onnx_model, text, text_name=text_name, unknown=unknown)
        else:
            with _needs_extras():
                from chargen.export.onnx_export import ExportError, load_checkpoint

            try:
                loaded = load_checkpoint(checkpoint)
                text_name, text = load_eval_text(data, split, val_fraction)
                from rich.console import Console

                with Console(stderr=True).status(f"evaluating {loaded[0]} (torch) on {len(text):,} characters"):
                    result = evaluate_checkpoint(loaded, text, text_name=text_name, unknown=unknown)
            except ExportError as e:
                fail(str(e))
    except EvalError as e:
        fail(str(e))
    print_eval(result)



# ---------------------------------------------------------------- sample, bench (chargen.runtime)
_MODEL_HELP = "The .onnx model written by `gen export` (it carries its own vocabulary and config)."


@contextlib.contextmanager
def _warnings_as_lines():
    """A SlowModelWarning becomes one 'warning: ...' line on stderr (not Python's two-line format)."""
    import warnings

    from chargen.runtime.model import SlowModelWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SlowModelWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, SlowModelWarning):
                    typer.echo(f"warning: {w.message}", err=True)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _load_model(path: Path, device: str, threads: Optional[int], engine: str = "auto", **options):
    """Model.load with every expected failure as a one-line error (EngineError is a ValueError)."""
    from chargen.runtime.model import DeviceError, Model, ModelError

    try:
        with _warnings_as_lines():
            return Model.load(path, device=device, threads=threads, engine=engine, **options)
    except (ModelError, DeviceError, ImportError, ValueError) as e:
        fail(str(e))


_ENGINE_HELP = ("Who runs the step: chargen is chargen's int8 step in C (int8 models on the CPU); auto: for each batch "
                "size, whichever measured faster on this machine (measured once, kept in the user cache; "
                "CHARGEN_NO_CALIBRATION=1: onnxruntime).")
_THREADS_HELP = ("Threads of the step: onnxruntime's intra-op threads, or the chargen int8 step's "
                 "(default: one per core, the fastest; 1 spares a busy machine).")


def _stdout_to_devnull() -> None:
    """Point file descriptor 1 at /dev/null, so the flush at exit cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def _quiet_broken_pipe() -> None:
    """The reader went away (`gen sample | head`): end quietly with status 0."""
    _stdout_to_devnull()
    raise typer.Exit(0)


def _unescape(text: str) -> str:
    """\\n, \\t and \\\\ as newline, tab and backslash (typing a newline in a shell is awkward)."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _engine_words(model, engine: str, batch_size: int) -> str:
    """Who runs the step, in words: 'onnxruntime' or chargen's step with the kernel that runs
    this batch size and its threads; then why (pinned, the only engine, or auto's measurement)."""
    choice = model.choice(batch_size)
    why = choice.describe().split(" ", 1)[1]
    if engine != "chargen":
        return f"onnxruntime {why}"
    threads = model.int8_step.threads or "one per CPU"
    return f"chargen's int8 step ({model.int8_step.kernel_for(batch_size)} kernel, {threads} thread(s)) {why}"


@app.command()
def sample(
    model: Annotated[Path, typer.Option("--model", "-m", help=_MODEL_HELP)],
    start: Annotated[Optional[str], typer.Option(help="Start string (the prompt). Default: a newline, or the model's first symbol.")] = None,
    length: Annotated[int, typer.Option(help="Characters to generate after the start string, per sample.")] = 1000,
    temperature: Annotated[float, typer.Option(help="Sampling temperature: 1 as trained, lower is safer, 0 is greedy (argmax).")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample from the k most likely characters only (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling: the smallest set of characters whose probability reaches p, in (0, 1] (1: all).")] = 1.0,
    seed: Annotated[Optional[int], typer.Option(help="Random seed: same model, options and seed, same text. Default: a fresh one.")] = None,
    num_samples: Annotated[int, typer.Option(help="Samples to generate together as one batch; printed one after another.")] = 1,
    stop: Annotated[Optional[list[str]], typer.Option(help="End a sample once it has generated this text (repeat for several; \\n and \\t are read as newline and tab).")] = None,
    device: Annotated[Device, typer.Option(help="auto: CUDA if usable, else the CPU.")] = Device("auto"),
    unknown: Annotated[Unknown, typer.Option(help="Characters of the start string that the model does not know: error, or skip them.")] = Unknown("error"),
    threads: Annotated[Optional[int], typer.Option(help=_THREADS_HELP)] = None,
    engine: Annotated[Engine, typer.Option(help=_ENGINE_HELP)] = Engine("auto"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say on stderr which device and engine run the step.")] = False,
):
    """Generate text from an exported model (ONNX + C sampler; no torch)."""
    from chargen.runtime.contract import UnknownCharactersError
    from chargen.runtime.generator import GenerationOptions, Generator

    device, unknown, engine = device.value, unknown.value, engine.value

    if length < 0:
        fail(f"--length must be >= 0, not {length}")
    if num_samples < 1:
        fail(f"--num-samples must be >= 1, not {num_samples}")
    try:
        options = GenerationOptions(
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, max_length=length,
            stop=tuple(_unescape(s) for s in stop) if stop else None,
        )
    except ValueError as e:
        fail(str(e))
    m = _load_model(model, device, threads, engine)
    if start is None:
        start = "\n" if "\n" in m.vocab else m.vocab.chars[0]
    generator = Generator(m, options, batch_size=num_samples)
    if verbose:
        typer.echo(f"{model}: {m.precision}, L={m.num_layers} H={m.hidden_size} V={m.vocab_size}; device {m.device}; "
                   f"engine {_engine_words(m, generator.engine, num_samples)}", err=True)
    try:
        generator.feed(start, unknown=unknown)
    except (UnknownCharactersError, ValueError) as e:
        fail(str(e))
    shown = start if unknown == "error" else "".join(c for c in start if c in m.vocab)

    out = sys.stdout
    live = out.isatty()  # a terminal sees every character as it comes; a pipe gets blocks
    rest: list[list[str]] = [[] for _ in range(num_samples - 1)]
    last = shown[-1:] if shown else ""
    try:
        if num_samples > 1:
            out.write("--- sample 1 ---\n")
        out.write(shown)
        for chunk in generator:
            c = chunk[0]
            if c:
                out.write(c)
                last = c
                if live:
                    out.flush()
            for parts, x in zip(rest, chunk[1:]):
                parts.append(x)
        if last != "\n":
            out.write("\n")
        for i, parts in enumerate(rest, start=2):
            text = shown + "".join(parts)
            out.write(f"--- sample {i} ---\n{text}")
            if not text.endswith("\n"):
                out.write("\n")
        out.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    except KeyboardInterrupt:  # Ctrl-C: stop where we are, no traceback
        try:
            out.write("\n")
            out.flush()
        except BrokenPipeError:
            _quiet_broken_pipe()
        raise typer.Exit(130)


@app.command()
def bench(
    model: Annotated[list[Path], typer.Option("--model", "-m", help=_MODEL_HELP + " Repeat it to compare models, measured in turns.")],
    device: Annotated[Device, typer.Option(help="auto: CUDA if usable, else the CPU.")] = Device("auto"),
    threads: Annotated[Optional[int], typer.Option(help=_THREADS_HELP)] = None,
    engine: Annotated[Optional[list[Engine]], typer.Option(help=_ENGINE_HELP + " Once for every model, or once per --model, in order (the same model twice with --engine onnxruntime --engine chargen compares the engines). [auto]")] = None,
    seconds: Annotated[float, typer.Option(help="About how long to measure each figure.")] = 2.0,
    batch: Annotated[Optional[list[int]], typer.Option(help="Batch sizes to measure (repeatable). [1, 4, 16, 64, 256 for int8 models; else 1, 64]")] = None,
    cold_start: Annotated[bool, typer.Option("--cold-start/--no-cold-start", help="Measure import + load + first step in a fresh process.")] = True,
):
    """Measure the runtime on a model: chars/s, per-step split, cold start, memory.

    With several --model options the models take turns at each batch size, and the last lines give each one's chars/s as a multiple of the first one's: the way to choose between exports (fp32 or int8, --int8-kernel dynamic or nbits) on the machine you ship to.
    """
    from chargen.bench import BenchError, compare_bench, format_comparison

    if seconds <= 0:
        fail(f"--seconds must be > 0, not {seconds}")
    sizes = batch or None
    if any(b < 1 for b in sizes or ()):
        fail("--batch sizes must be >= 1")
    device = device.value
    engines = [e.value for e in engine] if engine else ["auto"]
    if len(engines) not in (1, len(model)):
        fail(f"give --engine once, or once per --model ({len(model)}), not {len(engines)} times")
    try:
        with _warnings_as_lines():
            reports = compare_bench(model, device=device, threads=threads, seconds=seconds,
                                    batch_sizes=sizes, cold_start=cold_start, engines=engines)
    except BenchError as e:
        fail(str(e))
    try:
        typer.echo(format_comparison(reports))
    except BrokenPipeError:
        _quiet_broken_pipe()


# ---------------------------------------------------------------- serve (chargen.serve)
_SERVE_MODEL_HELP = ("The .onnx model written by `gen export`, served under its file's stem; NAME=PATH serves it as "
                     "NAME. Repeat it to serve several models (each its own batch); a request picks one by "
                     "`model`, the first is the default.")


@app.command()
def serve(
    model: Annotated[list[str], typer.Option("--model", "-m", metavar="[NAME=]PATH", help=_SERVE_MODEL_HELP)],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default; 0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: a free one, shown in the ready line).")] = 8000,
    max_batch: Annotated[int, typer.Option(help="Requests generated together: the slots of the batched step (per model).")] = 64,
    max_queue: Annotated[int, typer.Option(help="Requests (choices) that may wait for a slot (per model); more are refused with 429.")] = 256,
    max_chars: Annotated[int, typer.Option(help="Longest prompt + max_tokens of a request, in characters.")] = 4096,
    api_key: Annotated[Optional[str], typer.Option(envvar="CHARGEN_API_KEY", help="Require `Authorization: Bearer KEY` on /v1/* and /metrics (/health and / stay open).")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option(help="Allow browser pages from this origin (e.g. http://localhost:3000; * for any); repeatable.")] = None,
    grace: Annotated[float, typer.Option(help="Seconds that running requests get to finish after SIGTERM (new ones get 503).")] = 10.0,
    device: Annotated[Device, typer.Option(help="auto: CUDA if usable, else the CPU.")] = Device("auto"),
    threads: Annotated[Optional[int], typer.Option(help=_THREADS_HELP)] = None,
    engine: Annotated[Engine, typer.Option(help=_ENGINE_HELP + " It applies to every --model.")] = Engine("auto"),
):
    """Serve models over HTTP: OpenAI's Completions API, every request batched into one step."""
    device, engine = device.value, engine.value
    from chargen.serve.config import ConfigError, ServeConfig, check_port, model_names

    try:
        check_port(port)
        config = ServeConfig(max_batch=max_batch, max_queue=max_queue, max_chars=max_chars, api_key=api_key or None,
                             cors_origins=tuple(cors_origin or ()), grace=grace)
        names = model_names(model)
    except ConfigError as e:
        fail(str(e))
    try:
        from chargen.serve.server import SESSION_CONFIG, ListenError, bind, run
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] not in ("fastapi", "starlette", "uvicorn", "prometheus_client", "anyio"):
            raise
        fail(f'{e.name} is not installed: pip install "chargen[serve]"')
    try:
        sock = bind(host, port)  # before loading: a taken port fails at once
    except ListenError as e:
        fail(str(e))
    models = [(name, _load_model(Path(path), device, threads, engine, session_config=SESSION_CONFIG))
              for name, path in names]

    def ready(url: str) -> None:
        if len(models) == 1:
            m = models[0][1]
            what = f"model {models[0][0]}, {m.precision}, {m.device}; {max_batch} slots"
        else:
            what = "models " + ", ".join(f"{n}: {m.precision} {m.device}" for n, m in models)
            what += f"; {max_batch} slots each"
        typer.echo(f"chargen serve: {url} ({what}; OpenAI API at {url}/v1)")
        sys.stdout.flush()

    run(models, config, sock=sock, on_ready=ready)


# ---------------------------------------------------------------- web (chargen.web)
@app.command()
def web(
    model: Annotated[Path, typer.Argument(help="The .onnx model to run in the page (int8 --int8-kernel dynamic, fp32 or fp16).")],
    out: Annotated[Path, typer.Argument(help="The folder to write (new or empty; one gen web wrote before is overwritten).")],
    onnxruntime_web: Annotated[Optional[Path], typer.Option(help="fp32 and fp16 models: an onnxruntime-web package folder (or its dist/) to take it from. Default: chargen's cache, filled once with npm pack.")] = None,
):
    """Write a static folder that generates in the browser tab: index.html, the model, chargen.js and chargen.wasm.

    int8 models (--int8-kernel dynamic) run on chargen's int8 step in WebAssembly; fp32 and fp16 models on onnxruntime-web (pinned; put in the folder, about 15 MB).
    Serve it from any static host, e.g. `python -m http.server -d OUT`; it loads nothing from another origin.
    """
    from chargen.web import WebError, write_folder

    try:
        folder = write_folder(model, out, onnxruntime_web)
    except WebError as e:
        fail(str(e))
    typer.echo(f"{folder}/index.html: open it through a web server, e.g. python -m http.server -d {folder}")


class _StdoutError(Exception):
    """stdout cannot take the output (a full disk, an I/O error); not an OSError, so no
    handler meant for the command's own files catches it on the way to main()."""


class _CheckedStdout:
    """sys.stdout while a command runs: a failed write or flush raises _StdoutError.
    A reader that went away (BrokenPipeError) passes through, for the commands' own handling."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise _StdoutError(e.strerror or str(e)) from None

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise _StdoutError(e.strerror or str(e)) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main() -> None:
    """Run a command. Where its output cannot go, every command ends the same way, with one
    line: a closed stdout before it starts, a failed write (a full disk) when it happens."""
    if sys.stdout is None:  # started with `>&-`
        typer.echo("error: stdout is closed; redirect it (> FILE, or > /dev/null to discard the output)", err=True)
        sys.exit(1)
    stdout = sys.stdout
    sys.stdout = _CheckedStdout(stdout)
    try:
        try:
            app()
        finally:
            sys.stdout.flush()  # the last of the output fails here, not unreported at exit
    except _StdoutError as e:
        _stdout_to_devnull()
        typer.echo(f"error: cannot write to stdout: {e}", err=True)
        sys.exit(1)
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    main()
