"""benchmarks/bench_gemv.c builds with the system's C compiler, checks its int8 kernel against
the plain sum before timing it, and prints a figure per thread count."""

import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gemv.c"


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path_factory.mktemp("gemv") / "bench_gemv"
    subprocess.run([cc, "-O2", "-march=native", "-fopenmp", str(SOURCE), "-o", str(exe)], check=True)
    return exe


def test_bench_gemv_checks_then_times_each_thread_count(probe):
    out = subprocess.run([str(probe), "2", "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("W: 3072 x 1024; int8 kernel:")
    assert [line.split(" ")[0] for line in lines[1:]] == ["1", "2"]
    assert all("int8" in line and "float32" in line for line in lines[1:])


def test_bench_gemv_refuses_bad_arguments(probe):
    out = subprocess.run([str(probe), "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "usage" in out.stderr
