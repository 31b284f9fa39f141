"""What `gen export` and `gen eval` print: short rich summaries. No torch imports here."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chargen.runtime.contract import INT8_KERNEL_OPS


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def print_export(result, console: Console | None = None) -> None:
    """The summary of a successful chargen.export.onnx_export.ExportResult."""
    console = console or Console()
    p = result.parity
    c = result.config
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    kind = result.precision
    if getattr(result, "int8_kernel", None):
        kind += " " + INT8_KERNEL_OPS.get(result.int8_kernel, result.int8_kernel)
    t.add_row("file", f"{escape(str(result.path))} ({_size(result.size_bytes)}, {kind}, weights inside)")
    t.add_row("from", escape(str(result.checkpoint)))
    model = (
        f"{result.parameters:,} parameters: E={c['embedding_dim']} H={c['hidden_size']} L={c['layers']}, "
        f"{result.vocab_size} symbols"
    )
    if result.corpus:
        model += f", corpus {result.corpus}"
    if result.val_loss is not None:
        model += f", val_loss {result.val_loss:.4f}"
    t.add_row("model", escape(model))
    for label, values in (("inputs", result.inputs), ("outputs", result.outputs)):
        t.add_row(label, escape("   ".join(f"{name} {dtype} {_shape(shape)}" for name, dtype, shape in values)))
    batches = " and ".join(str(b) for b in p.batches)
    t.add_row("checked", f"{p.steps:,} teacher-forced steps at batch {batches} on the {escape(p.text)}, in {p.seconds:.1f} s")
    parity = f"max |logits - torch| {p.max_logit_diff:.2g}, max |h - torch| {p.max_state_diff:.2g}"
    parity += f"; greedy {p.greedy_agree}/{p.greedy_steps} steps identical"
    t.add_row("parity", parity)
    loss = f"{p.onnx_loss:.4f} nats/char against torch's {p.torch_loss:.4f} ({p.loss_increase:+.4f})"
    t.add_row("loss", loss + " on the checked text")
    console.print(f"[bold green]exported[/] {escape(str(result.path))}")
    console.print(t)


def print_eval(result, console: Console | None = None) -> None:
    console = console or Console()
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("model", escape(result.model))
    text = result.text
    if result.skipped:
        text += f"; {result.skipped:,} unknown characters skipped"
    t.add_row("text", escape(text))
    t.add_row("loss", f"{result.loss:.4f} nats/char")
    t.add_row("bits/char", f"{result.bits_per_char:.4f}")
    t.add_row("perplexity", f"{math.exp(result.loss):.3f}")
    t.add_row("chars", f"{result.predictions:,} predicted in {result.seconds:.1f} s")
    console.print(t)
