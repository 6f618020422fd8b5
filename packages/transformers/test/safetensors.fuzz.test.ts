// Bounded fuzz test of the safetensors header parser: seeded random mutations and truncations of a real header
// (tiny-llama-bnb-int8, mixed dtypes). Every outcome must be either a header whose tensors lie inside the file,
// in order, without overlap and covering the data region, or a SafetensorsError — never another exception.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parseSafetensorsHeader, SafetensorsError, type SafetensorsHeader } from "../src/index.js";
import { mulberry32, repoFixture } from "./helpers.js";

const FILE = readFileSync(repoFixture("tiny-llama-bnb-int8/model.safetensors"));
const N = Number(FILE.readBigUInt64LE(0));
const HEADER = new Uint8Array(FILE.subarray(0, 8 + N));
const DATA_LENGTH = FILE.length - 8 - N;
const DTYPES = ["F32", "F16", "BF16", "U8", "I8", "I64", "BOOL", "F64", "F4", "X9", "", "f32"];

/** Checks the parser's guarantees on a header it accepted. */
function checkInvariants(h: SafetensorsHeader, fileSize: number): void {
  const all = [...h.tensors.values(), ...h.foreignTensors.values()].sort((a, b) => a.byteOffset - b.byteOffset || a.byteLength - b.byteLength);
  let cursor = h.dataOffset;
  for (const t of all) {
    expect(t.byteOffset).toBe(cursor);
    expect(t.byteLength).toBeGreaterThanOrEqual(0);
    cursor += t.byteLength;
  }
  expect(cursor).toBe(fileSize);
  expect(h.dataOffset + h.dataLength).toBe(fileSize);
}

/** Serializes a header object with the u64 length prefix. */
function withPrefix(json: string): Uint8Array {
  const body = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + body.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(body.length), true);
  out.set(body, 8);
  return out;
}

describe("safetensors header fuzz", () => {
  it("never throws anything but SafetensorsError, and accepted headers are consistent (4000 seeded cases)", () => {
    const rand = mulberry32(0x5afe7e45);
    const int = (n: number) => Math.floor(rand() * n);
    const pick = <T,>(xs: readonly T[]): T => xs[int(xs.length)] as T;
    const baseJson = JSON.parse(new TextDecoder().decode(HEADER.subarray(8))) as Record<string, Record<string, unknown>>;
    const names = Object.keys(baseJson).filter((k) => k !== "__metadata__");
    let accepted = 0;
    let rejected = 0;
    const start = performance.now();
    for (let i = 0; i < 4000; i++) {
      let bytes: Uint8Array;
      let fileSize = FILE.length;
      const kind = i % 5;
      if (kind === 0) {
        // Byte-level damage inside the JSON, biased towards structural characters and digits.
        bytes = HEADER.slice();
        const flips = 1 + int(4);
        for (let f = 0; f < flips; f++) bytes[8 + int(N)] = rand() < 0.6 ? pick([...'{}[]":,0123456789 -.e'].map((c) => c.charCodeAt(0))) : int(256);
      } else if (kind === 1) {
        // Truncated buffer and / or file.
        bytes = HEADER.slice(0, int(HEADER.length + 1));
        fileSize = rand() < 0.5 ? bytes.length + int(DATA_LENGTH + 16) : FILE.length;
      } else if (kind === 2) {
        // Damaged length prefix.
        bytes = HEADER.slice();
        const v = new DataView(bytes.buffer);
        const r = rand();
        if (r < 0.3) v.setBigUint64(0, BigInt(N + int(17) - 8), true);
        else if (r < 0.6) v.setUint32(4, int(2 ** 32), true);
        else v.setUint32(0, int(2 ** 32), true);
      } else {
        // Structured damage: edit numbers, dtypes and keys of the parsed header, keep the data length.
        const h = structuredClone(baseJson);
        const edits = 1 + int(3);
        for (let e = 0; e < edits; e++) {
          const name = pick(names);
          const entry = h[name] as Record<string, unknown> | null;
          // An earlier edit may have replaced the entry or removed its fields; edit only intact ones.
          if (typeof entry !== "object" || entry === null || Array.isArray(entry) || !Array.isArray(entry["data_offsets"]) || !Array.isArray(entry["shape"])) continue;
          const r = rand();
          if (r < 0.25) {
            const offsets = entry["data_offsets"] as number[];
            const k = int(2);
            offsets[k] = (offsets[k] ?? 0) + pick([-1, 1, -4, 4, 512, -512]);
          }
          else if (r < 0.4) entry["shape"] = (entry["shape"] as number[]).map((d) => (rand() < 0.5 ? d : pick([0, 1, d * 2, -d, 2.5])));
          else if (r < 0.55) entry["dtype"] = pick(DTYPES);
          else if (r < 0.65) delete entry[pick(["dtype", "shape", "data_offsets"])];
          else if (r < 0.75) {
            // Swap two tensors' offsets (valid exactly when their sizes match).
            const other = h[pick(names)] as Record<string, unknown>;
            [entry["data_offsets"], other["data_offsets"]] = [other["data_offsets"], entry["data_offsets"]];
          } else if (r < 0.85) h[name] = pick([null, 3, "x", [], {}] as never[]);
          else fileSize += pick([-1, 1, 8]);
        }
        let json = JSON.stringify(h);
        if (rand() < 0.1) json = json.replace(/^\{/, `{"${pick(names)}":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},`);
        bytes = withPrefix(json);
        fileSize += bytes.length - HEADER.length;
      }
      try {
        const h = parseSafetensorsHeader(bytes, fileSize, "fuzz.safetensors", { allowForeignDtypes: rand() < 0.5 });
        checkInvariants(h, fileSize);
        accepted++;
      } catch (e) {
        if (!(e instanceof SafetensorsError)) throw new Error(`case ${i} (kind ${kind}) threw ${String(e)}`, { cause: e });
        expect(e.code).toBe("ERR_FILE");
        rejected++;
      }
    }
    const ms = performance.now() - start;
    expect(accepted + rejected).toBe(4000);
    // Some mutations (swapped equal-size offsets, untouched truncations past the header) must stay valid.
    expect(accepted).toBeGreaterThan(20);
    expect(rejected).toBeGreaterThan(3000);
    expect(ms).toBeLessThan(5000);
  });
});
