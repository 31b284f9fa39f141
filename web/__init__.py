"""chargen.web: generation in a browser tab, with no server.

    write_folder("model-int8.onnx", "site/")   # what `gen web MODEL OUT/` does

writes a static folder: index.html (a playground that generates in the tab), the model file,
chargen.js (the ES module web apps import: load a model, generate with GenerationOptions'
names, an async iterator of characters, cancel), its Web Worker and engine, and chargen.wasm
(csrc/'s int8 step and sampler compiled to WebAssembly, shipped built: web/build.py). Nothing
in it comes from another origin; any static host serves it, `python -m http.server` included.

The model is read and checked here first (chargen.runtime.onnx_file), so a file the page could
not run fails at `gen web` time with one line (WebError), not in the browser.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from chargen.runtime import contract
from chargen.runtime.onnx_file import OnnxFileError, read_initializers, read_metadata

__all__ = ["STATIC", "PAGE_FILES", "WebError", "write_folder"]

STATIC = Path(__file__).resolve().parent / "static"
# What the page needs, beside the model (index.html gets the model's file name).
PAGE_FILES = ["index.html", "chargen.js", "worker.js", "engine.js", "onnx.js", "model.js", "reference.js", "chargen.wasm"]


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
    if precision != "int8":
        raise WebError(f"{path}: the page runs int8 models (gen export --precision int8), and this one is {precision}")
    if kernel != "dynamic":
        raise WebError(f"{path}: the page runs int8 models with --int8-kernel dynamic, and this one has {kernel}")
    config = meta.get(contract.META_CONFIG, "{}")
    try:
        layers = int(json.loads(config)["layers"])
    except (ValueError, KeyError, TypeError):
        raise WebError(f"{path}: its {contract.META_CONFIG} metadata is not a model config") from None
    names = contract.int8_weight_names(layers)
    try:
        weights = read_initializers(path, names)
    except OnnxFileError as e:
        raise WebError(str(e)) from None
    optional = {n for n in names if n.startswith(("gh_rz_", "gi_l")) and n.endswith("_b")}
    missing = [n for n in names if n not in weights and n not in optional]
    if missing:
        raise WebError(f"{path}: not chargen's int8 step graph (no initializer {missing[0]!r})")
    return meta


def write_folder(model, out) -> Path:
    """Write the page's folder for `model` to `out` (made if absent; a folder with files of its
    own is refused, one that `gen web` wrote before is overwritten). Returns out. Raises
    WebError."""
    model, out = Path(model), Path(out)
    if not model.is_file():
        raise WebError(f"{model}: no such model file")
    check_model(model)
    if out.exists() and not out.is_dir():
        raise WebError(f"{out}: exists and is not a folder")
    ours = set(PAGE_FILES) | {model.name}
    if out.is_dir():
        theirs = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if theirs:
            raise WebError(f"{out}: the folder has files of its own ({theirs[0]}, ...); give a new or empty folder")
    missing = [f for f in PAGE_FILES if not (STATIC / f).is_file()]
    if missing:
        raise WebError(f"chargen's page is incomplete here ({STATIC / missing[0]} is missing): reinstall chargen")
    if model.name in PAGE_FILES or "/" in model.name or '"' in model.name or "<" in model.name or "&" in model.name:
        raise WebError(f"{model}: rename the model file (the page needs a plain file name ending in .onnx)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in PAGE_FILES:
            if name == "index.html":
                page = (STATIC / name).read_text(encoding="utf-8").replace("__MODEL__", model.name)
                (out / name).write_text(page, encoding="utf-8")
            else:
                shutil.copyfile(STATIC / name, out / name)
        if model.resolve() != (out / model.name).resolve():
            shutil.copyfile(model, out / model.name)
    except OSError as e:
        raise WebError(f"{out}: cannot write the folder: {e.strerror or e}") from None
    return out
