// chargen in the browser: one ES module for web apps. The model runs in a Web Worker (worker.js)
// on chargen's int8 step compiled to WebAssembly, so the page never freezes.
//
//   import { load } from "./chargen.js";
//   const model = await load("model.onnx");                 // a URL, or the file's bytes
//   const stream = model.generate("ROMEO: ", { temperature: 0.8, seed: 42, max_length: 300 });
//   for await (const c of stream) output.append(c);         // one character at a time
//   stream.cancel();                                         // from anywhere: the loop ends
//   model.dispose();
//
// Options have the names and meanings of chargen's GenerationOptions: temperature (0: greedy),
// top_k (0: no cut), top_p (1: no cut), seed (an integer in [0, 2**64): a Number, a BigInt or a
// decimal string; none: a random one, in stream.seed once done), max_length (characters after
// the prompt), stop (a string or a list: the stream ends after the first it generates, which is
// part of the output). With the same model, prompt, options and seed the text is the one
// `gen sample --engine chargen` prints.

export class ChargenError extends Error {
  constructor(message, name = "ChargenError") {
    super(message);
    this.name = name;
  }
}

class Stream {
  constructor(model, id) {
    this.model = model;
    this.id = id;
    this.pieces = []; // arrays of characters the worker sent, not yet taken by the iterator
    this.at = 0; // the next character of pieces[0]
    this.wake = null;
    this.ended = false;
    this.error = null;
    this.reason = null; // "length", "stop" or "cancelled" once done
    this.generated = 0;
    this.seed = null;
  }

  push(text) {
    this.pieces.push([...text]);
    this.notify();
  }

  end(reason, generated, seed) {
    this.ended = true;
    this.reason = reason;
    this.generated = generated;
    this.seed = seed;
    this.notify();
  }

  fail(error) {
    this.ended = true;
    this.error = error;
    this.notify();
  }

  notify() {
    if (this.wake) {
      const wake = this.wake;
      this.wake = null;
      wake();
    }
  }

  // Stops the generation: the iterator ends at once (characters not yet taken are dropped).
  cancel() {
    if (this.ended) return;
    this.model.worker.postMessage({ type: "cancel", id: this.id });
    this.pieces.length = 0;
    this.end("cancelled", this.generated, this.seed);
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      if (this.pieces.length) {
        const piece = this.pieces[0], c = piece[this.at++];
        if (this.at === piece.length) this.pieces.shift(), (this.at = 0);
        yield c;
        continue;
      }
      if (this.error) throw this.error;
      if (this.ended) return;
      await new Promise((resolve) => (this.wake = resolve));
    }
  }

  // The whole text (after the prompt) once the generation ends.
  async text() {
    let out = "";
    for await (const c of this) out += c;
    return out;
  }
}

class Model {
  constructor(worker, info) {
    this.worker = worker;
    this.info = info; // {vocab, layers, hidden, vocabSize, precision, engine, checked, loadMs, ...}
    this.current = null;
    this.nextId = 1;
    worker.onmessage = ({ data }) => this.receive(data);
    worker.onerror = (e) => this.current && this.current.fail(new ChargenError(e.message || "the worker failed"));
  }

  receive(data) {
    const s = this.current;
    if (!s || data.id !== s.id) return; // a cancelled stream's last messages
    if (data.type === "chars") s.push(data.text);
    else if (data.type === "done") {
      this.current = null;
      s.end(data.reason, data.generated, data.seed);
    } else if (data.type === "error") {
      this.current = null;
      s.fail(new ChargenError(data.message, data.name));
    }
  }

  // An async iterator of characters after `prompt` (default: a newline, or the model's first
  // symbol, as gen sample's). One generation at a time: cancel() or finish the last one first.
  // unknown: "error" (characters the model does not know fail the stream) or "skip".
  generate(prompt = null, options = {}, unknown = "error") {
    if (!this.worker) throw new ChargenError("the model was disposed");
    if (this.current && !this.current.ended) {
      throw new ChargenError("one generation at a time: cancel() the running one or wait for its end");
    }
    const opts = { ...options };
    if (typeof opts.seed === "bigint") opts.seed = opts.seed.toString(); // structured clone takes BigInt, kept simple
    const s = new Stream(this, this.nextId++);
    this.current = s;
    this.worker.postMessage({ type: "generate", id: s.id, prompt, options: opts, unknown });
    return s;
  }

  dispose() {
    if (this.worker) this.worker.terminate();
    this.worker = null;
  }
}

// Loads a model (a URL, or its bytes: ArrayBuffer or Uint8Array) in a new worker; rejects with
// a ChargenError saying what is wrong with the file. options.engine: "auto" (int8: chargen's
// step in wasm; fp32, fp16: onnxruntime-web), "chargen" or "onnxruntime-web" (int8 too, where
// its files lie beside this module); options.workerUrl: where worker.js lies (default: beside
// this module).
export async function load(source, options = {}) {
  const url = options.workerUrl || new URL("./worker.js", import.meta.url);
  const worker = new Worker(url, { type: "module" });
  let model = source;
  if (source instanceof Uint8Array) model = source.slice().buffer;
  else if (source instanceof URL) model = source.href;
  else if (typeof source === "string") model = new URL(source, document.baseURI).href;
  else if (source instanceof ArrayBuffer) model = source.slice(0); // the worker gets a copy: the caller keeps its bytes
  else {
    worker.terminate();
    throw new ChargenError("load() takes a URL or the model file's bytes (ArrayBuffer or Uint8Array)");
  }
  const info = await new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => {
      if (data.type === "loaded") resolve(data.info);
      else if (data.type === "error") reject(new ChargenError(data.message, data.name));
    };
    worker.onerror = (e) => reject(new ChargenError(e.message || "the worker could not start"));
    worker.postMessage({ type: "load", model, engine: options.engine || "auto" }, model instanceof ArrayBuffer ? [model] : []);
  }).catch((e) => {
    worker.terminate();
    throw e;
  });
  return new Model(worker, info);
}
