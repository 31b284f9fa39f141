"""Which engine runs a model's step: onnxruntime, or chargen's own int8 step in C.

    Model.load("model-int8.onnx")                        # engine="auto"
    Model.load("model-int8.onnx", engine="chargen")      # or "onnxruntime"
    model.engine                                         # what was chosen

chargen's int8 step (csrc/int8_step.c, on its own threads: csrc/pool.c) runs the whole step
of an int8 model with onnxruntime's MatMulInteger weights (the export's default int8 kernel)
in C: int8 products with the CPU's dot-product instructions, the gates, the float32 head.

engine="auto" makes it wherever it can run, and for each batch size takes whichever of it and
onnxruntime's int8 step measured faster on this machine (chargen.runtime.calibrate);
model.engine_for(B) and Generator.engine say who runs a batch. engine="chargen" takes it wherever it can run and
raises EngineError where it cannot (fp32, fp16, MatMulNBits, CUDA). The onnxruntime session
is made either way: it is the reference, and runs what the step does not.

Trust: the weights are the model file's own (chargen.runtime.onnx_file reads them by the names
export/graph.py gives them, contract.INT8_WEIGHTS), and before it is used the C step runs beside
the onnxruntime session over CHECK_STEPS characters, each step from onnxruntime's state; logits
or states further apart than TOLERANCE refuse it (EngineError, with the figure). The two sum the
same int8 products exactly but round the gates' float arithmetic differently, so greedy text
agrees and sampled text is each engine's own; and the C step quantizes each stream with its own
scale where the graph takes one for the whole batch, so a stream's text does not depend on the
batch it runs in. docs/engines.md has the measurements behind these choices.
"""

from __future__ import annotations

import numpy as np

from chargen.runtime import contract

CHECK_STEPS = 48
TOLERANCE = 1e-4  # max |difference| of logits and state against onnxruntime's step (measured < 5e-6)


class EngineError(ValueError):
    """The engine asked for cannot run this model here; the message is one line."""


def unsupported(device: str, metadata) -> str | None:
    """Why chargen's int8 step cannot run a model with this metadata on this device, or None."""
    if device == "cuda":
        return "it runs on the CPU, and this model is on cuda"
    precision = metadata.get(contract.META_PRECISION, "fp32")
    if precision != "int8":
        return f"it runs int8 models, and this one is {precision}"
    kernel = metadata.get(contract.META_INT8_KERNEL, contract.DEFAULT_INT8_KERNEL)
    if kernel != "dynamic":
        return f"it runs int8 models with MatMulInteger weights (--int8-kernel dynamic), and this one has {kernel}"
    return None


def planned(engine: str, device: str, path) -> bool:
    """Whether Model.load should make chargen's int8 step for this model: where it can run it
    (an int8 model with MatMulInteger weights, on the CPU) and engine is 'chargen', or 'auto'
    with calibration on (chargen.runtime.calibrate: 'auto' then measures both engines)."""
    from chargen.runtime import calibrate
    from chargen.runtime.onnx_file import OnnxFileError, read_metadata

    if engine == "onnxruntime" or device == "cuda" or (engine == "auto" and calibrate.disabled()):
        return False
    try:
        metadata = read_metadata(path)
    except OnnxFileError:
        return False  # onnxruntime says what is wrong with the file
    return unsupported("cpu", metadata) is None


def choose(model, engine: str, threads: int | None, planned_here: bool):
    """The Int8Step for a model that Model.load opened for it (planned_here: what planned()
    said), else None. Raises EngineError where engine='chargen' cannot run the model, and
    where the step fails its check against onnxruntime."""
    if not planned_here:
        if engine == "chargen":
            why = unsupported(model.device, model.metadata)
            raise EngineError(f"{model.path}: engine='chargen' cannot run this model: {why}; "
                              "use engine='onnxruntime' or 'auto'")
        return None
    step = build(model, threads)
    check(model, step)
    return step


def _aligned_rows(w_t: np.ndarray) -> np.ndarray:
    """int8 W^T (K, N) as rows (N, ldw), ldw = K rounded up to 64, zero-padded, 64-byte aligned."""
    K, N = w_t.shape
    ldw = -(-K // 64) * 64
    buf = np.zeros(N * ldw + 64, np.int8)
    start = -buf.ctypes.data % 64
    rows = buf[start : start + N * ldw].reshape(N, ldw)
    rows[:, :K] = w_t.T
    return rows


def read_int8_weights(path, layers: int) -> dict:
    """The initializers of an int8 (MatMulInteger) model file that chargen's int8 step runs on,
    by the names export/graph.py gives them (the optional biases may be absent). Raises
    EngineError: an unreadable file, or one that is not chargen's int8 step graph."""
    from chargen.runtime.onnx_file import OnnxFileError, read_initializers

    names = contract.int8_weight_names(layers)
    try:
        w = read_initializers(path, names)
    except OnnxFileError as e:
        raise EngineError(str(e)) from None
    optional = {n for n in names if n.startswith(("gh_rz_", "gi_l")) and n.endswith("_b")}
    missing = [n for n in names if n not in w and n not in optional]
    if missing:
        raise EngineError(f"{path}: not chargen's int8 step graph (no initializer {missing[0]!r})")
    return w


def build(model, threads: int | None, packed: bool = True):
    """An Int8Step from the model file's weights (packed: with the batched product's copy of
    them, where the CPU has a packed kernel). Raises EngineError."""
    from chargen.runtime import _int8

    L, H = model.num_layers, model.hidden_size
    w = read_int8_weights(model.path, L)

    def matrix(base: str, bias: str | None):
        q, scale, zero = (w[base + s] for s in ("_quantized", "_scale", "_zero_point"))
        if q.dtype != np.int8 or q.shape != (H, 3 * H) or np.any(zero):
            raise EngineError(f"{model.path}: {base} is not symmetric int8 [{H}, {3 * H}] "
                              f"({q.dtype} {list(q.shape)}); re-export with `gen export --precision int8`")
        scale = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (3 * H,)).copy()
        entry = (_aligned_rows(q), scale)
        if bias is not None:
            entry += (np.ascontiguousarray(w.get(bias, np.zeros(3 * H)), np.float32),)
        return entry

    try:
        w_hh = [matrix(contract.INT8_WEIGHTS["w_hh"].format(k=k), None) for k in range(L)]
        w_ih = [None] + [matrix(contract.INT8_WEIGHTS["w_ih"].format(k=k), contract.INT8_WEIGHTS["b_ih"].format(k=k))
                         for k in range(1, L)]
        b_hh = np.zeros((L, 3 * H), np.float32)
        for k in range(L):
            b_hh[k, : 2 * H] = w.get(contract.INT8_WEIGHTS["b_hh_rz"].format(k=k), 0.0)
            b_hh[k, 2 * H :] = w[contract.INT8_WEIGHTS["b_hh_n"].format(k=k)]
        table = np.ascontiguousarray(w[contract.INT8_WEIGHTS["table"]], np.float32)
        head_w = np.ascontiguousarray(w[contract.INT8_WEIGHTS["head_w_t"]].T, np.float32)
        head_b = np.ascontiguousarray(w[contract.INT8_WEIGHTS["head_b"]], np.float32)
        return _int8.Int8Step(table, w_ih, w_hh, b_hh, head_w, head_b, threads=threads or 0, packed=packed)
    except ValueError as e:  # shapes that do not fit: not the graph the names promise
        raise EngineError(f"{model.path}: chargen's int8 step cannot use these weights: {e}") from None


def check(model, step, tokens=None) -> float:
    """Run the C step beside the onnxruntime session over tokens (default: CHECK_STEPS fixed
    ones), each step from the state onnxruntime reached (so what is compared is the two
    implementations, not how a model's dynamics amplify a rounding difference); the largest
    difference of logits and state, or EngineError past TOLERANCE."""
    L, H, V = model.num_layers, model.hidden_size, model.vocab_size
    tokens = (np.arange(CHECK_STEPS) * 7 + 3) % V if tokens is None else tokens
    h = np.zeros((L, 1, H), np.float32)
    h_out = np.zeros((L, 1, H), np.float32)
    logits = np.zeros((1, V), np.float32)
    scratch = step.scratch(1)
    worst = 0.0
    for t in tokens:
        token = np.array([t], np.int64)
        want, want_h = model.session.run(None, {contract.INPUT_TOKEN: token, contract.INPUT_H: h})
        # one thread: onnxruntime's threads spin between its runs, and a team of the step's
        # threads beside them stalled for milliseconds a step (the result does not depend on it)
        step.step(token, h, h_out, logits, scratch, threads=1)
        worst = max(worst, float(np.max(np.abs(logits - want))), float(np.max(np.abs(h_out - want_h))))
        h = want_h
    if not worst <= TOLERANCE:
        raise EngineError(
            f"{model.path}: chargen's int8 step disagrees with onnxruntime on this model (logits or "
            f"state {worst:.3g} apart over {len(tokens)} steps, more than {TOLERANCE}); use engine='onnxruntime'"
        )
    return worst
