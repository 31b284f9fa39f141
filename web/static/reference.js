// One step of a chargen model by the formulas of docs/model-format.md, in plain JavaScript
// (float64, the int8 products summed exactly): the reference that every engine of the page is
// checked against at load (engine.js), as the native int8 step is checked against onnxruntime.
// Slow (a few ms a step for the tutorial model) and simple on purpose.
//
//   const ref = new ReferenceStep(info, weights);   // readModel(bytes)'s info and weights
//   ref.step(token, h)  -> {logits: Float64Array(V), h: Float64Array(L * H)}

import { OnnxFileError, halfToFloat } from "./onnx.js";
import { WEIGHTS } from "./model.js";

const sigmoid = (x) => 1 / (1 + Math.exp(-x));
const f32 = Math.fround;

// round half to even, as the C step's (t + 1.5 * 2^23) - 1.5 * 2^23 does for float t
function roundEven(t) {
  const r = Math.round(t);
  return r - t === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// onnxruntime's DynamicQuantizeLinear of one row in float32 arithmetic, as the C step's
// chargen_i8_quantize_row: [xq (Int32Array), scale, zero point]
export function quantizeRow(x) {
  let lo = 0, hi = 0;
  for (const v of x) {
    const fv = f32(v);
    if (fv < lo) lo = fv;
    if (fv > hi) hi = fv;
  }
  const scale = f32(f32(hi - lo) / 255);
  const q = new Int32Array(x.length);
  if (!(scale > 0)) return [q, 0, 0];
  let zp = roundEven(f32(-lo / scale));
  zp = Math.min(255, Math.max(0, zp));
  for (let k = 0; k < x.length; k++) q[k] = Math.min(255, Math.max(0, roundEven(f32(f32(x[k]) / scale)) + zp));
  return [q, scale, zp];
}

// a float initializer as float32 values (float16 converted), or throw naming it
function floats(weights, name, count, optional = false) {
  const t = weights.get(name);
  if (!t) {
    if (optional) return null;
    throw new OnnxFileError(`not a chargen step graph: no initializer '${name}'`);
  }
  const data = t.dataType === 10 ? halfToFloat(t.data) : t.data;
  if (!(data instanceof Float32Array) || data.length !== count) {
    throw new OnnxFileError(`initializer '${name}' is ${t.dtype} [${t.dims}], not ${count} floats`);
  }
  return data;
}

// layer k's matrix W^T (H, 3H): {w: int8 or float values, scale: per output or null}
function matrix(info, weights, base) {
  const H = info.hidden, N = 3 * H;
  if (info.precision === "int8") {
    const q = weights.get(base + "_quantized"), zero = weights.get(base + "_zero_point");
    if (!q) throw new OnnxFileError(`not chargen's int8 step graph: no initializer '${base}_quantized'`);
    if (q.dataType !== 3 || q.data.length !== H * N || (zero && zero.data.some((z) => z !== 0))) {
      throw new OnnxFileError(`${base} is not symmetric int8 [${H}, ${N}] (${q.dtype} [${q.dims}]); ` +
        "re-export with gen export --precision int8");
    }
    const s = weights.get(base + "_scale");
    if (!s || s.dataType !== 1 || (s.data.length !== N && s.data.length !== 1)) {
      throw new OnnxFileError(`initializer '${base}_scale' is missing or not ${N} float32 values`);
    }
    const scale = s.data.length === N ? s.data : new Float32Array(N).fill(s.data[0]);
    return { w: q.data, scale };
  }
  return { w: floats(weights, base, H * N), scale: null };
}

// Every weight of the step, checked against the shapes the metadata gives (throws
// OnnxFileError): the layout engine.js hands to the wasm module as well.
export function stepWeights(info, weights) {
  const { layers: L, hidden: H, vocabSize: V } = info;
  if (info.precision === "int8" && info.int8Kernel !== "dynamic") {
    throw new OnnxFileError(`this page runs int8 models with --int8-kernel dynamic (MatMulInteger), and this one has ${info.int8Kernel}`);
  }
  const layer = [];
  for (let k = 0; k < L; k++) {
    layer.push({
      hh: matrix(info, weights, WEIGHTS.w_hh(k)),
      ih: k ? matrix(info, weights, WEIGHTS.w_ih(k)) : null,
      b_ih: k ? floats(weights, WEIGHTS.b_ih(k), 3 * H, true) : null,
      b_rz: floats(weights, WEIGHTS.b_hh_rz(k), 2 * H, true),
      b_n: floats(weights, WEIGHTS.b_hh_n(k), H),
    });
  }
  return {
    table: floats(weights, WEIGHTS.table, V * 3 * H),
    head_w_t: floats(weights, WEIGHTS.head_w_t, H * V),
    head_b: floats(weights, WEIGHTS.head_b, V),
    layer,
  };
}

// y (N) = x (K) W^T (K, N) (+ bias): the int8 one quantizes x as the graph does
function product(m, x, N, bias) {
  const K = x.length, y = new Float64Array(N);
  if (m.scale) {
    const [q, aScale, zero] = quantizeRow(x);
    const acc = new Float64Array(N); // exact: every partial sum is an integer below 2^53
    for (let k = 0; k < K; k++) {
      const v = q[k] - zero;
      if (v === 0) continue;
      const row = k * N;
      for (let n = 0; n < N; n++) acc[n] += v * m.w[row + n];
    }
    for (let n = 0; n < N; n++) y[n] = acc[n] * aScale * m.scale[n];
  } else {
    for (let k = 0; k < K; k++) {
      const v = x[k], row = k * N;
      for (let n = 0; n < N; n++) y[n] += v * m.w[row + n];
    }
  }
  if (bias) for (let n = 0; n < N; n++) y[n] += bias[n];
  return y;
}

export class ReferenceStep {
  constructor(info, weights) {
    this.info = info;
    this.w = stepWeights(info, weights);
  }

  // One step with `token` from the state h (L * H numbers, layer after layer).
  step(token, h) {
    const { layers: L, hidden: H, vocabSize: V } = this.info, w = this.w, H3 = 3 * H;
    const out = new Float64Array(L * H);
    let x = null;
    for (let k = 0; k < L; k++) {
      const lw = w.layer[k], hk = h.subarray(k * H, (k + 1) * H);
      const gi = k === 0 ? Float64Array.from(w.table.subarray(token * H3, (token + 1) * H3)) : product(lw.ih, x, H3, lw.b_ih);
      const gh = product(lw.hh, hk, H3, null);
      for (let j = 0; j < H; j++) {
        const r = sigmoid(gi[j] + gh[j] + (lw.b_rz ? lw.b_rz[j] : 0));
        const z = sigmoid(gi[H + j] + gh[H + j] + (lw.b_rz ? lw.b_rz[H + j] : 0));
        const n = Math.tanh(gi[2 * H + j] + r * (gh[2 * H + j] + lw.b_n[j]));
        out[k * H + j] = n + z * (hk[j] - n);
      }
      x = out.subarray(k * H, (k + 1) * H);
    }
    const logits = new Float64Array(V);
    for (let k = 0; k < H; k++) {
      const v = x[k], row = k * V;
      for (let j = 0; j < V; j++) logits[j] += v * w.head_w_t[row + j];
    }
    for (let j = 0; j < V; j++) logits[j] += w.head_b[j];
    return { logits, h: out };
  }
}
