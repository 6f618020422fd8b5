// A minimal safetensors reader for tests (the checked, full parser lives in @lowbit/transformers).

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export interface RawTensor {
  dtype: string;
  shape: number[];
  /** The tensor's bytes (a copy, aligned). */
  bytes: Uint8Array;
}

export function readSafetensors(path: string): Map<string, RawTensor> {
  const buf = readFileSync(path);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString("utf8")) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const base = 8 + headerLen;
  const out = new Map<string, RawTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [a, b] = info.data_offsets;
    out.set(name, { dtype: info.dtype, shape: info.shape, bytes: new Uint8Array(buf.subarray(base + a, base + b)) });
  }
  return out;
}

/** Path of a vendored fixture file (repo-root `fixtures/`). */
export function fixturePath(rel: string): string {
  return fileURLToPath(new URL(`../../../../fixtures/${rel}`, import.meta.url));
}

export function f32(t: RawTensor): Float32Array {
  return new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4);
}
export function u16(t: RawTensor): Uint16Array {
  return new Uint16Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 2);
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}
