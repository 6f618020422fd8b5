// Bytes per element as accelerate's `dtype_byte_size` computes them (spec A1), and the bytes a
// bitsandbytes-quantized weight occupies (spec A1 "Quantized sizes", B5, B6).
//
// dtype names: every lowbit DType, the torch names accelerate meets ("float64", "uint16", "complex64",
// "float8_e4m3fnuz", ... with or without a "torch." prefix) and accelerate's CustomDtype values
// ("int4", "int2", "fp8"). Sizes can be fractional (bool is 1/8 byte, int4 1/2): that is accelerate's
// rule, kept so that planned sizes match upstream byte for byte.
import { DTypeError, expected } from "@lowbit/dtypes";

/** How a weight will be stored quantized (the logical shape and dtype stay those of the float weight). */
export type QuantSpec =
  | {
      /** bitsandbytes 4-bit (Linear4bit): two codes per byte plus one absmax per block. */
      readonly type: "nf4" | "fp4";
      /** Elements per absmax block (bitsandbytes default 64). */
      readonly blocksize?: number;
      /** Double quantization: uint8 absmax + fp32 nested absmax per 256 blocks + a 256-entry map. */
      readonly doubleQuant?: boolean;
      /** Absmax values per nested block (bitsandbytes: 256). */
      readonly nestedBlocksize?: number;
    }
  | {
      /** bitsandbytes LLM.int8 (Linear8bitLt): int8 weight (out, in) plus fp32 row scales SCB (out,). */
      readonly type: "int8";
    };

/**
 * How quantized weights are counted:
 * - "storage" (default): the bytes bitsandbytes keeps — nf4/fp4 packed codes + absmax (+ quant map,
 *   nested absmax and nested map), int8 codes + SCB. This is what a lowbit Linear4bit / Linear8bitLt
 *   holds, so a plan made from a description matches a plan made from the loaded Module.
 * - "transformers": transformers 5's `param_element_size` — 0.5 B per element for a 4-bit weight, 1 B
 *   for an 8-bit one, nothing for the quantization state (B6). Use it to reproduce transformers' maps.
 */
export type QuantizedSizes = "storage" | "transformers";

const CUSTOM_SIZES: Readonly<Record<string, number>> = {
  // accelerate CustomDtype (utils/dataclasses.py) and lowbit's packed 4-bit dtypes.
  int2: 1 / 4,
  int4: 1 / 2,
  fp8: 1,
  nf4: 1 / 2,
  fp4: 1 / 2,
};

/** The canonical name: "torch.float16" → "float16"; throws DTypeError for anything not a string. */
export function canonicalDTypeName(dtype: unknown, name: string): string {
  if (typeof dtype !== "string" || dtype === "") throw new DTypeError(expected("a dtype name such as \"float16\"", name, dtype));
  return dtype.startsWith("torch.") ? dtype.slice("torch.".length) : dtype;
}

/**
 * Bytes per element, as accelerate's `dtype_byte_size`: bool 1/8, int2 1/4, int4 1/2, fp8 and every
 * float8 variant 1, otherwise the trailing bit count of the name integer-divided by 8.
 * @throws {DTypeError} when the name has no size (no trailing digits, e.g. "float").
 */
export function dtypeByteSize(dtype: string, name = "dtype"): number {
  const d = canonicalDTypeName(dtype, name);
  if (d === "bool") return 1 / 8;
  const custom = CUSTOM_SIZES[d];
  if (custom !== undefined) return custom;
  if (d.startsWith("float8")) return 1;
  const m = /[^\d](\d+)$/.exec(d);
  if (m === null || m[1] === undefined) {
    throw new DTypeError(expected("a dtype whose name ends in its bit width (float16, int8, ...) or bool / int4 / int2 / fp8 / nf4 / fp4", name, dtype));
  }
  return Math.floor(Number(m[1]) / 8);
}

/** Whether accelerate treats the dtype as integer / bool: such tensors are never cast, so `dtype` does not shrink them. */
export function isIntegerOrBoolDType(dtype: string): boolean {
  const d = dtype.startsWith("torch.") ? dtype.slice("torch.".length) : dtype;
  return d.startsWith("uint") || d.startsWith("int") || d === "bool";
}

/** Validates a QuantSpec (throws ArgumentError-derived DTypeError naming `name`). */
export function checkQuantSpec(quant: unknown, name: string): QuantSpec {
  if (typeof quant !== "object" || quant === null) throw new DTypeError(expected('a quantization spec ({ type: "nf4" | "fp4" | "int8" })', name, quant));
  const q = quant as Record<string, unknown>;
  if (q.type === "int8") return { type: "int8" };
  if (q.type !== "nf4" && q.type !== "fp4") throw new DTypeError(expected('"nf4", "fp4" or "int8"', `${name}.type`, q.type));
  const blocksize = q.blocksize ?? 64;
  if (typeof blocksize !== "number" || !Number.isInteger(blocksize) || blocksize <= 0) throw new DTypeError(expected("a positive integer", `${name}.blocksize`, blocksize));
  const nested = q.nestedBlocksize ?? 256;
  if (typeof nested !== "number" || !Number.isInteger(nested) || nested <= 0) throw new DTypeError(expected("a positive integer", `${name}.nestedBlocksize`, nested));
  const doubleQuant = q.doubleQuant ?? false;
  if (typeof doubleQuant !== "boolean") throw new DTypeError(expected("a boolean", `${name}.doubleQuant`, doubleQuant));
  return { type: q.type, blocksize, doubleQuant, nestedBlocksize: nested };
}

/**
 * Bytes of a weight of `numel` elements (logical shape `shape`) stored with `quant`.
 * "storage": 4-bit = ceil(n/2) packed + absmax (fp32 per block, or uint8 per block + fp32 per nested
 * block + the 256-entry fp32 nested map with double quantization) + the 16-entry fp32 code map;
 * int8 = n codes + 4 B of SCB per output row (shape[0]). "transformers": 0.5 or 1 B per element.
 */
export function quantizedByteSize(quant: QuantSpec, shape: readonly number[], mode: QuantizedSizes): number {
  const numel = shape.reduce((a, b) => a * b, 1);
  if (quant.type === "int8") {
    if (mode === "transformers") return numel;
    const rows = shape.length === 0 ? 1 : shape[0]!;
    return numel + 4 * rows;
  }
  if (mode === "transformers") return numel / 2;
  const blocksize = quant.blocksize ?? 64;
  const nBlocks = Math.ceil(numel / blocksize);
  const packed = Math.ceil(numel / 2);
  const codeMap = 16 * 4;
  if (!(quant.doubleQuant ?? false)) return packed + 4 * nBlocks + codeMap;
  const nested = Math.ceil(nBlocks / (quant.nestedBlocksize ?? 256));
  return packed + nBlocks + 4 * nested + 256 * 4 + codeMap;
}
