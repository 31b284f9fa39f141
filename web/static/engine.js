// The engines that run a chargen model's step in JavaScript, and generation on top of them.
//
//   const wasm = await loadWasm(urlOrBytes);          // chargen.wasm: the int8 step and the sampler
//   const engine = await openEngine(modelBytes, {wasm, ort});   // checked against ReferenceStep first
//   const gen = new Generation(engine, options);      // GenerationOptions' names and meanings
//   await gen.feed("ROMEO: "); for (let c; (c = await gen.next()) !== null;) ...   // a character at a time
//
// int8 models (--int8-kernel dynamic) run on chargen's own int8 step compiled to WebAssembly
// (web/chargen_wasm.c over csrc/): the same C and integer products as `gen sample --engine
// chargen`, on one thread. fp32 and fp16 models run on onnxruntime-web's WASM backend (ort: the
// module, options.ortWasm: its .wasm bytes), one session.run a step; both draw with chargen's
// C sampler in wasm, so a seed gives the RNG stream it gives natively. Every engine runs CHECK_STEPS steps beside the JavaScript reference
// (reference.js) before it is used, each from the reference's state, and is refused past
// TOLERANCE, as the native int8 step is checked against onnxruntime.

import { OnnxFileError } from "./onnx.js";
import { encode, readModel } from "./model.js";
import { ReferenceStep, stepWeights } from "./reference.js";

export const CHECK_STEPS = 6;
export const TOLERANCE = 1e-4; // max |difference| of logits and state against the reference

export class EngineError extends Error {
  constructor(message) {
    super(message);
    this.name = "EngineError";
  }
}

// The wasm module's exports from a URL, bytes or a compiled WebAssembly.Module.
export async function loadWasm(source) {
  let module;
  if (source instanceof WebAssembly.Module) module = source;
  else if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) module = await WebAssembly.compile(source);
  else {
    const response = await fetch(source);
    if (!response.ok) throw new EngineError(`cannot load ${source}: HTTP ${response.status}`);
    module = await WebAssembly.compile(await response.arrayBuffer());
  }
  const instance = await WebAssembly.instantiate(module, {});
  return instance.exports;
}

function cstring(wasm, ptr) {
  const bytes = new Uint8Array(wasm.memory.buffer, ptr);
  return new TextDecoder().decode(bytes.subarray(0, bytes.indexOf(0)));
}

// ------------------------------------------------------------------ chargen's int8 step in wasm
export class WasmInt8Engine {
  constructor(wasm, info, weights) {
    const { layers: L, hidden: H, vocabSize: V } = info;
    this.name = "chargen-wasm-int8";
    this.wasm = wasm;
    this.info = info;
    const w = stepWeights(info, weights); // throws OnnxFileError for a file that does not fit
    const m = wasm.cg_new(L, H, V);
    if (!m) throw new EngineError(`cannot allocate the int8 step (L=${L} H=${H} V=${V}) in WebAssembly memory`);
    this.m = m;
    const temps = [];
    const put = (array) => { // a copy of array's bytes in wasm memory (freed after the setup)
      if (!array) return 0;
      const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
      const p = wasm.cg_malloc(bytes.length);
      if (!p) throw new EngineError("out of WebAssembly memory while loading the model");
      temps.push(p);
      new Uint8Array(wasm.memory.buffer, p, bytes.length).set(bytes);
      return p;
    };
    const ok = (status, what) => {
      if (status !== 0) throw new EngineError(`the int8 step refused ${what} (status ${status})`);
    };
    try {
      ok(wasm.cg_set_table(m, put(w.table)), "the table");
      ok(wasm.cg_set_head(m, put(w.head_w_t), put(w.head_b)), "the head");
      w.layer.forEach((lw, k) => {
        ok(wasm.cg_set_b_hh(m, k, put(lw.b_rz), put(lw.b_n)), `layer ${k}'s bias`);
        ok(wasm.cg_set_matrix(m, k, 0, put(lw.hh.w), put(lw.hh.scale), lw.hh.scale.length, 0), `layer ${k}'s W_hh`);
        if (k) {
          ok(wasm.cg_set_matrix(m, k, 1, put(lw.ih.w), put(lw.ih.scale), lw.ih.scale.length, put(lw.b_ih)),
            `layer ${k}'s W_ih`);
        }
      });
      ok(wasm.cg_ready(m), "the model");
    } catch (e) {
      wasm.cg_delete(m);
      throw e;
    } finally {
      for (const p of temps) wasm.cg_free(p);
    }
    this.sampler = new WasmSampler(wasm, V);
  }

  // One step with token from the current state; the logits (a view valid until the next call).
  step(token) {
    const status = this.wasm.cg_step(this.m, token);
    if (status !== 0) throw new EngineError(`the int8 step failed (status ${status}) on token ${token}`);
    return this.logits();
  }

  logits() {
    return new Float32Array(this.wasm.memory.buffer, this.wasm.cg_logits(this.m), this.info.vocabSize);
  }

  state() {
    return new Float32Array(this.wasm.memory.buffer, this.wasm.cg_state(this.m), this.info.layers * this.info.hidden);
  }

  setState(h) {
    this.state().set(h);
  }

  reset() {
    this.wasm.cg_reset(this.m);
  }

  // An id drawn from the current logits by chargen's sampler.
  sample(temperature, topK, topP) {
    return this.sampler.draw(this.wasm.cg_logits(this.m), this.info.vocabSize, temperature, topK, topP);
  }

  dispose() {
    if (this.m) this.wasm.cg_delete(this.m);
    this.sampler.dispose();
    this.m = 0;
  }
}

// chargen's C sampler (csrc/sampler.c) in wasm: its RNG stream 0 of a seed, as Generator's.
export class WasmSampler {
  constructor(wasm, V) {
    this.wasm = wasm;
    this.s = wasm.cg_sampler_new(V);
    if (!this.s) throw new EngineError("cannot allocate the sampler in WebAssembly memory");
  }

  seed(seed) {
    const s = BigInt.asUintN(64, BigInt(seed));
    this.wasm.cg_sampler_seed(this.s, Number(s & 0xffffffffn), Number(s >> 32n));
  }

  // logits: a pointer into wasm memory (the int8 engine's), or a Float32Array (copied in)
  draw(logits, V, temperature, topK, topP) {
    let ptr = logits;
    if (typeof logits !== "number") {
      ptr = this.wasm.cg_sampler_logits(this.s);
      new Float32Array(this.wasm.memory.buffer, ptr, V).set(logits);
    }
    const id = this.wasm.cg_sampler_draw(this.s, ptr, V, temperature, topK, topP);
    if (id < 0) throw new EngineError(`the sampler failed: ${cstring(this.wasm, this.wasm.cg_status_str(id))}`);
    return id;
  }

  dispose() {
    if (this.s) this.wasm.cg_sampler_delete(this.s);
    this.s = 0;
  }
}

// ------------------------------------------------------------------ onnxruntime-web (fp32, fp16)
export class OrtEngine {
  // ort: onnxruntime-web's module (its WASM backend, one thread); ortWasm: its .wasm bytes, or
  // null for ort's own loading; wasm: chargen.wasm's exports (the sampler).
  static async create(ort, ortWasm, bytes, info, wasm) {
    ort.env.wasm.numThreads = 1;
    if (ortWasm) ort.env.wasm.wasmBinary = ortWasm;
    let session;
    try {
      session = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ["wasm"] });
    } catch (e) {
      throw new EngineError(`onnxruntime-web cannot open the model: ${e.message}`);
    }
    return new OrtEngine(ort, session, info, wasm);
  }

  constructor(ort, session, info, wasm) {
    const { layers: L, hidden: H, vocabSize: V } = info;
    this.name = `onnxruntime-web-${info.precision}`;
    this.ort = ort;
    this.session = session;
    this.info = info;
    this.token = new BigInt64Array(1);
    this.h = new Float32Array(L * H);
    this.out = new Float32Array(V);
    this.sampler = new WasmSampler(wasm, V);
  }

  async step(token) {
    const { layers: L, hidden: H } = this.info, ort = this.ort;
    this.token[0] = BigInt(token);
    const result = await this.session.run({
      token: new ort.Tensor("int64", this.token, [1]),
      h: new ort.Tensor("float32", this.h, [L, 1, H]),
    });
    this.h = result.h_out.data;
    this.out = result.logits.data;
    return this.out;
  }

  logits() {
    return this.out;
  }

  state() {
    return this.h;
  }

  setState(h) {
    this.h = Float32Array.from(h);
  }

  reset() {
    this.h = new Float32Array(this.info.layers * this.info.hidden);
    this.out = new Float32Array(this.info.vocabSize);
  }

  sample(temperature, topK, topP) {
    return this.sampler.draw(this.out, this.info.vocabSize, temperature, topK, topP);
  }

  dispose() {
    this.session.release();
    this.sampler.dispose();
  }
}

// ------------------------------------------------------------------ the check at load
// The engine's step beside the reference over `steps` tokens, each from the reference's state:
// the largest difference of logits and state, or EngineError past TOLERANCE.
export async function checkEngine(engine, reference, steps = CHECK_STEPS) {
  const { layers: L, hidden: H, vocabSize: V } = engine.info;
  let h = new Float64Array(L * H), worst = 0;
  for (let i = 0; i < steps; i++) {
    const token = (i * 7 + 3) % V;
    engine.setState(Float32Array.from(h));
    const logits = await engine.step(token), state = engine.state();
    const want = reference.step(token, h);
    for (let j = 0; j < V; j++) worst = Math.max(worst, Math.abs(logits[j] - want.logits[j]));
    for (let j = 0; j < L * H; j++) worst = Math.max(worst, Math.abs(state[j] - want.h[j]));
    h = want.h;
  }
  engine.reset();
  if (!(worst <= TOLERANCE)) {
    throw new EngineError(`the ${engine.name} engine disagrees with the reference step on this model ` +
      `(logits or state ${worst.toExponential(2)} apart over ${steps} steps, more than ${TOLERANCE})`);
  }
  return worst;
}

// An engine for the model file's bytes, checked. options.wasm: loadWasm's exports.
export async function openEngine(bytes, options = {}) {
  const { info, weights } = readModel(bytes);
  let engine;
  const which = options.engine || "auto"; // "auto", "chargen" or "onnxruntime-web"
  if (!["auto", "chargen", "onnxruntime-web"].includes(which)) {
    throw new EngineError(`engine must be auto, chargen or onnxruntime-web, not ${which}`);
  }
  if (which === "chargen" && info.precision !== "int8") {
    throw new EngineError(`engine chargen runs int8 models, and this one is ${info.precision}`);
  }
  if (info.precision === "int8" && which !== "onnxruntime-web") {
    if (info.int8Kernel !== "dynamic") {
      throw new OnnxFileError(`this page runs int8 models exported with --int8-kernel dynamic (MatMulInteger), ` +
        `and this one has ${info.int8Kernel}: re-export it with gen export --precision int8`);
    }
    if (!options.wasm) throw new EngineError("int8 models need chargen.wasm (options.wasm)");
    engine = new WasmInt8Engine(options.wasm, info, weights);
  } else {
    if (!options.ort) {
      throw new EngineError(`${info.precision} models run on onnxruntime-web, which this page does not have ` +
        "(gen web puts it beside the page for fp32 and fp16 models)");
    }
    if (!options.wasm) throw new EngineError("the sampler needs chargen.wasm (options.wasm)");
    engine = await OrtEngine.create(options.ort, options.ortWasm, bytes, info, options.wasm);
  }
  const reference = new ReferenceStep(info, weights);
  engine.checked = await checkEngine(engine, reference, options.checkSteps ?? CHECK_STEPS);
  return engine;
}

// ------------------------------------------------------------------ generation
// GenerationOptions (chargen.runtime.generator), checked the same way: {temperature = 1, top_k = 0,
// top_p = 1, seed = null (random), max_length = 1000, stop = null}; throws a RangeError/TypeError.
export function generationOptions(options = {}) {
  const known = ["temperature", "top_k", "top_p", "seed", "max_length", "stop"];
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw new TypeError(`unknown option ${key}: the options are ${known.join(", ")}`);
  }
  const o = { temperature: 1, top_k: 0, top_p: 1, seed: null, max_length: 1000, stop: null, ...options };
  const t = o.temperature;
  if (typeof t !== "number" || !Number.isFinite(t) || t < 0) {
    throw new RangeError(`temperature must be a finite number >= 0 (0 = greedy), not ${JSON.stringify(t)}`);
  }
  if (!Number.isInteger(o.top_k) || o.top_k < 0) {
    throw new RangeError(`top_k must be an integer >= 0 (0 = no top-k cut), not ${JSON.stringify(o.top_k)}`);
  }
  if (typeof o.top_p !== "number" || !(o.top_p > 0 && o.top_p <= 1)) {
    throw new RangeError(`top_p must be in (0, 1] (1 = no nucleus cut), not ${JSON.stringify(o.top_p)}`);
  }
  if (!Number.isInteger(o.max_length) || o.max_length < 0) {
    throw new RangeError(`max_length must be an integer >= 0, not ${JSON.stringify(o.max_length)}`);
  }
  if (o.seed !== null && o.seed !== undefined) {
    let s;
    try {
      s = BigInt(o.seed);
    } catch {
      s = -1n;
    }
    if ((typeof o.seed === "number" && !Number.isSafeInteger(o.seed)) || s < 0n || s >= 1n << 64n) {
      throw new RangeError(`a seed is an integer in [0, 2**64) (a BigInt or a decimal string past 2**53), not ${String(o.seed)}`);
    }
    o.seed = s;
  } else {
    const words = new Uint32Array(2);
    crypto.getRandomValues(words);
    o.seed = (BigInt(words[1]) << 32n) | BigInt(words[0]);
  }
  if (o.stop !== null && o.stop !== undefined) {
    const stops = typeof o.stop === "string" ? [o.stop] : Array.from(o.stop);
    if (!stops.length || stops.some((s) => typeof s !== "string" || !s)) {
      throw new RangeError(`stop must be a non-empty string or a list of them, not ${JSON.stringify(o.stop)}`);
    }
    o.stop = stops;
  } else o.stop = [];
  return o;
}

// One stream of text from an engine: feed a start string, then iterate characters until
// max_length or a stop string (which is part of the output), as Generator does at batch 1.
export class Generation {
  constructor(engine, options = {}) {
    this.engine = engine;
    this.options = generationOptions(options);
    this.seed = this.options.seed;
    engine.sampler.seed(this.seed);
    engine.reset();
    this.primed = false;
    this.generated = 0;
    this.finished = false;
    this.tail = "";
    this.keep = Math.max(0, ...this.options.stop.map((s) => [...s].length));
  }

  async feed(text, unknown = "error") {
    const ids = encode(this.engine.info, text, unknown);
    if (!this.primed && !ids.length) {
      throw new RangeError("the start string is empty: the model needs at least one character to start from");
    }
    for (const id of ids) await this.engine.step(id);
    this.primed = this.primed || ids.length > 0;
    this.generated = 0;
    this.finished = false;
    this.tail = "";
  }

  get done() {
    return this.finished || this.generated >= this.options.max_length;
  }

  // The next character (sampled from the current logits, then fed to the step), or null when done.
  async next() {
    if (this.done) return null;
    const { temperature, top_k, top_p, stop } = this.options;
    const id = this.engine.sample(temperature, top_k, top_p);
    await this.engine.step(id);
    this.generated++;
    const c = this.engine.info.vocab[id];
    if (stop.length) {
      this.tail = [...(this.tail + c)].slice(-this.keep).join("");
      if (stop.some((s) => this.tail.endsWith(s))) this.finished = true;
    }
    return c;
  }

  async *[Symbol.asyncIterator]() {
    for (let c = await this.next(); c !== null; c = await this.next()) yield c;
  }
}

// The start string gen sample uses by default: a newline, or the model's first symbol.
export function defaultStart(info) {
  return info.vocab.includes("\n") ? "\n" : info.vocab[0];
}
