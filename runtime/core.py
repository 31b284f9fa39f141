"""StepCore: the one place where a model's step runs. Generator (a fixed batch) and Batch
(slots that come and go) are fronts on it; nothing else touches sessions or bindings.

    core = StepCore(model, capacity=64)          # the engine: model.engine_for(64)
    core.token[:n] = ids                         # the first n rows are the ones that run
    core.run(n)                                  # token[:n], state -> logits[:n], new state
    core.logits[:n]                              # float32 [n, V], host memory

It owns a batch's buffers: token int64 [C], logits float32 [C, V], and the hidden state twice
(the step reads one and writes the other, then they swap: never copied). The state of n rows
is laid out [L, n, H] at the start of its buffer, so the rows a run covers are contiguous
whatever n is; resize() lays it out again when n changes (only needed for L > 1).

Engines, one per core for its life (a batch's texts must not depend on who ran which step):
- chargen's int8 step (C, on the host buffers);
- onnxruntime on the CPU, through one pair of IOBindings per row count (state A -> B, B -> A)
  over the host buffers, so a run copies nothing;
- onnxruntime on CUDA: the same buffers on the GPU at fixed addresses (the state never leaves
  it; the token goes up and the logits come down), and with CUDA graphs one captured graph
  per row count and direction (gpu_graph_id), as CUDA graphs replay fixed addresses.

timer: set it to a callable that takes the nanoseconds of each run (e.g. a list's append),
for benchmarks that split a step into the run and the rest; None (default) costs nothing.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from chargen.runtime import contract


class StepCore:
    """A batch's step buffers and engine over one Model; see the module docstring."""

    def __init__(self, model, capacity: int, engine: str | None = None):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, not {capacity!r}")
        self.model = model
        self.capacity = C = capacity
        self.engine = engine or model.engine_for(capacity)
        L, H, V = model.num_layers, model.hidden_size, model.vocab_size
        self.shape = (L, H, V)
        self.token = np.zeros(C, np.int64)
        self.logits = np.zeros((C, V), np.float32)
        self.runs = 0
        self.timer = None
        self._cur = 0  # the state buffer that holds the current state
        self._bindings: dict[int, list] = {}
        self._int8 = model.int8_step if self.engine == "chargen" else None
        self._scratch = self._int8.scratch(C) if self._int8 is not None else None
        self.on_cuda = model.device == "cuda"
        if not self.on_cuda:
            self._h = [np.zeros(L * C * H, np.float32) for _ in range(2)]
            self._lock = None
            return
        # CUDA: device buffers at fixed addresses; every copy to or from the GPU holds the
        # lock (with CUDA graphs the model's: a copy from another thread while one captures its
        # graph breaks the capture)
        self._h = None
        self._graph = bool(model.cuda_graph)
        self._lock = model.graph_lock if self._graph else threading.Lock()
        OrtValue = model.ort.OrtValue
        with self._lock:
            self._h_dev = [OrtValue.ortvalue_from_shape_and_type([L * C * H], np.float32, "cuda", 0) for _ in range(2)]
            zeros = np.zeros(L * C * H, np.float32)
            for ov in self._h_dev:
                ov.update_inplace(zeros)
            self._tok_dev = OrtValue.ortvalue_from_shape_and_type([C], np.int64, "cuda", 0)
            self._tok_dev.update_inplace(self.token)
            self._logits_dev = OrtValue.ortvalue_from_shape_and_type([C, V], np.float32, "cuda", 0)
        self._run_options: dict[int, list] = {}

    # ------------------------------------------------------------ the run
    def run(self, n: int) -> None:
        """One step over the first n rows: token[:n] and the current state in, logits[:n] and
        the next state out (which becomes the current one)."""
        t0 = time.perf_counter_ns() if self.timer is not None else 0
        i = self._cur
        if self._int8 is not None:
            h_in, h_out = self._views(n, i), self._views(n, 1 - i)
            self._int8.step(self.token[:n], h_in, h_out, self.logits[:n], self._scratch)
        elif self.on_cuda:
            pair = self._bindings.get(n) or self._bind_cuda(n)
            with self._lock:
                self._tok_dev.update_inplace(self.token)
                self.model.run_binding(pair[i], self._run_options[n][i])
                np.copyto(self.logits[:n], self._logits_dev.numpy()[:n])
        else:
            pair = self._bindings.get(n) or self._bind_cpu(n)
            self.model.run_binding(pair[i])
        self._cur = 1 - i
        self.runs += 1
        if self.timer is not None:
            self.timer(time.perf_counter_ns() - t0)

    # ------------------------------------------------------------ the state
    def _views(self, n: int, which: int) -> np.ndarray:
        L, H, _ = self.shape
        return self._h[which][: L * n * H].reshape(L, n, H)

    def state(self, n: int) -> np.ndarray:
        """The current state of the first n rows, [L, n, H]: a view of the host buffer that
        writes go through to (CPU), or a copy (CUDA: write it back with set_state)."""
        if self._h is not None:
            return self._views(n, self._cur)
        L, H, _ = self.shape
        with self._lock:
            return self._h_dev[self._cur].numpy()[: L * n * H].reshape(L, n, H).copy()

    def set_state(self, n: int, h) -> None:
        """Make h ([L, n, H]) the current state of the first n rows."""
        if self._h is not None:
            self._views(n, self._cur)[...] = h
            return
        L, H, _ = self.shape
        with self._lock:
            flat = self._h_dev[self._cur].numpy()
            flat[: L * n * H] = np.asarray(h, np.float32).reshape(-1)
            self._h_dev[self._cur].update_inplace(flat)

    def set_logits(self, rows, values) -> None:
        """Write logits rows (after the host copy was changed by hand: restore, prefill)."""
        self.logits[rows] = values
        if self.on_cuda:
            with self._lock:
                self._logits_dev.update_inplace(self.logits)

    def resize(self, n_old: int, n_new: int) -> None:
        """Lay the current state of rows < min(n_old, n_new) out as [L, n_new, H]."""
        if self.shape[0] == 1 or n_old == 0 or n_old == n_new:
            return
        keep = min(n_old, n_new)
        rows = self.state(n_old)[:, :keep].copy()
        if self._h is not None:
            self._views(n_new, self._cur)[:, :keep] = rows
        else:
            h = self.state(n_new)
            h[:, :keep] = rows
            self.set_state(n_new, h)

    def move_row(self, src: int, dst: int, n: int) -> None:
        """Row dst takes row src's state, token and logits (n: the rows laid out now)."""
        h = self.state(n)
        h[:, dst] = h[:, src]
        if self._h is None:
            self.set_state(n, h)
        self.token[dst] = self.token[src]
        self.logits[dst] = self.logits[src]

    # ------------------------------------------------------------ bindings
    def _bind_cpu(self, n: int) -> list:
        """The two IOBindings of n rows (state A -> B and B -> A) over the host buffers."""
        OrtValue = self.model.ort.OrtValue
        tok = OrtValue.ortvalue_from_numpy(self.token[:n])
        logits = OrtValue.ortvalue_from_numpy(self.logits[:n])
        h = [OrtValue.ortvalue_from_numpy(self._views(n, j)) for j in range(2)]
        pair = [self._binding(tok, h[j], logits, h[1 - j]) for j in range(2)]
        self._bindings[n] = pair
        return pair

    def _binding(self, tok, h_in, logits, h_out):
        b = self.model.session.io_binding()
        b.bind_ortvalue_input(contract.INPUT_TOKEN, tok)
        b.bind_ortvalue_input(contract.INPUT_H, h_in)
        b.bind_ortvalue_output(contract.OUTPUT_LOGITS, logits)
        b.bind_ortvalue_output(contract.OUTPUT_H, h_out)
        return b

    def _bind_cuda(self, n: int) -> list:
        """The two bindings of n rows over the device buffers (their first rows, by address),
        each with its own CUDA graph id where graphs are on."""
        L, H, V = self.shape
        ort = self.model.ort
        pair = []
        for j in range(2):
            b = self.model.session.io_binding()
            b.bind_input(contract.INPUT_TOKEN, "cuda", 0, np.int64, [n], self._tok_dev.data_ptr())
            b.bind_input(contract.INPUT_H, "cuda", 0, np.float32, [L, n, H], self._h_dev[j].data_ptr())
            b.bind_output(contract.OUTPUT_LOGITS, "cuda", 0, np.float32, [n, V], self._logits_dev.data_ptr())
            b.bind_output(contract.OUTPUT_H, "cuda", 0, np.float32, [L, n, H], self._h_dev[1 - j].data_ptr())
            pair.append(b)
        options = [None, None]
        if self._graph:
            for j, graph_id in enumerate(self.model.graph_ids(2)):
                ro = ort.RunOptions()
                ro.add_run_config_entry("gpu_graph_id", str(graph_id))
                options[j] = ro
        self._run_options[n] = options
        self._bindings[n] = pair
        return pair

    def __repr__(self) -> str:
        return f"StepCore(capacity={self.capacity}, engine={self.engine!r}, device={self.model.device!r})"
