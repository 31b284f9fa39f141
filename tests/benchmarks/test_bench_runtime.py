"""benchmarks/bench_runtime.py end to end on a tiny model: every contender runs, the floor is
timed, and the ratios the README quotes come out of one run."""

import importlib.util
import math
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime.quantization")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_runtime.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_runtime", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_runtime_reports_every_contender_and_ratio(tmp_path, capsys):
    bench = load_script()
    out = tmp_path / "figures.json"
    results = bench.main(["--embedding-dim", "8", "--hidden-size", "32", "--seconds", "0.05",
                          "--batch", "1", "--batch", "3", "--json", str(out)])
    assert out.exists()
    names = {(r["name"], r["batch"]) for r in results["rows"]}
    for B in (1, 3):
        for p in bench.PRECISIONS:
            assert (f"runtime {p} (default options)", B) in names
        assert (bench.CHARGEN, B) in names
        for other in (*bench.FLOORS.values(), "ort+numpy fp32 (session.run loop)", "torch eager fp32 (nn.GRU step)"):
            assert (other, B) in names
        for kind in ("best", "median"):
            ratios = results["ratios"][str(B)][kind]
            assert set(ratios) == {"int8 / fp32", "int8-nbits / fp32", "int8-chargen / fp32", "int8-chargen / int8",
                                   "fp32 / ort+numpy",
                                   "fp32 / floor", "int8 / floor", "int8-nbits / floor"}
            assert all(math.isfinite(v) and v > 0 for v in ratios.values())
    for r in results["rows"]:
        assert r["chars_per_s"] > 0 and r["step_us"] <= r["median_step_us"]
        if r["name"] in bench.FLOORS.values():  # each floor timed beside the step it bounds
            assert bench.FLOORS[r["floor_of"]] == r["name"]
            assert 0 < r["floor_fraction"] and r["step_beside_us"] > 0
        if "graph_us" in r:  # the split comes from one loop of the step, so its parts add up
            parts = r["graph_us"] + r["sampler_us"] + r["rest_us"]
            assert r["rest_us"] >= 0 and parts == pytest.approx(r["split_step_us"])
    assert results["cold_start"]["torch_imported"] is False
    from chargen.runtime import _int8

    packed, peak = _int8.packed_kernel(), results["int8_peak"]
    assert (peak is None) == (packed is None)
    if peak:  # the int8 rows against the peak measured first: the kernel's inner loop, the weights' read
        assert peak["kernel"] == packed[0] and peak["macs_per_s"] > 1e8 and peak["read_bytes_per_s"] > 1e8
        assert peak["macs_per_char"] == 3 * 32 * 32  # the one layer's W_hh (layer 0's W_ih is a table lookup)
        for r in results["rows"]:
            if r["name"] in (bench.runtime_name("int8"), bench.CHARGEN):
                assert 0 < r["product_of_peak"] and 0 < r["weights_of_read_rate"]
        kernels = {r["batch"]: r["kernel"] for r in results["rows"] if r["name"] == bench.CHARGEN}
        assert kernels[3].startswith(f"{packed[0]} packed") if packed[1] <= 3 else kernels[3] == _int8.kernel()
    printed = capsys.readouterr().out
    assert "B=1 speed ratios (median slices)" in printed and "cold start" in printed


def test_int8_floors_are_the_exports_quantized_products_and_a_float_head(tmp_path):
    import onnx

    from chargen.export.graph import HEAD_MATMUL

    bench = load_script()
    paths, *_ = bench.build_models(tmp_path, 8, 32, 2)
    for precision, op in (("fp32", "MatMul"), ("int8", "MatMulInteger"), ("int8-nbits", "MatMulNBits")):
        nodes = onnx.load(paths[bench.FLOORS[precision]]).graph.node
        head = [n for n in nodes if n.name == HEAD_MATMUL]
        assert len(head) == 1 and head[0].op_type == "MatMul"
        # two recurrent matrices and layer 1's input one, each quantized like the export's
        assert sum(n.op_type == op for n in nodes if n.name != HEAD_MATMUL) == 3
