// Bit-exact float32 <-> float16 / bfloat16 / float8_e4m3fn / float8_e5m2 conversions, scalar and whole typed arrays.
//
// Encoding is float32 -> target with round-to-nearest-even, exactly what torch 2.13 (CPU) does for a
// float32 tensor `.to(dtype)`; decoding is exact (every target value is a float32). Everything works on
// the float32 *bit patterns* with integer arithmetic, so subnormals, -0 and NaN payloads never pass
// through a float operation. Per format:
//
// - float16: IEEE binary16. Overflow (|x| >= 65520) -> ±inf. NaN -> quiet NaN keeping the sign and the
//   top 9 payload bits (`sign | 0x7e00 | mantissa >> 13`, as torch / F16C). Decoding a NaN sets the quiet
//   bit and keeps the payload (`sign | 0x7fc00000 | mantissa << 13`, as torch's vector loop and F16C;
//   torch's scalar tail loop gives 0x7fffffff instead).
// - bfloat16: the top half of a float32, rounded. NaN -> 0x7fc0 / 0xffc0 (quiet, sign kept, payload
//   dropped, as ml_dtypes / Eigen). torch itself is not consistent here: its scalar path gives 0x7fc0 for
//   every NaN, its AVX2 / AVX-512 path 0xffff. Decoding is a 16-bit shift.
// - float8_e4m3fn: no infinities, max finite 448, NaN is 0x7f / 0xff. torch 2.13 *saturates*: every
//   finite |x| >= 448 and ±inf become ±448 (0x7e / 0xfe); only NaN becomes NaN (sign kept). (Older torch
//   and ml_dtypes give NaN for |x| >= 464 and ±inf instead.) Decoding 0x7f gives float32 bits 0x7ff00000.
// - float8_e5m2: the top byte of a float16. Overflow (|x| >= 61440) -> ±inf (0x7c / 0xfc), NaN -> 0x7f /
//   0xff. Decoding a NaN sets the quiet bit, as float16.

import { ArgumentError, DTypeError, ShapeError, expected } from "./errors.js";
import type { DType, StorageArrays } from "./table.js";

type FloatDType = Extract<DType, "float32" | "float16" | "bfloat16" | "float8_e4m3fn" | "float8_e5m2">;

// ---------------------------------------------------------------------------------------------------
// Bit punning scratch for the scalar helpers.

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** float32 bit pattern of `x` rounded to float32. */
function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0]!;
}

/** The float32 with bit pattern `bits`, as a number. */
function f32FromBits(bits: number): number {
  scratchU32[0] = bits;
  return scratchF32[0]!;
}

// ---------------------------------------------------------------------------------------------------
// Encoders: float32 bits (an unsigned 32-bit integer) -> target bits. Round to nearest, ties to even.
//
// Normal results: subtracting the exponent-bias difference turns the float32 bits into the target's
// bits followed by the dropped mantissa bits; adding (half - 1 + lowest kept bit) then shifting rounds
// to nearest even, and a carry out of the mantissa correctly bumps the exponent.
// Subnormal results: the target value is round(m * 2^-shift) where m is the float32 mantissa with its
// implicit bit; for shift > 24 it is below half the smallest subnormal and rounds to 0.

function encodeF16(u: number): number {
  const s = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a >= 0x38800000) {
    // |x| >= 2^-14, the smallest normal float16.
    if (a >= 0x477ff000) {
      // |x| >= 65520 (halfway between 65504 and 2^16) rounds to inf; NaN stays NaN.
      return a > 0x7f800000 ? s | 0x7e00 | ((a >>> 13) & 0x3ff) : s | 0x7c00;
    }
    return s | ((a - 0x38000000 + 0xfff + ((a >>> 13) & 1)) >>> 13);
  }
  const shift = 126 - (a >>> 23);
  if (shift > 24) return s;
  const m = (a & 0x7fffff) | 0x800000;
  return s | ((m + (1 << (shift - 1)) - 1 + ((m >>> shift) & 1)) >>> shift);
}

function encodeBf16(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) & 0x8000) | 0x7fc0;
  // u <= 0xff800000, so the sum stays below 2^32 and >>> is exact.
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

function encodeE4M3FN(u: number): number {
  const s = (u >>> 24) & 0x80;
  const a = u & 0x7fffffff;
  if (a >= 0x3c800000) {
    // |x| >= 2^-6, the smallest normal e4m3fn.
    if (a >= 0x43e00000) {
      // |x| >= 448: torch 2.13 saturates finite values and inf to ±448; NaN stays NaN.
      return a > 0x7f800000 ? s | 0x7f : s | 0x7e;
    }
    return s | ((a - 0x3c000000 + 0x7ffff + ((a >>> 20) & 1)) >>> 20);
  }
  const shift = 141 - (a >>> 23);
  if (shift > 24) return s;
  const m = (a & 0x7fffff) | 0x800000;
  return s | ((m + (1 << (shift - 1)) - 1 + ((m >>> shift) & 1)) >>> shift);
}

function encodeE5M2(u: number): number {
  const s = (u >>> 24) & 0x80;
  const a = u & 0x7fffffff;
  if (a >= 0x38800000) {
    // |x| >= 2^-14, the smallest normal e5m2.
    if (a >= 0x47700000) {
      // |x| >= 61440 (halfway between 57344 and 2^16) rounds to inf; NaN stays NaN.
      return a > 0x7f800000 ? s | 0x7f : s | 0x7c;
    }
    return s | ((a - 0x38000000 + 0xfffff + ((a >>> 21) & 1)) >>> 21);
  }
  const shift = 134 - (a >>> 23);
  if (shift > 24) return s;
  const m = (a & 0x7fffff) | 0x800000;
  return s | ((m + (1 << (shift - 1)) - 1 + ((m >>> shift) & 1)) >>> shift);
}

// ---------------------------------------------------------------------------------------------------
// Decoders: target bits -> float32 bits (as an int32; store through a Uint32Array).

function decodeF16(h: number): number {
  const s = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m === 0 ? s | 0x7f800000 : s | 0x7fc00000 | (m << 13);
  if (e !== 0) return s | ((e + 112) << 23) | (m << 13);
  if (m === 0) return s;
  // Subnormal m * 2^-24: normalise on the highest set bit p.
  const p = 31 - Math.clz32(m);
  return s | ((p + 103) << 23) | ((m ^ (1 << p)) << (23 - p));
}

function decodeE4M3FN(b: number): number {
  const s = (b & 0x80) << 24;
  const e = (b >>> 3) & 0xf;
  const m = b & 7;
  if ((b & 0x7f) === 0x7f) return s | 0x7ff00000;
  if (e !== 0) return s | ((e + 120) << 23) | (m << 20);
  if (m === 0) return s;
  // Subnormal m * 2^-9.
  const p = 31 - Math.clz32(m);
  return s | ((p + 118) << 23) | ((m ^ (1 << p)) << (23 - p));
}

function decodeE5M2(b: number): number {
  return decodeF16((b & 0xff) << 8);
}

// Lookup tables for the array decoders, built on first use.
let f16Table: Uint32Array | undefined;
let e4m3fnTable: Uint32Array | undefined;
let e5m2Table: Uint32Array | undefined;

function buildTable(size: number, decode: (bits: number) => number): Uint32Array {
  const t = new Uint32Array(size);
  for (let i = 0; i < size; i++) t[i] = decode(i);
  return t;
}

// ---------------------------------------------------------------------------------------------------
// Scalar helpers.

/** float16 bits (0..0xffff) of `x` rounded to float32 and then to float16 (nearest, ties to even). */
export function f32ToF16Bits(x: number): number {
  return encodeF16(f32Bits(x));
}

/** The value of float16 bits `h` (only the low 16 bits are used). */
export function f16BitsToF32(h: number): number {
  return f32FromBits(decodeF16(h & 0xffff));
}

/** bfloat16 bits (0..0xffff) of `x` rounded to float32 and then to bfloat16 (nearest, ties to even). */
export function f32ToBf16Bits(x: number): number {
  return encodeBf16(f32Bits(x));
}

/** The value of bfloat16 bits `h` (only the low 16 bits are used). */
export function bf16BitsToF32(h: number): number {
  return f32FromBits((h & 0xffff) << 16);
}

/** float8_e4m3fn bits (0..0xff) of `x` rounded to float32 and then to e4m3fn (torch: saturates to ±448). */
export function f32ToF8E4M3FNBits(x: number): number {
  return encodeE4M3FN(f32Bits(x));
}

/** The value of float8_e4m3fn bits `b` (only the low 8 bits are used). */
export function f8E4M3FNBitsToF32(b: number): number {
  return f32FromBits(decodeE4M3FN(b & 0xff));
}

/** float8_e5m2 bits (0..0xff) of `x` rounded to float32 and then to e5m2 (nearest, ties to even). */
export function f32ToF8E5M2Bits(x: number): number {
  return encodeE5M2(f32Bits(x));
}

/** The value of float8_e5m2 bits `b` (only the low 8 bits are used). */
export function f8E5M2BitsToF32(b: number): number {
  return f32FromBits(decodeE5M2(b & 0xff));
}

// ---------------------------------------------------------------------------------------------------
// Argument checks.

type TypedArrayCtor<T> = { new (length: number): T; readonly name: string };

function checkArray<T extends ArrayBufferView>(value: unknown, ctor: TypedArrayCtor<T>, name: string): T {
  if (value instanceof (ctor as unknown as new (length: number) => T)) return value as T;
  const what = `a ${ctor.name}`;
  // A typed array of the wrong element type is a dtype mistake; anything else is a bad argument.
  if (ArrayBuffer.isView(value)) throw new DTypeError(expected(what, name, value));
  throw new ArgumentError(expected(what, name, value));
}

function makeOut<T extends ArrayBufferView & { readonly length: number }>(
  out: unknown,
  ctor: TypedArrayCtor<T>,
  length: number,
): T {
  if (out === undefined) return new ctor(length);
  const arr = checkArray(out, ctor, "out");
  if (arr.length !== length) throw new ShapeError(expected(`a ${ctor.name} of length ${length}`, "out", arr));
  return arr;
}

/** True when the bytes of `a` and `b` overlap. */
function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/** `src`'s float32 bit patterns, copied first if `out` overlaps it. */
function bitsOf(src: Float32Array, out: ArrayBufferView): Uint32Array {
  const s = overlaps(src, out) ? src.slice() : src;
  return new Uint32Array(s.buffer, s.byteOffset, s.length);
}

/** `src` itself, or a copy of it if `out` overlaps it. */
function unaliased<T extends Uint8Array | Uint16Array>(src: T, out: ArrayBufferView): T {
  return overlaps(src, out) ? (src.slice() as T) : src;
}

/** A Uint32Array over `out`'s bytes, to write float32 bit patterns (NaN payloads included) exactly. */
function u32Of(out: Float32Array): Uint32Array {
  return new Uint32Array(out.buffer, out.byteOffset, out.length);
}

// ---------------------------------------------------------------------------------------------------
// Array conversions. `out`, when given, must have the same length as `src`; it may share `src`'s buffer.

/** float32 -> float16 bits, nearest-even. */
export function float32ToFloat16(src: Float32Array, out?: Uint16Array): Uint16Array {
  const s = checkArray(src, Float32Array, "src");
  const n = s.length;
  const dst = makeOut(out, Uint16Array, n);
  const bits = bitsOf(s, dst);
  for (let i = 0; i < n; i++) dst[i] = encodeF16(bits[i]!);
  return dst;
}

/** float16 bits -> float32, exact. */
export function float16ToFloat32(src: Uint16Array, out?: Float32Array): Float32Array {
  const s = checkArray(src, Uint16Array, "src");
  const n = s.length;
  const dst = makeOut(out, Float32Array, n);
  const h = unaliased(s, dst);
  const d = u32Of(dst);
  const t = (f16Table ??= buildTable(0x10000, decodeF16));
  for (let i = 0; i < n; i++) d[i] = t[h[i]!]!;
  return dst;
}

/** float32 -> bfloat16 bits, nearest-even. */
export function float32ToBfloat16(src: Float32Array, out?: Uint16Array): Uint16Array {
  const s = checkArray(src, Float32Array, "src");
  const n = s.length;
  const dst = makeOut(out, Uint16Array, n);
  const bits = bitsOf(s, dst);
  for (let i = 0; i < n; i++) dst[i] = encodeBf16(bits[i]!);
  return dst;
}

/** bfloat16 bits -> float32, exact. */
export function bfloat16ToFloat32(src: Uint16Array, out?: Float32Array): Float32Array {
  const s = checkArray(src, Uint16Array, "src");
  const n = s.length;
  const dst = makeOut(out, Float32Array, n);
  const h = unaliased(s, dst);
  const d = u32Of(dst);
  for (let i = 0; i < n; i++) d[i] = h[i]! << 16;
  return dst;
}

/** float32 -> float8_e4m3fn bits, nearest-even, saturating to ±448 like torch. */
export function float32ToFloat8E4M3FN(src: Float32Array, out?: Uint8Array): Uint8Array {
  const s = checkArray(src, Float32Array, "src");
  const n = s.length;
  const dst = makeOut(out, Uint8Array, n);
  const bits = bitsOf(s, dst);
  for (let i = 0; i < n; i++) dst[i] = encodeE4M3FN(bits[i]!);
  return dst;
}

/** float8_e4m3fn bits -> float32, exact. */
export function float8E4M3FNToFloat32(src: Uint8Array, out?: Float32Array): Float32Array {
  const s = checkArray(src, Uint8Array, "src");
  const n = s.length;
  const dst = makeOut(out, Float32Array, n);
  const b = unaliased(s, dst);
  const d = u32Of(dst);
  const t = (e4m3fnTable ??= buildTable(0x100, decodeE4M3FN));
  for (let i = 0; i < n; i++) d[i] = t[b[i]!]!;
  return dst;
}

/** float32 -> float8_e5m2 bits, nearest-even. */
export function float32ToFloat8E5M2(src: Float32Array, out?: Uint8Array): Uint8Array {
  const s = checkArray(src, Float32Array, "src");
  const n = s.length;
  const dst = makeOut(out, Uint8Array, n);
  const bits = bitsOf(s, dst);
  for (let i = 0; i < n; i++) dst[i] = encodeE5M2(bits[i]!);
  return dst;
}

/** float8_e5m2 bits -> float32, exact. */
export function float8E5M2ToFloat32(src: Uint8Array, out?: Float32Array): Float32Array {
  const s = checkArray(src, Uint8Array, "src");
  const n = s.length;
  const dst = makeOut(out, Float32Array, n);
  const b = unaliased(s, dst);
  const d = u32Of(dst);
  const t = (e5m2Table ??= buildTable(0x100, decodeE5M2));
  for (let i = 0; i < n; i++) d[i] = t[b[i]!]!;
  return dst;
}

// ---------------------------------------------------------------------------------------------------
// Generic helpers.

const FLOAT_DTYPES = "float32, float16, bfloat16, float8_e4m3fn, float8_e5m2";

/**
 * Decodes `src`, holding `dtype` elements (float32 values, or the bits of a 16- / 8-bit float), to a new
 * Float32Array. For "float32" the result is a copy.
 */
export function toFloat32(src: Float32Array | Uint16Array | Uint8Array, dtype: FloatDType): Float32Array {
  switch (dtype) {
    case "float32":
      return checkArray(src, Float32Array, "src").slice();
    case "float16":
      return float16ToFloat32(src as Uint16Array);
    case "bfloat16":
      return bfloat16ToFloat32(src as Uint16Array);
    case "float8_e4m3fn":
      return float8E4M3FNToFloat32(src as Uint8Array);
    case "float8_e5m2":
      return float8E5M2ToFloat32(src as Uint8Array);
    default:
      throw new DTypeError(expected(`one of ${FLOAT_DTYPES}`, "dtype", dtype));
  }
}

/**
 * Encodes float32 `src` as `dtype` into a new array: a Float32Array copy for "float32", float16 /
 * bfloat16 bits in a Uint16Array, float8 bits in a Uint8Array.
 */
export function fromFloat32<D extends FloatDType>(src: Float32Array, dtype: D): StorageArrays[D];
export function fromFloat32(src: Float32Array, dtype: FloatDType): Float32Array | Uint16Array | Uint8Array;
export function fromFloat32(src: Float32Array, dtype: FloatDType): Float32Array | Uint16Array | Uint8Array {
  switch (dtype) {
    case "float32":
      return checkArray(src, Float32Array, "src").slice();
    case "float16":
      return float32ToFloat16(src);
    case "bfloat16":
      return float32ToBfloat16(src);
    case "float8_e4m3fn":
      return float32ToFloat8E4M3FN(src);
    case "float8_e5m2":
      return float32ToFloat8E5M2(src);
    default:
      throw new DTypeError(expected(`one of ${FLOAT_DTYPES}`, "dtype", dtype));
  }
}
