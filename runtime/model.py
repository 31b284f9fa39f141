"""Model: a chargen .onnx step graph, its metadata, and one onnxruntime session.

    model = Model.load("model.onnx")            # device="auto": CUDA if really usable, else CPU
    model.vocab, model.config, model.metadata, model.device

One Model serves any number of Generators, in any number of threads: the
session is only ever used through `InferenceSession.run_with_iobinding`, which
onnxruntime documents as thread-safe; every Generator owns its own buffers and
bindings. This module imports numpy and, on first load, onnxruntime; never torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from types import MappingProxyType

from chargen.runtime import contract
from chargen.runtime.contract import Vocab

DEVICES = ("auto", "cpu", "cuda")

# Sessions keep onnxruntime's own thread count (one per physical core) with spinning on: the
# fastest or level at batch 1 and 64, fp32 and int8 (benchmarks/bench_runtime.py --sweep;
# docs/speed.md); threads=1 or allow_spinning=0 save CPU on a busy machine.


class ModelError(ValueError):
    """A file that is not a usable chargen model; the message is one line."""


class DeviceError(RuntimeError):
    """The device asked for is not usable here; the message is one line."""


class SlowModelWarning(RuntimeWarning):
    """The model loads but onnxruntime will run it far below its speed here; one line."""


def import_onnxruntime(device: str = "cpu"):
    """onnxruntime, or an ImportError that says how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        extra = "gpu" if device == "cuda" else "cpu"
        raise ImportError(
            f'onnxruntime is not installed: pip install "chargen[{extra}]" '
            '(or "chargen[gpu]" for NVIDIA GPUs)'
        ) from e
    return onnxruntime


@contextlib.contextmanager
def _quiet_onnxruntime(ort):
    """Keep onnxruntime's provider warnings and errors off stderr while probing."""
    import warnings

    ort.set_default_logger_severity(4)  # errors too: "cannot use the graph capture feature" is handled here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Specified provider ... is not in available provider names"
            yield
    finally:
        ort.set_default_logger_severity(2)


def _session_options(ort, threads: int | None, config: dict | None = None):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if threads is not None:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    entries = {"session.inter_op.allow_spinning": "0"}  # one inter-op thread: nothing to spin for
    entries.update({str(k): str(v) for k, v in (config or {}).items()})
    for key, value in entries.items():
        so.add_session_config_entry(key, value)
    return so


class Model:
    """A loaded chargen model. Make it with Model.load(path)."""

    def __init__(self, session, *, path: Path, device: str, metadata: dict, vocab: Vocab,
                 config: dict, num_layers: int, hidden_size: int, cuda_graph: bool, ort):
        self.session = session
        self.path = path
        self.device = device
        self.metadata = MappingProxyType(dict(metadata))
        self.vocab = vocab
        self.config = MappingProxyType(dict(config))
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.vocab_size = len(vocab)
        self.precision = metadata.get(contract.META_PRECISION, "fp32")
        self.corpus = metadata.get(contract.META_CORPUS, "")
        val = metadata.get(contract.META_VAL_LOSS)
        try:
            self.val_loss = float(val) if val not in (None, "") else None
        except ValueError:
            self.val_loss = None
        self.cuda_graph = cuda_graph
        self.ort = ort  # the onnxruntime module the session came from
        # chargen's int8 step in C (chargen.runtime._int8.Int8Step), where load() made it; engine:
        # 'onnxruntime' (the only engine here, or pinned), 'chargen' (pinned) or 'auto' (the two,
        # chosen per batch size by chargen.runtime.calibrate)
        self.int8_step = None
        self.engine = "onnxruntime"
        self.engine_asked = "auto"
        self.threads = None
        self._choices: dict = {}
        # CUDA graphs: every Generator binding gets its own captured graph (gpu_graph_id), and
        # replays are serialised (capture and replay from several threads are not documented safe)
        self.graph_lock = threading.Lock()
        self._next_graph_id = 1
        # the fast entry point: the C++ session's run_with_iobinding, without the Python
        # wrapper's per-call checks (WebGPU capture bookkeeping); public API as fallback.
        inner = getattr(session, "_sess", None)
        self._run_inner = getattr(inner, "run_with_iobinding", None)

    def __repr__(self) -> str:
        return (
            f"Model({str(self.path)!r}, device={self.device!r}, vocab_size={self.vocab_size}, "
            f"layers={self.num_layers}, hidden_size={self.hidden_size}, precision={self.precision!r}, "
            f"engine={self.engine!r})"
        )

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, path, device: str = "auto", threads: int | None = None, *,
             cuda_graph: bool = True, session_config: dict | None = None, engine: str = "auto") -> "Model":
        """Open a chargen .onnx model on device 'auto' (CUDA if really usable, else CPU), 'cpu'
        or 'cuda'. threads: onnxruntime intra-op threads, and the threads of chargen's int8
        step where it runs (default: onnxruntime's, one per physical core, measured fastest;
        the step's: one per CPU the process may run on). cuda_graph: capture CUDA graphs for the step on CUDA (ignored on CPU).
        session_config: extra onnxruntime session config entries (e.g.
        {"session.intra_op.allow_spinning": "1"}), for measuring.
        engine: who runs the step: 'onnxruntime', 'chargen' (chargen's int8 step in C, for
        int8 models on the CPU) or 'auto' (for each batch size, the one that measured faster on
        this machine: chargen.runtime.calibrate). model.engine says which engines the model
        has ('auto': both), model.engine_for(B) who runs a batch of B, model.choice(B) why.

        Raises ModelError (missing file, not ONNX, not a chargen model, unknown format
        version), DeviceError (device='cuda' where CUDA is not usable), EngineError
        (engine='chargen' where it cannot run), ImportError (onnxruntime not installed),
        ValueError (a bad argument)."""
        from chargen.runtime.contract import ENGINES
        from chargen.runtime.engine import EngineError, choose, planned
        from chargen.runtime.onnx_file import OnnxFileError, read_metadata

        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 0):
            raise ValueError(f"threads must be a non-negative integer (0: onnxruntime's default), not {threads!r}")
        path = Path(path)
        if not path.exists():
            raise ModelError(f"no such model file: {path}")
        if not path.is_file():
            raise ModelError(f"not a file: {path}")
        ort = import_onnxruntime(device)
        if path.stat().st_size == 0:
            raise ModelError(f"{path} is not an ONNX model (an empty file)")
        try:  # a file that is not a chargen model is refused before onnxruntime logs about it
            check_format(path, read_metadata(path))
        except OnnxFileError:
            pass  # not readable as ONNX here: onnxruntime says what is wrong with it

        def open_model(so, device):
            session, chosen, graph = _open_session(ort, path, so, device, cuda_graph)
            return cls._from_session(session, path=path, device=chosen, cuda_graph=graph, ort=ort)

        model = open_model(_session_options(ort, threads, session_config), device)
        model.threads = threads
        model.engine_asked = engine
        int8 = planned(engine, model.device, path)
        try:
            model.int8_step = choose(model, engine, threads, int8)  # raises where 'chargen' cannot run it
        except EngineError:
            if engine == "chargen":
                raise
            model.int8_step = None  # 'auto', and the step failed its check: onnxruntime runs it all
        if model.int8_step is not None:
            model.engine = "chargen" if engine == "chargen" else "auto"
        return model

    @classmethod
    def _from_session(cls, session, *, path, device, cuda_graph, ort) -> "Model":
        meta = dict(session.get_modelmeta().custom_metadata_map)
        check_format(path, meta)
        try:
            vocab = Vocab.from_json(meta[contract.META_VOCAB])
        except KeyError:
            raise ModelError(f"{path}: chargen model without vocabulary metadata ({contract.META_VOCAB})") from None
        except ValueError as e:
            raise ModelError(f"{path}: bad vocabulary metadata: {e}") from None
        try:
            config = json.loads(meta.get(contract.META_CONFIG, "{}"))
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            raise ModelError(f"{path}: bad model config metadata: {e}") from None

        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        want_in = {contract.INPUT_TOKEN: "tensor(int64)", contract.INPUT_H: "tensor(float)"}
        want_out = {contract.OUTPUT_LOGITS: "tensor(float)", contract.OUTPUT_H: "tensor(float)"}
        for kind, have, want in (("input", inputs, want_in), ("output", outputs, want_out)):
            if set(have) != set(want):
                raise ModelError(
                    f"{path}: graph {kind}s are {sorted(have)}, a chargen step graph has {sorted(want)}"
                )
            for name, t in want.items():
                if have[name].type != t:
                    raise ModelError(f"{path}: graph {kind} {name!r} is {have[name].type}, expected {t}")
        h_shape = inputs[contract.INPUT_H].shape
        logits_shape = outputs[contract.OUTPUT_LOGITS].shape
        if len(h_shape) != 3 or len(logits_shape) != 2 or len(inputs[contract.INPUT_TOKEN].shape) != 1:
            raise ModelError(f"{path}: graph shapes do not match the chargen step contract")
        num_layers = _dim(h_shape[0], config.get("layers"), "layers", path)
        hidden = _dim(h_shape[2], config.get("hidden_size"), "hidden_size", path)
        vocab_size = _dim(logits_shape[1], config.get("vocab_size", len(vocab)), "vocab_size", path)
        if vocab_size != len(vocab):
            raise ModelError(f"{path}: the graph has {vocab_size} logits but the vocabulary {len(vocab)} symbols")
        if device == "cpu" and meta.get(contract.META_INT8_KERNEL) == "nbits":
            why = nbits_slow_reason(*_platform_facts(ort))
            if why:
                import warnings

                warnings.warn(
                    f"{path}: this int8 model uses onnxruntime's MatMulNBits, which has no int8 kernel "
                    f"here ({why}): each step dequantizes the weights and runs ~100x slower; re-export "
                    "with `gen export --precision int8 --int8-kernel dynamic` (or use the fp32 model)",
                    SlowModelWarning, stacklevel=3)
        return cls(session, path=path, device=device, metadata=meta, vocab=vocab, config=config,
                   num_layers=num_layers, hidden_size=hidden, cuda_graph=cuda_graph, ort=ort)

    def engine_for(self, batch_size: int) -> str:
        """Who runs the step of a Generator of batch_size streams: 'chargen' or 'onnxruntime'."""
        return self.choice(batch_size).engine

    def choice(self, batch_size: int):
        """Who runs a batch of batch_size streams and why (a chargen.runtime.calibrate.Choice):
        under engine='auto', the first call for a batch size measures both engines here (or
        reads the measurement from the user cache)."""
        from chargen.runtime import calibrate

        if self.int8_step is None:
            if self.engine_asked == "onnxruntime":
                return calibrate.Choice("onnxruntime", "pinned")
            if self.engine_asked == "auto" and self.precision == "int8" and self.device == "cpu" and calibrate.disabled():
                return calibrate.Choice("onnxruntime", "calibration off")
            return calibrate.Choice("onnxruntime", "only engine")
        if self.engine == "chargen":
            return calibrate.Choice("chargen", "pinned")
        got = self._choices.get(batch_size)
        if got is None:
            got = self._choices[batch_size] = calibrate.choose(self, batch_size)
        return got

    def generator(self, options=None, batch_size: int = 1, **kwargs):
        """Generator(self, options, batch_size): see chargen.runtime.Generator."""
        from chargen.runtime.generator import Generator

        return Generator(self, options, batch_size=batch_size, **kwargs)

    def graph_ids(self, n: int) -> list[int]:
        """n fresh CUDA graph ids (gpu_graph_id) for the bindings of a new Generator."""
        with self.graph_lock:
            first = self._next_graph_id
            self._next_graph_id += n
        return list(range(first, first + n))

    def run_binding(self, binding, run_options=None) -> None:
        """One run of the session over an IOBinding of this model's session: the step path of
        Generator and Batch (through the C++ session's run_with_iobinding where onnxruntime has it,
        without the Python wrapper's per-call checks)."""
        if self._run_inner is not None:
            self._run_inner(binding._iobinding, run_options)
        else:  # pragma: no cover - older/newer onnxruntime without the inner session
            self.session.run_with_iobinding(binding, run_options)


def check_format(path, metadata) -> int:
    """The chargen format version of a model with this metadata; ModelError where it has none
    or one this chargen does not read."""
    fmt = metadata.get(contract.META_FORMAT)
    if fmt is None:
        raise ModelError(f"{path} is an ONNX model but not a chargen model (no {contract.META_FORMAT} metadata)")
    try:
        version = int(fmt)
    except ValueError:
        raise ModelError(f"{path}: unreadable chargen format version {fmt!r}") from None
    if version != contract.FORMAT_VERSION:
        newer = "a newer" if version > contract.FORMAT_VERSION else "an older"
        raise ModelError(
            f"{path} is chargen model format version {version}, and this chargen reads version "
            f"{contract.FORMAT_VERSION} only: it was written by {newer} chargen"
            + ("; upgrade chargen" if version > contract.FORMAT_VERSION else "; re-export it")
        )
    return version


def physical_cores() -> int:
    """This machine's physical cores (onnxruntime's default thread count), else its CPUs."""
    try:
        cores = set()
        for cpu in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
            cores.add(((cpu / "physical_package_id").read_text().strip(), (cpu / "core_id").read_text().strip()))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def _dim(graph_dim, config_value, name: str, path) -> int:
    """A fixed size from the graph, cross-checked against the config metadata."""
    if isinstance(graph_dim, int):
        if config_value is not None and int(config_value) != graph_dim:
            raise ModelError(f"{path}: graph says {name}={graph_dim}, config metadata says {config_value}")
        return graph_dim
    if config_value is None:
        raise ModelError(f"{path}: {name} is neither fixed in the graph nor in the config metadata")
    return int(config_value)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def nbits_slow_reason(machine: str, cpu_features: set[str], ort_version: str) -> str | None:
    """Why onnxruntime would run an 8-bit MatMulNBits (accuracy level 4) through its slow
    dequantize-every-call path on this CPU, or None where it has an int8 kernel: x86-64 with
    AVX2 from onnxruntime 1.22 (AVX2, AVX-512, AVX-512 VNNI kernels), ARM64 with the dot-product
    instructions from 1.23. cpu_features: numpy's names (AVX2, ASIMDDP)."""
    arch = machine.lower()
    version = _version(ort_version)
    if arch in ("x86_64", "amd64", "x64"):
        if "AVX2" not in cpu_features:
            return "the CPU has no AVX2"
        if version and version < (1, 22):
            return f"onnxruntime {ort_version} predates its 8-bit x86 kernels (1.22)"
        return None
    if arch in ("aarch64", "arm64"):
        if "ASIMDDP" not in cpu_features:
            return "the CPU has no int8 dot-product instructions (ARMv8.2 dotprod)"
        if version and version < (1, 23):
            return f"onnxruntime {ort_version} predates its 8-bit ARM64 kernels (1.23)"
        return None
    return f"no 8-bit kernel for {machine or 'this architecture'}"


def _platform_facts(ort) -> tuple[str, set[str], str]:
    """(machine, CPU features as numpy detected them, onnxruntime version)."""
    import platform

    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            features = {}
    return platform.machine(), {k for k, on in features.items() if on}, getattr(ort, "__version__", "")


def _make_session(ort, path: Path, so, providers):
    return ort.InferenceSession(os.fspath(path), sess_options=so, providers=providers, enable_fallback=0)


def _open_error(path: Path, e: Exception, ort_version: str = "") -> ModelError:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    lowered = text.lower()
    if "matmulnbits" in lowered:
        return ModelError(
            f"{path}: this int8 model uses MatMulNBits with 8-bit weights, which onnxruntime {ort_version} "
            "cannot run (it needs 1.22 or later; 1.23 on ARM64): upgrade onnxruntime, or re-export with "
            f"`gen export --precision int8 --int8-kernel dynamic` ({text[:160]})"
        )
    if "protobuf" in lowered or "parsing failed" in lowered or "invalid_protobuf" in lowered or "load model" in lowered:
        return ModelError(f"{path} is not an ONNX model (onnxruntime cannot parse it)")
    return ModelError(f"{path}: onnxruntime cannot load it: {text}")


def _open_session(ort, path: Path, so, device: str, cuda_graph: bool):
    """(session, 'cpu' | 'cuda', CUDA graphs on?): CUDA only where onnxruntime-gpu is installed
    AND the session really got the CUDA provider."""
    cpu = ["CPUExecutionProvider"]
    if device in ("auto", "cuda"):
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" in available:
            _preload_cuda_libraries(ort, quiet=device == "auto")
            options = {"device_id": "0"}
            if cuda_graph:
                options["enable_cuda_graph"] = "1"
            session = None
            error = None
            graph = cuda_graph
            with _quiet_onnxruntime(ort), _stderr_to_devnull(device == "auto"):
                try:
                    session = _make_session(ort, path, so, [("CUDAExecutionProvider", options), *cpu])
                except Exception as e:  # noqa: BLE001 - onnxruntime raises several kinds
                    error = e
                if error is not None and cuda_graph:
                    # a graph with nodes that CUDA graphs cannot hold: try without capture
                    try:
                        session = _make_session(ort, path, so, [("CUDAExecutionProvider", {"device_id": "0"}), *cpu])
                        error = None
                        graph = False
                    except Exception as e:  # noqa: BLE001
                        error = e
            if session is not None and session.get_providers()[:1] == ["CUDAExecutionProvider"]:
                return session, "cuda", graph
            if error is not None and not _is_provider_error(error):
                raise _open_error(path, error, ort.__version__)
            if device == "cuda":
                why = f": {str(error).splitlines()[0]}" if error is not None else ""
                raise DeviceError(f"device='cuda' but onnxruntime could not start its CUDA provider (no usable GPU or CUDA libraries){why}; use device='cpu' or 'auto'")
        elif device == "cuda":
            raise DeviceError(
                "device='cuda' but this onnxruntime has no CUDA support "
                f"(providers: {', '.join(available)}): pip install \"chargen[gpu]\" on a machine "
                "with an NVIDIA GPU, or use device='cpu' or 'auto'"
            )
    try:
        return _make_session(ort, path, so, cpu), "cpu", False
    except Exception as e:  # noqa: BLE001
        raise _open_error(path, e, ort.__version__) from None


_preloaded = False


def _preload_cuda_libraries(ort, quiet: bool) -> None:
    """Let onnxruntime-gpu find CUDA and cuDNN installed as pip packages (nvidia-*-cu13, as
    `onnxruntime-gpu[cuda,cudnn]` or a CUDA build of torch brings them): its CUDA provider is
    loaded by the dynamic linker, which never looks in site-packages, so without this a machine
    with no system-wide CUDA falls back to the CPU. A system-wide CUDA needs nothing; once per process."""
    global _preloaded
    if _preloaded or not hasattr(ort, "preload_dlls"):
        return
    _preloaded = True
    import io

    with contextlib.redirect_stdout(io.StringIO()), _stderr_to_devnull(quiet):  # it print()s its warnings
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - then the session start says what is missing
            pass


def _is_provider_error(e: Exception) -> bool:
    text = str(e).lower()
    return any(w in text for w in ("cuda", "cudnn", "provider", "libcu", "gpu", "graph"))


@contextlib.contextmanager
def _stderr_to_devnull(enabled: bool):
    """While probing CUDA in device='auto': what the CUDA libraries print on a machine without
    a usable GPU goes to /dev/null, not to the user's terminal (fd 2, since C code writes it)."""
    if not enabled:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
