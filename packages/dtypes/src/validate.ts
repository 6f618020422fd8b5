// Argument checks shared by the codecs: each throws a typed error naming the argument.

import { ArgumentError, DTypeError, ShapeError, expected } from "./errors.js";
import { toFloat32 } from "./float.js";

/** The float dtypes a codec accepts as input or produces as output. */
export type FloatDType = "float32" | "float16" | "bfloat16";
/** float32 values, or float16 / bfloat16 bit patterns (say which with a `dtype` option). */
export type FloatArray = Float32Array | Uint16Array;

export const FLOAT_DTYPES: readonly FloatDType[] = ["float32", "float16", "bfloat16"];

export function checkFloatDType(dtype: unknown, name: string): FloatDType {
  if (dtype !== "float32" && dtype !== "float16" && dtype !== "bfloat16") {
    throw new DTypeError(expected(`one of ${FLOAT_DTYPES.join(", ")}`, name, dtype));
  }
  return dtype;
}

/**
 * Decodes a float input to float32 values. A Float32Array is float32 (and is returned as is); a
 * Uint16Array holds float16 or bfloat16 bits and needs `dtype` to say which.
 */
export function floatInput(values: unknown, dtype: unknown, name: string): { values: Float32Array; dtype: FloatDType } {
  if (values instanceof Float32Array) {
    if (dtype !== undefined && dtype !== "float32") {
      throw new DTypeError(expected(`dtype "float32" (or none) for a Float32Array`, `${name}'s dtype`, dtype));
    }
    return { values, dtype: "float32" };
  }
  if (values instanceof Uint16Array) {
    if (dtype !== "float16" && dtype !== "bfloat16") {
      throw new DTypeError(expected(`dtype "float16" or "bfloat16" to say what the Uint16Array ${name} holds`, "dtype", dtype));
    }
    return { values: toFloat32(values, dtype) as Float32Array, dtype };
  }
  throw new ArgumentError(expected("a Float32Array, or a Uint16Array of float16 / bfloat16 bits", name, values));
}

export function checkInteger(value: unknown, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new ArgumentError(expected(`an integer in [${min}, ${max}]`, name, value));
  }
  return value;
}

export function checkOneOf<T extends string | number>(value: unknown, allowed: readonly T[], name: string): T {
  if (!allowed.includes(value as T)) throw new ArgumentError(expected(`one of ${allowed.join(", ")}`, name, value));
  return value as T;
}

export function checkLength(actual: number, wanted: number, name: string): void {
  if (actual !== wanted) throw new ShapeError(`Expected ${wanted} elements for ${name} but received ${actual}`);
}

export function checkShape(shape: unknown, numel: number, name: string): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new ArgumentError(expected("an array of non-negative integers", name, shape));
  }
  const n = shape.reduce((a: number, b: number) => a * b, 1);
  if (n !== numel) throw new ShapeError(`Expected ${name} [${shape.join(", ")}] to hold ${numel} elements but it holds ${n}`);
  return [...(shape as number[])];
}
