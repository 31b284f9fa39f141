"""chargen.wasm (web/static/) is what web/build.py makes from csrc/ today, byte for byte: the
package ships it built, and this test keeps it from drifting from the C. In CI (env CI set) a
missing toolchain fails the test rather than skipping it."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from webkit import node, require

ROOT = Path(__file__).resolve().parents[2]


def build_module():
    spec = importlib.util.spec_from_file_location("chargen_web_build", ROOT / "web" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_wasm_is_a_fresh_build_of_csrc(tmp_path):
    build = build_module()
    require(shutil.which(build.CLANG), build.CLANG, "apt-get install clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32")
    # built from a copy of the sources in another folder: the bytes do not depend on where
    for sub in ("csrc", "web"):
        shutil.copytree(ROOT / sub, tmp_path / sub, ignore=shutil.ignore_patterns("static", "__pycache__"))
    fresh = build.build(tmp_path / "chargen.wasm", root=tmp_path)
    shipped = build.WASM.read_bytes()
    assert fresh.read_bytes() == shipped, (
        "web/static/chargen.wasm differs from a build of csrc/: run `python web/build.py` and commit it")


def test_the_module_needs_no_imports_and_runs_the_simd_kernel(web_models):
    # no imports: it instantiates in any page or worker as it is; the kernel is the SIMD128 one
    answer = node("check", web_models["int8"], 0)
    assert answer["kernel"] == "wasm-simd128"
    assert answer["worst"] < 1e-5


def test_the_package_ships_the_page_and_the_module():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = data["tool"]["setuptools"]
    assert "chargen.web" in setuptools["packages"] and setuptools["package-dir"]["chargen.web"] == "web"
    from chargen.web import PAGE_FILES, STATIC

    shipped = setuptools["package-data"]["chargen.web"]
    for name in PAGE_FILES:
        assert (STATIC / name).is_file()
        assert any(Path("static", name).match(pattern) for pattern in shipped), name
