"""chars/s at batch 1 in the browser and under Node: chargen's int8 step in WebAssembly
(chargen.wasm) against onnxruntime-web's WASM backend (one thread) on the same int8 model, and
onnxruntime-web on the fp32 model, for the tutorial-size model (Embedding 256 -> GRU 1024 -> 65
symbols, random weights). Every engine generates the same way: chargen's sampler draws each
character from the step's logits (seed 1, temperature 1) and feeds it back.

    python benchmarks/bench_web.py                 # about a minute
    python benchmarks/bench_web.py --chars 4000 --hidden 512

Browser: the folder `gen web` writes (plus onnxruntime-web's files, and a page that times the
JavaScript API in its Web Worker), served from 127.0.0.1 to headless chromium. Node: the same
JavaScript and wasm (tests/web/node_driver.mjs). The figures go to docs/speed.md with the CPU.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "web" / "node_driver.mjs"
ENGINES = [("int8", "chargen"), ("int8", "onnxruntime-web"), ("fp32", "onnxruntime-web")]

BENCH_PAGE = """<!doctype html><meta charset="utf-8"><title>bench</title><script type="module">
import { load } from "./chargen.js";
window.bench = async (file, engine, n) => {
  const model = await load(file, { engine });
  const stream = model.generate("\\n", { seed: 1, max_length: n });
  let first = null, count = 0;
  for await (const c of stream) { if (first === null) first = performance.now(); count++; }
  const seconds = (performance.now() - first) / 1000;
  const name = model.info.engine;
  model.dispose();
  return { chars_per_s: (count - 1) / seconds, engine: name };
};
window.ready = true;
</script>"""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_models(folder: Path, hidden: int, embedding: int) -> dict[str, Path]:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]
    from modelkit import model_file

    return {p: model_file(folder / f"{p}.onnx", p, hidden=hidden, embedding=embedding) for p in ("int8", "fp32")}


def node_figures(models, ort_dir: Path, chars: int) -> dict:
    out = {}
    for precision, engine in ENGINES:
        n = chars if engine == "chargen" else max(chars // 8, 200)
        done = subprocess.run(["node", str(DRIVER), "bench", str(models[precision]), str(n), engine],
                              capture_output=True, text=True, env={"ORT_WEB_DIR": str(ort_dir), "PATH": "/usr/bin:/bin"})
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        if "error" in answer:
            raise SystemExit(f"node: {answer['message']}")
        out[(precision, engine)] = answer["chars_per_s"]
    return out


def browser_figures(models, ort_dir: Path, chars: int, folder: Path) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    from chargen.web import ORT_WEB_FILES, write_folder

    site = write_folder(models["int8"], folder / "site")
    for name in ORT_WEB_FILES:
        shutil.copyfile(ort_dir / name, site / name)
    shutil.copyfile(models["fp32"], site / "fp32.onnx")
    (site / "bench.html").write_text(BENCH_PAGE)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(600)
    out = {}
    try:
        driver.get(f"http://127.0.0.1:{httpd.server_address[1]}/bench.html")
        deadline = time.monotonic() + 30
        while not driver.execute_script("return window.ready === true") and time.monotonic() < deadline:
            time.sleep(0.05)
        for precision, engine in ENGINES:
            n = chars if engine == "chargen" else max(chars // 8, 200)
            file = "int8.onnx" if precision == "int8" else "fp32.onnx"
            answer = driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "window.bench(arguments[0], arguments[1], arguments[2]).then(done, e => done({error: e.message}));",
                file, engine, n)
            if "error" in answer:
                raise SystemExit(f"chromium: {answer['error']}")
            out[(precision, engine)] = answer["chars_per_s"]
    finally:
        driver.quit()
        httpd.shutdown()
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chars", type=int, default=4000, help="characters chargen's engine generates (onnxruntime-web: 1/8)")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--embedding", type=int, default=256)
    args = ap.parse_args(argv)
    from chargen.web import onnxruntime_web

    ort_dir = onnxruntime_web()
    with tempfile.TemporaryDirectory() as tmp:
        models = make_models(Path(tmp), args.hidden, args.embedding)
        print(f"CPU: {cpu_name()}; model H={args.hidden} E={args.embedding} V=65, batch 1, one thread")
        node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        figures = {"node": node_figures(models, ort_dir, args.chars),
                   "chromium": browser_figures(models, ort_dir, args.chars, Path(tmp))}
        size = sum(p.stat().st_size for p in (Path(tmp) / "site").iterdir()
                   if p.name not in ("fp32.onnx", "bench.html", "ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm"))
    print(f"{'where':<14} {'model':<6} {'engine':<18} {'chars/s':>9}")
    for where, rows in figures.items():
        label = f"node {node_version}" if where == "node" else where
        for (precision, engine), rate in rows.items():
            print(f"{label:<14} {precision:<6} {engine:<18} {rate:>9,.0f}")
        ratio = rows[("int8", "chargen")] / rows[("int8", "onnxruntime-web")]
        print(f"{label:<14} int8: chargen's wasm step is {ratio:.1f}x onnxruntime-web's")
    print(f"gen web folder of the int8 model: {size / 1e6:.2f} MB")
    return figures


if __name__ == "__main__":
    main()
