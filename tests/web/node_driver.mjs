// The page's JavaScript under Node, for the tests (tests/web/): one command a run, its result as
// one JSON line on stdout, an error as {"error": name, "message": ...}.
//
//   node node_driver.mjs read MODEL.onnx
//   node node_driver.mjs generate MODEL.onnx START OPTIONS_JSON
//   node node_driver.mjs reference MODEL.onnx TOKENS_JSON   the JS reference's logits, step by step
//   node node_driver.mjs check MODEL.onnx OFFSET             the load check, the reference's head bias moved by OFFSET
//   node node_driver.mjs bench MODEL.onnx CHARS [ENGINE]                chars/s at batch 1
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const STATIC = new URL("../../web/static/", import.meta.url);
const { readModelFile } = await import(new URL("onnx.js", STATIC));
const engineJs = await import(new URL("engine.js", STATIC));
const { readModel } = await import(new URL("model.js", STATIC));
const { ReferenceStep } = await import(new URL("reference.js", STATIC));

const [command, path, ...rest] = process.argv.slice(2);
// onnxruntime-web for fp32 and fp16 models: the folder gen web vendors it into (env ORT_WEB_DIR)
const ORT_DIR = process.env.ORT_WEB_DIR;
async function ortOptions() {
  if (!ORT_DIR) return {};
  const ort = await import(new URL("ort.wasm.bundle.min.mjs", `file://${ORT_DIR}/`));
  return { ort, ortWasm: readFileSync(`${ORT_DIR}/ort-wasm-simd-threaded.wasm`) };
}
const wasmBytes = () => readFileSync(fileURLToPath(new URL("chargen.wasm", STATIC)));

async function main() {
  const bytes = readFileSync(path);
  if (command === "read") {
    const { metadata, initializers } = readModelFile(bytes);
    const tensors = {};
    for (const [name, t] of initializers) {
      const raw = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      tensors[name] = { dtype: t.dtype, dims: t.dims, sha256: createHash("sha256").update(raw).digest("hex") };
    }
    return { metadata, tensors };
  }
  if (command === "reference") {
    const { info, weights } = readModel(bytes);
    const ref = new ReferenceStep(info, weights);
    let h = new Float64Array(info.layers * info.hidden);
    const logits = [];
    for (const token of JSON.parse(rest[0])) {
      const out = ref.step(token, h);
      logits.push(Array.from(out.logits));
      h = out.h;
    }
    return { logits, h: Array.from(h) };
  }
  const wasm = await engineJs.loadWasm(wasmBytes());
  if (command === "check") {
    const { info, weights } = readModel(bytes);
    const engine = new engineJs.WasmInt8Engine(wasm, info, weights);
    const ref = new ReferenceStep(info, weights);
    ref.w.head_b = ref.w.head_b.map((b) => b + Number(rest[0]));
    return { worst: await engineJs.checkEngine(engine, ref), kernel: new TextDecoder().decode(
      new Uint8Array(wasm.memory.buffer, wasm.cg_kernel(), 16)).split("\0")[0] };
  }
  if (command === "generate") {
    const [start, optionsJson] = rest;
    const engine = await engineJs.openEngine(bytes, { wasm, ...(await ortOptions()) });
    const options = JSON.parse(optionsJson);
    if (typeof options.seed === "string") options.seed = BigInt(options.seed);
    const gen = new engineJs.Generation(engine, options);
    await gen.feed(start);
    let text = "";
    for await (const c of gen) text += c;
    return { text, checked: engine.checked, engine: engine.name };
  }
  if (command === "bench") {
    const n = Number(rest[0]);
    const engine = await engineJs.openEngine(bytes, { wasm, ...(await ortOptions()), engine: rest[1] || "auto" });
    const gen = new engineJs.Generation(engine, { seed: 1, max_length: n });
    await gen.feed("\n");
    const t0 = performance.now();
    let count = 0;
    for await (const _ of gen) count++;
    const seconds = (performance.now() - t0) / 1000;
    return { chars: count, seconds, chars_per_s: count / seconds, engine: engine.name };
  }
  throw new Error(`unknown command ${command}`);
}

try {
  console.log(JSON.stringify(await main()));
} catch (e) {
  console.log(JSON.stringify({ error: e.name, message: e.message }));
  process.exitCode = 1;
}
