// The one dtype table: a record per dtype with its stable id, size and interchange names.
// Every other dtype fact in lowbit (typed-array storage, safetensors parsing, the native dtype enum)
// derives from this table. Ids are a contract with the native addon: never reuse or renumber them.

import { DTypeError, expected } from "./errors.js";

export type DType =
  | "float32"
  | "float16"
  | "bfloat16"
  | "float8_e4m3fn"
  | "float8_e5m2"
  | "int8"
  | "uint8"
  | "int16"
  | "int32"
  | "int64"
  | "bool"
  | "nf4"
  | "fp4";

/** safetensors' dtype strings for the dtypes a safetensors file can hold. */
export type SafetensorsDType = "F32" | "F16" | "BF16" | "F8_E4M3" | "F8_E5M2" | "I8" | "U8" | "I16" | "I32" | "I64" | "BOOL";

export interface DTypeInfo {
  readonly name: DType;
  /** Stable numeric id, shared with the native addon (`native/src/dtype.h`). */
  readonly id: number;
  /** Bits per element. */
  readonly bits: number;
  /** Bytes per element; 0.5 for the packed 4-bit formats. */
  readonly bytes: number;
  readonly isFloat: boolean;
  /** 4-bit codes packed two per byte, high nibble first. */
  readonly isQuantized: boolean;
  /** safetensors dtype string, or null for formats safetensors cannot name (nf4 / fp4 are stored as U8). */
  readonly safetensors: SafetensorsDType | null;
  /** `torch.<name>`, or null when torch has no such dtype. */
  readonly torch: string | null;
}

export const DTYPES = {
  float32: { name: "float32", id: 0, bits: 32, bytes: 4, isFloat: true, isQuantized: false, safetensors: "F32", torch: "float32" },
  float16: { name: "float16", id: 1, bits: 16, bytes: 2, isFloat: true, isQuantized: false, safetensors: "F16", torch: "float16" },
  bfloat16: { name: "bfloat16", id: 2, bits: 16, bytes: 2, isFloat: true, isQuantized: false, safetensors: "BF16", torch: "bfloat16" },
  float8_e4m3fn: { name: "float8_e4m3fn", id: 3, bits: 8, bytes: 1, isFloat: true, isQuantized: false, safetensors: "F8_E4M3", torch: "float8_e4m3fn" },
  float8_e5m2: { name: "float8_e5m2", id: 4, bits: 8, bytes: 1, isFloat: true, isQuantized: false, safetensors: "F8_E5M2", torch: "float8_e5m2" },
  int8: { name: "int8", id: 5, bits: 8, bytes: 1, isFloat: false, isQuantized: false, safetensors: "I8", torch: "int8" },
  uint8: { name: "uint8", id: 6, bits: 8, bytes: 1, isFloat: false, isQuantized: false, safetensors: "U8", torch: "uint8" },
  int16: { name: "int16", id: 7, bits: 16, bytes: 2, isFloat: false, isQuantized: false, safetensors: "I16", torch: "int16" },
  int32: { name: "int32", id: 8, bits: 32, bytes: 4, isFloat: false, isQuantized: false, safetensors: "I32", torch: "int32" },
  int64: { name: "int64", id: 9, bits: 64, bytes: 8, isFloat: false, isQuantized: false, safetensors: "I64", torch: "int64" },
  bool: { name: "bool", id: 10, bits: 8, bytes: 1, isFloat: false, isQuantized: false, safetensors: "BOOL", torch: "bool" },
  nf4: { name: "nf4", id: 11, bits: 4, bytes: 0.5, isFloat: false, isQuantized: true, safetensors: null, torch: null },
  fp4: { name: "fp4", id: 12, bits: 4, bytes: 0.5, isFloat: false, isQuantized: true, safetensors: null, torch: null },
} as const satisfies { readonly [K in DType]: DTypeInfo & { readonly name: K } };

export const DTYPE_NAMES = Object.keys(DTYPES) as DType[];

/** The typed array that holds a dtype's raw elements (16-bit floats as their bits, 4-bit as packed bytes). */
export interface StorageArrays {
  float32: Float32Array;
  float16: Uint16Array;
  bfloat16: Uint16Array;
  float8_e4m3fn: Uint8Array;
  float8_e5m2: Uint8Array;
  int8: Int8Array;
  uint8: Uint8Array;
  int16: Int16Array;
  int32: Int32Array;
  int64: BigInt64Array;
  bool: Uint8Array;
  nf4: Uint8Array;
  fp4: Uint8Array;
}

type ArrayCtor = { new (buffer: ArrayBufferLike, byteOffset?: number, length?: number): ArrayBufferView; new (length: number): ArrayBufferView };

export const STORAGE_ARRAY = {
  float32: Float32Array,
  float16: Uint16Array,
  bfloat16: Uint16Array,
  float8_e4m3fn: Uint8Array,
  float8_e5m2: Uint8Array,
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  int32: Int32Array,
  int64: BigInt64Array,
  bool: Uint8Array,
  nf4: Uint8Array,
  fp4: Uint8Array,
} as const satisfies { readonly [K in DType]: ArrayCtor };

export function isDType(value: unknown): value is DType {
  return typeof value === "string" && Object.prototype.hasOwnProperty.call(DTYPES, value);
}

/** Looks a dtype up by name; throws a DTypeError naming `argName` for anything else. */
export function dtypeInfo(dtype: unknown, argName = "dtype"): DTypeInfo {
  if (!isDType(dtype)) throw new DTypeError(expected(`one of ${DTYPE_NAMES.join(", ")}`, argName, dtype));
  return DTYPES[dtype];
}

const BY_ID: readonly DTypeInfo[] = DTYPE_NAMES.map((n) => DTYPES[n]).sort((a, b) => a.id - b.id);
const BY_SAFETENSORS = new Map<string, DType>(
  DTYPE_NAMES.filter((n) => DTYPES[n].safetensors !== null).map((n) => [DTYPES[n].safetensors as string, n]),
);
const BY_TORCH = new Map<string, DType>(
  DTYPE_NAMES.filter((n) => DTYPES[n].torch !== null).map((n) => [DTYPES[n].torch as string, n]),
);

export function dtypeFromId(id: number): DType {
  const info = BY_ID[id];
  if (info === undefined || info.id !== id) throw new DTypeError(expected(`a dtype id 0..${BY_ID.length - 1}`, "id", id));
  return info.name;
}

/** Maps a safetensors dtype string ("BF16") to a lowbit dtype. */
export function dtypeFromSafetensors(code: string, argName = "dtype"): DType {
  const d = BY_SAFETENSORS.get(code);
  if (d === undefined) throw new DTypeError(expected(`a safetensors dtype (${[...BY_SAFETENSORS.keys()].join(", ")})`, argName, code));
  return d;
}

/** Maps a torch dtype name, with or without the `torch.` prefix, to a lowbit dtype. */
export function dtypeFromTorch(name: string, argName = "dtype"): DType {
  const d = BY_TORCH.get(name.startsWith("torch.") ? name.slice(6) : name);
  if (d === undefined) throw new DTypeError(expected(`a torch dtype name (${[...BY_TORCH.keys()].join(", ")})`, argName, name));
  return d;
}

/** Bytes needed to store `numel` elements (4-bit formats round up to whole bytes). */
export function byteSize(dtype: DType, numel: number): number {
  const info = DTYPES[dtype];
  return info.bits === 4 ? Math.ceil(numel / 2) : numel * info.bytes;
}
