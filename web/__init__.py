"""chargen.web: generation in a browser tab, with no server.

    write_folder("model-int8.onnx", "site/")   # what `gen web MODEL OUT/` does

writes a static folder: index.html (a playground that generates in the tab), the model file,
chargen.js (the ES module web apps import: load a model, generate with GenerationOptions'
names, an async iterator of characters, cancel), its Web Worker and engine, and chargen.wasm
(csrc/'s int8 step and sampler compiled to WebAssembly, shipped built: web/build.py). Nothing
in it comes from another origin; any static host serves it, `python -m http.server` included.

int8 models (--int8-kernel dynamic) run on chargen.wasm. fp32 and fp16 models run on
onnxruntime-web's WASM backend (npm, pinned: ORT_WEB_VERSION), which the folder then holds too
(about 15 MB): taken from a folder given (an onnxruntime-web package, or its dist/), else from
chargen's cache, filled once with `npm pack` and checked against the registry's pinned
integrity hash, so the folder works offline once written.

The model is read and checked here first (chargen.runtime.onnx_file), so a file the page could
not run fails at `gen web` time with one line (WebError), not in the browser.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from chargen.runtime import contract
from chargen.runtime.engine import EngineError, read_int8_weights
from chargen.runtime.onnx_file import OnnxFileError, read_metadata

__all__ = ["STATIC", "PAGE_FILES", "ORT_WEB_VERSION", "ORT_WEB_FILES", "WebError", "onnxruntime_web", "write_folder"]

STATIC = Path(__file__).resolve().parent / "static"
# What the page needs, beside the model (index.html gets the model's file name).
PAGE_FILES = ["index.html", "chargen.js", "worker.js", "engine.js", "onnx.js", "model.js", "reference.js", "chargen.wasm"]

# onnxruntime-web for fp32 and fp16 models: the version, npm's integrity hash of its tarball, and
# the files of its WASM backend the page loads (the ES module with its glue, and the .wasm)
ORT_WEB_VERSION = "1.31.1"
ORT_WEB_INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
ORT_WEB_FILES = ["ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm"]


class WebError(ValueError):
    """The model cannot run in the page, or the folder cannot be written; one line."""


def check_model(path: Path) -> dict[str, str]:
    """The model's metadata, where the page can run it; else WebError saying why."""
    try:
        meta = read_metadata(path)
    except OnnxFileError as e:
        raise WebError(str(e)) from None
    fmt = meta.get(contract.META_FORMAT)
    if fmt is None:
        raise WebError(f"{path}: not a chargen model (no {contract.META_FORMAT} metadata); export it with gen export")
    if fmt != str(contract.FORMAT_VERSION):
        raise WebError(f"{path}: model format {fmt}; this chargen reads format {contract.FORMAT_VERSION}")
    precision = meta.get(contract.META_PRECISION, "fp32")
    kernel = meta.get(contract.META_INT8_KERNEL, contract.DEFAULT_INT8_KERNEL)
    if precision in ("fp32", "fp16"):
        return meta  # onnxruntime-web reads the graph; the page checks it against the reference step
    if precision != "int8":
        raise WebError(f"{path}: precision {precision!r}; the page runs int8, fp32 and fp16 models")
    if kernel != "dynamic":
        raise WebError(f"{path}: the page runs int8 models with --int8-kernel dynamic, and this one has {kernel}")
    config = meta.get(contract.META_CONFIG, "{}")
    try:
        layers = int(json.loads(config)["layers"])
    except (ValueError, KeyError, TypeError):
        raise WebError(f"{path}: its {contract.META_CONFIG} metadata is not a model config") from None
    try:
        read_int8_weights(path, layers)
    except EngineError as e:
        raise WebError(str(e)) from None
    return meta


def _cache() -> Path:
    from chargen.runtime.calibrate import cache_dir

    return cache_dir() / f"onnxruntime-web-{ORT_WEB_VERSION}"


def _from_folder(folder: Path) -> Path:
    """The dist/ folder of an onnxruntime-web package of ORT_WEB_VERSION at `folder` (the package or
    its dist/). Raises WebError."""
    dist = folder / "dist" if (folder / "dist").is_dir() else folder
    package = dist / "package.json" if (dist / "package.json").is_file() else dist.parent / "package.json"
    try:
        version = json.loads(package.read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        raise WebError(f"{folder}: not an onnxruntime-web package (no readable {package})") from None
    if version != ORT_WEB_VERSION:
        raise WebError(f"{folder}: onnxruntime-web {version}; chargen's page is pinned to {ORT_WEB_VERSION}")
    missing = [f for f in ORT_WEB_FILES if not (dist / f).is_file()]
    if missing:
        raise WebError(f"{folder}: onnxruntime-web without {missing[0]}")
    return dist


def _from_npm(cache: Path) -> Path:
    """`npm pack onnxruntime-web@ORT_WEB_VERSION`, its tarball checked against ORT_WEB_INTEGRITY,
    its ORT_WEB_FILES unpacked into `cache`. Raises WebError."""
    npm = shutil.which("npm")
    if npm is None:
        raise WebError(f"fp32 and fp16 models need onnxruntime-web {ORT_WEB_VERSION}: install npm (or give "
                       "--onnxruntime-web with a folder holding the onnxruntime-web package)")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([npm, "pack", f"onnxruntime-web@{ORT_WEB_VERSION}", "--silent"], cwd=tmp,
                              capture_output=True, text=True, timeout=600)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            why = (done.stderr.strip().splitlines() or ["no tarball"])[-1]
            raise WebError(f"npm pack onnxruntime-web@{ORT_WEB_VERSION} failed: {why}")
        data = tarballs[0].read_bytes()
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        if integrity != ORT_WEB_INTEGRITY:
            raise WebError(f"npm gave an onnxruntime-web {ORT_WEB_VERSION} tarball with another hash ({integrity[:24]}...)")
        staging = Path(tempfile.mkdtemp(dir=cache.parent, prefix=cache.name + "."))
        staging.chmod(0o755)
        with tarfile.open(tarballs[0]) as tar:  # the files, and package.json: the cache is a folder _from_folder takes
            for name in ORT_WEB_FILES + ["package.json"]:
                member = f"package/{name}" if name == "package.json" else f"package/dist/{name}"
                with tar.extractfile(member) as src, open(staging / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        try:
            staging.rename(cache)  # whole or not at all: a concurrent writer's copy is as good
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return cache


def onnxruntime_web(source=None) -> Path:
    """A folder holding ORT_WEB_FILES of onnxruntime-web ORT_WEB_VERSION: from `source` (an
    onnxruntime-web package folder or its dist/), else chargen's user cache (CHARGEN_CACHE_DIR, or
    ~/.cache/chargen), filled once from npm. Raises WebError."""
    if source is not None:
        return _from_folder(Path(source))
    cache = _cache()
    if all((cache / f).is_file() for f in ORT_WEB_FILES + ["package.json"]):
        return _from_folder(cache)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        return _from_npm(cache)
    except OSError as e:
        raise WebError(f"{cache}: cannot write onnxruntime-web there: {e.strerror or e}") from None
    except subprocess.TimeoutExpired:
        raise WebError(f"npm pack onnxruntime-web@{ORT_WEB_VERSION} took more than 10 minutes") from None


def write_folder(model, out, onnxruntime_web_from=None) -> Path:
    """Write the page's folder for `model` to `out` (made if absent; a folder with files of its
    own is refused, one that `gen web` wrote before is overwritten). fp32 and fp16 models get
    onnxruntime-web beside the page (onnxruntime_web(onnxruntime_web_from)). Returns out. Raises
    WebError."""
    model, out = Path(model), Path(out)
    if not model.is_file():
        raise WebError(f"{model}: no such model file")
    meta = check_model(model)
    if out.exists() and not out.is_dir():
        raise WebError(f"{out}: exists and is not a folder")
    ours = set(PAGE_FILES) | set(ORT_WEB_FILES) | {model.name}
    if out.is_dir():
        theirs = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if theirs:
            raise WebError(f"{out}: the folder has files of its own ({theirs[0]}, ...); give a new or empty folder")
    ort = None
    if meta.get(contract.META_PRECISION, "fp32") != "int8":
        ort = onnxruntime_web(onnxruntime_web_from)
    missing = [f for f in PAGE_FILES if not (STATIC / f).is_file()]
    if missing:
        raise WebError(f"chargen's page is incomplete here ({STATIC / missing[0]} is missing): reinstall chargen")
    if model.name in ours - {model.name} or "/" in model.name or '"' in model.name or "<" in model.name or "&" in model.name:
        raise WebError(f"{model}: rename the model file (the page needs a plain file name ending in .onnx)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in PAGE_FILES:
            if name == "index.html":
                page = (STATIC / name).read_text(encoding="utf-8").replace("__MODEL__", model.name)
                (out / name).write_text(page, encoding="utf-8")
            else:
                shutil.copyfile(STATIC / name, out / name)
        for name in ORT_WEB_FILES:
            if ort is not None:
                shutil.copyfile(ort / name, out / name)
            elif (out / name).exists():
                (out / name).unlink()  # an int8 folder written over an fp32 one
        if model.resolve() != (out / model.name).resolve():
            shutil.copyfile(model, out / model.name)
    except OSError as e:
        raise WebError(f"{out}: cannot write the folder: {e.strerror or e}") from None
    return out
