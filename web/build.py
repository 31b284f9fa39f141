"""The WebAssembly build of csrc/'s int8 step and sampler: web/static/chargen.wasm.

    python web/build.py                  # rebuild web/static/chargen.wasm from csrc/ (needs clang-14)
    python web/build.py --check          # rebuild to a temporary file, exit 1 if its bytes differ

The package ships the built file (pip users need no WebAssembly toolchain); the tests rebuild it
and compare the bytes, so it cannot drift from the C. The build is reproducible: one clang
command with fixed flags and sources in a fixed order, no debug information (so no paths), and
the linker keeps only the exported functions (names are given in the C by export_name).

Toolchain (Debian 12): clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32. wasi-libc gives
malloc and the string functions; nothing the module calls needs a WASI import, so the module has
no imports at all and runs in a browser or Node as it is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the source checkout: csrc/ beside web/
WASM = Path(__file__).resolve().parent / "static" / "chargen.wasm"

# The C of the module, in link order: the one list of them (csrc/ files, then web/'s glue).
CSRC_SOURCES = ["int8_matrix.c", "int8_matvec.c", "int8_gemm.c", "int8_step.c", "pool.c", "gru_gates.c", "sampler.c"]
GLUE = "web/chargen_wasm.c"

CLANG = "clang-14"
# -msimd128: 128-bit SIMD, which the compiler's vectoriser uses in the step's plain-C loops;
# CHARGEN_NO_THREADS: csrc/pool.c runs every loop on the caller (no pthreads in the module);
# -nostartfiles, --no-entry: a library (no main), its exports by name only.
FLAGS = [
    "--target=wasm32-wasi", "-msimd128", "-O3", "-std=c99", "-fno-trapping-math", "-DCHARGEN_NO_THREADS",
    "-Wall", "-Wno-unused-function", "-nostartfiles",
    "-Wl,--no-entry", "-Wl,--strip-all", "-Wl,--gc-sections", "-Wl,-z,stack-size=1048576",
]


class BuildError(RuntimeError):
    """The toolchain is missing, or the compiler failed; the message says which."""


def sources(root: Path = ROOT) -> list[Path]:
    return [root / "csrc" / s for s in CSRC_SOURCES] + [root / GLUE]


def command(out: Path, root: Path = ROOT) -> list[str]:
    """The clang command line, run in `root` with relative paths (no absolute path reaches the
    compiler, so none can reach the output)."""
    return [CLANG, *FLAGS, "-Icsrc", *[str(s.relative_to(root)) for s in sources(root)], "-o", str(out)]


def build(out: Path = WASM, root: Path = ROOT) -> Path:
    """Compile the module to `out`. Raises BuildError."""
    if shutil.which(CLANG) is None:
        raise BuildError(f"{CLANG} is not installed: apt-get install clang-14 lld-14 wasi-libc "
                         "libclang-rt-14-dev-wasm32")
    missing = [str(s) for s in sources(root) if not s.is_file()]
    if missing:
        raise BuildError(f"no such source: {missing[0]} (a source checkout is needed to build)")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command(out, root), cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"{CLANG} failed:\n{done.stderr.strip()}")
    out.chmod(0o644)  # the linker marks it executable; it is data to the page
    return out


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = build(Path(tmp) / "chargen.wasm")
            if fresh.read_bytes() != WASM.read_bytes():
                print(f"{WASM} differs from a build of csrc/: run python web/build.py and commit it", file=sys.stderr)
                return 1
        print(f"{WASM}: the same bytes as a fresh build")
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(build())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
