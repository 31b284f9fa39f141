// The Web Worker behind chargen.js: it loads the model, checks its engine and generates, so the
// page never freezes. Messages in: {type: "load", model: ArrayBuffer | URL string, engine},
// {type: "generate", id, prompt, options, unknown}, {type: "cancel", id}. Messages out:
// {type: "loaded", info}, {type: "chars", id, text}, {type: "done", id, reason, generated},
// {type: "error", id?, name, message}.

import { Generation, defaultStart, loadWasm, openEngine } from "./engine.js";
import { readModelFile } from "./onnx.js";

// whether the file says int8 (a look at its metadata; openEngine reads it in full)
const isInt8 = (bytes) => readModelFile(bytes, []).metadata["chargen.precision"] === "int8";

let engine = null;
let running = null; // {id, cancelled}
const SLICE_MS = 25; // generate this long between looks at the message queue (a cancel)

// a zero-delay yield to the event loop (setTimeout(0) is clamped to 4 ms when nested)
const channel = new MessageChannel();
const waiting = [];
channel.port1.onmessage = () => waiting.shift()();
const yieldToEvents = () => new Promise((resolve) => { waiting.push(resolve); channel.port2.postMessage(0); });

function report(e, id) {
  postMessage({ type: "error", id, name: e.name || "Error", message: e.message || String(e) });
}

async function load(source, which) {
  const start = performance.now();
  let bytes = source;
  if (typeof source === "string") {
    const response = await fetch(source);
    if (!response.ok) throw new Error(`cannot load the model ${source}: HTTP ${response.status}`);
    bytes = await response.arrayBuffer();
  }
  const wasm = await loadWasm(new URL("chargen.wasm", import.meta.url));
  let ort = null, ortWasm = null;
  if (which === "onnxruntime-web" || !isInt8(bytes)) { // fp32, fp16: onnxruntime-web, where gen web put it
    try {
      ort = await import("./ort.wasm.bundle.min.mjs");
      const response = await fetch(new URL("ort-wasm-simd-threaded.wasm", import.meta.url));
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      ortWasm = await response.arrayBuffer();
    } catch (e) {
      ort = null; // openEngine says what is missing
    }
  }
  engine = await openEngine(bytes, { wasm, ort, ortWasm, engine: which });
  const { vocab, layers, hidden, vocabSize, precision, int8Kernel, corpus, valLoss } = engine.info;
  postMessage({
    type: "loaded",
    info: { vocab, layers, hidden, vocabSize, precision, int8Kernel, corpus, valLoss, engine: engine.name,
            checked: engine.checked, bytes: bytes.byteLength, loadMs: performance.now() - start },
  });
}

async function generate({ id, prompt, options, unknown }) {
  const gen = new Generation(engine, options);
  await gen.feed(prompt ?? defaultStart(engine.info), unknown || "error");
  const me = { id, cancelled: false };
  running = me;
  let first = true;
  while (!gen.done) {
    const until = performance.now() + SLICE_MS;
    let text = "";
    do {
      const c = await gen.next();
      if (c === null) break;
      text += c;
      if (first) break; // the first character goes out alone: time to first character
    } while (performance.now() < until);
    first = false;
    if (text) postMessage({ type: "chars", id, text });
    await yieldToEvents();
    if (me.cancelled) break;
  }
  running = null;
  const reason = me.cancelled ? "cancelled" : gen.finished ? "stop" : "length";
  postMessage({ type: "done", id, reason, generated: gen.generated, seed: String(gen.seed) });
}

onmessage = async ({ data }) => {
  try {
    if (data.type === "load") await load(data.model, data.engine);
    else if (data.type === "generate") {
      if (!engine) throw new Error("no model loaded");
      await generate(data);
    } else if (data.type === "cancel") {
      if (running && running.id === data.id) running.cancelled = true;
    }
  } catch (e) {
    running = null;
    report(e, data.id);
  }
};
