"""The training loop: corpus -> checkpoints, metrics.jsonl and loss.png in a run folder.

Reads top to bottom: set-up, then `while step < total_steps` with the sections
# forward backward update, # clip the gradient, # log, # evaluate, # checkpoint.
The batch order is a pure function of (seed, epoch), and the checkpoint carries
the optimizer and RNG state, so a resumed run is the run that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from chargen.runtime.contract import Vocab, bits_per_char
from chargen.train import checkpoint as ckpt
from chargen.train.atomic import atomic_write
from chargen.train import distributed, evaluate
from chargen.train.config import MODEL_FIELDS, ConfigError, TrainConfig, make_config
from chargen.train.data import Corpus, CorpusError, load_corpus, split
from chargen.train.model import CharGRU, ModelConfig

# A resumed run keeps its recipe; these may change when it continues.
RESUMABLE_FIELDS = ("epochs", "max_steps", "eval_interval", "log_interval", "sample_length", "device")


class TrainingError(Exception):
    """Anything the user can fix; the message is one line."""


@dataclass
class RunResult:
    out: Path
    step: int
    best_val_loss: float
    interrupted: bool = False
    evals: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------- set-up helpers
def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda: no usable CUDA GPU (torch.cuda.is_available() is False); use --device cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (x86 AVX512_BF16 or AMX, Arm BF16).
    Elsewhere oneDNN emulates it, slower than float32."""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux: no cheap way to tell, stay with float32
        return False
    flags = {f for line in info.splitlines() if line.startswith(("flags", "Features")) for f in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_bf16(precision: str, device: torch.device) -> bool:
    if precision == "auto":
        return device.type == "cuda" or cpu_has_bf16()
    return precision == "bf16"


def prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise TrainingError(f"cannot write to --out {out}: {e.strerror or e}; choose another folder") from None


class Batches:
    """The training batches of an epoch, a pure function of (seed, epoch, index).

    Windowed (the default): non-overlapping windows of seq_len + 1 characters,
    shuffled once per epoch. Each epoch starts its windows at a random offset in
    [0, seq_len), so every character boundary is seen over the epochs, and uses a
    fixed number of windows (what the largest offset leaves), so every epoch has
    the same steps.

    Stateful: the text (from the epoch's random offset) is cut into batch_size
    contiguous streams, and step i reads the i-th window of every stream, so the
    hidden state left by one batch is the right start for the next (truncated
    BPTT, as char-rnn trains). `keep` says, per stream, whether that state is
    carried (1) or restarted from zero (0: the first step of an epoch, and with
    probability state_reset at any step, so the model also learns to start cold).
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, seq_len: int, seed: int,
                 stateful: bool = False, state_reset: float = 0.0):
        self.ids, self.batch_size, self.seq_len, self.seed = ids, batch_size, seq_len, seed
        self.stateful, self.state_reset = stateful, state_reset
        if stateful:
            self.stream_len = (len(ids) - seq_len - 1) // batch_size  # leaves room for the largest offset
            self.windows = self.stream_len // seq_len * batch_size
        else:
            self.windows = (len(ids) - seq_len) // seq_len
        self.steps_per_epoch = self.windows // batch_size
        self._epoch, self._starts, self._keep = None, None, None

    def get(self, epoch: int, index: int):
        """x, y: (T, B) inputs and targets; keep: (B,) 1.0 where a stream carries its state, or None (windowed)."""
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            offset = int(torch.randint(self.seq_len, (1,), generator=g))
            if self.stateful:
                self._starts = offset + self.stream_len * torch.arange(self.batch_size)
                self._keep = (torch.rand(self.steps_per_epoch, self.batch_size, generator=g) >= self.state_reset).float()
                self._keep[0] = 0.0
            else:
                order = torch.randperm(self.windows, generator=g)
                self._starts = offset + self.seq_len * order
            self._epoch = epoch
        if self.stateful:
            starts, keep = self._starts + index * self.seq_len, self._keep[index]
        else:
            starts, keep = self._starts[index * self.batch_size : (index + 1) * self.batch_size], None
        window = starts[None, :] + torch.arange(self.seq_len + 1)[:, None]  # window: (T+1, B)
        chunk = self.ids[window]
        return chunk[:-1], chunk[1:], keep  # x, y: (T, B)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def plot_losses(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"], r["val_loss_windowed"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train (windowed)", lw=1, alpha=0.8)
    if val:
        steps, stateful, windowed = zip(*val)
        ax.plot(steps, stateful, "o-", label="val (stateful)")
        ax.plot(steps, windowed, "s--", label="val (windowed)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def read_metrics(path: Path, up_to_step: int) -> list[dict]:
    """The records of an earlier run up to its checkpoint's step; later ones are work the crash lost."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if record.get("step", 0) <= up_to_step:
            records.append(record)
    return records


def model_summary(model: CharGRU, console: Console) -> None:
    c = model.config
    rows = [
        ("embedding", f"Embedding({c.vocab_size}, {c.embedding_dim})", model.embedding),
        ("gru", f"GRU({c.hidden_size}) x {c.layers}", model.rnn),
        ("dense", f"Linear({c.hidden_size}, {c.vocab_size})", model.head),
    ]
    for name, desc, module in rows:
        console.print(f"  {name:<10} {desc:<26} {sum(p.numel() for p in module.parameters()):>12,}")
    console.print(f"  Total params: {model.num_parameters():,}")


class StopFlag:
    """The first Ctrl-C asks the loop to checkpoint and stop; a second one stops at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)


# ---------------------------------------------------------------- the run
def run_training(data=None, out=None, preset="tutorial", overrides=None, resume=False,
                 stop_after: int | None = None, console: Console | None = None) -> RunResult:
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        config = make_config(preset, **overrides)
    except ConfigError as e:
        raise TrainingError(str(e)) from None
    device = resolve_device(config.device)
    ddp = distributed.setup(device.type == "cuda")
    if ddp.enabled and device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
    console = console or Console(stderr=False, highlight=False, quiet=not ddp.is_main)
    try:
        corpus = _load_corpus_once(ddp, data)
        out = Path(out) if out is not None else Path("runs") / corpus.name
        new_folder = not out.exists()
        try:
            result = _train(ddp, device, config, corpus, out, preset, overrides, resume, stop_after, console)
        except BaseException:
            if new_folder and ddp.is_main:
                _remove_unused_run_folder(out)
            raise
        # every rank done with its collectives before any tears the group down (without this,
        # gloo aborted a rank at exit about one run in six: "terminate called without an active exception")
        ddp.barrier()
        return result
    except torch.distributed.DistError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainingError(f"rank {ddp.rank}: lost contact with the other ranks ({reason}); "
                            "restart with --resume from the last good checkpoint") from None
    finally:
        ddp.close()


def _load_corpus_once(ddp: distributed.Dist, data) -> Corpus:
    """Rank 0 reads the corpus first and shares its error, so every rank stops on the same one."""
    error = None
    if ddp.is_main:
        try:
            corpus = load_corpus(data)
        except CorpusError as e:
            error = str(e)
    error = ddp.broadcast(error)
    if error is not None:
        raise TrainingError(error)
    return corpus if ddp.is_main else load_corpus(data)


def _remove_unused_run_folder(out: Path) -> None:
    """After a run that failed before its first checkpoint: remove the --out folder it
    created, with the files it wrote there. A folder holding anything else stays."""
    if (out / ckpt.LAST).exists() or (out / ckpt.BEST).exists():
        return
    for name in ("metrics.jsonl", "loss.png"):
        with contextlib.suppress(OSError):
            (out / name).unlink()
    with contextlib.suppress(OSError):
        out.rmdir()


def _train(ddp, device, config, corpus, out, preset, overrides, resume, stop_after, console) -> RunResult:
    vocab = Vocab.from_text(corpus.text)

    # resume: the checkpoint's recipe, vocabulary and model size
    checkpoint = None
    if resume:
        # best.pt alone: a kill between the two writes of the first evaluation (best.pt is
        # written first, and holds the same state as the last.pt that was to follow)
        start = out / ckpt.BEST if not (out / ckpt.LAST).exists() and (out / ckpt.BEST).exists() else out / ckpt.LAST
        try:
            checkpoint = ckpt.load(start)
        except ckpt.CheckpointError as e:
            raise TrainingError(f"--resume: {e}; start without --resume to begin a new run") from None
        saved = TrainConfig.from_dict(checkpoint["train_config"])
        for name, value in overrides.items():
            if name not in RESUMABLE_FIELDS and getattr(saved, name) != value:
                kind = "model size" if name in MODEL_FIELDS else "recipe"
                raise TrainingError(
                    f"--resume: the checkpoint in {out} has {name}={getattr(saved, name)}, not {value}; "
                    f"a resumed run keeps its {kind} (drop --{name.replace('_', '-')} or use a new --out)"
                )
            setattr(saved, name, value)
        config = saved
        if tuple(checkpoint["vocab"]) != vocab.chars:
            raise TrainingError(
                f"--resume: the checkpoint in {out} was trained on another vocabulary "
                f"({len(checkpoint['vocab'])} symbols, this corpus has {len(vocab)}); use the same --data or a new --out"
            )
    elif (out / ckpt.LAST).exists() or (out / ckpt.BEST).exists():
        raise TrainingError(f"{out} already holds a run; continue it with --resume, or choose another --out")
    if config.batch_size % ddp.world:
        raise TrainingError(f"--batch-size {config.batch_size} is the global batch; it must divide evenly "
                            f"among the {ddp.world} processes")
    local_batch = config.batch_size // ddp.world

    try:
        train_text, val_text = split(corpus.text, config.val_fraction)
    except CorpusError as e:
        raise TrainingError(f"{corpus.source}: {e}") from None
    if len(train_text) < config.seq_len + 1:
        raise TrainingError(
            f"corpus {corpus.source} is too short: its training part has {len(train_text):,} characters, "
            f"less than one window of --seq-len {config.seq_len} + 1; use a longer text or a smaller --seq-len"
        )
    train_ids = torch.tensor(vocab.encode(train_text), dtype=torch.long)
    val_ids = np.array(vocab.encode(val_text), dtype=np.int64)
    batches = Batches(train_ids, config.batch_size, config.seq_len, config.seed, config.stateful, config.state_reset)
    if batches.steps_per_epoch < 1:
        raise TrainingError(
            f"corpus {corpus.source} is too short for one batch: {batches.windows} window(s) of "
            f"{config.seq_len + 1} characters, --batch-size {config.batch_size}; lower --batch-size or --seq-len"
        )
    if len(val_ids) < 2:
        raise TrainingError(f"the validation part of {corpus.source} is under 2 characters; raise --val-fraction")
    if ddp.is_main:
        prepare_out(out)  # after every check of the input, so a refused run leaves no folder
    total_steps = config.epochs * batches.steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    bf16 = resolve_bf16(config.precision, device)
    cores = usable_cores()
    # float32 on CPU: the recurrent GEMMs run in numpy's OpenBLAS on every core, and
    # torch's own pool would only spin against it (measured: 2.5x slower with both at 2);
    # bf16: every GEMM is torch's (oneDNN), so torch gets the cores
    train_threads = cores if bf16 else 1
    if device.type == "cpu":
        torch.set_num_threads(train_threads)
    torch.manual_seed(config.seed)
    model_config = ModelConfig(len(vocab), config.embedding_dim, config.hidden_size, config.layers, config.dropout,
                               config.weight_drop, config.input_dropout)
    model = CharGRU(model_config).to(device)
    model.bf16 = bf16 and device.type == "cpu"
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, best_val_loss = 0, math.inf
    params = list(model.parameters())
    names = [name for name, _ in model.named_parameters()]
    ema = [p.detach().clone() for p in params] if config.ema > 0 else None  # --ema: the averaged weights
    carry = None  # --stateful: the hidden state each stream of this process carries into the next batch
    if checkpoint is not None:
        if vars(ModelConfig(**checkpoint["model_config"])) != vars(model_config):  # older checkpoints lack newer fields
            raise TrainingError(f"--resume: the checkpoint in {out} is of another model size: {checkpoint['model_config']}")
        if checkpoint.get("train_weights") is not None:  # --ema: "model" holds the average
            model.load_state_dict(checkpoint["train_weights"])
            ema = [checkpoint["model"][name].to(device) for name in names]
        else:
            model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, best_val_loss = checkpoint["step"], checkpoint["best_val_loss"]
        if checkpoint.get("carry") is not None:
            carry = checkpoint["carry"][:, ddp.rank * local_batch : (ddp.rank + 1) * local_batch].to(device)
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if device.type == "cuda" and checkpoint["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and bf16)

    train_model = DistributedDataParallel(model) if ddp.enabled else model

    metrics_path, plot_path = out / "metrics.jsonl", out / "loss.png"
    records = read_metrics(metrics_path, step) if resume else []
    if ddp.is_main:
        with open(metrics_path, "w", encoding="utf-8") as f:  # rewritten: drops what a crash left after the checkpoint
            f.writelines(json.dumps(r) + "\n" for r in records)
    metrics = open(metrics_path if ddp.is_main else os.devnull, "a", encoding="utf-8")

    console.print(f"[bold]chargen train[/] corpus {corpus.name} ({len(corpus.text):,} chars, {len(vocab)} symbols) "
                  f"-> {out}  device {device.type}" + (f" x {ddp.world} processes" if ddp.enabled else "")
                  + ("  bf16 GEMMs" if bf16 else "  float32"))
    model_summary(model, console)
    console.print(f"  {batches.steps_per_epoch} steps/epoch, {total_steps} steps, batch {config.batch_size} x {config.seq_len}"
                  + (f", resuming at step {step}" if step else ""))

    def make_checkpoint(val_loss, carried):
        return {
            "format": ckpt.FORMAT, "version": ckpt.VERSION,
            "model_config": vars(model_config), "train_config": config.to_dict(),
            "vocab": list(vocab.chars), "corpus": corpus.name, "corpus_source": corpus.source,
            # "model" is what evaluation measured and export uses: with --ema the average, and the
            # optimizer's own weights ride along for --resume
            "model": averaged_state() if ema is not None else model.state_dict(),
            "train_weights": model.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "step": step, "epoch": step // batches.steps_per_epoch,
            "best_val_loss": best_val_loss, "val_loss": val_loss,
            "carry": carried,  # --stateful: every stream's state, for --resume
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
        }

    def all_carry():
        """--stateful: every stream's carried state, gathered from the processes in stream order.
        A collective: every rank calls it, before rank 0 alone writes the checkpoint."""
        return ddp.gather(carry, dim=1) if carry is not None else None

    def averaged_state():
        return {**model.state_dict(), **{name: e.clone() for name, e in zip(names, ema)}}

    @contextlib.contextmanager
    def evaluated_weights():
        """The weights evaluation measures: with --ema the average swapped in, then swapped back."""
        if ema is None:
            yield
            return
        with torch.no_grad():
            trained = [p.detach().clone() for p in params]
            torch._foreach_copy_(params, ema)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, trained)

    def log(record):
        records.append(record)
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()

    prompt = [vocab.encode("\n")[0]] if "\n" in vocab else [0]
    result = RunResult(out, step, best_val_loss)
    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=console,
                        disable=not console.is_terminal)
    losses, chars, t_last = [], 0, time.perf_counter()
    with StopFlag() as stop, progress, metrics:
        task = progress.add_task("training", total=total_steps, completed=step, status="")
        while step < total_steps:
            epoch, index = divmod(step, batches.steps_per_epoch)
            x, y, keep = batches.get(epoch, index)  # the global batch; this process takes its share
            shard = slice(ddp.rank * local_batch, (ddp.rank + 1) * local_batch)
            x, y = x[:, shard].to(device), y[:, shard].to(device)
            h0 = None
            if keep is not None:
                if carry is None:
                    carry = model.initial_state(local_batch, device)
                h0 = carry * keep[shard].to(device)[None, :, None]  # h0: (L, B, H)
            lr = learning_rate(config, step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr

            # forward backward update
            model.train()
            with autocast:
                logits, h = train_model(x, h0)  # logits: (T, B, V)  h: (L, B, H)
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP averages the gradients of all processes here
            # clip the gradient
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            # average the weights (the decay ramps up, so the first steps do not freeze the average)
            if ema is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(ema, params, 1 - min(config.ema, (1 + step) / (10 + step)))
            if keep is not None:
                carry = h.detach().float()
            step += 1
            losses.append(loss.item())
            chars += x.numel() * ddp.world

            # log
            evaluating = step % config.eval_interval == 0 or step == total_steps
            if step % config.log_interval == 0 or evaluating:
                elapsed = time.perf_counter() - t_last
                record = {"step": step, "epoch": step / batches.steps_per_epoch, "train_loss": ddp.mean(float(np.mean(losses))),
                          "chars_per_s": chars / elapsed if elapsed > 0 else 0.0, "lr": lr}
                progress.update(task, completed=step,
                                status=f"loss {record['train_loss']:.3f}  {record['chars_per_s']:,.0f} chars/s")
                losses, chars, t_last = [], 0, time.perf_counter()
                if not evaluating:
                    log(record)

            # evaluate
            if evaluating:
                torch.set_num_threads(cores) if device.type == "cpu" else None
                with evaluated_weights():
                    # one stateful pass cannot be split; the windows are shared out among the processes
                    val_loss = ddp.broadcast(evaluate.stateful_loss(model, val_ids) if ddp.is_main else None)
                    total, count = ddp.sum(evaluate.windowed_nll(model, val_ids, config.seq_len,
                                                                 shard=(ddp.rank, ddp.world)))
                    text = vocab.decode(evaluate.sample(model, prompt, config.sample_length,
                                                        torch.Generator().manual_seed(config.seed + step))
                                        if ddp.is_main else [])
                record["val_loss"] = val_loss
                record["val_loss_windowed"] = total / count
                record["val_bpc"] = bits_per_char(val_loss)
                log(record)
                torch.set_num_threads(train_threads) if device.type == "cpu" else None
                console.print(f"step {step}: train {record['train_loss']:.4f}  val {val_loss:.4f} "
                              f"({record['val_bpc']:.3f} bpc)  val windowed {record['val_loss_windowed']:.4f}")
                console.print(f"[dim]{text}[/dim]", markup=True, highlight=False)
                result.evals.append(record)

                # checkpoint: best.pt before last.pt, so a kill between the two still leaves --resume
                # a start (last.pt, or at the first evaluation best.pt)
                carried = all_carry()
                if val_loss < best_val_loss:
                    best_val_loss = val_loss
                    if ddp.is_main:
                        ckpt.save(make_checkpoint(val_loss, carried), out / ckpt.BEST)
                if ddp.is_main:
                    ckpt.save(make_checkpoint(val_loss, carried), out / ckpt.LAST)
                    plot_losses(records, plot_path)
                t_last = time.perf_counter()

            # every process must agree to stop at the same step, or the others would wait for it
            stopping = ddp.any(stop.requested) if ddp.enabled else stop.requested
            if stopping or step == stop_after:
                carried = all_carry()
                if ddp.is_main:
                    ckpt.save(make_checkpoint(None, carried), out / ckpt.LAST)
                result.interrupted = stopping
                console.print(f"{'interrupted' if stopping else 'stopped as asked'}: checkpoint saved at "
                              f"step {step}; continue with `gen train --resume --out {out}`")
                break

    result.step, result.best_val_loss = step, best_val_loss
    if step == total_steps:
        console.print(f"done: step {step}, best val_loss {best_val_loss:.4f} "
                      f"({bits_per_char(best_val_loss):.3f} bpc); checkpoints in {out}")
    return result
