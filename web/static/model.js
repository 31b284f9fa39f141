// What a chargen model file says about itself (its metadata_props, docs/model-format.md), and
// the text <-> ids mapping. Shared by the engines (engine.js) and the page.

import { OnnxFileError, readModelFile } from "./onnx.js";

export const FORMAT_VERSION = 1;

// The initializers of the step graph (docs/model-format.md, "The arithmetic").
export const WEIGHTS = {
  table: "gi_table_l0",
  w_hh: (k) => `gh_l${k}_w_t`,
  b_hh_rz: (k) => `gh_rz_l${k}_b`,
  b_hh_n: (k) => `gh_n_l${k}_b`,
  w_ih: (k) => `gi_l${k}_w_t`,
  b_ih: (k) => `gi_l${k}_b`,
  head_w_t: "head_w_t",
  head_b: "head_b",
};

// {vocab: [chars], layers, hidden, vocabSize, precision, int8Kernel, corpus, valLoss} from the
// metadata; throws OnnxFileError naming what is missing or wrong.
export function describe(metadata) {
  const format = metadata["chargen.format"];
  if (format === undefined) {
    throw new OnnxFileError("not a chargen model: the file has no chargen.format metadata (export it with gen export)");
  }
  if (String(Number(format)) !== format) throw new OnnxFileError(`chargen.format is ${JSON.stringify(format)}, not a version number`);
  if (Number(format) !== FORMAT_VERSION) {
    const which = Number(format) > FORMAT_VERSION ? "newer" : "older";
    throw new OnnxFileError(`the model file is format ${format}, ${which} than this page reads (${FORMAT_VERSION})`);
  }
  let vocab, config;
  try {
    vocab = JSON.parse(metadata["chargen.vocab"]);
    config = JSON.parse(metadata["chargen.config"]);
  } catch {
    throw new OnnxFileError("the model's chargen.vocab or chargen.config metadata is not JSON");
  }
  if (!Array.isArray(vocab) || !vocab.length || vocab.some((c) => typeof c !== "string" || [...c].length !== 1)) {
    throw new OnnxFileError("chargen.vocab is not a list of single characters");
  }
  const layers = config.layers, hidden = config.hidden_size;
  if (!(layers >= 1 && hidden >= 1 && config.vocab_size === vocab.length)) {
    throw new OnnxFileError("chargen.config does not fit the vocabulary (layers, hidden_size, vocab_size)");
  }
  const precision = metadata["chargen.precision"] || "fp32";
  return {
    vocab, layers, hidden, vocabSize: vocab.length, precision,
    int8Kernel: precision === "int8" ? metadata["chargen.int8_kernel"] || "dynamic" : null,
    corpus: metadata["chargen.corpus"] || "", valLoss: metadata["chargen.val_loss"] || "",
  };
}

// The model file's description and the initializers the step reads: {info, weights: Map}.
export function readModel(bytes) {
  const { metadata, initializers } = readModelFile(bytes);
  return { info: describe(metadata), weights: initializers, metadata };
}

// Ids of text (one per code point); throws an Error naming characters the model does not know,
// or drops them (unknown = "skip").
export function encode(info, text, unknown = "error") {
  if (!info.index) info.index = new Map(info.vocab.map((c, i) => [c, i]));
  const ids = [], missing = new Map();
  for (const c of text) {
    const id = info.index.get(c);
    if (id !== undefined) ids.push(id);
    else missing.set(c, (missing.get(c) || 0) + 1);
  }
  if (missing.size && unknown !== "skip") {
    const shown = [...missing].slice(0, 10).map(([c, n]) => `${JSON.stringify(c)} (x${n})`).join(", ");
    throw new Error(`${[...missing.values()].reduce((a, b) => a + b)} character(s) not in the model's vocabulary: ${shown}`);
  }
  return ids;
}
