// savePretrained: writes a loaded model as transformers' save_pretrained does (spec B1, B5): config.json (sorted keys,
// indent 2, Python number formatting, `dtype` set to the model dtype, the `quantization_config` block exactly as
// BitsAndBytesConfig.to_dict() gives it, RoPE in the transformers-5 `rope_parameters` form), generation_config.json,
// and the weights in safetensors with `{"format": "pt"}` metadata — quantized layers in the bitsandbytes on-disk format
// (4-bit: packed codes [ceil(n/2), 1] plus absmax / quant_map / nested state / packed quant_state JSON; 8-bit: int8
// weight, SCB, weight_format), tied weights left out. Shards above `maxShardSize` go to model-0000i-of-0000N.safetensors
// with model.safetensors.index.json.
//
// Every file is written atomically (temporary name in the same folder, fsync, rename). Tensors are streamed one at a
// time from their device, so saving never holds more than one tensor's bytes on the host. The safetensors layout is
// the Rust crate's (the same bytes as ./safetensors.ts serializeSafetensors).

import { existsSync, mkdirSync, readdirSync, statSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { ArgumentError, DTYPES, STORAGE_ARRAY, describe, type DType } from "@lowbit/dtypes";
import { getBinding, writeAll, writeFileAtomic } from "@lowbit/kernels";
import type { Tensor } from "@lowbit/tensor";
import { CONFIG_NAME } from "./config.js";
import { SafetensorsError } from "./errors.js";
import { GENERATION_CONFIG_NAME } from "./generation-config.js";
import type { PreTrainedCausalLM } from "./modeling-utils.js";
import { PyFloat, pyJsonDumps, type PyJsonValue } from "@lowbit/dtypes";
import { SAFETENSORS_DTYPE_BITS, SAFETENSORS_INDEX_NAME, SAFETENSORS_WEIGHTS_NAME, type SafetensorsFormatDType } from "./safetensors.js";
import { StrictJsonNumber, isStrictJsonObject, parseStrictJson, type StrictJsonValue } from "./strict-json.js";

export interface SavePretrainedOptions {
  /**
   * Largest shard, in bytes or as transformers writes it ("50GB", "500MB", "2GiB"); default "50GB" (transformers 5).
   * A single tensor larger than this gets a shard of its own.
   */
  maxShardSize?: number | string;
}

/** transformers 5's default max_shard_size. */
export const DEFAULT_MAX_SHARD_SIZE = "50GB";

const UNITS: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30, TIB: 2 ** 40 };

/** transformers' `convert_file_size_to_int`: "5GB" = 5·10⁹, "5GiB" = 5·2³⁰; a number is taken as bytes. */
export function parseShardSize(size: number | string): number {
  if (typeof size === "number") {
    if (Number.isSafeInteger(size) && size > 0) return size;
  } else if (typeof size === "string") {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)\s*$/i.exec(size);
    const unit = m === null ? undefined : UNITS[m[2]!.toUpperCase()];
    if (m !== null && unit !== undefined) {
      const bytes = Math.floor(Number(m[1]) * unit);
      if (bytes > 0) return bytes;
    }
  }
  throw new ArgumentError(`Expected a positive byte count or a size such as "5GB" for maxShardSize but received ${describe(size)}`);
}

/** Writes `path` atomically (temp file + rename, @lowbit/kernels' writeFileAtomic), as a SafetensorsError on failure. */
function writeAtomic(path: string, write: (fd: number) => void): void {
  try {
    writeFileAtomic(path, write);
  } catch (cause) {
    throw new SafetensorsError(path, `could not be written (${(cause as Error).message})`, { cause });
  }
}

function writeTextAtomic(path: string, text: string): void {
  writeAtomic(path, (fd) => writeAll(fd, new TextEncoder().encode(text)));
}

/** One tensor to write: its safetensors dtype and shape, and how to fetch its bytes when its turn comes. */
interface OutTensor {
  readonly name: string;
  readonly st: SafetensorsFormatDType;
  readonly shape: readonly number[];
  readonly byteLength: number;
  bytes(): Uint8Array;
}

const FORMAT_ORDER = Object.keys(SAFETENSORS_DTYPE_BITS) as SafetensorsFormatDType[];

/**
 * The safetensors Rust crate's layout (as serializeSafetensors): tensors ordered by dtype, largest first, then by
 * name; compact JSON header with `__metadata__` first, padded with spaces to a multiple of 8 bytes.
 */
export function safetensorsLayout<T extends { name: string; st: SafetensorsFormatDType; shape: readonly number[]; byteLength: number }>(
  tensors: readonly T[],
  metadata: Readonly<Record<string, string>> | null,
): { header: Uint8Array; order: T[]; dataLength: number } {
  const rank = (st: SafetensorsFormatDType) => FORMAT_ORDER.indexOf(st);
  const order = [...tensors].sort((a, b) => rank(b.st) - rank(a.st) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const parts: string[] = [];
  if (metadata !== null) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  let offset = 0;
  for (const t of order) {
    const end = offset + t.byteLength;
    parts.push(`${JSON.stringify(t.name)}:{"dtype":"${t.st}","shape":[${t.shape.join(",")}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  const header = new Uint8Array(8 + headerLength).fill(0x20, 8 + json.length);
  new DataView(header.buffer).setBigUint64(0, BigInt(headerLength), true);
  header.set(json, 8);
  return { header, order, dataLength: offset };
}

/** The raw little-endian bytes of a tensor, copied from its device (16-bit floats as their bits). */
function tensorBytes(t: Tensor): Uint8Array {
  const c = t.isContiguous ? t : t.contiguous();
  try {
    const arr = new STORAGE_ARRAY[c.dtype](c.numel) as ArrayBufferView;
    if (arr.byteLength > 0) getBinding().download(c.storage, c.byteOffset, arr);
    return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  } finally {
    if (c !== t) c.dispose();
  }
}

/** The tensors transformers would save for this model, in state-dict order. */
function collectTensors(model: PreTrainedCausalLM): OutTensor[] {
  const tied = new Set(model.spec.modules.filter((m) => m.kind === "linear" && m.tiedTo !== null).map((m) => `${m.name}.weight`));
  const storage = model.quantizationConfig?.loadIn4bit ? model.quantizationConfig.bnb4bitQuantStorage : "uint8";
  const dict = model.stateDict();
  const out: OutTensor[] = [];
  for (const [name, t] of Object.entries(dict)) {
    if (tied.has(name)) continue; // remove_tied_weights_from_state_dict
    let dtype: DType = t.dtype;
    let shape: readonly number[] = t.shape;
    const packed = t.dtype === "uint8" && t.ndim === 2 && t.shape[1] === 1 && Object.prototype.hasOwnProperty.call(dict, `${name}.absmax`);
    if (packed && storage !== "uint8") {
      // bnb_4bit_quant_storage: the same bytes viewed as a wider dtype, shape [bytes / itemsize, 1].
      if (!(storage in DTYPES)) throw new ArgumentError(`Cannot save ${name} with bnb_4bit_quant_storage ${storage}: lowbit has no ${storage} dtype`);
      const item = DTYPES[storage as DType].bytes;
      if (t.numel % item !== 0) throw new ArgumentError(`Cannot save ${name} (${t.numel} packed bytes) with bnb_4bit_quant_storage ${storage}: not a multiple of ${item} bytes`);
      dtype = storage as DType;
      shape = [t.numel / item, 1];
    }
    const st = DTYPES[dtype].safetensors;
    if (st === null) throw new ArgumentError(`Cannot save ${name}: dtype ${dtype} has no safetensors name`);
    out.push({ name, st: st as SafetensorsFormatDType, shape: [...shape], byteLength: t.numel * DTYPES[t.dtype].bytes, bytes: () => tensorBytes(t) });
  }
  return out;
}

function writeSafetensorsFile(path: string, tensors: readonly OutTensor[]): void {
  const { header, order } = safetensorsLayout(tensors, { format: "pt" });
  writeAtomic(path, (fd) => {
    writeAll(fd, header);
    for (const t of order) {
      const bytes = t.bytes();
      if (bytes.byteLength !== t.byteLength) throw new SafetensorsError(path, `has ${bytes.byteLength} bytes but its header says ${t.byteLength}`, { tensor: t.name });
      writeAll(fd, bytes);
    }
  });
}

/** Converts strictly parsed JSON to Python-dumpable values, keeping each number's int / float kind. */
function toPy(v: StrictJsonValue): PyJsonValue {
  if (v instanceof StrictJsonNumber) return /[.eE]/.test(v.raw) ? new PyFloat(v.value) : v.value;
  if (Array.isArray(v)) return v.map(toPy);
  if (isStrictJsonObject(v)) {
    const o: Record<string, PyJsonValue> = {};
    for (const [k, x] of v) o[k] = toPy(x);
    return o;
  }
  return v as null | boolean | string;
}

function parseJsonText(text: string, file: string): Record<string, PyJsonValue> {
  let root: StrictJsonValue;
  try {
    root = parseStrictJson(text);
  } catch (cause) {
    throw new SafetensorsError(file, `cannot be re-written: it is not valid JSON (${(cause as Error).message})`, { cause });
  }
  if (!isStrictJsonObject(root)) throw new SafetensorsError(file, "cannot be re-written: it does not hold a JSON object");
  return toPy(root) as Record<string, PyJsonValue>;
}

/** rope_parameters keys transformers holds as floats. */
const ROPE_FLOAT_KEYS = new Set(["rope_theta", "factor", "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "low_freq_factor", "high_freq_factor", "partial_rotary_factor"]);

/** The config.json transformers 5 writes for this model. */
export function configJson(model: PreTrainedCausalLM): string {
  const text = model.info.configText;
  if (text === null) throw new ArgumentError("savePretrained: the model has no config.json text to write (it was not loaded from a folder)");
  const cfg = parseJsonText(text, model.config.file);
  cfg["dtype"] = model.dtype;
  delete cfg["torch_dtype"];
  if (Object.prototype.hasOwnProperty.call(cfg, "rope_scaling") || Object.prototype.hasOwnProperty.call(cfg, "rope_theta")) {
    // transformers 5 writes the standardized rope_parameters and drops the legacy keys.
    const rope: Record<string, PyJsonValue> = {};
    for (const [k, v] of Object.entries(model.config.ropeParametersDict)) {
      rope[k] = typeof v === "number" && ROPE_FLOAT_KEYS.has(k) ? new PyFloat(v) : (v as PyJsonValue);
    }
    cfg["rope_parameters"] = rope;
    delete cfg["rope_scaling"];
    delete cfg["rope_theta"];
  }
  const q = model.quantizationConfig;
  if (q !== null) {
    const block = q.toDict() as Record<string, PyJsonValue>;
    block["llm_int8_threshold"] = new PyFloat(q.llmInt8Threshold);
    cfg["quantization_config"] = block;
  } else {
    delete cfg["quantization_config"];
  }
  return `${pyJsonDumps(cfg, { indent: 2, sortKeys: true })}\n`;
}

/** generation_config.json keys transformers holds as floats. */
const GENERATION_FLOAT_KEYS = new Set(["temperature", "top_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "diversity_penalty", "repetition_penalty", "encoder_repetition_penalty", "length_penalty", "min_p"]);

/** The generation_config.json to write: the one read (re-dumped), else the model's generation config. */
export function generationConfigJson(model: PreTrainedCausalLM): string | null {
  const text = model.info.generationConfigText;
  if (text !== null) return `${pyJsonDumps(parseJsonText(text, GENERATION_CONFIG_NAME), { indent: 2, sortKeys: true })}\n`;
  const gen = model.generationConfig;
  if (gen === null) return null;
  const d: Record<string, PyJsonValue> = {};
  for (const [k, v] of Object.entries(gen.toDict())) d[k] = typeof v === "number" && GENERATION_FLOAT_KEYS.has(k) ? new PyFloat(v) : (v as PyJsonValue);
  return `${pyJsonDumps(d, { indent: 2, sortKeys: true })}\n`;
}

const SHARD_RE = /^model-\d{5}-of-\d{5}\.safetensors$/;

/** Saves `model` to `dir` (created if needed); see the file comment for what is written. */
export function savePretrained(model: PreTrainedCausalLM, dir: string, options: SavePretrainedOptions = {}): void {
  if (typeof dir !== "string" || dir.length === 0) throw new ArgumentError(`Expected a folder path for savePretrained's dir but received ${describe(dir)}`);
  if (typeof options !== "object" || options === null) throw new ArgumentError(`Expected an options object for savePretrained's options but received ${describe(options)}`);
  const maxShard = parseShardSize(options.maxShardSize ?? DEFAULT_MAX_SHARD_SIZE);
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new ArgumentError(`savePretrained: ${dir} exists and is not a folder`);
  mkdirSync(dir, { recursive: true });

  const tensors = collectTensors(model);
  // huggingface_hub's split: tensors in state-dict order; a new shard starts when the next tensor would overflow.
  const shards: OutTensor[][] = [];
  let current: OutTensor[] = [];
  let size = 0;
  for (const t of tensors) {
    if (current.length > 0 && size + t.byteLength > maxShard) {
      shards.push(current);
      current = [];
      size = 0;
    }
    current.push(t);
    size += t.byteLength;
  }
  if (current.length > 0 || shards.length === 0) shards.push(current);

  const written = new Set<string>();
  if (shards.length === 1) {
    writeSafetensorsFile(join(dir, SAFETENSORS_WEIGHTS_NAME), shards[0]!);
    written.add(SAFETENSORS_WEIGHTS_NAME);
  } else {
    const n = shards.length;
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, i) => {
      const name = `model-${String(i + 1).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`;
      writeSafetensorsFile(join(dir, name), shard);
      written.add(name);
      for (const t of shard) weightMap[t.name] = name;
    });
    const index = { metadata: { total_size: tensors.reduce((s, t) => s + t.byteLength, 0) }, weight_map: weightMap };
    writeTextAtomic(join(dir, SAFETENSORS_INDEX_NAME), `${pyJsonDumps(index, { indent: 2, sortKeys: true })}\n`);
    written.add(SAFETENSORS_INDEX_NAME);
  }
  // transformers cleans weights of an earlier save with another sharding out of the folder.
  for (const f of readdirSync(dir)) {
    const stale = (f === SAFETENSORS_WEIGHTS_NAME || f === SAFETENSORS_INDEX_NAME || SHARD_RE.test(f)) && !written.has(f);
    if (stale) unlinkSync(join(dir, f));
  }

  writeTextAtomic(join(dir, CONFIG_NAME), configJson(model));
  const gen = generationConfigJson(model);
  if (gen !== null) writeTextAtomic(join(dir, GENERATION_CONFIG_NAME), gen);
}
