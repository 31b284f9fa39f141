// The chargen model file (.onnx) in JavaScript: its initializers (weights) and metadata_props,
// read with a minimal protobuf decoder of the few messages involved (docs/model-format.md):
// ModelProto.graph (7) -> GraphProto.initializer (5) -> TensorProto, and
// ModelProto.metadata_props (14) -> StringStringEntryProto {key 1, value 2}. Every other field is
// skipped by its wire type. The same reading as chargen.runtime.onnx_file (Python); the tests
// compare the two on real files.
//
//   readModelFile(bytes) -> {metadata: {key: value}, initializers: Map(name -> tensor)}
//   tensor: {name, dataType, dims: [..], data: Float32Array | Int8Array | Uint8Array | ...}
//
// Any problem (truncated or corrupt protobuf, data that does not fit the dims, external data,
// an unsupported data type) throws an OnnxFileError with the reason in one line.

export class OnnxFileError extends Error {
  constructor(message) {
    super(message);
    this.name = "OnnxFileError";
  }
}

const CORRUPT = "truncated or corrupt protobuf: ";

// TensorProto.DataType -> [typed array, bytes per value]
const DTYPES = {
  1: [Float32Array, 4], 2: [Uint8Array, 1], 3: [Int8Array, 1], 4: [Uint16Array, 2], 5: [Int16Array, 2],
  6: [Int32Array, 4], 7: [BigInt64Array, 8], 9: [Uint8Array, 1], 10: [Uint16Array, 2], 11: [Float64Array, 8],
  12: [Uint32Array, 4], 13: [BigUint64Array, 8],
};
export const DTYPE_NAMES = {
  1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
  10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
};
// The TensorProto field that holds the values where there is no raw_data: float_data (4),
// int64_data (7), double_data (10), uint64_data (11); int32_data (5) for the others.
const TYPED_FIELD = { 1: 4, 7: 7, 11: 10, 12: 11, 13: 11 };

const utf8 = new TextDecoder("utf-8", { fatal: true });

function text(bytes, what) {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new OnnxFileError(CORRUPT + what + " is not UTF-8");
  }
}

// A varint at pos of buf: [value (a Number: exact below 2^53; negative int64 come back
// negative), next pos].
function varint(buf, pos, end) {
  let lo = 0, hi = 0, shift = 0;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new OnnxFileError(CORRUPT + "a varint runs past the end");
    const byte = buf[pos++];
    if (shift < 28) lo |= (byte & 0x7f) << shift;
    else if (shift === 28) {
      lo |= (byte & 0x0f) << 28;
      hi |= (byte & 0x7f) >>> 4;
    } else hi |= (byte & 0x7f) << (shift - 32);
    shift += 7;
    if (byte < 0x80) {
      lo >>>= 0;
      // hi as a signed 32-bit word: two's complement int64 values come out negative
      return [(hi | 0) * 4294967296 + lo, pos];
    }
  }
  throw new OnnxFileError(CORRUPT + "a varint is longer than 10 bytes");
}

// The fields of the message buf[start, end): [field, wire, value] where value is a Number for a
// varint, else [from, to) offsets of its bytes in buf.
function* fields(buf, start, end) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = varint(buf, pos, end);
    const field = Math.floor(key / 8), wire = key & 7;
    if (field === 0 || ![0, 1, 2, 5].includes(wire)) {
      throw new OnnxFileError(CORRUPT + `field ${field} has wire type ${wire}`);
    }
    if (wire === 0) {
      let value;
      [value, pos] = varint(buf, pos, end);
      yield [field, wire, value];
    } else {
      let size;
      if (wire === 2) [size, pos] = varint(buf, pos, end);
      else size = wire === 1 ? 8 : 4;
      if (size < 0 || pos + size > end) {
        throw new OnnxFileError(CORRUPT + `field ${field} runs past the end of its message`);
      }
      yield [field, wire, [pos, pos + size]];
      pos += size;
    }
  }
}

function want(wire, wires, what) {
  if (!wires.includes(wire)) throw new OnnxFileError(CORRUPT + `${what} has wire type ${wire}`);
}

// A repeated varint field's values (packed or not), in order.
function varints(buf, parts, what) {
  const out = [];
  for (const [wire, value] of parts) {
    if (wire === 0) out.push(value);
    else {
      want(wire, [2], what);
      let pos = value[0];
      while (pos < value[1]) {
        let v;
        [v, pos] = varint(buf, pos, value[1]);
        out.push(v);
      }
    }
  }
  return out;
}

function lastScalar(t, field, fallback = 0) {
  const parts = t.get(field);
  if (!parts) return fallback;
  const [wire, value] = parts[parts.length - 1]; // the last occurrence wins
  want(wire, [0], `tensor field ${field}`);
  return value;
}

function decodeTensor(buf, t, name) {
  if (lastScalar(t, 14) === 1 || t.has(13)) {
    throw new OnnxFileError(`tensor '${name}' is stored in an external file; chargen reads self-contained models only`);
  }
  const code = lastScalar(t, 2);
  if (!(code in DTYPES)) throw new OnnxFileError(`tensor '${name}' has data type ${code}, which chargen does not read`);
  const [Type, size] = DTYPES[code];
  const dims = varints(buf, t.get(1) || [], "tensor field 1");
  if (dims.some((d) => d < 0)) throw new OnnxFileError(`tensor '${name}' has negative dims [${dims}]`);
  const count = dims.reduce((a, b) => a * b, 1);
  let data;
  if (t.has(9)) { // raw_data: little-endian whatever the type (every browser's byte order)
    const parts = t.get(9);
    const [wire, [from, to]] = parts[parts.length - 1];
    want(wire, [2], "tensor field 9");
    if (to - from !== count * size) {
      throw new OnnxFileError(`tensor '${name}' has ${to - from} bytes of raw_data; dims [${dims}] of ` +
        `${DTYPE_NAMES[code]} need ${count * size}`);
    }
    data = new Type(buf.slice(from, to).buffer); // a copy: aligned, owns its memory
  } else {
    const field = TYPED_FIELD[code] || 5;
    const parts = t.get(field) || [];
    let values;
    if (field === 4 || field === 10) { // float_data, double_data: fixed-width, packed or one each
      const width = field === 4 ? 4 : 8;
      const chunks = [];
      for (const [wire, [from, to]] of parts) {
        want(wire, [2, width === 4 ? 5 : 1], `tensor field ${field}`);
        if ((to - from) % width) throw new OnnxFileError(CORRUPT + `packed tensor field ${field} has ${to - from} bytes`);
        chunks.push(buf.slice(from, to));
      }
      const bytes = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of chunks) bytes.set(c, at), at += c.length;
      values = width === 4 ? new Float32Array(bytes.buffer) : new Float64Array(bytes.buffer);
    } else {
      values = varints(buf, parts, `tensor field ${field}`);
    }
    if (values.length !== count) {
      throw new OnnxFileError(`tensor '${name}' has ${values.length} values; dims [${dims}] need ${count}`);
    }
    if (Type === BigInt64Array || Type === BigUint64Array) data = Type.from(values, (v) => BigInt(v));
    else data = Type.from(values); // int32_data: int8, uint8, float16 bits ... wrap to their type
  }
  return { name, dataType: code, dtype: DTYPE_NAMES[code], dims, data };
}

function readGraph(buf, from, to, wanted, out) {
  for (const [field, wire, value] of fields(buf, from, to)) {
    if (field !== 5) continue;
    want(wire, [2], "an initializer");
    const t = new Map();
    for (const [f, w, v] of fields(buf, value[0], value[1])) {
      if (!t.has(f)) t.set(f, []);
      t.get(f).push([w, v]);
    }
    let name = "";
    if (t.has(8)) {
      const parts = t.get(8);
      const [w, [a, b]] = parts[parts.length - 1];
      want(w, [2], "a tensor name");
      name = text(buf.subarray(a, b), "a tensor name");
    }
    if (!wanted || wanted.has(name)) out.set(name, decodeTensor(buf, t, name));
  }
}

function readEntry(buf, from, to) {
  const kv = { 1: "", 2: "" };
  for (const [f, w, v] of fields(buf, from, to)) {
    if (f === 1 || f === 2) {
      want(w, [2], "a metadata key or value");
      kv[f] = text(buf.subarray(v[0], v[1]), "a metadata entry");
    }
  }
  return [kv[1], kv[2]];
}

// The model file's metadata_props and initializers (only those named in `names`, an iterable, if
// given). bytes: an ArrayBuffer or a Uint8Array. Throws OnnxFileError.
export function readModelFile(bytes, names = null) {
  // a plain Uint8Array (a Node Buffer's slice() would share memory where ours copies)
  const buf = ArrayBuffer.isView(bytes) ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) : new Uint8Array(bytes);
  const wanted = names ? new Set(names) : null;
  const metadata = {}, initializers = new Map();
  let graphs = 0;
  for (const [field, wire, value] of fields(buf, 0, buf.length)) {
    if (field === 7) {
      want(wire, [2], "the model's graph");
      graphs++;
      readGraph(buf, value[0], value[1], wanted, initializers);
    } else if (field === 14) {
      want(wire, [2], "a metadata entry");
      const [k, v] = readEntry(buf, value[0], value[1]);
      metadata[k] = v;
    }
  }
  if (!graphs) throw new OnnxFileError("no graph in the file (not an ONNX model?)");
  return { metadata, initializers };
}

// float16 bits (Uint16Array) -> Float32Array, exactly (every float16 is a float32).
export function halfToFloat(bits) {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i], sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    out[i] = e === 0 ? sign * m * 2 ** -24 : e === 31 ? (m ? NaN : sign * Infinity) : sign * (1024 + m) * 2 ** (e - 25);
  }
  return out;
}
