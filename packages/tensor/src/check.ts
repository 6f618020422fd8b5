// Argument checks shared by every op. Each throws a typed error that names the op, the argument,
// what was expected and what was received; none of them lets bad input reach native code.

import { ArgumentError, DTypeError, ShapeError, expected, type DType } from "@lowbit/dtypes";
import { DeviceError, DisposedError } from "@lowbit/kernels";
import { formatShape, type Shape } from "./shape.js";
import { Tensor } from "./tensor.js";

/** The dtypes float kernels compute in. */
export type FloatDType = "float32" | "float16" | "bfloat16";
export const FLOAT_DTYPES: readonly DType[] = ["float32", "float16", "bfloat16"];
export const INDEX_DTYPES: readonly DType[] = ["int32", "int64"];

export function isFloatDType(dtype: DType): dtype is FloatDType {
  return dtype === "float32" || dtype === "float16" || dtype === "bfloat16";
}

/** `x` is a live Tensor. */
export function checkTensor(x: unknown, name: string, op: string): Tensor {
  if (!(x instanceof Tensor)) throw new ArgumentError(expected("a Tensor", `${op}'s ${name}`, x));
  if (x.disposed) throw new DisposedError(`${op}: ${name} (a tensor of shape ${formatShape(x.shape)}, ${x.dtype}) was disposed`);
  return x;
}

/** `x` is a live float32 / float16 / bfloat16 Tensor. */
export function checkFloat(x: unknown, name: string, op: string): Tensor {
  const t = checkTensor(x, name, op);
  if (!isFloatDType(t.dtype)) throw new DTypeError(expected("a float32, float16 or bfloat16 tensor", `${op}'s ${name}`, t.dtype));
  return t;
}

/** `x` is a live int32 / int64 Tensor (indices, targets, positions). */
export function checkIndex(x: unknown, name: string, op: string): Tensor {
  const t = checkTensor(x, name, op);
  if (t.dtype !== "int32" && t.dtype !== "int64") throw new DTypeError(expected("an int32 or int64 tensor", `${op}'s ${name}`, t.dtype));
  return t;
}

/** All tensors live on one device: a DeviceError naming the op and both devices otherwise (never a copy). */
export function checkSameDevice(op: string, ...pairs: Array<[string, Tensor | null | undefined]>): string {
  let first: [string, Tensor] | null = null;
  for (const [name, t] of pairs) {
    if (t === null || t === undefined) continue;
    if (first === null) first = [name, t];
    else if (t.device !== first[1].device) {
      throw new DeviceError(
        `${op}: expected all tensors on one device but ${first[0]} is on ${first[1].device} and ${name} is on ${t.device}; move one with .to(device)`,
      );
    }
  }
  return first?.[1].device ?? "cpu";
}

export function checkSameDType(op: string, a: [string, Tensor], b: [string, Tensor]): void {
  if (a[1].dtype !== b[1].dtype) {
    throw new DTypeError(`${op}: expected ${a[0]} and ${b[0]} to have one dtype but ${a[0]} is ${a[1].dtype} and ${b[0]} is ${b[1].dtype}; cast one with .to(dtype)`);
  }
}

export function checkRank(t: Tensor, rank: number | readonly number[], name: string, op: string, what?: string): void {
  const ok = typeof rank === "number" ? t.ndim === rank : rank.includes(t.ndim);
  if (!ok) {
    const want = typeof rank === "number" ? `${rank}` : rank.join(" or ");
    throw new ShapeError(`${op}: expected ${name} to be ${want}-D${what ? ` ${what}` : ""} but received shape ${formatShape(t.shape)}`);
  }
}

export function checkShapeEq(t: Tensor, shape: Shape, name: string, op: string): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new ShapeError(`${op}: expected ${name} of shape ${formatShape(shape)} but received ${formatShape(t.shape)}`);
  }
}

export function checkNumber(v: unknown, name: string, op: string): number {
  if (typeof v !== "number" || Number.isNaN(v)) throw new ArgumentError(expected("a number", `${op}'s ${name}`, v));
  return v;
}

export function checkInt(v: unknown, name: string, op: string, min = -Infinity, max = Infinity): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    const range = min === -Infinity && max === Infinity ? "an integer" : `an integer in [${min}, ${max === Infinity ? "∞" : max}]`;
    throw new ArgumentError(expected(range, `${op}'s ${name}`, v));
  }
  return v;
}

export function checkBool(v: unknown, name: string, op: string): boolean {
  if (typeof v !== "boolean") throw new ArgumentError(expected("a boolean", `${op}'s ${name}`, v));
  return v;
}
