// QuantState: the metadata of a 4-bit quantized tensor, and its bitsandbytes serialization
// (spec-bitsandbytes.md §13): the state-dict tensors and the packed `quant_state.bitsandbytes__<type>` JSON.

import { DYNAMIC_MAP_SIGNED, FP4_QUANT_MAP, NF4_CODE } from "./codebooks.js";
import { ArgumentError, QuantStateError, expected } from "./errors.js";
import { pyFloatRepr } from "./pyfloat.js";
import type { DType } from "./table.js";
import type { FloatDType } from "./validate.js";

export type QuantType = "nf4" | "fp4";

/** A tensor of a state dict, independent of any tensor library. */
export interface StateTensor {
  dtype: DType;
  shape: number[];
  data: Float32Array | Uint8Array;
}

/** The 8-bit quantization of the absmax (double quantization). */
export interface NestedState {
  /** float32 absmax of each block of 256 centred absmax values. */
  absmax: Float32Array;
  /** The signed dynamic map, float32[256]. */
  code: Float32Array;
  blocksize: number;
  dtype: "float32";
}

export interface QuantStateInit {
  quantType: QuantType;
  blocksize: number;
  /** Original dtype, which dequantization returns. */
  dtype: FloatDType;
  /** Original shape, e.g. [out_features, in_features]. */
  shape: number[];
  /** float32 per-block absmax, or uint8 codes when nested. */
  absmax: Float32Array | Uint8Array;
  /** The quant_map: the 4-bit codebook as bitsandbytes serializes it. */
  code: Float32Array;
  /** Mean subtracted before nested quantization (float32 value), when nested. */
  offset?: number | null;
  state2?: NestedState | null;
}

const JSON_KEYS = ["quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset"] as const;
const TENSOR_KEYS = ["absmax", "quant_map", "nested_absmax", "nested_quant_map"] as const;

function joinPrefix(prefix: string): string {
  return prefix === "" || prefix.endsWith(".") ? prefix : `${prefix}.`;
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return false;
  return true;
}

export class QuantState {
  readonly quantType: QuantType;
  readonly blocksize: number;
  readonly dtype: FloatDType;
  readonly shape: readonly number[];
  readonly absmax: Float32Array | Uint8Array;
  readonly code: Float32Array;
  readonly offset: number | null;
  readonly state2: NestedState | null;

  constructor(init: QuantStateInit) {
    this.quantType = init.quantType;
    this.blocksize = init.blocksize;
    this.dtype = init.dtype;
    this.shape = Object.freeze([...init.shape]);
    this.absmax = init.absmax;
    this.code = init.code;
    this.offset = init.offset ?? null;
    this.state2 = init.state2 ?? null;
    const nBlocks = Math.ceil(this.numel / this.blocksize);
    if (this.absmax.length !== nBlocks) {
      throw new QuantStateError(`Expected ${nBlocks} absmax values for shape [${this.shape.join(", ")}] at blocksize ${this.blocksize} but received ${this.absmax.length}`);
    }
    if (this.state2 !== null) {
      if (!(this.absmax instanceof Uint8Array)) throw new QuantStateError(expected("uint8 absmax codes in a nested state", "absmax", this.absmax));
      if (this.offset === null) throw new QuantStateError("A nested quant state needs an offset (nested_offset)");
      const nNested = Math.ceil(nBlocks / this.state2.blocksize);
      if (this.state2.absmax.length !== nNested) {
        throw new QuantStateError(`Expected ${nNested} nested_absmax values for ${nBlocks} blocks at nested blocksize ${this.state2.blocksize} but received ${this.state2.absmax.length}`);
      }
      if (this.state2.code.length !== 256) throw new QuantStateError(expected("256 values", "nested_quant_map", this.state2.code));
    } else if (!(this.absmax instanceof Float32Array)) {
      throw new QuantStateError(expected("float32 absmax in a non-nested state", "absmax", this.absmax));
    }
  }

  /** Whether the absmax is double-quantized. */
  get nested(): boolean {
    return this.state2 !== null;
  }

  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** The state-dict key of the packed JSON, e.g. `quant_state.bitsandbytes__nf4`. */
  get jsonKey(): string {
    return `quant_state.bitsandbytes__${this.quantType}`;
  }

  /** The JSON bitsandbytes packs, with Python's json.dumps layout and key order. */
  toJSONString(): string {
    const parts = [
      `"quant_type": "${this.quantType}"`,
      `"blocksize": ${this.blocksize}`,
      `"dtype": "${this.dtype}"`,
      `"shape": [${this.shape.join(", ")}]`,
    ];
    if (this.state2 !== null) {
      parts.push(`"nested_blocksize": ${this.state2.blocksize}`, `"nested_dtype": "${this.state2.dtype}"`, `"nested_offset": ${pyFloatRepr(this.offset ?? 0)}`);
    }
    return `{${parts.join(", ")}}`;
  }

  /**
   * The tensors bitsandbytes' `Linear4bit` saves next to `<prefix>weight`, in its insertion order:
   * absmax, quant_map, [nested_absmax, nested_quant_map], quant_state.bitsandbytes__<type>.
   * `prefix` is the weight's key, e.g. "model.layers.0.mlp.down_proj.weight".
   */
  toStateDict(prefix = ""): Record<string, StateTensor> {
    const p = joinPrefix(prefix);
    const out: Record<string, StateTensor> = {};
    out[`${p}absmax`] = { dtype: this.nested ? "uint8" : "float32", shape: [this.absmax.length], data: this.absmax };
    out[`${p}quant_map`] = { dtype: "float32", shape: [16], data: this.code };
    if (this.state2 !== null) {
      out[`${p}nested_absmax`] = { dtype: "float32", shape: [this.state2.absmax.length], data: this.state2.absmax };
      // A separate copy: safetensors forbids shared tensors.
      out[`${p}nested_quant_map`] = { dtype: "float32", shape: [256], data: this.state2.code.slice() };
    }
    const json = new TextEncoder().encode(this.toJSONString());
    out[`${p}${this.jsonKey}`] = { dtype: "uint8", shape: [json.length], data: json };
    return out;
  }

  /**
   * Reads a state written by bitsandbytes (`QuantState.from_dict`): the keys under `prefix`, exactly one
   * `quant_state.bitsandbytes__nf4|fp4` JSON, nested iff `nested_absmax` is present. Unknown keys and
   * inconsistent shapes throw QuantStateError naming the key. A quant_map that differs from the
   * canonical table is reported through `onWarning` (default console.warn); the canonical table is used.
   */
  static fromStateDict(
    prefix: string,
    tensors: Record<string, StateTensor> | Map<string, StateTensor>,
    options: { onWarning?: (message: string) => void } = {},
  ): QuantState {
    const p = joinPrefix(prefix);
    const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
    const found = new Map<string, StateTensor>();
    let jsonKey: string | null = null;
    for (const [key, t] of entries) {
      if (!key.startsWith(p)) continue;
      const rest = key.slice(p.length);
      if (rest.startsWith("quant_state.")) {
        if (rest !== "quant_state.bitsandbytes__nf4" && rest !== "quant_state.bitsandbytes__fp4") {
          throw new QuantStateError(`Expected quant_state.bitsandbytes__nf4 or __fp4 but found key "${key}"`);
        }
        if (jsonKey !== null) throw new QuantStateError(`Expected exactly one quant_state key under "${p}" but found "${jsonKey}" and "${key}"`);
        jsonKey = key;
        found.set("quant_state", t);
      } else if ((TENSOR_KEYS as readonly string[]).includes(rest)) {
        found.set(rest, t);
      }
    }
    if (jsonKey === null) throw new QuantStateError(`Expected a key "${p}quant_state.bitsandbytes__nf4" (or __fp4) but none was found`);
    const jsonTensor = found.get("quant_state")!;
    if (!(jsonTensor.data instanceof Uint8Array)) throw new QuantStateError(expected("uint8 JSON bytes", jsonKey, jsonTensor.data));
    let meta: Record<string, unknown>;
    try {
      meta = JSON.parse(new TextDecoder().decode(jsonTensor.data)) as Record<string, unknown>;
    } catch (cause) {
      throw new QuantStateError(`Expected JSON in "${jsonKey}" but it does not parse`, { cause });
    }
    for (const k of Object.keys(meta)) {
      if (!(JSON_KEYS as readonly string[]).includes(k)) throw new QuantStateError(`Unexpected field "${k}" in "${jsonKey}"`);
    }
    const quantType = meta.quant_type;
    if (quantType !== "nf4" && quantType !== "fp4") throw new QuantStateError(expected(`"nf4" or "fp4"`, `${jsonKey} quant_type`, quantType));
    if (!jsonKey.endsWith(quantType)) throw new QuantStateError(`The key "${jsonKey}" disagrees with its quant_type "${quantType}"`);
    const blocksize = meta.blocksize;
    if (typeof blocksize !== "number" || !Number.isInteger(blocksize) || blocksize <= 0 || (blocksize & (blocksize - 1)) !== 0) {
      throw new QuantStateError(expected("a power-of-two blocksize", `${jsonKey} blocksize`, blocksize));
    }
    const dtype = meta.dtype;
    if (dtype !== "float32" && dtype !== "float16" && dtype !== "bfloat16") {
      throw new QuantStateError(expected(`"float32", "float16" or "bfloat16"`, `${jsonKey} dtype`, dtype));
    }
    const shape = meta.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new QuantStateError(expected("an array of non-negative integers", `${jsonKey} shape`, shape));
    }
    const absmaxT = found.get("absmax");
    if (absmaxT === undefined) throw new QuantStateError(`Expected a key "${p}absmax" but none was found`);
    const quantMapT = found.get("quant_map");
    const canonical = quantType === "nf4" ? NF4_CODE : FP4_QUANT_MAP;
    if (quantMapT !== undefined && !(quantMapT.data instanceof Float32Array && sameBits(quantMapT.data, canonical))) {
      (options.onWarning ?? console.warn)(`"${p}quant_map" differs from the canonical ${quantType} table; using the canonical table`);
    }
    const nestedT = found.get("nested_absmax");
    const base = { quantType, blocksize, dtype, shape: shape as number[], code: canonical } as const;
    if (nestedT === undefined) {
      if (!(absmaxT.data instanceof Float32Array)) throw new QuantStateError(expected("float32 absmax", `${p}absmax`, absmaxT.data));
      return new QuantState({ ...base, absmax: absmaxT.data });
    }
    if (!(absmaxT.data instanceof Uint8Array)) throw new QuantStateError(expected("uint8 absmax codes", `${p}absmax`, absmaxT.data));
    if (!(nestedT.data instanceof Float32Array)) throw new QuantStateError(expected("float32", `${p}nested_absmax`, nestedT.data));
    const nestedCodeT = found.get("nested_quant_map");
    const nestedCode = nestedCodeT?.data ?? DYNAMIC_MAP_SIGNED;
    if (!(nestedCode instanceof Float32Array) || nestedCode.length !== 256) {
      throw new QuantStateError(expected("float32[256]", `${p}nested_quant_map`, nestedCode));
    }
    const nestedBlocksize = meta.nested_blocksize;
    if (typeof nestedBlocksize !== "number" || !Number.isInteger(nestedBlocksize) || nestedBlocksize <= 0) {
      throw new QuantStateError(expected("a positive integer", `${jsonKey} nested_blocksize`, nestedBlocksize));
    }
    const offset = meta.nested_offset;
    if (typeof offset !== "number") throw new QuantStateError(expected("a number", `${jsonKey} nested_offset`, offset));
    return new QuantState({
      ...base,
      absmax: absmaxT.data,
      offset: Math.fround(offset),
      state2: { absmax: nestedT.data, code: nestedCode, blocksize: nestedBlocksize, dtype: "float32" },
    });
  }
}

export function isQuantType(value: unknown): value is QuantType {
  return value === "nf4" || value === "fp4";
}

/** Throws unless `value` is "nf4" or "fp4". */
export function checkQuantType(value: unknown, name = "quantType"): QuantType {
  if (!isQuantType(value)) throw new ArgumentError(expected(`"nf4" or "fp4"`, name, value));
  return value;
}
